"""`mnist-tfx predict`: digit pictures in, predictions out (REST, gRPC or local).

A picture of any size or colour is made to look like MNIST: grey, light ink
on dark (inverted when drawn dark on light), cropped to the ink, scaled to
fit 20x20 and centred by its centre of mass in 28x28, as MNIST's digits were.
"""

import os
from typing import Dict, List, Optional

import numpy as np

from components import features
from mnist_tfx import defaults


def load_digit(path: str) -> np.ndarray:
  """uint8 [28, 28], MNIST-like, from a PNG/JPEG of any size or colour."""
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
  try:
    image = ImageOps.exif_transpose(Image.open(path))
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable image ({e})") from e
  if image.mode in ("RGBA", "LA", "P"):
    image = image.convert("RGBA")
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    image = Image.alpha_composite(background, image)  # transparent = paper
  grey = np.asarray(image.convert("L"), dtype=np.float32)
  if np.median(grey) > 127:  # dark ink on light paper
    grey = 255.0 - grey
  grey -= np.median(grey)  # paper to 0
  grey = np.clip(grey, 0, None)
  if grey.max() <= 0:
    raise ValueError(f"{path}: no digit found (the image is blank)")
  grey = grey * (255.0 / grey.max())
  rows = np.flatnonzero(grey.max(axis=1) > 25)
  cols = np.flatnonzero(grey.max(axis=0) > 25)
  crop = grey[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  h, w = crop.shape
  scale = 20.0 / max(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(
      size, Image.LANCZOS), dtype=np.float32)
  canvas = np.zeros(features.IMAGE_SHAPE, np.float32)
  top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
  canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
  ys, xs = np.indices(canvas.shape)
  mass = canvas.sum()
  dy = int(round(13.5 - (ys * canvas).sum() / mass))
  dx = int(round(13.5 - (xs * canvas).sum() / mass))
  canvas = np.roll(canvas, (dy, dx), axis=(0, 1))
  return np.clip(canvas, 0, 255).astype(np.uint8)


def predict_local(images: np.ndarray, model_dir: str) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from components.model_layout import versions as list_versions  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
    versions = list_versions(model_dir)
    if not versions:
      raise ValueError(f"{model_dir}: no SavedModel or numeric versions; run "
                       "`make run` first or pass --model-dir")
    model_dir = versions[max(versions)]
  fn = tf.saved_model.load(model_dir).signatures[features.UINT8_SIGNATURE]
  return fn(images=tf.constant(images))[features.PROBABILITIES_KEY].numpy()


def predict_rest(images: np.ndarray, url: str, name: str) -> np.ndarray:
  import httpx  # pylint: disable=g-import-not-at-top
  try:
    r = httpx.post(f"{url.rstrip('/')}/v1/models/{name}:predict",
                   json={"signature_name": features.UINT8_SIGNATURE,
                         "instances": images.tolist()}, timeout=60)
  except httpx.HTTPError as e:
    raise ValueError(f"cannot reach {url} ({e}); is `mnist-tfx serve` "
                     "running? Or use --model-dir") from e
  if r.status_code != 200:
    raise ValueError(f"{url}: {r.status_code} {r.text}")
  return np.array([p[features.PROBABILITIES_KEY] for p in r.json()["predictions"]])


def predict_grpc(images: np.ndarray, target: str, name: str) -> np.ndarray:
  import grpc  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  request = predict_pb2.PredictRequest()
  request.model_spec.name = name
  request.model_spec.signature_name = features.UINT8_SIGNATURE
  request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(images))
  with grpc.insecure_channel(target) as channel:
    try:
      response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
          request, timeout=60)
    except grpc.RpcError as e:
      raise ValueError(f"{target}: {e.code().name} {e.details()}") from e
  return tf.make_ndarray(response.outputs[features.PROBABILITIES_KEY])


def predict_files(paths: List[str], rest: Optional[str] = None,
                  grpc_target: Optional[str] = None, model_dir: Optional[str] = None,
                  name: str = defaults.MODEL_NAME) -> List[Dict[str, object]]:
  images = np.stack([load_digit(p) for p in paths])
  if rest:
    probabilities = predict_rest(images, rest, name)
  elif grpc_target:
    probabilities = predict_grpc(images, grpc_target, name)
  else:
    probabilities = predict_local(images, model_dir)
  return [{"file": p, "digit": int(np.argmax(pr)),
           "probabilities": [float(x) for x in pr]}
          for p, pr in zip(paths, probabilities)]
