"""Server-side batching of concurrent requests, as TF Serving's --enable_batching.

Requests for the same model version, signature and per-row input shape queue
together; a worker runs up to `max_batch_size` rows in one call, waiting at
most `timeout_micros` for a batch to fill. If a merged batch fails (one bad
request among good ones), each request is run alone, so an error stays with
the request that caused it.
"""

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from mnist_tfx import defaults
from serving.model_store import ServingError

Inputs = Dict[str, np.ndarray]
Runner = Callable[[Any, Inputs], Dict[str, np.ndarray]]


class Batcher:
  """TF Serving's timed batching. Each queue holds at most
  `max_enqueued_batches` full batches of requests (TF Serving's parameter of
  that name); a request that finds it full is refused at once with
  UNAVAILABLE (HTTP 503), not queued without bound."""

  def __init__(self, run: Runner, max_batch_size: int = 32,
               timeout_micros: int = 2000,
               max_enqueued_batches: int = defaults.MAX_ENQUEUED_BATCHES):
    if max_batch_size < 1 or timeout_micros < 0 or max_enqueued_batches < 1:
      raise ValueError("max_batch_size and max_enqueued_batches must be >= 1 "
                       "and timeout_micros >= 0")
    self._run = run
    self.max_batch_size = max_batch_size
    self.max_enqueued_batches = max_enqueued_batches
    self.timeout = timeout_micros / 1e6
    self._queues: Dict[Tuple, "queue.Queue"] = {}
    self._lock = threading.Lock()
    self.calls = 0  # model calls made; with `rows`, what batching achieved
    self.rows = 0
    self.on_batch: Optional[Callable[[int], None]] = None  # rows of each call (metrics)

  def __call__(self, key: Tuple, fn: Any, inputs: Inputs) -> Dict[str, np.ndarray]:
    rows = len(next(iter(inputs.values())))
    if rows >= self.max_batch_size:
      return self._count(fn, inputs, rows)
    shape_key = tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items()))
    full_key = (key, shape_key)
    with self._lock:
      q = self._queues.get(full_key)
      if q is None:
        q = self._queues[full_key] = queue.Queue(
            maxsize=self.max_enqueued_batches * self.max_batch_size)
        threading.Thread(target=self._work, args=(q,), daemon=True,
                         name=f"batcher-{len(self._queues)}").start()
    future: Future = Future()
    try:
      q.put_nowait((fn, inputs, rows, future))
    except queue.Full:
      raise ServingError("UNAVAILABLE", "the server is overloaded: the batch "
                         f"queue holds {self.max_enqueued_batches} batches "
                         "already (--max-enqueued-batches); retry later") from None
    return future.result()

  def _count(self, fn: Any, inputs: Inputs, rows: int) -> Dict[str, np.ndarray]:
    with self._lock:  # callers' and workers' threads both count
      self.calls += 1
      self.rows += rows
    if self.on_batch is not None:
      self.on_batch(rows)
    return self._run(fn, inputs)

  def _work(self, q: "queue.Queue") -> None:
    carry = None
    while True:
      first = carry or q.get()
      carry = None
      batch: List[Tuple] = [first]
      rows = first[2]
      deadline = time.monotonic() + self.timeout
      while rows < self.max_batch_size:
        remaining = deadline - time.monotonic()
        try:
          item = q.get(timeout=max(remaining, 0)) if remaining > 0 else q.get_nowait()
        except queue.Empty:
          break
        if rows + item[2] > self.max_batch_size:
          carry = item  # starts the next batch
          break
        batch.append(item)
        rows += item[2]
      self._run_batch(batch, rows)

  def _run_batch(self, batch: List[Tuple], rows: int) -> None:
    settle(batch, run_together(self._count, batch, rows))



Outcome = Tuple[Optional[Dict[str, np.ndarray]], Optional[BaseException]]


def run_together(run: Callable[[Any, Inputs, int], Dict[str, np.ndarray]],
                 batch: List[Tuple], rows: int) -> List[Outcome]:
  """Runs (fn, inputs, rows, ...) requests as one call; each one's outcome.

  If the merged call fails on a bad request (ServingError), each request
  runs alone, so the error stays with the request that caused it.
  """
  fn = batch[0][0]
  if len(batch) == 1:
    return [_alone(run, batch[0])]
  merged = {k: np.concatenate([item[1][k] for item in batch]) for k in batch[0][1]}
  try:
    outputs = run(fn, merged, rows)
  except ServingError:
    return [_alone(run, item) for item in batch]
  except Exception as e:  # pylint: disable=broad-except
    return [(None, e)] * len(batch)
  results, start = [], 0
  for item in batch:
    end = start + item[2]
    results.append(({k: v[start:end] for k, v in outputs.items()}, None))
    start = end
  return results


