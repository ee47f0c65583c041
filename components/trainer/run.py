"""`run_fn` for the Trainer component.

The splits are read once through TFX's data accessor (TFXIO), put through the
Transform graph in batches, and held in memory once: 60k x 784 float32 is
188 MB. Keras then fits from them exactly as the plain-Keras workflow does,
reshuffling every epoch, so the first epoch is not slowed by parsing and the
results are comparable with it; it is given tensors that share the arrays'
memory, so it does not copy them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import mmap
import os
import tempfile
import time
import types
from typing import List, Tuple

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components import features, tuning
from components.models import Hyperparameters, build_model
from components.trainer import export, memory, multi_worker

_LOG = logging.getLogger("mnist_tfx.trainer")  # shown as progress by the CLI
HISTORY_FILE = "history.json"  # per-epoch metrics, in the model run dir
TENSORBOARD_DIR = "tensorboard"  # TensorBoard's event files, in the model run dir
# Examples read and transformed at a time: 1,024 reads as fast as 4,096 and
# keeps ~250 MB less of TensorFlow's buffers at the Trainer's peak.
_READ_BATCH = 1024
_VALIDATION_BATCH = 1024  # inference only: no effect on training
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


def _strategy(name: str) -> tf.distribute.Strategy:
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


class EpochLog(keras.callbacks.Callback):
  """Logs one line per epoch to the progress logger: long runs show progress."""

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.monotonic()

  def on_epoch_end(self, epoch, logs=None):
    metrics = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items())
    _LOG.info("epoch %d/%d %s (%.1fs)", epoch + 1, self.params["epochs"],
              metrics, time.monotonic() - self._start)


def tensorboard(log_dir: str) -> keras.callbacks.Callback:
  """One TensorBoard scalar per metric and epoch, nothing else."""
  return keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch",
                                     write_graph=False, profile_batch=0)


def callbacks(model_run_dir: str) -> List[keras.callbacks.Callback]:
  """Progress lines, and TensorBoard's scalars under the model run."""
  return [EpochLog(), tensorboard(os.path.join(model_run_dir, TENSORBOARD_DIR))]


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """Trains the configured model and exports the serving SavedModel."""
  memory.release_freed()  # what the data components left: ~35 MB
  with memory.large_blocks_unpooled():  # ~110 MB lower peak (see memory)
    _train(fn_args)


def _train(fn_args: tfx.components.FnArgs) -> None:
  hp = Hyperparameters.from_dict(fn_args.custom_config["hyperparameters"])
  if fn_args.hyperparameters:  # the Tuner's best trial (run --tune)
    hp = tuning.apply(hp, tuning.best_values(fn_args.hyperparameters))
    _LOG.info("the Tuner's best trial: %s", tuning.describe(hp))
  keras.utils.set_random_seed(hp.seed)
  tft_output = tft.TFTransformOutput(fn_args.transform_output)
  x_train, y_train = load_split(fn_args.train_files, fn_args.data_accessor,
                                tft_output)
  x_eval, y_eval = load_split(fn_args.eval_files, fn_args.data_accessor,
                              tft_output)
  _LOG.info("loaded %d train and %d eval examples", len(x_train), len(x_eval))
  steps_per_epoch = -(-len(x_train) // hp.batch_size)
  if hp.distribution == "multi_worker_mirrored" and "TF_CONFIG" not in os.environ:
    # No cluster described: a chief and a worker here (see multi_worker).
    _LOG.info("training with %d local workers (MultiWorkerMirroredStrategy)",
              multi_worker.WORKERS)
    with tempfile.TemporaryDirectory(prefix="mnist-tfx-workers-") as work_dir:
      weights, epochs = multi_worker.train(work_dir, hp.to_dict(), x_train,
                                           y_train, x_eval, y_eval)
    model = build_model(dataclasses.replace(hp, distribution="none"),
                        steps_per_epoch)
    model.set_weights(weights)
    history = types.SimpleNamespace(history=epochs)
  else:
    with _strategy(hp.distribution).scope():
      model = build_model(hp, steps_per_epoch)
    history = model.fit(
        as_tensor(x_train), y_train, batch_size=hp.batch_size, epochs=hp.epochs,
        shuffle=True, validation_data=(as_tensor(x_eval), y_eval),
        validation_batch_size=_VALIDATION_BATCH, verbose=0,
        callbacks=callbacks(fn_args.model_run_dir))
  export.export(model, tft_output, fn_args.serving_model_dir)
  tf.io.gfile.makedirs(fn_args.model_run_dir)
  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE),
                         "w") as f:
    json.dump({"hyperparameters": hp.to_dict(),
               "train_examples": int(len(x_train)),
               "eval_examples": int(len(x_eval)),
               "epochs": {k: [float(v) for v in vs]
                          for k, vs in history.history.items()}}, f, indent=1)
