"""The Trainer's data: a split read once into memory, handed to Keras uncopied.

Shared by the Trainer (`run`) and the Tuner (`components.tuning`).
"""

import mmap
from typing import List, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components import features

# Examples read and transformed at a time: 1,024 reads as fast as 4,096 and
# keeps ~250 MB less of TensorFlow's buffers at the Trainer's peak.
_READ_BATCH = 1024
_ALIGN = 64  # bytes: TensorFlow's CPU tensor alignment (Allocator::kAllocatorAlignment)


def load_split(file_pattern: List[str],
               data_accessor: tfx.components.DataAccessor,
               tft_output: tft.TFTransformOutput) -> Tuple[np.ndarray, np.ndarray]:
  """All examples of a split as (model inputs [N, 784] float32, labels [N]).

  Each transformed batch is copied out of TensorFlow's memory into memory
  of its own, and the batches are moved into one array (see
  `unpooled_empty`) one by one, each returned to the system as soon as it is
  in: the split is held about once, not twice as joining a list would.
  """
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=_READ_BATCH, num_epochs=1,
                                     shuffle=False),
      tft_output.raw_metadata.schema)
  layer = tft_output.transform_features_layer()
  xs, ys = [], []
  for raw in dataset:
    transformed = layer(raw)
    image = transformed[features.TRANSFORMED_IMAGE_KEY].numpy()
    xs.append(unpooled_empty(image.shape, image.dtype))
    xs[-1][...] = image
    ys.append(np.reshape(transformed[features.LABEL_KEY].numpy(), [-1]))
  if not xs:
    raise ValueError(f"no examples in {file_pattern}")
  x = unpooled_empty((sum(len(b) for b in xs),) + xs[0].shape[1:], xs[0].dtype)
  start = 0
  xs.reverse()
  while xs:
    batch = xs.pop()
    x[start:start + len(batch)] = batch
    start += len(batch)
  return x, np.concatenate(ys)


def unpooled_empty(shape: Tuple[int, ...], dtype) -> np.ndarray:
  """An uninitialised array in memory mapped for it alone.

  Freed, it goes back to the system at once (malloc keeps large blocks it
  has freed once for reuse, so RSS would not fall), and it starts on a page
  boundary, which satisfies TensorFlow's alignment (see `as_tensor`).
  """
  size = int(np.prod(shape)) * np.dtype(dtype).itemsize
  memory = mmap.mmap(-1, max(size, 1))
  return np.frombuffer(memory, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def as_tensor(array: np.ndarray) -> tf.Tensor:
  """`array` as a tensor that shares its memory, when that is safe.

  Keras copies numpy inputs into a tensor of its own (+220 MB for MNIST,
  on top of the arrays); a tensor made through DLPack uses the array's
  memory. TensorFlow requires its tensors' data aligned to 64 bytes (and
  aborts the process on a misaligned one), so anything else is copied.
  """
  if (array.flags.c_contiguous and array.flags.writeable
      and array.ctypes.data % _ALIGN == 0 and array.dtype.isnative):
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
  return tf.constant(array)


def hold_out_in_place(x: np.ndarray, y: np.ndarray, share: float) -> int:
  """Moves a validation share of the rows to the end; the rows to fit on.

  Training validates on records it does not fit, held out of the train
  split (the test split is the Evaluator's alone). A row is held out when
  the SHA-256 of its pixels falls below the share (as HoldOutValidation
  decides for the Tuner): deterministic and independent of the order.
  The rows are swapped in place, so fit and validation parts are views of
  the one array (`x[:n]`, `x[n:]`): no second copy of the split.
  """
  from components.holdout import is_validation  # pylint: disable=g-import-not-at-top
  held = np.fromiter((is_validation(row.tobytes(), share) for row in x),
                     dtype=bool, count=len(x))
  n_fit = int(len(x) - held.sum())
  if n_fit == 0 or n_fit == len(x):
    raise ValueError(f"holding out {share:.0%} of {len(x)} training records leaves "
                     f"{'nothing to fit on' if n_fit == 0 else 'no validation record'}; "
                     "change the validation share or use more data")
  front = np.flatnonzero(held[:n_fit])  # held-out rows in the fit part ...
  back = n_fit + np.flatnonzero(~held[n_fit:])  # ... and fit rows behind it
  x[front], x[back] = x[back], x[front].copy()
  y[front], y[back] = y[back], y[front].copy()
  return n_fit
