"""Every shell example of the README, pasted as a user pastes it.

The blocks run with bash, in order, in a copy of the checkout whose
`../shared/data/mnist` holds tiny IDX files, so each pipeline run takes
seconds. What needs the network, a Docker engine or a cluster, and the
long benchmarks, are left out by the markers below; everything else must
exit 0 and print no error.
"""

import os
import re
import subprocess

import pytest

from tests import tiny_mnist

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A block holding any of these is not run: it needs what this machine lacks.
BLOCK_SKIP = ("docker", "kubectl", "gsutil", "aiplatform", "kfp.Client")
# A line holding any of these is not run (make test would run this test).
LINE_SKIP = ("make test", "(needs the network)", "make bench", "make soak")


def _blocks():
  with open(os.path.join(_ROOT, "README.md"), encoding="utf-8") as f:
    text = f.read()
  return re.findall(r"```bash\n(.*?)```", text, re.S)


def _runnable(block):
  if any(marker in block for marker in BLOCK_SKIP):
    return None
  lines = [l for l in block.splitlines() if not any(m in l for m in LINE_SKIP)]
  return "\n".join(lines)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
  """<tmp>/main mirrors the repository; <tmp>/shared/data/mnist is tiny."""
  top = tmp_path_factory.mktemp("readme")
  main = top / "main"
  main.mkdir()
  for name in os.listdir(_ROOT):
    if name not in ("outputs", ".git", ".pytest_cache"):
      os.symlink(os.path.join(_ROOT, name), main / name)
  tiny_mnist.write_dataset(str(top / "shared" / "data" / "mnist"))
  return str(main)


def test_the_readme_has_the_examples_it_promises():
  runnable = [b for b in map(_runnable, _blocks()) if b]
  assert len(runnable) >= 3
  text = "\n".join(runnable)
  for command in ("make run", "mnist-tfx run", "mnist-tfx report", "curl",
                  "mnist-tfx predict", "mnist-tfx compile"):
    assert command in text


def test_every_shell_example_works_as_pasted(checkout):
  env = dict(os.environ)
  env.pop("VIRTUAL_ENV", None)
  for block in filter(None, map(_runnable, _blocks())):
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block],
                          cwd=checkout, capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, (block, proc.stdout[-3000:], proc.stderr[-3000:])
    assert '"error"' not in proc.stdout, (block, proc.stdout[-3000:])
  # What the blocks were to make, they made.
  assert os.path.exists(os.path.join(checkout, "outputs", "summary.json"))
  assert os.path.exists(os.path.join(checkout, "outputs", "basic", "summary.json"))
  assert os.path.exists(os.path.join(checkout, "pipeline.json"))
