"""The golden model's arithmetic against docs/numerics.md, by brute force on small cases."""

import itertools

import numpy as np
import pytest

from sw import golden
from sw.qmodel import Conv2D, Dense, signed_bits


def test_requantize_rounds_half_up_and_saturates():
    acc = np.array([[-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 1000]]).T
    # shift 1: x/2 rounded half up, then clamp to 0..3 (ReLU, 2 bits)
    out = golden.requantize(acc, [1], bits=2, signed=False)
    assert out.ravel().tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    out = golden.requantize(acc, [1], bits=3, signed=True)
    assert out.ravel().tolist() == [-2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3, 3, 3]


def test_requantize_per_channel_and_left_shift():
    acc = np.array([[7, 7, 7]])
    out = golden.requantize(acc, [2, 0, -1], bits=8, signed=True)
    assert out.tolist() == [[2, 7, 14]]


def test_requantize_matches_exact_rational_rounding(rng):
    acc = rng.integers(-2000, 2000, size=(500, 1))
    for shift in range(1, 6):
        expected = np.clip(np.floor(acc / 2**shift + 0.5), -128, 127)
        assert np.array_equal(golden.requantize(acc, [shift], 8, True), expected)


def test_windows_order_is_keras_hwio(rng):
    x = rng.integers(0, 9, size=(2, 6, 7, 3))
    rows = golden.windows(x, 3)
    assert rows.shape == (2, 4, 5, 27)
    for n, oy, ox in itertools.product(range(2), range(4), range(5)):
        assert np.array_equal(rows[n, oy, ox], x[n, oy:oy + 3, ox:ox + 3, :].reshape(-1))


@pytest.mark.parametrize(("size", "kernel", "stride"), [(7, 3, 1), (7, 3, 2), (8, 4, 2), (5, 2, 1)])
def test_same_padding_matches_tensorflow(size, kernel, stride, rng):
    import tensorflow as tf

    x = rng.integers(0, 5, size=(1, size, size, 2)).astype(np.float32)
    w = rng.integers(-2, 3, size=(kernel, kernel, 2, 3)).astype(np.float32)
    expected = tf.nn.conv2d(x, w, stride, "SAME").numpy()
    rows = golden.windows(x, kernel, stride, "same")
    assert np.array_equal(rows @ w.reshape(-1, 3), expected)


def test_pooling_floors_odd_sizes():
    x = np.arange(5 * 5).reshape(1, 5, 5, 1)
    assert golden.pool2d(x, 2)[0, :, :, 0].tolist() == [[6, 8], [16, 18]]
    # Window sums 12, 20, 52, 60 over 4: exact.
    assert golden.pool2d(x, 2, "avg")[0, :, :, 0].tolist() == [[3, 5], [13, 15]]
    assert golden.pool2d(x, (5, 5), "avg")[0, 0, 0].tolist() == [12]


def test_average_rounds_half_up_for_either_sign():
    totals = np.array([-7, -6, -5, -3, -2, -1, 0, 1, 2, 3, 5, 6, 7])
    # total / 4: -1.75 -1.5 -1.25 -0.75 -0.5 -0.25 0 0.25 0.5 0.75 1.25 1.5 1.75
    assert golden.average(totals, 4).tolist() == [-2, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 2, 2]
    # Odd counts have no ties: the nearest integer.
    assert golden.average(np.array([-5, -4, -2, -1, 1, 2, 4, 5]), 3).tolist() == [
        -2, -1, -1, 0, 0, 1, 1, 2]
    exact = np.arange(-300, 300)
    for count in (1, 3, 4, 9, 49):
        assert np.array_equal(golden.average(exact, count),
                              np.floor(exact / count + 0.5).astype(np.int64))


def test_argmax_lowest_index_wins_ties():
    assert golden.argmax(np.array([[3, 7, 7, 1], [0, 0, 0, 0]])).tolist() == [1, 0]


def _dense(rng, fan_in, channels, in_bits, in_signed, weight_bits):
    lo, hi = (-1, 1) if weight_bits == 1 else (-(2 ** (weight_bits - 1) - 1),
                                               2 ** (weight_bits - 1) - 1)
    weight = rng.integers(lo, hi + 1, size=(fan_in, channels))
    if weight_bits == 1:
        weight[weight == 0] = 1
    return Dense(name="d", in_shape=(fan_in,), out_shape=(channels,), weight=weight,
                 bias=rng.integers(-50, 50, size=channels), weight_bits=weight_bits,
                 weight_frac=np.zeros(channels, int), in_bits=in_bits, in_signed=in_signed,
                 in_frac=0, relu=False)


