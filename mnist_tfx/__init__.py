"""The `mnist-tfx` command and the defaults every package reads.

Light on purpose: importing it (or `mnist_tfx.defaults`) imports nothing
heavy, so a bad argument fails before TensorFlow starts.
"""
