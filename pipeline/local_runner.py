"""Runs the pipeline locally (LocalDagRunner) with progress and a run summary.

While it runs: one line when a component starts and one when it ends, with
its time, plus the Trainer's epochs. Every log record at INFO and above goes
to `<output_dir>/logs/run-<time>.log`, so nothing is lost. At the end: a
short summary on stdout and the same facts in `<output_dir>/summary.json`.
"""

import logging
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, TextIO

from mnist_tfx import interrupts, speedups
from mnist_tfx.speedups import gc_freeze
from pipeline.configs import PipelineConfig, masked, secrets

PROGRESS_LOGGER = "mnist_tfx"  # our components log progress here
_RUNNING = "Component %s is running."
_FINISHED = "Component %s is finished."
_CACHED = "A cached execution %d is used."
_NEW = "Going to run a new execution %d"  # TFX's launcher, with the id


class ProgressHandler(logging.Handler):
  """Turns LocalDagRunner's component start/finish records into progress lines."""

  def __init__(self, out: TextIO, start: float):
    super().__init__(logging.INFO)
    self._out, self._start = out, start
    self._began: Dict[str, float] = {}
    self._cached = False
    self.executions: List[int] = []  # this run's, in ML Metadata

  def emit(self, record: logging.LogRecord) -> None:
    if record.msg in (_CACHED, _NEW) and record.args:
      self.executions.append(int(record.args[0]))
    now = time.monotonic()
    stamp = f"[{now - self._start:6.1f}s]"
    if record.msg == _RUNNING and record.args:
      node = str(record.args[0])
      self._began[node] = now
      self._cached = False
      self._write(f"{stamp} {node} ...")
    elif record.msg == _CACHED:
      self._cached = True  # between the node's running and finished lines
    elif record.msg == _FINISHED and record.args:
      node = str(record.args[0])
      took = now - self._began.get(node, now)
      self._write(f"{stamp} {node} " + ("cached" if self._cached
                                         else f"done in {took:.1f}s"))
    elif (record.name.startswith(PROGRESS_LOGGER) and
          record.levelno < logging.WARNING):  # warnings: stderr (_OursOnly)
      self._write(f"{stamp}   {record.getMessage()}")

  def _write(self, line: str) -> None:
    self._out.write(line + "\n")
    self._out.flush()


class _Masking(logging.Filter):
  """Every record as it would print, with the run's secrets as ***: TFX logs
  its ML Metadata connection config, password included."""

  def __init__(self, hidden: List[str]):
    super().__init__()
    self._hidden = hidden

  def filter(self, record: logging.LogRecord) -> bool:
    text = record.getMessage()
    clean = masked(text, self._hidden)
    if clean != text:
      record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:  # a traceback, masked once
      record.exc_text = masked(logging.Formatter().formatException(record.exc_info),
                               self._hidden)
    return True


class _OursOnly(logging.Filter):
  """The console's stderr shows our own warnings; the rest is in the log.

  A failure is reported once, as one line, by the caller: TFX's and Beam's
  error records (and their tracebacks) go to the run's log file only.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.name.startswith(PROGRESS_LOGGER) and
            record.levelno >= logging.WARNING)


def configure_logging(log_path: str, out: TextIO, start: float,
                      hidden: List[str] = ()) -> Callable[[], None]:
  """Routes logs (file: all, stdout: progress, stderr: errors); returns undo.

  The log file is the owner's alone (it may name database hosts and users),
  and no handler writes a string of `hidden`.
  """
  import absl.logging  # pylint: disable=g-import-not-at-top
  # TF's SavedModel code saves and restores absl's verbosity around its
  # work; with absl at WARNING the restore silences the runner's INFO lines.
  absl.logging.set_verbosity(absl.logging.INFO)
  logging.captureWarnings(True)
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT, 0o600))
  os.chmod(log_path, 0o600)
  file_handler = logging.FileHandler(log_path, encoding="utf-8")
  file_handler.setFormatter(logging.Formatter(
      "%(asctime)s %(levelname)s %(name)s: %(message)s"))
  progress = ProgressHandler(out, start)
  errors = logging.StreamHandler(sys.stderr)
  errors.addFilter(_OursOnly())
  root = logging.getLogger()
  previous = (root.level, list(root.handlers), absl.logging.get_verbosity())
  added = [file_handler, progress, errors]
  if hidden:
    for handler in added:
      handler.addFilter(_Masking(list(hidden)))
  # Only ours: absl's handler (or one a library adds) would echo everything.
  root.handlers = list(added)
  root.setLevel(logging.INFO)

  def undo() -> None:
    """Puts logging back as it was; `undo.executions` is the run's."""
    root.setLevel(previous[0])
    root.handlers = previous[1]  # also drops handlers libraries added meanwhile
    absl.logging.set_verbosity(previous[2])
    for handler in added:
      handler.close()
    logging.captureWarnings(False)

  undo.executions = progress.executions
  return undo


# Beam options that tell a runner how workers get the job's Python code.
_DEPENDENCY_FLAGS = ("--extra_package", "--extra_packages", "--setup_file",
                     "--requirements_file", "--sdk_container_image",
                     "--worker_harness_container_image")


def with_dependencies(beam_args: List[str]) -> List[str]:
  """Beam args that ship this project to workers, unless they already say how.

  Workers need our components, not just TFX; and without such a flag every
  Beam component builds an sdist of the whole installed TFX package first
  (~1.4 s each, four per run), even for the in-process DirectRunner.
  """
  if any(a.split("=", 1)[0] in _DEPENDENCY_FLAGS for a in beam_args):
    return list(beam_args)
  setup_py = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), "setup.py")
  if not os.path.exists(setup_py):  # installed as a wheel: rely on the image
    return list(beam_args)
  return list(beam_args) + [f"--setup_file={setup_py}"]


