"""What REST and gRPC share: finding a signature, running it, describing it."""

import functools
import os
import re
from typing import Any, Dict, Optional, Tuple

import numpy as np

from components import features
from components.model_layout import SAVED_MODEL
from mnist_tfx.speedups import tf_direct_call
from serving.model_store import Servable, ServingError


_IMAGE_SHAPES = ((features.IMAGE_ROWS, features.IMAGE_COLS), (features.IMAGE_SIZE,))
_SHAPES_TEXT = (f"[N, {features.IMAGE_ROWS}, {features.IMAGE_COLS}] or "
                f"[N, {features.IMAGE_SIZE}]")


def check_shapes(inputs: Dict[str, np.ndarray]) -> Optional[np.ndarray]:
  """The shape half of the serving input contract; the pixel input, if any.

  Exactly [N, 28, 28] or [N, 784] with N >= 1. Cheap, so each request is
  checked before it joins a batch (batches are keyed by row shape).
  """
  images = inputs.get(features.IMAGES_INPUT)
  if images is None or images.dtype == object:
    return None  # serialized tf.Examples: the model's graph checks them
  if images.shape[1:] not in _IMAGE_SHAPES or images.shape[0] < 1:
    raise ServingError("INVALID_ARGUMENT", f"images must be shaped "
                       f"{_SHAPES_TEXT} with N >= 1, got {list(images.shape)}")
  return images


def check_inputs(inputs: Dict[str, np.ndarray]) -> None:
  """The serving input contract for pixel inputs, vectorised.

  Exactly [N, 28, 28] or [N, 784] with N >= 1, finite values in 0-255. The
  model checks the same in its graph; checking here first gives a clear
  error for every API and costs microseconds (no per-value Python).
  """
  images = check_shapes(inputs)
  if images is None or images.dtype.kind not in "fi" or (
      images.min() >= features.PIXEL_MIN and images.max() <= features.PIXEL_MAX):
    return  # in range, hence finite (NaN fails both comparisons)
  if images.dtype.kind == "f" and not np.isfinite(images).all():
    raise ServingError("INVALID_ARGUMENT", "images contain NaN or Inf")
  raise ServingError("INVALID_ARGUMENT", "pixel values must be in "
                     f"{features.PIXEL_MIN}-{features.PIXEL_MAX}")


def input_specs(servable: Servable, signature: str) -> Tuple[Any, Dict[str, Any]]:
  fn = servable.signatures.get(signature)
  if fn is None:
    raise ServingError("INVALID_ARGUMENT", f"Serving signature name: "
                       f"\"{signature}\" not found in signature def")
  return fn, fn.structured_input_signature[1]


# --- calling a signature ----------------------------------------------------------
#
# Each signature runs by the direct call of `mnist_tfx.speedups.tf_direct_call`
# where that speed-up checked out at load, else by its public call.


def load(path: str) -> Any:
  """A SavedModel, with its signatures' direct calls checked at load."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = tf.saved_model.load(path)
  for fn in model.signatures.values():
    enable_fast_call(fn)
  return model


def enable_fast_call(fn) -> bool:
  """Uses the direct call for `fn` if it answers sample inputs exactly as `fn`."""
  try:
    sample = _sample_inputs(fn)
  except Exception:  # pylint: disable=broad-except
    sample = None  # an input form we cannot make samples of: the public call
  return tf_direct_call.enable(fn, sample, _public_call)


def uses_fast_call(fn) -> bool:
  return tf_direct_call.enabled_for(fn)


def _sample_inputs(fn) -> Optional[Dict[str, np.ndarray]]:
  """Three images in the signature's input form (pixels or tf.Examples)."""
  (name, spec), = fn.structured_input_signature[1].items()
  images = np.random.default_rng(0).integers(
      features.PIXEL_MIN, features.PIXEL_MAX + 1, (3, features.IMAGE_SIZE))
  if spec.dtype.is_floating or spec.dtype.is_integer:
    return {name: images.astype(spec.dtype.as_numpy_dtype)}
  if spec.dtype.name == "string":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return {name: np.array([tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
            value=image))})).SerializeToString() for image in images], dtype=object)}
  return None


def _public_call(fn, inputs: Dict[str, np.ndarray]):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return fn(**{k: tf.constant(v) for k, v in inputs.items()})


def run_signature(fn, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    out = tf_direct_call.call(fn, inputs)
    if out is None:
      out = _public_call(fn, inputs)
  except UnicodeDecodeError as e:
    # TF could not even phrase its parse error: the bytes are not text.
    raise ServingError("INVALID_ARGUMENT", "cannot parse the tf.Examples: the "
                       "bytes are not serialized tf.Examples") from e
  except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
    raise ServingError("INVALID_ARGUMENT", _tf_message(e)) from e
  return {k: v.numpy() for k, v in out.items()}


def _tf_message(e: Exception) -> str:
  """The model's own words from a TF error (its assertion), not the stack.

  TF's messages end with lines naming graph nodes (`[[{{node ...}}]]`):
  the first other line is the one that says what is wrong.
  """
  text = getattr(e, "message", str(e))
  found = re.search(r"assertion failed: \[([^\]]+)\]", text)
  if found:
    return found.group(1)
  lines = [l.strip() for l in text.splitlines()
           if l.strip() and not l.strip().startswith("[[")]
  if not lines:
    return type(e).__name__
  if "ParseExample" in text or "serialized Example" in lines[0]:
    return f"cannot parse the tf.Examples: {lines[0]}"
  return lines[0]


def run_checked(fn, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Checks the inputs, then runs the signature: the batchers' runner.

  A batcher runs it on a merged batch first (one value check for all its
  requests: the range check costs ~7 us per call whatever the rows), and
  on each request alone if that fails, so the error stays with its request.
  """
  check_inputs(inputs)
  return run_signature(fn, inputs)


def run(batcher, servable: Servable, signature: str, fn,
        inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Runs a signature on checked inputs, through the batcher when on.

  The shapes are checked before a request joins a batch; the batcher's
  runner (`run_checked`) checks the values of what it runs.
  """
  if batcher is None:
    return run_checked(fn, inputs)
  check_shapes(inputs)
  return batcher((servable.version, signature), fn, inputs)


async def run_greedy(greedy, servable: Servable, signature: str, fn,
                     inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """`run` through a GreedyBatcher, on the event loop (both APIs' path)."""
  check_shapes(inputs)
  return await greedy((servable.version, signature), fn, inputs)


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
