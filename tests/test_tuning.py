"""Hyperparameter search: the hold-out split, the search space and budget,
and the Tuner in a tiny pipeline (2 trials) feeding the Trainer."""

import io
import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from components import features, holdout, tuning
from components.example_gen import encode_examples
from components.models import Hyperparameters
from components.plain_data import ConfigError
from pipeline import local_runner
from pipeline.configs import PipelineConfig, with_overrides
from results import metadata
from tests import tiny_mnist


def _write_split(uri, split, records, shards=2):
  directory = os.path.join(uri, f"Split-{split}")
  os.makedirs(directory)
  for s in range(shards):
    with tf.io.TFRecordWriter(os.path.join(directory, f"part-{s}.gz"),
                              options="GZIP") as w:
      for record in records[s::shards]:
        w.write(record)


def _read_split(uri, split):
  files = tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*"))
  return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


@pytest.fixture
def source(tmp_path):
  labels = np.arange(400) % 10
  records = encode_examples(tiny_mnist.make_images(labels), labels)
  uri = str(tmp_path / "examples")
  _write_split(uri, features.TRAIN_SPLIT, records)
  _write_split(uri, features.EVAL_SPLIT, [b"test record"] * 5)
  return uri, records


def test_hold_out_partitions_the_train_split_only(source, tmp_path):
  uri, records = source
  counts = holdout.hold_out(uri, str(tmp_path / "out"), 0.1)
  train = _read_split(str(tmp_path / "out"), features.TRAIN_SPLIT)
  valid = _read_split(str(tmp_path / "out"), features.VALIDATION_SPLIT)
  assert counts == {features.TRAIN_SPLIT: len(train),
                    features.VALIDATION_SPLIT: len(valid)}
  assert sorted(train + valid) == sorted(records)  # nothing lost, nothing added
  assert 20 <= len(valid) <= 60  # about 10 % of 400
  assert b"test record" not in train + valid
  assert sorted(os.listdir(tmp_path / "out")) == [
      f"Split-{features.TRAIN_SPLIT}", f"Split-{features.VALIDATION_SPLIT}"]


def test_hold_out_is_deterministic_and_independent_of_file_order(source, tmp_path):
  uri, records = source
  other = str(tmp_path / "reordered")
  _write_split(other, features.TRAIN_SPLIT, records[::-1], shards=3)
  holdout.hold_out(uri, str(tmp_path / "a"), 0.2)
  holdout.hold_out(other, str(tmp_path / "b"), 0.2)
  for split in (features.TRAIN_SPLIT, features.VALIDATION_SPLIT):
    assert sorted(_read_split(str(tmp_path / "a"), split)) == sorted(
        _read_split(str(tmp_path / "b"), split))


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, float("nan")])
def test_hold_out_refuses_a_share_outside_0_1(source, tmp_path, share):
  with pytest.raises(ValueError, match="validation_share must be between 0 and 1"):
    holdout.hold_out(source[0], str(tmp_path / "out"), share)


def test_hold_out_names_an_empty_side_and_a_missing_split(tmp_path):
  uri = str(tmp_path / "few")
  _write_split(uri, features.TRAIN_SPLIT, [b"a", b"b"], shards=1)
  with pytest.raises(ValueError, match="leaves the valid split empty"):
    holdout.hold_out(uri, str(tmp_path / "out"), 1e-9)
  with pytest.raises(ValueError, match="no train split in"):
    holdout.hold_out(str(tmp_path / "nothing"), str(tmp_path / "out2"), 0.1)


def test_search_space_is_declared_whole_and_applied_to_the_model():
  import keras_tuner
  hp = keras_tuner.HyperParameters()
  tuning.define(hp)
  assert set(hp.values) == set(tuning.SEARCH_SPACE)
  values = dict(hp.values, hidden_layers=2, units=256, activation="gelu",
                optimizer="rmsprop", learning_rate=3e-4, epochs=7)
  applied = tuning.apply(Hyperparameters(seed=3), values)
  assert applied.layers == (256, 256)
  assert (applied.activation, applied.optimizer, applied.learning_rate,
          applied.epochs, applied.seed) == ("gelu", "rmsprop", 3e-4, 7, 3)
  assert tuning.apply(Hyperparameters(), dict(values, hidden_layers=0)).layers == ()
  # What the Trainer reads back from the Tuner's best_hyperparameters.
  hp.values.update(values)
  assert tuning.best_values(hp.get_config()) == hp.values


@pytest.mark.parametrize("trials,minutes,match", [
    (0, 1.0, "tune_trials must be at least 1"),
    (2, 0.0, "tune_minutes must be a positive number"),
    (2, float("inf"), "tune_minutes must be a positive number")])
def test_a_bad_budget_is_a_config_error(trials, minutes, match):
  with pytest.raises(ConfigError, match=match):
    PipelineConfig(tune_trials=trials, tune_minutes=minutes)
  with pytest.raises(ConfigError, match="validation_share"):
    PipelineConfig(validation_share=1.0)


def test_no_trial_starts_after_the_deadline():
  import keras_tuner
  oracle_cls, _ = tuning._search_classes()  # pylint: disable=protected-access
  hp = keras_tuner.HyperParameters()
  tuning.define(hp)
  kwargs = dict(objective=keras_tuner.Objective(tuning.OBJECTIVE, "max"),
                max_trials=5, hyperparameters=hp, seed=0)
  assert oracle_cls(time.monotonic() + 60, **kwargs).populate_space("0")[
      "status"] == "RUNNING"
  assert oracle_cls(time.monotonic() - 1, **kwargs).populate_space("0")[
      "status"] == "STOPPED"


