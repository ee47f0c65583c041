"""The request log: PredictionLog TFRecords, sampling, rotation, cap, faults."""

import logging
import os
import subprocess
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc)

from serving import metrics, request_log
from tests import tiny_mnist
from tests.serve_process import push_tiny_model, serving

IMAGES = {"images": np.arange(2 * 784, dtype=np.float32).reshape(2, 784) % 256}
OUTPUTS = {"probabilities": np.full((2, 10), 0.1, np.float32),
           "classes": np.array([3, 4], np.int64)}


def _log(directory, sampling=1.0, file_bytes=1 << 20, total=1 << 30):
  m = metrics.Metrics()
  return request_log.RequestLog(str(directory), sampling, file_bytes, total, m), m


def _errors(m, reason=None):
  labels = {"reason": reason} if reason else {}
  return metrics.value(metrics.parse(m.text().decode()), metrics.REQUEST_LOG_ERRORS,
                       **labels) or 0


def test_records_are_prediction_logs_tensorflow_reads(tmp_path):
  log, m = _log(tmp_path)
  for _ in range(5):
    log.offer("mnist", 7, "serving_default", IMAGES, OUTPUTS)
  log.stop()
  files = request_log.log_files(str(tmp_path))
  assert len(files) == 1
  # TensorFlow's own reader checks the framing and CRCs.
  raw = list(tf.data.TFRecordDataset(files).as_numpy_iterator())
  assert len(raw) == 5
  entry = prediction_log_pb2.PredictionLog.FromString(raw[0])
  request, response = entry.predict_log.request, entry.predict_log.response
  assert request.model_spec.name == "mnist" and request.model_spec.version.value == 7
  assert request.model_spec.signature_name == "serving_default"
  np.testing.assert_array_equal(tf.make_ndarray(request.inputs["images"]),
                                IMAGES["images"])
  np.testing.assert_array_equal(tf.make_ndarray(response.outputs["classes"]), [3, 4])
  assert entry.log_metadata.sampling_config.sampling_rate == 1.0
  assert [l.predict_log.request.model_spec.version.value
          for _, l in request_log.read(files)] == [7] * 5
  assert metrics.value(metrics.parse(m.text().decode()), metrics.REQUEST_LOG_COUNT,
                       status_code="OK") == 5


def test_sampling_keeps_about_its_share(tmp_path):
  log, _ = _log(tmp_path, sampling=0.25)
  for _ in range(2000):
    log.offer("mnist", 1, "serving_default", IMAGES, OUTPUTS)
  log.stop()
  assert 350 < log.written < 650
  none, _ = _log(tmp_path / "none", sampling=0.0)
  none.offer("mnist", 1, "serving_default", IMAGES, OUTPUTS)
  none.stop()
  assert none.written == 0 and not os.path.exists(tmp_path / "none")


def test_files_rotate_by_size_and_the_oldest_go_past_the_cap(tmp_path):
  one = len(request_log.tfrecord(b"")) + 6500  # about one record
  log, _ = _log(tmp_path, file_bytes=3 * one, total=9 * one)
  for _ in range(40):
    log.offer("mnist", 1, "serving_default", IMAGES, OUTPUTS)
  log.stop()
  files = request_log.log_files(str(tmp_path))
  assert 2 <= len(files) <= 4
  assert sum(os.path.getsize(f) for f in files) <= 9 * one
  kept = sum(1 for _ in request_log.read(files))
  assert 0 < kept < 40 and log.written == 40  # the oldest were deleted


def test_an_unwritable_dir_never_fails_a_request_and_is_said_once(tmp_path, caplog):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  log, m = _log(blocker / "log")
  with caplog.at_level(logging.WARNING, logger="serving.request_log"):
    for _ in range(5):
      log.offer("mnist", 1, "serving_default", IMAGES, OUTPUTS)  # never raises
    log.flush()
  assert _errors(m, "write_error") == 5
  said = [r for r in caplog.records if "cannot write the request log" in r.getMessage()]
  assert len(said) == 1
  log.stop()


@pytest.fixture
def tiny_disk(tmp_path):
  mount = tmp_path / "disk"
  mount.mkdir()
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                        capture_output=True, check=False)
  if done.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
  yield mount
  subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_drops_records_counts_them_and_recovers(tiny_disk):
  log, m = _log(tiny_disk, file_bytes=1 << 20, total=1 << 30)
  for _ in range(30):  # ~6.5 KB each: the 64 KB disk fills
    log.offer("mnist", 1, "serving_default", IMAGES, OUTPUTS)
  log.flush()
  assert 0 < log.written < 30
  assert _errors(m, "disk_full") == 30 - log.written
  for path in request_log.log_files(str(tiny_disk)):
    os.unlink(path)  # room again: the next record is written
  written = log.written
  log.offer("mnist", 1, "serving_default", IMAGES, OUTPUTS)
  log.stop()
  assert log.written == written + 1


def test_a_full_queue_drops_at_once(tmp_path, monkeypatch):
  log, m = _log(tmp_path)
  monkeypatch.setattr(log, "_record", lambda *a: time.sleep(10))  # a stuck disk
  started = time.monotonic()
  for _ in range(request_log.QUEUE_RECORDS + 50):
    log.offer("mnist", 1, "serving_default", IMAGES, OUTPUTS)
  assert time.monotonic() - started < 2  # the requests did not wait
  assert _errors(m, "queue_full") >= 49


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-3], "truncated"),
    (lambda b: b[:5], "truncated"),
    (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "corrupt data"),
    (lambda b: bytes([b[0] ^ 1]) + b[1:], "corrupt length"),
    (lambda b: request_log.tfrecord(b"\xff\xff not a proto"), "not a PredictionLog"),
])
def test_a_damaged_log_is_named_with_its_record(tmp_path, damage, message):
  log, _ = _log(tmp_path)
  log.offer("mnist", 1, "serving_default", IMAGES, OUTPUTS)
  log.stop()
  path, = request_log.log_files(str(tmp_path))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(damage(data))
  with pytest.raises(ValueError, match=message) as raised:
    list(request_log.read([path]))
  assert path in str(raised.value) and "record 0" in str(raised.value)


def test_the_server_logs_rest_and_grpc_requests(tft_output, tmp_path):
  base, version = push_tiny_model(tft_output, tmp_path)
  log_dir = tmp_path / "requests"
  images = tiny_mnist.make_images(np.arange(3)).reshape(3, 784)
  with serving(base, "--request-log", str(log_dir), "--request-log-sampling",
               "1") as served:
    for _ in range(4):
      assert served.post("/v1/models/mnist:predict",
                         {"instances": images.tolist()}).status_code == 200
    assert served.post("/v1/models/mnist:predict",
                       {"instances": [[999] * 784]}).status_code == 400
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.model_spec.signature_name = "serving_uint8"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images.astype(np.uint8)))
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc}") as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      for _ in range(2):
        stub.Predict(request, timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
      found = list(request_log.read(request_log.log_files(str(log_dir))))
      if len(found) >= 6:
        break
      time.sleep(0.1)
  # Answered requests only (the refused one is not kept), both APIs.
  assert len(found) == 6
  signatures = sorted(l.predict_log.request.model_spec.signature_name for _, l in found)
  assert signatures == ["serving_default"] * 4 + ["serving_uint8"] * 2
  for _, entry in found:
    assert entry.predict_log.request.model_spec.version.value == version
    logged = tf.make_ndarray(entry.predict_log.request.inputs["images"])
    np.testing.assert_array_equal(logged.reshape(3, 784), images)
    assert tf.make_ndarray(entry.predict_log.response.outputs["probabilities"]).shape == (3, 10)
