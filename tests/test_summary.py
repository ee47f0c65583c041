"""The run summary: failures in one line, a full disk named, atomic writes."""

import errno
import json
import os

import pytest

from components.idx import IdxError
from results import summary


def _chained(outer, inner):
  try:
    try:
      raise inner
    except Exception as e:  # pylint: disable=broad-except
      raise outer from e
  except Exception as e:  # pylint: disable=broad-except
    return e


def test_our_error_is_preferred_over_its_root_cause():
  error = _chained(RuntimeError("component failed"),
                   IdxError("/d/train-images-idx3-ubyte.gz", "corrupt gzip stream"))
  error = _chained(RuntimeError("TFX wrapper"), error)
  assert summary.describe_failure(error) == (
      "IdxError: /d/train-images-idx3-ubyte.gz: corrupt gzip stream")


def test_otherwise_the_root_cause_first_line():
  error = _chained(RuntimeError("wrapper"), ValueError("the cause\nmore lines"))
  assert summary.describe_failure(error) == "ValueError: the cause"


def test_a_full_disk_is_named_from_the_error(tmp_path):
  error = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
  text = summary.describe_failure(error)
  assert text.startswith(f"disk full: no space left on the device of {tmp_path}/x")
  assert "KiB free" in text


def test_a_full_disk_is_named_from_tensorflows_words():
  error = RuntimeError("/mnt/small/mnist/.staging-1/v.data; No space left on device")
  assert "device of /mnt/small/mnist/.staging-1/v.data" in summary.describe_failure(error)


def test_a_full_disk_found_only_in_the_log(tmp_path):
  log = tmp_path / "run.log"
  log.write_text("... sqlite: database or disk is full ...\n")
  text = summary.describe_failure(KeyError("No type found for query"), str(log),
                                  str(tmp_path))
  assert text.startswith(f"disk full: no space left on the device of {tmp_path}")


def test_write_replaces_in_one_step_and_leaves_no_tmp(tmp_path):
  path = str(tmp_path / "summary.json")
  summary.write({"status": "running"}, path)
  summary.write({"status": "succeeded"}, path)
  assert json.load(open(path)) == {"status": "succeeded"}
  assert os.listdir(tmp_path) == ["summary.json"]


def test_a_failed_write_leaves_no_tmp(tmp_path):
  path = str(tmp_path / "summary.json")
  with pytest.raises(TypeError):
    summary.write({"not json": object()}, path)
  assert os.listdir(tmp_path) == []


def _facts(**over):
  base = {"status": "succeeded", "accuracy": 0.98, "model": "improved",
          "hyperparameters": {"hidden_units": [100]}, "train_examples": 60000,
          "eval_examples": 10000, "baseline_accuracy": None,
          "per_class_accuracy": {"0": 0.99}, "blessed": True, "blessing": "ok",
          "pushed_model_path": "/s/mnist/7", "pushed_new": True,
          "component_seconds": {"Trainer": 0.1}, "component_status": {"Trainer": "cached"},
          "component_seconds_made": {"Trainer": 12.5},
          "total_seconds": 2.0}
  base.update(over)
  return base


def test_render():
  text = summary.render(_facts())
  assert "Accuracy: 0.9800" in text and "Blessed: yes - ok" in text
  assert "Pushed: /s/mnist/7" in text and "Trainer 12.5s (cached)" in text
  assert "Accuracy" not in summary.render(_facts(), with_evaluation=False)
  failed = _facts(status="failed", error="boom", failed_component="Evaluator")
  assert summary.render(failed).startswith("FAILED in Evaluator: boom")
  assert "FAILED" not in summary.render(failed, with_status=False)
