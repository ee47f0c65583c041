"""The Trainer's distribution strategies build and fit the registry's models."""

import numpy as np
import pytest
import tensorflow as tf

from components.models import Hyperparameters, build_model
from components.trainer import callbacks, data, run
from mnist_tfx import defaults


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
            callbacks=callbacks.for_model_run(str(tmp_path)))
  for split in ("train", "validation"):
    files = glob.glob(os.path.join(tmp_path, defaults.TENSORBOARD_DIR, split, "events.*"))
    assert files, split
    steps = []
    for record in tf.data.TFRecordDataset(files):
      event = tf.compat.v1.Event.FromString(record.numpy())
      steps += [event.step for v in event.summary.value if v.tag == "epoch_loss"]
    assert steps == [0, 1, 2], (split, steps)


class _Accessor:
  """A data accessor over in-memory raw examples (what TFXIO yields)."""

  def __init__(self, images, labels):
    self._data = {"image": images, "label": labels}

  def tf_dataset_factory(self, file_pattern, options, schema):
    del file_pattern, schema
    return tf.data.Dataset.from_tensor_slices(self._data).batch(options.batch_size)


class _TransformOutput:
  raw_metadata = type("Metadata", (), {"schema": None})

  def transform_features_layer(self):
    from components import features  # pylint: disable=g-import-not-at-top
    return lambda raw: {
        features.TRANSFORMED_IMAGE_KEY: tf.reshape(
            tf.cast(raw["image"], tf.float32) / 255.0, [-1, 784]),
        features.LABEL_KEY: tf.reshape(raw["label"], [-1, 1])}


def test_load_split_keeps_every_example_in_order():
  rng = np.random.default_rng(0)
  n = 2 * data._READ_BATCH + 7  # pylint: disable=protected-access
  images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.int64)
  labels = rng.integers(0, 10, size=n, dtype=np.int64)
  x, y = data.load_split(["unused"], _Accessor(images, labels), _TransformOutput())
  np.testing.assert_array_equal(x, images.reshape(n, 784).astype(np.float32) / 255.0)
  np.testing.assert_array_equal(y, labels)
  assert x.ctypes.data % 4096 == 0  # its own pages: aligned for as_tensor


def test_load_split_of_nothing_is_a_clear_error():
  empty = _Accessor(np.zeros((0, 28, 28), np.int64), np.zeros(0, np.int64))
  with pytest.raises(ValueError, match="no examples in"):
    data.load_split(["Split-eval/*"], empty, _TransformOutput())


def test_as_tensor_shares_an_aligned_arrays_memory():
  array = data.unpooled_empty((5, 3), np.float32)
  array[...] = np.arange(15).reshape(5, 3)
  tensor = data.as_tensor(array)
  np.testing.assert_array_equal(tensor.numpy(), np.arange(15).reshape(5, 3))
  array[0, 0] = 99  # seen through the tensor: one buffer, no copy
  assert tensor.numpy()[0, 0] == 99


@pytest.mark.parametrize("make", [
    lambda: data.unpooled_empty((17,), np.float32)[1:],  # 4 bytes off: misaligned
    lambda: np.arange(16, dtype=np.float32)[::2],  # not contiguous
    lambda: np.frombuffer(bytes(64), np.float32),  # read-only
])
def test_as_tensor_copies_what_it_cannot_share(make):
  array = make()
  if array.flags.writeable:
    array[...] = np.arange(array.size)
  tensor = data.as_tensor(array)  # must not abort the process
  np.testing.assert_array_equal(tensor.numpy(), array)
  if array.flags.writeable:
    array[0] = -1  # a copy: the tensor keeps its values
    assert tensor.numpy()[0] == 0
