"""Warm-up requests: written as TF Serving's file, replayed before AVAILABLE."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from components import features
from serving import metrics, service, warmup
from serving.model_store import ModelStore
from serving.request_log import tfrecord
from tests import tiny_mnist
from tests.serve_process import push_tiny_model, serving


def _examples(count=warmup.EXAMPLES):
  images = tiny_mnist.make_images(np.arange(count)).reshape(count, -1)
  return [tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=i)),
      features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))
  })).SerializeToString() for i in images]


@pytest.fixture(scope="module")
def pushed(tft_output, tmp_path_factory):
  """A version with a warm-up file, as the infra validator stamps it."""
  base, version = push_tiny_model(tft_output, tmp_path_factory.mktemp("warm"))
  path = os.path.join(base, str(version))
  warmup.write(path, warmup.requests_for(_examples(), "mnist"))
  return base, version, path


def test_the_file_is_tf_servings_prediction_logs(pushed):
  path = os.path.join(pushed[2], warmup.WARMUP_FILE)
  assert warmup.WARMUP_FILE == "assets.extra/tf_serving_warmup_requests"
  logs = [prediction_log_pb2.PredictionLog.FromString(r)
          for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
  assert len(logs) == 3 * warmup.EXAMPLES
  assert {l.predict_log.request.model_spec.signature_name for l in logs} == {
      features.SERVING_SIGNATURE, features.UINT8_SIGNATURE, features.EXAMPLES_SIGNATURE}


def test_a_version_is_warmed_before_it_serves(pushed):
  base, version, _ = pushed
  m = metrics.Metrics()
  store = ModelStore("mnist", base, loader=service.load, warmup=warmup.replay,
                     metrics=m).start()
  try:
    assert store.status("mnist")[0].state == "AVAILABLE"
  finally:
    store.stop()
  scraped = metrics.parse(m.text().decode())
  assert metrics.value(scraped, metrics.WARMUP_RECORDS, status="OK") == 3 * warmup.EXAMPLES
  assert metrics.value(scraped, metrics.WARMUP_LATENCY + "_count", status="OK") == 1
  assert version  # the version number is real


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-7], "warm-up file"),
    (lambda data: tfrecord(b"\x08\x96\x01 not a log"), "warm-up file"),
    (lambda data: tfrecord(prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog()).SerializeToString()),
     "only predict logs are replayed"),
])
def test_a_broken_warm_up_file_fails_the_load_with_the_reason(pushed, tmp_path,
                                                              damage, message):
  base = tmp_path / "mnist"
  target = base / "1"
  import shutil
  shutil.copytree(pushed[2], target)
  path = target / warmup.WARMUP_FILE
  path.write_bytes(damage(path.read_bytes()))
  store = ModelStore("mnist", str(base), loader=service.load,
                     warmup=warmup.replay).start()
  try:
    status = store.status("mnist")[0]
  finally:
    store.stop()
  assert status.state == "END" and message in status.error_message
  assert not store.ready()


def test_a_request_the_version_refuses_fails_the_load(pushed, tmp_path):
  import shutil
  target = tmp_path / "mnist" / "1"
  shutil.copytree(pushed[2], target)
  bad = warmup.requests_for(_examples(1), "mnist")[:1]
  bad[0].inputs["images"].CopyFrom(tf.make_tensor_proto(
      np.full((1, 784), 300, np.float32)))  # out of 0-255
  warmup.write(str(target), bad)
  with pytest.raises(ValueError, match="warm-up record 0 .*0-255"):
    warmup.replay(service.load(str(target)), str(target))


def test_more_records_than_tf_serving_allows_are_refused(tmp_path):
  requests = warmup.requests_for(_examples(1), "mnist")[:1] * (warmup.MAX_RECORDS + 1)
  warmup.write(str(tmp_path), requests)
  with pytest.raises(ValueError, match="more than 1000 warm-up records"):
    warmup.read(str(tmp_path))


def test_serve_replays_the_file_and_no_warmup_skips_it(pushed):
  for flags, replayed in (((), 3 * warmup.EXAMPLES), (("--no-warmup",), None)):
    with serving(pushed[0], *flags) as served:
      import httpx
      text = httpx.get(f"http://127.0.0.1:{served.rest}{metrics.PATH}").text
    assert metrics.value(metrics.parse(text), metrics.WARMUP_RECORDS) == replayed
