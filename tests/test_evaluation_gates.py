"""The per-digit, per-writer and simpler-model gates: TFMA bounds on every
digit's slice, on the gap between the writer populations and on the margin
over the basic model, and reasons that name what failed."""

import json
import os
import subprocess
import sys

from google.protobuf import json_format

from components import evaluation, features, idx
from tests import tiny_mnist
from tests.serve_process import ROOT


def _result(per_class, blessed=False, baseline=None, base_per_class=None, failures=(),
            writers=None, bounds=None):
  accuracy = sum(per_class.values()) / len(per_class)
  return evaluation.Evaluation(
      accuracy=accuracy, example_count=100, per_class_accuracy=per_class,
      per_class_count={k: 10 for k in per_class}, confusion_matrix=[],
      baseline_accuracy=baseline, baseline_per_class_accuracy=base_per_class,
      blessed=blessed, failures=list(failures),
      per_writer_accuracy=dict(writers or {}),
      per_writer_count={w: 50 for w in writers or {}}, bounds=dict(bounds or {}))


BOUNDS = {"min_accuracy": 0.9, "max_regression": 0.01, "min_class_accuracy": 0.85,
          "max_class_regression": 0.02, "max_writer_gap": 0.03}


def _as_json(config):
  return json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))


def test_the_config_bounds_every_digit_and_reads_back():
  config = evaluation.eval_config(**BOUNDS)
  assert evaluation.thresholds(_as_json(config)) == dict(
      BOUNDS, simpler_accuracy=None, min_margin_over_simpler=None)
  per_slice = config.metrics_specs[0].metrics[1].per_slice_thresholds
  assert [list(p.slicing_specs[0].feature_keys) for p in per_slice] == [[], ["label"]]


def test_the_writer_gap_is_a_cross_slice_bound_between_sd3_and_sd1():
  config = evaluation.eval_config(**BOUNDS)
  cross, = config.metrics_specs[0].metrics[1].cross_slice_thresholds
  spec, = cross.cross_slicing_specs
  assert dict(spec.baseline_spec.feature_values) == {"writer": "SD-3"}
  assert [dict(s.feature_values) for s in spec.slicing_specs] == [{"writer": "SD-1"}]
  value = cross.threshold.value_threshold
  assert (value.lower_bound.value, value.upper_bound.value) == (-0.03, 0.03)
  assert ["writer"] in [list(s.feature_keys) for s in config.slicing_specs]
  unbounded = evaluation.eval_config(**dict(BOUNDS, max_writer_gap=None))
  assert not unbounded.metrics_specs[0].metrics[1].cross_slice_thresholds
  assert evaluation.thresholds(_as_json(unbounded))["max_writer_gap"] is None


def test_the_margin_over_the_simpler_model_is_a_metric_of_its_own():
  config = evaluation.eval_config(**BOUNDS, simpler_accuracy=0.925,
                                  min_margin_over_simpler=0.01)
  margin = config.metrics_specs[0].metrics[-1]
  assert margin.class_name == "AccuracyMargin" and json.loads(margin.config) == {
      "over": 0.925}
  found = evaluation.thresholds(_as_json(config))
  assert (found["simpler_accuracy"], found["min_margin_over_simpler"]) == (0.925, 0.01)
  assert found["min_accuracy"] == 0.9  # the overall bound stays its own


def test_a_writer_gap_beyond_the_bound_is_named():
  per_class = {str(d): 0.95 for d in range(10)}
  reason = evaluation.blessing_reason(
      _result(per_class, writers={"SD-3": 0.99, "SD-1": 0.91}), BOUNDS)
  assert reason == ("writers: the accuracies differ by 0.0800, more than the bound 0.03 "
                    "(SD-3 0.9900 (50 records), SD-1 0.9100 (50 records))")


def test_a_blessing_with_one_writer_population_says_the_gap_was_not_gated():
  per_class = {str(d): 0.95 for d in range(10)}
  reason = evaluation.blessing_reason(
      _result(per_class, blessed=True, writers={"SD-3": 0.95}),
      dict(BOUNDS, max_writer_gap=None))
  assert "writers not gated (the test split holds SD-3 only)" in reason