# --- the Tuner in the pipeline ----------------------------------------------

@pytest.fixture(scope="module")
def tuned(tiny_data_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("tuned"))
  config = with_overrides(PipelineConfig(output_dir=out, tune=True, tune_trials=2,
                                         tune_minutes=5, validation_share=0.2))
  first = local_runner.run(config, tiny_data_dir, out=io.StringIO())
  again = local_runner.run(config, tiny_data_dir, out=io.StringIO())
  return config, first, again


def test_the_search_ran_two_trials_and_reports_them(tuned):
  _, first, _ = tuned
  assert first["status"] == "succeeded", first.get("error")
  assert first["component_status"]["HoldOutValidation"] == "complete"
  assert first["component_status"]["Tuner"] == "complete"
  trials = first["tuning"]["trials"]
  assert len(trials) == 2
  assert trials[0]["score"] >= trials[1]["score"]  # best first
  counts = first["tuning"]["split_counts"]
  assert counts["train"] + counts["valid"] == first["train_examples"] == 300


def test_the_trainer_trained_the_best_trial(tuned):
  _, first, _ = tuned
  best = first["tuning"]["trials"][0]
  with open(os.path.join(first["artifacts"]["Tuner.best_hyperparameters"],
                         "best_hyperparameters.txt")) as f:
    assert tuning.best_values(json.load(f)) == {
        k: v for k, v in best.items() if k not in ("trial_id", "score")}
  model = tf.saved_model.load(os.path.join(first["artifacts"]["Trainer.model"],
                                           "Format-Serving"))
  kernels = sorted((tuple(v.shape) for v in model.weights if len(v.shape) == 2),
                   key=lambda s: -s[0])
  hidden = [s[1] for s in kernels[:-1]]
  assert hidden == [best["units"]] * best["hidden_layers"]
  assert first["hyperparameters"]["hidden_units"] == hidden
  assert first["hyperparameters"]["epochs"] == best["epochs"]


def test_the_tuner_never_consumed_the_test_split(tuned):
  config, first, _ = tuned
  store = metadata.open_store(config.metadata_uri)
  run = store.get_context_by_type_and_name("pipeline_run", first["run_id"])
  tuner = next(e for e in store.get_executions_by_context(run.id)
               if metadata.node_name(store, e.id) == "Tuner")
  inputs = [ev.artifact_id for ev in store.get_events_by_execution_ids([tuner.id])
            if ev.type == ev.INPUT]
  examples = [a for a in store.get_artifacts_by_id(inputs)
              if "split_names" in a.properties]
  assert len(examples) == 1
  splits = json.loads(examples[0].properties["split_names"].string_value)
  assert splits == [features.TRAIN_SPLIT, features.VALIDATION_SPLIT]
  assert not os.path.exists(os.path.join(examples[0].uri,
                                         f"Split-{features.EVAL_SPLIT}"))
  for key, split in (("train_args", features.TRAIN_SPLIT),
                     ("eval_args", features.VALIDATION_SPLIT)):
    assert json.loads(tuner.custom_properties[key].string_value)["splits"] == [split]


def test_a_rerun_of_the_search_is_cached(tuned):
  _, first, again = tuned
  assert again["component_status"]["Tuner"] == "cached"
  assert again["component_status"]["Trainer"] == "cached"
  assert again["tuning"]["trials"] == first["tuning"]["trials"]
  assert again["tuning"]["seconds"] is None


def test_each_trial_has_tensorboard_scalars_per_epoch(tuned):
  import glob
  _, first, _ = tuned
  board = first["tuning"]["tensorboard"]
  assert board == os.path.join(first["artifacts"]["Tuner.tuner_results"], "tensorboard")
  for trial in first["tuning"]["trials"]:
    files = glob.glob(os.path.join(board, f"trial_{trial['trial_id']}", "validation",
                                   "events.*"))
    steps = [e.step for f in files for r in tf.data.TFRecordDataset(f)
             for e in [tf.compat.v1.Event.FromString(r.numpy())]
             for v in e.summary.value if v.tag == "epoch_accuracy"]
    assert steps == list(range(trial["epochs"])), (trial, steps)


def test_tensorboard_shows_each_trial_as_the_report_says(tuned):
  from results import report_text  # pylint: disable=g-import-not-at-top
  from tests import tensorboard_check  # pylint: disable=g-import-not-at-top
  _, first, _ = tuned
  command = dict(report_text.tensorboard_commands(first))[
      "TensorBoard (the search's trials)"]
  tags = tensorboard_check.scalar_tags(command)
  for trial in first["tuning"]["trials"]:
    assert "epoch_accuracy" in tags[f"trial_{trial['trial_id']}/validation"], tags


def test_trials_log_dir_only_where_tfx_puts_the_output(tmp_path):
  node = tmp_path / "Tuner"
  (node / tuning.TUNER_RESULTS / "8").mkdir(parents=True)
  temp = str(node / ".system" / "executor_execution" / "8" / ".temp" / "8") + "/"
  assert tuning.trials_log_dir(temp) == str(node / tuning.TUNER_RESULTS / "8" / "tensorboard")
  assert tuning.trials_log_dir(str(tmp_path / "elsewhere")) is None
  other = str(node / ".system" / "executor_execution" / "9" / ".temp" / "9") + "/"
  assert tuning.trials_log_dir(other) is None  # no such output dir
