"""Whole networks in the Amaranth simulator: every logit equal to the golden model's."""

import random

import numpy as np
import pytest

from hw.network import Accelerator, schedule, simd_unit
from sim.streams import StreamSink, StreamSource
from sw import golden
from sw.keras_import import extract
from sw.quantize import QuantConfig, quantize
from tests.streams import check_protocol, run_simulation, stream_bench, unpack

pytestmark = pytest.mark.hw


def small_model(keras, seed, *, conv=True, pool=True, image=10):
    """A random little CNN (or MLP) on ``image x image`` pixels, for fast simulations."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((image, image, 1))]
    if conv:
        layers.append(keras.layers.Conv2D(3, 3, activation="relu"))
        if pool:
            layers.append(keras.layers.MaxPooling2D(2))
    layers += [keras.layers.Flatten(), keras.layers.Dense(6, activation="relu"),
               keras.layers.Dense(4)]
    return keras.Sequential(layers)


def simulate(qmodel, fold, images, seed=0, idle=0.3, stall=0.3):
    from amaranth.sim import Simulator

    dut = Accelerator(qmodel, fold)
    rng = random.Random(seed)
    sim = Simulator(dut)
    source = StreamSource(rng, idle=idle)
    classes, bits, label_bits = dut.classes, dut.logit_bits, dut.label_bits

    def decode(word):
        return word & ((1 << label_bits) - 1), unpack(word >> label_bits, classes, bits, True)
    sink = StreamSink(rng, stall=stall, decode=decode)
    check_protocol(sim, dut.i, "i")
    check_protocol(sim, dut.o, "o")
    sim.add_testbench(stream_bench(source.send, dut.i, images.reshape(-1).tolist()))
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(images)))
    run_simulation(sim, deadline_cycles=(len(images) + 4) * dut.cycles_per_image * 8 + 5000)
    return sink, dut


@pytest.mark.parametrize(("bits", "conv", "fold_seed"), [
    (8, True, 0), (4, True, 1), (2, True, 2), (1, True, 3), (3, False, 4), (5, True, 5)])
def test_small_network_is_bit_exact(bits, conv, fold_seed, rng):
    import keras

    model = small_model(keras, fold_seed, conv=conv)
    images = rng.integers(0, 256, size=(4, 10, 10), dtype=np.uint8)
    qmodel = quantize(extract(model), rng.integers(0, 256, size=(64, 10, 10)),
                      QuantConfig(weight_bits=bits))
    choice = random.Random(fold_seed)
    fold = {}
    for layer in qmodel.weight_layers:
        unit = simd_unit(layer)
        pe = choice.choice([d for d in range(1, layer.channels + 1) if layer.channels % d == 0])
        simd = choice.choice([d for d in range(1, min(unit, 8) + 1) if unit % d == 0])
        fold[layer.name] = (pe, simd)
    sink, _ = simulate(qmodel, fold, images, seed=fold_seed)
    expected = golden.run(qmodel, images)[-1]
    assert [label for label, _ in sink.received] == golden.argmax(expected).tolist()
    assert [logits for _, logits in sink.received] == expected.tolist()


def test_full_rate_interval_matches_schedule(rng):
    import keras

    model = small_model(keras, 7)
    qmodel = quantize(extract(model), rng.integers(0, 256, size=(64, 10, 10)),
                      QuantConfig(weight_bits=4))
    fold = {qmodel.weight_layers[0].name: (3, 1)}
    images = rng.integers(0, 256, size=(5, 10, 10), dtype=np.uint8)
    sink, dut = simulate(qmodel, fold, images, idle=0.0, stall=0.0)
    intervals = np.diff(sink.times)[2:]
    predicted = max(stage.cycles for stage in schedule(qmodel, fold))
    assert dut.cycles_per_image == predicted
    assert intervals.tolist() == [predicted] * len(intervals)
