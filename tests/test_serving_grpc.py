"""TF Serving's gRPC API, called with TF Serving's own stubs, on loopback."""

import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from components import pusher
from components.models import Hyperparameters, build_model
from components.trainer import export
from serving import grpc_server
from serving.model_store import ModelStore
from serving.server import RestServer
from tests import tiny_mnist

NAME = "mnist"


@pytest.fixture(scope="module")
def served(tft_output, tmp_path_factory):
  root = tmp_path_factory.mktemp("grpc")
  model_dir = str(root / "model")
  export.export(build_model(Hyperparameters(), 10), tft_output, model_dir)
  version = int(os.path.basename(pusher.push(model_dir, str(root / NAME), {})))
  store = ModelStore(NAME, str(root / NAME)).start()
  server = grpc_server.start(store, "127.0.0.1", 0)
  rest = RestServer(store, port=0).start()
  channel = grpc.insecure_channel(f"127.0.0.1:{server.bound_port}")
  yield {"channel": channel, "version": version, "model_dir": model_dir,
         "rest_port": rest.port}
  channel.close()
  rest.stop()
  server.stop(0)
  store.stop()


def _images(n=4):
  return tiny_mnist.make_images(np.arange(n), seed=11)


def _predict(channel, images, signature="", dtype=tf.float32, version=None):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = NAME
  if signature:
    request.model_spec.signature_name = signature
  if version is not None:
    request.model_spec.version.value = version
  request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=dtype))
  return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
      request, timeout=30)


def test_predict_with_the_official_stub(served):
  images = _images()
  response = _predict(served["channel"], images.astype(np.float32))
  probabilities = tf.make_ndarray(response.outputs["probabilities"])
  direct = tf.saved_model.load(served["model_dir"]).signatures["serving_default"](
      images=tf.constant(images, tf.float32))["probabilities"].numpy()
  np.testing.assert_allclose(probabilities, direct, rtol=1e-6)
  assert response.model_spec.version.value == served["version"]
  uint8 = _predict(served["channel"], images, "serving_uint8", tf.uint8)
  np.testing.assert_allclose(tf.make_ndarray(uint8.outputs["probabilities"]),
                             probabilities, rtol=1e-6)


def test_rest_grpc_and_savedmodel_agree(served):
  import httpx
  images = _images(6)
  grpc_p = tf.make_ndarray(_predict(served["channel"], images.astype(np.float32))
                           .outputs["probabilities"])
  rest_p = [p["probabilities"] for p in httpx.post(
      f"http://127.0.0.1:{served['rest_port']}/v1/models/{NAME}:predict",
      json={"instances": images.tolist()}, timeout=30).json()["predictions"]]
  direct = tf.saved_model.load(served["model_dir"]).signatures["serving_default"](
      images=tf.constant(images, tf.float32))["probabilities"].numpy()
  np.testing.assert_allclose(grpc_p, direct, rtol=1e-6)
  np.testing.assert_allclose(rest_p, direct, rtol=1e-6)


def test_large_requests_run_off_the_event_loop_with_the_same_answers(served):
  """Past defaults.INLINE_MAX_BYTES a call runs in a worker thread."""
  from mnist_tfx import defaults  # pylint: disable=g-import-not-at-top
  images = tiny_mnist.make_images(np.arange(64) % 10, seed=12).astype(np.float32)
  assert images.nbytes > defaults.INLINE_MAX_BYTES
  response = _predict(served["channel"], images)
  direct = tf.saved_model.load(served["model_dir"]).signatures["serving_default"](
      images=tf.constant(images))["probabilities"].numpy()
  np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]),
                             direct, rtol=1e-6)
  with pytest.raises(grpc.RpcError) as e:  # a bad large request: its own error
    _predict(served["channel"], np.full((64, 784), -1.0, np.float32))
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "0-255" in e.value.details()


