"""The integer golden model: ``docs/numerics.md`` in numpy.

Every function takes and returns integer arrays (``int64``) with a leading batch axis, and
:func:`run` returns every layer's output so hardware can be compared layer by layer. The
window and matrix helpers are dtype-generic: the float reference of ``sw/quantize.py`` uses
the same code, so both agree on window order and padding by construction.

Speed without giving up exactness: a weight layer's products and sums are computed by BLAS in
float32 (or float64) whenever a bound proves that every value met on the way is an integer
that the float format holds exactly, and in ``int64`` otherwise (:func:`_compute_dtype`).
:func:`run` and :func:`classify` process the images in batches through work buffers that are
reused from batch to batch, so memory stays bounded whatever the number of images (apart from
the ``int64`` outputs :func:`run` has to return).
"""

import itertools

import numpy as np

from .qmodel import Conv2D, Dense, Flatten, Pool2D, conv_output_size, value_range

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

#: Every integer of at most this magnitude is a float32 (24-bit significand), and a product
#: or sum of such integers whose exact result is one too is computed without rounding.
_FLOAT32_EXACT = 1 << 24
#: The same for float64 (53-bit significand).
_FLOAT64_EXACT = 1 << 53
#: Requantization shifts ``s`` with ``|s|`` below this are folded into float weights as the
#: factor ``2**-s``: far inside float32's exponent range, so the scaling is exact.
_MAX_FLOAT_SHIFT = 64
#: Images per step of :func:`run` and :func:`classify`: the work buffers of a step (tens of MB
#: for a 28x28 CNN) stay cache- and page-friendly; larger steps are no faster.
_BATCH = 256
#: Max pools with at most this many values per window take elementwise maxima of views, one
#: window row or column at a time; larger (global) windows reduce a reshaped array instead.
_ELEMENTWISE_POOL_WINDOW = 16
#: Windows of at most this many values are gathered one kernel offset at a time (a few large
#: strided copies); numpy copies a sliding-window view of larger windows faster (measured).
_SMALL_WINDOW = 16


def same_padding(size, kernel, stride):
    """Return ``(before, after)`` zero padding of Keras' ``same`` along one axis."""
    out = conv_output_size(size, kernel, stride, "same")
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _padding(shape, kernel, stride, padding):
    """``((top, bottom), (left, right))`` zero padding of an ``(N, H, W, C)`` input."""
    if padding == "same":
        return tuple(same_padding(size, kernel, stride) for size in shape[1:3])
    return (0, 0), (0, 0)


def _windows_into(padded, kernel, stride, out):
    """Copy the windows of the (already padded) ``padded`` into ``out``, casting to its dtype.

    ``out`` has shape ``(N, Ho, Wo, kernel, kernel, C)``; writing into it directly (instead of
    reshaping a sliding-window view, which copies) saves a copy and any dtype conversion.
    """
    ho, wo = out.shape[1:3]
    if kernel * kernel * padded.shape[3] <= _SMALL_WINDOW:
        rows, cols = stride * (ho - 1) + 1, stride * (wo - 1) + 1
        for ky, kx in itertools.product(range(kernel), repeat=2):
            out[:, :, :, ky, kx] = padded[:, ky:ky + rows:stride, kx:kx + cols:stride]
        return out
    view = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(1, 2))
    view = view[:, ::stride, ::stride]  # (N, Ho, Wo, C, ky, kx)
    np.copyto(out, view.transpose(0, 1, 2, 4, 5, 3), casting="unsafe")
    return out


