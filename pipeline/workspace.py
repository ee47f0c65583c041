"""A run's output dir: one run at a time, and nothing half-done left behind.

`exclusive` takes an OS lock (flock) on the output dir and on the ML Metadata
store; the kernel releases it when the holder dies, even by kill -9, so a
stale lock never blocks anyone. Under the lock, `recover` repairs what an
earlier run that died may have left:
- executions ML Metadata still calls RUNNING: marked CANCELED (custom
  property `interrupted`), their pending outputs ABANDONED and the partial
  directories removed, so no cache lookup or reader ever takes them;
- artifact directories ML Metadata does not know (the store was deleted or
  replaced, so execution ids start again at 1): moved aside, because TFX
  would write the next artifacts into them, over the old files;
- `summary.json.tmp` from an interrupted write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import sys
import time
from typing import Callable, Iterator, List, Optional

from mnist_tfx import defaults
from pipeline.configs import PipelineConfig, redact

LOCK_FILE = ".mnist-tfx.lock"
ORPHANS_DIR = "orphaned"  # <local_dir>/orphaned/<time>/<node>/<key>/<id>
INTERRUPTED = "interrupted"  # custom property on executions a dead run left


class OutputDirBusy(RuntimeError):
  """Another run holds the lock; the message names it."""


class DiskFull(OSError):
  """No space left where a run writes; the message names the path."""


def is_disk_full(error: BaseException) -> bool:
  return isinstance(error, OSError) and error.errno in (errno.ENOSPC,
                                                        errno.EDQUOT)


def _holder(path: str) -> str:
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
    return (f"PID {info['pid']}, started {info['started']}: "
            f"{info.get('command', '')}").rstrip(": ")
  except (OSError, ValueError, KeyError, TypeError):
    return "details not written yet"


@contextlib.contextmanager
def _flock(path: str, what: str) -> Iterator[None]:
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise OutputDirBusy(
          f"{what} is in use by another mnist-tfx run ({_holder(path)}); "
          "wait for it to finish, or use another --output-dir") from None
    # The command as it was given, passwords in URIs masked; the file is the
    # owner's alone (it names hosts and users).
    info = {"pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": redact(" ".join(os.path.basename(a) if i == 0 else a
                                       for i, a in enumerate(sys.argv)))}
    os.fchmod(fd, 0o600)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock


@contextlib.contextmanager
def exclusive(config: PipelineConfig) -> Iterator[None]:
  """Holds the output dir (and a metadata store kept elsewhere) for one run.

  Raises OutputDirBusy at once when another run holds either, and DiskFull
  when not even the lock file can be written.
  """
  paths = [(os.path.join(config.local_dir, LOCK_FILE), config.local_dir)]
  # A database server takes its own transactions: runs of other output dirs
  # share it at once (that is what it is for).
  metadata_dir = (config.local_dir if config.shared_metadata else
                  os.path.dirname(os.path.abspath(config.metadata_uri)))
  if os.path.abspath(metadata_dir) != os.path.abspath(config.local_dir):
    paths.append((config.metadata_uri + ".lock", config.metadata_uri))
  with contextlib.ExitStack() as stack:
    for path, what in paths:
      try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        stack.enter_context(_flock(path, what))
      except OSError as e:
        if is_disk_full(e):
          raise DiskFull(e.errno, f"no space left on the device of {path}",
                         path) from e
        raise
    yield


def held(config: PipelineConfig) -> bool:
  """Whether a live run holds the output dir now (its lock is taken)."""
  path = os.path.join(config.local_dir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return False  # never run, or not readable: no holder to find
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return False
  except BlockingIOError:
    return True
  finally:
    os.close(fd)


def dead_executions(config: PipelineConfig) -> Callable[[int], bool]:
  """Tells whether an execution ML Metadata calls RUNNING belongs to a run of
  this output dir whose process is gone (killed, out of memory, power).

  With no live holder of the lock, every RUNNING execution of a store only
  this dir uses is dead; in a shared store, those that wrote into this dir's
  pipeline root (other dirs' runs may be alive).
  """
  if held(config):
    return lambda execution_id: False
  if not config.shared_metadata:
    return lambda execution_id: True
  ours = {eid for eid, _ in _artifact_dirs(config.pipeline_root_uri)}
  return lambda execution_id: execution_id in ours


# --- recovery ----------------------------------------------------------------

def close_interrupted(config: PipelineConfig, reason: str,
                      failed_since: Optional[float] = None) -> List[str]:
  """Marks executions still RUNNING as CANCELED and removes their partial
  output dirs; returns one line per execution. With `failed_since` (a
  time.time() when the run was asked to stop), executions that failed at or
  after it are the interrupt's too, and are closed the same way.

  Only safe while `exclusive` is held: then no live run owns them. In a
  shared store, only the executions that wrote into this output dir's
  pipeline root are this dir's to close: other dirs' runs may be live.
  """
  metadata_path = config.metadata_uri
  if not config.metadata_exists:
    return []
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  from results import metadata  # pylint: disable=g-import-not-at-top
  store = metadata.open_store(metadata_path, readonly=False)
  execution = metadata_store_pb2.Execution
  artifact = metadata_store_pb2.Artifact
  since_ms = None if failed_since is None else int(failed_since * 1000)
  stale = [e for e in store.get_executions()
           if e.last_known_state in (execution.RUNNING, execution.NEW)
           or (since_ms is not None and e.last_known_state == execution.FAILED
               and e.last_update_time_since_epoch >= since_ms)]
  if config.shared_metadata:
    ours = {eid for eid, _ in _artifact_dirs(config.pipeline_root_uri)}
    stale = [e for e in stale if e.id in ours]
  lines = []
  for e in stale:
    e.last_known_state = execution.CANCELED
    e.custom_properties[INTERRUPTED].string_value = reason
    events = store.get_events_by_execution_ids([e.id])
    outputs = store.get_artifacts_by_id(sorted(
        {ev.artifact_id for ev in events if ev.type in (
            metadata_store_pb2.Event.OUTPUT,
            metadata_store_pb2.Event.PENDING_OUTPUT)}))
    partial = [a for a in outputs if a.state in (artifact.PENDING,
                                                 artifact.UNKNOWN)]
    for a in partial:
      a.state = artifact.ABANDONED
    if partial:
      store.put_artifacts(partial)
    store.put_executions([e])
    # TFX registers outputs only when it publishes them: the dirs named by
    # the execution id are what it had written so far.
    removed = [path for eid, path in _artifact_dirs(config.pipeline_root_uri)
               if eid == e.id]
    for path in removed:
      shutil.rmtree(path, ignore_errors=True)
    node = metadata.node_name(store, e.id)
    lines.append(f"{node} (execution {e.id}) was interrupted ({reason}): "
                 f"marked CANCELED in ML Metadata, {len(removed)} partial "
                 "output dir(s) removed")
  return lines


def _artifact_dirs(pipeline_root: str) -> Iterator[tuple]:
  """(execution id, path) of every `<node>/<key>/<id>` dir TFX writes."""
  if not os.path.isdir(pipeline_root):
    return
  for node in sorted(os.listdir(pipeline_root)):
    node_dir = os.path.join(pipeline_root, node)
    if not os.path.isdir(node_dir):
      continue
    keys = [os.path.join(node_dir, k) for k in os.listdir(node_dir)
            if k != ".system"]
    system = os.path.join(node_dir, ".system", "executor_execution")
    for key_dir in keys + [system]:
      if not os.path.isdir(key_dir):
        continue
      for name in os.listdir(key_dir):
        if name.isdigit():
          yield int(name), os.path.join(key_dir, name)


def move_orphans(config: PipelineConfig) -> List[str]:
  """Moves artifact dirs ML Metadata does not know out of TFX's way."""
  root = config.pipeline_root_uri
  if "://" in root:
    return []
  known = 0
  if config.metadata_exists:
    from results import metadata  # pylint: disable=g-import-not-at-top
    known = metadata.max_execution_id(
        metadata.open_store(config.metadata_uri))
  orphans = [path for eid, path in _artifact_dirs(root) if eid > known]
  if not orphans:
    return []
  target = os.path.join(config.local_dir, ORPHANS_DIR,
                        time.strftime("%Y%m%d-%H%M%S"))
  for path in orphans:
    dest = os.path.join(target, os.path.relpath(path, root))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(path, dest)
  return [f"ML Metadata ({config.metadata_shown}) does not know {len(orphans)} "
          f"artifact director{'y' if len(orphans) == 1 else 'ies'} under {root} "
          "(was the store deleted or replaced?): moved to "
          f"{target} so that no new artifact is written over them"]


class MetadataUnreadable(RuntimeError):
  """The ML Metadata store exists but cannot be opened (not a database...)."""


def recover(config: PipelineConfig, reason: str) -> List[str]:
  """Repairs what a dead run left (see the module doc); lines to show."""
  try:
    lines = close_interrupted(config, reason)
    lines += move_orphans(config)
  except Exception as e:  # pylint: disable=broad-except
    if not config.metadata_exists or "query" not in str(e):
      raise
    found = re.search(r"executing query: (.*?) query:", str(e))
    cause = found.group(1) if found else str(e).splitlines()[0][:200]
    raise MetadataUnreadable(
        f"the ML Metadata store {config.metadata_shown} cannot be read ({cause}); "
        "move it aside to start a new store (the next run then moves the "
        f"artifacts it no longer knows to {os.path.join(config.local_dir, ORPHANS_DIR)})"
    ) from None
  tmp = os.path.join(config.local_dir, defaults.SUMMARY_FILE + ".tmp")
  if os.path.exists(tmp):
    os.remove(tmp)
  return lines


def free_bytes(path: str) -> Optional[int]:
  """Free space on the device holding `path` (its nearest existing parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path).free
  except OSError:
    return None