def test_metadata_and_status(served):
  request = get_model_metadata_pb2.GetModelMetadataRequest()
  request.model_spec.name = NAME
  request.metadata_field.append("signature_def")
  response = prediction_service_pb2_grpc.PredictionServiceStub(
      served["channel"]).GetModelMetadata(request, timeout=30)
  sigs = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(sigs)
  assert set(sigs.signature_def) == {"serving_default", "serving_uint8", "from_examples"}
  assert sigs.signature_def["serving_default"].inputs["images"].dtype == 1  # DT_FLOAT
  status = model_service_pb2_grpc.ModelServiceStub(served["channel"]).GetModelStatus(
      get_model_status_pb2.GetModelStatusRequest(model_spec={"name": NAME}), timeout=30)
  (version_status,) = status.model_version_status
  assert version_status.version == served["version"]
  assert get_model_status_pb2.ModelVersionStatus.State.Name(version_status.state) == "AVAILABLE"


@pytest.mark.parametrize("call,code", [
    (lambda ch: _predict(ch, np.zeros((1, 28, 28), np.uint8), dtype=tf.uint8),
     grpc.StatusCode.INVALID_ARGUMENT),  # uint8 into the float signature
    (lambda ch: _predict(ch, np.full((1, 784), 999.0, np.float32)),
     grpc.StatusCode.INVALID_ARGUMENT),
    (lambda ch: _predict(ch, np.zeros((1, 5), np.float32)), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda ch: _predict(ch, np.zeros((1, 784), np.float32), version=123),
     grpc.StatusCode.NOT_FOUND),
    (lambda ch: _predict(ch, np.zeros((1, 784), np.float32), signature="nope"),
     grpc.StatusCode.INVALID_ARGUMENT),
])
def test_errors_carry_tf_serving_status_codes(served, call, code):
  with pytest.raises(grpc.RpcError) as e:
    call(served["channel"])
  assert e.value.code() == code
  _predict(served["channel"], np.zeros((1, 784), np.float32))  # still serving


_ARRAYS = [
    np.random.default_rng(0).random((3, 10)).astype(np.float32),
    np.random.default_rng(1).random((2, 28, 28)),  # float64
    np.random.default_rng(2).random((4, 3)).astype(np.float16),
    np.arange(3, dtype=np.int64), np.arange(-6, 6, dtype=np.int32).reshape(3, 4),
    np.arange(12, dtype=np.uint8).reshape(2, 6), np.zeros((0, 10), np.float32),
    np.random.default_rng(3).random((4, 6)).astype(np.float32)[:, ::2],  # not contiguous
    np.array([True, False]), np.array([b"a", b"bc"], dtype=object)]


@pytest.mark.parametrize("array", _ARRAYS)
def test_responses_encode_tensors_exactly_as_tensorflow_does(array):
  from tensorflow.core.framework import tensor_pb2
  from serving.grpc_server import to_proto
  proto = tensor_pb2.TensorProto()
  to_proto(array, proto)
  assert proto == tf.make_tensor_proto(array)


@pytest.mark.parametrize("array", _ARRAYS)
def test_requests_decode_tensors_exactly_as_tensorflow_does(array):
  """Raw bytes (what clients send for numbers) and typed value lists."""
  from serving.grpc_server import to_array
  protos = [tf.make_tensor_proto(array)]
  if array.dtype.kind in "iuf" and array.size:
    listed = tf.make_tensor_proto(array)  # the same values as a typed list
    field = {"f": "float_val", "i": "int_val", "u": "int_val"}[array.dtype.kind]
    field = {np.float64: "double_val", np.int64: "int64_val",
             np.float16: "half_val"}.get(array.dtype.type, field)
    values = (array.view(np.uint16) if array.dtype == np.float16 else array)
    listed.tensor_content = b""
    getattr(listed, field).extend(values.reshape(-1).tolist())
    protos.append(listed)
  for proto in protos:
    got, expected = to_array(proto, "x", 10**6), tf.make_ndarray(proto)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert got.flags.writeable  # a copy of the request's bytes, as TF's
