"""Read a Keras model into a chain of float layers the quantizer understands.

Everything that does not change the function at inference is folded or dropped here, so the
rest of the pipeline sees only convolutions, dense layers, pooling (max, average, global) and
flatten:
``BatchNormalization`` is folded into the preceding weights, ``Rescaling``/``Normalization``
at the input into the first weight layer, activations into flags, and ``Dropout`` and friends
vanish. Anything else is a :class:`~sw.errors.UserError` naming the layer.
"""

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .golden import pool2d, windows
from .qmodel import Conv2D, Dense, Flatten, Pool2D, conv_output_size

__all__ = [
    "SUPPORTED_LAYERS",
    "FloatConv2D",
    "FloatDense",
    "FloatFlatten",
    "FloatMaxPool2D",
    "FloatNet",
    "FloatPool2D",
    "extract",
    "load_keras_model",
]

SUPPORTED_LAYERS = (
    "Conv2D, Dense, Flatten, Reshape (to a vector), MaxPooling2D, AveragePooling2D, "
    "GlobalMaxPooling2D, GlobalAveragePooling2D, BatchNormalization, "
    "Activation/ReLU (relu, linear; softmax/sigmoid last), Rescaling, Normalization, "
    "Dropout, SpatialDropout1D/2D/3D, GaussianNoise, GaussianDropout, InputLayer"
)

_IGNORED = {"InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
            "GaussianNoise", "GaussianDropout", "AlphaDropout"}
_FINAL_ONLY = {"softmax", "sigmoid"}


class _FloatWeightLayer:
    """What :class:`FloatConv2D` and :class:`FloatDense` share besides their fields."""

    #: Whether the layer has weights (a Conv2D or Dense layer).
    weighted = True

    def _activate(self, x):
        return np.maximum(x, 0.0) if self.relu else x


@dataclass(eq=False)
class FloatConv2D(_FloatWeightLayer):
    name: str
    weight: np.ndarray  # (K, K, Cin, Cout)
    bias: np.ndarray
    stride: int = 1
    padding: str = "valid"
    relu: bool = False

    def output_shape(self, shape):
        """The output shape on an input of ``shape``, or a :class:`UserError`."""
        if len(shape) != 3 or shape[2] != self.weight.shape[2]:
            raise UserError(f"layer {self.name!r}: Conv2D input shape {shape} does "
                            f"not match its kernel {self.weight.shape}")
        k = self.weight.shape[0]
        h, w = (conv_output_size(s, k, self.stride, self.padding) for s in shape[:2])
        if h < 1 or w < 1:
            raise UserError(f"layer {self.name!r}: a {k}x{k} kernel does not fit "
                            f"the {shape[0]}x{shape[1]} input")
        return (h, w, self.weight.shape[3])

    def forward(self, x):
        """The float output (after the activation) of a batch ``x``."""
        k = self.weight.shape[0]
        return self._activate(windows(x, k, self.stride, self.padding) @ self.weight.reshape(
            -1, self.weight.shape[3]) + self.bias)

    def fold_input(self, scale, offset):
        """Fold ``x' = x * scale + offset`` (per input channel) into the weights."""
        if self.padding == "same" and np.any(offset != 0):
            raise UserError(f"layer {self.name!r}: an input offset cannot be folded into a "
                            f"'same'-padded convolution (the padding would be shifted too)")
        weight = self.weight * scale.reshape(1, 1, -1, 1)
        bias = self.bias + np.einsum("hwio,i->o", self.weight, np.broadcast_to(
            offset, self.weight.shape[2:3]))
        self.weight, self.bias = weight, bias

    def quantized(self, **fields):
        """The :class:`~sw.qmodel.Conv2D` of the integer ``fields`` (``sw/quantize.py``)."""
        return Conv2D(**fields, stride=self.stride, padding=self.padding)


