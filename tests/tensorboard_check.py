"""TensorBoard started exactly as the report tells a user, read back over HTTP."""

import os
import shlex
import socket
import subprocess
import time
from typing import Dict

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def scalar_tags(command: str, timeout: float = 120) -> Dict[str, Dict]:
  """Runs `command` (the report's line) from the checkout on a free port and
  returns `/data/plugin/scalars/tags` once its runs are loaded."""
  port = _free_port()
  proc = subprocess.Popen(shlex.split(command) + ["--port", str(port)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if proc.poll() is not None:
        raise AssertionError(f"{command} exited {proc.returncode}: "
                             f"{proc.stdout.read()[-3000:]}")
      try:
        tags = httpx.get(f"http://127.0.0.1:{port}/data/plugin/scalars/tags",
                         timeout=5).json()
        if tags:
          return tags
      except (httpx.HTTPError, ValueError):
        pass
      time.sleep(0.5)
    raise AssertionError(f"{command}: no scalars within {timeout} s")
  finally:
    proc.terminate()
    proc.wait(30)
