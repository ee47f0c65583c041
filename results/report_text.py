"""The report for the terminal: one run's table, and two runs side by side."""

import os
from typing import List, Tuple

from mnist_tfx.defaults import TENSORBOARD_DIR
from results.run_view import RunView, gather
from results.summary import search_line, trials_table, writers_line


def table(view: RunView) -> str:
  e, s = view.evaluation, view.summary
  baseline = e.baseline_per_class_accuracy or {}
  lines = [f"Model {s['model']} (hidden layers {s['hyperparameters']['hidden_units']}, "
           f"{s.get('train_examples')} train examples" + (
               f", fit on {s['fit_examples']} and {s['validation_examples']} held out"
               if s.get("validation_examples") else "") +
           f"): accuracy {e.accuracy:.4f} on "
           f"{e.example_count} eval examples" + (f" (last blessed model: {e.baseline_accuracy:.4f}, "
                              f"{e.accuracy - e.baseline_accuracy:+.4f})"
                              if e.baseline_accuracy is not None else "")]
  if s.get("tuning"):
    lines.append(search_line(s["tuning"]))
    head, rows = trials_table(s["tuning"])
    widths = [max(len(c) for c in column) for column in zip(head, *rows)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths))
              for row in [head] + rows]
  header = f"{'digit':>5}  {'accuracy':>8}  {'precision':>9}  {'count':>5}"
  if baseline:
    header += f"  {'baseline':>8}  {'change':>7}"
  lines.append(header)
  for d, acc in e.per_class_accuracy.items():
    row = (f"{d:>5}  {acc:8.4f}  {view.precision[d]:9.4f}  "
           f"{e.per_class_count[d]:5d}")
    if d in baseline:
      row += f"  {baseline[d]:8.4f}  {acc - baseline[d]:+7.4f}"
    lines.append(row)
  if s.get("per_writer_accuracy"):
    lines.append(writers_line(s))
  lines.append("Most frequent confusions: " + ", ".join(
      f"{t}->{p} ({n})" for t, p, n in view.confusions) if view.confusions
               else "Most frequent confusions: none")
  if view.calibration is not None:
    lines.append(f"Calibration: ECE {view.calibration.ece:.4f} (top-class probability, "
                 f"{len(view.calibration.bins)} equal-width bins; 0 is perfect)")
  lines.append(f"Blessed: {'yes' if s['blessed'] else 'no'} - {s['blessing']}")
  lines += [f"{label}: {command}" for label, command in tensorboard_commands(s)]
  return "\n".join(lines)


# Run from the checkout, as `make run` installs it.
TENSORBOARD = ".venv/bin/tensorboard"


def tensorboard_commands(summary) -> List[Tuple[str, str]]:
  """(label, the command a user runs from the checkout) per TensorBoard log dir."""
  found = []
  board = tensorboard_dir(summary)
  if board:
    found.append(("TensorBoard", f"{TENSORBOARD} --logdir {board}"))
  trials = (summary.get("tuning") or {}).get("tensorboard")
  if trials:
    found.append(("TensorBoard (the search's trials)", f"{TENSORBOARD} --logdir {trials}"))
  return found


def tensorboard_dir(summary) -> str:
  """The Trainer's TensorBoard logs of this run, or "" when it wrote none."""
  path = os.path.join(summary.get("artifacts", {}).get("Trainer.model_run", ""),
                      TENSORBOARD_DIR)
  return path if os.path.isdir(path) else ""


def compare(run_a: str, run_b: str) -> str:
  """Two runs side by side, overall and per digit (TFMA's figures)."""
  a, b = (gather(r, with_predictions=False) for r in (run_a, run_b))
  name_a = f"A: {a.summary['model']}"
  name_b = f"B: {b.summary['model']}"
  lines = [f"A = {run_a}", f"B = {run_b}",
           f"{'':>8}  {name_a:>12}  {name_b:>12}  {'B - A':>8}",
           f"{'overall':>8}  {a.evaluation.accuracy:12.4f}  "
           f"{b.evaluation.accuracy:12.4f}  "
           f"{b.evaluation.accuracy - a.evaluation.accuracy:+8.4f}"]
  for d, acc_a in a.evaluation.per_class_accuracy.items():
    acc_b = b.evaluation.per_class_accuracy.get(d, float("nan"))
    lines.append(f"{'digit ' + d:>8}  {acc_a:12.4f}  {acc_b:12.4f}  {acc_b - acc_a:+8.4f}")
  return "\n".join(lines)
