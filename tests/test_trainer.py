"""The Trainer's distribution strategies build and fit the registry's models."""

import numpy as np
import pytest
import tensorflow as tf

from components.models import Hyperparameters, build_model
from components.trainer import run


@pytest.mark.parametrize("name,kind", [
    ("none", type(tf.distribute.get_strategy())),
    ("mirrored", tf.distribute.MirroredStrategy),
    ("multi_worker_mirrored", tf.distribute.MultiWorkerMirroredStrategy),
])
def test_strategies_train_the_model(name, kind):
  strategy = run._strategy(name)  # pylint: disable=protected-access
  assert isinstance(strategy, kind)
  hp = Hyperparameters(model="basic", epochs=1, batch_size=16,
                       steps_per_execution=2, distribution=name)
  rng = np.random.default_rng(0)
  x = rng.random((64, 784), dtype=np.float32)
  y = rng.integers(0, 10, 64)
  with strategy.scope():
    model = build_model(hp, steps_per_epoch=4)
  before = [np.array(w) for w in model.get_weights()]
  history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
  assert np.isfinite(history.history["loss"][0])
  assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_cnn_trains_one_epoch_on_tiny_data():
  hp = Hyperparameters(model="cnn", epochs=1, batch_size=16, steps_per_execution=2)
  rng = np.random.default_rng(0)
  x, y = rng.random((64, 784), dtype=np.float32), rng.integers(0, 10, 64)
  model = build_model(hp, steps_per_epoch=4)
  before = [np.array(w) for w in model.get_weights()]
  history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
  assert np.isfinite(history.history["loss"][0])
  assert all(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_tensorboard_gets_one_scalar_per_epoch(tmp_path):
  import glob
  import os
  hp = Hyperparameters(model="basic", epochs=3, batch_size=16, steps_per_execution=2)
  rng = np.random.default_rng(0)
  x, y = rng.random((64, 784), dtype=np.float32), rng.integers(0, 10, 64)
  model = build_model(hp, steps_per_epoch=4)
  model.fit(x, y, batch_size=16, epochs=3, validation_data=(x, y), verbose=0,
            callbacks=run.callbacks(str(tmp_path)))
  for split in ("train", "validation"):
    files = glob.glob(os.path.join(tmp_path, run.TENSORBOARD_DIR, split, "events.*"))
    assert files, split
    steps = []
    for record in tf.data.TFRecordDataset(files):
      event = tf.compat.v1.Event.FromString(record.numpy())
      steps += [event.step for v in event.summary.value if v.tag == "epoch_loss"]
    assert steps == [0, 1, 2], (split, steps)
