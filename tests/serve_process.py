"""`mnist-tfx serve` in a process of its own, as a user starts it."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional

import httpx

from serving.server import announced_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Served:
  """A running server: its process, what it printed, its REST and gRPC ports."""

  def __init__(self, proc: subprocess.Popen, lines: List[str]):
    self.proc, self.lines = proc, lines
    text = "\n".join(lines)
    self.text = text
    self.rest, self.grpc = announced_ports(text)

  def post(self, path: str, body: Dict) -> httpx.Response:
    """POST to the REST API; retried while uvicorn starts serving its socket."""
    for _ in range(100):
      try:
        return httpx.post(f"http://127.0.0.1:{self.rest}{path}", json=body,
                          timeout=30)
      except httpx.HTTPError:
        time.sleep(0.1)
    raise AssertionError(f"no answer from REST port {self.rest}")


@contextlib.contextmanager
def serving(base: Optional[str], *flags: str, env: Dict[str, str] = None) -> Iterator[Served]:
  """Starts the server on free ports (on `base`, or as `flags` say, e.g. a
  --model-config-file), yields once both APIs listen, and stops it with
  SIGTERM afterwards (asserting it exits 0)."""
  where = ["--model-base-path", base] if base is not None else []
  proc = subprocess.Popen(
      [sys.executable, "-m", "mnist_tfx", "serve", *where,
       "--rest-port", "0", "--grpc-port", "0", *flags], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))
  try:
    lines: List[str] = []
    deadline = time.monotonic() + 120
    while (not any(l.startswith("gRPC:") for l in lines)
           and time.monotonic() < deadline):
      line = proc.stdout.readline()
      if not line:
        break
      lines.append(line.strip())
    assert any(l.startswith("gRPC:") for l in lines), (lines, proc.stderr.read()[-2000:]
                                                        if proc.poll() is not None else "")
    yield Served(proc, lines)
  finally:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
  assert code == 0, proc.stderr.read()[-2000:]


def push_tiny_model(tft_output, root, name: str = "mnist"):
  """An untrained model of the registry pushed under `root`/`name`:
  (its base path, its version)."""
  from components import pusher  # pylint: disable=g-import-not-at-top
  from components.models import Hyperparameters, build_model  # pylint: disable=g-import-not-at-top
  from components.trainer import export  # pylint: disable=g-import-not-at-top
  model_dir = os.path.join(str(root), "model")
  export.export(build_model(Hyperparameters(), 10), tft_output, model_dir)
  base = os.path.join(str(root), name)
  return base, int(os.path.basename(pusher.push(model_dir, base, {})))
