"""Sampled requests and their responses as TF Serving's PredictionLog TFRecords.

Like TF Serving's `--logging_config` (sampling_config.sampling_rate): each
answered predict request is kept with probability `sampling`, as a
`tensorflow.serving.PredictionLog` (PredictLog: the PredictRequest and
PredictResponse, REST requests converted to their gRPC form) with its
LogMetadata, in TFRecord files `prediction_log-*.tfrecord` that TF
Serving's tools, `tf.data.TFRecordDataset` and `mnist-tfx monitor` read.

A request never waits for the log: a sampled one is queued (a bounded
queue) and a writer thread builds the protos and writes them. Files rotate
at `max_file_bytes`; the oldest are deleted past `max_total_bytes`. A full
disk, an unwritable dir or a full queue drops the record, counts it in the
metrics (`mnist_tfx_serving_request_log_error_count{reason}`) and says so
once in the log; the writer tries again on the next record.
"""

import logging
import os
import queue
import random
import struct
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from serving import metrics as metrics_lib

PREFIX = "prediction_log-"
SUFFIX = ".tfrecord"
QUEUE_RECORDS = 1024
_LOG = logging.getLogger(__name__)


def _masked_crc(data: bytes) -> int:
  import google_crc32c  # pylint: disable=g-import-not-at-top
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
  """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", _masked_crc(length)) + data
          + struct.pack("<I", _masked_crc(data)))


def log_files(directory: str) -> List[str]:
  """The log's files, oldest first (their names sort by time)."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return [os.path.join(directory, n) for n in sorted(names)
          if n.startswith(PREFIX) and n.endswith(SUFFIX)]


