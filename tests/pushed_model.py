"""What a pushed version must be: the Trainer's model the summary reports,
as the infra validator stamped it (with its warm-up requests, nothing else)."""

import os

from components import pusher
from serving import warmup


def files(root):
  return {os.path.relpath(os.path.join(d, n), root)
          for d, _, names in os.walk(root) for n in names}


def assert_is_reported(path, summary):
  """`path` (a pushed version) holds the run's model, byte for byte."""
  reported = os.path.join(summary["artifacts"]["Trainer.model"], pusher.SERVING_SUBDIR)
  stamped = os.path.join(summary["artifacts"]["ServingInfraValidator.blessing"],
                         pusher.STAMPED_MODEL)
  assert pusher.content_digest(path) == pusher.content_digest(stamped)
  assert files(path) - files(reported) == {warmup.WARMUP_FILE, pusher.PUSH_RECORD}
  for rel in files(reported):
    with open(os.path.join(path, rel), "rb") as a, open(os.path.join(reported, rel),
                                                        "rb") as b:
      assert a.read() == b.read(), rel
  assert len(warmup.read(path)) == 3 * warmup.EXAMPLES  # each signature
