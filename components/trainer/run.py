"""`run_fn` for the Trainer component.

The splits are read once through TFX's data accessor (TFXIO), put through the
Transform graph in batches, and held in memory once (`components.trainer.data`):
60k x 784 float32 is 188 MB. Keras then fits from them exactly as the plain-Keras workflow does,
reshuffling every epoch, so the first epoch is not slowed by parsing and the
results are comparable with it; it is given tensors that share the arrays'
memory, so it does not copy them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types

import keras
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx

from components import tuning
from components.models import Hyperparameters, build_model
from components.trainer import callbacks, export, multi_worker
from components.trainer.data import as_tensor, hold_out_in_place, load_split
from mnist_tfx import defaults
from mnist_tfx.speedups import malloc

_LOG = callbacks.LOG
_VALIDATION_BATCH = 1024  # inference only: no effect on training


def _strategy(name: str) -> tf.distribute.Strategy:
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """Trains the configured model and exports the serving SavedModel."""
  malloc.release_freed()  # what the data components left: ~35 MB
  with malloc.large_blocks_unpooled():  # ~110 MB lower peak (see malloc)
    _train(fn_args)


def _train(fn_args: tfx.components.FnArgs) -> None:
  hp = Hyperparameters.from_dict(fn_args.custom_config["hyperparameters"])
  if fn_args.hyperparameters:  # the Tuner's best trial (run --tune)
    hp = tuning.apply(hp, tuning.best_values(fn_args.hyperparameters))
    _LOG.info("the Tuner's best trial: %s", tuning.describe(hp))
  keras.utils.set_random_seed(hp.seed)
  tft_output = tft.TFTransformOutput(fn_args.transform_output)
  # Validation during training is a hold-out of the train split: the test
  # split is the Evaluator's alone (the Trainer's eval_args name `train`).
  x_all, y_all = load_split(fn_args.train_files, fn_args.data_accessor, tft_output)
  share = fn_args.custom_config.get("validation_share", defaults.VALIDATION_SHARE)
  n_fit = hold_out_in_place(x_all, y_all, share)
  x_train, y_train, x_eval, y_eval = x_all[:n_fit], y_all[:n_fit], x_all[n_fit:], y_all[n_fit:]
  _LOG.info("loaded %d train examples: fitting on %d, validating on %d held out",
            len(x_all), len(x_train), len(x_eval))
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
        callbacks=callbacks.for_model_run(fn_args.model_run_dir))
  export.export(model, tft_output, fn_args.serving_model_dir)
  tf.io.gfile.makedirs(fn_args.model_run_dir)
  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, defaults.HISTORY_FILE),
                         "w") as f:
    json.dump({"hyperparameters": hp.to_dict(),
               "train_examples": int(len(x_train)),
               "validation_examples": int(len(x_eval)),
               "validation": f"{share:.0%} of the train split, held out",
               "epochs": {k: [float(v) for v in vs]
                          for k, vs in history.history.items()}}, f, indent=1)
