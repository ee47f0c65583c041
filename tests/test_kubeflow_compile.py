"""Compiling for Kubeflow Pipelines v2 / Vertex AI: the spec's DAG, image, parameters."""

import json

import pytest

from mnist_tfx import cli

IMAGE = "europe-docker.pkg.dev/project/repo/mnist-tfx:1.0"


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("kfp") / "pipeline.json")
  code = cli.main(["compile", "--runner", "kubeflow_v2", "--output", out,
                   "--image", IMAGE, "--data-dir", "gs://bucket/mnist",
                   "--output-dir", "gs://bucket/runs",
                   "--beam-arg=--runner=DataflowRunner",
                   "--beam-arg=--sdk_container_image=" + IMAGE])
  assert code == 0
  with open(out) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def pipeline_spec(spec):
  return spec["pipelineSpec"]


def test_every_component_is_a_task(pipeline_spec):
  tasks = pipeline_spec["root"]["dag"]["tasks"]
  expected = {"IdxExampleGen", "StatisticsGen", "CuratedSchemaGen", "ExampleValidator",
              "AnomaliesGate", "Transform", "Trainer", "Evaluator", "ServingPusher"}
  assert expected <= set(tasks)
  assert any(t.startswith("latest_blessed_model_resolver") for t in tasks)


def test_edges_follow_the_data_flow(pipeline_spec):
  deps = {name: set(t.get("dependentTasks", []))
          for name, t in pipeline_spec["root"]["dag"]["tasks"].items()}
  assert deps["IdxExampleGen"] == set()
  assert deps["StatisticsGen"] == {"IdxExampleGen"}
  assert deps["CuratedSchemaGen"] == {"StatisticsGen"}
  assert deps["ExampleValidator"] == {"StatisticsGen", "CuratedSchemaGen"}
  assert deps["AnomaliesGate"] == {"ExampleValidator", "IdxExampleGen"}
  assert "AnomaliesGate" in deps["Transform"]  # nothing trains on bad data
  assert {"Transform", "IdxExampleGen"} <= deps["Trainer"]
  assert "Trainer" in deps["Evaluator"]
  assert any(d.startswith("latest_blessed_model_resolver") for d in deps["Evaluator"])
  # The server is tried on blessed candidates; the push needs both blessings.
  assert {"Evaluator", "Trainer", "IdxExampleGen"} <= deps["ServingInfraValidator"]
  assert {"Evaluator", "Trainer", "ServingInfraValidator"} <= deps["ServingPusher"]


def test_every_executor_runs_the_image(pipeline_spec):
  executors = pipeline_spec["deploymentSpec"]["executors"]
  images = {e["container"]["image"] for e in executors.values() if "container" in e}
  assert images == {IMAGE}


def test_data_root_is_a_runtime_parameter_with_its_default(spec, pipeline_spec):
  params = pipeline_spec["root"]["inputDefinitions"]["parameters"]
  assert params["data_root"]["type"] == "STRING"
  runtime = spec["runtimeConfig"]
  assert runtime["parameters"]["data_root"]["stringValue"] == "gs://bucket/mnist"
  assert runtime["gcsOutputDirectory"] == "gs://bucket/runs/pipeline"


def test_beam_args_and_uris_reach_the_spec(pipeline_spec):
  text = json.dumps(pipeline_spec)
  assert "--runner=DataflowRunner" in text
  assert "gs://bucket/runs/serving_model/mnist" in text
  assert "--setup_file" not in text  # a local path means nothing in the image
