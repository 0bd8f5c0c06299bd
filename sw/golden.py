"""The integer golden model: ``docs/numerics.md`` in numpy.

Every function takes and returns integer arrays (``int64``) with a leading batch axis, and
:func:`run` returns every layer's output so hardware can be compared layer by layer. The
window and matrix helpers are dtype-generic: the float reference of ``sw/quantize.py`` uses
the same code, so both agree on window order and padding by construction.
"""

import numpy as np

from .qmodel import Conv2D, Flatten, Pool2D, conv_output_size

__all__ = [
    "argmax",
    "average",
    "classify",
    "conv2d",
    "dense",
    "pool2d",
    "requantize",
    "run",
    "same_padding",
    "windows",
]

#: Largest accumulator width for which float64 matrix products are exact integers.
_EXACT_FLOAT_BITS = 52


def same_padding(size, kernel, stride):
    """Return ``(before, after)`` zero padding of Keras' ``same`` along one axis."""
    out = conv_output_size(size, kernel, stride, "same")
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def windows(x, kernel, stride=1, padding="valid"):
    """Return the convolution windows of ``x`` as rows.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    kernel, stride : int
    padding : {"valid", "same"}

    Returns
    -------
    ndarray, shape (N, Ho, Wo, kernel * kernel * C)
        Each window in ``(ky, kx, c)`` order: Keras' HWIO kernel reshaped to rows.
    """
    if padding == "same":
        pads = [same_padding(size, kernel, stride) for size in x.shape[1:3]]
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
    view = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(1, 2))
    view = view[:, ::stride, ::stride]  # (N, Ho, Wo, C, ky, kx)
    view = view.transpose(0, 1, 2, 4, 5, 3)
    return view.reshape(*view.shape[:3], -1)


def _matmul_exact(rows, matrix, acc_bits):
    """Integer ``rows @ matrix``; float64 BLAS when every partial sum is exact in it."""
    if acc_bits <= _EXACT_FLOAT_BITS:
        return np.rint(rows.astype(np.float64) @ matrix.astype(np.float64)).astype(np.int64)
    return rows.astype(np.int64) @ matrix.astype(np.int64)


def conv2d(x, layer):
    """Accumulators of a :class:`~sw.qmodel.Conv2D` layer: ``(N, Ho, Wo, Cout)``, bias added."""
    rows = windows(x, layer.kernel_size, layer.stride, layer.padding)
    return _matmul_exact(rows, layer.matrix, layer.acc_bits) + layer.bias


def dense(x, layer):
    """Accumulators of a :class:`~sw.qmodel.Dense` layer: ``(N, outputs)``, bias added."""
    return _matmul_exact(x.reshape(len(x), -1), layer.matrix, layer.acc_bits) + layer.bias


def requantize(acc, shift, bits, signed):
    """Rounding shift and saturation of ``docs/numerics.md``, per output channel (last axis).

    Parameters
    ----------
    acc : ndarray of int
    shift : ndarray of int, shape (channels,)
        Right shift; zero or negative shifts left.
    bits : int
        Output width.
    signed : bool
        ``False`` after ReLU (clamp to ``0 .. 2**bits-1``).
    """
    acc = np.asarray(acc, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    right = np.maximum(shift, 0)
    half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    r = np.where(shift > 0, (acc + half) >> right, acc << np.maximum(-shift, 0))
    if signed:
        return np.clip(r, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return np.clip(r, 0, (1 << bits) - 1)


def average(total, count):
    """The integer average of ``docs/numerics.md``: ``total / count`` rounded half up.

    ``floor((2 * total + count) / (2 * count))``, with Python's (numpy's) floor division, so
    negative totals round the same way (towards plus infinity on a tie) as positive ones.
    """
    total = np.asarray(total, dtype=np.int64)
    return (2 * total + count) // (2 * count)


def pool2d(x, window, op="max"):
    """Max or average pooling, stride = window; partial windows at the edge are dropped.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    window : int or (int, int)
        Window rows and columns (an int for a square window); ``(H, W)`` pools globally.
    op : {"max", "avg"}
        The average is :func:`average` on integer ``x`` and the exact mean on float ``x``
        (the float reference of ``sw/keras_import.py`` uses the same code).

    Returns
    -------
    ndarray, shape (N, H // rows, W // cols, C)
    """
    rows, cols = (window, window) if np.isscalar(window) else window
    n, h, w, c = x.shape
    ho, wo = h // rows, w // cols
    x = x[:, :ho * rows, :wo * cols].reshape(n, ho, rows, wo, cols, c)
    if op == "max":
        return x.max(axis=(2, 4))
    if op != "avg":
        raise ValueError(f"unknown pooling {op!r}")
    if np.issubdtype(x.dtype, np.integer):
        return average(x.sum(axis=(2, 4), dtype=np.int64), rows * cols)
    return x.mean(axis=(2, 4))


def argmax(logits):
    """Class of each row of ``logits``: the largest, the lowest index on a tie."""
    return np.argmax(logits, axis=-1)


def _layer(x, layer):
    if isinstance(layer, Flatten):
        return x.reshape(len(x), -1)
    if isinstance(layer, Pool2D):
        return pool2d(x, layer.window, layer.op).reshape(len(x), *layer.out_shape)
    acc = conv2d(x, layer) if isinstance(layer, Conv2D) else dense(x, layer)
    if layer.is_output:
        return acc
    return requantize(acc, layer.shift, layer.out_bits, layer.out_signed)


def run(qmodel, images, batch=1000):
    """Run ``images`` through ``qmodel`` and return every layer's integer output.

    Parameters
    ----------
    qmodel : QModel
    images : ndarray of uint8, shape (N, H, W) or (N, H, W, C)
    batch : int
        Images per step (bounds the memory the convolution windows take).

    Returns
    -------
    list of ndarray
        One ``int64`` array per layer, in layer order; the last holds the logits.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    outputs = [[] for _ in qmodel.layers]
    for start in range(0, len(images), batch):
        x = images[start:start + batch].astype(np.int64)
        for index, layer in enumerate(qmodel.layers):
            x = _layer(x, layer)
            outputs[index].append(x)
    return [np.concatenate(parts) if parts else np.zeros((0,), np.int64) for parts in outputs]


def classify(qmodel, images, batch=1000):
    """Return ``(classes, logits)`` for ``images`` (see :func:`run`)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    logits = []
    for start in range(0, len(images), batch):
        logits.append(run(qmodel, images[start:start + batch], batch)[-1])
    logits = np.concatenate(logits)
    return argmax(logits), logits

