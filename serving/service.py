"""What REST and gRPC share: finding a signature, running it, describing it."""

import functools
import os
import re
from typing import Any, Dict, Tuple

import numpy as np

from components.model_layout import SAVED_MODEL
from serving.model_store import Servable, ServingError


def input_specs(servable: Servable, signature: str) -> Tuple[Any, Dict[str, Any]]:
  fn = servable.signatures.get(signature)
  if fn is None:
    raise ServingError("INVALID_ARGUMENT", f"Serving signature name: "
                       f"\"{signature}\" not found in signature def")
  return fn, fn.structured_input_signature[1]


def run_signature(fn, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
  except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
    raise ServingError("INVALID_ARGUMENT", _tf_message(e)) from e
  return {k: v.numpy() for k, v in out.items()}


def _tf_message(e: Exception) -> str:
  """The model's own words from a TF error (its assertion), not the stack."""
  text = getattr(e, "message", str(e))
  found = re.search(r"assertion failed: \[([^\]]+)\]", text)
  if found:
    return found.group(1)
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return lines[-1] if lines else type(e).__name__


def run(batcher, servable: Servable, signature: str, fn,
        inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Runs a signature, through the batcher when batching is on."""
  if batcher is None:
    return run_signature(fn, inputs)
  return batcher((servable.version, signature), fn, inputs)


def signature_def_map(servable: Servable):
  """The SavedModel's own SignatureDefs (what TF Serving's metadata returns)."""
  return _signature_def_map(servable.path)


@functools.lru_cache(maxsize=32)
def _signature_def_map(path: str):
  """Read once per version: a pushed version never changes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
  saved = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(os.path.join(path, SAVED_MODEL), "rb") as f:
    saved.ParseFromString(f.read())
  result = get_model_metadata_pb2.SignatureDefMap()
  for key, sig in saved.meta_graphs[0].signature_def.items():
    if not key.startswith("__"):  # __saved_model_init_op is not a signature
      result.signature_def[key].CopyFrom(sig)
  return result
