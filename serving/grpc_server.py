"""TensorFlow Serving's gRPC API over the ModelStore, with grpcio's asyncio server.

`tensorflow.serving.PredictionService` (Predict, GetModelMetadata) and
`tensorflow.serving.ModelService` (GetModelStatus), built on the protos and
servicer bases of `tensorflow-serving-api`, so TF Serving's own stubs work.
As in TF Serving, an input tensor must have the signature's dtype (uint8
pixels go to `serving_uint8`).

The server runs on an event loop, the REST server's in `mnist-tfx serve`:
small predictions share the REST API's greedy batcher (one model call for
requests that arrive together over either API) and run on the loop, as
REST's do; large ones and timed-batched ones run in worker threads.
"""

import asyncio
import functools
import gc
import logging
import math
import threading
import time
from concurrent import futures
from typing import Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf  # loaded with its protos below in any case
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from components import features
from mnist_tfx import defaults
from serving import service
from serving.batching import Batcher, GreedyBatcher
from serving.model_store import ModelStore, ServingError

_STATES = {"LOADING": 20, "AVAILABLE": 30, "END": 50}  # ModelVersionStatus.State


_LOG = logging.getLogger(__name__)


def _version(model_spec) -> Tuple[Optional[int], Optional[str]]:
  """(version, label) of a ModelSpec (its version_choice oneof)."""
  choice = model_spec.WhichOneof("version_choice")
  if choice == "version":
    return model_spec.version.value, None
  if choice == "version_label":
    return None, model_spec.version_label or None
  return None, None


def _guarded(method):
  """ServingError -> its status code; any other error -> INTERNAL, logged once.

  Each call is counted in the metrics as TF Serving counts it (model name,
  status code; latency of the successful ones).
  """
  api = method.__name__

  @functools.wraps(method)
  async def wrapper(self, request, context):
    started = time.perf_counter()
    try:
      response = await method(self, request, context)
      self._record(request, api, "OK", started)
      return response
    except ServingError as e:
      code = getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNKNOWN)
      message = e.message
    except Exception as e:  # pylint: disable=broad-except
      _LOG.error("internal error in %s: %r", method.__name__, e)
      code = grpc.StatusCode.INTERNAL
      message = f"internal error: {type(e).__name__}"
    self._record(request, api, code.name, started)
    await context.abort(code, message)
  return wrapper


class _Recorded:
  """A servicer whose calls `_guarded` counts in `metrics` (if any)."""
  metrics = None

  def _record(self, request, api: str, status: str, started: float) -> None:
    if self.metrics is not None:
      self.metrics.request(request.model_spec.name, api, "GRPC", status, started)


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


@functools.lru_cache(maxsize=None)
def _numpy_dtype(enum: int) -> np.dtype:
  """A TensorProto dtype's numpy dtype (TF's own mapping, looked up once)."""
  return np.dtype(tf.dtypes.as_dtype(enum).as_numpy_dtype)


@functools.lru_cache(maxsize=None)
def _proto_dtype(dtype: np.dtype) -> int:
  """A numpy dtype's TensorProto dtype (TF's own mapping, looked up once)."""
  return tf.dtypes.as_dtype(dtype).as_datatype_enum


def to_array(proto, key: str, max_elements: int) -> np.ndarray:
  """A TensorProto as a numpy array, checked *before* anything is allocated.

  The declared shape must be known and non-negative, hold at most
  `max_elements` values, and match the values sent exactly: TensorFlow
  would broadcast one value over any shape (a 45-byte request allocating
  gigabytes). Integer values must fit the dtype.
  """
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
  dtype = _numpy_dtype(proto.dtype)
  content = proto.tensor_content
  if content:
    if proto.dtype == types_pb2.DT_STRING:
      raise ServingError("INVALID_ARGUMENT", f"input {key}: strings cannot "
                         "use tensor_content")
    if len(content) != count * dtype.itemsize:
      raise ServingError("INVALID_ARGUMENT", f"input {key}: shape {dims} needs "
                         f"{count * dtype.itemsize} bytes of tensor_content, got "
                         f"{len(content)}")
    if dtype.kind in "iuf":
      # What tf.make_ndarray does for raw bytes, without its dtype lookups.
      return np.frombuffer(content, dtype=dtype).copy().reshape(dims)
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
  if array.dtype.kind not in "iuf" or array.dtype.byteorder == ">":
    proto.CopyFrom(tf.make_tensor_proto(array))
    return
  proto.dtype = _proto_dtype(array.dtype)
  dims = proto.tensor_shape.dim
  for size in array.shape:
    dims.add(size=size)
  proto.tensor_content = array.tobytes()  # C order, contiguous or not


