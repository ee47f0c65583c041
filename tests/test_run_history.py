"""The run history is always true, however a run ends: `mnist-tfx run` in
processes of its own with its output closed, hung up, stopped or killed,
then `mnist-tfx runs` as a user reads it."""

import json
import os
import signal
import subprocess
import sys

from tests.test_faults import _ROOT, Run, _summary, _wait_running


def _runs(out):
  proc = subprocess.run([sys.executable, "-m", "mnist_tfx", "runs", "--output-dir",
                         out, "--json"], cwd=_ROOT, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, PYTHONPATH=_ROOT))
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout)


def test_a_closed_pipe_never_stops_a_run(tiny_data_dir, tmp_path):
  out = str(tmp_path / "out")
  # As `mnist-tfx run ... | head -3`: the reader leaves after three lines.
  proc = subprocess.run(
      f"{sys.executable} -m mnist_tfx run --data-dir {tiny_data_dir} --output-dir "
      f"{out} --epochs 1 --no-report | head -3", shell=True, cwd=_ROOT,
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=_ROOT, TF_CPP_MIN_LOG_LEVEL="3"),
      executable="/bin/bash")
  assert len(proc.stdout.splitlines()) == 3
  summary = _summary(out)
  assert summary["status"] == "succeeded", summary.get("error")
  assert summary["pushed_new"] and os.path.isdir(summary["pushed_model_path"])
  (row,) = _runs(out)
  assert row["status"] == "succeeded" and row["model"] == "improved"
  assert row["pushed_version"] is not None
  with open(summary["log"], encoding="utf-8") as f:
    assert "ServingPusher" in f.read()  # the progress went on into the log


def test_a_hang_up_never_stops_a_run(tiny_data_dir, tmp_path):
  out = str(tmp_path / "out")
  run = Run(tiny_data_dir, out)
  run.wait_for("StatisticsGen ...")
  run.proc.send_signal(signal.SIGHUP)  # the terminal was closed
  assert run.finish() == 0, run.err
  assert _summary(out)["status"] == "succeeded"
  assert _runs(out)[0]["status"] == "succeeded"


def test_sigterm_is_an_interrupted_run_in_the_history(tiny_data_dir, tmp_path):
  out = str(tmp_path / "out")
  run = Run(tiny_data_dir, out, "--epochs", "500")
  run.wait_for("epoch 2/500")
  run.proc.send_signal(signal.SIGTERM)
  assert run.finish() == 130
  assert _summary(out)["status"] == "interrupted"
  (row,) = _runs(out)
  assert (row["status"], row["stopped_in"]) == ("interrupted", "Trainer")


def test_a_killed_run_is_interrupted_not_running_and_the_next_run_says_so(
    tiny_data_dir, tmp_path):
  out = str(tmp_path / "out")
  run = Run(tiny_data_dir, out, "--epochs", "500")
  run.wait_for("epoch 2/500")
  _wait_running(out, "Trainer")
  run.proc.send_signal(signal.SIGKILL)
  assert run.finish() == -signal.SIGKILL
  assert _summary(out)["status"] == "running"  # it could not say otherwise
  (row,) = _runs(out)  # its process is gone: the lock says so
  assert (row["status"], row["stopped_in"]) == ("interrupted", "Trainer")
  listed = subprocess.run([sys.executable, "-m", "mnist_tfx", "runs", "--output-dir",
                           out], cwd=_ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=_ROOT))
  assert "interrupted in Trainer" in listed.stdout
  # The next run finds it, says so and carries on.
  again = Run(tiny_data_dir, out)
  assert again.finish() == 0, again.err
  assert "Trainer (execution" in again.err and "its run died" in again.err
  statuses = [r["status"] for r in _runs(out)]
  assert statuses == ["succeeded", "interrupted"]


def test_a_live_run_is_running(tiny_data_dir, tmp_path):
  out = str(tmp_path / "out")
  run = Run(tiny_data_dir, out, "--epochs", "500")
  try:
    run.wait_for("epoch 2/500")
    (row,) = _runs(out)
    assert (row["status"], row["stopped_in"]) == ("running", "Trainer")
  finally:
    run.proc.send_signal(signal.SIGKILL)
    run.finish()
