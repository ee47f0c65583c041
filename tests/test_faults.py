"""Faults, run as a user meets them: `mnist-tfx run` in processes of its own,
killed with -9, interrupted, run twice at once, run after losing ML Metadata,
run on a disk that fills. Each checks the exit code, the message, the number
of versions, that the served model is the one reported, and that nothing a
server can see is half-written.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from components import features, pusher
from components.model_layout import SAVED_MODEL, versions
from results import metadata
from tests import pushed_model, tiny_mnist

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FAST = ["--epochs", "1", "--min-accuracy", "0.5", "--no-report"]


def _as_a_terminal_starts_it():
  """Ctrl-C at its default, even where the tests run with it ignored (as a
  script's background commands do): the run keeps an ignored SIGINT."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
  """`mnist-tfx run` in a subprocess, its output collected line by line."""

  def __init__(self, data_dir, out, *args):
    env = dict(os.environ, PYTHONPATH=_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_tfx", "run", "--data-dir", data_dir,
         "--output-dir", out, *_FAST, *args], cwd=_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_as_a_terminal_starts_it)
    self.stdout, self.stderr = [], []
    self._readers = [threading.Thread(target=self._read, args=(s, lines), daemon=True)
                     for s, lines in ((self.proc.stdout, self.stdout),
                                      (self.proc.stderr, self.stderr))]
    for reader in self._readers:
      reader.start()

  @staticmethod
  def _read(stream, lines):
    for line in stream:
      lines.append(line.rstrip("\n"))

  def wait_for(self, text, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if any(text in line for line in self.stdout):
        return
      if self.proc.poll() is not None:
        break
      time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen; stdout: {self.stdout[-5:]}, "
                         f"stderr: {self.stderr[-5:]}")

  def finish(self, timeout=300):
    code = self.proc.wait(timeout)
    for reader in self._readers:
      reader.join(10)
    return code

  @property
  def err(self):
    return "\n".join(self.stderr)


def _run(data_dir, out, *args):
  run = Run(data_dir, out, *args)
  run.finish()
  return run


def _summary(out):
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
    return json.load(f)


def _assert_serving_dir_clean(base):
  """Only complete, recorded versions (and the push lock) are visible."""
  for name in os.listdir(base) if os.path.isdir(base) else []:
    if name == pusher.PUSH_LOCK:
      continue
    assert name.isdigit(), f"{name} left in {base}"
    assert os.path.exists(os.path.join(base, name, SAVED_MODEL))
    assert os.path.exists(os.path.join(base, name, pusher.PUSH_RECORD))


def _assert_serves_the_reported_model(out, data_dir):
  summary = _summary(out)
  base = os.path.dirname(summary["pushed_model_path"])
  latest = versions(base)[max(versions(base))]
  assert latest == summary["pushed_model_path"]
  pushed_model.assert_is_reported(latest, summary)
  # ... and it classifies the tiny learnable data.
  _, _ = data_dir, None
  labels = np.arange(50) % 10
  images = tiny_mnist.make_images(labels, seed=5)
  out_ = tf.saved_model.load(latest).signatures[features.SERVING_SIGNATURE](
      images=tf.constant(images, tf.float32))
  assert np.mean(out_[features.CLASSES_KEY].numpy() == labels) >= 0.5


def _executions(out):
  store = metadata.open_store(os.path.join(out, "metadata.sqlite"))
  return {e.id: (metadata.node_name(store, e.id), e.last_known_state,
                 e.custom_properties["interrupted"].string_value
                 if "interrupted" in e.custom_properties else None)
          for e in store.get_executions()}


_RUNNING, _CANCELED = 2, 6  # metadata_store_pb2.Execution states


def _wait_running(out, node, timeout=60):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    try:
      if (node, _RUNNING) in {(n, s) for n, s, _ in _executions(out).values()}:
        return
    except Exception:  # pylint: disable=broad-except
      pass  # the store is being created
    time.sleep(0.02)
  raise AssertionError(f"{node} never RUNNING in ML Metadata")


@pytest.fixture()
def out(tmp_path):
  return str(tmp_path / "out")


