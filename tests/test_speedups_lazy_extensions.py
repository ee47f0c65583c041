"""tfx.v1.extensions is deferred until used, then behaves as the real module."""

import subprocess
import sys

_PROBE = """
import sys
import components  # defers tfx.v1.extensions
from tfx import v1 as tfx
print("aiplatform imported:", "google.cloud.aiplatform" in sys.modules)
ext = tfx.extensions
print("has google_cloud_ai_platform:", hasattr(ext, "google_cloud_ai_platform"))
print("real module now:", type(sys.modules["tfx.v1.extensions"]).__name__ == "module")
"""


def test_extensions_load_on_first_use_only():
  proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "aiplatform imported: False" in proc.stdout
  assert "has google_cloud_ai_platform: True" in proc.stdout
  assert "real module now: True" in proc.stdout
