"""`mnist-tfx predict`: digit pictures in, predictions out (REST, gRPC or local).

A picture of any size or colour is made to look like MNIST: grey, light ink
on dark (inverted when drawn dark on light), cropped to the ink, scaled to
fit 20x20 and centred by its centre of mass in 28x28, as MNIST's digits were.
Whatever the file or address, what cannot be used is a ValueError of one
line: a path that is not a readable file, a picture that is not one, is
damaged, has several frames or more pixels than `MAX_PICTURE_PIXELS` (a
decompression bomb is refused from its header, before it is decoded), a URL
or HOST:PORT that is not one.
"""

import ipaddress
import os
import urllib.parse
import warnings
from typing import Dict, List, Optional

import numpy as np

from components import features
from mnist_tfx import defaults


def _open_picture(path: str):
  """The picture at `path`, decoded, with every refusal as one line."""
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
  if os.path.isdir(path):
    raise ValueError(f"{path}: is a directory, not a picture")
  if not os.path.exists(path):
    raise ValueError(f"{path}: no such file")
  if os.path.getsize(path) == 0:
    raise ValueError(f"{path}: the file is empty")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      image = Image.open(path)
      width, height = image.size
      if width * height > defaults.MAX_PICTURE_PIXELS:
        raise ValueError(f"{path}: {width}x{height} pixels is more than this "
                         f"command reads ({defaults.MAX_PICTURE_PIXELS:,} at most)")
      frames = getattr(image, "n_frames", 1)
      if frames > 1:
        raise ValueError(f"{path}: has {frames} frames; give a still picture")
      image.load()
      return ImageOps.exif_transpose(image)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ValueError(f"{path}: more pixels than this command reads "
                     f"({defaults.MAX_PICTURE_PIXELS:,} at most; {e})") from e
  except PermissionError as e:
    raise ValueError(f"{path}: cannot read it ({e.strerror})") from e
  except (OSError, SyntaxError, EOFError) as e:
    # PIL: UnidentifiedImageError (not a picture), truncated or damaged data.
    raise ValueError(f"{path}: not a readable image ({e})") from e


def _grey(image) -> np.ndarray:
  """Grey levels 0-255 as float32, whatever the picture's mode."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey
    return (np.asarray(image, dtype=np.float64) / 257.0).astype(np.float32)
  if image.mode in ("I", "F"):  # 32-bit: scaled by its own range
    values = np.asarray(image, dtype=np.float64)
    top = values.max() if values.size and values.max() > 255 else 255.0
    return (np.clip(values, 0, None) * (255.0 / top)).astype(np.float32)
  if image.mode in ("RGBA", "LA", "P", "PA"):
    image = image.convert("RGBA")
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    image = Image.alpha_composite(background, image)  # transparent = paper
  return np.asarray(image.convert("L"), dtype=np.float32)  # RGB, CMYK, 1, L, ...


def load_digit(path: str) -> np.ndarray:
  """uint8 [28, 28], MNIST-like, from a PNG/JPEG of any size or colour."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grey = _grey(_open_picture(path))
  if grey.ndim != 2 or min(grey.shape) < 1:
    raise ValueError(f"{path}: not a two-dimensional picture")
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


def check_url(url: str) -> str:
  """A server's base URL, http(s)://HOST[:PORT], or a one-line ValueError."""
  try:
    parts = urllib.parse.urlsplit(url)
    port = parts.port
  except ValueError as e:
    raise ValueError(f"--rest {url!r}: not a URL ({e})") from None
  if (parts.scheme not in ("http", "https") or not parts.hostname
      or any(c.isspace() for c in url)):
    raise ValueError(f"--rest {url!r}: expected http://HOST:PORT, e.g. "
                     f"http://127.0.0.1:{defaults.REST_PORT}")
  del port  # parsed to check it: 0-65535
  return url


def check_target(target: str) -> str:
  """A gRPC HOST:PORT (a bracketed IPv6 address allowed), or a ValueError."""
  host, sep, port = target.rpartition(":")
  bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
  ok = bool(sep and bare and port.isdigit() and int(port) <= 65535)
  if ok and ":" in bare:
    try:
      ipaddress.IPv6Address(bare)
    except ValueError:
      ok = False
  if not ok or any(c in bare for c in "/ @?#"):
    raise ValueError(f"--grpc {target!r}: expected HOST:PORT, e.g. "
                     f"127.0.0.1:{defaults.GRPC_PORT}")
  return target


def predict_rest(images: np.ndarray, url: str, name: str) -> np.ndarray:
  import httpx  # pylint: disable=g-import-not-at-top
  check_url(url)
  try:
    r = httpx.post(f"{url.rstrip('/')}/v1/models/{name}:predict",
                   json={"signature_name": features.UINT8_SIGNATURE,
                         "instances": images.tolist()}, timeout=60)
  except (httpx.HTTPError, httpx.InvalidURL) as e:
    raise ValueError(f"cannot reach {url} ({e}); is `mnist-tfx serve` "
                     "running? Or use --model-dir") from e
  if r.status_code != 200:
    raise ValueError(f"{url}: {r.status_code} {r.text[:300]}")
  return np.array([p[features.PROBABILITIES_KEY] for p in r.json()["predictions"]])


def predict_grpc(images: np.ndarray, target: str, name: str) -> np.ndarray:
  import grpc  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  check_target(target)
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
  if rest:  # a bad address is said before any picture is read
    check_url(rest)
  elif grpc_target:
    check_target(grpc_target)
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
