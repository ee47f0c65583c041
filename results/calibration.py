"""Calibration: when the model says 0.9, is it right nine times in ten?

The expected calibration error (ECE) over 15 equal-width bins of the top-class
probability: each bin's |accuracy - mean confidence|, weighted by its share
of the examples (Guo et al., 2017). 0 is perfectly calibrated.
"""

import dataclasses
from typing import List

import numpy as np

BINS = 15


@dataclasses.dataclass
class Bin:
  lower: float
  upper: float
  count: int
  confidence: float  # mean top-class probability (nan when empty)
  accuracy: float  # share of correct predictions (nan when empty)


@dataclasses.dataclass
class Calibration:
  ece: float
  bins: List[Bin]


def calibration(confidence: np.ndarray, correct: np.ndarray,
                bins: int = BINS) -> Calibration:
  """ECE and the reliability diagram's bins; bin i holds (i/bins, (i+1)/bins]."""
  confidence = np.asarray(confidence, dtype=np.float64)
  correct = np.asarray(correct, dtype=np.float64)
  edges = np.linspace(0.0, 1.0, bins + 1)
  index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
  counts = np.bincount(index, minlength=bins)
  with np.errstate(invalid="ignore"):
    mean_confidence = np.bincount(index, confidence, bins) / counts
    accuracy = np.bincount(index, correct, bins) / counts
  filled = counts > 0
  ece = float(np.sum(np.abs(accuracy[filled] - mean_confidence[filled])
                     * counts[filled]) / max(1, len(confidence)))
  return Calibration(ece, [
      Bin(float(edges[i]), float(edges[i + 1]), int(counts[i]),
          float(mean_confidence[i]), float(accuracy[i])) for i in range(bins)])
