"""Serving the pushed models over TensorFlow Serving's REST and gRPC APIs."""
