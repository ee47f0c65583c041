"""ServingPusher: blessed models into TF Serving's `<base>/<version>/` layout.

Why not the stock Pusher: it copies files straight into `<base>/<version>/`,
so a server polling the base directory can find a version that is still
being written. Here a version is staged under a hidden, non-numeric name that
TF Serving ignores and then renamed into place in one step. Where a
filesystem cannot rename directories atomically (object stores such as
gs://), files are copied with `saved_model.pb` last, the convention TF
Serving relies on there.

A model that already sits in the base directory (same Trainer artifact) is
not pushed again: the push record lists the existing version instead.
"""


import json
import os
import time
import uuid
from typing import Dict, Optional

from tfx import v1 as tfx

from components.model_layout import SAVED_MODEL, versions

SERVING_SUBDIR = "Format-Serving"  # where the Trainer writes the SavedModel
PUSH_RECORD = os.path.join("assets.extra", "mnist_tfx_push.json")


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def find_pushed(base_dir: str, model_uri: str) -> Optional[str]:
  """The version directory already holding the model at `model_uri`, if any."""
  gfile = _gfile()
  for _, path in sorted(versions(base_dir).items(), reverse=True):
    record = os.path.join(path, PUSH_RECORD)
    if gfile.exists(record):
      with gfile.GFile(record) as f:
        if json.load(f).get("model_uri") == model_uri:
          return path
  return None


def _copy_tree(src: str, dst: str, last: Optional[str] = None) -> None:
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
  """Publishes `model_dir` as the next version under `base_dir`; returns its path."""
  gfile = _gfile()
  gfile.makedirs(base_dir)
  existing = versions(base_dir)
  version = max([int(time.time())] + [v + 1 for v in existing])
  final = os.path.join(base_dir, str(version))
  local = "://" not in base_dir
  staging = (os.path.join(base_dir, f".staging-{version}-{uuid.uuid4().hex[:8]}")
             if local else final)
  _copy_tree(model_dir, staging, last=SAVED_MODEL)
  gfile.makedirs(os.path.join(staging, os.path.dirname(PUSH_RECORD)))
  with gfile.GFile(os.path.join(staging, PUSH_RECORD), "w") as f:
    json.dump(dict(record, version=version), f, indent=1)
  if local:
    gfile.rename(staging, final)  # atomic: the version appears complete
  return final


@tfx.dsl.components.component
def ServingPusher(  # pylint: disable=invalid-name
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model_blessing: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ModelBlessing],
    pushed_model: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.PushedModel],
    serving_dir: tfx.dsl.components.Parameter[str],
) -> None:
  """Pushes `model` to `serving_dir` if `model_blessing` blessed it."""
  if model_blessing.get_int_custom_property("blessed") != 1:
    pushed_model.set_int_custom_property("pushed", 0)
    return
  destination = find_pushed(serving_dir, model.uri)
  pushed_model.set_int_custom_property("pushed_new", int(destination is None))
  if destination is None:
    destination = push(os.path.join(model.uri, SERVING_SUBDIR), serving_dir, {
        "model_uri": model.uri, "model_id": model.id,
        "blessing_uri": model_blessing.uri, "pushed_at": time.time()})
  pushed_model.set_int_custom_property("pushed", 1)
  pushed_model.set_string_custom_property("pushed_destination", destination)
  pushed_model.set_string_custom_property(
      "pushed_version", os.path.basename(destination.rstrip("/")))