def test_kill_9_in_a_beam_component_and_in_the_trainer_then_rerun(tiny_data_dir, out):
  base = os.path.join(out, "serving_model", "mnist")
  # Killed while StatisticsGen (Beam) runs.
  run = Run(tiny_data_dir, out)
  run.wait_for("StatisticsGen ...")
  _wait_running(out, "StatisticsGen")  # TFX records it just after that line
  run.proc.send_signal(signal.SIGKILL)
  assert run.finish() == -signal.SIGKILL
  assert _summary(out)["status"] == "running"  # what a dead run leaves
  # Killed while the Trainer fits (many epochs, so it is still fitting).
  run = Run(tiny_data_dir, out, "--epochs", "500")
  run.wait_for("epoch 2/500")
  run.proc.send_signal(signal.SIGKILL)
  assert run.finish() == -signal.SIGKILL
  assert "StatisticsGen (execution" in run.err  # repaired by this run
  assert not versions(base)
  # The rerun repairs and completes.
  run = _run(tiny_data_dir, out)
  assert run.proc.returncode == 0, run.err
  assert "Trainer (execution" in run.err
  interrupted = {node: reason for node, state, reason in _executions(out).values()
                 if state == _CANCELED}
  assert set(interrupted) == {"StatisticsGen", "Trainer"}
  assert all("its run died" in r for r in interrupted.values())
  assert len(versions(base)) == 1
  _assert_serving_dir_clean(base)
  _assert_serves_the_reported_model(out, tiny_data_dir)
  # No partial directory of the killed executions is left.
  killed = [eid for eid, (_, state, _) in _executions(out).items() if state == _CANCELED]
  for node in ("StatisticsGen", "Trainer"):
    for key in os.listdir(os.path.join(out, "pipeline", node)):
      left = os.listdir(os.path.join(out, "pipeline", node, key))
      assert not set(map(str, killed)) & set(left)


def test_lost_metadata_never_serves_an_old_model(tiny_data_dir, out):
  base = os.path.join(out, "serving_model", "mnist")
  assert _run(tiny_data_dir, out).proc.returncode == 0
  first = _summary(out)["pushed_model_path"]
  os.remove(os.path.join(out, "metadata.sqlite"))
  run = _run(tiny_data_dir, out, "--epochs", "3")  # another model
  assert run.proc.returncode == 0, run.err
  assert "does not know" in run.err and "orphaned" in run.err
  summary = _summary(out)
  assert summary["pushed_new"] and summary["pushed_model_path"] != first
  assert summary["hyperparameters"]["epochs"] == 3
  assert len(versions(base)) == 2
  _assert_serves_the_reported_model(out, tiny_data_dir)
  # The same deletion with unchanged settings: the same model, not pushed again.
  os.remove(os.path.join(out, "metadata.sqlite"))
  run = _run(tiny_data_dir, out, "--epochs", "3")
  assert run.proc.returncode == 0, run.err
  assert not _summary(out)["pushed_new"] and len(versions(base)) == 2
  _assert_serves_the_reported_model(out, tiny_data_dir)
  _assert_serving_dir_clean(base)


def test_two_runs_on_one_output_dir_one_waits_out(tiny_data_dir, out):
  base = os.path.join(out, "serving_model", "mnist")
  first = Run(tiny_data_dir, out)
  first.wait_for("StatisticsGen ...")
  assert _summary(out)["status"] == "running"
  start = time.monotonic()
  second = _run(tiny_data_dir, out)
  assert second.proc.returncode == 3
  assert time.monotonic() - start < 30  # at once: before TensorFlow's import
  assert f"in use by another mnist-tfx run (PID {first.proc.pid}" in second.err
  assert len([l for l in second.stderr if l.strip()]) == 1
  assert first.finish() == 0, first.err
  assert _summary(out)["status"] == "succeeded"
  assert len(versions(base)) == 1


def test_interrupt_writes_the_summary_and_a_rerun_completes(tiny_data_dir, out):
  run = Run(tiny_data_dir, out, "--epochs", "500")
  run.wait_for("epoch 2/500")
  run.proc.send_signal(signal.SIGINT)
  assert run.finish() == 130
  lines = [l for l in run.stderr if l.strip()]
  assert len(lines) == 1 and "interrupted in Trainer (summary: " in lines[0], run.err
  summary = _summary(out)
  assert summary["status"] == "interrupted"
  assert summary["failed_component"] == "Trainer"
  assert [s for n, s, _ in _executions(out).values() if n == "Trainer"] == [_CANCELED]
  run = _run(tiny_data_dir, out)
  assert run.proc.returncode == 0, run.err
  assert "was interrupted" not in run.err  # closed already by the run itself
  _assert_serves_the_reported_model(out, tiny_data_dir)


