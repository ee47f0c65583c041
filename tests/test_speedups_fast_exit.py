"""mnist_tfx.speedups.fast_exit: a prompt exit that loses nothing a normal one keeps."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(body: str, tmp_path) -> subprocess.CompletedProcess:
  script = tmp_path / "script.py"
  script.write_text(textwrap.dedent(f"""
      import atexit, sys, threading, time
      from mnist_tfx.speedups.fast_exit import end_process
      marker = {str(tmp_path / "marker")!r}
      def handler():
        with open(marker, "a") as f:
          f.write("handler\\n")
      atexit.register(handler)
  """) + textwrap.dedent(body))
  return subprocess.run([sys.executable, str(script)], capture_output=True,
                        text=True, cwd=ROOT, timeout=60,
                        env=dict(os.environ, PYTHONPATH=ROOT))


def _marker(tmp_path) -> str:
  path = tmp_path / "marker"
  return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("code,expected", [(0, 0), (None, 0), (3, 3), (130, 130)])
def test_exit_code_handlers_and_buffered_output_are_kept(tmp_path, code, expected):
  # 1 MB through a pipe is more than any buffer: all of it must arrive.
  proc = _run(f"""
      sys.stdout.write("x" * 1_000_000)
      sys.stderr.write("the end")
      end_process({code!r})
      sys.stdout.write("not reached")
  """, tmp_path)
  assert proc.returncode == expected
  assert proc.stdout == "x" * 1_000_000
  assert proc.stderr.endswith("the end")
  assert _marker(tmp_path) == "handler\n"  # once, not twice


def test_a_running_thread_is_waited_for_as_in_a_normal_exit(tmp_path):
  proc = _run("""
      def work():
        time.sleep(0.5)
        with open(marker, "a") as f:
          f.write("thread\\n")
      threading.Thread(target=work).start()
      end_process(4)
  """, tmp_path)
  assert proc.returncode == 4
  assert _marker(tmp_path) == "thread\nhandler\n"


def test_a_message_exits_as_sys_exit_does(tmp_path):
  proc = _run("""
      end_process("mnist-tfx: a message")
  """, tmp_path)
  assert proc.returncode == 1
  assert "mnist-tfx: a message" in proc.stderr
  assert _marker(tmp_path) == "handler\n"


def test_a_failing_handler_is_reported_and_the_code_kept(tmp_path):
  proc = _run("""
      def broken():
        raise RuntimeError("handler failed")
      atexit.register(broken)
      end_process(0)
  """, tmp_path)
  assert proc.returncode == 0
  assert "handler failed" in proc.stderr
  assert _marker(tmp_path) == "handler\n"  # the others still ran


def test_the_command_line_ends_through_it(tmp_path):
  # `python -m mnist_tfx` with end_process wrapped to say it was called.
  proc = _run(f"""
      import runpy
      import mnist_tfx.speedups.fast_exit as process_exit
      real = process_exit.end_process
      def spy(code):
        print("end_process", code)
        real(code)
      process_exit.end_process = spy
      sys.argv = ["mnist-tfx", "report", "--run-dir", {str(tmp_path / "none")!r}]
      runpy.run_module("mnist_tfx", run_name="__main__")
  """, tmp_path)
  assert proc.returncode == 1  # no run there: the report's own exit code
  assert proc.stdout.strip().endswith("end_process 1")
  assert "does not exist" in proc.stderr
  with open(os.path.join(ROOT, "setup.py")) as f:  # the installed command too
    assert "mnist-tfx = mnist_tfx.cli:entry" in f.read()
