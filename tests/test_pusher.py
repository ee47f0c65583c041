"""Pushing into TF Serving's layout: complete versions only, never twice."""

import json
import os

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
  assert os.listdir(base) == [name]


def test_versions_increase_even_within_one_second(tmp_path):
  base = str(tmp_path / "mnist")
  a = pusher.push(_model_dir(tmp_path), base, {"model_uri": "m1"})
  b = pusher.push(_model_dir(tmp_path), base, {"model_uri": "m2"})
  assert int(os.path.basename(b)) > int(os.path.basename(a))
  assert sorted(pusher.versions(base)) == [int(os.path.basename(a)),
                                          int(os.path.basename(b))]


def test_find_pushed(tmp_path):
  base = str(tmp_path / "mnist")
  assert pusher.find_pushed(base, "m1") is None
  path = pusher.push(_model_dir(tmp_path), base, {"model_uri": "m1"})
  assert pusher.find_pushed(base, "m1") == path
  assert pusher.find_pushed(base, "m2") is None


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
  pusher._copy_tree(_model_dir(tmp_path), str(tmp_path / "out"),
                    last="saved_model.pb")
  assert order[-1] == "saved_model.pb" and len(order) == 2
