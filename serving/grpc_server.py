"""TensorFlow Serving's gRPC API over the ModelStore, with grpcio.

`tensorflow.serving.PredictionService` (Predict, GetModelMetadata) and
`tensorflow.serving.ModelService` (GetModelStatus), built on the protos and
servicer bases of `tensorflow-serving-api`, so TF Serving's own stubs work.
As in TF Serving, an input tensor must have the signature's dtype (uint8
pixels go to `serving_uint8`).
"""

import functools
import logging
import math
from concurrent import futures
from typing import Optional

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from components import features
from mnist_tfx import defaults
from serving import service
from serving.batching import Batcher
from serving.model_store import ModelStore, ServingError

_STATES = {"LOADING": 20, "AVAILABLE": 30, "END": 50}  # ModelVersionStatus.State


_LOG = logging.getLogger(__name__)


def _version(model_spec) -> Optional[int]:
  return model_spec.version.value if model_spec.HasField("version") else None


def _abort(context: grpc.ServicerContext, e: ServingError) -> None:
  context.abort(getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNKNOWN), e.message)


def _guarded(method):
  """ServingError -> its status code; any other error -> INTERNAL, logged once."""
  @functools.wraps(method)
  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except ServingError as e:
      _abort(context, e)
    except Exception as e:  # pylint: disable=broad-except
      _LOG.error("internal error in %s: %r", method.__name__, e)
      context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
  return wrapper


# TensorProto's repeated field for each dtype (tensor.proto).
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_STRING: "string_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_HALF: "half_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
}


