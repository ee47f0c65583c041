"""Configuration and the command line: defaults, overrides, early errors."""

import argparse
import json
import os

import pytest

from mnist_tfx import cli
from pipeline.configs import PipelineConfig, with_overrides


def _config(*argv):
  return cli.config_from_args(cli.build_parser().parse_args(["run", *argv]))


def test_defaults_and_derived_paths():
  config = _config()
  assert config.output_dir == os.path.abspath("outputs")
  assert config.serving_base_uri == os.path.join(config.output_dir,
                                                 "serving_model", "mnist")
  assert config.metadata_uri.endswith("outputs/metadata.sqlite")
  assert config.effective_min_accuracy == 0.95
  assert config.beam_args == ["--direct_running_mode=in_memory",
                              "--direct_num_workers=1"]


def test_flags_override_hyperparameters_and_bounds():
  config = _config("--model", "basic", "--epochs", "3", "--hidden-units", "64,32",
                   "--learning-rate", "0.01", "--min-accuracy", "0.8",
                   "--beam-arg=--runner=DirectRunner", "--beam-arg=--direct_num_workers=2")
  hp = config.hyperparameters
  assert (hp.model, hp.epochs, hp.layers, hp.learning_rate) == (
      "basic", 3, (64, 32), 0.01)
  assert config.effective_min_accuracy == 0.8
  assert config.beam_args == ["--runner=DirectRunner", "--direct_num_workers=2"]


def test_basic_has_its_own_bound():
  assert _config("--model", "basic").effective_min_accuracy == 0.90


def test_uris_stay_uris():
  config = _config("--output-dir", "gs://bucket/run", "--data-dir", "gs://bucket/mnist")
  assert config.serving_base_uri == "gs://bucket/run/serving_model/mnist"
  assert config.data_dir == "gs://bucket/mnist"
  assert config.pipeline_root_uri == "gs://bucket/run/pipeline"
  # SQLite and logs cannot live on an object store: they stay local.
  assert config.metadata_uri == os.path.abspath("outputs/metadata.sqlite")


def test_config_file_then_flags(tmp_path):
  path = tmp_path / "c.json"
  path.write_text(json.dumps({"hyperparameters": {"model": "basic", "epochs": 2},
                              "max_regression": 0.01}))
  config = _config("--config", str(path), "--epochs", "4")
  assert config.hyperparameters.model == "basic"
  assert config.hyperparameters.epochs == 4 and config.max_regression == 0.01


def test_config_round_trips():
  config = with_overrides(PipelineConfig(), **{"hyperparameters.seed": 7})
  assert PipelineConfig.from_dict(config.to_dict()) == config


def test_unknown_config_key_is_an_error(tmp_path):
  path = tmp_path / "c.json"
  path.write_text(json.dumps({"epochs": 3}))
  with pytest.raises(ValueError, match="unknown config keys: epochs"):
    _config("--config", str(path))


def _commands():
  parser = cli.build_parser()
  (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
  return sub.choices


def test_every_argument_of_every_command_says_what_it_is_and_its_default():
  missing = []
  for name, parser in _commands().items():
    for action in parser._actions:
      if isinstance(action, argparse._HelpAction):
        continue
      flag = action.option_strings[0] if action.option_strings else action.dest
      default = action.default
      if not action.help:
        missing.append(f"{name} {flag}: no help")
      elif default not in (None, False) and str(default) not in action.help:
        missing.append(f"{name} {flag}: help does not give the default {default!r}")
  assert not missing, missing


def test_each_command_shows_only_the_flags_it_uses():
  flags = {name: {s for a in p._actions for s in a.option_strings}
           for name, p in _commands().items()}
  # A compiled pipeline has its orchestrator's store and no report.
  assert not {"--metadata-path", "--metadata-uri", "--no-report"} & flags["compile"]
  assert {"--metadata-path", "--metadata-uri", "--no-report"} <= flags["run"]
  assert not {"--runner", "--image", "--output"} & flags["run"]
  assert {"--data-dir", "--model", "--epochs", "--tune"} <= flags["compile"]


def test_the_help_and_the_docs_say_the_same_of_sigmoid_scores():
  (action,) = [a for a in _commands()["run"]._actions
               if "--output-activation" in a.option_strings]
  assert "softmax of the output layer's logits" in action.help
  assert "normalised to sum to 1" not in action.help
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, "docs", "design.md"), encoding="utf-8") as f:
    assert "softmax of the output layer's logits" in f.read()
