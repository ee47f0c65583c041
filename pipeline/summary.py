"""The run summary: what the user reads at the end and `summary.json` holds.

Every figure comes from the run's records: MLMD for what ran and how long,
TFMA's output for the metrics, the Pusher's artifact for what was pushed.
"""

import json
import os
from typing import Any, Dict, List, Optional

from components import evaluation
from pipeline import metadata
from pipeline.configs import PipelineConfig


def _first(nodes: Dict[str, metadata.NodeRun], node: str, key: str):
  run = nodes.get(node)
  if run and run.outputs.get(key):
    return run.outputs[key][0]
  return None


def _failure(error: BaseException) -> str:
  """The most useful line of a failure: the root cause's message."""
  cause = error
  while cause.__cause__ is not None or cause.__context__ is not None:
    cause = cause.__cause__ or cause.__context__
  return f"{type(cause).__name__}: {cause}"


def build(config: PipelineConfig, data_dir: str, total_seconds: float,
          error: Optional[BaseException] = None,
          log_path: Optional[str] = None) -> Dict[str, Any]:
  """The summary of the latest run recorded in the config's MLMD store."""
  hp = config.hyperparameters
  summary: Dict[str, Any] = {
      "status": "failed" if error else "succeeded",
      "model": hp.model,
      "hyperparameters": dict(hp.to_dict(), hidden_units=list(hp.layers)),
      "accuracy": None, "per_class_accuracy": None, "per_class_count": None,
      "baseline_accuracy": None,
      "blessed": False, "blessing": None,
      "pushed_model_path": None, "pushed_version": None, "pushed_new": False,
      "component_seconds": {}, "component_status": {},
      "total_seconds": round(total_seconds, 1),
      "train_examples": None, "eval_examples": None,
      "data_dir": data_dir, "data_sha256": None,
      "run_id": None, "artifacts": {}, "log": log_path,
  }
  if error is not None:
    summary["error"] = _failure(error)
  if not os.path.exists(config.metadata_uri):
    return summary
  store = metadata.open_store(config.metadata_uri)
  run_id = metadata.latest_run_id(store)
  nodes = metadata.read_run(store, run_id) if run_id else {}
  summary["run_id"] = run_id
  summary["component_seconds"] = {n: r.seconds for n, r in nodes.items()}
  summary["component_status"] = {n: r.state for n, r in nodes.items()}
  summary["artifacts"] = {f"{n}.{k}": arts[0].uri for n, r in nodes.items()
                          for k, arts in r.outputs.items() if arts}

  examples = _first(nodes, "IdxExampleGen", "examples")
  if examples is not None:
    files = metadata.custom_property(examples, "idx_files") or {}
    counts = {split: int(info["count"]) for split, info in files.items()}
    summary["train_examples"] = counts.get("train")
    summary["eval_examples"] = counts.get("eval")
    summary["data_sha256"] = {
        os.path.basename(info[kind]): info[f"{kind}_sha256"]
        for info in files.values() for kind in ("images", "labels")}

  evaluation_artifact = _first(nodes, "Evaluator", "evaluation")
  if evaluation_artifact is not None:
    result = evaluation.load(evaluation_artifact.uri)
    summary.update(
        accuracy=round(result.accuracy, 6),
        per_class_accuracy={k: round(v, 6)
                            for k, v in result.per_class_accuracy.items()},
        per_class_count=result.per_class_count,
        baseline_accuracy=result.baseline_accuracy,
        blessed=result.blessed,
        blessing=_blessing_reason(config, result))
  pushed = _first(nodes, "ServingPusher", "pushed_model")
  if pushed is not None and metadata.custom_property(pushed, "pushed") == 1:
    summary["pushed_model_path"] = metadata.custom_property(
        pushed, "pushed_destination")
    summary["pushed_version"] = metadata.custom_property(pushed, "pushed_version")
    summary["pushed_new"] = (
        summary["component_status"].get("ServingPusher") == "complete" and
        metadata.custom_property(pushed, "pushed_new") == 1)
  return summary


def _blessing_reason(config: PipelineConfig,
                     result: evaluation.Evaluation) -> str:
  bound = config.effective_min_accuracy
  if result.blessed:
    reason = f"accuracy {result.accuracy:.4f} >= {bound}"
    if result.baseline_accuracy is not None:
      reason += (f" and not more than {config.max_regression} below the last "
                 f"blessed model's {result.baseline_accuracy:.4f}")
    else:
      reason += " (no blessed model to compare with yet)"
    return reason
  reasons: List[str] = []
  if result.accuracy < bound:
    reasons.append(f"accuracy {result.accuracy:.4f} is below the bound {bound}")
  if (result.baseline_accuracy is not None and
      result.accuracy - result.baseline_accuracy < -config.max_regression):
    reasons.append(f"accuracy {result.accuracy:.4f} is more than "
                   f"{config.max_regression} below the last blessed model's "
                   f"{result.baseline_accuracy:.4f}")
  return "; ".join(reasons or result.failures or ["TFMA validation failed"])


def write(summary: Dict[str, Any], path: str) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.io.gfile.makedirs(os.path.dirname(path) or ".")
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    json.dump(summary, f, indent=2)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def render(summary: Dict[str, Any]) -> str:
  """The summary as a few lines for the terminal."""
  lines = []
  if summary["status"] != "succeeded":
    lines.append(f"FAILED: {summary.get('error')}")
  if summary["accuracy"] is not None:
    lines.append(f"Model: {summary['model']} "
                 f"(hidden layers {summary['hyperparameters']['hidden_units']}), "
                 f"{summary['train_examples']} train / "
                 f"{summary['eval_examples']} eval examples")
    baseline = summary["baseline_accuracy"]
    lines.append(f"Accuracy: {summary['accuracy']:.4f}" + (
        f" (last blessed model: {baseline:.4f})" if baseline is not None else ""))
    lines.append("Per class: " + "  ".join(
        f"{k}: {v:.3f}" for k, v in summary["per_class_accuracy"].items()))
    lines.append(f"Blessed: {'yes' if summary['blessed'] else 'no'} - "
                 f"{summary['blessing']}")
  if summary["pushed_model_path"]:
    lines.append(f"Pushed: {summary['pushed_model_path']}" + (
        "" if summary["pushed_new"] else
        " (this model was already there: nothing new pushed)"))
  elif summary["status"] == "succeeded":
    lines.append("Pushed: nothing (the model was not blessed)")
  times = ", ".join(
      f"{n} {s:.1f}s" + (" (cached)" if summary["component_status"].get(n) == "cached" else "")
      for n, s in summary["component_seconds"].items())
  lines.append(f"Time: {summary['total_seconds']:.1f}s total" +
               (f" ({times})" if times else ""))
  return "\n".join(lines)
