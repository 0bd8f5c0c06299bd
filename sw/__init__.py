"""Software half of the generator: models, data, quantization and the integer golden model."""

import os

# TensorFlow's C++ start-up chatter buries the one-line messages our commands print.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = []
