"""The run's logging: secrets masked in every record and traceback, the log
file its owner's alone, the executions TFX starts collected."""

import io
import logging
import os
import time

from pipeline import local_runner


def test_no_handler_writes_a_secret_and_the_log_is_the_owners(tmp_path):
  log_path = str(tmp_path / "logs" / "run.log")
  out = io.StringIO()
  undo = local_runner.configure_logging(log_path, out, time.monotonic(), ["s3cret"])
  try:
    logging.getLogger("tfx").info("Using connection config: password: %s", "s3cret")
    try:
      raise RuntimeError("cannot connect with s3cret")
    except RuntimeError:
      logging.getLogger("mnist_tfx").warning("failed", exc_info=True)
    logging.getLogger("absl").info(local_runner._NEW, 41)  # pylint: disable=protected-access
    logging.getLogger("absl").info(local_runner._CACHED, 42)  # pylint: disable=protected-access
    executions = list(undo.executions)
  finally:
    undo()
  with open(log_path, encoding="utf-8") as f:
    text = f.read()
  assert "s3cret" not in text and "password: ***" in text
  assert "cannot connect with ***" in text  # the traceback too
  assert os.stat(log_path).st_mode & 0o077 == 0
  assert "s3cret" not in out.getvalue()
  assert executions == [41, 42]
