"""`tuner_fn` for TFX's Tuner: a KerasTuner search over the reference's ideas.

The reference notebook suggests more layers, other activations, optimizers
and epochs; `SEARCH_SPACE` is exactly that, as plain data. The search fits on
the `train` split and selects on the `valid` split of `components.holdout`'s
artifact, both cut from the training records: the test split never reaches
the Tuner. The budget is a number of trials and a time limit, counted from
when the Tuner starts: no trial starts after the limit and a running one
stops within `steps_per_execution` steps (then is scored as it stands).

A trial's score is its validation accuracy after its last epoch, not its best
epoch's: picking the maximum over epochs would select on noise.
`apply` turns a trial's values into `Hyperparameters`, and the Trainer uses
the same function on the best trial's, so it builds exactly that model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Dict, Optional

from components import features
from components.models import ACTIVATIONS, OPTIMIZERS, Hyperparameters

_LOG = logging.getLogger("mnist_tfx.tuner")  # shown as progress by the CLI
OBJECTIVE = "val_accuracy"

# name -> choices (a tuple) or an inclusive range (a dict).
SEARCH_SPACE: Dict[str, Any] = {
    "hidden_layers": {"min": 0, "max": 3},
    "units": (64, 128, 256, 512),  # every hidden layer's
    "activation": ("relu", "elu", "gelu", "tanh"),
    "optimizer": ("adam", "adamw", "rmsprop"),
    "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
    "epochs": {"min": 3, "max": 12},
}
assert set(SEARCH_SPACE["activation"]) <= set(ACTIVATIONS)
assert set(SEARCH_SPACE["optimizer"]) <= set(OPTIMIZERS)


@dataclasses.dataclass(frozen=True)
class Budget:
  """How much searching one run may do."""

  trials: int
  minutes: float

  def __post_init__(self):
    if self.trials < 1:
      raise ValueError("tune_trials must be at least 1")
    if not (self.minutes > 0 and math.isfinite(self.minutes)):
      raise ValueError("tune_minutes must be a positive number (of minutes)")


def check_validation_share(share: float) -> None:
  """The share of training records held out (components.holdout) to select on."""
  if not 0 < share < 1:
    raise ValueError(f"validation_share must be between 0 and 1 (exclusive), "
                     f"got {share}")


def define(hp) -> None:
  """Declares `SEARCH_SPACE` on a KerasTuner `HyperParameters`."""
  for name, space in SEARCH_SPACE.items():
    if isinstance(space, tuple):
      hp.Choice(name, list(space))
    elif isinstance(space["min"], int):
      hp.Int(name, space["min"], space["max"])
    else:
      hp.Float(name, space["min"], space["max"], sampling=space["sampling"])


def apply(base: Hyperparameters, values: Dict[str, Any]) -> Hyperparameters:
  """`base` with a trial's values: the model the trial (or Trainer) builds."""
  layers = int(values["hidden_layers"])
  return dataclasses.replace(
      base, hidden_units=(int(values["units"]),) * layers,
      activation=str(values["activation"]), optimizer=str(values["optimizer"]),
      learning_rate=float(values["learning_rate"]), epochs=int(values["epochs"]))


def best_values(config: Dict[str, Any]) -> Dict[str, Any]:
  """The values in the Tuner's `best_hyperparameters` (a KerasTuner config)."""
  import keras_tuner  # pylint: disable=g-import-not-at-top
  return keras_tuner.HyperParameters.from_config(config).values


