"""What the Trainer and the Tuner's trials report while they fit: progress
lines and TensorBoard's scalars."""

import logging
import math
import os
import time
from typing import List

import keras

from mnist_tfx import defaults

LOG = logging.getLogger("mnist_tfx.trainer")  # shown as progress by the CLI


class EpochLog(keras.callbacks.Callback):
  """Logs one line per epoch to the progress logger: long runs show progress."""

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.monotonic()

  def on_epoch_end(self, epoch, logs=None):
    metrics = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items())
    LOG.info("epoch %d/%d %s (%.1fs)", epoch + 1, self.params["epochs"],
             metrics, time.monotonic() - self._start)


class NonFiniteLoss(RuntimeError):
  """The training loss became NaN or infinite: nothing worth exporting."""


class StopOnNonFinite(keras.callbacks.Callback):
  """Ends training at the first NaN or Inf loss, saying where, instead of
  training on (Keras would go on, and export NaN weights)."""

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      raise NonFiniteLoss(
          f"the training loss became {float(loss)} in epoch "
          f"{getattr(self, '_epoch', 0) + 1} by step {batch + 1} of "
          f"{self.params.get('steps')}: training stopped, nothing exported "
          "(a learning rate too high for the optimizer?)")


def tensorboard(log_dir: str) -> keras.callbacks.Callback:
  """One TensorBoard scalar per metric and epoch, nothing else."""
  return keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch",
                                     write_graph=False, profile_batch=0)


def for_model_run(model_run_dir: str) -> List[keras.callbacks.Callback]:
  """A stop at a NaN loss, progress lines, and TensorBoard's scalars under
  the model run."""
  return [StopOnNonFinite(), EpochLog(),
          tensorboard(os.path.join(model_run_dir, defaults.TENSORBOARD_DIR))]
