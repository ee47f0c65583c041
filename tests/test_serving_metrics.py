"""Metrics at TF Serving's path and the health endpoints, on `mnist-tfx serve`."""

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import metrics
from tests import tiny_mnist
from tests.serve_process import push_tiny_model, serving


@pytest.fixture(scope="module")
def base(tft_output, tmp_path_factory):
  return push_tiny_model(tft_output, tmp_path_factory.mktemp("metrics"))


def _scrape(served):
  reply = httpx.get(f"http://127.0.0.1:{served.rest}{metrics.PATH}", timeout=10)
  assert reply.status_code == 200
  assert reply.headers["content-type"].startswith("text/plain")
  return metrics.parse(reply.text)


def _grpc_predict(port, images):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "mnist"
  request.inputs["images"].CopyFrom(tf.make_tensor_proto(images.astype(np.float32)))
  with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=30)


def test_requests_latency_batches_and_versions_are_counted(base):
  path, version = base
  images = tiny_mnist.make_images(np.arange(3)).reshape(3, 784)
  with serving(path) as served:
    before = _scrape(served)
    for _ in range(3):
      assert served.post("/v1/models/mnist:predict",
                         {"instances": images.tolist()}).status_code == 200
    assert served.post("/v1/models/mnist:predict",
                       {"instances": [[300] * 784]}).status_code == 400
    assert served.post("/v1/models/nope:predict",
                       {"instances": images.tolist()}).status_code == 404
    for _ in range(2):
      _grpc_predict(served.grpc, images)
    after = _scrape(served)
  assert metrics.value(before, metrics.REQUEST_COUNT) is None
  assert metrics.value(after, metrics.REQUEST_COUNT, model_name="mnist",
                       status="OK") == 5
  assert metrics.value(after, metrics.REQUEST_COUNT, model_name="mnist",
                       status="INVALID_ARGUMENT") == 1
  assert metrics.value(after, metrics.REQUEST_COUNT, model_name="nope",
                       status="NOT_FOUND") == 1
  # Latency of successful requests only, in microseconds, per API.
  rest = metrics.value(after, metrics.REQUEST_LATENCY + "_count", API="predict",
                       entrypoint="REST")
  grpc_count = metrics.value(after, metrics.REQUEST_LATENCY + "_count",
                             API="Predict", entrypoint="GRPC")
  assert (rest, grpc_count) == (3, 2)
  total = metrics.value(after, metrics.REQUEST_LATENCY + "_sum", entrypoint="REST")
  assert 10 < total / 3 < 5e6  # between 10 us and 5 s a request
  assert metrics.value(after, metrics.REQUEST_LATENCY + "_bucket", entrypoint="REST",
                       le="+Inf") == 3
  # Rows per model call: 3 rows each for the 5 good requests (+ the bad one).
  assert metrics.value(after, metrics.BATCH_SIZE + "_sum") >= 15
  assert metrics.value(after, metrics.LOAD_ATTEMPTS, status="success") == 1
  assert metrics.value(after, metrics.VERSION_STATE, version=str(version),
                       state="AVAILABLE") == 1
  assert metrics.value(after, metrics.WARMUP_LATENCY + "_count") is None  # no file


def test_counter_names_are_tf_servings_exactly(base):
  with serving(base[0]) as served:
    served.post("/v1/models/mnist:predict", {"instances": [[0] * 784]})
    text = httpx.get(f"http://127.0.0.1:{served.rest}{metrics.PATH}").text
  assert '\n:tensorflow:serving:request_count{model_name="mnist",status="OK"} 1.0' in text
  assert ":tensorflow:serving:request_latency_bucket{" in text
  assert "_total" not in text


def test_health_live_and_ready(base, tmp_path):
  with serving(base[0]) as served:
    url = f"http://127.0.0.1:{served.rest}"
    assert httpx.get(url + "/v2/health/live").json() == {"live": True}
    ready = httpx.get(url + "/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
  empty = tmp_path / "empty"
  empty.mkdir()
  with serving(str(empty)) as served:  # nothing to serve: alive, not ready
    url = f"http://127.0.0.1:{served.rest}"
    assert httpx.get(url + "/v2/health/live").status_code == 200
    ready = httpx.get(url + "/v2/health/ready")
    assert (ready.status_code, ready.json()) == (503, {"ready": False})


def test_unknown_paths_name_the_metrics_and_health_paths(base):
  with serving(base[0]) as served:
    reply = httpx.get(f"http://127.0.0.1:{served.rest}/monitoring/nope")
  assert reply.status_code == 404
  assert metrics.PATH in reply.json()["error"]


def test_counts_from_many_threads_add_up():
  import threading
  import time
  m = metrics.Metrics()
  started = time.perf_counter()

  def record():
    for _ in range(5000):
      m.request("mnist", "predict", "REST", "OK", started)

  threads = [threading.Thread(target=record) for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  samples = metrics.parse(m.text().decode())
  assert metrics.value(samples, metrics.REQUEST_COUNT) == 20000
  assert metrics.value(samples, metrics.REQUEST_LATENCY + "_count") == 20000


def test_recent_traffic_is_counted_per_step_over_the_last_minutes(monkeypatch):
  """What the page's traffic bars show: requests, errors and the mean
  latency of the successful ones, per 10 s, the last ten minutes."""
  m = metrics.Metrics()
  now = [1_000_000.0]
  monkeypatch.setattr(metrics.time, "time", lambda: now[0])
  started = metrics.time.perf_counter()
  for status in ("OK", "OK", "INVALID_ARGUMENT"):
    m.request("mnist", "predict", "REST", status, started)
  now[0] += 25  # two steps later
  m.request("mnist", "predict", "REST", "OK", started)
  steps = m.recent(now[0])
  assert len(steps) == metrics.RECENT_STEPS
  assert [s["start"] for s in steps[-3:]] == [1_000_000.0, 1_000_010.0, 1_000_020.0]
  first, empty, last = steps[-3:]
  assert (first["requests"], first["errors"], first["rate"]) == (3, 1, 0.3)
  assert first["latency_ms"] > 0
  assert (empty["requests"], empty["latency_ms"]) == (0, None)
  assert (last["requests"], last["errors"]) == (1, 0)
  # Ten minutes on, all of it has aged out.
  assert sum(s["requests"] for s in m.recent(now[0] + 600)) == 0
