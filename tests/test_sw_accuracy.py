"""The shipped LeNet-5 on all 10,000 real test images: float, 8-bit and 4-bit integer."""

import numpy as np

from sw.evaluate import evaluate
from sw.models import load_float_net, load_model


def test_lenet5_integer_accuracy(mnist_test, mnist_train):
    images, labels = mnist_test
    results = evaluate(load_float_net("lenet5"), load_model("lenet5"), mnist_train[0], images,
                       labels, [8, 4], progress=False)
    assert len(images) == 10000
    assert results["float_accuracy"] >= 0.97
    assert abs(results["int"]["8"] - results["float_accuracy"]) <= 0.002
    assert abs(results["int"]["4"] - results["float_accuracy"]) <= 0.005
    assert np.isfinite(list(results["int"].values())).all()
