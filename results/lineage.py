"""Run history and lineage, read from ML Metadata (and the artifacts it names).

`runs`: every pipeline run in a store, newest first, with what it trained,
how it scored, whether it was blessed and why, and what it pushed.
`lineage`: for a pushed version, the chain back to the data: the push, the
blessing and its baseline, the model, the Transform graph, the examples and
the IDX files' SHA-256, each with its artifact id, run and time.

An artifact reused from the cache is linked to the execution that produced
it (the first that output it), so the chain names the run that did the work.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any, Callable, Dict, List, Optional, Tuple

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from results import metadata

Store = metadata_store.MetadataStore
Artifact = metadata_store_pb2.Artifact
Execution = metadata_store_pb2.Execution
_OUTPUT = (metadata_store_pb2.Event.OUTPUT,)
_INPUT = (metadata_store_pb2.Event.INPUT,)
_LAST_NODE = "ServingPusher"  # a run that got here ran every node


class LineageError(LookupError):
  """What was asked for is not in the store."""


def _time(ms: int) -> str:
  return datetime.datetime.fromtimestamp(
      ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _property(execution: Execution, name: str) -> Any:
  """An execution property as Python (JSON strings decoded)."""
  if name not in execution.custom_properties:
    return None
  value = execution.custom_properties[name]
  kind = value.WhichOneof("value")
  raw = getattr(value, kind) if kind else None
  if isinstance(raw, str) and raw[:1] in "{[":
    try:
      return json.loads(raw)
    except ValueError:
      return raw
  return raw


@dataclasses.dataclass
class _Graph:
  """One read of the store: executions, artifacts and who produced what."""

  store: Store

  def __post_init__(self):
    self.executions = {e.id: e for e in self.store.get_executions()}
    self.artifacts = {a.id: a for a in self.store.get_artifacts()}
    events = self.store.get_events_by_execution_ids(list(self.executions))
    self.inputs: Dict[int, Dict[str, List[int]]] = {}
    self.outputs: Dict[int, Dict[str, List[int]]] = {}
    self.producer: Dict[int, int] = {}
    for ev in sorted(events, key=lambda ev: ev.execution_id):
      key = ev.path.steps[0].key if ev.path.steps else ""
      side = self.outputs if ev.type in _OUTPUT else (
          self.inputs if ev.type in _INPUT else None)
      if side is None:
        continue
      side.setdefault(ev.execution_id, {}).setdefault(key, []).append(ev.artifact_id)
      if ev.type in _OUTPUT:
        self.producer.setdefault(ev.artifact_id, ev.execution_id)
    self.run_of: Dict[int, str] = {}
    self.runs = sorted(self.store.get_contexts_by_type("pipeline_run"),
                       key=lambda c: c.id, reverse=True)
    # Each run's executions as of the read above: a run going on meanwhile
    # adds executions this read does not know.
    self.run_executions: Dict[int, List[Execution]] = {}
    for run in self.runs:
      known = [e for e in self.store.get_executions_by_context(run.id)
               if e.id in self.executions]
      self.run_executions[run.id] = sorted(known, key=lambda e: e.id)
      for e in known:
        self.run_of.setdefault(e.id, run.name)
    self.node = {e: metadata.node_name(self.store, e) for e in self.executions}

  def where(self, execution_id: int) -> Dict[str, Any]:
    e = self.executions[execution_id]
    return {"execution": e.id, "node": self.node[e.id],
            "run": self.run_of.get(e.id), "time": _time(e.create_time_since_epoch)}

  def made(self, artifact_id: int) -> Dict[str, Any]:
    """The artifact and where it was produced."""
    a = self.artifacts[artifact_id]
    made = {"artifact": a.id, "uri": a.uri}
    if artifact_id in self.producer:
      made.update(self.where(self.producer[artifact_id]))
    return made

  def input(self, execution_id: int, key: str) -> Optional[int]:
    found = self.inputs.get(execution_id, {}).get(key)
    return found[0] if found else None

  def output(self, execution_id: int, key: str) -> Optional[int]:
    found = self.outputs.get(execution_id, {}).get(key)
    return found[0] if found else None


def _accuracy(evaluation_uri: str) -> Optional[Any]:
  from components import evaluation  # pylint: disable=g-import-not-at-top
  try:
    return evaluation.load(evaluation_uri)
  except Exception:  # pylint: disable=broad-except
    return None  # a failed or partial Evaluator run


def _trained(graph: _Graph, trainer: int) -> Dict[str, Any]:
  """The Trainer's hyperparameters as trained (the Tuner's best, if any)."""
  from results.summary import trained_hyperparameters  # pylint: disable=g-import-not-at-top
  config = _property(graph.executions[trainer], "custom_config") or {}
  from components.models import Hyperparameters  # pylint: disable=g-import-not-at-top
  run = graph.output(trainer, "model_run")
  trained = trained_hyperparameters(graph.artifacts[run].uri) if run else None
  if trained is None:
    try:
      trained = Hyperparameters.from_dict(config.get("hyperparameters") or {})
    except ValueError:  # another version's fields: shown as recorded
      return {"hyperparameters": dict(config.get("hyperparameters") or {}),
              "code": config.get("code")}
  return {"hyperparameters": trained.resolved(), "code": config.get("code")}


def _pushed_version(artifact: Artifact) -> Optional[int]:
  """The version a Pusher artifact records, or None when nothing was pushed."""
  props = artifact.custom_properties
  if "pushed" not in props or props["pushed"].int_value != 1:
    return None
  return int(props["pushed_version"].string_value)


def _changed(hp: Dict[str, Any]) -> Dict[str, Any]:
  """The hyperparameters that differ from the defaults."""
  from components.models import MODELS, Hyperparameters  # pylint: disable=g-import-not-at-top
  model = hp.get("model")
  defaults = Hyperparameters(**({"model": model} if model in MODELS else {})).resolved()
  return {k: v for k, v in hp.items() if defaults.get(k, object()) != v}


def _status(by_node: Dict[str, Any], states: Dict[str, str],
            dead: Callable[[int], bool]) -> Tuple[str, Optional[str]]:
  """(status, the component it stopped in) of one run, from its executions.

  `dead(execution_id)` says a RUNNING execution's process is gone: then the
  run was interrupted there, not still running. A run whose last node never
  ran, with nothing failed or running, stopped early: `incomplete`.
  """
  for wanted, status in (("failed", "failed"), ("canceled", "interrupted")):
    stopped = [n for n, s in states.items() if s == wanted]
    if stopped:
      return status, stopped[0]
  running = [n for n, s in states.items() if s == "running"]
  if running:
    gone = all(dead(by_node[n].id) for n in running)
    return ("interrupted" if gone else "running"), running[0]
  if by_node and _LAST_NODE not in by_node:
    return "incomplete", list(by_node)[-1]
  return "succeeded", None


def runs(store: Store, dead: Callable[[int], bool] = lambda execution_id: False
         ) -> List[Dict[str, Any]]:
  """Every run in the store, newest first (`dead`: see `_status`)."""
  graph = _Graph(store)
  rows = []
  for run in graph.runs:
    by_node = {graph.node[e.id]: e for e in graph.run_executions[run.id]}
    states = {n: metadata.state_name(e.last_known_state) for n, e in by_node.items()}
    status, stopped_in = _status(by_node, states, dead)
    row: Dict[str, Any] = {
        "run": run.name, "time": _time(run.create_time_since_epoch),
        "status": status, "stopped_in": stopped_in,
        "model": None, "changed": {}, "tuned": "Tuner" in by_node,
        "accuracy": None, "blessed": None, "why": None, "pushed_version": None,
        "pushed_new": False}
    if "Trainer" in by_node:
      trained = _trained(graph, by_node["Trainer"].id)
      row["model"] = trained["hyperparameters"].get("model")
      row["changed"] = _changed(trained["hyperparameters"])
    if "Evaluator" in by_node:
      ev = graph.output(by_node["Evaluator"].id, "evaluation")
      result = _accuracy(graph.artifacts[ev].uri) if ev is not None else None
      if result is not None:
        row["accuracy"] = round(result.accuracy, 6)
        row["blessed"] = result.blessed
        row["why"] = _why(graph, by_node["Evaluator"].id, result)
    if "ServingPusher" in by_node:
      pushed = graph.output(by_node["ServingPusher"].id, "pushed_model")
      version = _pushed_version(graph.artifacts[pushed]) if pushed else None
      if version is not None:
        row["pushed_version"] = version
        row["pushed_new"] = (
            states["ServingPusher"] == "complete" and
            graph.artifacts[pushed].custom_properties["pushed_new"].int_value == 1)
    rows.append(row)
  return rows


def last_blessed_accuracy(store: Store, model: str) -> Optional[Tuple[float, str]]:
  """(accuracy, run) of the newest run in the store that blessed a `model`
  model, or None: what the simpler-model check compares a candidate with."""
  graph = _Graph(store)
  for run in graph.runs:
    by_node = {graph.node[e.id]: e for e in graph.run_executions[run.id]}
    if "Trainer" not in by_node or "Evaluator" not in by_node:
      continue
    blessing = graph.output(by_node["Evaluator"].id, "blessing")
    props = graph.artifacts[blessing].custom_properties if blessing else {}
    if "blessed" not in props or props["blessed"].int_value != 1:
      continue
    if _trained(graph, by_node["Trainer"].id)["hyperparameters"].get("model") != model:
      continue
    evaluation = graph.output(by_node["Evaluator"].id, "evaluation")
    result = _accuracy(graph.artifacts[evaluation].uri) if evaluation else None
    if result is not None:
      return result.accuracy, run.name
  return None


def _why(graph: _Graph, evaluator: int, result) -> str:
  """Why the Evaluator blessed the model or not, against its own bounds."""
  from components.evaluation import blessing_reason, thresholds  # pylint: disable=g-import-not-at-top
  return blessing_reason(result, thresholds(
      _property(graph.executions[evaluator], "eval_config")), "the baseline's")


def _pusher_of(graph: _Graph, version: Optional[int]) -> Tuple[int, int]:
  """(Pusher execution, pushed_model artifact) of `version` (None: the newest)."""
  found = []
  for artifact_id, execution in graph.producer.items():
    pushed = (_pushed_version(graph.artifacts[artifact_id])
              if graph.node[execution] == "ServingPusher" else None)
    if pushed is not None:
      found.append((pushed, execution, artifact_id))
  if not found:
    raise LineageError("no pushed version in this store")
  if version is None:
    return max(found)[1:]
  for v, execution, artifact_id in found:
    if v == version:
      return execution, artifact_id
  raise LineageError(f"version {version} was not pushed by a run in this store; "
                     f"pushed: {', '.join(str(v) for v, _, _ in sorted(found))}")


def lineage(store: Store, version: Optional[int] = None) -> Dict[str, Any]:
  """The chain from a pushed version back to the data files."""
  from components.evaluation import thresholds  # pylint: disable=g-import-not-at-top
  graph = _Graph(store)
  pusher, pushed = _pusher_of(graph, version)
  chain: Dict[str, Any] = {
      "version": _pushed_version(graph.artifacts[pushed]),
      "path": graph.artifacts[pushed].custom_properties[
          "pushed_destination"].string_value,
      "push": graph.made(pushed)}

  blessing = graph.input(pusher, "model_blessing")
  evaluator = graph.producer[blessing]
  evaluation_id = graph.output(evaluator, "evaluation")
  result = _accuracy(graph.artifacts[evaluation_id].uri)
  chain["blessing"] = dict(
      graph.made(blessing),
      blessed=result.blessed if result else None,
      accuracy=round(result.accuracy, 6) if result else None,
      thresholds=thresholds(_property(graph.executions[evaluator], "eval_config")),
      evaluation=evaluation_id)
  baseline = graph.input(evaluator, "baseline_model")
  chain["blessing"]["baseline"] = None if baseline is None else dict(
      graph.made(baseline),
      accuracy=(round(result.baseline_accuracy, 6)
                if result and result.baseline_accuracy is not None else None))

  model = graph.input(pusher, "model")
  trainer = graph.producer[model]
  chain["model"] = dict(graph.made(model), **_trained(graph, trainer))
  best = graph.input(trainer, "hyperparameters")
  chain["model"]["tuned_by"] = None if best is None else graph.made(best)

  transform_graph = graph.input(trainer, "transform_graph")
  transform = graph.producer[transform_graph]
  chain["transform_graph"] = dict(
      graph.made(transform_graph),
      code=(_property(graph.executions[transform], "custom_config") or {}).get("code"))

  examples = graph.input(trainer, "examples")
  example_gen = graph.producer[examples]
  files = metadata.custom_property(graph.artifacts[examples], "idx_files") or {}
  chain["examples"] = dict(
      graph.made(examples),
      input_base=_property(graph.executions[example_gen], "input_base"),
      files=metadata.data_files(files),
      counts={split: int(info["count"]) for split, info in files.items()})
  return chain


def render_runs(rows: List[Dict[str, Any]]) -> str:
  if not rows:
    return "No runs in this store."
  lines = []
  for r in rows:
    changed = ", ".join(f"{k}={v}" for k, v in r["changed"].items() if k != "model")
    status = r["status"] + (f" in {r['stopped_in']}" if r.get("stopped_in") else "")
    head = (f"{r['time']}  run {r['run']}  {status}  model {r['model'] or '-'}"
            + (" (tuned)" if r["tuned"] else "") + (f" [{changed}]" if changed else ""))
    lines.append(head)
    if r["accuracy"] is not None:
      lines.append(f"    accuracy {r['accuracy']:.4f}, "
                   f"{'blessed' if r['blessed'] else 'not blessed'}: {r['why']}")
    if r["pushed_version"] is not None:
      lines.append(f"    pushed version {r['pushed_version']}"
                   + ("" if r["pushed_new"] else " (already there)"))
  return "\n".join(lines)


def render_lineage(chain: Dict[str, Any]) -> str:
  def at(node: Dict[str, Any]) -> str:
    return (f"artifact {node['artifact']}, {node.get('node', '?')} execution "
            f"{node.get('execution', '?')}, run {node.get('run', '?')}, {node.get('time', '?')}")
  b, m = chain["blessing"], chain["model"]
  lines = [f"Version {chain['version']} at {chain['path']}",
           f"  pushed:     {at(chain['push'])}",
           f"  blessing:   {'blessed' if b['blessed'] else 'not blessed'}, accuracy "
           f"{b['accuracy']} (bounds: >= {b['thresholds']['min_accuracy']}, at most "
           f"{b['thresholds']['max_regression']} below the baseline"
           + (f"; each digit >= {b['thresholds']['min_class_accuracy']}, at most "
              f"{b['thresholds']['max_class_regression']} below its own"
              if b['thresholds'].get('min_class_accuracy') is not None else "")
           + (f"; writers within {b['thresholds']['max_writer_gap']}"
              if b['thresholds'].get('max_writer_gap') is not None else "")
           + (f"; {b['thresholds']['min_margin_over_simpler']} over the basic model's "
              f"{b['thresholds']['simpler_accuracy']:.4f}"
              if b['thresholds'].get('simpler_accuracy') is not None else "")
           + f"); {at(b)}"]
  if b["baseline"]:
    lines.append(f"  baseline:   accuracy {b['baseline']['accuracy']}; {at(b['baseline'])}")
  else:
    lines.append("  baseline:   none (no blessed model before it)")
  lines += [f"  model:      {at(m)}",
            f"              hyperparameters {json.dumps(m['hyperparameters'], sort_keys=True)}",
            f"              code {m['code']}"
            + (f"; tuned by artifact {m['tuned_by']['artifact']}" if m["tuned_by"] else ""),
            f"  transform:  code {chain['transform_graph']['code']}; "
            f"{at(chain['transform_graph'])}",
            f"  examples:   {chain['examples']['counts']} from "
            f"{chain['examples']['input_base']}; {at(chain['examples'])}"]
  for name, digest in sorted(chain["examples"]["files"].items()):
    content = f"decompressed content sha256 {digest['content_sha256']}"
    lines.append(f"    {name}  sha256 {digest['sha256']} (the file; {content})"
                 if digest["sha256"] else
                 f"    {name}  {content} (the file's own hash was not recorded)")
  return "\n".join(lines)
