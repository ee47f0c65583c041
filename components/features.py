"""The one place for feature names and dataset facts.

Every module that touches examples (ExampleGen, schema, Transform, Trainer,
Evaluator, serving) imports these names, so a rename happens here only.
"""

from typing import Dict, Tuple

IMAGE_KEY = "image"  # raw tf.Example feature: 784 int64 pixels, row-major
LABEL_KEY = "label"  # raw tf.Example feature: one int64 in [0, NUM_CLASSES)
# Raw tf.Example feature of the test split only: the writer population of
# the record, for the Evaluator's slices (never a model input).
WRITER_KEY = "writer"

# Transformed (model input) feature names.
TRANSFORMED_IMAGE_KEY = "image_xf"

IMAGE_ROWS = 28
IMAGE_COLS = 28
IMAGE_SHAPE: Tuple[int, int] = (IMAGE_ROWS, IMAGE_COLS)
IMAGE_SIZE = IMAGE_ROWS * IMAGE_COLS  # 784
NUM_CLASSES = 10
PIXEL_MIN = 0
PIXEL_MAX = 255

# The official split of the IDX files: ExampleGen split name -> IDX file stem.
SPLIT_FILES: Dict[str, str] = {
    "train": "train",
    "eval": "t10k",
}
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
# MNIST's documentation: "The first 5000 examples of the test set are taken
# from the original NIST training set [SD-3, Census Bureau employees]. The
# last 5000 are taken from the original NIST test set [SD-1, high-school
# students]." The training set mixes both, unrecorded per record.
SD3, SD1 = "SD-3", "SD-1"
WRITERS: Tuple[str, str] = (SD3, SD1)
SD3_TEST_RECORDS = 5000


def writer_of_test_record(index: int) -> str:
  """The writer population of the test split's record at `index`."""
  return SD3 if index < SD3_TEST_RECORDS else SD1


# Held out of the train split for hyperparameter search (components.holdout).
VALIDATION_SPLIT = "valid"

# Output names of the exported model's signatures.
PROBABILITIES_KEY = "probabilities"
CLASSES_KEY = "classes"
# Signature names of the exported model.
SERVING_SIGNATURE = "serving_default"  # raw pixels in (float32)
UINT8_SIGNATURE = "serving_uint8"  # raw pixels in (uint8), for typed clients
EXAMPLES_SIGNATURE = "from_examples"  # serialized tf.Examples in
IMAGES_INPUT = "images"
EXAMPLES_INPUT = "examples"


def raw_feature_spec():
  """tf.io parsing spec of the raw tf.Examples (as the curated schema says)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {IMAGE_KEY: tf.io.FixedLenFeature(IMAGE_SHAPE, tf.int64),
          LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
