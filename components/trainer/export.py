"""The exported SavedModel: raw pixels or tf.Examples in, probabilities out.

The model is saved as a plain `tf.Module` holding the Keras model and the TFT
graph, so one SavedModel serves TF Serving, TFMA and Python callers alike and
its input is always *raw* data: the Transform graph inside it is the very one
the Trainer used, hence no training/serving skew.

Signatures:
- `serving_default`: `images`, float32 pixel values 0-255 shaped [N, 28, 28]
  or [N, 784] (TF Serving's REST API turns JSON integers, e.g. uint8 pixels,
  into this float input). NaN or values outside 0-255 are rejected with an
  InvalidArgument error rather than silently mis-scaled.
- `serving_uint8`: the same for uint8 `images`, for clients that send typed
  tensors (gRPC, Python): a signature has exactly one input dtype.
- `from_examples`: `examples`, serialized tf.Examples (what TFMA feeds, and
  what a classify-style client sends); a `label` feature is ignored.
Both return `probabilities` (float32 [N, 10], summing to 1) and `classes`
(int64 [N]).
"""

from __future__ import annotations

from typing import Any, Dict

import tensorflow as tf

from components import features


_PIXEL_RANGE = f"pixel values must be in {features.PIXEL_MIN}-{features.PIXEL_MAX}"


def outputs(logits: tf.Tensor) -> Dict[str, tf.Tensor]:
  """The signatures' outputs: the softmax of the output layer's logits.

  For a softmax model that is exactly its output. For the reference
  script's sigmoid layer it is the distribution training fitted: Keras 3's
  sparse categorical cross-entropy takes the logits behind a sigmoid output
  and applies softmax cross-entropy to them (`_keras_logits`), so the
  sigmoid scores themselves, normalised or not, are not what was trained.
  """
  probabilities = tf.nn.softmax(logits, axis=-1)
  return {
      features.PROBABILITIES_KEY: probabilities,
      features.CLASSES_KEY: tf.argmax(probabilities, axis=-1),
  }


