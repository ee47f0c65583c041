"""The mnist-tfx DAG, shared by every runner.

ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> (gate) ->
Transform -> [HoldOutValidation -> Tuner, with --tune] -> Trainer -> Evaluator
(vs. the last blessed model) -> ServingInfraValidator -> Pusher.

Nothing here depends on the runner: what differs between running locally
and compiling for Kubeflow (the baseline resolver, ML Metadata, Beam
arguments, the data fingerprint) comes in as `RunnerSpecifics`, built by
each runner module.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
from typing import Any, Callable, List, Optional, Set, Union

from tfx import v1 as tfx

from components import baseline, evaluation, features
from components.data_validation import AnomaliesGate, CuratedSchemaGen
from components.example_gen import IdxExampleGen
from components.holdout import HoldOutValidation
from components.infra_validator import ServingInfraValidator
from components.pusher import ServingPusher
from pipeline.configs import PipelineConfig

PREPROCESSING_FN = "components.transform.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.run.run_fn"
TUNER_FN = "components.tuning.tuner_fn"
_OUR_PACKAGE = "components"
SIMPLER_MODEL = "basic"  # what every other model must beat (`min_margin_over_simpler`)


@dataclasses.dataclass
class RunnerSpecifics:
  """What a runner decides for itself; `create_pipeline` only puts it in place."""

  # Builds the resolver of the last blessed model from the candidate channel.
  baseline: Callable[[tfx.dsl.Channel], tfx.dsl.Resolver]
  beam_pipeline_args: List[str]
  metadata_connection_config: Optional[Any] = None
  data_fingerprint: str = ""  # identity of the input files, for caching
  # Records in the test split (None: not known when the DAG is built). The
  # writer-gap bound needs both populations, so records past SD-3's.
  test_records: Optional[int] = None
  # The `basic` model's last blessed accuracy in the store, which a more
  # complex candidate must beat (None: there is none, or not looked up).
  simpler_accuracy: Optional[float] = None

  def bounds(self, config: PipelineConfig) -> dict:
    """The config's blessing bounds, less those this data cannot check."""
    bounds = dict(config.bounds)
    if (self.test_records is not None
        and self.test_records <= features.SD3_TEST_RECORDS):
      bounds["max_writer_gap"] = None  # SD-3's records only: no gap to bound
    if (self.simpler_accuracy is not None
        and config.hyperparameters.model != SIMPLER_MODEL):
      bounds["simpler_accuracy"] = self.simpler_accuracy
    return bounds


def _imports(module: str) -> Set[str]:
  """Modules of our package that `module`'s source imports (anywhere in it)."""
  spec = importlib.util.find_spec(module)
  with open(spec.origin, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  found = set()
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    for name in names:
      if name.split(".")[0] == _OUR_PACKAGE and _is_module(name):
        found.add(name)
  return found


def _is_module(name: str) -> bool:
  """True for a module or package; False for a class or function name."""
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, AttributeError, ValueError):
    return False


def code_modules(entry: str) -> List[str]:
  """`entry` and every module of ours it imports, transitively (sorted)."""
  seen, todo = set(), [entry]
  while todo:
    module = todo.pop()
    if module not in seen:
      seen.add(module)
      todo.extend(_imports(module) - seen)
  return sorted(seen)


def code_fingerprint(entry: str) -> str:
  """SHA-256 over the source of `entry` and what it imports from us.

  Transform and Trainer load their code by Python path, and function
  components are keyed by class path only, so TFX would reuse their cached
  outputs after a code edit. Passing this digest as a parameter makes the
  edit part of the cache key, for exactly the code each step runs. The
  modules are found by reading the imports, so a new import counts at once.
  """
  h = hashlib.sha256()
  for module in code_modules(entry):
    h.update(module.encode())
    with open(importlib.util.find_spec(module).origin, "rb") as f:
      h.update(f.read())
  return h.hexdigest()[:16]


