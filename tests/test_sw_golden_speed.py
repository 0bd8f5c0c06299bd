"""The fast golden model stays exact: every layer against a pure-integer reference written here.

``sw.golden`` multiplies in float32 or float64 where a bound proves every intermediate value
exact, and in int64 where it does not. The reference below shares no code with it: Python
integers (``object`` arrays), direct loops over window positions, Keras' padding rule
restated. Random models at every weight width, inputs that reach each channel's largest and
smallest sum, the float32/float64 boundary itself, and accumulators too wide for float64.
"""

import itertools

import numpy as np
import pytest

from sw import golden
from sw.qmodel import Conv2D, Dense, Flatten, Pool2D, QModel, value_range


def _weights(rng, bits, shape, full_scale=False):
    hi = 1 if bits == 1 else (1 << (bits - 1)) - 1
    if full_scale or bits == 1:
        return np.where(rng.random(shape) < 0.5, -hi, hi).astype(np.int64)
    return rng.integers(-hi, hi + 1, size=shape)


# The reference: Python integers throughout, no sw.golden code.

def _ref_pad(x, kernel, stride, padding):
    if padding == "valid":
        return x
    pads = []
    for size in x.shape[1:3]:
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    padded = np.zeros((len(x), x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1]),
                       x.shape[3]), dtype=object)
    padded[:, pads[0][0]:pads[0][0] + x.shape[1], pads[1][0]:pads[1][0] + x.shape[2]] = x
    return padded


