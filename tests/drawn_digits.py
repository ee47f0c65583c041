"""Digits drawn as strokes, as a hand on the page draws them, for tests.

Each digit is a polyline in a unit box; a sample is that polyline under a
random affine jitter, drawn with a round pen at 280x280 and preprocessed as
`mnist-tfx predict` does (serving.client): a model fit on a few hundred of
them reads the same strokes drawn on the page's canvas. Nothing here is
MNIST's data.
"""

import io
import os
from typing import List, Sequence, Tuple

import numpy as np

from components import features, idx

Stroke = List[Tuple[float, float]]  # (x, y) in [0, 1], y down
STROKES = {
    0: [[(0.5, 0.1), (0.25, 0.25), (0.2, 0.5), (0.25, 0.75), (0.5, 0.9), (0.75, 0.75),
         (0.8, 0.5), (0.75, 0.25), (0.5, 0.1)]],
    1: [[(0.5, 0.1), (0.5, 0.9)]],
    2: [[(0.2, 0.25), (0.5, 0.1), (0.8, 0.25), (0.2, 0.9), (0.8, 0.9)]],
    3: [[(0.2, 0.1), (0.8, 0.1), (0.5, 0.45), (0.8, 0.7), (0.5, 0.9), (0.2, 0.8)]],
    4: [[(0.7, 0.9), (0.7, 0.1), (0.2, 0.6), (0.85, 0.6)]],
    5: [[(0.8, 0.1), (0.25, 0.1), (0.2, 0.45), (0.7, 0.45), (0.8, 0.7), (0.5, 0.9),
         (0.2, 0.8)]],
    6: [[(0.7, 0.1), (0.3, 0.5), (0.25, 0.8), (0.5, 0.9), (0.75, 0.75), (0.5, 0.55),
         (0.28, 0.65)]],
    7: [[(0.2, 0.1), (0.8, 0.1), (0.4, 0.9)]],
    8: [[(0.5, 0.5), (0.25, 0.3), (0.5, 0.1), (0.75, 0.3), (0.5, 0.5), (0.2, 0.72),
         (0.5, 0.9), (0.8, 0.72), (0.5, 0.5)]],
    9: [[(0.75, 0.35), (0.5, 0.5), (0.25, 0.3), (0.5, 0.1), (0.75, 0.3), (0.7, 0.9)]],
}
SIDE = 280  # the page's canvas


def jittered(strokes: Sequence[Stroke], rng: np.random.Generator) -> List[Stroke]:
  """`strokes` under a random rotation, shear, scale and shift (about the centre)."""
  angle, shear = rng.uniform(-0.15, 0.15), rng.uniform(-0.2, 0.2)
  scale = rng.uniform(0.75, 1.05, size=2)
  shift = rng.uniform(-0.08, 0.08, size=2)
  c, s = np.cos(angle), np.sin(angle)
  m = np.array([[c, -s], [s, c]]) @ np.array([[1, shear], [0, 1]]) @ np.diag(scale)
  out = []
  for stroke in strokes:
    p = (np.asarray(stroke) - 0.5) @ m.T + 0.5 + shift
    p += rng.normal(0, 0.015, size=p.shape)
    out.append([tuple(q) for q in p])
  return out


def draw(strokes: Sequence[Stroke], width: float = SIDE / 12) -> bytes:
  """A PNG of `strokes`: black ink on white, as the page's canvas holds it."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  image = Image.new("L", (SIDE, SIDE), 255)
  pen = ImageDraw.Draw(image)
  for stroke in strokes:
    points = [(x * SIDE, y * SIDE) for x, y in stroke]
    pen.line(points, fill=0, width=int(width), joint="curve")
    for x, y in (points[0], points[-1]):
      pen.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=0)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


def samples(n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """n (28x28 uint8 images, labels), every digit equally often."""
  from serving.client import load_digit  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % features.NUM_CLASSES
  rng.shuffle(labels)
  images = np.zeros((n,) + features.IMAGE_SHAPE, np.uint8)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "digit.png")
    for i, label in enumerate(labels):
      with open(path, "wb") as f:
        f.write(draw(jittered(STROKES[int(label)], rng), rng.uniform(SIDE / 16, SIDE / 10)))
      images[i] = load_digit(path)
  return images, labels.astype(np.uint8)


def write_dataset(directory: str, n_train: int = 800, n_eval: int = 200) -> str:
  """train/t10k IDX files of drawn digits in `directory`."""
  os.makedirs(directory, exist_ok=True)
  for stem, n, seed in (("train", n_train, 1), ("t10k", n_eval, 2)):
    images, labels = samples(n, seed)
    idx.write_images(os.path.join(directory, f"{stem}-images-idx3-ubyte.gz"), images, True)
    idx.write_labels(os.path.join(directory, f"{stem}-labels-idx1-ubyte.gz"), labels, True)
  return directory