def _search_classes():
  """KerasTuner subclasses, defined on first use: keras_tuner imports Keras."""
  import keras  # pylint: disable=g-import-not-at-top
  import keras_tuner  # pylint: disable=g-import-not-at-top
  from keras_tuner.engine import trial as trial_module  # pylint: disable=g-import-not-at-top

  from components.models import build_model  # pylint: disable=g-import-not-at-top
  from components.trainer import callbacks  # pylint: disable=g-import-not-at-top

  class Oracle(keras_tuner.oracles.BayesianOptimizationOracle):
    """Bayesian optimisation that starts no trial after the deadline."""

    def __init__(self, deadline: float, **kwargs):
      super().__init__(**kwargs)
      self.deadline = deadline

    def populate_space(self, trial_id):
      if time.monotonic() >= self.deadline:
        _LOG.info("time budget spent: no new trial")
        return {"status": trial_module.TrialStatus.STOPPED,
                "values": None}
      return super().populate_space(trial_id)

  class StopAtDeadline(keras.callbacks.Callback):

    def __init__(self, deadline: float):
      super().__init__()
      self.deadline = deadline

    def on_train_batch_end(self, batch, logs=None):
      # Every `steps_per_execution` steps; Keras then still scores the
      # partial epoch on the validation split.
      if time.monotonic() >= self.deadline:
        self.model.stop_training = True

  class Search(keras_tuner.Tuner):
    """Builds `apply(base, trial)`, fits it for the trial's epochs, scores it."""

    def __init__(self, base: Hyperparameters, deadline: float,
                 log_dir: Optional[str], **kwargs):
      super().__init__(**kwargs)
      self.base = base
      self.deadline = deadline
      self.log_dir = log_dir

    def search_space_summary(self, extended=False):
      del extended  # SEARCH_SPACE says it; the trials are logged one a line

    def results_summary(self, num_trials=10):
      del num_trials

    def run_trial(self, trial, x, y, validation_data, verbose=0):
      del verbose  # only silences KerasTuner's own display
      hp = apply(self.base, trial.hyperparameters.values)
      keras.utils.set_random_seed(self.base.seed)
      started = time.monotonic()
      model = build_model(hp, -(-len(x) // hp.batch_size))
      watch = [StopAtDeadline(self.deadline)]
      if self.log_dir:
        watch.append(callbacks.tensorboard(os.path.join(self.log_dir,
                                                  f"trial_{trial.trial_id}")))
      history = model.fit(x, y, batch_size=hp.batch_size, epochs=hp.epochs,
                          shuffle=True, validation_data=validation_data,
                          validation_batch_size=1024, verbose=0,
                          callbacks=watch)
      score = float(history.history[OBJECTIVE][-1])
      _LOG.info("trial %s: %s -> %s %.4f (%d epochs%s, %.0fs)", trial.trial_id,
                describe_values(trial.hyperparameters.values), OBJECTIVE, score,
                len(history.history[OBJECTIVE]),
                ", stopped at the time limit" if time.monotonic() >= self.deadline
                else "", time.monotonic() - started)
      return {OBJECTIVE: score}

  return Oracle, Search


TUNED_FIELDS = ("hidden_units", "activation", "optimizer", "learning_rate",
                "epochs")  # what `apply` sets


def describe(hp: Hyperparameters) -> str:
  return describe_values({name: getattr(hp, name) for name in TUNED_FIELDS})


def describe_values(values: Dict[str, Any]) -> str:
  return " ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in values.items())


_TFX_TEMP = "/.system/executor_execution/"
TUNER_RESULTS = "tuner_results"  # the Tuner's output key


def trials_log_dir(working_dir: str) -> Optional[str]:
  """`<tuner_results artifact>/tensorboard`, or None where it cannot be found.

  TFX gives `tuner_fn` a temporary dir, deleted after the run, and no output
  location. Its local layout is `<node>/.system/executor_execution/<id>/.temp/`
  for that dir and `<node>/<output key>/<id>` for outputs, created before the
  executor starts; the trials' logs go into the tuner_results artifact only
  when that dir is there.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mnist_tfx.defaults import TENSORBOARD_DIR  # pylint: disable=g-import-not-at-top
  if _TFX_TEMP not in working_dir:
    return None
  node_dir, rest = working_dir.split(_TFX_TEMP, 1)
  execution = rest.split("/", 1)[0]
  results = f"{node_dir}/{TUNER_RESULTS}/{execution}"
  if not execution.isdigit() or not tf.io.gfile.isdir(results):
    return None
  return f"{results}/{TENSORBOARD_DIR}"


def tuner_fn(fn_args):
  """The Tuner's entry point: the data in memory and a budgeted search."""
  import keras_tuner  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top

  from components.trainer.data import load_split  # pylint: disable=g-import-not-at-top

  started = time.monotonic()  # the budget counts loading the data too
  base = Hyperparameters.from_dict(fn_args.custom_config["hyperparameters"])
  budget = Budget(**fn_args.custom_config["budget"])
  tft_output = tft.TFTransformOutput(fn_args.transform_graph_path)
  x, y = load_split(fn_args.train_files, fn_args.data_accessor, tft_output)
  validation = load_split(fn_args.eval_files, fn_args.data_accessor, tft_output)
  _LOG.info("searching on %d %s and %d %s records: up to %d trials, %g min",
            len(x), features.TRAIN_SPLIT, len(validation[0]),
            features.VALIDATION_SPLIT, budget.trials, budget.minutes)
  oracle_cls, search_cls = _search_classes()
  hp = keras_tuner.HyperParameters()
  define(hp)
  deadline = started + budget.minutes * 60
  oracle = oracle_cls(
      deadline, objective=keras_tuner.Objective(OBJECTIVE, "max"),
      max_trials=budget.trials, hyperparameters=hp, seed=base.seed,
      num_initial_points=min(budget.trials, 5))
  log_dir = trials_log_dir(fn_args.working_dir)
  if log_dir is None:
    _LOG.warning("no TensorBoard logs for the trials: the Tuner's output "
                 "dir is not where TFX 1.x puts it")
  tuner = search_cls(base, deadline, log_dir, oracle=oracle,
                     directory=fn_args.working_dir, project_name="search",
                     overwrite=True)
  return tfx.components.TunerFnResult(
      tuner=tuner, fit_kwargs={"x": x, "y": y, "validation_data": validation,
                               "verbose": 0})
