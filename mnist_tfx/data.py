"""Where the MNIST files come from when the user does not point at a folder.

The four files are fetched from public mirrors into a cache and accepted only
if the SHA-256 of their *raw* bytes matches: mirrors publish the same bytes
under different gzip compressions, so .gz hashes differ while raw ones do not.
Nothing in tests or CI calls `ensure_mnist` against the network.
"""

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Callable, Dict, Optional, Sequence

# Raw (decompressed) SHA-256 of the four standard files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
OFFLINE_HINT = (
    "Point the pipeline at a folder that holds the four MNIST IDX files "
    "(gzipped or raw): `make run MNIST_DIR=<dir>` or "
    "`mnist-tfx run --data-dir <dir>`.")


class DownloadError(RuntimeError):
  """No mirror delivered a file with the expected content."""


def default_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "mnist-tfx", "mnist")


def raw_sha256(path: str) -> str:
  """SHA-256 of a file's raw bytes (decompressed if gzipped)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    gz = f.read(2) == b"\x1f\x8b"
  with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _fetch(url: str, dest: str, timeout: float) -> None:
  with urllib.request.urlopen(url, timeout=timeout) as response, \
       open(dest, "wb") as out:
    shutil.copyfileobj(response, out)


def ensure_mnist(cache_dir: Optional[str] = None,
                 mirrors: Sequence[str] = MIRRORS, timeout: float = 30.0,
                 log: Callable[[str], None] = print,
                 expected_sha256: Optional[Dict[str, str]] = None) -> str:
  """A folder with the four verified MNIST files, downloading what is missing."""
  cache_dir = cache_dir or default_cache_dir()
  os.makedirs(cache_dir, exist_ok=True)
  for name, expected in (expected_sha256 or MNIST_SHA256).items():
    path = os.path.join(cache_dir, name + ".gz")
    if os.path.exists(path) and raw_sha256(path) == expected:
      continue
    errors = []
    for mirror in mirrors:
      url = mirror + name + ".gz"
      log(f"Downloading {url}")
      fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".part-")
      os.close(fd)
      try:
        _fetch(url, tmp, timeout)
        got = raw_sha256(tmp)
        if got != expected:
          errors.append(f"{url}: raw SHA-256 {got}, expected {expected}")
          continue
        os.replace(tmp, path)  # only verified files ever carry the final name
        break
      except (urllib.error.URLError, OSError, EOFError) as e:
        errors.append(f"{url}: {getattr(e, 'reason', e)}")
      finally:
        if os.path.exists(tmp):
          os.remove(tmp)
    else:
      raise DownloadError(
          f"Could not get {name}.gz from any mirror (offline?).\n  " +
          "\n  ".join(errors) + f"\n{OFFLINE_HINT}")
  return cache_dir
