"""The terminal a command prints to may go away; the command carries on.

A run piped into `head`, or started in a terminal that is then closed, would
otherwise die at its next progress line (BrokenPipeError, or EIO after a
hang-up) and leave ML Metadata and its summary half-written. `Tolerant`
wraps a stream: the first write that finds it gone points the descriptor
at /dev/null, so later writes (and the interpreter's own flush at exit)
succeed, and the run goes on; everything is in its log file anyway.
"""

import errno
import io
import os
from typing import Any, TextIO

# What a write to a reader that has gone raises.
_GONE = (errno.EPIPE, errno.EIO, errno.ECONNRESET, errno.EBADF, errno.ENXIO)


def _gone(e: BaseException) -> bool:
  return isinstance(e, ValueError) or (isinstance(e, OSError) and e.errno in _GONE)


class Tolerant(io.TextIOBase):
  """A text stream whose reader may leave: writes after that are dropped."""

  def __init__(self, stream: TextIO):
    super().__init__()
    self._stream = stream
    self.lost = False

  def write(self, text: str) -> int:
    if not self.lost:
      try:
        return self._stream.write(text)
      except (OSError, ValueError) as e:
        if not _gone(e):
          raise
        self._lose()
    return len(text)

  def flush(self) -> None:
    if not self.lost:
      try:
        self._stream.flush()
      except (OSError, ValueError) as e:
        if not _gone(e):
          raise
        self._lose()

  def _lose(self) -> None:
    self.lost = True
    try:
      null = os.open(os.devnull, os.O_WRONLY)
      try:
        os.dup2(null, self._stream.fileno())
      finally:
        os.close(null)
    except (OSError, ValueError, io.UnsupportedOperation):
      pass  # not a file descriptor: nothing else will write to it

  def writable(self) -> bool:
    return True

  def isatty(self) -> bool:
    return not self.lost and self._stream.isatty()

  def fileno(self) -> int:
    return self._stream.fileno()

  def __getattr__(self, name: str) -> Any:
    return getattr(self._stream, name)
