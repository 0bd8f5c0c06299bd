"""The folder: multiplier kinds within the device's DSPs, pixels per clock, the fold file."""

import functools
import json

import pytest

from hw.folding import (
    DEVICES,
    assign_multipliers,
    auto_fold,
    estimate,
    kinds,
    lanes_by_kind,
    layer_estimates,
    load_fold,
)
from hw.network import Fold, LayerFold, check_fold, schedule
from sw.errors import UserError


@functools.cache
def _qmodel(model, bits):
    from sw.data import load_train
    from sw.quantize import QuantConfig, quantize_model

    return quantize_model(model, QuantConfig(weight_bits=bits), load_train(None)[0][:200])[0]


def _lanes(fold):
    return sum(entry.pe * entry.simd for entry in fold.values())


@pytest.mark.parametrize(("model", "bits", "device"), [
    ("lenet5", 4, "LFE5U-85F"), ("lenet5", 8, "LFE5U-85F"), ("tiny_cnn", 4, "iCE40UP5K"),
    ("mlp64", 4, "LFE5U-25F")])
def test_auto_fold_fits_and_keeps_the_dsps_within_the_device(model, bits, device):
    qmodel, device = _qmodel(model, bits), DEVICES[device]
    fold = auto_fold(qmodel, device)
    need = estimate(qmodel, fold, device)
    assert need.fits(device) and need.dsps <= device.dsps
    assert sum(part.dsps for part in layer_estimates(qmodel, fold, device).values()) == need.dsps
    counts = lanes_by_kind(qmodel, fold, device)
    assert sum(counts.values()) == _lanes(fold)
    # Hard multipliers are used where the device has them: a DSP-less kind only when full.
    if counts["lut"]:
        assert need.dsps > device.dsps - max(entry.pe for entry in fold.values())


def test_lenet5_on_the_85f_takes_four_pixels_a_clock_and_runs_576_cycles():
    """Two pixels a clock would bring the image in within 392 cycles, but the first window
    generator would wait a cycle at each window row's start (600 cycles): the folder takes
    four, and the first conv's 576 windows set the interval."""
    qmodel = _qmodel("lenet5", 4)
    fold = auto_fold(qmodel, DEVICES["LFE5U-85F"])
    stages = schedule(qmodel, fold)
    assert fold.pixels == 4 and stages[0].cycles == 196
    assert max(stage.cycles for stage in stages) == 576
    two = schedule(qmodel, Fold(fold, pixels=2))
    assert max(stage.cycles for stage in two) == 600
    assert {entry.multiplier for entry in fold.values()} >= {"packed", "lut"}


def test_assign_multipliers_spends_the_dsps_where_they_save_most():
    qmodel, device = _qmodel("lenet5", 4), DEVICES["LFE5U-85F"]
    shapes = {"conv2d": (6, 25), "conv2d_1": (8, 25), "dense": (5, 8), "dense_1": (3, 5),
              "dense_2": (1, 2)}
    fold = assign_multipliers(qmodel, shapes, device)
    assert {name: entry[:2] for name, entry in fold.items()} == shapes
    need = estimate(qmodel, fold, device)
    assert need.dsps <= device.dsps
    # Cheaper in LUTs than every lane LUT-built, and than every layer on plain DSPs (which
    # would need more DSPs than the device has).
    all_lut = {name: (*shape, "lut") for name, shape in shapes.items()}
    assert need.luts < estimate(qmodel, all_lut, device).luts
    all_dsp = estimate(qmodel, {name: (*shape, "dsp") for name, shape in shapes.items()},
                       device)
    assert all_dsp.dsps > device.dsps


def test_no_hard_kinds_without_dsps_or_for_1_bit_weights():
    lenet = _qmodel("lenet5", 4)
    assert kinds(lenet.weight_layers[0], 2, DEVICES["iCE40HX8K"]) == ("lut",)
    assert kinds(_qmodel("lenet5", 1).weight_layers[1], 2, DEVICES["LFE5U-85F"]) == ("lut",)
    assert kinds(lenet.weight_layers[0], 2, DEVICES["LFE5U-85F"]) == ("lut", "dsp", "packed")
    assert "packed" not in kinds(lenet.weight_layers[0], 1, DEVICES["LFE5U-85F"])


