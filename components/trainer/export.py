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

from typing import Dict

import tensorflow as tf

from components import features


def normalize_scores(scores: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Sigmoid scores -> the distribution sparse categorical cross-entropy trains.

  Keras' cross-entropy on non-softmax outputs divides by their sum, so that is
  the model's predictive distribution; argmax is unchanged.
  """
  probabilities = scores / tf.reduce_sum(scores, axis=-1, keepdims=True)
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
    self._scores = lambda x: model(x, training=False)
    layer = tft_output.transform_features_layer()
    self._transform = lambda raw: layer(raw)
    # Likewise for TFT's layer, a tf_keras Layer that tf_keras re-traces when
    # saved (~7 s): track only what owns the Transform graph's resources,
    # exactly what the layer itself tracks. If a TFT version renames it,
    # track the whole layer (correct, only slower).
    owned = getattr(layer, "_saved_model_loader_tracked_dict", None)
    self.transform_graph = owned if owned is not None else layer
    spec = tft_output.raw_feature_spec()
    spec.pop(features.LABEL_KEY)
    self._raw_spec = spec

  def _predict_raw(self, raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    transformed = self._transform(raw)
    scores = self._scores(transformed[features.TRANSFORMED_IMAGE_KEY])
    return normalize_scores(scores)

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
    n = tf.shape(images)[0]
    with tf.control_dependencies([
        tf.debugging.assert_equal(
            tf.size(images), n * features.IMAGE_SIZE,
            message=f"images must be shaped [N, {features.IMAGE_ROWS}, "
            f"{features.IMAGE_COLS}] or [N, {features.IMAGE_SIZE}]"),
        tf.debugging.assert_all_finite(images, "images contain NaN or Inf"),
        tf.debugging.assert_greater_equal(
            images, float(features.PIXEL_MIN),
            message=f"pixel values must be in {features.PIXEL_MIN}-"
            f"{features.PIXEL_MAX}"),
        tf.debugging.assert_less_equal(
            images, float(features.PIXEL_MAX),
            message=f"pixel values must be in {features.PIXEL_MIN}-"
            f"{features.PIXEL_MAX}"),
    ]):
      pixels = tf.cast(tf.round(tf.reshape(images, (-1,) + features.IMAGE_SHAPE)),
                       tf.int64)
    return self._predict_raw({features.IMAGE_KEY: pixels})

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec(shape=[None], dtype=tf.string, name=features.EXAMPLES_INPUT)])
  def serve_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self._predict_raw(tf.io.parse_example(examples, self._raw_spec))


def export(model, tft_output, path: str) -> None:
  module = ServingModule(model, tft_output)
  tf.saved_model.save(module, path, signatures={
      features.SERVING_SIGNATURE: module.serve_images.get_concrete_function(),
      features.UINT8_SIGNATURE: module.serve_uint8.get_concrete_function(),
      features.EXAMPLES_SIGNATURE: module.serve_examples.get_concrete_function(),
  })
