"""A model we can vouch for: validation held out of train, a stop at a NaN
loss, no export of non-finite weights, training that repeats exactly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from components.models import Hyperparameters, build_model
from components.trainer import data, export
from results import metadata
from tests.serve_process import ROOT


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "mnist_tfx", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, PYTHONPATH=ROOT))


def test_the_hold_out_is_disjoint_deterministic_and_in_place():
  rng = np.random.default_rng(0)
  x = rng.random((500, 784)).astype(np.float32)
  y = np.arange(500) % 10
  rows = {r.tobytes(): label for r, label in zip(x, y)}
  first = x.copy(), y.copy()
  n_fit = data.hold_out_in_place(x, y, 0.1)
  assert 400 < n_fit < 480
  # The same rows with the same labels, split in two parts that do not meet.
  assert {r.tobytes(): l for r, l in zip(x, y)} == rows
  fit = {r.tobytes() for r in x[:n_fit]}
  assert not fit & {r.tobytes() for r in x[n_fit:]}
  # The same records are held out whatever their order.
  shuffled_x, shuffled_y = first[0][::-1].copy(), first[1][::-1].copy()
  assert data.hold_out_in_place(shuffled_x, shuffled_y, 0.1) == n_fit
  assert {r.tobytes() for r in shuffled_x[n_fit:]} == {r.tobytes() for r in x[n_fit:]}
  with pytest.raises(ValueError, match="no validation record"):
    data.hold_out_in_place(x[:3].copy(), y[:3].copy(), 1e-9)


def test_export_refuses_non_finite_weights(tft_output, tmp_path):
  model = build_model(Hyperparameters(), 10)
  kernel = model.weights[0]
  value = kernel.numpy()
  value[0, 0] = np.nan
  kernel.assign(value)
  with pytest.raises(export.NonFiniteWeights, match="1 NaN or Inf value"):
    export.export(model, tft_output, str(tmp_path / "model"))
  assert not os.path.exists(tmp_path / "model")


def test_a_nan_loss_stops_the_trainer_with_one_clear_line(tiny_data_dir, tmp_path):
  done = _cli("run", "--data-dir", tiny_data_dir, "--output-dir", str(tmp_path),
              "--optimizer", "sgd", "--learning-rate", "1e30", "--lr-schedule",
              "constant", "--epochs", "3", "--no-report")
  assert done.returncode == 1, done.stdout + done.stderr
  line, = [l for l in done.stderr.splitlines() if "the run failed" in l]
  assert "in Trainer" in line and "the training loss became" in line
  assert "in epoch 1 by step" in line and "nothing exported" in line
  with open(tmp_path / "summary.json") as f:
    summary = json.load(f)
  assert summary["status"] == "failed" and summary["pushed_model_path"] is None
  assert not os.path.exists(tmp_path / "serving_model" / "mnist")


@pytest.fixture(scope="module")
def two_trainings(tiny_data_dir, tmp_path_factory):
  """The same config trained twice (--no-cache), in one output dir."""
  out = str(tmp_path_factory.mktemp("twice"))
  runs = []
  for _ in range(2):
    done = _cli("run", "--data-dir", tiny_data_dir, "--output-dir", out,
                "--epochs", "2", "--no-cache", "--no-report")
    assert done.returncode == 0, done.stdout + done.stderr
    with open(os.path.join(out, "summary.json")) as f:
      runs.append(json.load(f))
  return out, runs


def test_the_same_config_trains_the_same_weights(two_trainings):
  _, (a, b) = two_trainings
  paths = [os.path.join(r["artifacts"]["Trainer.model"], "Format-Serving") for r in (a, b)]
  assert paths[0] != paths[1]  # two trainings, not a cache hit
  first, second = (tf.saved_model.load(p) for p in paths)
  weights = [[v.numpy() for v in m.weights] for m in (first, second)]
  assert len(weights[0]) == len(weights[1]) > 0
  for u, v in zip(*weights):
    np.testing.assert_array_equal(u, v)  # bit for bit: CPU kernels are deterministic here
  assert a["accuracy"] == b["accuracy"]


def test_training_validates_on_a_hold_out_of_train_never_on_test(two_trainings):
  out, (_, b) = two_trainings
  assert b["fit_examples"] + b["validation_examples"] == b["train_examples"]
  assert 0.05 < b["validation_examples"] / b["train_examples"] < 0.15
  store = metadata.open_store(os.path.join(out, "metadata.sqlite"))
  trainers = [e for e in store.get_executions()
              if metadata.node_name(store, e.id) == "Trainer"]
  assert trainers
  for execution in trainers:
    eval_args = json.loads(execution.custom_properties["eval_args"].string_value)
    train_args = json.loads(execution.custom_properties["train_args"].string_value)
    assert eval_args["splits"] == ["train"] and train_args["splits"] == ["train"]
  with open(os.path.join(b["artifacts"]["Trainer.model_run"], "history.json")) as f:
    history = json.load(f)
  assert history["validation"] == "10% of the train split, held out"
  assert "val_loss" in history["epochs"]
