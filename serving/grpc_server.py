"""TensorFlow Serving's gRPC API over the ModelStore, with grpcio.

`tensorflow.serving.PredictionService` (Predict, GetModelMetadata) and
`tensorflow.serving.ModelService` (GetModelStatus), built on the protos and
servicer bases of `tensorflow-serving-api`, so TF Serving's own stubs work.
As in TF Serving, an input tensor must have the signature's dtype (uint8
pixels go to `serving_uint8`).
"""

from concurrent import futures
from typing import Optional

import grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from components import features
from serving import service
from serving.batching import Batcher
from serving.model_store import ModelStore, ServingError

_STATES = {"LOADING": 20, "AVAILABLE": 30, "END": 50}  # ModelVersionStatus.State


def _version(model_spec) -> Optional[int]:
  return model_spec.version.value if model_spec.HasField("version") else None


def _abort(context: grpc.ServicerContext, e: ServingError) -> None:
  context.abort(getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNKNOWN), e.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, store: ModelStore, batcher: Optional[Batcher] = None):
    self.store = store
    self.batcher = batcher

  def Predict(self, request, context):  # pylint: disable=invalid-name
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
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
        inputs[key] = tf.make_ndarray(proto)
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
        response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
      return response
    except ServingError as e:
      _abort(context, e)

  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    try:
      if list(request.metadata_field) != ["signature_def"]:
        raise ServingError("INVALID_ARGUMENT", "metadata_field must be "
                           "['signature_def']")
      servable = self.store.get(request.model_spec.name, _version(request.model_spec))
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      response.model_spec.name = request.model_spec.name
      response.model_spec.version.value = servable.version
      response.metadata["signature_def"].Pack(service.signature_def_map(servable))
      return response
    except ServingError as e:
      _abort(context, e)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, store: ModelStore):
    self.store = store

  def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    try:
      response = get_model_status_pb2.GetModelStatusResponse()
      for s in self.store.status(request.model_spec.name, _version(request.model_spec)):
        status = response.model_version_status.add()
        status.version = s.version
        status.state = _STATES.get(s.state, 0)
        status.status.error_code = 0 if s.error_code == "OK" else 2  # OK / UNKNOWN
        status.status.error_message = s.error_message
      return response
    except ServingError as e:
      _abort(context, e)


def start(store: ModelStore, host: str, port: int, max_workers: int = 16,
          max_message_bytes: int = 8 * 1024 * 1024,
          batcher: Optional[Batcher] = None) -> grpc.Server:
  """Starts the gRPC server; `server.bound_port` is the port it listens on."""
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                       options=[("grpc.max_receive_message_length", max_message_bytes)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(store, batcher), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(store), server)
  server.bound_port = server.add_insecure_port(f"{host}:{port}")
  server.start()
  return server
