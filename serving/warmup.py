"""Warm-up requests: TF Serving's `assets.extra/tf_serving_warmup_requests`.

A TFRecord file of `tensorflow.serving.PredictionLog` records inside a
version's directory. TF Serving replays them when it loads the version,
before the version is AVAILABLE; `mnist-tfx serve` does the same (up to
TF Serving's 1,000 records), so the first client request does not pay for
the graph's first run. A file that cannot be read or replayed fails the
version's load, as in TF Serving: a broken version is never served.

The records are written by the infra validator (components/infra_validator)
from training examples, one request per signature and example.
"""

import os
from typing import Any, Iterable, List

import numpy as np

from components import features
from mnist_tfx import defaults

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving's kMaxNumRecords
EXAMPLES = 4  # examples the infra validator turns into warm-up requests


def requests_for(examples: Iterable[bytes], model_name: str) -> List[Any]:
  """PredictRequests for serialized raw tf.Examples: each signature, each example."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  found = []
  for raw in examples:
    example = tf.train.Example.FromString(raw)
    image = np.array(example.features.feature[features.IMAGE_KEY].int64_list.value,
                     dtype=np.int64).reshape(1, features.IMAGE_SIZE)
    for signature, value in (
        (features.SERVING_SIGNATURE, image.astype(np.float32)),
        (features.UINT8_SIGNATURE, image.astype(np.uint8)),
        (features.EXAMPLES_SIGNATURE, np.array([raw], dtype=object))):
      request = predict_pb2.PredictRequest()
      request.model_spec.name = model_name
      request.model_spec.signature_name = signature
      key = (features.EXAMPLES_INPUT if signature == features.EXAMPLES_SIGNATURE
             else features.IMAGES_INPUT)
      request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
      found.append(request)
  return found


def write(model_dir: str, requests: List[Any]) -> str:
  """Writes the requests as PredictionLogs into `model_dir`'s warm-up file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, WARMUP_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for request in requests:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())
  return path


def read(model_dir: str) -> List[Any]:
  """The PredictRequests of a version's warm-up file ([] without one).

  Raises ValueError naming the file for a truncated or malformed one, or
  one with more than MAX_RECORDS records.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, WARMUP_FILE)
  if not tf.io.gfile.exists(path):
    return []
  found = []
  try:
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      if len(found) == MAX_RECORDS:
        raise ValueError(f"more than {MAX_RECORDS} warm-up records (TF Serving's "
                         "limit)")
      log = prediction_log_pb2.PredictionLog.FromString(record)
      if log.WhichOneof("log_type") != "predict_log":
        raise ValueError(f"record {len(found)} is a "
                         f"{log.WhichOneof('log_type') or 'empty'} log; only "
                         "predict logs are replayed here")
      found.append(log.predict_log.request)
  except (tf.errors.OpError, ValueError) as e:  # DataLossError: truncated
    message = getattr(e, "message", None) or str(e)
    raise ValueError(f"warm-up file {path}: {message.splitlines()[0]}") from None
  except Exception as e:  # pylint: disable=broad-except  # protobuf DecodeError
    raise ValueError(f"warm-up file {path}: not PredictionLog records "
                     f"({type(e).__name__})") from None
  return found


def replay(model: Any, model_dir: str) -> int:
  """Runs a loaded version's warm-up requests; the number replayed.

  Each request must run on its signature (as a client's would): a request
  the version refuses fails the load.
  """
  from serving import grpc_server, service  # pylint: disable=g-import-not-at-top
  requests = read(model_dir)
  for i, request in enumerate(requests):
    signature = request.model_spec.signature_name or features.SERVING_SIGNATURE
    fn = model.signatures.get(signature)
    if fn is None:
      raise ValueError(f"warm-up record {i}: no signature {signature!r}")
    inputs = {key: grpc_server.to_array(proto, key, defaults.MAX_TENSOR_ELEMENTS)
              for key, proto in request.inputs.items()}
    try:
      service.run_checked(fn, inputs)
    except service.ServingError as e:
      raise ValueError(f"warm-up record {i} ({signature}): {e.message}") from None
  return len(requests)
