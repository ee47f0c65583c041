"""Server-side batching of concurrent requests, as TF Serving's --enable_batching.

Requests for the same model version, signature and per-row input shape queue
together; a worker runs up to `max_batch_size` rows in one call, waiting at
most `timeout_micros` for a batch to fill. If a merged batch fails (one bad
request among good ones), each request is run alone, so an error stays with
the request that caused it.
"""

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from serving.model_store import ServingError

Inputs = Dict[str, np.ndarray]
Runner = Callable[[Any, Inputs], Dict[str, np.ndarray]]


class Batcher:

  def __init__(self, run: Runner, max_batch_size: int = 32,
               timeout_micros: int = 2000):
    if max_batch_size < 1 or timeout_micros < 0:
      raise ValueError("max_batch_size must be >= 1 and timeout_micros >= 0")
    self._run = run
    self.max_batch_size = max_batch_size
    self.timeout = timeout_micros / 1e6
    self._queues: Dict[Tuple, "queue.Queue"] = {}
    self._lock = threading.Lock()
    self.calls = 0  # model calls made; with `rows`, what batching achieved
    self.rows = 0

  def __call__(self, key: Tuple, fn: Any, inputs: Inputs) -> Dict[str, np.ndarray]:
    rows = len(next(iter(inputs.values())))
    if rows >= self.max_batch_size:
      return self._count(fn, inputs, rows)
    shape_key = tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items()))
    full_key = (key, shape_key)
    with self._lock:
      q = self._queues.get(full_key)
      if q is None:
        q = self._queues[full_key] = queue.Queue()
        threading.Thread(target=self._work, args=(q,), daemon=True,
                         name=f"batcher-{len(self._queues)}").start()
    future: Future = Future()
    q.put((fn, inputs, rows, future))
    return future.result()

  def _count(self, fn: Any, inputs: Inputs, rows: int) -> Dict[str, np.ndarray]:
    with self._lock:  # callers' and workers' threads both count
      self.calls += 1
      self.rows += rows
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
    fn = batch[0][0]
    if len(batch) == 1:
      self._settle(batch[0], fn)
      return
    merged = {k: np.concatenate([item[1][k] for item in batch])
              for k in batch[0][1]}
    try:
      outputs = self._count(fn, merged, rows)
    except ServingError:
      for item in batch:  # isolate the request(s) at fault
        self._settle(item, fn)
      return
    except Exception as e:  # pylint: disable=broad-except
      for item in batch:
        item[3].set_exception(e)
      return
    start = 0
    for item in batch:
      end = start + item[2]
      item[3].set_result({k: v[start:end] for k, v in outputs.items()})
      start = end

  def _settle(self, item: Tuple, fn: Any) -> None:
    try:
      item[3].set_result(self._count(fn, item[1], item[2]))
    except Exception as e:  # pylint: disable=broad-except
      item[3].set_exception(e)
