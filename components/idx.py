"""Reading and checking IDX files (the MNIST record format), gzipped or raw.

All I/O goes through `tf.io.gfile`, so a data dir may be any URI TensorFlow
reads (`gs://...`, local paths, ...). Errors name the file and what is wrong,
because a user pointing `--data-dir` at the wrong folder should not have to
read a traceback to find out.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import posixpath
import struct
import zlib
from typing import BinaryIO, Iterator, List, Optional, Tuple

import numpy as np

from components import features

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


class IdxError(ValueError):
  """An IDX file is missing, malformed, or disagrees with its partner."""

  def __init__(self, path: str, problem: str):
    super().__init__(f"{path}: {problem}")
    self.path = path
    self.problem = problem


@dataclasses.dataclass(frozen=True)
class IdxPair:
  """A checked images/labels pair: what ExampleGen needs to emit records."""

  images_path: str
  labels_path: str
  count: int
  rows: int
  cols: int
  images_sha256: str  # of the content: the decompressed IDX bytes
  labels_sha256: str
  label_counts: Tuple[int, ...] = ()  # records per class, for validation
  gzipped: bool = False  # the images file: read forward only
  # Of the files as they are on disk (what `sha256sum` prints for them).
  images_file_sha256: str = ""
  labels_file_sha256: str = ""


def _gfile():
  import tensorflow as tf  # Deferred: this module is also used without TF work.
  return tf.io.gfile


def candidate_names(stem: str, kind: str) -> List[str]:
  """File names accepted for `stem` ("train"/"t10k") and kind ("images"/"labels")."""
  dims = "idx3" if kind == "images" else "idx1"
  names = []
  for sep in ("-", "."):
    base = f"{stem}-{kind}{sep}{dims}-ubyte"
    names += [base, base + ".gz"]
  return names


def find_file(data_dir: str, stem: str, kind: str) -> str:
  """The single IDX file of `kind` for `stem` in `data_dir`, or a clear error."""
  gfile = _gfile()
  if not gfile.isdir(data_dir):
    raise IdxError(data_dir, "data directory does not exist")
  present = set(gfile.listdir(data_dir))
  found = [n for n in candidate_names(stem, kind) if n in present]
  if not found:
    raise IdxError(
        data_dir, f"no {kind} file for split '{stem}' (looked for "
        f"{', '.join(candidate_names(stem, kind)[::2])}, optionally .gz)")
  if len(found) > 1:
    raise IdxError(data_dir, f"ambiguous {kind} files for '{stem}': {found}")
  return posixpath.join(data_dir, found[0]) if "://" in data_dir else (
      data_dir.rstrip("/") + "/" + found[0])


def open_raw(path: str) -> BinaryIO:
  """Opens an IDX file for reading its raw bytes, decompressing gzip if needed."""
  gfile = _gfile()
  if not gfile.exists(path):
    raise IdxError(path, "file does not exist")
  f = gfile.GFile(path, "rb")
  head = f.read(2)
  f.seek(0)
  if head == _GZIP_MAGIC:
    return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
  return f  # type: ignore[return-value]


def is_gzip(f: BinaryIO) -> bool:
  """True for a file `open_raw` decompresses (it cannot seek cheaply)."""
  return isinstance(f, gzip.GzipFile)


def _read_exact(f: BinaryIO, n: int) -> bytes:
  """Reads n bytes or fewer at end of file; raises on a corrupt gzip stream."""
  parts, got = [], 0
  while got < n:
    part = f.read(n - got)
    if not part:
      break
    parts.append(part)
    got += len(part)
  return b"".join(parts)


def _read_header(f: BinaryIO, path: str, magic: int) -> Tuple[int, ...]:
  ndim = magic & 0xFF
  header = _read_exact(f, 4 + 4 * ndim)
  if not header:
    raise IdxError(path, "file is empty")
  if len(header) < 4:
    raise IdxError(path, f"truncated header ({len(header)} bytes)")
  (found,) = struct.unpack(">I", header[:4])
  if found != magic:
    raise IdxError(
        path, f"wrong magic number 0x{found:08x}, expected 0x{magic:08x} "
        f"({'images' if magic == IMAGES_MAGIC else 'labels'}, unsigned bytes)")
  if len(header) < 4 + 4 * ndim:
    raise IdxError(path, "truncated header: dimensions are missing")
  return struct.unpack(f">{ndim}I", header[4:])


def _hash_rest(f: BinaryIO, path: str, expected: int,
               sha: "hashlib._Hash", label_limit: Optional[int]
               ) -> Tuple[int, ...]:
  """Hashes and counts the payload; checks and counts labels on the way."""
  got = 0
  counts = np.zeros(label_limit or 0, dtype=np.int64)
  while True:
    try:
      chunk = f.read(_CHUNK)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile) as e:
      raise IdxError(path, f"corrupt or truncated gzip stream ({e})") from e
    if not chunk:
      break
    sha.update(chunk)
    if label_limit is not None:
      arr = np.frombuffer(chunk, dtype=np.uint8)
      bad = np.flatnonzero(arr >= label_limit)
      if bad.size:
        i = int(bad[0])
        raise IdxError(
            path, f"label {int(arr[i])} at record {got + i} is out of range "
            f"0-{label_limit - 1}")
      counts += np.bincount(arr, minlength=label_limit)
    got += len(chunk)
  if got < expected:
    raise IdxError(path, f"truncated: header promises {expected} bytes of data, "
                   f"file has {got}")
  if got > expected:
    raise IdxError(path, f"{got - expected} unexpected bytes after the "
                   f"{expected} bytes the header promises")
  return tuple(int(c) for c in counts)


def file_sha256(path: str) -> str:
  """SHA-256 of a file's bytes as stored (gzipped or not): `sha256sum`'s."""
  sha = hashlib.sha256()
  with _gfile().GFile(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      sha.update(chunk)
  return sha.hexdigest()


def _open_checked(path: str, magic: int) -> Tuple[BinaryIO, Tuple[int, ...]]:
  """The file opened past its header, and the header's dimensions."""
  f = open_raw(path)
  try:
    return f, _read_header(f, path, magic)
  except (EOFError, OSError, zlib.error, gzip.BadGzipFile) as e:
    f.close()
    raise IdxError(path, f"corrupt gzip stream ({e})") from e
  except IdxError:
    f.close()
    raise


