"""Every shell example of the README and docs/, pasted as a user pastes it.

The blocks run with bash, in order (the README's, then each document's), in
a copy of the checkout whose
`../shared/data/mnist` holds tiny IDX files, so each pipeline run takes
seconds. What needs the network, a Docker engine or a cluster, and the
long benchmarks, are left out by the markers below; everything else must
exit 0, print no error and leave nothing behind outside the ignored
`outputs/`.
"""

import glob
import os
import re
import subprocess

import pytest

from tests import tiny_mnist
from tools import readme_sample

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A block holding any of these is not run: it needs what this machine lacks.
BLOCK_SKIP = ("docker", "kubectl", "gsutil", "aiplatform", "kfp.Client")
# A line holding any of these is not run (make test would run this test).
LINE_SKIP = ("make test", "(needs the network)", "make bench", "make soak")


def _documents():
  return [os.path.join(_ROOT, "README.md")] + sorted(
      glob.glob(os.path.join(_ROOT, "docs", "*.md")))


def _blocks(paths=None):
  found = []
  for path in paths or _documents():
    with open(path, encoding="utf-8") as f:
      found += re.findall(r"```bash\n(.*?)```", f.read(), re.S)
  return found


def _git_status():
  proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                        cwd=_ROOT, capture_output=True, text=True)
  return proc.stdout if proc.returncode == 0 else None


def _runnable(block):
  if any(marker in block for marker in BLOCK_SKIP):
    return None
  lines = [l for l in block.splitlines() if not any(m in l for m in LINE_SKIP)]
  return "\n".join(lines)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
  """<tmp>/main mirrors the repository; <tmp>/shared/data/mnist is tiny."""
  # The environment is the checkout's own (symlinked below): bring it up to
  # date here first, or `make run` in the mirror would reinstall it from the
  # mirror's path, which is gone after the test.
  subprocess.run(["make", "--quiet", "setup"], cwd=_ROOT, check=True,
                 stdout=subprocess.DEVNULL)
  top = tmp_path_factory.mktemp("readme")
  main = top / "main"
  main.mkdir()
  for name in os.listdir(_ROOT):
    if name not in ("outputs", ".git", ".pytest_cache"):
      os.symlink(os.path.join(_ROOT, name), main / name)
  tiny_mnist.write_dataset(str(top / "shared" / "data" / "mnist"))
  return str(main)


def test_the_readme_has_the_examples_it_promises():
  runnable = [b for b in map(_runnable, _blocks(_documents()[:1])) if b]
  assert len(runnable) >= 3
  text = "\n".join(runnable)
  for command in ("make run", "mnist-tfx run", "mnist-tfx report", "curl",
                  "mnist-tfx predict", "mnist-tfx compile"):
    assert command in text


def test_the_readme_is_a_short_guide_and_links_to_every_document():
  with open(_documents()[0], encoding="utf-8") as f:
    readme = f.read()
  assert readme.count("\n") <= 250
  for path in _documents()[1:]:
    assert f"docs/{os.path.basename(path)}" in readme, path


def test_every_shell_example_works_as_pasted(checkout):
  env = dict(os.environ)
  env.pop("VIRTUAL_ENV", None)
  entries, status = set(os.listdir(checkout)), _git_status()
  outputs = {}
  for block in filter(None, map(_runnable, _blocks())):
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block],
                          cwd=checkout, capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, (block, proc.stdout[-3000:], proc.stderr[-3000:])
    assert '"error"' not in proc.stdout, (block, proc.stdout[-3000:])
    outputs[block] = proc.stdout
  # The README's sample of a run's output has the shape of what a run prints.
  first_run = next(out for block, out in outputs.items() if "make run" in block)
  printed = [readme_sample.shape(l) for l in readme_sample.tail(first_run)]
  with open(_documents()[0], encoding="utf-8") as f:
    shown = [readme_sample.shape(l) for l in readme_sample.sample_in_readme(f.read())]
  assert shown == printed, (shown, printed)
  # What the blocks were to make, they made.
  assert os.path.exists(os.path.join(checkout, "outputs", "summary.json"))
  assert os.path.exists(os.path.join(checkout, "outputs", "basic", "summary.json"))
  assert os.path.exists(os.path.join(checkout, "outputs", "pipeline.json"))
  # Nothing left behind but outputs/ (which git ignores).
  assert set(os.listdir(checkout)) - entries <= {"outputs"}
  assert _git_status() == status
