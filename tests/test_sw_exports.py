"""The exported files read back by content: ``flat_weights.txt`` and the ``$readmemh`` ROMs.

A small Keras model gets weights that are exact integers times known powers of two, so the
integers quantization must produce are known from the Keras kernels alone. The expected
values are computed here from ``layer.get_weights()`` (Keras order: HWIO kernels, ``(in, out)``
matrices), and the ROM words are unpacked here from the layout the hardware reads
(``hw/mac_array.py``): the exporter's own flattening and packing are never called.
"""

import numpy as np
import pytest

from sw.keras_import import extract
from sw.quantize import QuantConfig, quantize, write_exports

#: Fractional bits of each output channel of the two hidden weight layers (one scale per
#: channel) and of the output layer (one scale for the tensor).
HIDDEN_FRACS = {"conv": [2, 3, 4, 5], "hidden": [1, 2, 3, 4, 5, 6]}
OUTPUT_FRAC = 3

#: ``{layer: (pe, simd)}`` tilings, valid for the hardware too (SIMD divides a conv's K*Cin).
FOLDS = {
    "unfolded": {},
    "partial": {"conv": (2, 3), "hidden": (3, 4), "logits": (2, 3)},
    "parallel": {"conv": (4, 6), "hidden": (6, 16), "logits": (4, 6)},
}


def _symmetric_max(bits):
    """The largest weight magnitude at ``bits`` (``docs/numerics.md``; 1 bit is +-1)."""
    return 1 if bits == 1 else (1 << (bits - 1)) - 1


def _integer_weights(rng, shape, bits):
    """Random weights of ``bits`` bits, every output column reaching the largest magnitude
    (so the best scale is the exact one) and, from 2 bits up, both extremes appearing."""
    top = _symmetric_max(bits)
    if bits == 1:
        q = rng.choice([-1, 1], size=shape)
    else:
        q = rng.integers(-top, top + 1, size=shape)
    flat = q.reshape(-1, shape[-1])
    flat[0, :] = top
    flat[1, :] = -top
    return flat.reshape(shape)


def _model(bits, seed=0):
    """A conv -> dense -> dense model on ``4x4x2`` images with known integer weights.

    Returns
    -------
    model : keras.Model
    fracs : dict
        ``{layer name: per-channel fractional bits}`` the weights were scaled by.
    """
    import keras

    rng = np.random.default_rng(seed)
    layers = keras.layers
    # Rescaling by 2**-8 is the hardware's own pixel scale: the first layer's weights are
    # then quantized as they are, with no 256/255 factor.
    model = keras.Sequential([
        keras.Input((4, 4, 2)), layers.Rescaling(1 / 256),
        layers.Conv2D(4, 3, activation="relu", name="conv"), layers.Flatten(),
        layers.Dense(6, activation="relu", name="hidden"), layers.Dense(4, name="logits")])
    fracs = {**HIDDEN_FRACS, "logits": [OUTPUT_FRAC] * 4}
    for name, frac in fracs.items():
        layer = model.get_layer(name)
        kernel_shape, bias_shape = (w.shape for w in layer.get_weights())
        scale = 2.0 ** -np.asarray(frac, dtype=np.float64)
        kernel = _integer_weights(rng, kernel_shape, bits) * scale
        # Biases on a fine grid: exact in float32, rounded by the quantizer's own rule below.
        bias = rng.integers(-40, 41, size=bias_shape) * scale * 2.0 ** -6
        layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return model, fracs


def _expected_integers(model, qmodel, fracs):
    """``{layer name: (kernel, bias)}`` integers computed from the Keras weights and scales.

    Kernels keep Keras' shape (HWIO or ``(in, out)``); a weight is ``w * 2**frac`` (1 bit: its
    sign) and a bias ``rint(b * 2**(frac + in_frac))``, ``docs/numerics.md``.
    """
    expected = {}
    for layer in qmodel.weight_layers:
        kernel, bias = (np.asarray(w, dtype=np.float64)
                        for w in model.get_layer(layer.name).get_weights())
        frac = np.asarray(fracs[layer.name])
        scaled = kernel * 2.0 ** frac
        if layer.weight_bits == 1:
            scaled = np.sign(scaled)
        assert np.array_equal(scaled, np.rint(scaled)), "the test's weights must be exact"
        expected[layer.name] = (scaled.astype(np.int64),
                                np.rint(bias * 2.0 ** (frac + layer.in_frac)).astype(np.int64))
    return expected


