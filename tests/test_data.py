"""Downloading MNIST: verified by raw SHA-256, mirror fallback, clear offline error.

The 'mirrors' are HTTP servers on 127.0.0.1 serving tiny files the test
writes; nothing here reaches the network.
"""

import functools
import gzip
import http.server
import os
import threading

import pytest

from mnist_tfx import data


@pytest.fixture
def serve(tmp_path):
  servers = []

  def start(files):
    root = tmp_path / f"mirror{len(servers)}"
    root.mkdir()
    for name, content in files.items():
      (root / name).write_bytes(content)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return f"http://127.0.0.1:{server.server_address[1]}/"

  yield start
  for server in servers:
    server.shutdown()
    server.server_close()


RAW = {"a-images": b"raw bytes of a", "b-labels": b"raw bytes of b"}


def _expected():
  import hashlib
  return {name: hashlib.sha256(raw).hexdigest() for name, raw in RAW.items()}


def _gz(raw, level):
  return gzip.compress(raw, compresslevel=level, mtime=0)


def test_downloads_and_verifies_raw_bytes(serve, tmp_path):
  mirror = serve({f"{n}.gz": _gz(raw, 9) for n, raw in RAW.items()})
  out = data.ensure_mnist(str(tmp_path / "cache"), [mirror], log=lambda m: None,
                          expected_sha256=_expected())
  for name, raw in RAW.items():
    assert gzip.open(os.path.join(out, name + ".gz")).read() == raw


def test_bad_mirror_falls_back_and_bad_bytes_never_land(serve, tmp_path):
  bad = serve({f"{n}.gz": _gz(b"corrupted", 1) for n in RAW})
  good = serve({f"{n}.gz": _gz(raw, 1) for n, raw in RAW.items()})
  cache = tmp_path / "cache"
  data.ensure_mnist(str(cache), [bad, good], log=lambda m: None,
                    expected_sha256=_expected())
  assert sorted(os.listdir(cache)) == sorted(f"{n}.gz" for n in RAW)


def test_cached_files_are_not_downloaded_again(serve, tmp_path):
  mirror = serve({f"{n}.gz": _gz(raw, 6) for n, raw in RAW.items()})
  cache = str(tmp_path / "cache")
  data.ensure_mnist(cache, [mirror], log=lambda m: None, expected_sha256=_expected())
  fetched = []
  data.ensure_mnist(cache, ["http://127.0.0.1:9/"], log=fetched.append,
                    expected_sha256=_expected())
  assert fetched == []


def test_offline_error_says_how_to_use_local_files(tmp_path):
  with pytest.raises(data.DownloadError) as e:
    data.ensure_mnist(str(tmp_path / "cache"), ["http://127.0.0.1:9/"],
                      timeout=2, log=lambda m: None, expected_sha256=_expected())
  message = str(e.value)
  assert "--data-dir" in message and "MNIST_DIR" in message
  assert "127.0.0.1:9" in message
  assert not [f for f in os.listdir(tmp_path / "cache") if f.startswith(".part")]


def test_real_hashes_are_the_published_ones():
  assert data.MNIST_SHA256["train-images-idx3-ubyte"].startswith("ba891046")
  assert len(data.MNIST_SHA256) == 4
