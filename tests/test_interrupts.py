"""StopSignals: an interrupt that a library drops still stops the block."""

import os
import signal
import sys
import threading
import time

import pytest

from mnist_tfx.interrupts import StopSignals, ignored


@pytest.fixture(autouse=True)
def _signals_as_in_a_terminal():
  """SIGINT as Python sets it up in a terminal, even where the tests run
  with it ignored; SIGTERM at its default. Restored after each test."""
  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  signal.signal(signal.SIGINT, signal.default_int_handler)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  yield
  for signum, handler in previous.items():
    signal.signal(signum, handler)


def _signal(signum):
  os.kill(os.getpid(), signum)
  time.sleep(5)  # the handler raises during the sleep


def _signal_and_drop(signum):
  """What a library's bare `except:` does to an interrupt that lands in it."""
  try:
    _signal(signum)
  except BaseException:  # pylint: disable=broad-except
    pass


class _DropsInDel:
  """An interrupt that lands in `__del__` is printed and dropped by Python."""

  def __del__(self):
    _signal(signal.SIGINT)


def _work_on(seconds):
  """Python code running on, as a Trainer's epochs do; True if it finished."""
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    time.sleep(0.01)
  return True


def _stopper_threads():
  return [t for t in threading.enumerate() if t.name == "mnist-tfx-stop-signals"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_a_library_drops_is_raised_again(signum):
  finished = False
  start = time.monotonic()
  with pytest.raises(KeyboardInterrupt):
    with StopSignals(retry=0.3):
      _signal_and_drop(signum)
      finished = _work_on(10)
  assert not finished  # without the repeat, the work would go on to its end
  assert time.monotonic() - start < 5


def test_an_interrupt_dropped_in_a_finalizer_is_raised_again_at_once(monkeypatch):
  reported = []
  monkeypatch.setattr(sys, "unraisablehook", reported.append)
  finished = False
  start = time.monotonic()
  with pytest.raises(KeyboardInterrupt):
    with StopSignals(retry=60):  # not the timer: Python's report of the drop
      _DropsInDel()  # collected at once
      finished = _work_on(10)
  assert not finished
  assert time.monotonic() - start < 5
  # Still reported as Python would; the hook is the caller's again.
  assert [type(r.exc_value) for r in reported] == [KeyboardInterrupt]
  assert sys.unraisablehook == reported.append


def test_a_block_that_ends_after_a_dropped_interrupt_ends_interrupted():
  with pytest.raises(KeyboardInterrupt):
    with StopSignals(retry=60):
      _signal_and_drop(signal.SIGINT)  # and nothing else runs after it


def test_a_failure_after_the_interrupt_is_reported_as_the_interrupt():
  with pytest.raises(KeyboardInterrupt) as raised:
    with StopSignals(retry=60):
      _signal_and_drop(signal.SIGINT)
      raise RuntimeError("a worker was cancelled")
  assert isinstance(raised.value.__cause__, RuntimeError)


def test_it_records_when_the_first_stop_was_asked():
  stop = StopSignals(retry=0.3)
  before = time.time()
  with pytest.raises(KeyboardInterrupt):
    with stop:
      _signal_and_drop(signal.SIGINT)
      first = stop.asked_at
      _work_on(10)  # the repeat does not move it
  assert before <= first <= time.time()
  assert stop.asked_at == first


def test_leaving_ends_the_repeats_and_restores_the_handlers():
  handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  hook = sys.unraisablehook
  with pytest.raises(KeyboardInterrupt):
    with StopSignals(retry=0.1):
      _signal(signal.SIGINT)
  # The caller's cleanup runs undisturbed: no repeat arrives any more.
  assert _work_on(1)
  assert {s: signal.getsignal(s) for s in handlers} == handlers
  assert sys.unraisablehook is hook
  assert not _stopper_threads()


def test_a_block_without_signals_is_left_as_it_ends():
  with StopSignals(retry=0.1) as stop:
    assert _work_on(0.3)
  assert stop.asked_at is None
  with pytest.raises(ValueError):
    with StopSignals(retry=0.1):
      raise ValueError("its own error")
  assert not _stopper_threads()


def test_off_the_main_thread_it_changes_nothing():
  handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  seen = []

  def use():
    with StopSignals():
      seen.append({s: signal.getsignal(s) for s in handlers})

  thread = threading.Thread(target=use)
  thread.start()
  thread.join()
  assert seen == [handlers]
  assert not _stopper_threads()


def test_a_signal_the_process_ignores_stays_ignored():
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  assert ignored(signal.SIGINT) and not ignored(signal.SIGTERM)
  with StopSignals(retry=0.1):
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL  # handled
    os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C would
    assert _work_on(0.5)  # ran on: a background command is not stopped
  assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
