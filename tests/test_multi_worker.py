"""Two local workers under MultiWorkerMirroredStrategy train one model; the
pipeline exports it like any other."""

import json
import os

import numpy as np
import pytest

from components.models import Hyperparameters, build_model
from components.trainer import multi_worker
from tests import tiny_mnist
from tests.conftest import _run


def _data(n, seed):
  labels = np.arange(n) % 10
  images = tiny_mnist.make_images(labels, seed=seed)
  return images.reshape(n, -1).astype(np.float32) / 255.0, labels


def test_two_workers_train_one_model_as_well_as_one_process(tmp_path):
  (x, y), (xe, ye) = _data(300, 0), _data(100, 1)
  hp = Hyperparameters(epochs=3, batch_size=16, steps_per_execution=4)
  weights, history = multi_worker.train(str(tmp_path), hp.to_dict(), x, y, xe, ye)
  assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]
  model = build_model(hp, 19)
  model.set_weights(weights)  # the registry's Keras 3 model takes them as they are
  two = np.mean(np.argmax(model.predict(xe, verbose=0), axis=1) == ye)
  single = build_model(hp, 19)
  single.fit(x, y, batch_size=16, epochs=3, verbose=0)
  one = np.mean(np.argmax(single.predict(xe, verbose=0), axis=1) == ye)
  assert two >= 0.9 and two >= one - 0.05, (two, one)
  assert sorted(os.listdir(tmp_path)) == sorted([
      multi_worker.DATA_FILE, multi_worker.HP_FILE, multi_worker.WEIGHTS_FILE,
      multi_worker.HISTORY_FILE, "worker-0.log", "worker-1.log"])


def test_a_failing_worker_fails_the_training_with_its_log(tmp_path):
  (x, y) = _data(20, 0)
  with pytest.raises(RuntimeError, match="two-worker training failed") as raised:
    multi_worker.train(str(tmp_path), {"model": "no-such-model"}, x, y, x, y)
  assert "unknown model 'no-such-model'" in str(raised.value)


def test_the_pipeline_trains_with_two_workers(tiny_data_dir, tmp_path):
  summary = _run(tiny_data_dir, str(tmp_path), distribution="multi_worker_mirrored")
  assert summary["status"] == "succeeded", summary.get("error")
  assert summary["accuracy"] >= 0.9 and summary["pushed_version"]
  with open(os.path.join(summary["artifacts"]["Trainer.model_run"], "history.json")) as f:
    history = json.load(f)
  assert history["hyperparameters"]["distribution"] == "multi_worker_mirrored"
  assert len(history["epochs"]["loss"]) == 1  # _run trains 1 epoch