def test_constant_lanes_where_every_weight_has_a_lane():
    """Constant weights are offered, first, only where PE x SIMD is the whole matrix, cost no
    DSPs, ROMs or BRAMs, and are counted as their own kind."""
    qmodel, device = _qmodel("tiny_cnn", 4), DEVICES["iCE40UP5K"]
    conv = qmodel.weight_layers[0]
    assert (conv.channels, conv.fan_in) == (4, 25)
    assert kinds(conv, 4, device, 25)[0] == "constant"
    assert "constant" not in kinds(conv, 4, device, 5) + kinds(conv, 2, device, 25)
    assert "constant" not in kinds(conv, 4, device)  # SIMD not given: not offered
    fold = {"conv2d": (4, 25, "constant"), "dense": (2, 4, "packed")}
    parts = layer_estimates(qmodel, fold, device)
    lut = layer_estimates(qmodel, {**fold, "conv2d": (4, 25, "lut")}, device)
    assert parts["conv2d"].dsps == 0 and parts["conv2d"].luts < lut["conv2d"].luts
    assert parts["conv2d"].paired_ffs > 0
    counts = lanes_by_kind(qmodel, fold, device)
    assert counts == {"dsp": 0, "packed": 8, "lut": 0, "constant": 100, "adder": 0}


def test_tiny_cnn_on_the_up5k_runs_within_1200_cycles():
    """The goal of the throughput issue: tiny_cnn W4A4 fits the UP5K at <= 1,200 cycles an
    image. The first layer's 100 weights are constants (no DSP), which leaves the DSPs to the
    dense layer; one pixel a clock (784 cycles) fits where two would not."""
    qmodel, device = _qmodel("tiny_cnn", 4), DEVICES["iCE40UP5K"]
    fold = auto_fold(qmodel, device)
    interval = max(stage.cycles for stage in schedule(qmodel, fold))
    assert interval <= 1200 and estimate(qmodel, fold, device).fits(device)
    assert fold["conv2d"][:3] == (4, 25, "constant")
    assert fold.pixels == 1 and interval == 784
    two = Fold(fold, pixels=2)
    assert not estimate(qmodel, two, device).fits(device)


@pytest.mark.parametrize("device", ["iCE40UP5K", "LFE5U-85F"])
def test_a_window_of_several_pixels_a_word_costs_more(device):
    qmodel, device = _qmodel("tiny_cnn", 4), DEVICES[device]
    fold = {"conv2d": (4, 25, "lut"), "dense": (1, 1, "lut")}
    luts = [layer_estimates(qmodel, Fold(fold, pixels), device)["conv2d"].luts
            for pixels in (1, 2, 4)]
    assert luts[0] < luts[1] < luts[2]


def test_fold_file_round_trip_and_short_form(tmp_path):
    qmodel = _qmodel("lenet5", 4)
    fold = auto_fold(qmodel, DEVICES["LFE5U-85F"])
    path = tmp_path / "fold.json"
    path.write_text(json.dumps(fold.to_json()))
    loaded = load_fold(path, qmodel)
    assert loaded == fold and loaded.pixels == fold.pixels
    path.write_text(json.dumps({"conv2d": [3, 5]}))
    short = load_fold(path, qmodel)
    assert short.pixels == 1 and short["conv2d"] == LayerFold(3, 5, "dsp", None)
    assert short["dense"] == LayerFold(1, 1, "dsp", None)


@pytest.mark.parametrize(("fold", "message"), [
    ({"conv2d": (3, 5, "fpga")}, "layer 'conv2d': multiplier 'fpga' is not one of dsp, lut, "
                                 "packed, constant"),
    ({"conv2d": (6, 5, "constant")}, "layer 'conv2d': multiplier 'constant' needs a lane for "
                                     "every weight: PE 6 and SIMD 25"),
    ({"conv2d": (3, 5, "dsp", 6)}, "layer 'conv2d': hard lanes 6 must be in 0..5"),
    ({"conv2d": (3, "five")}, "layer 'conv2d': expected [pe, simd, multiplier, hard_lanes]"),
    (Fold({}, pixels=3), "fold: 3 pixels per transfer do not suit the first layer 'conv2d'"),
    (Fold({}, pixels=0), "fold: pixels must be a positive integer"),
    (Fold({}, loaded=["dense_9"]), "fold loads the weights of unknown layers ['dense_9']"),
    (Fold({"conv2d": (6, 25, "constant")}, loaded=["conv2d"]),
     "layer 'conv2d': multiplier 'constant' keeps its weights in logic, they cannot be loaded"),
    (Fold({}, loaded=["dense"]), "layer 'dense': loaded weights take at most 16384 words of PE x "
                                 "SIMD weights, not 30720"),
])
def test_bad_folds_are_named(fold, message):
    with pytest.raises(UserError) as info:
        check_fold(_qmodel("lenet5", 4), fold)
    assert message in str(info.value)


