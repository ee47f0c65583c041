"""Tiny, learnable IDX datasets that tests write for themselves.

Class c is a bright 7x7 block at a position of its own on a noisy background,
so one epoch over a few hundred images separates the classes well.
"""

import os
from typing import Tuple

import numpy as np

from components import features, idx


def make_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  n = len(labels)
  images = rng.integers(0, 60, size=(n,) + features.IMAGE_SHAPE, dtype=np.uint8)
  for i, c in enumerate(labels):
    r, col = 1 + 6 * (int(c) // 3), 2 + 8 * (int(c) % 3)
    images[i, r:r + 7, col:col + 7] = rng.integers(180, 256, size=(7, 7))
  return images


def write_dataset(directory: str, n_train: int = 300, n_eval: int = 100,
                  compress: bool = True, seed: int = 0) -> Tuple[str, str]:
  """Writes train/t10k IDX pairs into `directory`; returns (dir, suffix)."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  suffix = ".gz" if compress else ""
  for stem, n in (("train", n_train), ("t10k", n_eval)):
    labels = np.arange(n) % features.NUM_CLASSES
    rng.shuffle(labels)
    labels = labels.astype(np.uint8)
    idx.write_images(os.path.join(directory, f"{stem}-images-idx3-ubyte{suffix}"),
                     make_images(labels, seed + n), compress)
    idx.write_labels(os.path.join(directory, f"{stem}-labels-idx1-ubyte{suffix}"),
                     labels, compress)
  return directory, suffix
