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
from typing import Any, Callable, Dict, Optional, TextIO

from pipeline.configs import PipelineConfig

PROGRESS_LOGGER = "mnist_tfx"  # our components log progress here
_RUNNING = "Component %s is running."
_FINISHED = "Component %s is finished."


class ProgressHandler(logging.Handler):
  """Turns LocalDagRunner's component start/finish records into progress lines."""

  def __init__(self, out: TextIO, start: float):
    super().__init__(logging.INFO)
    self._out, self._start = out, start
    self._began: Dict[str, float] = {}

  def emit(self, record: logging.LogRecord) -> None:
    now = time.monotonic()
    stamp = f"[{now - self._start:6.1f}s]"
    if record.msg == _RUNNING and record.args:
      node = str(record.args[0])
      self._began[node] = now
      self._write(f"{stamp} {node} ...")
    elif record.msg == _FINISHED and record.args:
      node = str(record.args[0])
      took = now - self._began.get(node, now)
      self._write(f"{stamp} {node} done in {took:.1f}s")
    elif (record.name.startswith(PROGRESS_LOGGER) and
          record.levelno < logging.WARNING):  # warnings: stderr (_OursOnly)
      self._write(f"{stamp}   {record.getMessage()}")

  def _write(self, line: str) -> None:
    self._out.write(line + "\n")
    self._out.flush()


class _OursOnly(logging.Filter):
  """The console's stderr shows our own warnings; the rest is in the log.

  A failure is reported once, as one line, by the caller: TFX's and Beam's
  error records (and their tracebacks) go to the run's log file only.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.name.startswith(PROGRESS_LOGGER) and
            record.levelno >= logging.WARNING)


def configure_logging(log_path: str, out: TextIO, start: float) -> Callable[[], None]:
  """Routes logs (file: all, stdout: progress, stderr: errors); returns undo."""
  import absl.logging  # pylint: disable=g-import-not-at-top
  # TF's SavedModel code saves and restores absl's verbosity around its
  # work; with absl at WARNING the restore silences the runner's INFO lines.
  absl.logging.set_verbosity(absl.logging.INFO)
  logging.captureWarnings(True)
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  file_handler = logging.FileHandler(log_path, encoding="utf-8")
  file_handler.setFormatter(logging.Formatter(
      "%(asctime)s %(levelname)s %(name)s: %(message)s"))
  progress = ProgressHandler(out, start)
  errors = logging.StreamHandler(sys.stderr)
  errors.addFilter(_OursOnly())
  root = logging.getLogger()
  previous = (root.level, list(root.handlers), absl.logging.get_verbosity())
  added = [file_handler, progress, errors]
  # Only ours: absl's handler (or one a library adds) would echo everything.
  root.handlers = list(added)
  root.setLevel(logging.INFO)

  def undo() -> None:
    root.setLevel(previous[0])
    root.handlers = previous[1]  # also drops handlers libraries added meanwhile
    absl.logging.set_verbosity(previous[2])
    for handler in added:
      handler.close()
    logging.captureWarnings(False)

  return undo


def run(config: PipelineConfig, data_dir: str, out: TextIO = sys.stdout,
        data_only: bool = False) -> Dict[str, Any]:
  """Runs the pipeline; returns (and writes) the summary.

  Raises OutputDirBusy (another run holds the output dir), DiskFull (not
  even the lock could be written), PipelineFailed and RunInterrupted (both
  carry the summary, which is written). `data_only` runs ExampleGen to
  Transform only (see create_pipeline).
  """
  from pipeline import summary, workspace  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  stamp = time.strftime("%Y%m%d-%H%M%S")
  log_path = os.path.join(config.local_dir, "logs", f"run-{stamp}.log")

  def finish(status: str, error: Optional[BaseException] = None,
             read_metadata: bool = True) -> Dict[str, Any]:
    result = summary.build(config, data_dir, time.monotonic() - start, error,
                           log_path, status=status, read_metadata=read_metadata)
    try:
      summary.write(result, config.summary_uri)
    except OSError as e:  # e.g. the disk is full: say so, keep the result
      result.setdefault("error", summary.describe_failure(e, None, config.local_dir))
      result["summary_not_written"] = summary.describe_failure(
          e, None, config.local_dir)
    return result

  with workspace.exclusive(config):
    undo = configure_logging(log_path, out, start)
    out.write(f"mnist-tfx: running the pipeline; full log: {log_path}\n")
    out.flush()
    error: Optional[BaseException] = None
    try:
      try:
        progress = logging.getLogger(PROGRESS_LOGGER)
        for line in workspace.recover(config, "its run died; found by the run "
                                      f"of {stamp}"):
          progress.warning("%s", line)
        finish("running", read_metadata=False)
        from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
        from components.example_gen import fingerprint  # pylint: disable=g-import-not-at-top
        from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top
        progress.info("imports done (%.1fs)", time.monotonic() - start)
        dag = create_pipeline(config, data_dir, fingerprint(data_dir),
                              data_only=data_only)
        tfx.orchestration.LocalDagRunner().run(dag)
      except KeyboardInterrupt:
        logging.warning("interrupted", exc_info=True)
        # Still under the lock: what this run left RUNNING is closed now.
        workspace.close_interrupted(config, summary.INTERRUPTED)
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