@dataclass(eq=False)
class FloatDense(_FloatWeightLayer):
    name: str
    weight: np.ndarray  # (inputs, outputs)
    bias: np.ndarray
    relu: bool = False

    def output_shape(self, shape):
        """The output shape on an input of ``shape``, or a :class:`UserError`."""
        if len(shape) != 1 or shape[0] != self.weight.shape[0]:
            raise UserError(f"layer {self.name!r}: Dense with {self.weight.shape[0]} "
                            f"inputs cannot take a {shape} tensor (add a Flatten?)")
        return (self.weight.shape[1],)

    def forward(self, x):
        """The float output (after the activation) of a batch ``x``."""
        return self._activate(x @ self.weight + self.bias)

    def fold_input(self, scale, offset):
        """Fold ``x' = x * scale + offset`` (per input, the channels repeating) into the
        weights."""
        weight = self.weight * np.resize(scale, self.weight.shape[0])[:, None]
        bias = self.bias + np.resize(offset, self.weight.shape[0]) @ self.weight
        self.weight, self.bias = weight, bias

    def quantized(self, **fields):
        """The :class:`~sw.qmodel.Dense` of the integer ``fields`` (``sw/quantize.py``)."""
        return Dense(**fields)


@dataclass(eq=False)
class FloatPool2D:
    """Max or average pooling, ``size x size`` with stride ``size``, or global (``size=None``,
    the window is the whole image; ``keepdims`` keeps a ``1 x 1`` image instead of a vector)."""

    weighted = False
    name: str
    size: int | None = 2
    op: str = "max"
    keepdims: bool = False

    @property
    def commutes_with_relu(self):
        """Whether a ReLU gives the same before the layer as after it: max pooling's does
        (both monotone), averaging's not."""
        return self.op == "max"

    @property
    def commutes_with_negation(self):
        """Whether negating the input negates the output: averaging's does, max pooling's
        not (``max(-x) = -min(x)``)."""
        return self.op != "max"

    def window(self, shape):
        """``(rows, cols)`` of the window on an input of ``shape``."""
        return tuple(shape[:2]) if self.size is None else (self.size, self.size)

    def output_shape(self, shape):
        """The output shape on an input of ``shape``, or a :class:`UserError`."""
        rows, cols = self.window(shape) if len(shape) == 3 else (0, 0)
        if not (1 <= rows <= shape[0] and 1 <= cols <= shape[1]):
            raise UserError(f"layer {self.name!r}: cannot pool a {shape} tensor")
        if self.size is None:
            return (1, 1, shape[2]) if self.keepdims else (shape[2],)
        return (shape[0] // rows, shape[1] // cols, shape[2])

    def forward(self, x):
        """The float output of a batch ``x``."""
        x = pool2d(x, self.window(x.shape[1:]), self.op)
        if self.size is None:
            x = x.reshape(len(x), *((1, 1) if self.keepdims else ()), -1)
        return x

    def quantized(self, *, name, in_shape, out_shape, bits, signed):
        """The :class:`~sw.qmodel.Pool2D` on ``bits``-bit inputs, ``signed`` or not."""
        return Pool2D(name=name, in_shape=in_shape, out_shape=out_shape, op=self.op,
                      size=self.size, bits=bits, signed=signed)


@dataclass(eq=False)
class FloatMaxPool2D(FloatPool2D):
    """A ``MaxPooling2D``: the one pooling quantization-aware training (``sw/qat.py``) knows."""


@dataclass(eq=False)
class FloatFlatten:
    """A ``Flatten`` (or a ``Reshape`` to a vector): the same values, one axis."""

    weighted = False
    #: A ReLU, or negating the input, gives the same before the layer as after it.
    commutes_with_relu = commutes_with_negation = True
    name: str

    def output_shape(self, shape):
        """The output shape on an input of ``shape``: one axis."""
        return (int(np.prod(shape)),)

    def forward(self, x):
        """The batch ``x``, one axis per image."""
        return x.reshape(len(x), -1)

    def quantized(self, *, name, in_shape, out_shape, bits, signed):
        """The :class:`~sw.qmodel.Flatten` (of any input)."""
        return Flatten(name=name, in_shape=in_shape, out_shape=out_shape)


@dataclass(eq=False)
class FloatNet:
    """A chain of float layers taking raw pixels ``0..255`` (preprocessing already folded in).

    Attributes
    ----------
    pixel_scale : float
        What the *Keras* model wants the pixels multiplied by before it sees them (``1/255``
        unless the model rescales its own input), for running the Keras model itself.
    notes : list of str
        What was dropped or folded, for the user.
    """

    name: str
    input_shape: tuple
    layers: list
    pixel_scale: float
    notes: list = field(default_factory=list)

    @property
    def weight_layers(self):
        return [layer for layer in self.layers if layer.weighted]

    def shapes(self):
        """Return the output shape of every layer, checking that the chain is consistent."""
        shape, shapes = tuple(self.input_shape), []
        for layer in self.layers:
            shape = layer.output_shape(shape)
            shapes.append(shape)
        return shapes

    def forward(self, pixels):
        """Float reference on raw pixels; returns every layer's output (after its activation)."""
        x = np.asarray(pixels, dtype=np.float64).reshape(len(pixels), *self.input_shape)
        outputs = []
        for layer in self.layers:
            x = layer.forward(x)
            outputs.append(x)
        return outputs


def _check_container(path):
    """Say plainly when a model file is not the container its suffix promises.

    Keras' own message for a damaged ``.keras`` file is "File not found", for a file that is
    there.
    """
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise UserError(f"model file {str(path)!r} is not a Keras archive (a .keras file is a "
                        f"zip archive; this one is not: damaged, or another format renamed)")
    if path.suffix in (".h5", ".hdf5"):
        import h5py  # deferred with Keras: only .h5 files need it

        if not h5py.is_hdf5(path):
            raise UserError(f"model file {str(path)!r} is not an HDF5 file (damaged, or "
                            f"another format renamed)")


def load_keras_model(path):
    """Load a ``.keras`` or legacy ``.h5`` file for inference, or raise a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {str(path)!r} not found")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise UserError(f"model file {str(path)!r}: expected a .keras or .h5 file")
    _check_container(path)
    import keras  # deferred: TensorFlow takes seconds to import

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file; all mean "corrupt"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load model {str(path)!r}: {first[:200]}") from None


def _activation_name(layer, config):
    activation = config.get("activation", "linear")
    if isinstance(activation, dict):
        activation = activation.get("config", {}).get("name", activation.get("class_name"))
    return str(activation).lower()


def _chain(model):
    """The model's layers in order, checking that a functional model is a single chain."""
    layers = list(model.layers)
    if type(model).__name__ == "Sequential":
        return layers
    previous = None
    for layer in layers:
        if type(layer).__name__ == "InputLayer":
            previous = layer
            continue
        try:
            inputs = layer.input
        except (AttributeError, ValueError):
            raise UserError(f"layer {layer.name!r} is used more than once; only single-chain "
                            f"models are supported") from None
        if isinstance(inputs, list | tuple) or (
                previous is not None and inputs is not previous.output):
            raise UserError(f"layer {layer.name!r} ({type(layer).__name__}) branches or merges; "
                            f"only single-chain models are supported")
        previous = layer
    return layers


def _unsupported(layer, reshape=None):
    """The error for an unsupported ``layer``, saying so when a ``Reshape`` feeds it."""
    fed = "" if reshape is None else (f" (Reshape {reshape.name!r} to "
                                      f"{tuple(reshape.get_config()['target_shape'])} feeds it)")
    return UserError(f"layer {layer.name!r} ({type(layer).__name__}) is not supported{fed}; "
                     f"supported layers: {SUPPORTED_LAYERS}")


def _check_channels_last(layer, kind, config):
    if config.get("data_format", "channels_last") != "channels_last":
        raise UserError(f"layer {layer.name!r} ({kind}): only channels_last is supported")


def _pool(layer, kind, config):
    """A ``MaxPooling2D`` or ``AveragePooling2D``: square, stride = pool size, valid."""
    _check_channels_last(layer, kind, config)
    pool = tuple(config["pool_size"])
    strides = tuple(config["strides"] or pool)
    if pool[0] != pool[1] or strides != pool or config["padding"] != "valid":
        raise UserError(f"layer {layer.name!r} ({kind}): only square pools with stride = pool "
                        f"size and valid padding are supported, not {pool[0]}x{pool[1]} stride "
                        f"{strides[0]}x{strides[1]} padding {config['padding']!r}")
    if kind == "MaxPooling2D":
        return FloatMaxPool2D(layer.name, pool[0])
    return FloatPool2D(layer.name, pool[0], "avg")


class _Importer:
    """Maps a Keras chain onto float layers, one method per Keras layer kind (:data:`_KINDS`).

    It keeps what the walk has built so far: the layers, notes for the user, the input
    preprocessing to fold into the first weight layer, and a pending ``Reshape`` (refused at
    the next layer: when that one is not supported either, such as an LSTM after a Reshape to
    ``(timesteps, features)``, it is the one named).
    """

    def __init__(self, model, chain, channels):
        self.model, self.layers, self.notes = model, [], []
        self.scale, self.offset = np.full(channels, 1.0), np.zeros(channels)
        self.preprocessing = False
        self.reshape = None
        self.last_weighted = max((i for i, layer in enumerate(chain)
                                  if type(layer).__name__ in ("Conv2D", "Dense")), default=None)
        if self.last_weighted is None:
            raise UserError(f"model {model.name!r} has no Conv2D or Dense layer")

    def add(self, index, layer):
        kind = type(layer).__name__
        if kind in _IGNORED:
            return
        if self.reshape is not None:
            raise _unsupported(self.reshape) if kind in _KINDS else \
                _unsupported(layer, self.reshape)
        if kind not in _KINDS:
            raise _unsupported(layer)
        getattr(self, _KINDS[kind])(layer, kind, layer.get_config(), index)

    def finish(self):
        if self.reshape is not None:
            raise _unsupported(self.reshape)

    def _last_weight_layer(self, layer, what):
        for previous in reversed(self.layers):
            if previous.weighted:
                return previous
            if not previous.commutes_with_relu:
                break
        raise UserError(f"layer {layer.name!r} ({type(layer).__name__}): {what} must follow "
                        f"a Conv2D or Dense layer")

    def _apply_activation(self, layer, activation, index):
        if activation == "linear":
            return
        if activation in _FINAL_ONLY and index >= self.last_weighted:
            self.notes.append(f"dropped {activation} of {layer.name!r}: argmax is unchanged")
            return
        if activation == "relu" and index <= self.last_weighted:
            target = self._last_weight_layer(layer, "relu")
            if target is self.layers[-1] or index < self.last_weighted:
                target.relu = True
                return
        raise UserError(f"layer {layer.name!r} ({type(layer).__name__}): activation "
                        f"{activation!r} is not supported here (supported: relu on hidden "
                        f"layers, linear; softmax/sigmoid on the output)")

    def _preprocess(self, layer, kind, config, index):
        if self.layers:
            raise UserError(f"layer {layer.name!r} ({kind}) is only supported at the input")
        if kind == "Rescaling":
            s, o = np.asarray(config["scale"], float), np.asarray(config["offset"], float)
        else:
            mean = np.asarray(layer.mean, float).reshape(-1)
            std = np.sqrt(np.maximum(np.asarray(layer.variance, float).reshape(-1), 1e-7))
            s, o = 1 / std, -mean / std
        self.scale, self.offset = self.scale * s, self.offset * s + o
        self.preprocessing = True

    def _conv2d(self, layer, kind, config, index):
        _check_channels_last(layer, kind, config)
        if tuple(config["dilation_rate"]) != (1, 1) or config.get("groups", 1) != 1:
            raise UserError(f"layer {layer.name!r} (Conv2D): dilation and groups are not "
                            f"supported")
        kh, kw = config["kernel_size"]
        sh, sw = config["strides"]
        if kh != kw or sh != sw:
            raise UserError(f"layer {layer.name!r} (Conv2D): only square kernels and equal "
                            f"strides are supported, not {kh}x{kw} stride {sh}x{sw}")
        weight, bias = _weights(layer, config)
        self.layers.append(FloatConv2D(layer.name, weight, bias, stride=sh,
                                       padding=config["padding"]))
        self._apply_activation(layer, _activation_name(layer, config), index)

    def _dense(self, layer, kind, config, index):
        self.layers.append(FloatDense(layer.name, *_weights(layer, config)))
        self._apply_activation(layer, _activation_name(layer, config), index)

    def _batch_norm(self, layer, kind, config, index):
        target = self.layers[-1] if self.layers else None
        if target is None or not target.weighted or target.relu:
            raise UserError(f"layer {layer.name!r} (BatchNormalization) must directly follow "
                            f"a Conv2D or Dense layer without activation to be folded")
        gamma = layer.gamma.numpy() if layer.scale else 1.0
        beta = layer.beta.numpy() if layer.center else 0.0
        mean, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        factor = gamma / np.sqrt(var + layer.epsilon)
        target.weight = target.weight * factor
        target.bias = (target.bias - mean) * factor + beta

    def _activation(self, layer, kind, config, index):
        if kind == "ReLU" and (config.get("max_value") is not None
                               or config.get("negative_slope", 0) != 0
                               or config.get("threshold", 0) != 0):
            raise UserError(f"layer {layer.name!r} (ReLU): only a plain ReLU is supported "
                            f"(no max_value, negative_slope or threshold)")
        activation = {"ReLU": "relu", "Softmax": "softmax"}.get(kind) or \
            _activation_name(layer, config)
        self._apply_activation(layer, activation, index)

    def _pool(self, layer, kind, config, index):
        self.layers.append(_pool(layer, kind, config))

    def _global_pool(self, layer, kind, config, index):
        _check_channels_last(layer, kind, config)
        self.layers.append(FloatPool2D(layer.name, None, "max" if "Max" in kind else "avg",
                                       bool(config.get("keepdims", False))))

    def _flatten(self, layer, kind, config, index):
        if kind == "Reshape" and len(config["target_shape"]) != 1:
            self.reshape = layer
            return
        self.layers.append(FloatFlatten(layer.name))


#: The :class:`_Importer` method of each Keras layer kind it maps (some only in some
#: configurations): the one place a new kind is added.
_KINDS = {
    "Rescaling": "_preprocess", "Normalization": "_preprocess",
    "Conv2D": "_conv2d", "Dense": "_dense", "BatchNormalization": "_batch_norm",
    "Activation": "_activation", "ReLU": "_activation", "Softmax": "_activation",
    "MaxPooling2D": "_pool", "AveragePooling2D": "_pool",
    "GlobalMaxPooling2D": "_global_pool", "GlobalAveragePooling2D": "_global_pool",
    "Flatten": "_flatten", "Reshape": "_flatten",
}


def _check_foldable(importer):
    """The input preprocessing reaches the first weight layer through what precedes it:
    averaging and flattening commute with any per-channel affine map, max pooling only with a
    positive scale (``max(s * x) = s * min(x)`` for ``s < 0``)."""
    if not importer.preprocessing or not np.any(importer.scale < 0):
        return
    for layer in importer.layers:
        if layer.weighted:
            return
        if not layer.commutes_with_negation:
            raise UserError(f"layer {layer.name!r} (max pooling): the input preprocessing "
                            f"scales by a negative factor, which cannot be folded through max "
                            f"pooling into the first weight layer; put a Conv2D or Dense first "
                            f"or make the scale positive")


def _weights(layer, config):
    """A Conv2D's or Dense layer's kernel and bias (zeros without one), as float64."""
    weights = layer.get_weights()
    bias = weights[1] if config["use_bias"] else np.zeros(weights[0].shape[-1])
    return weights[0].astype(np.float64), bias.astype(np.float64)


def extract(model, name=None, pixel_scale=1 / 255):
    """Turn a Keras model into a :class:`FloatNet` on raw pixels.

    Parameters
    ----------
    model : keras.Model
        A Sequential or single-chain functional model.
    name : str, optional
        Defaults to the model's name.
    pixel_scale : float
        What pixels are multiplied by before the model sees them, when the model has no
        ``Rescaling``/``Normalization`` of its own (the usual ``x / 255.0``).

    Raises
    ------
    UserError
        Naming the first layer that cannot be mapped.
    """
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    if any(d is None for d in model.input_shape[1:]):
        raise UserError(f"model {model.name!r}: input shape {model.input_shape} must be fixed")
    chain = _chain(model)
    importer = _Importer(model, chain, input_shape[-1] if len(input_shape) == 3 else 1)
    for index, layer in enumerate(chain):
        importer.add(index, layer)
    importer.finish()
    layers, notes = importer.layers, importer.notes
    _check_foldable(importer)
    net = FloatNet(name or model.name, input_shape, layers,
                   1.0 if importer.preprocessing else pixel_scale, notes)
    if not layers[-1].weighted:
        raise UserError(f"model {net.name!r}: the last layer must be Conv2D or Dense (logits)")
    if layers[-1].relu:
        raise UserError(f"model {net.name!r}: the output layer must be linear (logits), "
                        f"not relu")
    net.shapes()
    net.weight_layers[0].fold_input(importer.scale * net.pixel_scale, importer.offset)
    if importer.preprocessing:
        notes.append("folded the model's input preprocessing into the first weight layer")
    return net