def test_too_small_a_margin_over_the_basic_model_is_named():
  per_class = {str(d): 0.93 for d in range(10)}
  bounds = dict(BOUNDS, simpler_accuracy=0.925, min_margin_over_simpler=0.01)
  reason = evaluation.blessing_reason(_result(per_class, bounds=bounds))
  assert reason == ("accuracy 0.9300 does not beat the basic model's 0.9250 by 0.01 "
                    "(+0.0050)")
  blessed = evaluation.blessing_reason(_result(
      {str(d): 0.95 for d in range(10)}, blessed=True, bounds=bounds))
  assert "+0.0250 over the basic model's 0.9250 (margin >= 0.01)" in blessed


def test_old_configs_read_back_without_digit_bounds():
  old = {"metrics_specs": [{"metrics": [{"per_slice_thresholds": [{
      "slicing_specs": [{}], "threshold": {
          "value_threshold": {"lower_bound": 0.95},
          "change_threshold": {"absolute": -0.001}}}]}]}]}
  assert evaluation.thresholds(old) == dict.fromkeys(evaluation.BOUND_NAMES) | {
      "min_accuracy": 0.95, "max_regression": 0.001}


def test_a_weak_digit_is_named_even_when_the_average_holds():
  per_class = {str(d): 0.99 for d in range(10)}
  per_class["5"] = 0.80
  reason = evaluation.blessing_reason(_result(per_class), BOUNDS)
  assert reason == "digit 5: accuracy 0.8000 is below the per-digit bound 0.85"


def test_a_digit_that_regressed_against_the_baseline_is_named():
  per_class = {str(d): 0.95 for d in range(10)}
  base = dict(per_class, **{"3": 0.99})
  reason = evaluation.blessing_reason(_result(per_class, baseline=0.95,
                                              base_per_class=base), BOUNDS)
  assert reason == ("digit 3: accuracy 0.9500 is more than 0.02 below the last "
                    "blessed model's 0.9900")


def test_a_blessing_says_the_lowest_digit():
  per_class = {str(d): 0.97 for d in range(10)}
  per_class["9"] = 0.93
  reason = evaluation.blessing_reason(_result(per_class, blessed=True), BOUNDS)
  assert "every digit >= 0.85 (lowest: digit 9, 0.9300)" in reason