def create_pipeline(config: PipelineConfig, data_dir: Union[str, Any],
                    runner: RunnerSpecifics,
                    data_only: bool = False) -> tfx.dsl.Pipeline:
  """The pipeline for `config`, reading IDX files from `data_dir`.

  `data_dir` is a URI, or a RuntimeParameter for compiled pipelines.
  `data_only` stops after Transform: the Beam-heavy half, for measuring and
  testing it on other Beam runners.
  """
  hp = config.hyperparameters
  # Reads and checks the IDX files; tf.Examples per split.
  example_gen = IdxExampleGen(
      input_base=data_dir,
      input_fingerprint=(f"{runner.data_fingerprint}|"
                         f"{code_fingerprint('components.example_gen')}"))
  examples = example_gen.outputs["examples"]

  # Feature statistics per split, what validation compares against.
  statistics_gen = tfx.components.StatisticsGen(examples=examples)
  # The inferred schema, with shapes and domains pinned from `features`.
  schema_gen = CuratedSchemaGen(statistics=statistics_gen.outputs["statistics"])
  schema = schema_gen.outputs["schema"]
  # Anomalies of each split against the schema.
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema)
  # Stops the run on anomalies or a broken label distribution.
  anomalies_gate = AnomaliesGate(
      anomalies=example_validator.outputs["anomalies"], examples=examples,
      min_label_share=config.min_label_share,
      max_label_drift=config.max_label_drift)

  # No analyzer runs and the Trainer transforms raw examples itself, so
  # Transform only builds the graph: no materialized copy, no statistics.
  transform = tfx.components.Transform(
      examples=examples, schema=schema, preprocessing_fn=PREPROCESSING_FN,
      materialize=False, disable_statistics=True,
      custom_config={"code": code_fingerprint(PREPROCESSING_FN.rsplit(".", 1)[0])})
  transform.add_upstream_node(anomalies_gate)  # nothing is trained on bad data
  nodes = [example_gen, statistics_gen, schema_gen, example_validator,
           anomalies_gate, transform]
  if data_only:
    return _pipeline(config, nodes, runner)

  transform_graph = transform.outputs["transform_graph"]
  searched = []
  if config.tune:
    # The train split cut in two, so the search selects on records it did
    # not fit and never sees the test split.
    holdout = HoldOutValidation(examples=examples,
                                validation_share=config.validation_share)
    # KerasTuner within the budget; its best trial goes to the Trainer.
    tuner = tfx.components.Tuner(
        tuner_fn=TUNER_FN, examples=holdout.outputs["held_out"],
        transform_graph=transform_graph,
        train_args=tfx.proto.TrainArgs(splits=[features.TRAIN_SPLIT]),
        eval_args=tfx.proto.EvalArgs(splits=[features.VALIDATION_SPLIT]),
        custom_config={"hyperparameters": hp.to_dict(),
                       "budget": dataclasses.asdict(config.budget),
                       "code": code_fingerprint(TUNER_FN.rsplit(".", 1)[0])})
    searched = [holdout, tuner]

  # Fits the configured (or best searched) model on the train split, less a
  # hold-out it validates on (never the test split: eval_args is `train`);
  # exports the SavedModel with the Transform graph inside.
  trainer = tfx.components.Trainer(
      run_fn=RUN_FN, examples=examples, schema=schema,
      transform_graph=transform_graph,
      hyperparameters=(searched[-1].outputs["best_hyperparameters"]
                       if searched else None),
      train_args=tfx.proto.TrainArgs(splits=[features.TRAIN_SPLIT]),
      eval_args=tfx.proto.EvalArgs(splits=[features.TRAIN_SPLIT]),
      custom_config={"hyperparameters": hp.to_dict(),
                     "validation_share": config.validation_share,
                     "code": code_fingerprint(RUN_FN.rsplit(".", 1)[0])})

  # The last blessed model, for the no-regression check.
  model_resolver = runner.baseline(trainer.outputs["model"])

  # TFMA: accuracy overall, per digit and per writer population, the
  # confusion matrix, blessing.
  evaluator = tfx.components.Evaluator(
      examples=examples, model=trainer.outputs["model"],
      baseline_model=model_resolver.outputs[baseline.MODEL_KEY],
      example_splits=[features.EVAL_SPLIT],
      eval_config=evaluation.eval_config(**runner.bounds(config)))

  # The blessed candidate on the real server (`mnist-tfx serve`, its own
  # process): loads, warms, and answers REST and gRPC as the SavedModel does.
  infra_validator = ServingInfraValidator(
      model=trainer.outputs["model"], examples=examples,
      model_blessing=evaluator.outputs["blessing"],
      model_name=config.serving_model_name,
      code=code_fingerprint("components.infra_validator"))

  # Models both blessed, with their warm-up requests, into TF Serving's
  # <base>/<version>/ layout.
  pusher = ServingPusher(model=trainer.outputs["model"],
                         model_blessing=evaluator.outputs["blessing"],
                         infra_blessing=infra_validator.outputs["blessing"],
                         serving_dir=config.serving_base_uri)

  return _pipeline(
      config, nodes + searched + [trainer, model_resolver, evaluator,
                                  infra_validator, pusher],
      runner)


def _pipeline(config: PipelineConfig, nodes: List[Any],
              runner: RunnerSpecifics) -> tfx.dsl.Pipeline:
  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root_uri,
      components=nodes,
      enable_cache=config.enable_cache,
      metadata_connection_config=runner.metadata_connection_config,
      beam_pipeline_args=list(runner.beam_pipeline_args))
