"""Compiles the pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines.

The same `create_pipeline` as the local run; only configuration differs:
URIs instead of local paths, the container image, Beam arguments for a
distributed runner. The data root is a runtime parameter of the compiled
job, so one compiled spec serves any dataset of the same layout.
"""

import os

from components.plain_data import ConfigError
from pipeline.configs import PipelineConfig

DATA_ROOT_PARAMETER = "data_root"


def compile_kubeflow_v2(config: PipelineConfig, output_path: str) -> str:
  """Writes the KFP v2 pipeline spec (JSON) to `output_path`; returns it."""
  if config.runner != "kubeflow_v2":
    raise ConfigError("compile_kubeflow_v2 needs runner='kubeflow_v2'")
  if not config.data_dir:
    raise ConfigError("a compiled pipeline needs --data-dir (a URI its "
                      "workers can read, e.g. gs://bucket/mnist)")
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from components import baseline  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import RunnerSpecifics, create_pipeline  # pylint: disable=g-import-not-at-top

  data_root = tfx.dsl.experimental.RuntimeParameter(
      name=DATA_ROOT_PARAMETER, ptype=str, default=config.data_dir)
  # KFP v2 compiles only TFX's built-in resolver strategies; the job's Beam
  # args are the config's (a local setup.py means nothing in the image);
  # the orchestrator keeps its own metadata and caching.
  dag = create_pipeline(config, data_root, RunnerSpecifics(
      baseline=baseline.resolver_latest_blessed,
      beam_pipeline_args=list(config.beam_args)))
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=config.image),
      output_dir=os.path.dirname(os.path.abspath(output_path)),
      output_filename=os.path.basename(output_path))
  runner.run(dag, parameter_values={DATA_ROOT_PARAMETER: config.data_dir},
             write_out=True)
  return output_path
