"""Beam's portable job API without Java or Docker: the path Flink, Spark and
Dataflow take, run here with Beam's own Python job service.

`JobService` starts, as processes it owns, Beam's Python job service and,
for EXTERNAL environments, an SDK worker pool, both on loopback, and gives
the `--beam-arg`s that send the pipeline's Beam work through them:
- LOOPBACK: the job service runs the SDK harness back in the submitting
  process (what `PortableRunner` users start with);
- EXTERNAL: the SDK harness runs in worker processes the pool starts, as it
  would on a cluster's nodes.

`python -m pipeline.portable_beam worker-pool --port N` is the worker pool,
bound to 127.0.0.1 (Beam's own `worker_pool_main` binds every interface) and
starting its workers with this interpreter (Beam's runs whatever `python`
is first on PATH, which outside the venv has no Beam: the job then hangs).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from typing import List, Optional

ENVIRONMENTS = ("LOOPBACK", "EXTERNAL")
_READY_SECONDS = 120.0


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, what: str) -> None:
  deadline = time.monotonic() + _READY_SECONDS
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"the {what} exited with {proc.returncode} before "
                         f"listening on 127.0.0.1:{port}")
    with socket.socket() as s:
      if s.connect_ex(("127.0.0.1", port)) == 0:
        return
    time.sleep(0.2)
  raise RuntimeError(f"the {what} did not listen on 127.0.0.1:{port} within "
                     f"{_READY_SECONDS:.0f} s")


def _env() -> dict:
  """This interpreter's bin first on PATH: what Beam's workers will run."""
  return dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep +
              os.environ.get("PATH", ""))


class JobService:
  """Beam's Python job service (and a worker pool) as owned processes.

  Use as a context manager; both are stopped on exit, even on error.
  """

  def __init__(self, environment: str = "LOOPBACK", log_dir: Optional[str] = None):
    if environment not in ENVIRONMENTS:
      raise ValueError(f"environment must be one of {ENVIRONMENTS}, not "
                       f"{environment!r}")
    self.environment = environment
    self.log_dir = log_dir
    self.job_port = free_port()
    self.worker_port = free_port() if environment == "EXTERNAL" else None
    self._procs: List[subprocess.Popen] = []

  def _start(self, argv: List[str], name: str) -> subprocess.Popen:
    log = (open(os.path.join(self.log_dir, f"{name}.log"), "wb")
           if self.log_dir else subprocess.DEVNULL)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            env=_env(), start_new_session=True)
    if self.log_dir:
      log.close()
    self._procs.append(proc)
    return proc

  def __enter__(self) -> "JobService":
    try:
      job = self._start([sys.executable, "-m",
                         "apache_beam.runners.portability.local_job_service_main",
                         "--port", str(self.job_port)], "job_service")
      _wait_for_port(self.job_port, job, "Beam job service")
      if self.worker_port:
        pool = self._start([sys.executable, "-m", "pipeline.portable_beam",
                            "worker-pool", "--port", str(self.worker_port)],
                           "worker_pool")
        _wait_for_port(self.worker_port, pool, "SDK worker pool")
    except BaseException:
      self.stop()
      raise
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  def stop(self) -> None:
    for proc in reversed(self._procs):
      if proc.poll() is None:
        proc.terminate()
        try:
          proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait()
    self._procs.clear()

  @property
  def beam_args(self) -> List[str]:
    """Pipeline options that submit Beam work to this service."""
    args = ["--runner=PortableRunner",
            f"--job_endpoint=127.0.0.1:{self.job_port}",
            f"--environment_type={self.environment}"]
    if self.worker_port:
      args.append(f"--environment_config=127.0.0.1:{self.worker_port}")
    return args


def worker_pool(port: int) -> None:
  """Serves Beam's SDK worker pool on 127.0.0.1:`port` until terminated."""
  import atexit  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top

  import grpc  # pylint: disable=g-import-not-at-top
  from apache_beam.portability.api import beam_fn_api_pb2_grpc  # pylint: disable=g-import-not-at-top
  from apache_beam.runners.worker import worker_pool_main  # pylint: disable=g-import-not-at-top
  from apache_beam.utils import thread_pool_executor  # pylint: disable=g-import-not-at-top

  os.environ.update(_env())
  pool = worker_pool_main.BeamFnExternalWorkerPoolServicer(use_process=True)
  server = grpc.server(thread_pool_executor.shared_unbounded_instance())
  beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
  if not server.add_insecure_port(f"127.0.0.1:{port}"):
    raise SystemExit(f"cannot listen on 127.0.0.1:{port}")

  def stop_workers():
    for proc in list(pool._worker_processes.values()):  # pylint: disable=protected-access
      worker_pool_main.kill_process_gracefully(proc)
  atexit.register(stop_workers)
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
  server.start()
  server.wait_for_termination()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m pipeline.portable_beam")
  sub = parser.add_subparsers(dest="command", required=True)
  pool = sub.add_parser("worker-pool", help="Beam's SDK worker pool on loopback")
  pool.add_argument("--port", type=int, required=True)
  args = parser.parse_args(argv)
  worker_pool(args.port)
  return 0


if __name__ == "__main__":
  sys.exit(main())
