"""`preprocessing_fn` for the Transform component.

Pixels are scaled to [0, 1] and the 28x28 image is flattened to 784 values.
No analyzer is needed (the scale is known), so Transform only traces this
graph; the Trainer applies the same graph to raw examples and embeds it in the
exported model, which is what keeps training and serving skew-free.

Transform imports this by its Python path (`preprocessing_fn=`), not as a
`module_file`, so TFX does not wheel-package the folder; the pipeline puts a
fingerprint of this package's source into Transform's `custom_config`
instead, so an edit here still invalidates the cache.
"""

from typing import Any, Dict, Optional

import tensorflow as tf

from components import features


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Optional[Dict[str, Any]] = None
                     ) -> Dict[str, tf.Tensor]:
  """Raw features -> model features (`image_xf`: float32 [N, 784]) and label."""
  del custom_config  # Only carries the code fingerprint, for TFX's cache key.
  image = tf.cast(inputs[features.IMAGE_KEY], tf.float32) / float(
      features.PIXEL_MAX)
  # The label passes through; at serving time TFT prunes it with its input.
  return {
      features.TRANSFORMED_IMAGE_KEY: tf.reshape(image, [-1, features.IMAGE_SIZE]),
      features.LABEL_KEY: inputs[features.LABEL_KEY],
  }
