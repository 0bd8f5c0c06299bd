"""Accumulators at their extremes, in RTL: the inputs that need every accumulator bit.

For each output channel of a weight layer, one input vector drives every product to its
largest value (the input at full scale where the weight is positive, at the bottom of its
range where it is negative) and one drives every product to its smallest; the biases push the
same way, so the largest and smallest of these accumulators need exactly the layer's
``acc_bits``. A one-bit narrower accumulator would wrap on them. Each layer's generated Verilog
(:func:`sim.layers.simulate_layer`) must return the golden model's outputs for these inputs,
for an 8-bit pixel input, an unsigned (ReLU) activation input and a signed one.
"""

import numpy as np
import pytest

from sim.layers import simulate_layer
from sw import golden
from sw.qmodel import Conv2D, Dense, Flatten, QModel, weight_range

pytestmark = pytest.mark.sim


def _input_range(bits, is_signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)


def _needed_bits(lo, hi):
    """Fewest two's complement bits holding ``lo .. hi`` (``lo <= 0 <= hi``)."""
    return 1 + max(max(hi, 0).bit_length(), max(-lo - 1, 0).bit_length())


def _weights(rng, shape, bits):
    lo, hi = weight_range(bits)
    values = rng.choice([lo, hi], size=shape) if bits == 1 else rng.integers(lo, hi + 1, shape)
    return values.astype(np.int64)


def _bias_outwards(rng, kernel, xlo, xhi):
    """A bias per channel with the sign of the channel's larger extreme, so the biased
    extremes (not the bias-free partial sums) set the accumulator width."""
    w = kernel.reshape(-1, kernel.shape[-1])
    top = np.maximum(w * xlo, w * xhi).sum(axis=0)
    bottom = np.minimum(w * xlo, w * xhi).sum(axis=0)
    magnitude = rng.integers(1, 20, size=w.shape[1])
    return np.where(top >= -bottom, magnitude, -magnitude)


def _model(weight_bits, act_bits, seed):
    """Pixels ``3x3x2`` -> conv 3x3 (6 ch, ReLU) -> flatten -> dense 6->5 (no ReLU, signed
    activations) -> dense 5->4 (logits): a weight layer for each kind of input."""
    rng = np.random.default_rng(seed)
    specs = [  # name, kernel shape, input bits, input signed, ReLU
        ("conv", (3, 3, 2, 6), 8, False, True),
        ("hidden", (6, 5), act_bits, False, False),
        ("logits", (5, 4), act_bits, True, False),
    ]
    layers, shape = [], (3, 3, 2)
    for index, (name, kshape, in_bits, in_signed, relu) in enumerate(specs):
        kernel = _weights(rng, kshape, weight_bits)
        xlo, xhi = _input_range(in_bits, in_signed)
        bias = _bias_outwards(rng, kernel, xlo, xhi)
        channels = kshape[-1]
        out_shape = (1, 1, channels) if len(kshape) == 4 else (channels,)
        fields = {"name": name, "in_shape": shape, "out_shape": out_shape, "weight": kernel,
                  "bias": bias, "weight_bits": weight_bits,
                  "weight_frac": np.zeros(channels, np.int64), "in_bits": in_bits,
                  "in_signed": in_signed, "in_frac": 0, "relu": relu}
        if index < len(specs) - 1:
            # A shift that keeps the extremes' outputs apart from each other (not all clamped).
            w = kernel.reshape(-1, channels)
            span = int(np.abs(w).sum(axis=0).max()) * max(abs(xlo), xhi) + 20
            shift = np.full(channels, max(0, span.bit_length() - act_bits))
            fields.update(shift=shift, out_bits=act_bits, out_signed=not relu)
        layers.append(Conv2D(**fields) if len(kshape) == 4 else Dense(**fields))
        shape = out_shape
        if name == "conv":
            layers.append(Flatten("flatten", out_shape, (channels,)))
            shape = (channels,)
    return QModel("extremes", (3, 3, 2), layers, weight_bits, act_bits).validate()


def _extreme_inputs(layer):
    """For each channel, the input maximizing then the one minimizing its accumulator, and
    the accumulators they reach (computed here, term by term)."""
    xlo, xhi = _input_range(layer.in_bits, layer.in_signed)
    kernel = layer.weight  # HWIO for a conv: one window is the whole 3x3x2 input
    inputs, reached = [], []
    for c in range(layer.channels):
        w = kernel[..., c]
        for high in (True, False):
            x = np.where((w > 0) == high, xhi, xlo)
            inputs.append(x.reshape(layer.in_shape))
            reached.append(int(layer.bias[c]) + int((w * x).sum()))
    return np.array(inputs, dtype=np.int64), reached


FOLDS = {"serial": {}, "parallel": {"conv": (3, 6), "hidden": (5, 2), "logits": (2, 5)}}


# One fold per width: each case builds one Verilator model (about 15 s cold).
@pytest.mark.parametrize("name", ["conv", "hidden", "logits"])
@pytest.mark.parametrize(("weight_bits", "act_bits", "fold"), [
    (1, 2, "parallel"), (3, 3, "serial"), (8, 8, "parallel")])
def test_extreme_accumulators_in_rtl(weight_bits, act_bits, fold, name, tmp_path):
    qmodel = _model(weight_bits, act_bits, seed=weight_bits)
    index = [layer.name for layer in qmodel.layers].index(name)
    layer = qmodel.layers[index]
    inputs, reached = _extreme_inputs(layer)
    # These inputs need every bit of the accumulator: one bit fewer cannot hold them.
    assert _needed_bits(min(reached), max(reached)) == layer.acc_bits
    acc = (golden.conv2d if layer.kind == "conv2d" else golden.dense)(inputs, layer)
    rows = np.arange(len(inputs))
    assert acc.reshape(len(inputs), -1)[rows, rows // 2].tolist() == reached
    expected = acc if layer.is_output else golden.requantize(
        acc, layer.shift, layer.out_bits, layer.out_signed)
    rtl = simulate_layer(qmodel, index, FOLDS[fold], inputs, workdir=tmp_path)
    assert rtl.tolist() == expected.tolist()
