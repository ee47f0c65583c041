"""The exported SavedModel: both signatures agree, and bad pixels are refused."""


import numpy as np
import pytest
import tensorflow as tf

from components import features
from components.models import Hyperparameters, build_model
from components.trainer import export
from tests import tiny_mnist


@pytest.fixture(scope="module", params=["improved", "cnn"])
def saved_path(request, tft_output, tmp_path_factory):
  """Every test below runs on an MLP's and a CNN's SavedModel."""
  model = build_model(Hyperparameters(model=request.param), 10)
  path = str(tmp_path_factory.mktemp("model"))
  export.export(model, tft_output, path)
  return path


@pytest.fixture(scope="module")
def loaded(saved_path):
  return tf.saved_model.load(saved_path)


def test_loads_and_serves_without_tft_or_our_code(saved_path):
  """What TF Serving does: only the SavedModel, in a fresh process."""
  import subprocess
  import sys
  probe = (
      "import sys, numpy as np, tensorflow as tf\n"
      f"m = tf.saved_model.load({saved_path!r})\n"
      "out = m.signatures['serving_default'](images=tf.zeros([2, 784]))\n"
      "assert out['probabilities'].shape == (2, 10)\n"
      "assert 'tensorflow_transform' not in sys.modules\n"
      "assert 'components' not in sys.modules\n"
      "print('ok')\n")
  proc = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                        text=True, timeout=300, cwd="/")
  assert proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def _serialize(images):
  return [tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
          value=img.reshape(-1).tolist()))})).SerializeToString()
          for img in images]


def test_signatures_exist(loaded):
  assert set(loaded.signatures) == {features.SERVING_SIGNATURE,
                                    features.UINT8_SIGNATURE,
                                    features.EXAMPLES_SIGNATURE}


def test_two_signatures_give_identical_predictions(loaded):
  images = tiny_mnist.make_images(np.arange(10), seed=3)
  by_pixels = loaded.signatures[features.SERVING_SIGNATURE](
      images=tf.constant(images, tf.float32))
  by_examples = loaded.signatures[features.EXAMPLES_SIGNATURE](
      examples=tf.constant(_serialize(images)))
  np.testing.assert_array_equal(by_pixels[features.PROBABILITIES_KEY].numpy(),
                                by_examples[features.PROBABILITIES_KEY].numpy())
  np.testing.assert_array_equal(by_pixels[features.CLASSES_KEY].numpy(),
                                by_examples[features.CLASSES_KEY].numpy())
  by_uint8 = loaded.signatures[features.UINT8_SIGNATURE](
      images=tf.constant(images, tf.uint8))
  np.testing.assert_array_equal(by_pixels[features.PROBABILITIES_KEY].numpy(),
                                by_uint8[features.PROBABILITIES_KEY].numpy())


def test_flat_and_square_inputs_agree_and_probabilities_sum_to_one(loaded):
  images = tiny_mnist.make_images(np.arange(5), seed=4).astype(np.float32)
  serve = loaded.signatures[features.SERVING_SIGNATURE]
  square = serve(images=tf.constant(images))
  flat = serve(images=tf.constant(images.reshape(5, -1)))
  p = square[features.PROBABILITIES_KEY].numpy()
  np.testing.assert_array_equal(p, flat[features.PROBABILITIES_KEY].numpy())
  assert p.shape == (5, 10)
  np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(square[features.CLASSES_KEY].numpy(),
                                p.argmax(axis=1))


def test_label_feature_in_examples_is_ignored(loaded):
  images = tiny_mnist.make_images(np.arange(3))
  with_label = [tf.train.Example.FromString(s) for s in _serialize(images)]
  for ex in with_label:
    ex.features.feature[features.LABEL_KEY].int64_list.value.append(7)
  a = loaded.signatures[features.EXAMPLES_SIGNATURE](
      examples=tf.constant([e.SerializeToString() for e in with_label]))
  b = loaded.signatures[features.EXAMPLES_SIGNATURE](
      examples=tf.constant(_serialize(images)))
  np.testing.assert_array_equal(a[features.PROBABILITIES_KEY].numpy(),
                                b[features.PROBABILITIES_KEY].numpy())


@pytest.mark.parametrize("images,match", [
    (np.full((1, 28, 28), 256.0), "pixel values must be in 0-255"),
    (np.full((1, 784), -1.0), "pixel values must be in 0-255"),
    (np.full((1, 28, 28), np.nan), "NaN or Inf"),
    (np.zeros((2, 100)), "must be shaped"),
])
def test_bad_pixels_are_refused(loaded, images, match):
  with pytest.raises(tf.errors.InvalidArgumentError, match=match):
    loaded.signatures[features.SERVING_SIGNATURE](
        images=tf.constant(images, tf.float32))


@pytest.mark.parametrize("name,activation", [
    ("improved", "softmax"), ("improved", "sigmoid"), ("cnn", "softmax")])
def test_probabilities_are_the_models_own(tft_output, tmp_path, name, activation):
  """softmax: the model's outputs as they are. sigmoid (the reference
  script's layer): the softmax of its logits, which is what Keras 3's sparse
  categorical cross-entropy fits behind a sigmoid output."""
  model = build_model(Hyperparameters(model=name, output_activation=activation), 10)
  export.export(model, tft_output, str(tmp_path))
  images = tiny_mnist.make_images(np.arange(6), seed=8).astype(np.float32)
  served = tf.saved_model.load(str(tmp_path)).signatures[features.SERVING_SIGNATURE](
      images=tf.constant(images))[features.PROBABILITIES_KEY].numpy()
  scores = model(images.reshape(6, -1) / 255.0).numpy().astype(np.float64)
  if activation == "softmax":
    expected = scores
  else:
    logits = np.log(scores) - np.log1p(-scores)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(served.sum(axis=1), 1.0, rtol=1e-5)


def test_sigmoid_and_softmax_models_train_alike():
  """Why sigmoid models export softmax(logits): Keras 3 trains both the same."""
  import keras
  x = np.random.default_rng(0).random((64, features.IMAGE_SIZE), np.float32)
  y = np.arange(64) % 10
  weights = []
  for activation in ("softmax", "sigmoid"):
    keras.utils.set_random_seed(0)
    model = build_model(Hyperparameters(output_activation=activation,
                                        steps_per_execution=1), 2)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    weights.append([w.numpy() for w in model.weights])
  for a, b in zip(*weights):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
