"""deploy/: the manifests use the paths and flags the server has (they cannot
run here: no Docker engine, no Kubernetes)."""

import os
import re

import yaml

from mnist_tfx import cli
from serving import metrics, rest

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "deploy")


def _load(name):
  with open(os.path.join(DEPLOY, name), encoding="utf-8") as f:
    return list(yaml.safe_load_all(f))


def test_compose_serves_the_promoted_config_with_both_servers():
  services = _load("docker-compose.yml")[0]["services"]
  tfs = services["tensorflow-serving"]
  assert "${PWD}/outputs:${PWD}/outputs:ro" in tfs["volumes"]
  assert "--model_config_file=${PWD}/outputs/models.config" in tfs["command"]
  ours = services["mnist-tfx"]
  command = [c.replace("${PWD}", "/x") for c in ours["command"]]
  assert command[0] == "mnist-tfx"
  args = cli.build_parser().parse_args(command[1:])  # flags that exist
  assert args.model_config_file == "/x/outputs/models.config"
  assert rest.READY_PATH in " ".join(ours["healthcheck"]["test"])


def test_tf_servings_monitoring_config_uses_the_same_metrics_path():
  with open(os.path.join(DEPLOY, "monitoring.config"), encoding="utf-8") as f:
    text = f.read()
  assert re.search(r'path: "(.*)"', text).group(1) == metrics.PATH
  assert "enable: true" in text


def test_kserve_probes_are_the_servers_health_endpoints():
  ours = [d for d in _load("kserve.yaml") if d["metadata"]["name"] == "mnist-tfx"][0]
  container = ours["spec"]["predictor"]["containers"][0]
  assert container["livenessProbe"]["httpGet"]["path"] == rest.LIVE_PATH
  assert container["readinessProbe"]["httpGet"]["path"] == rest.READY_PATH
  assert ours["metadata"]["annotations"]["prometheus.io/path"] == metrics.PATH
  cli.build_parser().parse_args(container["command"][1:])
