"""The mnist-tfx DAG, shared by every runner.

ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> (gate) ->
Transform -> Trainer -> Evaluator (vs. the last blessed model) -> Pusher.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterable, List, Optional, Union

from tfx import v1 as tfx

import components
from components import baseline, evaluation, features
from components.data_validation import AnomaliesGate, CuratedSchemaGen
from components.example_gen import IdxExampleGen
from components.pusher import ServingPusher
from pipeline.configs import PipelineConfig

PREPROCESSING_FN = "components.transform.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.run.run_fn"
# Source files whose edits must invalidate each cached step (see
# `code_fingerprint`): a step's own package plus what it imports from us.
_TRANSFORM_CODE = ("transform", "features.py")
_TRAINER_CODE = ("trainer", "transform", "models.py", "features.py")
_EXAMPLE_GEN_CODE = ("example_gen.py", "idx.py", "features.py")



def code_fingerprint(names: Iterable[str]) -> str:
  """SHA-256 over the named files/packages of `components/`.

  Transform and Trainer load their code by Python path, and function
  components are keyed by class path only, so TFX would reuse their cached
  outputs after a code edit. Passing this digest as a parameter makes the
  edit part of the cache key, for exactly the code each step runs.
  """
  root = os.path.dirname(os.path.abspath(components.__file__))
  h = hashlib.sha256()
  for name in sorted(names):
    path = os.path.join(root, name)
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(path)
        for f in fs if f.endswith(".py"))
    for file in files:
      h.update(os.path.relpath(file, root).encode())
      with open(file, "rb") as f:
        h.update(f.read())
  return h.hexdigest()[:16]


# Beam options that tell a runner how workers get the job's Python code.
_DEPENDENCY_FLAGS = ("--extra_package", "--extra_packages", "--setup_file",
                     "--requirements_file", "--sdk_container_image",
                     "--worker_harness_container_image")


def with_dependencies(beam_args: List[str]) -> List[str]:
  """Beam args that ship this project to workers, unless they already say how.

  Workers need our components, not just TFX; and without such a flag every
  Beam component builds an sdist of the whole installed TFX package first
  (~1.4 s each, four per run), even for the in-process DirectRunner.
  """
  if any(a.split("=", 1)[0] in _DEPENDENCY_FLAGS for a in beam_args):
    return list(beam_args)
  setup_py = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(components.__file__))), "setup.py")
  if not os.path.exists(setup_py):  # installed as a wheel: rely on the image
    return list(beam_args)
  return list(beam_args) + [f"--setup_file={setup_py}"]


def _baseline_resolver(config: PipelineConfig,
                       candidate: tfx.dsl.Channel) -> tfx.dsl.Resolver:
  """The last blessed model, for the Evaluator's no-regression check."""
  model = tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model)
  blessing = tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing)
  if config.runner == "local":
    resolver = tfx.dsl.Resolver(
        strategy_class=baseline.LatestBlessedOtherModelStrategy,
        **{baseline.CANDIDATE_KEY: candidate, baseline.MODEL_KEY: model,
           baseline.BLESSING_KEY: blessing})
  else:
    # KFP v2 compiles only TFX's built-in strategies; its own caching
    # differs from the local runner's anyway.
    resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        **{baseline.MODEL_KEY: model, baseline.BLESSING_KEY: blessing})
  return resolver.with_id("latest_blessed_model_resolver")


def create_pipeline(config: PipelineConfig, data_dir: Union[str, Any],
                    data_fingerprint: str = "",
                    beam_args: Optional[List[str]] = None,
                    data_only: bool = False) -> tfx.dsl.Pipeline:
  """The pipeline for `config`, reading IDX files from `data_dir`.

  `data_dir` is a URI, or a RuntimeParameter for compiled pipelines.
  `data_fingerprint` identifies the input files for caching (see
  `example_gen.fingerprint`); orchestrators with their own caching pass "".
  `data_only` stops after Transform: the Beam-heavy half, for measuring and
  testing it on other Beam runners.
  """
  hp = config.hyperparameters
  example_gen = IdxExampleGen(
      input_base=data_dir,
      input_fingerprint=f"{data_fingerprint}|{code_fingerprint(_EXAMPLE_GEN_CODE)}")
  examples = example_gen.outputs["examples"]

  statistics_gen = tfx.components.StatisticsGen(examples=examples)
  schema_gen = CuratedSchemaGen(statistics=statistics_gen.outputs["statistics"])
  schema = schema_gen.outputs["schema"]
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema)
  anomalies_gate = AnomaliesGate(
      anomalies=example_validator.outputs["anomalies"], examples=examples,
      min_label_share=config.min_label_share,
      max_label_drift=config.max_label_drift)

  # No analyzer runs and the Trainer transforms raw examples itself, so
  # Transform only builds the graph: no materialized copy, no statistics.
  transform = tfx.components.Transform(
      examples=examples, schema=schema, preprocessing_fn=PREPROCESSING_FN,
      materialize=False, disable_statistics=True,
      custom_config={"code": code_fingerprint(_TRANSFORM_CODE)})
  transform.add_upstream_node(anomalies_gate)
  nodes = [example_gen, statistics_gen, schema_gen, example_validator,
           anomalies_gate, transform]
  if data_only:
    return _pipeline(config, nodes, beam_args)

  trainer = tfx.components.Trainer(
      run_fn=RUN_FN, examples=examples, schema=schema,
      transform_graph=transform.outputs["transform_graph"],
      train_args=tfx.proto.TrainArgs(splits=[features.TRAIN_SPLIT]),
      eval_args=tfx.proto.EvalArgs(splits=[features.EVAL_SPLIT]),
      custom_config={"hyperparameters": hp.to_dict(),
                     "code": code_fingerprint(_TRAINER_CODE)})

  model_resolver = _baseline_resolver(config, trainer.outputs["model"])

  evaluator = tfx.components.Evaluator(
      examples=examples, model=trainer.outputs["model"],
      baseline_model=model_resolver.outputs[baseline.MODEL_KEY],
      example_splits=[features.EVAL_SPLIT],
      eval_config=evaluation.eval_config(config.effective_min_accuracy,
                                         config.max_regression))

  pusher = ServingPusher(model=trainer.outputs["model"],
                         model_blessing=evaluator.outputs["blessing"],
                         serving_dir=config.serving_base_uri)

  return _pipeline(config, nodes + [trainer, model_resolver, evaluator, pusher],
                   beam_args)


def _pipeline(config: PipelineConfig, nodes: List[Any],
              beam_args: Optional[List[str]]) -> tfx.dsl.Pipeline:
  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root_uri,
      components=nodes,
      enable_cache=config.enable_cache,
      metadata_connection_config=(
          tfx.orchestration.metadata.sqlite_metadata_connection_config(
              config.metadata_uri) if config.runner == "local" else None),
      beam_pipeline_args=_beam_args(
          config, beam_args if beam_args is not None else config.beam_args))


def _beam_args(config: PipelineConfig, beam_args: List[str]) -> List[str]:
  # A local setup.py path means nothing inside a compiled pipeline's image.
  return with_dependencies(beam_args) if config.runner == "local" else list(
      beam_args)
