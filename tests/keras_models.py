"""Helpers for the Keras models the tests build."""

import numpy as np

__all__ = ["randomize_batch_norm"]


def randomize_batch_norm(model, seed=0):
    """Give every ``BatchNormalization`` moving statistics that are not the identity, so
    folding them is tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2, var.shape)])
    return model