def metadata_connection(config: PipelineConfig):
  """TFX's connection config: the SQLite file, or the MySQL/MariaDB store."""
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  if config.shared_metadata:
    from pipeline.configs import mysql_parts  # pylint: disable=g-import-not-at-top
    p = mysql_parts(config.metadata_server)
    return tfx.orchestration.metadata.mysql_metadata_connection_config(
        host=p["host"], port=p["port"], database=p["database"],
        username=p["user"], password=p["password"])
  return tfx.orchestration.metadata.sqlite_metadata_connection_config(
      config.metadata_uri)


def specifics(config: PipelineConfig, data_dir: str):
  """What the local run puts into the DAG: SQLite ML Metadata, a resolver
  that skips the candidate (so a rerun is fully cached), our Beam args, and
  what the bounds depend on: the test split's size and the simpler model's
  last blessed accuracy in the store."""
  from components import baseline  # pylint: disable=g-import-not-at-top
  from components.example_gen import fingerprint, test_records  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import RunnerSpecifics  # pylint: disable=g-import-not-at-top
  return RunnerSpecifics(
      baseline=baseline.resolver_skipping_candidate,
      beam_pipeline_args=with_dependencies(config.beam_args),
      metadata_connection_config=metadata_connection(config),
      data_fingerprint=fingerprint(data_dir),
      test_records=test_records(data_dir),
      simpler_accuracy=simpler_accuracy(config))


def simpler_accuracy(config: PipelineConfig) -> Optional[float]:
  """The `basic` model's last blessed accuracy in the store (None: no such
  run, no store yet, or the candidate is `basic` itself)."""
  from pipeline.pipeline import SIMPLER_MODEL  # pylint: disable=g-import-not-at-top
  if config.hyperparameters.model == SIMPLER_MODEL or not config.metadata_exists:
    return None
  from results import lineage, metadata  # pylint: disable=g-import-not-at-top
  found = lineage.last_blessed_accuracy(metadata.open_store(config.metadata_uri),
                                        SIMPLER_MODEL)
  return found[0] if found else None


def run(config: PipelineConfig, data_dir: str, out: TextIO = sys.stdout,
        data_only: bool = False) -> Dict[str, Any]:
  """Runs the pipeline; returns (and writes) the summary.

  Raises OutputDirBusy (another run holds the output dir), DiskFull (not
  even the lock could be written), PipelineFailed and RunInterrupted (both
  carry the summary, which is written). `data_only` runs ExampleGen to
  Transform only (see create_pipeline).
  """
  from pipeline import workspace
  from results import summary  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  stamp = time.strftime("%Y%m%d-%H%M%S")
  log_path = os.path.join(config.local_dir, "logs", f"run-{stamp}.log")
  hidden = secrets(config)

  def finish(status: str, error: Optional[BaseException] = None,
             read_metadata: bool = True) -> Dict[str, Any]:
    result = masked(summary.build(config, data_dir, time.monotonic() - start,
                                  error, log_path, status=status,
                                  read_metadata=read_metadata,
                                  own_executions=undo.executions), hidden)
    try:
      summary.write(result, config.summary_uri)
    except OSError as e:  # e.g. the disk is full: say so, keep the result
      result.setdefault("error", summary.describe_failure(e, None, config.local_dir))
      result["summary_not_written"] = summary.describe_failure(
          e, None, config.local_dir)
    return result

  with workspace.exclusive(config):
    undo = configure_logging(log_path, out, start, hidden)
    out.write(f"mnist-tfx: running the pipeline; full log: {log_path}\n")
    out.flush()
    error: Optional[BaseException] = None
    stop = interrupts.StopSignals()
    try:
      try:
        progress = logging.getLogger(PROGRESS_LOGGER)
        for line in workspace.recover(config, "its run died; found by the run "
                                      f"of {stamp}"):
          progress.warning("%s", line)
        finish("running", read_metadata=False)
        with gc_freeze.frozen_imports():  # TF, Beam, TFX: kept, not walked
          from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
          from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top
        from mnist_tfx.speedups import beam  # pylint: disable=g-import-not-at-top
        if speedups.enabled():
          logging.info("Beam speed-ups in place: %s", beam.install())
        else:
          logging.info("speed-ups off (%s=0): libraries run as shipped", speedups.ENV)
        progress.info("imports done (%.1fs)", time.monotonic() - start)
        dag = create_pipeline(config, data_dir, specifics(config, data_dir),
                              data_only=data_only)
        with stop:  # Ctrl-C stops it, even if dropped
          tfx.orchestration.LocalDagRunner().run(dag)
      except KeyboardInterrupt:
        logging.warning("interrupted", exc_info=True)
        # Still under the lock: what this run left RUNNING is closed now, and
        # what failed once the stop was asked (TensorFlow can turn the
        # interrupt into another error, and TFX records that as a failure).
        workspace.close_interrupted(config, summary.INTERRUPTED,
                                    failed_since=stop.asked_at)
        result = finish("interrupted")
        raise RunInterrupted(result) from None
      except Exception as e:  # pylint: disable=broad-except
        error = e
        logging.exception("pipeline failed")
      # Still inside our logging set-up: MLMD's INFO chatter goes to the file.
      result = finish("failed" if error else "succeeded", error)
    finally:
      undo()
  if error is not None:
    raise PipelineFailed(result) from error
  return result


class PipelineFailed(RuntimeError):
  """The run failed; `summary` says where and why."""

  def __init__(self, summary: Dict[str, Any]):
    super().__init__(summary.get("error", "pipeline failed"))
    self.summary = summary


class RunInterrupted(PipelineFailed):
  """SIGINT or SIGTERM stopped the run; its summary says `interrupted`."""