def _brute_force_acc_bits(layer):
    """The accumulator width found by trying every input vector of a small dense layer.

    Every value the hardware's adders can hold is enumerated: the sum over every run of
    consecutive inputs (a SIMD chain adds such runs) and the bias plus every prefix (the
    accumulator starts from the bias), for every input vector in the input range. The width
    is the fewest two's complement bits that hold all of them.
    """
    lo_x, hi_x = (-(1 << (layer.in_bits - 1)), (1 << (layer.in_bits - 1)) - 1) \
        if layer.in_signed else (0, (1 << layer.in_bits) - 1)
    fan_in = layer.weight.shape[0]
    inputs = np.array(list(itertools.product(range(lo_x, hi_x + 1), repeat=fan_in)))
    terms = inputs[:, :, None] * layer.weight[None, :, :]  # (vectors, fan_in, channels)
    prefix = np.concatenate([np.zeros_like(terms[:, :1]), np.cumsum(terms, axis=1)], axis=1)
    runs = [prefix[:, j] - prefix[:, i] for i in range(fan_in) for j in range(i + 1, fan_in + 1)]
    held = np.concatenate([np.stack(runs).reshape(-1), (prefix + layer.bias).reshape(-1)])
    lo, hi = int(held.min()), int(held.max())
    # n bits hold -2**(n-1) .. 2**(n-1)-1: n - 1 must cover hi and -lo - 1.
    return 1 + max(max(hi, 0).bit_length(), max(-lo - 1, 0).bit_length()), lo, hi


@pytest.mark.parametrize("in_signed", [False, True], ids=["unsigned-in", "signed-in"])
@pytest.mark.parametrize("weight_bits", range(1, 9))
def test_accumulator_width_is_the_brute_force_width(weight_bits, in_signed, rng):
    # 5 inputs of 3 bits: 8**5 = 32768 input vectors, every one of them tried.
    layer = _dense(rng, 5, 4, in_bits=3, in_signed=in_signed, weight_bits=weight_bits)
    bits, lo, hi = _brute_force_acc_bits(layer)
    assert layer.acc_bits == bits
    # The declared range is what inputs reach, not a loose bound.
    assert layer.acc_range == (lo, hi)


def test_accumulator_width_counts_the_bias():
    # Inputs 0..7 and weights +-3 reach -21..21 (6 bits); a bias of 12 makes it 33 (7 bits).
    weight = np.array([[3, -3]])
    layer = Dense(name="d", in_shape=(1,), out_shape=(2,), weight=weight,
                  bias=np.array([12, 0]), weight_bits=3, weight_frac=np.zeros(2, int),
                  in_bits=3, in_signed=False, in_frac=0, relu=False)
    assert _brute_force_acc_bits(layer) == (7, -21, 33)
    assert layer.acc_bits == 7
    layer.bias = np.array([0, 0])
    assert layer.acc_bits == 6


def test_conv_golden_equals_direct_loops(rng):
    weight = rng.integers(-7, 8, size=(3, 3, 2, 4))
    layer = Conv2D(name="c", in_shape=(6, 6, 2), out_shape=(4, 4, 4), weight=weight,
                   bias=rng.integers(-9, 9, size=4), weight_bits=4,
                   weight_frac=np.zeros(4, int), in_bits=4, in_signed=False, in_frac=0,
                   relu=True)
    x = rng.integers(0, 16, size=(1, 6, 6, 2))
    acc = golden.conv2d(x, layer)
    for oy, ox, c in itertools.product(range(4), range(4), range(4)):
        direct = layer.bias[c] + int(np.sum(x[0, oy:oy + 3, ox:ox + 3, :] * weight[..., c]))
        assert acc[0, oy, ox, c] == direct


def test_signed_bits():
    assert [signed_bits(0, 0), signed_bits(-1, 0), signed_bits(0, 1), signed_bits(-128, 127),
            signed_bits(-129, 0), signed_bits(0, 128)] == [1, 1, 2, 8, 9, 9]