def _ref_conv(x, weight, bias, stride, padding):
    kernel = weight.shape[0]
    x = _ref_pad(x.astype(object), kernel, stride, padding)
    ho, wo = ((size - kernel) // stride + 1 for size in x.shape[1:3])
    matrix = weight.astype(object).reshape(-1, weight.shape[-1])
    acc = np.empty((len(x), ho, wo, weight.shape[-1]), dtype=object)
    for oy, ox in itertools.product(range(ho), range(wo)):
        patch = x[:, oy * stride:oy * stride + kernel, ox * stride:ox * stride + kernel, :]
        acc[:, oy, ox] = patch.reshape(len(x), -1) @ matrix + bias.astype(object)
    return acc


def _ref_dense(x, weight, bias):
    return x.astype(object).reshape(len(x), -1) @ weight.astype(object) + bias.astype(object)


def _ref_requantize(acc, shift, bits, signed):
    out = np.empty(acc.shape, dtype=object)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    for c, s in enumerate(int(v) for v in shift):
        flat = acc[..., c].reshape(-1)
        values = [(a + (1 << (s - 1))) >> s if s > 0 else a << -s for a in flat]
        out[..., c] = np.array([min(max(v, lo), hi) for v in values],
                               dtype=object).reshape(acc[..., c].shape)
    return out


def _ref_pool(x, rows, cols, op):
    n, h, w, c = x.shape
    out = np.empty((n, h // rows, w // cols, c), dtype=object)
    for oy, ox in itertools.product(range(h // rows), range(w // cols)):
        window = x[:, oy * rows:(oy + 1) * rows, ox * cols:(ox + 1) * cols].reshape(n, -1, c)
        for i, k in itertools.product(range(n), range(c)):
            values = [int(v) for v in window[i, :, k]]
            count = len(values)
            out[i, oy, ox, k] = max(values) if op == "max" else \
                (2 * sum(values) + count) // (2 * count)
    return out


def _ref_run(qmodel, images):
    x = np.asarray(images).astype(object)
    if x.ndim == 3:
        x = x[..., None]
    outputs = []
    for layer in qmodel.layers:
        if isinstance(layer, Flatten):
            x = x.reshape(len(x), -1)
        elif isinstance(layer, Pool2D):
            x = _ref_pool(x, *layer.window, layer.op).reshape(len(x), *layer.out_shape)
        else:
            if isinstance(layer, Conv2D):
                x = _ref_conv(x, layer.weight, layer.bias, layer.stride, layer.padding)
            else:
                x = _ref_dense(x, layer.weight, layer.bias)
            if not layer.is_output:
                x = _ref_requantize(x, layer.shift, layer.out_bits, layer.out_signed)
        outputs.append(x)
    return outputs


def _assert_equal(actual, reference):
    assert actual.dtype == np.int64
    assert actual.shape == reference.shape
    assert actual.tolist() == reference.tolist()


# Models

def _weight_layer(cls, rng, bits, in_shape, out_shape, weight_shape, inputs, out, shift,
                  **extra):
    """A weight layer with inputs ``(bits, signed)`` and outputs ``(bits, signed)`` or None."""
    channels = weight_shape[-1]
    fields = {"name": f"{cls.__name__.lower()}{in_shape}", "in_shape": in_shape,
              "out_shape": out_shape, "weight": _weights(rng, bits, weight_shape),
              "bias": rng.integers(-300, 300, size=channels), "weight_bits": bits,
              "weight_frac": np.zeros(channels, int), "in_bits": inputs[0],
              "in_signed": inputs[1], "in_frac": 0, "relu": out is not None and not out[1]}
    if out is not None:
        fields.update(shift=np.asarray(shift), out_bits=out[0], out_signed=out[1])
    return cls(**fields, **extra)


def _shifts(rng, layer_acc_bits, out_bits, channels):
    """Shifts around the one that maps the accumulator onto the output: some channels
    saturate, some shift left, some keep every bit."""
    centre = layer_acc_bits - out_bits
    return np.clip(centre + rng.integers(-4, 3, size=channels), -3, None)


def _random_cnn(rng, weight_bits, act_bits, stride):
    """Conv (same, ``stride``) + max pool + conv (valid) + avg pool + dense + dense."""
    layers = []
    shape, inputs = (10, 10, 2), (8, False)
    height = -(-10 // stride)
    conv = _weight_layer(Conv2D, rng, weight_bits, shape, (height, height, 4), (3, 3, 2, 4),
                         inputs, (act_bits, False), np.zeros(4, int), stride=stride,
                         padding="same")
    conv.shift = _shifts(rng, conv.acc_bits, act_bits, 4)
    layers.append(conv)
    inputs, shape = (act_bits, False), conv.out_shape
    pooled = (shape[0] // 2, shape[1] // 2, 4)
    layers.append(Pool2D("max", shape, pooled, "max", 2, *inputs))
    shape = pooled
    side = shape[0] - 1
    conv = _weight_layer(Conv2D, rng, weight_bits, shape, (side, side, 5), (2, 2, 4, 5), inputs,
                         (act_bits, True), np.zeros(5, int))
    conv.shift = _shifts(rng, conv.acc_bits, act_bits, 5)
    layers.append(conv)
    inputs, shape = (act_bits, True), conv.out_shape
    if side >= 2:  # a windowed average (dropping a partial row when odd)
        pooled = (side // 2, side // 2, 5)
        layers += [Pool2D("avg", shape, pooled, "avg", 2, *inputs),
                   Flatten("flatten", pooled, (int(np.prod(pooled)),))]
        shape = (int(np.prod(pooled)),)
    else:  # a global average straight into the dense layer
        layers.append(Pool2D("gap", shape, (5,), "avg", None, *inputs))
        shape = (5,)
    dense = _weight_layer(Dense, rng, weight_bits, shape, (6,), (shape[0], 6), inputs,
                          (act_bits, False), np.zeros(6, int))
    dense.shift = _shifts(rng, dense.acc_bits, act_bits, 6)
    layers.append(dense)
    layers.append(_weight_layer(Dense, rng, weight_bits, (6,), (3,), (6, 3), (act_bits, False),
                                None, None))
    return QModel("random", (10, 10, 2), layers, weight_bits, act_bits).validate()


def _images(rng, count, shape):
    images = rng.integers(0, 256, size=(count, *shape)).astype(np.uint8)
    images[0] = 255  # every input at full scale
    images[1] = 0
    images[2] = np.where(rng.random(shape) < 0.5, 0, 255)
    return images


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bits", range(1, 9))
def test_random_models_equal_the_integer_reference(bits, stride, rng):
    qmodel = _random_cnn(rng, bits, bits, stride)
    images = _images(rng, 23, (10, 10, 2))
    reference = _ref_run(qmodel, images)
    outputs = golden.run(qmodel, images, batch=10)  # batches of 10, 10 and 3
    assert len(outputs) == len(qmodel.layers)
    for layer, output, expected in zip(qmodel.layers, outputs, reference, strict=True):
        assert output.shape == (len(images), *layer.out_shape)
        _assert_equal(output, expected)
    classes, logits = golden.classify(qmodel, images, batch=4)
    _assert_equal(logits, reference[-1])
    assert classes.tolist() == np.argmax(logits, axis=1).tolist()


def _extreme_inputs(weight, xlo, xhi):
    """For every output channel the two input vectors that reach its largest and smallest
    sum: full scale with each weight's sign, and against it."""
    rows = []
    for c in range(weight.shape[-1]):
        w = weight[..., c]
        rows += [np.where(w > 0, xhi, xlo), np.where(w > 0, xlo, xhi)]
    return np.array(rows)


@pytest.mark.parametrize("fan_in", [7, 1201])
@pytest.mark.parametrize("in_signed", [False, True])
@pytest.mark.parametrize("bits", range(1, 9))
def test_extreme_sums_are_exact(bits, in_signed, fan_in, rng):
    # 1201 inputs of 8 bits at full scale (half of the weights each sign) sum beyond 2**24 in
    # odd steps: the float64 path, where float32 would round.
    xlo, xhi = value_range(bits, in_signed)
    weight = _weights(rng, bits, (fan_in, 4), full_scale=True)
    dense = Dense(name="d", in_shape=(fan_in,), out_shape=(4,), weight=weight,
                  bias=rng.integers(-9, 9, size=4), weight_bits=bits,
                  weight_frac=np.zeros(4, int), in_bits=bits, in_signed=in_signed, in_frac=0,
                  relu=False)
    x = _extreme_inputs(weight, xlo, xhi)
    acc = golden.dense(x, dense)
    _assert_equal(acc, _ref_dense(x, weight, dense.bias))
    # The same sums through a convolution whose one window is the whole input.
    kernel = weight[:fan_in - fan_in % 9].reshape(3, 3, -1, 4) if fan_in >= 9 else \
        weight[:4].reshape(2, 2, 1, 4)
    conv = Conv2D(name="c", in_shape=kernel.shape[:3], out_shape=(1, 1, 4), weight=kernel,
                  bias=dense.bias, weight_bits=bits, weight_frac=np.zeros(4, int),
                  in_bits=bits, in_signed=in_signed, in_frac=0, relu=False)
    x = _extreme_inputs(kernel, xlo, xhi)
    acc = golden.conv2d(x, conv)
    _assert_equal(acc, _ref_conv(x, kernel, conv.bias, 1, "valid"))


def test_float32_limit_is_exact_on_both_sides():
    # x + 1 for x up to 2**24 - 1 is float32's last exact case; x up to 2**24 makes 2**24 + 1,
    # which float32 would round to 2**24: float64 must take over.
    layer = Dense(name="d", in_shape=(1,), out_shape=(2,), weight=np.array([[1, 1]]),
                  bias=np.array([0, 1]), weight_bits=2, weight_frac=np.zeros(2, int),
                  in_bits=26, in_signed=False, in_frac=0, relu=False)
    for top, dtype in ((2**24 - 1, np.float32), (2**24, np.float64)):
        x = np.array([[top], [top - 1], [0]])
        assert golden._WeightStep(layer, 0, top, requantize=False).dtype == dtype
        assert golden.dense(x, layer).tolist() == [[top, top + 1], [top - 1, top], [0, 1]]


@pytest.mark.parametrize("bits", [2, 8])
def test_accumulators_too_wide_for_float64_fall_back_to_int64(bits, rng):
    # 64 inputs of 50 bits: sums up to 2**55 (weights +-1) or near 2**62 (+-127), beyond
    # float64's 2**53 and within int64.
    weight = _weights(rng, bits, (64, 3), full_scale=True)
    layer = Dense(name="d", in_shape=(64,), out_shape=(3,), weight=weight,
                  bias=rng.integers(-5, 5, size=3), weight_bits=bits,
                  weight_frac=np.zeros(3, int), in_bits=50, in_signed=True, in_frac=0,
                  relu=False)
    xlo, xhi = value_range(50, True)
    x = np.concatenate([_extreme_inputs(weight, xlo, xhi),
                        rng.integers(xlo, xhi, size=(5, 64), endpoint=True)])
    assert golden._WeightStep(layer, xlo, xhi, requantize=False).dtype == np.int64
    _assert_equal(golden.dense(x, layer), _ref_dense(x, weight, layer.bias))
    # Odd sums just above 2**53, which float64 would round to even.
    x = np.zeros((1, 64), np.int64)
    w0, w1 = int(weight[0, 0]), int(weight[1, 0])  # odd, both
    x[0, 0] = np.sign(w0) * (2**53 // abs(w0) + 8)  # above 2**53 whatever the bias
    x[0, 1] = 0 if (int(x[0, 0]) * w0 + int(layer.bias[0])) % 2 else np.sign(w1)
    expected = _ref_dense(x, weight, layer.bias)
    assert expected[0, 0] > 2**53 and expected[0, 0] % 2 == 1
    _assert_equal(golden.dense(x, layer), expected)


@pytest.mark.parametrize("shift", [-28, 40, 62])
def test_wide_hidden_activations_in_a_whole_model(shift, rng):
    """A hidden layer of 48-bit activations: the next layer's sums exceed float64 (int64 path).
    The hidden layer shifts left by 28 (saturating), or right by 40 (its rounding half 2**39
    needs float64) or 62 (half 2**61: int64)."""
    first = _weight_layer(Dense, rng, 8, (36,), (16,), (36, 16), (8, False), (48, True),
                          np.full(16, shift))
    if shift > 0:  # accumulators large enough that a right shift by 40 keeps some bits
        first.bias = rng.integers(-(1 << 50), 1 << 50, size=16)
    second = _weight_layer(Dense, rng, 8, (16,), (3,), (16, 3), (48, True), None, None)
    qmodel = QModel("wide", (6, 6, 1), [Flatten("flatten", (6, 6, 1), (36,)), first, second],
                    8, 8).validate()
    images = _images(rng, 9, (6, 6))
    for output, expected in zip(golden.run(qmodel, images), _ref_run(qmodel, images),
                                strict=True):
        _assert_equal(output, expected)
    assert golden._WeightStep(second, *value_range(48, True)).dtype == np.int64


@pytest.mark.parametrize(("kernel", "stride", "padding", "channels"),
                         [(3, 1, "same", 1), (3, 2, "same", 1), (5, 1, "valid", 1),
                          (3, 1, "same", 3), (2, 2, "valid", 5), (3, 2, "same", 8),
                          (1, 1, "valid", 20), (4, 3, "same", 2)])
@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.float32])
def test_windows_equal_direct_slices(kernel, stride, padding, channels, dtype, rng):
    # Small windows (at most 16 values) and large ones are gathered differently.
    x = rng.integers(0, 200, size=(3, 9, 8, channels)).astype(dtype)
    rows = golden.windows(x, kernel, stride, padding)
    assert rows.dtype == dtype
    padded = _ref_pad(x.astype(object), kernel, stride, padding)
    ho, wo = ((size - kernel) // stride + 1 for size in padded.shape[1:3])
    assert rows.shape == (3, ho, wo, kernel * kernel * channels)
    for oy, ox in itertools.product(range(ho), range(wo)):
        window = padded[:, oy * stride:oy * stride + kernel, ox * stride:ox * stride + kernel]
        assert rows[:, oy, ox].tolist() == window.reshape(3, -1).tolist()


@pytest.mark.parametrize("window", [1, 2, 3, (2, 3), (1, 2), (3, 1), (7, 6)])
@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.int8])
def test_max_pool_equals_direct_windows(window, dtype, rng):
    x = rng.integers(-100, 100, size=(4, 7, 6, 3)).astype(dtype)
    out = golden.pool2d(x, window)
    rows, cols = (window, window) if np.isscalar(window) else window
    assert out.dtype == dtype
    _assert_equal(out.astype(np.int64), _ref_pool(x.astype(object), rows, cols, "max"))
    if rows * cols == 1:  # a copy, not a view of the input
        out[...] = 0
        assert x.any()


def test_empty_batches_and_batch_sizes(rng):
    qmodel = _random_cnn(rng, 4, 4, 1)
    images = _images(rng, 11, (10, 10, 2))
    whole = golden.run(qmodel, images)
    for batch in (1, 3, 11, 100):
        for a, b in zip(golden.run(qmodel, images, batch=batch), whole, strict=True):
            assert np.array_equal(a, b)
    # Three-axis images get their channel axis, as before (one channel).
    one = _random_cnn(rng, 3, 3, 2)
    one.layers[0].weight = one.layers[0].weight[:, :, :1]
    one.layers[0].in_shape = one.input_shape = (10, 10, 1)
    squeezed = images[..., 0]
    assert np.array_equal(golden.classify(one, squeezed)[1], _ref_run(one, squeezed)[-1].astype(
        np.int64))
    assert [out.shape for out in golden.run(qmodel, images[:0])] == [(0,)] * len(qmodel.layers)
    classes, logits = golden.classify(qmodel, images[:0])
    assert classes.shape == (0,) and logits.shape == (0, 3)
