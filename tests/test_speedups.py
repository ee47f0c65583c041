"""mnist_tfx.speedups: one switch turns every patch off; a guard steps aside once.

Each patch's own behaviour is tested in test_speedups_<patch>.py; here, that
the switch (MNIST_TFX_SPEEDUPS=0, or --no-speedups) reaches every one, that
nonsense in it is refused, and that a library at a version a patch was not
checked against leaves that library as shipped, said once.
"""

import gc
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from mnist_tfx import speedups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def switched_off(monkeypatch):
  monkeypatch.setenv(speedups.ENV, "0")
  monkeypatch.setattr(speedups, "_said", {})


def _python(code: str, **env) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=ROOT, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT, **env))


@pytest.mark.parametrize("value,on", [("1", True), ("", True), ("on", True),
                                      ("TRUE", True), (" yes ", True),
                                      ("0", False), ("off", False),
                                      ("False", False), ("no", False)])
def test_the_switch_reads_on_and_off(monkeypatch, value, on):
  monkeypatch.setenv(speedups.ENV, value)
  assert speedups.enabled() is on


def test_the_switch_is_on_by_default(monkeypatch):
  monkeypatch.delenv(speedups.ENV, raising=False)
  assert speedups.enabled()


@pytest.mark.parametrize("value", ["2", "maybe", "0n", "-1"])
def test_nonsense_in_the_switch_is_refused_and_counts_as_off_for_patches(
    monkeypatch, value):
  monkeypatch.setenv(speedups.ENV, value)
  with pytest.raises(speedups.SwitchError, match=f"{speedups.ENV}="):
    speedups.enabled()
  assert not speedups.allowed("beam_crc", "apache-beam")  # never raises


def test_disable_reaches_child_processes(monkeypatch):
  monkeypatch.setenv(speedups.ENV, "1")  # restored afterwards
  speedups.disable()
  proc = _python("from mnist_tfx import speedups; print(speedups.enabled())")
  assert proc.stdout.strip() == "False"


def test_a_library_at_an_unchecked_version_steps_aside_once(monkeypatch, caplog):
  monkeypatch.setattr(speedups, "_said", {})
  monkeypatch.setattr(speedups, "installed_version", lambda name: "99.0.0")
  with caplog.at_level(logging.WARNING, logger="mnist_tfx.speedups"):
    assert not speedups.allowed("beam_crc", "apache-beam")
    assert not speedups.allowed("beam_crc", "apache-beam")
  lines = [r.getMessage() for r in caplog.records]
  assert lines == ["speed-up beam_crc stepped aside (checked against apache-beam "
                   "2.60.0, found 99.0.0); the library runs as shipped"]
  assert "beam_crc" in speedups.stepped_aside()


def test_the_locked_versions_are_the_checked_ones():
  for name in speedups.CHECKED:
    assert speedups.installed_version(name) in speedups.CHECKED[name], name


def test_beam_is_left_as_shipped_when_off(switched_off, monkeypatch):
  from mnist_tfx.speedups import beam
  monkeypatch.setattr(beam, "_installed", None)
  assert beam.install() == {"signatures": False, "tfrecord_crc": False}


def test_no_freeze_when_off(switched_off, monkeypatch):
  from mnist_tfx.speedups import gc_freeze
  monkeypatch.setattr(gc_freeze, "_done", False)
  before = gc.get_freeze_count(), gc.get_threshold()
  with gc_freeze.frozen_imports():
    assert gc.get_threshold() == before[1]  # full collections not paused
    leftover = [object() for _ in range(1000)]
  assert (gc.get_freeze_count(), gc.get_threshold()) == before
  del leftover


def test_no_malloc_settings_when_off(switched_off, monkeypatch):
  from mnist_tfx.speedups import malloc
  calls = []
  monkeypatch.setattr(malloc, "set_thresholds", lambda *a: calls.append(a) or True)
  with malloc.large_blocks_unpooled() as applied:
    assert applied is False
  assert calls == []


def test_tfmas_own_reader_when_off(switched_off):
  from tensorflow_model_analysis.metrics import metric_util
  from mnist_tfx.speedups import tfma_reader
  assert tfma_reader.reader() is metric_util.to_label_prediction_example_weight


def test_tfmas_own_reader_at_another_tfma_version(monkeypatch):
  from tensorflow_model_analysis.metrics import metric_util
  from mnist_tfx.speedups import tfma_reader
  monkeypatch.setattr(speedups, "_said", {})
  monkeypatch.setattr(speedups, "installed_version", lambda name: "0.48.0")
  assert tfma_reader.reader() is metric_util.to_label_prediction_example_weight
  monkeypatch.undo()
  assert tfma_reader.reader() is tfma_reader.label_prediction_weight


def test_the_public_call_when_off(switched_off):
  from mnist_tfx.speedups import tf_direct_call

  def never(fn, sample):
    raise AssertionError("not called when off")
  assert tf_direct_call.enable(object(), {"images": np.zeros((1, 784))}, never) is False


def test_tfx_imports_as_shipped_when_off():
  proc = _python("import sys, components; "
                 "print('tfx.v1.extensions' in sys.modules)", **{speedups.ENV: "0"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "False"  # no stand-in put in place
  proc = _python("import sys, components; "
                 "print('tfx.v1.extensions' in sys.modules)")
  assert proc.stdout.strip() == "True"  # the stand-in


def test_a_normal_exit_when_off():
  code = ("from mnist_tfx.speedups.fast_exit import end_process\n"
          "try:\n  end_process(3)\nexcept SystemExit as e:\n"
          "  print('normal exit', e.code)\n")
  off = _python(code, **{speedups.ENV: "0"})
  assert off.stdout.strip() == "normal exit 3"
  on = _python(code)
  assert on.returncode == 3 and on.stdout == ""  # ended without teardown


def test_the_cli_flag_turns_them_off_and_nonsense_is_a_usage_error(tmp_path):
  mnist_tfx = [sys.executable, "-m", "mnist_tfx"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop(speedups.ENV, None)
  bad = subprocess.run(mnist_tfx + ["runs", "--output-dir", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env=dict(env, **{speedups.ENV: "maybe"}))
  assert bad.returncode == 2
  assert bad.stderr.strip() == (f"mnist-tfx: {speedups.ENV}='maybe': expected 1 "
                                "(speed-ups on, the default) or 0 (off)")
  for command in ("run", "compile", "report", "runs", "lineage", "serve",
                  "predict", "download"):
    helped = subprocess.run(mnist_tfx + [command, "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120, env=env)
    assert "--no-speedups" in helped.stdout, command