def _windows_shape(padded_shape, kernel, stride):
    """``(Ho, Wo)`` of the windows of a padded ``(N, H, W, C)`` input."""
    if min(padded_shape[1:3]) < kernel:
        raise ValueError(f"a {kernel}x{kernel} window does not fit {tuple(padded_shape[1:3])}")
    return tuple((size - kernel) // stride + 1 for size in padded_shape[1:3])


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
        Each window in ``(ky, kx, c)`` order: Keras' HWIO kernel reshaped to rows. The dtype
        is ``x``'s.
    """
    x = np.asarray(x)
    pads = _padding(x.shape, kernel, stride, padding)
    if padding == "same":
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
    ho, wo = _windows_shape(x.shape, kernel, stride)
    out = np.empty((len(x), ho, wo, kernel, kernel, x.shape[3]), x.dtype)
    return _windows_into(x, kernel, stride, out).reshape(len(x), ho, wo, -1)


def _exact_bound(matrix, offsets, xlo, xhi):
    """Bound the magnitude of every integer a ``x @ matrix + offsets`` meets, ``x`` in range.

    For inputs in ``[xlo, xhi]`` each term ``q * x`` lies between ``q * min(xlo, 0)`` and
    ``q * max(xhi, 0)``, so every partial sum over any subset of terms, in any order (as BLAS
    blocks and fuses them), lies within the per-column ``[lo, hi]`` of ``docs/numerics.md``.
    The bound covers those sums, the sums plus the column's offset, the offsets, and the
    operands themselves. Python integers: no overflow, whatever the widths.

    Parameters
    ----------
    matrix : ndarray of int, shape (inputs, outputs)
    offsets : list of int
        Added to each column after the product.
    xlo, xhi : int
        The range of the inputs.

    Returns
    -------
    int
    """
    xlo, xhi = min(int(xlo), 0), max(int(xhi), 0)
    matrix = np.asarray(matrix)
    positive = np.where(matrix > 0, matrix, 0).sum(axis=0, dtype=object)
    negative = np.where(matrix < 0, matrix, 0).sum(axis=0, dtype=object)
    bound = max(-xlo, xhi, int(np.abs(matrix).max(initial=0)))
    for pos, neg, offset in zip(positive, negative, offsets, strict=True):
        lo, hi = pos * xlo + neg * xhi, pos * xhi + neg * xlo
        bound = max(bound, -lo, hi, abs(lo + offset), abs(hi + offset), abs(offset))
    return bound


def _compute_dtype(bound):
    """The fastest dtype in which integers of magnitude up to ``bound`` stay exact."""
    if bound <= _FLOAT32_EXACT:
        return np.dtype(np.float32)
    if bound <= _FLOAT64_EXACT:
        return np.dtype(np.float64)
    return np.dtype(np.int64)


def _value_range(x):
    """``(min, max)`` of an integer array as Python ints (``(0, 0)`` when empty)."""
    if x.size == 0:
        return 0, 0
    return int(x.min()), int(x.max())


class _Step:
    """A layer prepared for the golden model; one subclass per layer kind (:data:`_STEPS`).

    Parameters
    ----------
    layer : Conv2D, Dense, Pool2D or Flatten
    xlo, xhi : int
        The range of the inputs the step will see.
    """

    #: The range of the outputs where the step narrows its input's (a requantization's
    #: clamp), and so the range the next layer sees; ``None`` keeps the input's.
    out_range = None
    #: Whether the step gives the same result before a requantization as after it (it is
    #: monotone in each channel): :meth:`_Plan.forward` then runs it on the accumulators.
    before_requantize = False

    def __init__(self, layer, xlo, xhi):
        self.layer = layer

    def forward(self, x):
        """The layer's output for a batch ``x`` of integers held in any dtype."""
        raise NotImplementedError

    def precedes(self, following):
        """Whether ``following`` may run on this step's accumulators, before its
        requantization (see :meth:`_Plan.forward`)."""
        return False


class _WeightStep(_Step):
    """A Conv2D or Dense layer prepared for inputs in ``[xlo, xhi]``.

    The products run in the exact dtype the bound allows, into work buffers kept for the next
    batch. In float, a hidden layer's requantization is folded in: column ``c`` of the weights
    and its offset ``b[c] + 2**(s[c]-1)`` are scaled by ``2**-s[c]`` (exact: powers of two),
    so ``(acc + 2**(s-1)) >> s`` is one ``floor`` of the product; the values are then integers
    in units of ``2**-s[c]`` bounded as in :func:`_exact_bound`, and so exact as well.

    Parameters
    ----------
    layer : Conv2D or Dense
    xlo, xhi : int
        The range of the inputs the step will see.
    requantize : bool
        ``False`` gives the bare accumulators (bias added) of a hidden layer too.
    """

    def __init__(self, layer, xlo, xhi, requantize=True):
        super().__init__(layer, xlo, xhi)
        self.requant = requantize and not layer.is_output
        matrix = np.asarray(layer.matrix)
        bias = [int(b) for b in np.asarray(layer.bias).reshape(-1)]
        shifts = [int(s) for s in layer.shift] if self.requant else [0] * len(bias)
        offsets = [b + (1 << (s - 1) if s > 0 else 0) for b, s in zip(bias, shifts, strict=True)]
        self.dtype = _compute_dtype(_exact_bound(matrix, offsets, xlo, xhi))
        if self.dtype.kind == "f" and max(map(abs, shifts), default=0) >= _MAX_FLOAT_SHIFT:
            self.dtype = np.dtype(np.int64)
        if self.dtype.kind == "f":
            scale = np.ldexp(1.0, -np.array(shifts))
            self.matrix = (matrix.astype(np.float64) * scale).astype(self.dtype)
            self.offset = (np.array(offsets, np.float64) * scale).astype(self.dtype)
        else:
            self.matrix = matrix.astype(np.int64)
            self.offset = np.asarray(layer.bias, np.int64)
        #: The clamp of a requantized output, and so the range the next layer sees.
        self.out_range = value_range(layer.out_bits, layer.out_signed) if self.requant else None
        self._buffers = {}

    def _buffer(self, name, shape, fill=None):
        """A work array of ``shape`` (the batch axis first), reused while it is large enough."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape[1:] != shape[1:] or len(buffer) < shape[0]:
            buffer = np.empty(shape, self.dtype) if fill is None else np.full(shape, fill,
                                                                                self.dtype)
            self._buffers[name] = buffer
        return buffer[:shape[0]]

    def accumulate(self, x):
        """``x @ matrix`` (windows of ``x`` for a convolution), in the step's dtype, no offset.

        Returns a view of a work buffer, valid until the next call.
        """
        raise NotImplementedError

    def finish(self, acc):
        """The layer's output from :meth:`accumulate`'s (possibly max-pooled) ``acc``.

        Float results are integers in the step's dtype; ``acc`` is overwritten.
        """
        if self.dtype.kind != "f":
            acc = acc + self.offset
            if not self.requant:
                return acc
            return requantize(acc, self.layer.shift, self.layer.out_bits, self.layer.out_signed)
        acc += self.offset
        if not self.requant:
            return acc
        np.floor(acc, out=acc)
        np.maximum(acc, self.out_range[0], out=acc)
        return np.minimum(acc, self.out_range[1], out=acc)

    def forward(self, x):
        return self.finish(self.accumulate(x))

    def precedes(self, following):
        # In float a hidden layer's requantization is a floor and a clamp, done by finish().
        return self.requant and self.dtype.kind == "f" and following.before_requantize


class _DenseStep(_WeightStep):
    """A :class:`~sw.qmodel.Dense` layer (see :class:`_WeightStep`)."""

    def accumulate(self, x):
        n = len(x)
        rows = x.reshape(n, -1)
        if rows.dtype != self.dtype:
            rows = self._buffer("rows", rows.shape)
            np.copyto(rows, x.reshape(n, -1), casting="unsafe")
        out = self._buffer("acc", (n, self.matrix.shape[1]))
        return np.matmul(rows, self.matrix, out=out)


class _ConvStep(_WeightStep):
    """A :class:`~sw.qmodel.Conv2D` layer (see :class:`_WeightStep`)."""

    def accumulate(self, x):
        n = len(x)
        layer = self.layer
        kernel, stride = layer.kernel_size, layer.stride
        (top, bottom), (left, right) = _padding(x.shape, kernel, stride, layer.padding)
        padded = x
        if top or bottom or left or right:
            h, w = x.shape[1:3]
            # The border is zeroed once; later batches only overwrite the interior.
            padded = self._buffer("pad", (n, h + top + bottom, w + left + right, x.shape[3]),
                                  fill=0)
            padded[:, top:top + h, left:left + w] = x
        ho, wo = _windows_shape(padded.shape, kernel, stride)
        rows = self._buffer("rows", (n, ho, wo, kernel, kernel, x.shape[3]))
        _windows_into(padded, kernel, stride, rows)
        out = self._buffer("acc", (n * ho * wo, self.matrix.shape[1]))
        np.matmul(rows.reshape(n * ho * wo, -1), self.matrix, out=out)
        return out.reshape(n, ho, wo, -1)


class _PoolStep(_Step):
    """A :class:`~sw.qmodel.Pool2D` layer: it keeps its input's range."""

    def __init__(self, layer, xlo, xhi):
        super().__init__(layer, xlo, xhi)
        # The maximum commutes with requantization, monotone in each channel.
        self.before_requantize = layer.op == "max"

    def forward(self, x):
        return _pool(x, self.layer)


class _FlattenStep(_Step):
    """A :class:`~sw.qmodel.Flatten` layer: the values in the same order, one axis."""

    def forward(self, x):
        return x.reshape(len(x), -1)


#: The golden model's step for each layer kind of :mod:`sw.qmodel`.
_STEPS = {Conv2D: _ConvStep, Dense: _DenseStep, Pool2D: _PoolStep, Flatten: _FlattenStep}


def _integer_input(x):
    """``x`` as an integer array: integer dtypes as they are, anything else as ``int64``."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu" or x.dtype == np.uint64:
        return x.astype(np.int64)
    return x


def conv2d(x, layer):
    """Accumulators of a :class:`~sw.qmodel.Conv2D` layer: ``(N, Ho, Wo, Cout)``, bias added."""
    x = _integer_input(x)
    step = _ConvStep(layer, *_value_range(x), requantize=False)
    return step.finish(step.accumulate(x)).astype(np.int64)


def dense(x, layer):
    """Accumulators of a :class:`~sw.qmodel.Dense` layer: ``(N, outputs)``, bias added."""
    x = _integer_input(x)
    step = _DenseStep(layer, *_value_range(x), requantize=False)
    return step.finish(step.accumulate(x.reshape(len(x), -1))).astype(np.int64)


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


def _max_pool(x, rows, cols):
    """Max pooling of ``(N, H, W, C)`` ``x``, stride = window, in ``x``'s dtype."""
    n, h, w, c = x.shape
    ho, wo = h // rows, w // cols
    x = x[:, :ho * rows, :wo * cols]
    if rows * cols > _ELEMENTWISE_POOL_WINDOW:
        return x.reshape(n, ho, rows, wo, cols, c).max(axis=(2, 4))
    if rows * cols == 1:
        return x.copy()
    # Elementwise maxima of views instead of a reduction over two non-adjacent axes, which
    # numpy does several times slower: first across the window's rows (each view a run of
    # whole image rows), then across its columns (runs of C channels).
    x = x.reshape(n, ho, rows, wo, cols * c)
    by_rows = np.maximum(x[:, :, 0], x[:, :, 1]) if rows > 1 else x[:, :, 0]
    for dy in range(2, rows):
        np.maximum(by_rows, x[:, :, dy], out=by_rows)
    if cols == 1:
        return by_rows
    out = np.maximum(by_rows[..., :c], by_rows[..., c:2 * c])
    for dx in range(2, cols):
        np.maximum(out, by_rows[..., dx * c:(dx + 1) * c], out=out)
    return out


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
    x = np.asarray(x)
    if op == "max":
        return _max_pool(x, rows, cols)
    if op != "avg":
        raise ValueError(f"unknown pooling {op!r}")
    n, h, w, c = x.shape
    ho, wo = h // rows, w // cols
    x = x[:, :ho * rows, :wo * cols].reshape(n, ho, rows, wo, cols, c)
    if np.issubdtype(x.dtype, np.integer):
        return average(x.sum(axis=(2, 4), dtype=np.int64), rows * cols)
    return x.mean(axis=(2, 4))


def argmax(logits):
    """Class of each row of ``logits``: the largest, the lowest index on a tie."""
    return np.argmax(logits, axis=-1)


class _Plan:
    """Every layer of ``qmodel`` prepared for input pixels in ``[xlo, xhi]``.

    Each weight layer gets the exact dtype of its own bound; a hidden layer's input range is
    its predecessor's output range (requantization clamps it, pooling keeps it), so the bound
    holds for every batch.
    """

    def __init__(self, qmodel, xlo, xhi):
        self.steps = []
        lo, hi = xlo, xhi
        for layer in qmodel.layers:
            step = _STEPS[type(layer)](layer, lo, hi)
            if step.out_range is not None:
                lo, hi = step.out_range
            self.steps.append(step)

    def forward(self, x, keep):
        """Run one batch; return every layer's output (``keep``) or only the last one's.

        Outputs are integers in some dtype, possibly views of work buffers (valid until the
        next call). Without ``keep``, a hidden weight layer followed by max pooling is pooled
        before it is requantized: requantization is monotone in each channel, so the result
        is the same, from a quarter (for 2x2) of the values.
        """
        outputs = []
        index = 0
        while index < len(self.steps):
            step = self.steps[index]
            following = self.steps[index + 1] if index + 1 < len(self.steps) else None
            if not keep and following is not None and step.precedes(following):
                x = step.finish(following.forward(step.accumulate(x)))
                index += 1
            else:
                x = step.forward(x)
            if keep:
                outputs.append(x)
            index += 1
        return outputs if keep else [x]


def _pool(x, layer):
    """A :class:`~sw.qmodel.Pool2D` layer on integer values held in any dtype."""
    if layer.op == "max":
        out = _max_pool(x, *layer.window)
    else:
        # The average's rounding is integer arithmetic: in int64, as pool2d does it.
        out = pool2d(x.astype(np.int64, copy=False), layer.window, layer.op)
    return out.reshape(len(x), *layer.out_shape)


def _prepare(qmodel, images):
    """``images`` with a channel axis, integer, and the plan for their range."""
    images = _integer_input(images)
    if images.ndim == 3:
        images = images[..., None]
    return images, _Plan(qmodel, *_value_range(images))


def run(qmodel, images, batch=_BATCH):
    """Run ``images`` through ``qmodel`` and return every layer's integer output.

    Parameters
    ----------
    qmodel : QModel
    images : ndarray of uint8, shape (N, H, W) or (N, H, W, C)
    batch : int
        Images per step (bounds the memory of the work buffers, not of the outputs).

    Returns
    -------
    list of ndarray
        One ``int64`` array per layer, in layer order; the last holds the logits.
    """
    if len(images) == 0:
        return [np.zeros((0,), np.int64) for _ in qmodel.layers]
    images, plan = _prepare(qmodel, images)
    outputs = None
    for start in range(0, len(images), batch):
        results = plan.forward(images[start:start + batch], keep=True)
        if outputs is None:  # filled in place: no list of parts to concatenate (twice the memory)
            outputs = [np.empty((len(images), *out.shape[1:]), np.int64) for out in results]
        for output, result in zip(outputs, results, strict=True):
            np.copyto(output[start:start + len(result)], result, casting="unsafe")
    return outputs


def classify(qmodel, images, batch=_BATCH):
    """Return ``(classes, logits)`` for ``images`` (see :func:`run`).

    Only the logits are kept: the memory of the other layers is that of one batch.
    """
    if len(images) == 0:
        return np.zeros((0,), np.int64), np.zeros((0, qmodel.classes), np.int64)
    images, plan = _prepare(qmodel, images)
    logits = None
    for start in range(0, len(images), batch):
        result = plan.forward(images[start:start + batch], keep=False)[-1]
        if logits is None:
            logits = np.empty((len(images), *result.shape[1:]), np.int64)
        np.copyto(logits[start:start + len(result)], result, casting="unsafe")
    return argmax(logits), logits