def record_count(labels_path: str) -> int:
  """The number of records a labels file's header declares (reads 8 bytes)."""
  f, (count,) = _open_checked(labels_path, LABELS_MAGIC)
  f.close()
  return count


def check_pair(images_path: str, labels_path: str,
               rows: int = features.IMAGE_ROWS,
               cols: int = features.IMAGE_COLS,
               num_classes: int = features.NUM_CLASSES) -> IdxPair:
  """Reads both files once, fully: structure, counts, labels and SHA-256s.

  Both headers are read and checked against each other (counts, then image
  sizes) before any data is, so a header that promises ten million images
  beside 2,000 labels fails at once, not after streaming gigabytes.
  """
  images, dims = _open_checked(images_path, IMAGES_MAGIC)
  with images:
    labels, (n_labels,) = _open_checked(labels_path, LABELS_MAGIC)
    with labels:
      count, r, c = dims
      if n_labels != count:
        raise IdxError(labels_path, f"{n_labels} labels but {images_path} has "
                       f"{count} images")
      if (r, c) != (rows, cols):
        raise IdxError(images_path, f"images are {r}x{c}, expected {rows}x{cols}")
      if count == 0:
        raise IdxError(images_path, "holds no records")
      gzipped = is_gzip(images)
      sha_images = hashlib.sha256(struct.pack(">I", IMAGES_MAGIC) +
                                  struct.pack(">3I", *dims))
      _hash_rest(images, images_path, count * r * c, sha_images, None)
      sha_labels = hashlib.sha256(struct.pack(">II", LABELS_MAGIC, n_labels))
      label_counts = _hash_rest(labels, labels_path, n_labels, sha_labels,
                                num_classes)
  return IdxPair(images_path, labels_path, count, rows, cols,
                 sha_images.hexdigest(), sha_labels.hexdigest(), label_counts,
                 gzipped, file_sha256(images_path), file_sha256(labels_path))


def read_range(pair: IdxPair, start: int, stop: int
               ) -> Tuple[np.ndarray, np.ndarray]:
  """Records [start, stop) of a checked pair: uint8 images [k, rows, cols], labels [k]."""
  return next(read_ranges(pair, [(start, stop)]))


def read_ranges(pair: IdxPair, ranges: List[Tuple[int, int]]
                ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
  """`read_range` for each of ascending, non-overlapping ranges, in one pass.

  Each file is opened once: a gzipped file is decompressed from its start
  up to the last range once, not once per range.
  """
  size = pair.rows * pair.cols
  with open_raw(pair.images_path) as images_f, \
      open_raw(pair.labels_path) as labels_f:
    at = 0  # records consumed from both files
    _skip(images_f, 16)
    _skip(labels_f, 8)
    for start, stop in ranges:
      if start < at or stop < start:
        raise ValueError(f"ranges must ascend without overlap: {ranges}")
      _skip(images_f, (start - at) * size)
      _skip(labels_f, start - at)
      k = stop - start
      images = np.frombuffer(_read_exact(images_f, k * size), np.uint8)
      labels = np.frombuffer(_read_exact(labels_f, k), np.uint8)
      if images.size != k * size or labels.size != k:
        raise IdxError(pair.images_path, "changed while being read")
      at = stop
      yield images.reshape(k, pair.rows, pair.cols), labels


def _skip(f: BinaryIO, n: int) -> None:
  """Moves `n` bytes forward from the current position."""
  if n <= 0:
    return
  if is_gzip(f):
    while n > 0:  # gzip cannot seek cheaply backwards; reading forward is fine.
      n -= len(f.read(min(n, _CHUNK))) or n
  else:
    f.seek(n, 1)


def load(images_path: str, labels_path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Checks and loads a whole pair into memory."""
  pair = check_pair(images_path, labels_path)
  return read_range(pair, 0, pair.count)


def shard_ranges(count: int, shard_size: int) -> Iterator[Tuple[int, int]]:
  for start in range(0, count, shard_size):
    yield start, min(count, start + shard_size)


def _write(path: str, header: bytes, payload: np.ndarray, compress: bool) -> None:
  data = header + np.ascontiguousarray(payload, dtype=np.uint8).tobytes()
  if compress:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
      g.write(data)
    data = buf.getvalue()
  with _gfile().GFile(path, "wb") as f:
    f.write(data)


def write_images(path: str, images: np.ndarray, compress: bool = False) -> None:
  """Writes uint8 images [n, rows, cols] as IDX (for tests and tools)."""
  _write(path, struct.pack(">I3I", IMAGES_MAGIC, *images.shape), images, compress)


def write_labels(path: str, labels: np.ndarray, compress: bool = False) -> None:
  """Writes uint8 labels [n] as IDX (for tests and tools)."""
  _write(path, struct.pack(">II", LABELS_MAGIC, len(labels)), labels, compress)