def to_array(proto, key: str, max_elements: int) -> np.ndarray:
  """A TensorProto as a numpy array, checked *before* anything is allocated.

  The declared shape must be known and non-negative, hold at most
  `max_elements` values, and match the values sent exactly: TensorFlow
  would broadcast one value over any shape (a 45-byte request allocating
  gigabytes). Integer values must fit the dtype.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if proto.tensor_shape.unknown_rank:
    raise ServingError("INVALID_ARGUMENT", f"input {key}: the shape must be known")
  dims = [d.size for d in proto.tensor_shape.dim]
  if any(d < 0 for d in dims):
    raise ServingError("INVALID_ARGUMENT", f"input {key}: negative dimension "
                       f"in shape {dims}")
  count = math.prod(dims)
  if count > max_elements:
    raise ServingError("RESOURCE_EXHAUSTED", f"input {key}: shape {dims} holds "
                       f"{count} values, more than the limit of {max_elements}")
  field = _VALUE_FIELDS.get(proto.dtype)
  if field is None:
    raise ServingError("INVALID_ARGUMENT", f"input {key}: unsupported dtype "
                       f"{tf.dtypes.as_dtype(proto.dtype).name}")
  dtype = np.dtype(tf.dtypes.as_dtype(proto.dtype).as_numpy_dtype)
  if proto.tensor_content:
    if proto.dtype == types_pb2.DT_STRING:
      raise ServingError("INVALID_ARGUMENT", f"input {key}: strings cannot "
                         "use tensor_content")
    if len(proto.tensor_content) != count * dtype.itemsize:
      raise ServingError("INVALID_ARGUMENT", f"input {key}: shape {dims} needs "
                         f"{count * dtype.itemsize} bytes of tensor_content, got "
                         f"{len(proto.tensor_content)}")
  else:
    values = getattr(proto, field)
    sent = len(values)
    if sent != count:
      raise ServingError("INVALID_ARGUMENT", f"input {key}: shape {dims} needs "
                         f"{count} values, got {sent}")
    if field == "int_val" and sent and dtype.kind in "iu":
      ints = np.asarray(values, dtype=np.int64)
      info = np.iinfo(dtype)
      if ints.min() < info.min or ints.max() > info.max:
        raise ServingError("INVALID_ARGUMENT", f"input {key}: values do not "
                           f"fit {dtype.name}")
  return tf.make_ndarray(proto)


def to_proto(array: np.ndarray, proto) -> None:
  """Fills a TensorProto as `tf.make_tensor_proto` does, without its cost.

  Numeric arrays go into `tensor_content` (raw little-endian bytes, as
  make_tensor_proto writes them); anything else takes the general path.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if array.dtype.kind not in "iuf" or array.dtype.byteorder == ">":
    proto.CopyFrom(tf.make_tensor_proto(array))
    return
  proto.dtype = tf.dtypes.as_dtype(array.dtype).as_datatype_enum
  for size in array.shape:
    proto.tensor_shape.dim.add().size = size
  proto.tensor_content = np.ascontiguousarray(array).tobytes()


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, store: ModelStore, batcher: Optional[Batcher] = None,
               max_elements: int = defaults.MAX_TENSOR_ELEMENTS):
    self.store = store
    self.batcher = batcher
    self.max_elements = max_elements

  @_guarded
  def Predict(self, request, context):  # pylint: disable=invalid-name
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    servable = self.store.get(request.model_spec.name, _version(request.model_spec))
    signature = request.model_spec.signature_name or features.SERVING_SIGNATURE
    fn, specs = service.input_specs(servable, signature)
    if set(request.inputs) != set(specs):
      raise ServingError("INVALID_ARGUMENT", f"signature \"{signature}\" takes "
                         f"inputs {sorted(specs)}, got {sorted(request.inputs)}")
    inputs = {}
    for key, proto in request.inputs.items():
      if proto.dtype != specs[key].dtype.as_datatype_enum:
        raise ServingError("INVALID_ARGUMENT", f"Expects arg {key} to be "
                           f"{specs[key].dtype.name} but "
                           f"{tf.dtypes.as_dtype(proto.dtype).name} is provided")
      inputs[key] = to_array(proto, key, self.max_elements)
    outputs = service.run(self.batcher, servable, signature, fn, inputs)
    wanted = list(request.output_filter) or list(outputs)
    unknown = set(wanted) - set(outputs)
    if unknown:
      raise ServingError("INVALID_ARGUMENT", f"unknown output_filter {sorted(unknown)}")
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature
    for key in wanted:
      to_proto(outputs[key], response.outputs[key])
    return response

  @_guarded
  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    if list(request.metadata_field) != ["signature_def"]:
      raise ServingError("INVALID_ARGUMENT", "metadata_field must be "
                         "['signature_def']")
    servable = self.store.get(request.model_spec.name, _version(request.model_spec))
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = servable.version
    response.metadata["signature_def"].Pack(service.signature_def_map(servable))
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, store: ModelStore):
    self.store = store

  @_guarded
  def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    response = get_model_status_pb2.GetModelStatusResponse()
    for s in self.store.status(request.model_spec.name, _version(request.model_spec)):
      status = response.model_version_status.add()
      status.version = s.version
      status.state = _STATES.get(s.state, 0)
      status.status.error_code = 0 if s.error_code == "OK" else 2  # OK / UNKNOWN
      status.status.error_message = s.error_message
    return response


class BindError(RuntimeError):
  """A port is taken (another server?) or the host is not this machine's."""


def start(store: ModelStore, host: str, port: int, max_workers: int = 16,
          max_message_bytes: int = defaults.MAX_PAYLOAD_BYTES,
          batcher: Optional[Batcher] = None) -> grpc.Server:
  """Starts the gRPC server; `server.bound_port` is the port it listens on.

  The port is bound exclusively: grpcio would otherwise share it with
  another server (SO_REUSEPORT) and split calls between two models.
  """
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                       options=[("grpc.max_receive_message_length", max_message_bytes),
                                ("grpc.so_reuseport", 0)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(store, batcher, max_elements=max_message_bytes), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(store), server)
  try:
    server.bound_port = server.add_insecure_port(f"{host}:{port}")
  except RuntimeError:  # newer grpcio raises where older returned 0
    server.bound_port = 0
  if not server.bound_port:
    server.stop(None)
    raise BindError(f"cannot listen for gRPC on {host}:{port}: the port is in "
                    "use (another mnist-tfx serve?) or the address is not "
                    "this machine's")
  server.start()
  return server
