"""preprocessing_fn: scale to [0, 1] and flatten 28x28 -> 784."""

import numpy as np
import tensorflow as tf

from components import features
from components.transform.preprocessing import preprocessing_fn


def test_scales_and_flattens():
  images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
  out = preprocessing_fn({
      features.IMAGE_KEY: tf.constant(images, tf.int64),
      features.LABEL_KEY: tf.constant([3, 7], tf.int64)})
  x = out[features.TRANSFORMED_IMAGE_KEY].numpy()
  assert x.shape == (2, features.IMAGE_SIZE) and x.dtype == np.float32
  np.testing.assert_allclose(x, images.reshape(2, -1) / 255.0, rtol=1e-6)
  assert x.min() >= 0.0 and x.max() <= 1.0
  np.testing.assert_array_equal(out[features.LABEL_KEY].numpy(), [3, 7])


def test_extremes_map_to_zero_and_one():
  images = np.stack([np.zeros((28, 28)), np.full((28, 28), 255)])
  out = preprocessing_fn({features.IMAGE_KEY: tf.constant(images, tf.int64),
                          features.LABEL_KEY: tf.constant([0, 1], tf.int64)})
  x = out[features.TRANSFORMED_IMAGE_KEY].numpy()
  assert x[0].max() == 0.0 and x[1].min() == 1.0
