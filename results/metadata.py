"""Reading one pipeline run back from ML Metadata: node states, times, outputs.

MLMD is the record of what ran, so the summary's component times and the
artifacts it points at come from here, not from parsing logs.
"""

import dataclasses
import os
from typing import Any, Dict, List, Optional

from google.protobuf import json_format
from ml_metadata import errors, metadata_store
from ml_metadata.proto import metadata_store_pb2

_STATES = {
    metadata_store_pb2.Execution.COMPLETE: "complete",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


def state_name(state: int) -> str:
  """An execution's state as a word: complete, cached, failed, running..."""
  return _STATES.get(state, "unknown")


@dataclasses.dataclass
class NodeRun:
  state: str
  seconds: float
  outputs: Dict[str, List[metadata_store_pb2.Artifact]]
  # For a cached node: the seconds of the execution that made its outputs.
  made_seconds: Optional[float] = None
  # Why TFX reused outputs or ran the node (see `cache_reason`).
  cache_reason: Optional[str] = None


def _seconds(execution: metadata_store_pb2.Execution) -> float:
  return round((execution.last_update_time_since_epoch -
                execution.create_time_since_epoch) / 1000.0, 2)


def _made_seconds(store: metadata_store.MetadataStore,
                  execution: metadata_store_pb2.Execution,
                  artifacts: List[metadata_store_pb2.Artifact]) -> Optional[float]:
  """How long the execution that first published `artifacts` took; for a
  node without outputs, the node's last complete execution before this one."""
  complete = metadata_store_pb2.Execution.COMPLETE
  ids = [a.id for a in artifacts]
  if ids:
    producers = sorted({e.execution_id for e in store.get_events_by_artifact_ids(ids)
                        if e.type == metadata_store_pb2.Event.OUTPUT})
    made = [e for e in store.get_executions_by_id(producers)
            if e.last_known_state == complete]
  else:
    node_type = store.get_context_type("node").id
    nodes = [c for c in store.get_contexts_by_execution(execution.id)
             if c.type_id == node_type]
    made = [e for c in nodes for e in store.get_executions_by_context(c.id)
            if e.last_known_state == complete and e.id < execution.id]
    made = sorted(made, key=lambda e: e.id)[-1:]
  return _seconds(min(made, key=lambda e: e.id)) if made else None


def connection_config(uri: str,
                      readonly: bool = True) -> metadata_store_pb2.ConnectionConfig:
  """A mysql:// URI (see `pipeline.configs.mysql_parts`) or a SQLite path."""
  config = metadata_store_pb2.ConnectionConfig()
  if uri.startswith("mysql://"):
    from pipeline.configs import mysql_parts  # pylint: disable=g-import-not-at-top
    parts = mysql_parts(uri)
    config.mysql.host = parts["host"]
    config.mysql.port = parts["port"]
    config.mysql.database = parts["database"]
    config.mysql.user = parts["user"]
    config.mysql.password = parts["password"]
    return config
  config.sqlite.filename_uri = uri
  config.sqlite.connection_mode = (
      metadata_store_pb2.SqliteMetadataSourceConfig.READONLY if readonly else
      metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE)
  return config


def open_store(uri: str, readonly: bool = True) -> metadata_store.MetadataStore:
  """The store at `uri`: a SQLite file, or a MySQL/MariaDB database."""
  return metadata_store.MetadataStore(connection_config(uri, readonly))


def max_execution_id(store: metadata_store.MetadataStore) -> int:
  """The newest execution's id (0 for an empty store): TFX names dirs by it."""
  newest = store.get_executions(list_options=metadata_store.ListOptions(
      limit=1, order_by=metadata_store.OrderByField.ID, is_asc=False))
  return newest[0].id if newest else 0


def node_name(store: metadata_store.MetadataStore, execution_id: int) -> str:
  """The pipeline node an execution belongs to, e.g. "Trainer"."""
  try:
    node_type = store.get_context_type("node").id
    contexts = store.get_contexts_by_execution(execution_id)
  except errors.NotFoundError:  # an execution outside any pipeline node
    contexts, node_type = [], None
  return next((c.name.split(".", 1)[-1] for c in contexts
               if c.type_id == node_type), f"execution {execution_id}")


def latest_run_id(store: metadata_store.MetadataStore) -> Optional[str]:
  runs = store.get_contexts_by_type("pipeline_run")
  return max(runs, key=lambda c: c.id).name if runs else None


def run_of(store: metadata_store.MetadataStore,
           execution_ids: List[int]) -> Optional[str]:
  """The pipeline run that these executions (a run's own) belong to."""
  run_type = store.get_context_type("pipeline_run").id
  for execution_id in sorted(execution_ids, reverse=True):
    for context in store.get_contexts_by_execution(execution_id):
      if context.type_id == run_type:
        return context.name
  return None


def read_run(store: metadata_store.MetadataStore,
             run_id: str) -> Dict[str, NodeRun]:
  """{node id: NodeRun} for the executions of pipeline run `run_id`."""
  run = store.get_context_by_type_and_name("pipeline_run", run_id)
  if run is None:
    return {}
  executions = store.get_executions_by_context(run.id)
  events = store.get_events_by_execution_ids([e.id for e in executions])
  artifact_ids = sorted({e.artifact_id for e in events})
  artifacts = {a.id: a for a in store.get_artifacts_by_id(artifact_ids)}
  nodes = {}
  for execution in sorted(executions, key=lambda e: e.id):
    node = node_name(store, execution.id)
    outputs: Dict[str, List[metadata_store_pb2.Artifact]] = {}
    for event in events:
      if (event.execution_id == execution.id and event.type in (
          metadata_store_pb2.Event.OUTPUT,
          metadata_store_pb2.Event.PENDING_OUTPUT)):
        outputs.setdefault(event.path.steps[0].key, []).append(
            artifacts[event.artifact_id])
    state = state_name(execution.last_known_state)
    made = (_made_seconds(store, execution,
                          [a for arts in outputs.values() for a in arts])
            if state == "cached" else None)
    nodes[node] = NodeRun(state, _seconds(execution), outputs, made,
                          cache_reason(store, execution))
  return nodes


_CACHE_CONTEXT = "execution_cache"  # TFX's context type of a cache key


def _inputs(store: metadata_store.MetadataStore, execution_id: int) -> Dict[str, List[int]]:
  found: Dict[str, List[int]] = {}
  for event in store.get_events_by_execution_ids([execution_id]):
    if event.type == metadata_store_pb2.Event.INPUT and event.path.steps:
      found.setdefault(event.path.steps[0].key, []).append(event.artifact_id)
  return {k: sorted(v) for k, v in found.items()}


def _parameters(execution: metadata_store_pb2.Execution) -> Dict[str, Any]:
  """Execution properties, JSON objects opened one level (custom_config.code)."""
  import json  # pylint: disable=g-import-not-at-top
  found: Dict[str, Any] = {}
  for name, value in execution.custom_properties.items():
    if name.startswith("__"):
      continue
    raw = getattr(value, value.WhichOneof("value") or "string_value")
    try:
      opened = json.loads(raw) if isinstance(raw, str) and raw[:1] == "{" else None
    except ValueError:
      opened = None
    if isinstance(opened, dict):
      found.update({f"{name}.{k}": json.dumps(v, sort_keys=True)
                    for k, v in opened.items()})
    else:
      found[name] = str(raw)
  return found


def cache_reason(store: metadata_store.MetadataStore,
                 execution: metadata_store_pb2.Execution) -> Optional[str]:
  """Why TFX reused this node's outputs, or ran it, in one line.

  TFX's cache key is a SHA-256 over the node, its input artifacts, its
  parameters (ours carry a digest of the code each step runs, and the
  data's fingerprint) and its executor; each execution is filed under its
  key. A cached execution shares its key with the one that made the
  outputs; one that ran is compared with the node's previous execution to
  name what changed. None for a node without a key (a resolver).
  """
  try:
    cache_type = store.get_context_type(_CACHE_CONTEXT).id
  except errors.NotFoundError:
    return None
  keys = [c for c in store.get_contexts_by_execution(execution.id)
          if c.type_id == cache_type]
  if not keys:
    return None
  key = keys[0].name[:12]
  if execution.last_known_state == metadata_store_pb2.Execution.CACHED:
    made = [e for e in store.get_executions_by_context(keys[0].id)
            if e.last_known_state == metadata_store_pb2.Execution.COMPLETE]
    origin = f" as execution {min(e.id for e in made)}'s" if made else ""
    return (f"cached: the same cache key {key}{origin} (same inputs, "
            "parameters and code)")
  node_type = store.get_context_type("node").id
  nodes = [c for c in store.get_contexts_by_execution(execution.id)
           if c.type_id == node_type]
  done = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
  before = sorted((e for c in nodes for e in store.get_executions_by_context(c.id)
                   if e.id < execution.id and e.last_known_state in done),
                  key=lambda e: e.id)
  if not before:
    return f"ran: cache key {key} is new (the node's first execution here)"
  last = before[-1]
  old, new = _parameters(last), _parameters(execution)
  changed = [f"parameter {n}" for n in sorted(set(old) | set(new))
             if old.get(n) != new.get(n)]
  old_in, new_in = _inputs(store, last.id), _inputs(store, execution.id)
  changed += [f"input {k}" for k in sorted(set(old_in) | set(new_in))
              if old_in.get(k) != new_in.get(k)]
  if not changed:
    return (f"ran: cache key {key} differs from execution {last.id}'s with the same "
            "inputs and parameters (caching off, or another executor)")
  return f"ran: since execution {last.id}, changed: {', '.join(changed)}"


def custom_property(artifact: metadata_store_pb2.Artifact, name: str) -> Any:
  """A custom property as plain Python (JSON properties decoded)."""
  if name not in artifact.custom_properties:
    return None
  value = artifact.custom_properties[name]
  kind = value.WhichOneof("value")
  if kind == "struct_value":
    decoded = json_format.MessageToDict(value.struct_value)
    return decoded.get("__value__", decoded)
  return getattr(value, kind) if kind else None


def data_files(idx_files: Dict[str, Any]) -> Dict[str, Dict[str, Optional[str]]]:
  """{file name: {"sha256", "content_sha256"}} from an Examples artifact's
  `idx_files`: the file as stored (what `sha256sum` prints; None where an
  older run did not record it) and its decompressed IDX content."""
  found = {}
  for info in idx_files.values():
    for kind in ("images", "labels"):
      found[os.path.basename(info[kind])] = {
          "sha256": info.get(f"{kind}_file_sha256"),
          "content_sha256": info.get(f"{kind}_content_sha256",
                                     info.get(f"{kind}_sha256"))}
  return found
