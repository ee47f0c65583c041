"""The soak script, shortened: clients through a new and a corrupt version."""

import os

from components import pusher
from components.models import Hyperparameters, build_model
from components.trainer import export
from bench import soak


def test_a_short_soak_fails_no_good_request(tft_output, tmp_path):
  model_dir = str(tmp_path / "model")
  export.export(build_model(Hyperparameters(), 10), tft_output, model_dir)
  base = str(tmp_path / "mnist")
  pusher.push(model_dir, base, {})
  r = soak.soak(base, seconds=6, clients=6)
  assert r["requests"] > 100 and r["failures"] == 0, r["errors"]
  assert r["new_version"] in r["versions_answering"]
  assert r["corrupt_version"] not in r["versions_answering"]
  assert r["corrupt_status"]["state"] == "END"
  assert "failed to load" in r["corrupt_status"]["status"]["error_message"]
  assert r["rss_mib_after"] > 0 and os.listdir(base)  # the user's dir untouched
