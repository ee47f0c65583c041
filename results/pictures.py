"""The report's pictures (PNG, matplotlib/seaborn, no display needed)."""

from typing import Any, Dict, List

import numpy as np

from components import features
from results.calibration import Calibration
from results.run_view import Predictions


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: str) -> str:
  fig.savefig(path, dpi=100, bbox_inches="tight")
  _pyplot().close(fig)
  return path


def plot_confusion_matrix(matrix: List[List[int]], path: str) -> str:
  import seaborn as sns  # pylint: disable=g-import-not-at-top
  plt = _pyplot()
  counts = np.asarray(matrix)
  diagonal = np.eye(len(counts), dtype=bool)
  fig, ax = plt.subplots(figsize=(8, 7))
  # Two scales: one colour scale for all cells would be set by the diagonal
  # (~1,000) and leave every error cell (~1-12) near-white.
  sns.heatmap(counts, mask=diagonal, annot=True, fmt="d", cmap="Reds", ax=ax,
              vmin=0, vmax=max(1, int(counts[~diagonal].max(initial=0))),
              cbar_kws={"label": "errors (off the diagonal)"})
  sns.heatmap(counts, mask=~diagonal, annot=True, fmt="d", cmap="Greys", ax=ax,
              vmin=0, vmax=max(1, int(counts.max(initial=0))) * 3, cbar=False)
  ax.set_xlabel("Predicted label")
  ax.set_ylabel("True label")
  ax.set_title("Confusion matrix (TFMA, eval split)")
  return _save(fig, path)


def plot_grid(images: np.ndarray, titles: List[str], colors: List[str],
              path: str, title: str, cols: int = 5) -> str:
  plt = _pyplot()
  rows = max(1, -(-len(images) // cols))
  # Constrained layout: no blank band under the title or between rows.
  fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.85 * rows + 0.3),
                           squeeze=False, layout="constrained")
  for ax in axes.flat:
    ax.axis("off")
  for ax, image, text, color in zip(axes.flat, images, titles, colors):
    ax.imshow(image, cmap="gray_r")
    ax.set_title(text, color=color, fontsize=8)
  fig.suptitle(title)
  return _save(fig, path)


def plot_predictions(p: Predictions, path: str, n: int = 25) -> str:
  k = min(n, len(p.labels))
  return plot_grid(
      p.images[:k],
      [f"pred {p.predicted[i]} / true {p.labels[i]}" for i in range(k)],
      ["green" if p.predicted[i] == p.labels[i] else "red" for i in range(k)],
      path, "Sample predictions (eval split)")


def plot_mistakes(p: Predictions, path: str, n: int = 20) -> str:
  wrong = np.flatnonzero(p.predicted != p.labels)
  wrong = wrong[np.argsort(-p.confidence[wrong], kind="stable")][:n]
  if not len(wrong):
    return plot_grid(np.zeros((0,) + features.IMAGE_SHAPE), [], [], path,
                     "No wrong predictions on the eval split")
  return plot_grid(
      p.images[wrong],
      [f"pred {p.predicted[i]} ({p.confidence[i]:.2f}) / true {p.labels[i]}"
       for i in wrong], ["red"] * len(wrong), path,
      "Most confident wrong predictions")


def plot_training(history: Dict[str, Any], path: str) -> str:
  plt = _pyplot()
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  epochs_data = history["epochs"]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, metric in zip(axes, ("loss", "accuracy")):
    for key, label in ((metric, "train"), (f"val_{metric}", "validation (held out "
                                                            "of train)")):
      if key in epochs_data:
        values = epochs_data[key]
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    ax.set_xlabel("epoch")
    count = max((len(v) for v in epochs_data.values()), default=1)
    ax.set_xlim(0.5, count + 0.5)  # whole epochs only, one alone included
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch")
    ax.legend()
  return _save(fig, path)


def plot_calibration(c: Calibration, path: str) -> str:
  """The reliability diagram: accuracy against confidence, bin by bin."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 5.5), layout="constrained")
  filled = [b for b in c.bins if b.count]
  width = c.bins[0].upper - c.bins[0].lower
  ax.bar([b.lower for b in filled], [b.accuracy for b in filled], width=width,
         align="edge", edgecolor="black", color="#4c72b0", label="accuracy")
  ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
  for b in filled:
    ax.text(b.lower + width / 2, min(b.accuracy, 0.93) + 0.02, str(b.count),
            ha="center", fontsize=7, rotation=90)
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.05)
  ax.set_xlabel("top-class probability (bin; bar labels: examples)")
  ax.set_ylabel("accuracy in the bin")
  ax.set_title(f"Reliability diagram (eval split), ECE {c.ece:.4f}")
  ax.legend(loc="upper left")
  return _save(fig, path)
