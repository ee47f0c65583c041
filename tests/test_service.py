"""Calling signatures: the checked fast call and its fallback to the public call;
the input checks, once per merged batch."""

import asyncio
import types

import numpy as np
import pytest
import tensorflow as tf

from components import features
from components.models import Hyperparameters, build_model
from components.trainer import export
from mnist_tfx import speedups
from mnist_tfx.speedups import tf_direct_call
from serving import service
from serving.batching import GreedyBatcher
from serving.model_store import ServingError
from tests import tiny_mnist


@pytest.fixture(scope="module")
def model_dir(tft_output, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("service_model"))
  export.export(build_model(Hyperparameters(), 10), tft_output, path)
  return path


def _inputs(signature, images):
  if signature == features.EXAMPLES_SIGNATURE:
    return {features.EXAMPLES_INPUT: np.array([tf.train.Example(
        features=tf.train.Features(feature={features.IMAGE_KEY: tf.train.Feature(
            int64_list=tf.train.Int64List(value=img.reshape(-1)))})).SerializeToString()
        for img in images], dtype=object)}
  dtype = np.uint8 if signature == features.UINT8_SIGNATURE else np.float32
  return {features.IMAGES_INPUT: images.astype(dtype)}


@pytest.mark.parametrize("signature", [features.SERVING_SIGNATURE,
                                       features.UINT8_SIGNATURE,
                                       features.EXAMPLES_SIGNATURE])
def test_every_signature_gets_the_fast_call_with_the_public_answers(model_dir, signature):
  fast_model = service.load(model_dir)
  public_fn = tf.saved_model.load(model_dir).signatures[signature]
  fn = fast_model.signatures[signature]
  # With the speed-ups off (MNIST_TFX_SPEEDUPS=0), the public call only.
  assert service.uses_fast_call(fn) is speedups.enabled()
  assert not service.uses_fast_call(public_fn)
  inputs = _inputs(signature, tiny_mnist.make_images(np.arange(7), seed=5))
  fast, public = service.run_signature(fn, inputs), service.run_signature(public_fn, inputs)
  assert set(fast) == {features.PROBABILITIES_KEY, features.CLASSES_KEY}
  for key in fast:
    np.testing.assert_array_equal(fast[key], public[key])


def _error(fn, inputs):
  import re
  with pytest.raises(ServingError) as raised:
    service.run_signature(fn, inputs)
  return re.sub(r"\d+", "N", raised.value.message)  # graph function ids differ


def test_inputs_the_signature_does_not_declare_take_the_public_call(model_dir):
  fn = service.load(model_dir).signatures[features.SERVING_SIGNATURE]
  public_fn = tf.saved_model.load(model_dir).signatures[features.SERVING_SIGNATURE]
  images = tiny_mnist.make_images(np.arange(3), seed=6)
  # float64 is not the declared float32: the public call's own error.
  as_float64 = {features.IMAGES_INPUT: images.astype(np.float64)}
  assert _error(fn, as_float64) == _error(public_fn, as_float64)
  assert "expected to be a float tensor but is a double tensor" in _error(fn, as_float64)
  # The graph's own checks hold on the fast path.
  with pytest.raises(ServingError, match="pixel values must be in 0-255"):
    service.run_signature(fn, {features.IMAGES_INPUT: np.full((1, 784), 300, np.float32)})
  with pytest.raises(ServingError):
    service.run_signature(fn, {"wrong_name": images.astype(np.float32)})


def test_a_fast_call_that_disagrees_at_load_is_never_used(model_dir, monkeypatch):
  real = tf_direct_call._direct_caller  # pylint: disable=protected-access

  def off_by_a_little(fn):
    call = real(fn)
    return lambda inputs: {k: v * 1.0001 if v.dtype.is_floating else v
                           for k, v in call(inputs).items()}
  monkeypatch.setattr(tf_direct_call, "_direct_caller", off_by_a_little)
  model = service.load(model_dir)
  assert not any(service.uses_fast_call(fn) for fn in model.signatures.values())
  images = tiny_mnist.make_images(np.arange(2), seed=7).astype(np.float32)
  got = service.run_signature(model.signatures[features.SERVING_SIGNATURE],
                              {features.IMAGES_INPUT: images})
  np.testing.assert_allclose(got[features.PROBABILITIES_KEY].sum(axis=1), 1.0, rtol=1e-6)


def test_a_fast_call_that_breaks_at_load_is_never_used(model_dir, monkeypatch):
  def broken(fn):
    def call(inputs):
      raise RuntimeError("private API changed")
    return call
  monkeypatch.setattr(tf_direct_call, "_direct_caller", broken)
  model = service.load(model_dir)
  assert not any(service.uses_fast_call(fn) for fn in model.signatures.values())


def test_a_merged_batch_is_checked_once_and_an_error_stays_with_its_request(
    monkeypatch):
  """Shapes are checked per request before batching; values once per call."""
  checked, ran = [], []
  check = service.check_inputs
  monkeypatch.setattr(service, "check_inputs", lambda inputs: (
      checked.append(len(inputs[features.IMAGES_INPUT])), check(inputs)))
  monkeypatch.setattr(service, "run_signature", lambda fn, inputs: (
      ran.append(len(inputs[features.IMAGES_INPUT])) or
      {"p": inputs[features.IMAGES_INPUT][:, :1]}))
  greedy = GreedyBatcher(service.run_checked, max_batch_size=32)
  servable = types.SimpleNamespace(version=1)

  def send(*images):
    async def together():
      return await asyncio.gather(*(service.run_greedy(
          greedy, servable, "s", None, {features.IMAGES_INPUT: x}) for x in images),
                                  return_exceptions=True)
    return asyncio.run(together())

  good = np.full((1, features.IMAGE_SIZE), 7, np.float32)
  out = send(good, good * 2, good * 3)
  assert checked == [3] and ran == [3]
  assert [o["p"][0, 0] for o in out] == [7, 14, 21]
  for bad, message in ((np.full_like(good, 300), "0-255"),
                       (np.full_like(good, np.nan), "NaN")):
    checked.clear()
    ran.clear()
    out = send(good, bad, good)
    assert isinstance(out[1], ServingError) and message in out[1].message
    assert [o["p"][0, 0] for o in (out[0], out[2])] == [7, 7]
    assert checked == [3, 1, 1, 1] and ran == [1, 1]  # merged failed; each alone
  # A shape that cannot be batched is refused before it joins a batch.
  checked.clear()
  for shape in ((0, features.IMAGE_SIZE), (1, 785), (features.IMAGE_SIZE,)):
    error, = send(np.zeros(shape, np.float32))
    assert isinstance(error, ServingError) and "shaped" in error.message
  assert checked == []
