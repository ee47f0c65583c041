"""`mnist-tfx serve` started as a user starts it: both APIs answer, and it stops
cleanly on SIGTERM (uvicorn's own settings, not the test harness's)."""

import os
import signal
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components import features, pusher
from components.models import Hyperparameters, build_model
from components.trainer import export
from tests import serve_process



@pytest.mark.parametrize("flags,batching", [
    ([], "Batching (REST and gRPC): requests that arrive together"),  # the default
    (["--no-greedy-batching"], None),
    (["--enable-batching"], "Batching: up to 32 rows, 2000 µs timeout")])
def test_serve_as_a_user_starts_it(tft_output, tmp_path, flags, batching):
  model_dir = str(tmp_path / "model")
  export.export(build_model(Hyperparameters(), 10), tft_output, model_dir)
  base = str(tmp_path / "mnist")
  version = int(os.path.basename(pusher.push(model_dir, base, {})))
  with serve_process.serving(base, *flags) as served:
    text = served.text
    assert f"version {version} AVAILABLE" in text, text
    said = [l for l in served.lines if l.startswith("Batching")]
    assert said == ([] if batching is None else [said[0]]), text
    assert batching is None or said[0].startswith(batching), text
    image = np.zeros((1, 28, 28), np.float32)
    r = served.post("/v1/models/mnist:predict", {"instances": image.tolist()})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(image))
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc}") as channel:
      response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
          request, timeout=30)
    assert response.model_spec.version.value == version


@pytest.mark.parametrize("how", ["SIGTERM", "stop()"])
def test_a_stop_while_a_version_loads_ends_the_server(tft_output, tmp_path, how):
  """A signal (or stop()) during the load stops the server once the load ends.

  Raising from a Python signal handler would not do it: on the event loop
  the exception lands in one of the loop's callbacks and is only logged.
  """
  import asyncio  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  from serving import grpc_server, server, service  # pylint: disable=g-import-not-at-top
  from serving.model_store import ModelStore  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path / "model")
  export.export(build_model(Hyperparameters(), 10), tft_output, model_dir)
  base = str(tmp_path / "mnist")
  pusher.push(model_dir, base, {})
  loading = threading.Event()

  def slow_load(path):
    loading.set()
    time.sleep(1.5)
    return service.load(path)

  store = ModelStore("mnist", base, loader=slow_load)
  servers = server.Servers(store, server.bind("127.0.0.1", 0), 0, None, None,
                           server.Settings("mnist", base))

  finished = threading.Event()

  def stop_when_loading():
    assert loading.wait(60)
    if how == "SIGTERM":
      os.kill(os.getpid(), signal.SIGTERM)
    else:
      servers.stop()
    if not finished.wait(20):
      servers.stop()  # the signal was lost: end the test, which then fails

  raised = []
  previous = signal.signal(signal.SIGTERM, lambda *_: raised.append("handler"))
  try:
    threading.Thread(target=stop_when_loading, daemon=True).start()
    start = time.monotonic()
    asyncio.Runner(loop_factory=grpc_server.new_loop).run(servers.run())
    finished.set()
    assert time.monotonic() - start < 15
  finally:
    store.stop()
    signal.signal(signal.SIGTERM, previous)
  assert not servers.started.is_set()  # it never began to serve
  assert raised == []  # the loop's handler took the signal
  servers.stop()  # once the loop has closed: nothing to do, no error
