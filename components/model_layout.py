"""TF Serving's model layout, `<base>/<version>/saved_model.pb`: one reader for all.

The Pusher writes it and the model server reads it; both go through here.
Kept free of TFX imports so the server does not pay for them.
"""

import os
from typing import Dict

SAVED_MODEL = "saved_model.pb"


def versions(base_dir: str) -> Dict[int, str]:
  """{version: path} of the complete versions under `base_dir`.

  A version is a numeric directory holding `saved_model.pb`: what TF Serving
  loads. Hidden staging directories and half-written versions are not.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gfile = tf.io.gfile
  if not gfile.isdir(base_dir):
    return {}
  found = {}
  for name in gfile.listdir(base_dir):
    name = name.rstrip("/")
    path = os.path.join(base_dir, name)
    if name.isdigit() and gfile.exists(os.path.join(path, SAVED_MODEL)):
      found[int(name)] = path
  return found