def _unpack_rom(path, bits, simd):
    """Read a ``$readmemh`` file into rows of ``simd`` signed weights.

    Lane ``s`` of a word is bits ``[s*bits, (s+1)*bits)``: two's complement, or for 1 bit a
    bit that selects ``+1`` (1) or ``-1`` (0), as ``hw/mac_array.py`` reads it.
    """
    lines = path.read_text().splitlines()
    digits = -(-simd * bits // 4)
    rows = []
    for line in lines:
        assert len(line) == digits, (path.name, line)
        word = int(line, 16)
        assert word >> (simd * bits) == 0, (path.name, line)
        fields = [(word >> (s * bits)) & ((1 << bits) - 1) for s in range(simd)]
        if bits == 1:
            rows.append([2 * f - 1 for f in fields])
        else:
            rows.append([f - (1 << bits) if f >> (bits - 1) else f for f in fields])
    return rows


def _matrix_from_roms(out, name, inputs, outputs, pe, simd, bits):
    """Rebuild a ``(inputs, outputs)`` matrix from ROM files ``name.pe{p}.hex``.

    ROM ``p`` is read at address ``nf * SF + sf`` for output fold ``nf`` and input fold ``sf``;
    its lane ``s`` multiplies input ``sf * simd + s`` into output channel ``nf * pe + p``.
    """
    nf_count, sf_count = outputs // pe, inputs // simd
    matrix = np.full((inputs, outputs), 99, dtype=np.int64)  # 99 fits no weight width
    for p in range(pe):
        rows = _unpack_rom(out / f"{name}.pe{p}.hex", bits, simd)
        assert len(rows) == nf_count * sf_count, f"{name}.pe{p}.hex"
        for address, lanes in enumerate(rows):
            nf, sf = divmod(address, sf_count)
            for s, value in enumerate(lanes):
                matrix[sf * simd + s, nf * pe + p] = value
    return matrix


@pytest.fixture(scope="module", params=[1, 3, 8], ids=lambda bits: f"{bits}bit")
def exported(request):
    """The model at each weight width, quantized, with its expected integers."""
    bits = request.param
    model, fracs = _model(bits, seed=bits)
    images = np.random.default_rng(bits).integers(0, 256, size=(64, 4, 4, 2))
    qmodel = quantize(extract(model), images, QuantConfig(weight_bits=bits, act_bits=4))
    return model, qmodel, fracs


def test_quantization_kept_the_known_scales(exported):
    _, qmodel, fracs = exported
    assert [layer.name for layer in qmodel.weight_layers] == ["conv", "hidden", "logits"]
    for layer in qmodel.weight_layers:
        assert layer.weight_frac.tolist() == fracs[layer.name], layer.name
    assert qmodel.weight_layers[0].in_frac == 8


def test_flat_weights_are_keras_order_layer_by_layer(exported, tmp_path):
    model, qmodel, fracs = exported
    write_exports(qmodel, tmp_path)
    expected = []
    for kernel, bias in _expected_integers(model, qmodel, fracs).values():
        expected += [int(v) for v in kernel.reshape(-1)] + [int(v) for v in bias]
    text = (tmp_path / "flat_weights.txt").read_text()
    assert text.endswith("\n") and "\n\n" not in text
    assert [int(line) for line in text.splitlines()] == expected
    # 3*3*2*4 + 4, 16*6 + 6, 6*4 + 4 values: nothing is missing or repeated.
    assert len(expected) == 76 + 102 + 28


@pytest.mark.parametrize("fold", sorted(FOLDS))
def test_rom_files_hold_the_golden_matrices(exported, fold, tmp_path):
    model, qmodel, fracs = exported
    pe_simd = FOLDS[fold]
    written = write_exports(qmodel, tmp_path, pe_simd)
    expected = _expected_integers(model, qmodel, fracs)
    names = set()
    for layer in qmodel.weight_layers:
        pe, simd = pe_simd.get(layer.name, (1, 1))
        names |= {f"{layer.name}.pe{p}.hex" for p in range(pe)}
        inputs, outputs = layer.matrix.shape
        rom = _matrix_from_roms(tmp_path, layer.name, inputs, outputs, pe, simd,
                                layer.weight_bits)
        keras_matrix = expected[layer.name][0].reshape(-1, outputs)
        assert rom.tolist() == keras_matrix.tolist(), layer.name
        assert rom.tolist() == layer.matrix.tolist(), layer.name
    assert {path.name for path in written if path.suffix == ".hex"} == names
    assert {path.name for path in tmp_path.glob("*.hex")} == names
