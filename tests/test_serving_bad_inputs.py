"""Every bad request in the corpus (tests/bad_inputs.py) over real REST and gRPC:
the right status, a JSON (or gRPC) error that says what is wrong, and a good
request served right after. Plus what a table cannot say: a body that never
completes, a port that is taken, a limit checked before allocating.
"""

import json
import os
import socket
import time

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from components import features, pusher
from components.models import Hyperparameters, build_model
from components.trainer import export
from serving import grpc_server, server
from serving.model_store import ModelStore
from tests import bad_inputs

NAME = bad_inputs.NAME
LIMIT = 200_000  # bytes: the over-limit case goes past it
BODY_TIMEOUT = 0.5  # seconds


@pytest.fixture(scope="module")
def served(tft_output, tmp_path_factory):
  root = tmp_path_factory.mktemp("bad_inputs")
  model_dir = str(root / "model")
  export.export(build_model(Hyperparameters(), 10), tft_output, model_dir)
  base = str(root / NAME)
  version = int(os.path.basename(pusher.push(model_dir, base, {})))
  store = ModelStore(NAME, base).start()
  grpc_srv = grpc_server.start(store, "127.0.0.1", 0, max_message_bytes=LIMIT * 50)
  rest = server.RestServer(store, port=0, max_payload_bytes=LIMIT,
                           body_timeout=BODY_TIMEOUT).start()
  channel = grpc.insecure_channel(f"127.0.0.1:{grpc_srv.bound_port}")
  with httpx.Client(base_url=f"http://127.0.0.1:{rest.port}", timeout=30) as client:
    yield {"client": client, "channel": channel, "version": version,
           "rest": rest, "grpc": grpc_srv, "base": base}
  channel.close()
  rest.stop()
  grpc_srv.stop(0)
  store.stop()


def _good_rest(client):
  response = client.post(bad_inputs.PREDICT, json=bad_inputs.GOOD)
  assert response.status_code == 200, response.text
  assert len(response.json()["predictions"]) == 1


@pytest.mark.parametrize("case", bad_inputs.REST, ids=[c[0] for c in bad_inputs.REST])
def test_rest_bad_input(served, case):
  _, method, path, body, status, words = case
  client = served["client"]
  if isinstance(body, bytes):
    content = body
  elif body is None:
    content = None
  else:
    content = json.dumps(body).encode()
  response = client.request(method, path, content=content)
  assert response.status_code == status, response.text[:300]
  assert response.headers["content-type"] == "application/json"
  assert set(response.json()) == {"error"}
  assert words in response.json()["error"], response.json()["error"][:300]
  _good_rest(client)


def test_the_corpus_is_as_large_as_promised():
  assert len(bad_inputs.REST) >= 100 and len(bad_inputs.GRPC) >= 25
  assert len(bad_inputs.DATA) >= 20 and len(bad_inputs.CLI) >= 20
  for table in (bad_inputs.REST, bad_inputs.GRPC, bad_inputs.DATA, bad_inputs.CLI):
    ids = [c[0] for c in table]
    assert len(ids) == len(set(ids))


def _example(pixels, size=features.IMAGE_SIZE):
  return tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
          value=[pixels] * size))})).SerializeToString()


def _predict_request(shape=(1, 784), dtype="float32", signature="", model=NAME,
                     version=None, input="images", extra=None, output_filter=(),
                     unknown_rank=False, content=None, float_val=None, int_val=None,
                     string_val=None, example_pixels=None, example_size=784):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  if signature:
    request.model_spec.signature_name = signature
  if version is not None:
    request.model_spec.version.value = version
  request.output_filter.extend(output_filter)
  if input is None:
    return request
  proto = request.inputs[input]
  proto.dtype = tf.dtypes.as_dtype(dtype).as_datatype_enum
  if unknown_rank:
    proto.tensor_shape.unknown_rank = True
  else:
    for size in shape:
      proto.tensor_shape.dim.add().size = size
  if example_pixels is not None:
    string_val = [_example(example_pixels, example_size)]
  if content is not None:
    proto.tensor_content = content
  elif float_val is not None:
    proto.float_val.extend(float_val)
  elif int_val is not None:
    proto.int_val.extend(int_val)
  elif string_val is not None:
    proto.string_val.extend(string_val)
  elif dtype == "float32":
    proto.float_val.extend([0.0] * int(np.prod(shape)))
  if extra:
    request.inputs[extra].CopyFrom(proto)
  return request


