"""The per-digit gates: TFMA bounds on every digit's slice, and reasons that
name the digit that failed."""

import json
import os
import subprocess
import sys

from google.protobuf import json_format

from components import evaluation
from tests.serve_process import ROOT


def _result(per_class, blessed=False, baseline=None, base_per_class=None, failures=()):
  accuracy = sum(per_class.values()) / len(per_class)
  return evaluation.Evaluation(
      accuracy=accuracy, example_count=100, per_class_accuracy=per_class,
      per_class_count={k: 10 for k in per_class}, confusion_matrix=[],
      baseline_accuracy=baseline, baseline_per_class_accuracy=base_per_class,
      blessed=blessed, failures=list(failures))


BOUNDS = {"min_accuracy": 0.9, "max_regression": 0.01, "min_class_accuracy": 0.85,
          "max_class_regression": 0.02}


def test_the_config_bounds_every_digit_and_reads_back():
  config = evaluation.eval_config(**BOUNDS)
  as_json = json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))
  assert evaluation.thresholds(as_json) == BOUNDS
  per_slice = config.metrics_specs[0].metrics[1].per_slice_thresholds
  assert [list(p.slicing_specs[0].feature_keys) for p in per_slice] == [[], ["label"]]


def test_old_configs_read_back_without_digit_bounds():
  old = {"metrics_specs": [{"metrics": [{"per_slice_thresholds": [{
      "slicing_specs": [{}], "threshold": {
          "value_threshold": {"lower_bound": 0.95},
          "change_threshold": {"absolute": -0.001}}}]}]}]}
  assert evaluation.thresholds(old) == {"min_accuracy": 0.95, "max_regression": 0.001,
                                        "min_class_accuracy": None,
                                        "max_class_regression": None}


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
