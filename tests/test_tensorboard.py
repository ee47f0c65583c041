"""TensorBoard starts as the report says and shows the Trainer's scalars."""

import json
import os

from results import report_text
from tests import tensorboard_check


def test_tensorboard_starts_as_the_report_says_and_serves_the_trainers_scalars(
    tiny_run_dir):
  with open(os.path.join(tiny_run_dir, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  commands = dict(report_text.tensorboard_commands(summary))
  command = commands["TensorBoard"]
  assert command.startswith(".venv/bin/tensorboard --logdir ")
  tags = tensorboard_check.scalar_tags(command)
  assert {"epoch_accuracy", "epoch_loss"} <= set(tags["train"]), tags
  assert {"epoch_accuracy", "epoch_loss"} <= set(tags["validation"]), tags
