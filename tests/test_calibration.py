"""The expected calibration error, against a direct computation."""

import numpy as np
import pytest

from results.calibration import calibration


def test_ece_on_a_tiny_known_set():
  confidence = np.array([0.95, 0.95, 0.55, 0.55, 0.55, 0.30])
  correct = np.array([1, 0, 1, 1, 0, 0])
  c = calibration(confidence, correct, bins=10)
  # Bins (0.9, 1.0]: acc 0.5, conf 0.95; (0.5, 0.6]: acc 2/3, conf 0.55;
  # (0.2, 0.3]: acc 0, conf 0.30.
  expected = (2 * abs(0.5 - 0.95) + 3 * abs(2 / 3 - 0.55) + 1 * abs(0 - 0.30)) / 6
  assert c.ece == pytest.approx(expected)
  assert [b.count for b in c.bins] == [0, 0, 1, 0, 0, 3, 0, 0, 0, 2]


def test_perfectly_calibrated_and_edges():
  assert calibration(np.ones(4), np.ones(4)).ece == 0.0
  c = calibration(np.array([0.0, 1.0]), np.array([0, 1]), bins=15)
  assert c.bins[0].count == 1 and c.bins[-1].count == 1  # ends fall in the end bins
  assert c.ece == pytest.approx(0.0)