class RequestLog:
  """The sampler (on the serving thread) and the writer (its own thread)."""

  def __init__(self, directory: str, sampling: float, max_file_bytes: int,
               max_total_bytes: int, metrics: Optional[metrics_lib.Metrics] = None):
    self.directory = directory
    self.sampling = sampling
    self.max_file_bytes = max_file_bytes
    self.max_total_bytes = max_total_bytes
    self.metrics = metrics
    self._queue: "queue.Queue" = queue.Queue(QUEUE_RECORDS)
    self._file = None
    self._file_bytes = 0
    self._said: set = set()  # failure reasons already logged
    self._random = random.random
    self._seq = 0
    self.written = 0
    self._thread = threading.Thread(target=self._write_loop, daemon=True,
                                    name="request-log")
    self._thread.start()

  # --- on the serving path -----------------------------------------------------

  def offer(self, model: str, version: int, signature: str,
            inputs: Dict[str, np.ndarray], outputs: Dict[str, np.ndarray]) -> None:
    """Keeps this answered request with probability `sampling`; never blocks."""
    if self._random() >= self.sampling:
      return
    try:
      self._queue.put_nowait((time.time(), model, version, signature, inputs, outputs))
    except queue.Full:
      self._failed("queue_full", "the request log's queue is full (the disk "
                   "is slower than the sampled requests)", model)

  # --- the writer --------------------------------------------------------------

  def _write_loop(self) -> None:
    while True:
      item = self._queue.get()
      if item is None:
        break
      model = item[1]
      try:
        self._write(self._record(*item))
        self.written += 1
        self._count(model, "OK")
      except OSError as e:
        self._close()
        reason = "disk_full" if e.errno == 28 else "write_error"
        self._failed(reason, f"cannot write the request log in {self.directory}: "
                     f"{e.strerror or e}", model)
      except Exception as e:  # pylint: disable=broad-except
        self._failed("bad_record", f"cannot log a request: {e!r}", model)
      finally:
        self._queue.task_done()
    self._close()

  def _record(self, when, model, version, signature, inputs, outputs) -> bytes:
    from serving.grpc_server import to_proto  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2  # pylint: disable=g-import-not-at-top
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.version.value = version
    request.model_spec.signature_name = signature
    for key, array in inputs.items():
      to_proto(np.asarray(array), request.inputs[key])
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for key, array in outputs.items():
      to_proto(np.asarray(array), response.outputs[key])
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request, response=response))
    log.log_metadata.model_spec.CopyFrom(request.model_spec)
    log.log_metadata.sampling_config.sampling_rate = self.sampling
    del when  # the file name carries the time; PredictionLog has no field for it
    return tfrecord(log.SerializeToString())

  def _write(self, data: bytes) -> None:
    if self._file is None or self._file_bytes + len(data) > self.max_file_bytes:
      self._rotate()
    self._file.write(data)
    self._file.flush()
    self._file_bytes += len(data)

  def _rotate(self) -> None:
    self._close()
    os.makedirs(self.directory, exist_ok=True)
    self._seq += 1
    name = f"{PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{self._seq:06d}{SUFFIX}"
    self._file = open(os.path.join(self.directory, name), "ab")
    self._file_bytes = 0
    self._enforce_cap()

  def _enforce_cap(self) -> None:
    """Deletes the oldest files while the log holds more than its cap."""
    files = log_files(self.directory)
    sizes = {}
    for path in files:
      try:
        sizes[path] = os.path.getsize(path)
      except OSError:
        pass
    total = sum(sizes.values())
    current = getattr(self._file, "name", None)
    for path in files:
      if total <= self.max_total_bytes - self.max_file_bytes or path == current:
        break
      try:
        os.unlink(path)
        total -= sizes.get(path, 0)
      except OSError:
        pass

  def _close(self) -> None:
    if self._file is not None:
      try:
        self._file.close()
      except OSError:
        pass
      self._file = None

  def _count(self, model: str, status: str) -> None:
    if self.metrics is not None:
      self.metrics.count(metrics_lib.REQUEST_LOG_COUNT, (model, status))

  def _failed(self, reason: str, message: str, model: str) -> None:
    if self.metrics is not None:
      self.metrics.count(metrics_lib.REQUEST_LOG_ERRORS, (reason,))
      self._count(model, "ERROR")
    if reason not in self._said:
      self._said.add(reason)
      _LOG.warning("%s; serving goes on, dropped records are counted in %s "
                   "(said once)", message, metrics_lib.REQUEST_LOG_ERRORS)

  def flush(self, timeout: float = 10.0) -> None:
    """Waits until every queued record is written or dropped (tests, stop)."""
    deadline = time.monotonic() + timeout
    while self._queue.unfinished_tasks and time.monotonic() < deadline:
      time.sleep(0.01)

  def stop(self) -> None:
    self.flush()
    try:
      self._queue.put_nowait(None)
    except queue.Full:
      pass
    self._thread.join(timeout=5)


def read(paths: List[str]):
  """PredictLogs from TFRecord files: yields (file, PredictionLog).

  Raises ValueError naming the file and record for a truncated or
  corrupt file (a CRC that does not match, a record that is not a
  PredictionLog).
  """
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
  for path in paths:
    with open(path, "rb") as f:
      index = 0
      while True:
        head = f.read(12)
        if not head:
          break
        if len(head) < 12:
          raise ValueError(f"{path}: record {index} is truncated")
        length, = struct.unpack("<Q", head[:8])
        if struct.unpack("<I", head[8:])[0] != _masked_crc(head[:8]):
          raise ValueError(f"{path}: record {index}: corrupt length (CRC mismatch)")
        data = f.read(length)
        tail = f.read(4)
        if len(data) < length or len(tail) < 4:
          raise ValueError(f"{path}: record {index} is truncated")
        if struct.unpack("<I", tail)[0] != _masked_crc(data):
          raise ValueError(f"{path}: record {index}: corrupt data (CRC mismatch)")
        try:
          log = prediction_log_pb2.PredictionLog.FromString(data)
        except Exception:  # pylint: disable=broad-except  # DecodeError
          raise ValueError(f"{path}: record {index} is not a PredictionLog") from None
        yield path, log
        index += 1