class PredictionService(_Recorded,
                        prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, store: ModelStore, batcher: Optional[Batcher] = None,
               max_elements: int = defaults.MAX_TENSOR_ELEMENTS,
               greedy: Optional[GreedyBatcher] = None, metrics=None,
               request_log=None):
    self.store = store
    self.metrics = metrics
    self.request_log = request_log
    self.batcher = batcher
    self.max_elements = max_elements
    # The timed batcher (--enable-batching) wins over the greedy one.
    self.greedy = greedy if batcher is None else None

  @_guarded
  async def Predict(self, request, context):  # pylint: disable=invalid-name
    servable, signature, fn, inputs = self._inputs(request)
    if self.batcher is None and request.ByteSize() <= defaults.INLINE_MAX_BYTES:
      if self.greedy is not None:
        # Requests that arrive together, over either API, share one call.
        outputs = await service.run_greedy(self.greedy, servable, signature, fn,
                                           inputs)
      else:
        outputs = service.run(None, servable, signature, fn, inputs)
    else:
      # Large requests, and timed-batched ones (which wait for their
      # batch), run in a thread: the event loop keeps serving others.
      outputs = await asyncio.get_running_loop().run_in_executor(
          None, service.run, self.batcher, servable, signature, fn, inputs)
    response = self._response(request, servable, signature, outputs)
    if self.request_log is not None:
      self.request_log.offer(request.model_spec.name, servable.version, signature,
                             inputs, outputs)
    return response

  def _inputs(self, request):
    """(servable, signature name, its function, inputs as numpy arrays)."""
    servable = self.store.get(request.model_spec.name, *_version(request.model_spec))
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
    return servable, signature, fn, inputs

  @staticmethod
  def _response(request, servable, signature, outputs):
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
  async def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    if list(request.metadata_field) != ["signature_def"]:
      raise ServingError("INVALID_ARGUMENT", "metadata_field must be "
                         "['signature_def']")
    servable = self.store.get(request.model_spec.name, *_version(request.model_spec))
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = servable.version
    response.metadata["signature_def"].Pack(service.signature_def_map(servable))
    return response


class ModelService(_Recorded, model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, store: ModelStore, metrics=None):
    self.store = store
    self.metrics = metrics

  @_guarded
  async def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    response = get_model_status_pb2.GetModelStatusResponse()
    for s in self.store.status(request.model_spec.name, *_version(request.model_spec)):
      status = response.model_version_status.add()
      status.version = s.version
      status.state = _STATES.get(s.state, 0)
      status.status.error_code = 0 if s.error_code == "OK" else 2  # OK / UNKNOWN
      status.status.error_message = s.error_message
    return response


class BindError(RuntimeError):
  """A port is taken (another server?) or the host is not this machine's."""


async def start_async(store: ModelStore, host: str, port: int,
                      max_message_bytes: int = defaults.MAX_PAYLOAD_BYTES,
                      batcher: Optional[Batcher] = None,
                      greedy: Optional[GreedyBatcher] = None, metrics=None,
                      request_log=None) -> grpc.aio.Server:
  """Starts the gRPC server on the running loop; `server.bound_port` is its port.

  The port is bound exclusively: grpcio would otherwise share it with
  another server (SO_REUSEPORT) and split calls between two models.
  """
  server = grpc.aio.server(options=[
      ("grpc.max_receive_message_length", max_message_bytes),
      ("grpc.so_reuseport", 0)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(store, batcher, max_elements=max_message_bytes,
                        greedy=greedy, metrics=metrics, request_log=request_log),
      server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(
      ModelService(store, metrics), server)
  try:
    bound_port = server.add_insecure_port(f"{host}:{port}")
  except RuntimeError:  # newer grpcio raises where older returned 0
    bound_port = 0
  if not bound_port:
    await server.stop(None)
    # Freed now, while threads still run: left to the interpreter's exit
    # (held by this frame, which the error's traceback keeps), grpcio's
    # last aio object joins its poller thread there and the exit hangs.
    del server
    gc.collect()
    raise BindError(f"cannot listen for gRPC on {host}:{port}: the port is in "
                    "use (another mnist-tfx serve?) or the address is not "
                    "this machine's")
  server.bound_port = bound_port
  await server.start()
  return server


def new_loop() -> asyncio.AbstractEventLoop:
  """The event loop the servers run on: uvloop's, with worker threads for
  large and timed-batched requests."""
  import uvloop  # pylint: disable=g-import-not-at-top
  loop = uvloop.new_event_loop()
  loop.set_default_executor(futures.ThreadPoolExecutor(
      max_workers=defaults.WORKER_THREADS, thread_name_prefix="serving"))
  return loop


class LoopThread:
  """An event loop running in a daemon thread, for servers embedded in a
  process that has its own work (tests, notebooks)."""

  def __init__(self):
    self.loop = new_loop()
    self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                    name="serving-loop")
    self._thread.start()

  def run(self, coroutine, timeout: Optional[float] = None):
    """Runs a coroutine on the loop and returns its result (or raises)."""
    return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

  def close(self) -> None:
    self.loop.call_soon_threadsafe(self.loop.stop)
    self._thread.join(timeout=10)
    if not self._thread.is_alive():
      self.loop.close()


class ThreadedServer:
  """A gRPC server on its own loop thread: `bound_port`, `stop(grace)`."""

  def __init__(self, loop_thread: LoopThread, server: grpc.aio.Server):
    self._loop_thread = loop_thread
    self._server = server
    self.bound_port = server.bound_port

  def stop(self, grace: Optional[float] = None) -> None:
    try:
      self._loop_thread.run(self._server.stop(grace), timeout=30)
    finally:
      self._loop_thread.close()


def start(store: ModelStore, host: str, port: int,
          max_message_bytes: int = defaults.MAX_PAYLOAD_BYTES,
          batcher: Optional[Batcher] = None,
          greedy: Optional[GreedyBatcher] = None) -> ThreadedServer:
  """`start_async` on a loop of its own in a thread; raises BindError."""
  loop_thread = LoopThread()
  try:
    server = loop_thread.run(start_async(store, host, port, max_message_bytes,
                                         batcher, greedy), timeout=30)
  except BaseException:
    loop_thread.close()
    raise
  return ThreadedServer(loop_thread, server)