def settle(batch: List[Tuple], outcomes: List[Outcome]) -> None:
  """Hands each request (its future is item[3]) its result or error."""
  for item, (result, error) in zip(batch, outcomes):
    if item[3].cancelled():
      continue  # the client went away
    if error is None:
      item[3].set_result(result)
    else:
      item[3].set_exception(error)


def _alone(run, item: Tuple) -> Outcome:
  try:
    return run(item[0], item[1], item[2]), None
  except Exception as e:  # pylint: disable=broad-except
    return None, e


class GreedyBatcher:
  """Batching that costs nothing at low load, for an asyncio server.

  A request queues for its (model version, signature, row shape) and, if it
  is the first, schedules a drain on the event loop. The drain waits
  `turns` turns of the loop (each turn reads whatever requests have arrived
  on any connection, a poll that does not wait), then keeps waiting until
  `quiet_turns` turns in a row bring no request, `max_batch_size` requests
  are queued or `gather_turns` more turns have passed; then it runs
  everything queued, up to `max_batch_size` rows a call, inline on the
  loop. No timer: a lone request waits a few idle turns (microseconds).
  REST's concurrent clients arrive together (16 clients: all 16 within the
  first turns); grpcio hands the loop about one call a turn from its poller
  thread, so gRPC's are gathered by the turns that bring one (16 clients:
  13 rows a call instead of 2-3).
  """

  def __init__(self, run: Runner, max_batch_size: int = 32,
               turns: int = defaults.GREEDY_TURNS,
               quiet_turns: int = defaults.GREEDY_QUIET_TURNS,
               gather_turns: int = defaults.GREEDY_GATHER_TURNS):
    if max_batch_size < 1 or turns < 1 or quiet_turns < 1 or gather_turns < 0:
      raise ValueError("max_batch_size, turns and quiet_turns must be >= 1, "
                       "gather_turns >= 0")
    self._run = run
    self.max_batch_size = max_batch_size
    self.turns = turns
    self.quiet_turns = quiet_turns
    self.gather_turns = gather_turns
    self._pending: Dict[Tuple, List[Tuple]] = {}
    self.calls = 0
    self.rows = 0
    self.on_batch: Optional[Callable[[int], None]] = None  # rows of each call (metrics)

  async def __call__(self, key: Tuple, fn: Any, inputs: Inputs) -> Dict[str, np.ndarray]:
    rows = len(next(iter(inputs.values())))
    if rows >= self.max_batch_size:
      return self._count(fn, inputs, rows)
    # One signature's inputs always come in its own order: no sorting.
    full_key = (key, tuple((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    pending = self._pending.setdefault(full_key, [])
    pending.append((fn, inputs, rows, future))
    if len(pending) == 1:
      loop.call_soon(self._drain_after, full_key, 1, 1, 0)
    return await future

  def _drain_after(self, key: Tuple, turn: int, seen: int, quiet: int) -> None:
    """The `turn`th turn since the first request: `seen` requests were
    queued the turn before, and `quiet` turns in a row brought none."""
    queued = len(self._pending.get(key, ()))
    quiet = 0 if queued > seen else quiet + 1
    if turn < self.turns or (quiet < self.quiet_turns and queued < self.max_batch_size
                             and turn < self.turns + self.gather_turns):
      asyncio.get_running_loop().call_soon(self._drain_after, key, turn + 1, queued,
                                           quiet)
    else:
      self._drain(key)

  def _count(self, fn: Any, inputs: Inputs, rows: int) -> Dict[str, np.ndarray]:
    self.calls += 1
    self.rows += rows
    if self.on_batch is not None:
      self.on_batch(rows)
    return self._run(fn, inputs)

  def _drain(self, key: Tuple) -> None:
    pending = self._pending.pop(key, [])
    while pending:
      batch, rows = [], 0
      while pending and rows + pending[0][2] <= self.max_batch_size:
        rows += pending[0][2]
        batch.append(pending.pop(0))
      settle(batch, run_together(self._count, batch, rows))