def _call(served, builder, kwargs):
  channel = served["channel"]
  if builder == "predict":
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        _predict_request(**kwargs), timeout=30)
  if builder == "metadata":
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = kwargs.get("model", NAME)
    request.metadata_field.append(kwargs.get("field", "signature_def"))
    return prediction_service_pb2_grpc.PredictionServiceStub(
        channel).GetModelMetadata(request, timeout=30)
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = kwargs.get("model", NAME)
  if "version" in kwargs:
    request.model_spec.version.value = kwargs["version"]
  return model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
      request, timeout=30)


@pytest.mark.parametrize("case", bad_inputs.GRPC, ids=[c[0] for c in bad_inputs.GRPC])
def test_grpc_bad_input(served, case):
  _, builder, kwargs, code, words = case
  with pytest.raises(grpc.RpcError) as caught:
    _call(served, builder, kwargs)
  assert caught.value.code() == getattr(grpc.StatusCode, code), caught.value.details()
  assert words in caught.value.details()
  good = _call(served, "predict", {})
  assert tf.make_ndarray(good.outputs[features.PROBABILITIES_KEY]).shape == (1, 10)


def test_grpc_checks_the_size_before_allocating(served):
  """A 45-byte request declaring 157 M values must not allocate them."""
  import resource
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  request = _predict_request(shape=(200000, 28, 28), float_val=[0.0])
  assert request.ByteSize() < 64
  with pytest.raises(grpc.RpcError):
    prediction_service_pb2_grpc.PredictionServiceStub(served["channel"]).Predict(
        request, timeout=30)
  grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
  assert grown_kib < 100 * 1024  # 157 M floats would be 600 MiB


def test_a_body_that_never_completes_is_dropped(served):
  """Content-Length 1000, 13 bytes sent, then nothing: 408 after the timeout."""
  port = served["rest"].port
  with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
    sock.sendall(f"POST {bad_inputs.PREDICT} HTTP/1.1\r\nHost: x\r\n"
                 "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                 '{"instances":'.encode())
    start = time.monotonic()
    answer = b""
    while b"\r\n\r\n" not in answer:
      chunk = sock.recv(4096)
      if not chunk:
        break
      answer += chunk
    waited = time.monotonic() - start
  assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
  assert BODY_TIMEOUT * 0.8 <= waited < BODY_TIMEOUT + 5
  _good_rest(served["client"])


def test_a_second_server_on_a_taken_port_is_refused(served):
  with pytest.raises(server.BindError, match="in use"):
    server.bind("127.0.0.1", served["rest"].port)
  store = ModelStore(NAME, served["base"])
  with pytest.raises(server.BindError, match="in use"):
    grpc_server.start(store, "127.0.0.1", served["grpc"].bound_port)
  # Calls still reach the one server there is.
  _call(served, "predict", {})


def test_a_host_that_is_not_this_machines_is_refused():
  with pytest.raises(server.BindError, match="not an address of this machine"):
    server.bind("999.1.1.1", 0)


def test_mnist_tfx_serve_on_a_taken_grpc_port_exits_with_one_line(served):
  """A second `mnist-tfx serve`, another REST port, the same gRPC port."""
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "mnist_tfx", "serve", "--model-base-path",
       served["base"], "--rest-port", "0", "--grpc-port",
       str(served["grpc"].bound_port)], cwd=root, capture_output=True, text=True,
      timeout=120, env=dict(os.environ, PYTHONPATH=root))
  assert proc.returncode == 1
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert lines[-1] == (f"mnist-tfx serve: cannot listen for gRPC on 127.0.0.1:"
                       f"{served['grpc'].bound_port}: the port is in use (another "
                       "mnist-tfx serve?) or the address is not this machine's")
  assert "Traceback" not in proc.stderr
  _call(served, "predict", {})  # the first server still answers
