"""`python -m mnist_tfx ...` is `mnist-tfx ...`."""

import sys

from mnist_tfx.cli import main

sys.exit(main())