def test_a_run_refused_on_one_digit_says_so_everywhere(tiny_data_dir, tmp_path):
  """A weak model that passes an overall bound of 0 but not a digit bound:
  TFMA refuses it, and the summary, `runs` and the exit status say which digit."""
  out = str(tmp_path)
  args = ["run", "--data-dir", tiny_data_dir, "--output-dir", out, "--epochs", "1",
          "--learning-rate", "3e-5", "--lr-schedule", "constant", "--min-accuracy", "0",
          "--min-class-accuracy", "0.999", "--no-report"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  done = subprocess.run([sys.executable, "-m", "mnist_tfx", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600, env=env)
  assert done.returncode == 0, done.stderr  # not blessed is not a failure
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  assert not summary["blessed"] and summary["pushed_model_path"] is None
  weak = [d for d, a in summary["per_class_accuracy"].items() if a < 0.999]
  assert weak and summary["accuracy"] >= 0
  for digit in weak:
    assert f"digit {digit}: accuracy" in summary["blessing"]
  assert "per-digit bound 0.999" in done.stdout
  runs = subprocess.run([sys.executable, "-m", "mnist_tfx", "runs", "--output-dir", out,
                         "--json"], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=env)
  row, = json.loads(runs.stdout)
  assert f"digit {weak[0]}: accuracy" in json.dumps(row)


def _mnist_tfx(*args, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "mnist_tfx", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, env=env)


def _summary(out):
  with open(os.path.join(out, "summary.json")) as f:
    return json.load(f)


def test_a_model_that_fails_the_sd1_writers_is_refused(tmp_path):
  """A test split of 5,000 SD-3 records and 100 SD-1 ones whose labels are
  off by one: overall and per-digit bounds of 0 pass, the writer gap does not."""
  data = str(tmp_path / "data")
  tiny_mnist.write_dataset(data, n_train=300, n_eval=5100)
  labels_path = os.path.join(data, "t10k-labels-idx1-ubyte.gz")
  _, labels = idx.load(os.path.join(data, "t10k-images-idx3-ubyte.gz"), labels_path)
  labels = labels.copy()
  labels[features.SD3_TEST_RECORDS:] = (labels[features.SD3_TEST_RECORDS:] + 1) % 10
  idx.write_labels(labels_path, labels, compress=True)
  out = str(tmp_path / "out")
  done = _mnist_tfx("run", "--data-dir", data, "--output-dir", out, "--epochs", "1",
                    "--min-accuracy", "0", "--min-class-accuracy", "0",
                    "--max-writer-gap", "0.3", "--no-report")
  assert done.returncode == 0, done.stderr
  summary = _summary(out)
  assert summary["per_writer_count"] == {"SD-3": 5000, "SD-1": 100}
  assert summary["per_writer_accuracy"]["SD-3"] > 0.9
  assert summary["per_writer_accuracy"]["SD-1"] < 0.2
  assert not summary["blessed"] and summary["pushed_model_path"] is None
  assert summary["blessing"].startswith("writers: the accuracies differ by ")
  assert "more than the bound 0.3" in summary["blessing"]
  assert "writers: the accuracies differ" in done.stdout
  row, = json.loads(_mnist_tfx("runs", "--output-dir", out, "--json").stdout)
  assert row["why"].startswith("writers: the accuracies differ by ")
  # The same model within a bound of 1: TFMA validates the cross slice and blesses.
  done = _mnist_tfx("run", "--data-dir", data, "--output-dir", out, "--epochs", "1",
                    "--min-accuracy", "0", "--min-class-accuracy", "0",
                    "--max-writer-gap", "1", "--no-report")
  assert done.returncode == 0, done.stderr
  summary = _summary(out)
  assert summary["component_status"]["Trainer"] == "cached"
  assert summary["blessed"], summary["blessing"]
  assert "writers within 1.0 of each other (SD-3 " in summary["blessing"]


def test_a_model_that_does_not_beat_the_basic_one_by_the_margin_is_refused(
    tiny_data_dir, tmp_path):
  """basic is blessed first; improved must then beat its accuracy by the
  margin. No model can beat a blessed basic one by 1, so it is refused; with
  no margin asked it is blessed."""
  out = str(tmp_path)
  common = ["--data-dir", tiny_data_dir, "--output-dir", out, "--epochs", "1",
            "--no-report"]
  assert _mnist_tfx("run", "--model", "basic", "--min-accuracy", "0",
                    "--min-class-accuracy", "0", *common).returncode == 0
  basic = _summary(out)
  assert basic["blessed"] and basic["simpler_accuracy"] is None  # basic itself
  refused = _mnist_tfx("run", "--min-accuracy", "0", "--min-class-accuracy", "0",
                       "--min-margin-over-simpler", "1", *common)
  assert refused.returncode == 0, refused.stderr
  summary = _summary(out)
  assert summary["simpler_accuracy"] == basic["accuracy"]
  assert not summary["blessed"]
  assert (f"does not beat the basic model's {basic['accuracy']:.4f} by 1.0"
          in summary["blessing"])
  done = _mnist_tfx("run", "--min-accuracy", "0", "--min-class-accuracy", "0",
                    "--max-regression", "1", "--max-class-regression", "1",
                    "--min-margin-over-simpler", "-1", *common)
  assert done.returncode == 0, done.stderr
  summary = _summary(out)
  assert summary["blessed"], summary["blessing"]
  assert "over the basic model's" in summary["blessing"]
