"""The run summary: what the user reads at the end and `summary.json` holds.

Every figure comes from the run's records: MLMD for what ran and how long,
TFMA's output for the metrics, the Pusher's artifact for what was pushed.
"""

import json
import os
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from components import evaluation
from pipeline import workspace
from results import metadata
from pipeline.configs import PipelineConfig


TUNER_RESULTS_FILE = "tuner_results.json"  # what TFX's Tuner writes


def _first(nodes: Dict[str, metadata.NodeRun], node: str, key: str):
  run = nodes.get(node)
  if run and run.outputs.get(key):
    return run.outputs[key][0]
  return None


# How a full disk shows itself: OSError's ENOSPC, SQLite's and TensorFlow's words.
_DISK_FULL_MARKERS = ("No space left on device", "database or disk is full",
                      "Disk quota exceeded")


_OUR_PACKAGES = ("components", "pipeline", "serving")


def _chain(error: BaseException) -> List[BaseException]:
  chain = [error]
  while (chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 50:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  return chain


def _disk_full(chain: List[BaseException], log_path: Optional[str],
               where: str) -> Optional[str]:
  """"disk full: ..." when the failure, or the run's log, shows a full disk.

  A full disk often surfaces as a later, unrelated error (ML Metadata's "No
  type found" after SQLite could not write), so the log is searched too.
  """
  path = next((e.filename for e in chain
               if workspace.is_disk_full(e) and getattr(e, "filename", None)),
              None)
  for e in chain:  # TensorFlow says "<path>; No space left on device"
    named = re.search(r"(\S+); No space left on device", str(e))
    if path is None and named:
      path = named.group(1)
  found = path is not None or any(
      workspace.is_disk_full(e) or any(m in str(e) for m in _DISK_FULL_MARKERS)
      for e in chain)
  if not found and log_path and os.path.exists(log_path):
    with open(log_path, encoding="utf-8", errors="replace") as f:
      found = any(m in line for line in f for m in _DISK_FULL_MARKERS)
  if not found:
    return None
  path = path or where
  free = workspace.free_bytes(path)
  return (f"disk full: no space left on the device of {path}"
          + (f" ({free // 1024} KiB free)" if free is not None else "")
          + "; free some space and run again")


def describe_failure(error: BaseException, log_path: Optional[str] = None,
                     where: str = ".") -> str:
  """One line for a failure: a full disk as such, else the root cause."""
  chain = _chain(error)
  full = _disk_full(chain, log_path, where)
  if full:
    return full
  # Our own errors (a bad IDX file, anomalies) already say which file and
  # what is wrong; otherwise the root cause says more than TFX's wrappers.
  if any(cannot_connect(e) for e in chain):
    return CANNOT_CONNECT
  cause = next((e for e in chain if type(e).__module__.split(".")[0] in
                _OUR_PACKAGES), chain[-1])
  return f"{type(cause).__name__}: {cause}".splitlines()[0]


# ML Metadata's words when a database server does not answer or refuses us.
_MYSQL_UNREACHABLE = "mysql_real_connect failed"
CANNOT_CONNECT = ("cannot connect to the ML Metadata database server: check --metadata-uri "
                  "(host, port, user, password, database) and that the server is running")


def cannot_connect(error: BaseException) -> bool:
  return _MYSQL_UNREACHABLE in str(error)


STATUSES = ("running", "succeeded", "failed", "interrupted")
INTERRUPTED = "interrupted by SIGINT or SIGTERM"


def build(config: PipelineConfig, data_dir: str, total_seconds: float,
          error: Optional[BaseException] = None,
          log_path: Optional[str] = None, status: Optional[str] = None,
          read_metadata: bool = True,
          own_executions: Optional[List[int]] = None) -> Dict[str, Any]:
  """The summary of a run recorded in the config's MLMD store.

  `status` defaults to succeeded, or failed when there is an `error`;
  `read_metadata=False` gives the facts known before anything ran. With
  `own_executions` (the ids of the executions the run started, which TFX
  logs) the run is theirs, even in a store that other dirs' runs write at
  the same moment; without them, the newest in the store (an unshared
  store's), or none.
  """
  hp = config.hyperparameters
  status = status or ("failed" if error else "succeeded")
  assert status in STATUSES, status
  summary: Dict[str, Any] = {
      "status": status, "pid": os.getpid(),
      "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "failed_component": None,
      "model": hp.model,
      "hyperparameters": hp.resolved(),
      "accuracy": None, "per_class_accuracy": None, "per_class_count": None,
      "baseline_accuracy": None,
      "blessed": False, "blessing": None,
      "pushed_model_path": None, "pushed_version": None, "pushed_new": False,
      "infra_blessed": None, "infra_reason": None,
      "component_seconds": {}, "component_status": {},
      "total_seconds": round(total_seconds, 1),
      "train_examples": None, "eval_examples": None,
      "fit_examples": None, "validation_examples": None,
      "data_dir": data_dir, "data_sha256": None, "data_content_sha256": None,
      "run_id": None, "artifacts": {}, "log": log_path,
  }
  if error is not None:
    summary["error"] = describe_failure(error, log_path, config.local_dir)
  elif status == "interrupted":
    summary["error"] = INTERRUPTED
  if not read_metadata or not config.metadata_exists:
    return summary
  try:
    store = metadata.open_store(config.metadata_uri)
    run_id = (metadata.run_of(store, own_executions) if own_executions else
              None if config.shared_metadata and own_executions is not None
              else metadata.latest_run_id(store))
    nodes = metadata.read_run(store, run_id) if run_id else {}
  except Exception as e:  # pylint: disable=broad-except
    # An unreadable store: the summary still says what failed.
    summary["metadata_error"] = str(e).splitlines()[0][:300]
    return summary
  summary["run_id"] = run_id
  summary["component_seconds"] = {n: r.seconds for n, r in nodes.items()}
  # A cached node's time is that of the run that made what it reused.
  summary["component_seconds_made"] = {n: r.made_seconds for n, r in nodes.items()
                                       if r.made_seconds is not None}
  summary["component_status"] = {n: r.state for n, r in nodes.items()}
  summary["cache"] = {n: r.cache_reason for n, r in nodes.items() if r.cache_reason}
  if "error" in summary:
    summary["failed_component"] = next(
        (n for n, r in nodes.items()
         if r.state in ("failed", "canceled", "running")), None)
  summary["artifacts"] = {f"{n}.{k}": arts[0].uri for n, r in nodes.items()
                          for k, arts in r.outputs.items() if arts}

  examples = _first(nodes, "IdxExampleGen", "examples")
  if examples is not None:
    files = metadata.custom_property(examples, "idx_files") or {}
    counts = {split: int(info["count"]) for split, info in files.items()}
    summary["train_examples"] = counts.get("train")
    summary["eval_examples"] = counts.get("eval")
    digests = metadata.data_files(files)
    summary["data_sha256"] = {n: d["sha256"] for n, d in digests.items()}
    summary["data_content_sha256"] = {n: d["content_sha256"]
                                      for n, d in digests.items()}

  evaluation_artifact = _first(nodes, "Evaluator", "evaluation")
  if evaluation_artifact is not None:
    result = evaluation.load(evaluation_artifact.uri)
    summary.update(
        accuracy=round(result.accuracy, 6),
        per_class_accuracy={k: round(v, 6)
                            for k, v in result.per_class_accuracy.items()},
        per_class_count=result.per_class_count,
        per_writer_accuracy={k: round(v, 6)
                             for k, v in result.per_writer_accuracy.items()},
        per_writer_count=result.per_writer_count,
        writer_gap=(None if result.writer_gap is None
                    else round(result.writer_gap, 6)),
        simpler_accuracy=result.bounds.get("simpler_accuracy"),
        baseline_accuracy=result.baseline_accuracy,
        blessed=result.blessed,
        bounds=result.bounds,
        blessing=evaluation.blessing_reason(result))
  model_run = _first(nodes, "Trainer", "model_run")
  trained = trained_hyperparameters(model_run.uri) if model_run else None
  if trained is not None:  # what was trained: the Tuner's choice, if any
    summary["hyperparameters"] = trained.resolved()
  history = training_history(model_run.uri) if model_run else {}
  if history.get("validation_examples") is not None:
    summary["fit_examples"] = history.get("train_examples")
    summary["validation_examples"] = history["validation_examples"]
  tuner_results = _first(nodes, "Tuner", "tuner_results")
  if tuner_results is not None:
    summary["tuning"] = _tuning(config, tuner_results.uri, nodes)

  infra = _first(nodes, "ServingInfraValidator", "blessing")
  if infra is not None:
    summary["infra_blessed"] = metadata.custom_property(infra, "blessed") == 1
    summary["infra_reason"] = metadata.custom_property(infra, "reason")
  pushed = _first(nodes, "ServingPusher", "pushed_model")
  model = _first(nodes, "Trainer", "model")
  if pushed is None and model is not None:
    # The Pusher may have pushed and then failed to record it (a full disk
    # under ML Metadata): the serving dir is the truth a server sees.
    from components import pusher  # pylint: disable=g-import-not-at-top
    found = pusher.find_by_model(config.serving_base_uri, model.uri)
    if found:
      summary.update(pushed_model_path=found, pushed_new=True,
                     pushed_version=os.path.basename(found),
                     pushed_unrecorded=True)
  if pushed is not None and metadata.custom_property(pushed, "pushed") == 1:
    summary["pushed_model_path"] = metadata.custom_property(
        pushed, "pushed_destination")
    summary["pushed_version"] = metadata.custom_property(pushed, "pushed_version")
    summary["pushed_new"] = (
        summary["component_status"].get("ServingPusher") == "complete" and
        metadata.custom_property(pushed, "pushed_new") == 1)
  return summary


def component_time(summary: Dict[str, Any], node: str) -> str:
  """A node's time as shown: a cached one's is the run's that made its outputs."""
  if summary["component_status"].get(node) != "cached":
    return f"{summary['component_seconds'][node]:.1f}s"
  made = (summary.get("component_seconds_made") or {}).get(node)
  return f"{made:.1f}s (cached)" if made is not None else "cached"


def training_history(model_run_uri: str) -> Dict[str, Any]:
  """What the Trainer recorded ({} when it is not there or unreadable)."""
  from mnist_tfx.defaults import HISTORY_FILE  # pylint: disable=g-import-not-at-top
  try:
    with open(os.path.join(model_run_uri, HISTORY_FILE), encoding="utf-8") as f:
      found = json.load(f)
    return found if isinstance(found, dict) else {}
  except (OSError, ValueError):
    return {}


def trained_hyperparameters(model_run_uri: str):
  """The hyperparameters the Trainer recorded (None: not there or unreadable)."""
  from components.models import Hyperparameters  # pylint: disable=g-import-not-at-top
  try:
    return Hyperparameters.from_dict(training_history(model_run_uri)["hyperparameters"])
  except (ValueError, KeyError, TypeError):
    return None


def _tuning(config: PipelineConfig, results_uri: str,
            nodes: Dict[str, metadata.NodeRun]) -> Dict[str, Any]:
  """The search: its budget, time, held-out counts and trials (best first)."""
  from components import holdout  # pylint: disable=g-import-not-at-top
  trials: List[Dict[str, Any]] = []
  try:
    with open(os.path.join(results_uri, TUNER_RESULTS_FILE), encoding="utf-8") as f:
      trials = json.load(f)
  except (OSError, ValueError):
    pass
  held_out = _first(nodes, "HoldOutValidation", "held_out")
  counts = (metadata.custom_property(held_out, holdout.SPLIT_COUNTS)
            if held_out is not None else None)
  from mnist_tfx.defaults import TENSORBOARD_DIR  # pylint: disable=g-import-not-at-top
  board = os.path.join(results_uri, TENSORBOARD_DIR)
  return {"budget": {"trials": config.tune_trials, "minutes": config.tune_minutes},
          "tensorboard": board if os.path.isdir(board) else None,
          # A cached search took no time in this run; its first did.
          "seconds": (None if nodes["Tuner"].state == "cached"
                      else nodes["Tuner"].seconds),
          "split_counts": ({k: int(v) for k, v in counts.items()}
                           if isinstance(counts, dict) else None),
          "trials": trials}


def write(summary: Dict[str, Any], path: str) -> None:
  """Replaces `path` in one rename; a failed write leaves no `.tmp` behind."""
  text = json.dumps(summary, indent=2)
  tmp = path + ".tmp"
  if "://" not in path:  # no TensorFlow import for a local file
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
      with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def search_line(tuning: Dict[str, Any]) -> str:
  """The hyperparameter search in one line: budget, time, the best trial."""
  from components.tuning import OBJECTIVE, describe_values  # pylint: disable=g-import-not-at-top
  trials, budget = tuning["trials"], tuning["budget"]
  held_out = (tuning.get("split_counts") or {}).get("valid")
  took = ("cached" if tuning["seconds"] is None
          else f"in {tuning['seconds']:.0f}s")
  line = (f"Search: {len(trials)} trials {took} (budget "
          f"{budget['trials']} trials, {budget['minutes']:g} min), selected on "
          f"{held_out} held-out training records")
  if trials:
    best = {k: v for k, v in trials[0].items() if k not in ("trial_id", "score")}
    line += f"; best {OBJECTIVE} {trials[0]['score']:.4f}: {describe_values(best)}"
  return line


def trials_table(tuning: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
  """The search's trials, best first, as a header and rows of text."""
  from components.tuning import OBJECTIVE, SEARCH_SPACE  # pylint: disable=g-import-not-at-top
  head = ["trial", OBJECTIVE] + list(SEARCH_SPACE)
  rows = [[str(t.get("trial_id")), f"{t['score']:.4f}"] +
          [f"{t[k]:.2g}" if isinstance(t.get(k), float) else str(t.get(k, ""))
           for k in SEARCH_SPACE] for t in tuning["trials"]]
  return head, rows


def render(summary: Dict[str, Any], with_status: bool = True,
           with_evaluation: bool = True) -> str:
  """The summary as a few lines for the terminal.

  `with_status=False` leaves out the failure line, and
  `with_evaluation=False` the accuracy and blessing lines, for callers that
  print them another way (the CLI's error line; the report's table).
  """
  lines = []
  if summary["status"] != "succeeded" and with_status:
    where = summary.get("failed_component")
    lines.append(f"{summary['status'].upper()}"
                 + (f" in {where}" if where else "") + f": {summary.get('error')}")
  if summary["accuracy"] is not None and with_evaluation:
    lines.append(f"Model: {summary['model']} "
                 f"(hidden layers {summary['hyperparameters']['hidden_units']}), "
                 f"{summary['train_examples']} train / "
                 f"{summary['eval_examples']} eval examples" + (
                     f" (fit on {summary['fit_examples']}, {summary['validation_examples']}"
                     " held out of train to validate on)"
                     if summary.get("validation_examples") else ""))
    if summary.get("tuning"):
      lines.append(search_line(summary["tuning"]))
    baseline = summary["baseline_accuracy"]
    lines.append(f"Accuracy: {summary['accuracy']:.4f}" + (
        f" (last blessed model: {baseline:.4f})" if baseline is not None else ""))
    lines.append("Per class: " + "  ".join(
        f"{k}: {v:.3f}" for k, v in summary["per_class_accuracy"].items()))
    if summary.get("per_writer_accuracy"):
      lines.append(writers_line(summary))
    lines.append(f"Blessed: {'yes' if summary['blessed'] else 'no'} - "
                 f"{summary['blessing']}")
  if summary.get("infra_blessed"):
    lines.append(f"Served before the push: {summary['infra_reason']}")
  if summary["pushed_model_path"]:
    lines.append(f"Pushed: {summary['pushed_model_path']}" + (
        " (ML Metadata could not record the push)"
        if summary.get("pushed_unrecorded") else "" if summary["pushed_new"]
        else " (this model was already there: nothing new pushed)"))
  elif summary["status"] == "succeeded":
    lines.append("Pushed: nothing (" + (
        f"the server refused it: {summary.get('infra_reason')}"
        if summary["blessed"] and summary.get("infra_blessed") is False
        else "the model was not blessed") + ")")
  times = ", ".join(f"{n} {component_time(summary, n)}"
                    for n in summary["component_seconds"])
  lines.append(f"Time: {summary['total_seconds']:.1f}s total" +
               (f" ({times})" if times else ""))
  if "cached" in summary["component_status"].values():
    lines.append(cache_line(summary))
  return "\n".join(lines)


def writers_line(summary: Dict[str, Any]) -> str:
  """The accuracy on each writer population of the test split, and the gap."""
  counts = summary.get("per_writer_count") or {}
  text = "Writers: " + "  ".join(f"{w}: {a:.4f} ({counts.get(w, 0):,} records)"
                                 for w, a in summary["per_writer_accuracy"].items())
  gap = summary.get("writer_gap")
  return text + (f"  gap {gap:+.4f}" if gap is not None else "")


def cache_line(summary: Dict[str, Any]) -> str:
  """Which nodes TFX's cache reused, and why the others ran again."""
  reasons = summary.get("cache") or {}
  cached = [n for n, s in summary["component_status"].items() if s == "cached"]
  again = [f"{n} ({reasons[n].removeprefix('ran: ')})" for n in reasons
           if reasons[n].startswith("ran: since")]
  return (f"Cache: {len(cached)} reused with unchanged cache keys ({', '.join(cached)})"
          + (f"; ran again: {'; '.join(again)}" if again else ""))
