"""Choosing PE x SIMD per layer: a resource model and the automatic folding search.

The model estimates what a folding costs on a device (LUTs, flip-flops, block RAMs, DSPs)
from the same quantities the generator instantiates; ``python -m hw.build`` checks it against
nextpnr's report. :func:`auto_fold` then picks, for the fewest cycles per image that fit, the
smallest folding of every layer that meets that interval, so no layer idles for long.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import unsigned

from sw.errors import UserError
from sw.qmodel import Conv2D, Pool2D

from .network import check_fold, conv_window, layer_stages, schedule, simd_unit

__all__ = ["DEVICES", "Device", "Resources", "auto_fold", "estimate", "load_fold"]


@dataclass(frozen=True)
class Device:
    """An FPGA's capacity (nextpnr's names in the comments)."""

    name: str
    family: str
    luts: int  # ICESTORM_LC / TRELLIS_COMB
    ffs: int
    brams: int  # ICESTORM_RAM (4 Kbit) / DP16KD (18 Kbit)
    dsps: int  # ICESTORM_DSP / MULT18X18D
    #: Narrowest product Yosys maps to a DSP (iCE40 ``mul2dsp``: 11-bit result; ECP5: any).
    dsp_min_product: int

    @property
    def bram_bits(self):
        return 4096 if self.family == "ice40" else 18432


DEVICES = {
    "iCE40UP5K": Device("iCE40UP5K", "ice40", 5280, 5280, 30, 8, 11),
    "iCE40HX8K": Device("iCE40HX8K", "ice40", 7680, 7680, 32, 0, 11),
    "LFE5U-25F": Device("LFE5U-25F", "ecp5", 24288, 24288, 56, 28, 0),
    "LFE5U-45F": Device("LFE5U-45F", "ecp5", 43848, 43848, 108, 72, 0),
    "LFE5U-85F": Device("LFE5U-85F", "ecp5", 83640, 83640, 208, 156, 0),
}

#: LUTs and flip-flops of the UART board top (receiver, transmitter, framing, image buffer),
#: from synthesis of ``hw/uart_top.py`` with a 784-pixel image.
_TOP = {"ice40": (790, 310), "ecp5": (1070, 310)}
#: What nextpnr reported over what the per-component sums below predicted, for the core's
#: LUTs and FFs on the builds listed in the README (control, muxes and carry logic the sums
#: leave out); the README states the remaining error.
_LUT_SCALE, _FF_SCALE = 2.25, 2.0


@dataclass(frozen=True)
class Resources:
    luts: int
    ffs: int
    brams: int
    dsps: int

    def fits(self, device, lut_margin=0.85):
        return (self.luts <= lut_margin * device.luts and self.ffs <= device.ffs
                and self.brams <= device.brams and self.dsps <= device.dsps)


def _bram_blocks(depth, width, device):
    """Block RAMs for a ``depth x width`` memory; tiny ones go to LUTs (returns 0)."""
    if depth * width <= 1024 or depth <= 32:
        return 0
    if device.family == "ice40":
        shapes = [(256, 16), (512, 8), (1024, 4), (2048, 2)]
    else:
        shapes = [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)]
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in shapes)


def estimate(qmodel, fold, device):
    """Estimate the resources of the accelerator with ``fold`` (plus the UART top) on ``device``.

    Returns
    -------
    Resources
    """
    fold = check_fold(qmodel, fold)
    luts, ffs, brams, dsps = 0, 0, 0, 0
    image_bits = math.prod(qmodel.input_shape) * qmodel.input_bits
    brams += math.ceil(image_bits / device.bram_bits)
    for index, layer in enumerate(qmodel.layers):
        if isinstance(layer, Pool2D):
            [(_, pool)] = layer_stages(qmodel, fold, index)
            pool._MustUse__silence = True  # built only to ask its widths and constants
            bits = pool.sum_shape.width  # the element's for max, the window sum's for avg
            width_words = layer.in_shape[1] * layer.in_shape[2]
            brams += _bram_blocks(width_words, bits, device)
            luts += 4 * bits + 40
            ffs += 4 * bits + 30
            if pool.division:
                # Per lane: the sum register, and the constant division's shift-and-add
                # adders (as wide as the sum times the multiplier).
                width = bits + pool.division[0].bit_length()
                luts += pool.lanes * pool.division_terms * width
                ffs += pool.lanes * (bits + layer.bits)
            continue
        if not hasattr(layer, "matrix"):
            continue
        pe, simd = fold[layer.name]
        nf, sf = layer.channels // pe, layer.fan_in // simd
        wbits, abits, acc = layer.weight_bits, layer.in_bits, layer.acc_bits
        product = wbits + abits
        lanes = pe * simd
        if wbits == 1:
            mul_luts = 0  # add/subtract replaces the multiplier
        elif product >= device.dsp_min_product and device.dsps:
            mul_luts, dsps = 0, dsps + lanes
        else:
            mul_luts = wbits * abits + product
        # Per lane: the multiplier, the partial-sum adder and registers of the systolic chain.
        luts += lanes * (mul_luts + acc + 2)
        ffs += lanes * (acc + abits + wbits + 2)
        luts += pe * (acc + 10) + 60  # accumulators, requantization, control
        ffs += pe * (2 * acc) + 40
        rom = _bram_blocks(nf * sf, simd * wbits, device)
        brams += pe * rom
        if not rom:
            luts += pe * math.ceil(nf * sf * simd * wbits / 16)
        brams += _bram_blocks(sf, simd * abits, device)  # input replay buffer
        if isinstance(layer, Conv2D):
            window = conv_window(layer, simd, unsigned(abits))
            window._MustUse__silence = True  # built only to ask its buffer geometry
            brams += window.banks * _bram_blocks(window.buffer_depth, window.in_lanes * abits,
                                                 device)
            if window.path == "window-register":
                # About a LUT and a flip-flop per bit of the window and snapshot registers,
                # plus the multiplexer that picks a window's transfer (Yosys on LeNet's
                # layers, ECP5), halved since the sums are scaled up below.
                mux = simd * abits * (window.window_words - 1)
                luts += (300 + window.register_bits + mux) // 2
                ffs += (100 + window.register_bits) // 2
            else:
                luts += 150 + 20 * simd * abits // 4
                ffs += 100 + simd * abits
    top_luts, top_ffs = _TOP[device.family]
    return Resources(int(top_luts + _LUT_SCALE * luts), int(top_ffs + _FF_SCALE * ffs),
                     int(brams), int(dsps))


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def _options(layer):
    """Every legal ``(pe, simd)`` of a layer with its cycles per image, fewest lanes first."""
    unit = simd_unit(layer)
    positions = math.prod(layer.out_shape[:-1]) if isinstance(layer, Conv2D) else 1
    options = [(positions * (layer.channels // pe) * (layer.fan_in // simd), pe * simd, pe, simd)
               for pe in _divisors(layer.channels) for simd in _divisors(unit)]
    return sorted(options, key=lambda option: (option[1], option[0]))


def _fold_for(qmodel, target):
    fold = {}
    for layer in qmodel.weight_layers:
        fitting = [option for option in _options(layer) if option[0] <= target]
        if not fitting:
            return None
        _, _, pe, simd = min(fitting, key=lambda option: (option[1], option[0]))
        fold[layer.name] = (pe, simd)
    return fold


def auto_fold(qmodel, device, max_lanes=None):
    """The fastest balanced folding that the resource model says fits ``device``.

    Parameters
    ----------
    qmodel : QModel
    device : Device
    max_lanes : int, optional
        Cap on MAC lanes per layer (keeps synthesis time in bounds).

    Raises
    ------
    UserError
        When even the fully folded design (one lane per layer) does not fit, with its estimate.
    """
    targets = sorted({option[0] for layer in qmodel.weight_layers for option in _options(layer)})
    best = None
    for target in reversed(targets):
        fold = _fold_for(qmodel, target)
        if fold is None:
            break
        if max_lanes and any(pe * simd > max_lanes for pe, simd in fold.values()):
            break
        if not estimate(qmodel, fold, device).fits(device):
            break
        best = fold
    if best is None:
        fold = {layer.name: (1, 1) for layer in qmodel.weight_layers}
        need = estimate(qmodel, fold, device)
        raise UserError(
            f"{qmodel.name} at {qmodel.weight_bits} bits does not fit {device.name} even fully "
            f"folded: estimated {need.luts}/{device.luts} LUTs, {need.brams}/{device.brams} "
            f"block RAMs, {need.dsps}/{device.dsps} DSPs; try fewer bits, a smaller model or a "
            f"bigger board")
    # Non-MAC stages (the pixel input, pooling, width converters) may set the interval: no
    # layer needs to be faster than that, so give back the lanes it does not need.
    interval = max(stage.cycles for stage in schedule(qmodel, best))
    return _fold_for(qmodel, interval)


def load_fold(path, qmodel):
    """Read a ``{"layer": [pe, simd], ...}`` JSON file and validate it against ``qmodel``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        fold = {str(name): (int(value[0]), int(value[1])) for name, value in raw.items()}
    except FileNotFoundError:
        raise UserError(f"fold file {str(path)!r} not found") from None
    except (ValueError, TypeError, IndexError, AttributeError) as error:
        raise UserError(f"fold file {str(path)!r}: expected {{\"layer\": [pe, simd]}}: "
                        f"{error}") from None
    return check_fold(qmodel, fold)