def test_lenet5_w2_on_the_up5k_loads_weights_into_spram():
    """LeNet-5 at 2 bits does not fit the UP5K's block RAM even fully folded (the throughput
    issue's row): the folder loads the weights of the layers with the biggest ROMs (the first
    dense layer's first) into SPRAM and the rest fits, at most 12,000 cycles an image."""
    qmodel, device = _qmodel("lenet5", 2), DEVICES["iCE40UP5K"]
    rom_only = {layer.name: (1, 1, "lut") for layer in qmodel.weight_layers}
    assert estimate(qmodel, rom_only, device).brams > device.brams
    fold = auto_fold(qmodel, device)
    need = estimate(qmodel, fold, device)
    assert "dense" in fold.loaded and need.fits(device)
    assert 1 <= need.sprams <= device.sprams
    assert estimate(qmodel, Fold(fold, loaded=()), device).brams > device.brams
    assert max(stage.cycles for stage in schedule(qmodel, fold)) <= 12000


@pytest.mark.parametrize(("model", "bits", "device"), [
    ("tiny_cnn", 4, "iCE40UP5K"), ("lenet5", 4, "LFE5U-85F"), ("tiny_cnn", 2, "iCE40UP5K")])
def test_no_weights_loaded_where_block_ram_holds_them(model, bits, device):
    """Loaded weights must be sent after every configuration: only where nothing else fits."""
    assert auto_fold(_qmodel(model, bits), DEVICES[device]).loaded == frozenset()


def test_loaded_layers_round_trip_through_the_fold_file(tmp_path):
    qmodel = _qmodel("lenet5", 2)
    fold = auto_fold(qmodel, DEVICES["iCE40UP5K"])
    path = tmp_path / "fold.json"
    path.write_text(json.dumps(fold.to_json()))
    assert "dense" in json.loads(path.read_text())["loaded"]
    again = load_fold(path, qmodel)
    assert again == fold and again.loaded == fold.loaded and again.pixels == fold.pixels


def test_packed_fold_that_does_not_fit_the_multiplier_is_refused():
    # 8-bit weights with 8-bit pixels: the packed pair is wider than an 18 x 18 multiplier.
    with pytest.raises(UserError, match="layer 'conv2d': "):
        check_fold(_qmodel("lenet5", 8), {"conv2d": (2, 5, "packed")})


@functools.cache
def _mixed(model, bits, layer_bits):
    from sw.data import load_train
    from sw.quantize import QuantConfig, quantize_model

    config = QuantConfig(weight_bits=bits, layer_bits=layer_bits)
    return quantize_model(model, config, load_train(None)[0][:200])[0]


def test_wide_layers_multiply_on_every_lane_hard():
    """9..16-bit operands: LUT-built and packed products are proven up to 8 bits only, so a
    wide layer's every lane is a DSP (``"dsp"``, all lanes hard) and the narrow layers keep
    every kind; the fold files that ask for less are refused, naming the layer."""
    qmodel = _mixed("lenet5", 4, (("first", 16, 12),))
    first, second = qmodel.weight_layers[:2]
    device = DEVICES["LFE5U-85F"]
    assert (first.weight_bits, second.in_bits) == (16, 12)
    assert kinds(first, 2, device) == kinds(second, 2, device) == ("dsp",)
    assert "lut" in kinds(qmodel.weight_layers[2], 2, device)
    fold = auto_fold(qmodel, device)
    assert estimate(qmodel, fold, device).fits(device)
    for layer in (first, second):
        assert fold[layer.name].multiplier == "dsp" and fold[layer.name].hard_lanes is None
    assert lanes_by_kind(qmodel, fold, device)["dsp"] >= _lanes(
        {name: fold[name] for name in (first.name, second.name)})
    for entry, message in [((2, 5, "lut"), "hard multipliers only"),
                           ((2, 5, "packed"), "hard multipliers only"),
                           ((2, 5, "dsp", 3), "with every lane hard")]:
        with pytest.raises(UserError, match=f"layer 'conv2d': 16-bit weights times 8-bit "
                                            f"unsigned inputs .*{message}"):
            check_fold(qmodel, {"conv2d": entry})


@pytest.mark.parametrize(("bits", "device", "message"), [
    (12, "iCE40HX8K", "layer 'conv2d': 12-bit weights times 8-bit unsigned inputs multiply on "
                      "hard multipliers only (LUT-built products are proven up to 8 bits), and "
                      "the iCE40HX8K has none: use at most 8 bits or a device with DSPs"),
    (16, "iCE40UP5K", "layer 'dense': 16-bit weights times 16-bit unsigned inputs multiply on "
                      "hard multipliers only (LUT-built products are proven up to 8 bits), and "
                      "the iCE40UP5K's are 16x16 signed: at most 15-bit unsigned (ReLU) or "
                      "16-bit signed inputs and 16-bit weights"),
])
def test_wide_layers_the_device_cannot_multiply_are_named(bits, device, message):
    with pytest.raises(UserError) as info:
        auto_fold(_qmodel("tiny_cnn", bits), DEVICES[device])
    assert str(info.value) == message
