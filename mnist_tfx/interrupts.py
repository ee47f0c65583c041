"""Ctrl-C and SIGTERM that stop a run even where a library swallows them.

Python delivers a signal by raising KeyboardInterrupt wherever the main
thread happens to be. Inside a `__del__`, a weakref or garbage-collector
callback, the exception is printed as "Exception ignored" and dropped; inside
a library's bare `except:` (Keras has several on its training path) it is
dropped silently. Either way the run would go on as if the signal never
came. `StopSignals` raises it again until the run has it: at once when
Python reports it dropped, `retry` seconds after the last one otherwise,
until the `with` block is left; and a block that ends after a stop was
asked for ends with KeyboardInterrupt, whatever it returned or raised.
"""

import _thread
import signal
import sys
import threading
import time
from typing import Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RETRY_SECONDS = 2.0  # time for the first interrupt to unwind to the run's handler


def ignored(signum: int) -> bool:
  """Whether the process was started ignoring `signum`: then it stays so.

  A shell starts a script's background commands with SIGINT ignored, so
  that Ctrl-C meant for the foreground one does not stop them; Python keeps
  that, and so do we.
  """
  return signal.getsignal(signum) == signal.SIG_IGN


class StopSignals:
  """Within it, SIGINT and SIGTERM raise KeyboardInterrupt until it is left.

  Leaving the block (the interrupt reached the code around it, or the work
  ended) stops the repeats; the previous handlers are back, so a further
  signal during the caller's cleanup interrupts it as before. A signal the
  process was started ignoring stays ignored (see `ignored`). Off the main
  thread, where Python cannot handle signals, it does nothing.

  The handler runs in the main thread between any two bytecodes, so it takes
  no lock; repeats are raised from a watcher thread, one at a time.
  """

  def __init__(self, retry: float = RETRY_SECONDS):
    self._retry = retry
    self._lock = threading.Lock()  # the watcher's check-then-raise vs leaving
    self._signum: Optional[int] = None  # the signal to raise again
    self.asked_at: Optional[float] = None  # time.time() of the first stop signal
    self._raised_at = 0.0  # time.monotonic() of the last KeyboardInterrupt
    self._repeat_pending = False  # raised by the watcher, not yet handled
    self._left = False
    self._dropped = threading.Event()  # Python reported the interrupt dropped
    self._previous = {}
    self._previous_hook = None
    self._watcher: Optional[threading.Thread] = None

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is not threading.main_thread():
      return self
    self._watcher = threading.Thread(target=self._watch, daemon=True,
                                     name="mnist-tfx-stop-signals")
    self._watcher.start()
    self._previous_hook = sys.unraisablehook
    sys.unraisablehook = self._unraisable
    for signum in SIGNALS:
      if not ignored(signum):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, exc_type, exc_value, traceback) -> None:
    del traceback
    if self._watcher is None:
      return
    signalled = False
    while True:  # a signal may interrupt the restoring itself: finish it
      try:
        self._restore()
        break
      except KeyboardInterrupt:
        signalled = True
    stopped = signalled or self._signum is not None
    if stopped and not (exc_type is not None
                        and issubclass(exc_type, KeyboardInterrupt)):
      # Asked to stop, the block ended otherwise: it lost the interrupt (or
      # failed because of it); the caller still learns the run was stopped.
      raise KeyboardInterrupt from exc_value

  def _restore(self) -> None:
    """Idempotent: ends the repeats, puts the previous handlers back."""
    with self._lock:
      self._left = True
    self._dropped.set()
    self._watcher.join()
    if sys.unraisablehook == self._unraisable:
      sys.unraisablehook = self._previous_hook
    for signum, handler in self._previous.items():
      # Python first runs what is pending: a repeat of ours (ignored now) or
      # a signal that just came (raised, and __exit__ runs this again).
      if signal.getsignal(signum) != handler:
        signal.signal(signum, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    if self._repeat_pending:
      self._repeat_pending = False
      if self._left:
        return  # a repeat that arrived after the block was left
    self._signum = signum
    self._raised_at = time.monotonic()
    if self.asked_at is None:
      self.asked_at = time.time()
    raise KeyboardInterrupt

  def _unraisable(self, unraisable) -> None:
    """Python dropped an exception: if it was the interrupt, raise it again."""
    self._previous_hook(unraisable)
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
      self._dropped.set()  # the watcher raises it, outside this hook

  def _watch(self) -> None:
    while not self._left:
      dropped = self._dropped.wait(self._retry / 8)
      self._dropped.clear()
      with self._lock:
        if (self._left or self._signum is None or self._repeat_pending
            or (not dropped and
                time.monotonic() - self._raised_at < self._retry)):
          continue  # left, none asked for, one on its way, or too early
        self._repeat_pending = True
        _thread.interrupt_main(self._signum)
