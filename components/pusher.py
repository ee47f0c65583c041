"""ServingPusher: blessed models into TF Serving's `<base>/<version>/` layout.

Why not the stock Pusher: it copies files straight into `<base>/<version>/`,
so a server polling the base directory can find a version that is still
being written. Here a version is staged under a hidden, non-numeric name that
TF Serving ignores and then renamed into place in one step. Where a
filesystem cannot rename directories atomically (object stores such as
gs://), files are copied with `saved_model.pb` last, the convention TF
Serving relies on there.

A model whose *content* (a SHA-256 over the SavedModel's files) already sits
in the base directory is not pushed again: the push record lists that
version instead. Content, not the Trainer artifact's URI, because a URI can
come back with other files in it (a new ML Metadata store restarts ids).
Pushes into one local base directory take turns under a file lock, which
also makes it safe to clear the staging dirs a dead push left.
"""


import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from typing import Dict, Iterator, Optional

from tfx import v1 as tfx

from components.model_layout import SAVED_MODEL, versions

SERVING_SUBDIR = "Format-Serving"  # where the Trainer writes the SavedModel
STAMPED_MODEL = "stamped_model"  # the infra validator's copy, with warm-up
PUSH_RECORD = os.path.join("assets.extra", "mnist_tfx_push.json")
STAGING_PREFIX = ".staging-"
PUSH_LOCK = ".push.lock"


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def content_digest(model_dir: str) -> str:
  """SHA-256 over a SavedModel's files (paths and bytes), the push record aside."""
  gfile = _gfile()
  h = hashlib.sha256()
  files = sorted(
      os.path.relpath(os.path.join(root, name), model_dir)
      for root, _, names in gfile.walk(model_dir) for name in names)
  for rel in files:
    if rel == PUSH_RECORD:
      continue
    h.update(rel.encode() + b"\0")
    with gfile.GFile(os.path.join(model_dir, rel), "rb") as f:
      while chunk := f.read(1 << 20):
        h.update(chunk)
    h.update(b"\0")
  return h.hexdigest()


def find_pushed(base_dir: str, digest: str) -> Optional[str]:
  """The version directory already holding a model of this content, if any."""
  for _, path in sorted(versions(base_dir).items(), reverse=True):
    if (push_record(path).get("model_sha256") or content_digest(path)) == digest:
      return path
  return None


def push_record(version_dir: str) -> Dict[str, object]:
  gfile = _gfile()
  path = os.path.join(version_dir, PUSH_RECORD)
  if not gfile.exists(path):
    return {}
  with gfile.GFile(path) as f:
    try:
      record = json.load(f)
    except ValueError:
      return {}
  return record if isinstance(record, dict) else {}


def find_by_model(base_dir: str, model_uri: str) -> Optional[str]:
  """The newest version whose push record names the Trainer artifact `model_uri`."""
  for _, path in sorted(versions(base_dir).items(), reverse=True):
    if push_record(path).get("model_uri") == model_uri:
      return path
  return None


@contextlib.contextmanager
def push_lock(base_dir: str) -> Iterator[None]:
  """One push at a time into a local base dir; clears dead pushes' staging."""
  if "://" in base_dir:
    yield
    return
  os.makedirs(base_dir, exist_ok=True)
  fd = os.open(os.path.join(base_dir, PUSH_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)  # waits: a push takes about a second
    for name in os.listdir(base_dir):
      if name.startswith(STAGING_PREFIX):  # no live push owns it now
        _gfile().rmtree(os.path.join(base_dir, name))
    yield
  finally:
    os.close(fd)


def copy_tree(src: str, dst: str, last: Optional[str] = None) -> None:
  """Copies a directory tree; the file named `last` (at the top) goes last."""
  gfile = _gfile()
  deferred = None
  for root, _, files in gfile.walk(src):
    rel = os.path.relpath(root, src)
    target = dst if rel == "." else os.path.join(dst, rel)
    gfile.makedirs(target)
    for name in files:
      if rel == "." and name == last:
        deferred = (os.path.join(root, name), os.path.join(target, name))
        continue
      gfile.copy(os.path.join(root, name), os.path.join(target, name),
                 overwrite=True)
  if deferred:
    gfile.copy(*deferred, overwrite=True)


def push(model_dir: str, base_dir: str, record: Dict[str, object]) -> str:
  """Publishes `model_dir` as the next version under `base_dir`; returns its path.

  Call under `push_lock`. If anything fails (a full disk), the staging dir
  is removed and the error raised: no version appears.
  """
  gfile = _gfile()
  gfile.makedirs(base_dir)
  existing = versions(base_dir)
  version = max([int(time.time())] + [v + 1 for v in existing])
  final = os.path.join(base_dir, str(version))
  local = "://" not in base_dir
  staging = (os.path.join(base_dir, f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
             if local else final)
  try:
    copy_tree(model_dir, staging, last=SAVED_MODEL)
    gfile.makedirs(os.path.join(staging, os.path.dirname(PUSH_RECORD)))
    with gfile.GFile(os.path.join(staging, PUSH_RECORD), "w") as f:
      json.dump(dict(record, version=version), f, indent=1)
    if local:
      gfile.rename(staging, final)  # atomic: the version appears complete
  except BaseException:
    if local and gfile.exists(staging):
      gfile.rmtree(staging)
    raise
  return final


@tfx.dsl.components.component
def ServingPusher(  # pylint: disable=invalid-name
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model_blessing: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ModelBlessing],
    infra_blessing: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.InfraBlessing],
    pushed_model: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.PushedModel],
    serving_dir: tfx.dsl.components.Parameter[str],
) -> None:
  """Pushes `model` to `serving_dir` if the Evaluator and the infra
  validator both blessed it: the infra validator's copy, which holds the
  warm-up requests (as TFX's Pusher takes an InfraBlessing's model)."""
  if (model_blessing.get_int_custom_property("blessed") != 1 or
      infra_blessing.get_int_custom_property("blessed") != 1):
    pushed_model.set_int_custom_property("pushed", 0)
    return
  source = (os.path.join(infra_blessing.uri, STAMPED_MODEL)
            if infra_blessing.get_int_custom_property("has_model") == 1
            else os.path.join(model.uri, SERVING_SUBDIR))
  digest = content_digest(source)
  with push_lock(serving_dir):
    destination = find_pushed(serving_dir, digest)
    pushed_model.set_int_custom_property("pushed_new", int(destination is None))
    if destination is None:
      destination = push(source, serving_dir, {
          "model_uri": model.uri, "model_id": model.id, "model_sha256": digest,
          "blessing_uri": model_blessing.uri,
          "infra_blessing_uri": infra_blessing.uri, "pushed_at": time.time()})
  pushed_model.set_int_custom_property("pushed", 1)
  pushed_model.set_string_custom_property("pushed_destination", destination)
  pushed_model.set_string_custom_property("model_sha256", digest)
  pushed_model.set_string_custom_property(
      "pushed_version", os.path.basename(destination.rstrip("/")))
