"""Pushing into TF Serving's layout: complete versions only, never twice."""

import json
import os

import pytest

from components import pusher


def _model_dir(tmp_path, payload=b"graph"):
  d = tmp_path / "model"
  (d / "variables").mkdir(parents=True, exist_ok=True)
  (d / "variables" / "variables.index").write_bytes(b"index")
  (d / "saved_model.pb").write_bytes(payload)
  return str(d)


def test_push_creates_numeric_version_with_everything(tmp_path):
  base = str(tmp_path / "serving" / "mnist")
  path = pusher.push(_model_dir(tmp_path), base, {"model_uri": "m1"})
  name = os.path.basename(path)
  assert name.isdigit()
  assert open(os.path.join(path, "saved_model.pb"), "rb").read() == b"graph"
  assert os.path.exists(os.path.join(path, "variables", "variables.index"))
  record = json.load(open(os.path.join(path, pusher.PUSH_RECORD)))
  assert record["model_uri"] == "m1" and record["version"] == int(name)
  # Nothing but complete versions is left in the base directory.
  assert [n for n in os.listdir(base) if n != pusher.PUSH_LOCK] == [name]


def test_versions_increase_even_within_one_second(tmp_path):
  base = str(tmp_path / "mnist")
  a = pusher.push(_model_dir(tmp_path), base, {"model_uri": "m1"})
  b = pusher.push(_model_dir(tmp_path), base, {"model_uri": "m2"})
  assert int(os.path.basename(b)) > int(os.path.basename(a))
  assert sorted(pusher.versions(base)) == [int(os.path.basename(a)),
                                          int(os.path.basename(b))]


def test_find_pushed_by_content_not_uri(tmp_path):
  base = str(tmp_path / "mnist")
  model = _model_dir(tmp_path)
  digest = pusher.content_digest(model)
  assert pusher.find_pushed(base, digest) is None
  path = pusher.push(model, base, {"model_uri": "m1", "model_sha256": digest})
  assert pusher.find_pushed(base, digest) == path
  # The same URI with other files in it (a new ML Metadata store reusing an
  # artifact id) is another model.
  other = pusher.content_digest(_model_dir(tmp_path / "b", payload=b"other"))
  assert other != digest and pusher.find_pushed(base, other) is None
  # The push record itself is not part of the content.
  assert pusher.content_digest(path) == digest


def test_find_pushed_computes_content_without_a_recorded_digest(tmp_path):
  base = str(tmp_path / "mnist")
  model = _model_dir(tmp_path)
  path = pusher.push(model, base, {"model_uri": "m1"})  # an older release's record
  assert pusher.find_pushed(base, pusher.content_digest(model)) == path


def test_failed_push_leaves_no_staging_dir(tmp_path, monkeypatch):
  base = str(tmp_path / "mnist")
  import tensorflow as tf
  real_copy = tf.io.gfile.copy

  def copy(src, dst, overwrite=False):
    if src.endswith("saved_model.pb"):
      raise tf.errors.ResourceExhaustedError(None, None,
                                             f"{dst}; No space left on device")
    return real_copy(src, dst, overwrite)

  monkeypatch.setattr(tf.io.gfile, "copy", copy)
  with pytest.raises(tf.errors.ResourceExhaustedError):
    pusher.push(_model_dir(tmp_path), base, {"model_uri": "m1"})
  assert os.listdir(base) == []


def test_push_lock_clears_dead_pushes_staging(tmp_path):
  base = tmp_path / "mnist"
  (base / ".staging-17-dead").mkdir(parents=True)
  (base / ".staging-17-dead" / "saved_model.pb").write_bytes(b"half")
  with pusher.push_lock(str(base)):
    assert not (base / ".staging-17-dead").exists()
  assert pusher.versions(str(base)) == {}


def test_find_by_model(tmp_path):
  base = str(tmp_path / "mnist")
  path = pusher.push(_model_dir(tmp_path), base, {"model_uri": "m1"})
  assert pusher.find_by_model(base, "m1") == path
  assert pusher.find_by_model(base, "m2") is None


def test_incomplete_and_hidden_dirs_are_not_versions(tmp_path):
  base = tmp_path / "mnist"
  (base / "17").mkdir(parents=True)  # no saved_model.pb: half written
  (base / ".staging-18-abc").mkdir()
  assert pusher.versions(str(base)) == {}


def test_saved_model_pb_is_copied_last(tmp_path, monkeypatch):
  order = []
  import tensorflow as tf
  real_copy = tf.io.gfile.copy
  monkeypatch.setattr(tf.io.gfile, "copy", lambda src, dst, overwrite=False: (
      order.append(os.path.basename(src)), real_copy(src, dst, overwrite)))
  pusher.copy_tree(_model_dir(tmp_path), str(tmp_path / "out"),
                    last="saved_model.pb")
  assert order[-1] == "saved_model.pb" and len(order) == 2