def _mount_small(path, size):
  os.makedirs(path, exist_ok=True)
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                        capture_output=True, text=True)
  if proc.returncode:
    pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}): "
                "the full-disk test needs root")


@pytest.fixture()
def small_disk(tmp_path):
  mounted = []

  def mount(name, size):
    path = str(tmp_path / name)
    _mount_small(path, size)
    mounted.append(path)
    return path

  yield mount
  for path in mounted:
    subprocess.run(["umount", "-l", path], check=False)


def test_a_disk_that_fills_during_the_push(tiny_data_dir, out, small_disk):
  serving = small_disk("serving", "200k")  # the SavedModel needs more
  base = os.path.join(serving, "mnist")
  run = _run(tiny_data_dir, out, "--serving-dir", serving)
  assert run.proc.returncode == 1
  assert "failed in ServingPusher: disk full: no space left on the device of " \
         f"{base}" in run.err, run.err
  assert not versions(base)
  _assert_serving_dir_clean(base)
  summary = _summary(out)
  assert summary["status"] == "failed" and summary["error"].startswith("disk full")
  assert not os.path.exists(os.path.join(out, "summary.json.tmp"))
  # Space again: the rerun pushes, from cache up to the Pusher.
  run = _run(tiny_data_dir, out)
  assert run.proc.returncode == 0, run.err
  _assert_serves_the_reported_model(out, tiny_data_dir)


def test_a_disk_that_fills_early_is_reported_as_a_full_disk(tiny_data_dir, small_disk):
  out = os.path.join(small_disk("out", "1m"), "run")
  run = _run(tiny_data_dir, out)
  assert run.proc.returncode == 1
  assert "disk full: no space left on the device of" in run.err, run.err
  assert "No type found" not in run.err
  summary = _summary(out)
  assert summary["status"] == "failed" and "disk full" in summary["error"]
  assert not os.path.exists(os.path.join(out, "summary.json.tmp"))


def test_a_broken_label_distribution_stops_before_the_trainer(tmp_path, out):
  data_dir = str(tmp_path / "one_digit")
  tiny_mnist.write_dataset(data_dir)
  import gzip
  path = os.path.join(data_dir, "train-labels-idx1-ubyte.gz")
  raw = bytearray(gzip.decompress(open(path, "rb").read()))
  raw[8:] = bytes([3]) * (len(raw) - 8)  # every train label is 3
  open(path, "wb").write(gzip.compress(bytes(raw)))
  run = _run(data_dir, out, "--min-accuracy", "0.05")
  assert run.proc.returncode == 1
  assert "failed in AnomaliesGate" in run.err and "minimum share" in run.err
  # One line: the cause, the summary and the log; the traceback is in the log.
  assert len([l for l in run.stderr if l.strip()]) == 1, run.err
  assert "Traceback" not in run.err + "\n".join(run.stdout)
  with open(_summary(out)["log"], encoding="utf-8") as f:
    assert "Traceback" in f.read()
  summary = _summary(out)
  assert "Trainer" not in summary["component_status"]
  assert not os.path.isdir(os.path.join(out, "serving_model"))


def test_an_unreadable_metadata_store_is_named_and_can_be_moved_aside(tiny_data_dir, out):
  assert _run(tiny_data_dir, out).proc.returncode == 0
  store = os.path.join(out, "metadata.sqlite")
  with open(store, "wb") as f:
    f.write(b"not a database")
  run = _run(tiny_data_dir, out)
  assert run.proc.returncode == 1
  assert f"the ML Metadata store {store} cannot be read (file is not a database)" in run.err
  assert len([l for l in run.stderr if l.strip()]) == 1, run.err
  os.rename(store, store + ".broken")
  run = _run(tiny_data_dir, out)
  assert run.proc.returncode == 0, run.err
  assert "does not know" in run.err
  _assert_serves_the_reported_model(out, tiny_data_dir)
