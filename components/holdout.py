"""HoldOutValidation: the train split cut into `train` and `valid`, for the Tuner.

The Tuner selects hyperparameters on records it did not fit, and those must
not be the test split: that is the Evaluator's, and selecting on it would
make the reported accuracy optimistic. This component copies only the train
split of the examples into a new Examples artifact with two splits, so the
artifact the Tuner consumes holds no test record at all (lineage shows it).

A record goes to `valid` when the SHA-256 of its bytes falls below the
share: deterministic, independent of file order and sharding, and the same
record always lands on the same side.
"""

import hashlib
import json
import os
from typing import Dict

from tfx import v1 as tfx

from components import features
from components.tuning import check_validation_share

_FILE_FORMAT = "file_format"
_PAYLOAD_FORMAT = "payload_format"
SPLIT_COUNTS = "split_counts"  # custom property: records per split
_READ_BATCH = 4096


def is_validation(record: bytes, share: float) -> bool:
  digest = hashlib.sha256(record).digest()
  return int.from_bytes(digest[:8], "big") < share * 2.0**64


def hold_out(source_uri: str, output_uri: str, share: float) -> Dict[str, int]:
  """Copies `<source>/Split-train/*` into train/valid splits; their counts."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  check_validation_share(share)
  pattern = os.path.join(source_uri, f"Split-{features.TRAIN_SPLIT}", "*")
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise ValueError(f"no {features.TRAIN_SPLIT} split in {source_uri}")
  counts = {features.TRAIN_SPLIT: 0, features.VALIDATION_SPLIT: 0}
  writers = {}
  try:
    for split in counts:
      directory = os.path.join(output_uri, f"Split-{split}")
      tf.io.gfile.makedirs(directory)
      # Level 1: a quarter of the time of the default level, 8 % larger.
      writers[split] = tf.io.TFRecordWriter(
          os.path.join(directory, "data_tfrecord-00000-of-00001.gz"),
          options=tf.io.TFRecordOptions(compression_type="GZIP",
                                        compression_level=1))
    # Read in batches: one record at a time costs 20x more (7.6 s vs 0.3 s).
    for records in tf.data.TFRecordDataset(
        files, compression_type="GZIP", buffer_size=1 << 22).batch(
            _READ_BATCH).as_numpy_iterator():
      for record in records:
        split = (features.VALIDATION_SPLIT if is_validation(record, share)
                 else features.TRAIN_SPLIT)
        writers[split].write(record)
        counts[split] += 1
  finally:
    for writer in writers.values():
      writer.close()
  empty = [split for split, n in counts.items() if n == 0]
  if empty:
    raise ValueError(
        f"holding out {share:.0%} of {sum(counts.values())} training records "
        f"leaves the {' and '.join(empty)} split empty; change the "
        "validation share or use more data")
  return counts


@tfx.dsl.components.component
def HoldOutValidation(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.Examples],
    held_out: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.Examples],
    validation_share: tfx.dsl.components.Parameter[float],
) -> None:
  """The train split of `examples` as `train` and `valid` splits (no test split)."""
  counts = hold_out(examples.uri, held_out.uri, validation_share)
  held_out.split_names = json.dumps(list(counts))
  for name in (_FILE_FORMAT, _PAYLOAD_FORMAT):
    held_out.set_string_custom_property(
        name, examples.get_string_custom_property(name))
  held_out.set_json_value_custom_property(SPLIT_COUNTS, counts)