class ServingModule(tf.Module):
  """What `tf.saved_model.save` writes: model + transform graph + signatures."""

  def __init__(self, model, tft_output):
    super().__init__()
    # Only the weights are tracked, and the model is called through an
    # untracked function: tracking the Keras model itself makes
    # tf.saved_model.save walk its layers, optimizer and training functions
    # (5 s instead of 0.2 s), all of it useless for serving.
    self.weights = [getattr(v, "value", v) for v in model.weights]
    # The output layer's logits: what its input times its kernel plus bias
    # gives, before the activation (see `outputs`).
    import keras  # pylint: disable=g-import-not-at-top
    last = model.layers[-1]
    before = keras.Model(model.inputs, last.input)
    self._logits = lambda x: tf.matmul(before(x, training=False),
                                       last.kernel) + last.bias
    layer = tft_output.transform_features_layer()
    self._transform = lambda raw: layer(raw)
    # Likewise for TFT's layer, a tf_keras Layer that tf_keras re-traces when
    # saved (~7 s): track only what owns the Transform graph's resources,
    # exactly what the layer itself tracks. If a TFT version renames it,
    # track the whole layer (correct, only slower).
    owned = getattr(layer, "_saved_model_loader_tracked_dict", None)
    self.transform_graph = owned if owned is not None else layer
    # The image only: a served tf.Example needs no label (nor writer).
    self._all_raw = tft_output.raw_feature_spec()
    self._raw_spec = {features.IMAGE_KEY: self._all_raw[features.IMAGE_KEY]}

  # autograph=False: no Python control flow here, and converting the library
  # code underneath made tracing the two signatures cost ~7 s.
  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec(shape=None, dtype=tf.float32, name=features.IMAGES_INPUT)])
  def serve_images(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self._predict_pixels(images)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec(shape=None, dtype=tf.uint8, name=features.IMAGES_INPUT)])
  def serve_uint8(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self._predict_pixels(tf.cast(images, tf.float32))

  def _predict_pixels(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    dims = tf.shape(images)
    rank = tf.size(dims)
    after_batch = tf.pad(dims[1:], [[0, 2]])[:2]  # zero-padded for rank < 3
    shaped = tf.logical_or(
        tf.logical_and(tf.equal(rank, 3), tf.reduce_all(tf.equal(
            after_batch, [features.IMAGE_ROWS, features.IMAGE_COLS]))),
        tf.logical_and(tf.equal(rank, 2),
                       tf.equal(after_batch[0], features.IMAGE_SIZE)))
    with tf.control_dependencies([
        tf.debugging.assert_equal(
            shaped, True,
            message=f"images must be shaped [N, {features.IMAGE_ROWS}, "
            f"{features.IMAGE_COLS}] or [N, {features.IMAGE_SIZE}]"),
        tf.debugging.assert_all_finite(images, "images contain NaN or Inf"),
        # Before rounding and the cast, which would wrap huge values.
        tf.debugging.assert_greater_equal(
            images, float(features.PIXEL_MIN), message=_PIXEL_RANGE),
        tf.debugging.assert_less_equal(
            images, float(features.PIXEL_MAX), message=_PIXEL_RANGE),
    ]):
      pixels = tf.cast(tf.round(tf.reshape(images, (-1,) + features.IMAGE_SHAPE)),
                       tf.int64)
    return self._predict_raw({features.IMAGE_KEY: pixels})

  def _predict_raw(self, raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Raw features -> outputs, refusing pixels outside 0-255 (every signature)."""
    pixels = raw[features.IMAGE_KEY]
    message = _PIXEL_RANGE
    with tf.control_dependencies([
        tf.debugging.assert_greater_equal(
            pixels, tf.constant(features.PIXEL_MIN, pixels.dtype), message=message),
        tf.debugging.assert_less_equal(
            pixels, tf.constant(features.PIXEL_MAX, pixels.dtype), message=message),
    ]):
      transformed = self._transform(with_defaults(
          {features.IMAGE_KEY: tf.identity(pixels)}, self._all_raw))
    return outputs(self._logits(transformed[features.TRANSFORMED_IMAGE_KEY]))

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec(shape=[None], dtype=tf.string, name=features.EXAMPLES_INPUT)])
  def serve_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self._predict_raw(tf.io.parse_example(examples, self._raw_spec))


def with_defaults(raw: Dict[str, tf.Tensor], spec: Dict[str, Any]) -> Dict[str, Any]:
  """`raw` with a default value for every other raw feature, in name order.

  TFT's layer fills the features it is not given itself, iterating over a
  set: with two or more missing, their order in the exported graph follows
  Python's per-process string hashing, and two exports of the same model
  differ in bytes. Given every feature, it fills none.
  """
  batch = tf.shape(raw[features.IMAGE_KEY])[0]
  complete = dict(raw)
  for name in sorted(set(spec) - set(raw)):
    kind = spec[name]
    zero = tf.constant("" if kind.dtype == tf.string else 0, kind.dtype)
    if isinstance(kind, tf.io.FixedLenFeature):
      shape = tf.constant(list(kind.shape), tf.int32, shape=[len(kind.shape)])
      complete[name] = tf.fill(tf.concat([[batch], shape], 0), zero)
    else:  # VarLenFeature: one default value per example, as TFT supplies
      rows = tf.range(tf.cast(batch, tf.int64))
      complete[name] = tf.sparse.SparseTensor(
          indices=tf.stack([rows, tf.zeros_like(rows)], axis=1),
          values=tf.fill([batch], zero),
          dense_shape=tf.stack([tf.cast(batch, tf.int64), tf.constant(1, tf.int64)]))
  return complete


class NonFiniteWeights(ValueError):
  """A weight holds NaN or Inf: such a model answers NaN, so it is not exported."""


def check_finite(model) -> None:
  """Raises NonFiniteWeights naming the first weight that is not finite."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  for weight in model.weights:
    value = np.asarray(getattr(weight, "value", weight))
    if not np.isfinite(value).all():
      bad = int((~np.isfinite(value)).sum())
      raise NonFiniteWeights(f"weight {weight.name} {list(value.shape)} holds "
                             f"{bad} NaN or Inf value(s): the model is not exported")


def export(model, tft_output, path: str) -> None:
  """Writes the serving SavedModel; refuses a model with non-finite weights."""
  check_finite(model)
  module = ServingModule(model, tft_output)
  tf.saved_model.save(module, path, signatures={
      features.SERVING_SIGNATURE: module.serve_images.get_concrete_function(),
      features.UINT8_SIGNATURE: module.serve_uint8.get_concrete_function(),
      features.EXAMPLES_SIGNATURE: module.serve_examples.get_concrete_function(),
  })
