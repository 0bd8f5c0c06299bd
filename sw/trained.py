"""Where trained models live and the fractions file beside each (no TensorFlow here).

A model trained through the integer numerics (:mod:`sw.qat`, ``docs/quantization.md``) is a
plain ``.keras`` file plus a sidecar ``NAME.quant.json`` with its fractions and the method that
trained it. :func:`sw.quantize.quantize_model` finds the pair; :mod:`sw.qat` writes it.
"""

import json
from pathlib import Path

from . import models
from .errors import UserError

__all__ = ["SIDECAR_FORMAT", "SIDECAR_VERSION", "TRAINING_SCHEMES", "fractions_of",
           "load_fractions", "qat_model_path", "sidecar_path", "trained_model_path"]

SIDECAR_FORMAT = "nnfpga-qat-fractions"
SIDECAR_VERSION = 1
#: How the fake-quant network holds its weights, one per training method.
TRAINING_SCHEMES = ("dual-copy", "randomized", "iterative")

def sidecar_path(keras_path):
    """The fractions file that goes with a QAT ``.keras`` model: ``NAME.quant.json``."""
    keras_path = Path(keras_path)
    return keras_path.with_name(keras_path.stem + ".quant.json")


def qat_model_path(name, weight_bits, act_bits, directory=None):
    """Where the shipped QAT model of seed ``name`` at ``W``/``A`` bits lives (may not exist)."""
    return trained_model_path(name, weight_bits, act_bits, "dual-copy", directory)


def trained_model_path(name, weight_bits, act_bits, method, directory=None, layer_bits=()):
    """Where seed ``name`` trained with ``method`` at ``W``/``A`` bits lives (may not exist).

    ``models/{name}-w{W}a{A}.keras`` for ``dual-copy`` (QAT), else
    ``models/{name}-w{W}a{A}-{method}.keras``; ``directory`` replaces ``models/``. Per-layer
    widths (``layer_bits``, mixed precision) add ``-{layer}={W}`` (or ``={W}a{A}`` where the
    layer's activations are narrower or wider), sorted by layer: ``lenet5-w1a1-first=8-last=8``.
    """
    suffix = "" if method == "dual-copy" else f"-{method}"
    widths = "".join(f"-{layer}={weight}" + ("" if act == weight else f"a{act}")
                     for layer, weight, act in sorted(layer_bits))
    # models.MODELS_DIR is read at each call: tests point it elsewhere.
    return Path(directory or models.MODELS_DIR) / \
        f"{name}-w{weight_bits}a{act_bits}{widths}{suffix}.keras"


def fractions_of(qmodel):
    """The ``{layer name: {"weight_frac": [...], "out_frac": int or None}}`` of a QModel."""
    return {layer.name: {"weight_frac": [int(v) for v in layer.weight_frac],
                         "out_frac": None if layer.is_output else int(layer.out_frac)}
            for layer in qmodel.weight_layers}


def load_fractions(path):
    """Read a sidecar written by :func:`save_qat`.

    Returns
    -------
    dict
        With ``weight_bits``, ``act_bits``, ``layers`` (the fractions, as for
        :func:`sw.quantize.quantize`), ``method`` (one of :data:`TRAINING_SCHEMES`;
        ``dual-copy`` in files written before there were others) and ``training`` (how the
        model was trained).

    Raises
    ------
    UserError
        If the file is missing, not a sidecar, or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"QAT fractions file {str(path)!r} not found")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != SIDECAR_FORMAT or data.get("version") != SIDECAR_VERSION:
            raise UserError(f"{path}: not a version {SIDECAR_VERSION} {SIDECAR_FORMAT} file")
        layers = {}
        for name, entry in data["layers"].items():
            fw = [int(v) for v in entry["weight_frac"]]
            out = entry["out_frac"]
            if not fw or any(v != w for v, w in zip(fw, entry["weight_frac"], strict=True)) or (
                    out is not None and int(out) != out):
                raise ValueError(f"layer {name!r}: fractions must be integers")
            layers[name] = {"weight_frac": fw, "out_frac": None if out is None else int(out)}
        method = data.get("method", "dual-copy")
        if method not in TRAINING_SCHEMES:
            raise ValueError(f"unknown training method {method!r}")
        layer_bits = tuple((str(name), int(weight), int(act))
                           for name, weight, act in data.get("layer_bits", []))
        return {"weight_bits": int(data["weight_bits"]), "act_bits": int(data["act_bits"]),
                "layer_bits": layer_bits, "layers": layers, "method": method,
                "training": dict(data.get("training", {}))}
    except UserError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{path}: corrupt QAT fractions file ({type(error).__name__}: "
                        f"{str(error)[:120]})") from None
