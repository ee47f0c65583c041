"""`mnist-tfx predict` on hostile and odd pictures and addresses: each is one
line and exit 1 (or, for a picture that is merely unusual, the digit)."""

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from serving import client
from tests import tiny_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digit() -> np.ndarray:
  return tiny_mnist.make_images(np.array([4]), seed=2)[0]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data
          + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _bomb(path: str, side: int = 30000) -> str:
  """A PNG of a few KB whose header says side x side grey pixels."""
  rows = zlib.compress(b"\x00" * (side + 1) * 64, 9)  # the first rows only
  data = (b"\x89PNG\r\n\x1a\n"
          + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
          + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b""))
  with open(path, "wb") as f:
    f.write(data)
  return path


def _files(tmp_path):
  """name -> a path that predict must refuse, and the words it must say."""
  digit = Image.fromarray(255 - _digit()).resize((140, 140))
  good = str(tmp_path / "good.png")
  digit.save(good)
  truncated = str(tmp_path / "truncated.png")
  with open(good, "rb") as f:
    data = f.read()
  with open(truncated, "wb") as f:
    f.write(data[:len(data) // 2])
  empty = str(tmp_path / "empty.png")
  open(empty, "wb").close()
  text = str(tmp_path / "notes.png")
  with open(text, "w") as f:
    f.write("this is not a picture\n")
  animated = str(tmp_path / "animated.gif")
  digit.save(animated, save_all=True, append_images=[digit.rotate(90)], duration=100)
  (tmp_path / "folder.png").mkdir()
  return {
      "bomb": (_bomb(str(tmp_path / "bomb.png")), "pixels than this command reads|"
               "pixels is more than this command reads"),
      "truncated": (truncated, "not a readable image"),
      "empty": (empty, "the file is empty"),
      "not a picture": (text, "not a readable image"),
      "animated": (animated, "has 2 frames; give a still picture"),
      "directory": (str(tmp_path / "folder.png"), "is a directory"),
      "missing": (str(tmp_path / "nowhere.png"), "no such file"),
  }


@pytest.mark.parametrize("case", ["bomb", "truncated", "empty", "not a picture",
                                  "animated", "directory", "missing"])
def test_hostile_and_broken_pictures_are_one_line(tmp_path, case):
  path, words = _files(tmp_path)[case]
  with pytest.raises(ValueError, match=words) as raised:
    client.load_digit(path)
  assert "\n" not in str(raised.value) and str(raised.value).startswith(path)


def test_a_bomb_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
  path = _bomb(str(tmp_path / "bomb.png"))
  monkeypatch.setattr(Image.Image, "load", lambda self: (_ for _ in ()).throw(
      AssertionError("decoded")))
  with pytest.raises(ValueError, match="this command reads"):
    client.load_digit(path)
  # A picture past our bound but within PIL's own is refused by our check.
  medium = _bomb(str(tmp_path / "medium.png"), side=9000)
  with pytest.raises(ValueError, match="9000x9000 pixels is more than this command reads"):
    client.load_digit(medium)


@pytest.mark.parametrize("mode", ["I;16", "CMYK", "1", "LA", "P", "RGBA"])
def test_unusual_but_real_pictures_give_the_same_digit(tmp_path, mode):
  # Drawn large, as a scan or a photo is (1-bit dithering needs the room).
  digit = np.asarray(Image.fromarray(255 - _digit()).resize((140, 140), Image.BILINEAR))
  plain = str(tmp_path / "plain.png")
  Image.fromarray(digit).save(plain)
  if mode == "I;16":
    image = Image.fromarray(digit.astype(np.uint16) * 257)
    path = str(tmp_path / "sixteen.png")
  else:
    image = Image.fromarray(digit).convert(mode)
    path = str(tmp_path / ("odd.jpg" if mode == "CMYK" else "odd.png"))
  image.save(path)
  a, b = client.load_digit(plain), client.load_digit(path)
  likeness = np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1]
  # JPEG's CMYK and 1-bit dithering lose detail; the others lose nothing.
  assert likeness > (0.6 if mode in ("CMYK", "1") else 0.99), likeness


@pytest.mark.parametrize("url", ["http://[::1", "localhost:8501", "ftp://127.0.0.1:8501",
                                 "http://", "http://127.0.0.1:99999", "", "http:// x"])
def test_bad_rest_urls_are_one_line(url):
  with pytest.raises(ValueError, match="--rest") as raised:
    client.check_url(url)
  assert "\n" not in str(raised.value)


@pytest.mark.parametrize("target", ["127.0.0.1", ":8500", "host:port", "127.0.0.1:99999",
                                    "[::1:8500", "http://127.0.0.1:8500", "a b:1", ""])
def test_bad_grpc_targets_are_one_line(target):
  with pytest.raises(ValueError, match="--grpc"):
    client.check_target(target)


@pytest.mark.parametrize("target", ["127.0.0.1:8500", "localhost:1", "[::1]:8500"])
def test_good_grpc_targets_pass(target):
  assert client.check_target(target) == target


@pytest.mark.parametrize("args,words", [
    (["bomb.png"], "this command reads"),
    (["folder.png"], "is a directory"),
    (["good.png", "--rest", "http://[::1"], "--rest 'http://[::1'"),
    (["good.png", "--grpc", "nowhere"], "--grpc 'nowhere'"),
])
def test_the_command_says_one_line_and_exits_1(tmp_path, args, words):
  _files(tmp_path)
  proc = subprocess.run([sys.executable, "-m", "mnist_tfx", "predict"] + [
      str(tmp_path / a) if a.endswith(".png") else a for a in args],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 1, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("mnist-tfx predict: "), proc.stderr
  assert words in lines[0]
