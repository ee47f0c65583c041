"""Every bad command line in the corpus (tests/bad_inputs.py CLI), run as a
user runs it, in a process of its own: the documented exit code, one clear
line on stderr, no traceback, and (for bad arguments) no TensorFlow import.
"""

import os
import subprocess
import sys

import pytest

from tests import bad_inputs

_PROBE = """
import sys
from mnist_tfx import cli
try:
  code = cli.main(sys.argv[1:])
except SystemExit as e:
  code = e.code
print("tensorflow imported:", "tensorflow" in sys.modules)
sys.exit(code)
"""
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Cases that must reach the network layer or the compiler before they can fail.
_IMPORTS_ALLOWED = {"serve-host-invalid"}


@pytest.mark.parametrize("case", bad_inputs.CLI, ids=[c[0] for c in bad_inputs.CLI])
def test_bad_command_line(tmp_path, case):
  name, argv, config, code, words = case
  config_path = tmp_path / "config.json"
  if config is not None:
    config_path.write_text(config)
  (tmp_path / "a_file").write_text("not a folder")
  argv = [a.format(tmp=tmp_path, config=config_path, file=tmp_path / "a_file")
          for a in argv]
  env = dict(os.environ, PYTHONPATH=_ROOT)
  proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == code, proc.stderr
  assert words in proc.stderr, proc.stderr
  assert "Traceback" not in proc.stderr + proc.stdout
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr
  if name not in _IMPORTS_ALLOWED:
    assert "tensorflow imported: False" in proc.stdout


def test_a_refused_run_replaces_a_stale_summary(tmp_path):
  """A run that cannot start says so in summary.json, not the last success."""
  import json
  out = tmp_path / "out"
  out.mkdir()
  (out / "summary.json").write_text(json.dumps({"status": "succeeded"}))
  env = dict(os.environ, PYTHONPATH=_ROOT)
  proc = subprocess.run(
      [sys.executable, "-c", _PROBE, "run", "--data-dir", str(tmp_path / "nope"),
       "--output-dir", str(out)], cwd=tmp_path, capture_output=True, text=True,
      timeout=120, env=env)
  assert proc.returncode == 2
  summary = json.loads((out / "summary.json").read_text())
  assert summary["status"] == "failed" and "is not a directory" in summary["error"]
