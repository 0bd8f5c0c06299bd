"""Choosing PE x SIMD per layer: a resource model and the automatic folding search.

The model estimates what a folding costs on a device (LUTs, flip-flops, block RAMs, DSPs)
from the same quantities the generator instantiates (a weight layer's MAC array from its
fold, the other components from those :mod:`hw.network` builds for each layer kind);
``python -m hw.build`` checks it against nextpnr's report. :func:`auto_fold` then picks, for
the fewest cycles per image that fit, the smallest folding of every layer that meets that
interval, so no layer idles for long.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import Shape, unsigned

from sw.errors import UserError

from .fifo import StreamFIFO
from .mac_array import adder_tree_depth, array_latency, output_fifo_depth
from .multiplier import (
    DSP_WIDTHS,
    PROVEN_BITS,
    constant_terms,
    fits_hard,
    hard_only,
    lut_buildable,
    packing_shift,
    product_bits,
)
from .network import (
    Fold,
    LayerFold,
    check_fold,
    element_shape,
    fold_from_json,
    hardware,
    input_lanes,
    layer_stages,
    loaded_words,
    schedule,
    simd_unit,
)
from .pool import Pool
from .weight_ram import BLOCK_DEPTH, BLOCK_WIDTH
from .weight_rom import BLOCK_MIN_DEPTH
from .window import WindowGenerator

__all__ = ["DEVICES", "LUT_MARGIN", "MAX_PIXELS", "Device", "Resources", "assign_multipliers",
           "auto_fold", "check_widths", "constant_adders", "device_lanes", "estimate", "kinds",
           "lane_luts", "lanes_by_kind", "layer_estimates", "load_fold", "place_weights"]


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
    #: RAM blocks a bitstream cannot initialize, for loaded weights (UP5K ``SB_SPRAM256KA``,
    #: 16 K x 16 bits: :class:`~hw.weight_ram.WeightRAM`).
    sprams: int = 0

    @property
    def bram_bits(self):
        return 4096 if self.family == "ice40" else 18432


DEVICES = {
    "iCE40UP5K": Device("iCE40UP5K", "ice40", 5280, 5280, 30, 8, 11, 4),
    "iCE40HX8K": Device("iCE40HX8K", "ice40", 7680, 7680, 32, 0, 11),
    "LFE5U-25F": Device("LFE5U-25F", "ecp5", 24288, 24288, 56, 28, 0),
    "LFE5U-45F": Device("LFE5U-45F", "ecp5", 43848, 43848, 108, 72, 0),
    "LFE5U-85F": Device("LFE5U-85F", "ecp5", 83640, 83640, 208, 156, 0),
}

#: Share of the device's LUTs (iCE40: logic cells) a fold may be estimated to fill: room
#: for routing and timing on ECP5; on the iCE40 the whole device: nextpnr placed and routed
#: tiny_cnn at 98.5% of the UP5K's cells (5,203, estimated 5,190), and the estimate of a
#: design that did not fit was below its real size by 4% (5,460, estimated 5,236, before
#: multi-pixel windows were priced).
LUT_MARGIN = {"ecp5": 0.85, "ice40": 1.0}
#: Most input pixels per transfer the folder asks of the core (and so of the board top's image
#: buffer, which reads them in one word).
MAX_PIXELS = 4
#: LUTs and flip-flops of the UART board top (receiver, transmitter, framing, image buffer),
#: from synthesis of ``hw/uart_top.py`` with a 784-pixel image.
_TOP = {"ice40": (790, 310), "ecp5": (1070, 310)}
#: Window generator on its window-register path: LUT4s of its control, line-buffer
#: addressing and multi-pixel word handling (the iCE40 counts no carry cells), and LUT4s per
#: bit of its window and snapshot registers and of the multiplexer that picks a transfer
#: (``python -m hw.macbench --build``: LeNet-5's two convolutions on ECP5, tiny_cnn's on the
#: UP5K).
_WINDOW_LUTS = {"ice40": 350, "ecp5": 750}
_WINDOW_LUTS_PER_BIT = 0.55
#: ... and per bit of the window (``K x K x Cin`` elements) for each pixel of an input word
#: beyond the first: the multiplexers that shift a word of several pixels into the window
#: (Yosys, tiny_cnn's and LeNet-5's first windows at 1, 2 and 4 pixels a word: 1.8 to 1.9
#: LUT4s a bit on the iCE40, 0.8 to 1.1 on ECP5 counting a carry cell as two).
_WINDOW_LUTS_PER_PIXEL_BIT = {"ice40": 1.85, "ecp5": 1.0}
#: Window generator on its kernel-row path: LUT4s of its control, besides 10 a bit of the
#: SIMD lanes it reads (iCE40: LeNet-5 W2A2's two windows, 500 and 229 LUT4s with Yosys at
#: 5 x 8 and 6 x 2 bits a read).
_KERNEL_ROW_LUTS = {"ice40": 110, "ecp5": 300}
#: LUT4s of a stream FIFO in iCE40 block RAM (Yosys, LeNet-5 W2A2's five: 50 to 70).
_ICE40_FIFO_LUTS = 60


@dataclass(frozen=True)
class Resources:
    luts: int
    ffs: int
    brams: int
    dsps: int
    #: Of the ``ffs``, those that register the output of a LUT of their own (an adder's sum
    #: bit), which an iCE40 logic cell always holds beside that LUT.
    paired_ffs: int = 0
    sprams: int = 0

    def __add__(self, other):
        return Resources(self.luts + other.luts, self.ffs + other.ffs, self.brams + other.brams,
                         self.dsps + other.dsps, self.paired_ffs + other.paired_ffs,
                         self.sprams + other.sprams)

    def fits(self, device):
        """Within the device, LUTs within :data:`LUT_MARGIN` of it."""
        return (self.luts <= LUT_MARGIN[device.family] * device.luts and self.ffs <= device.ffs
                and self.brams <= device.brams and self.dsps <= device.dsps
                and self.sprams <= device.sprams)


_NOTHING = Resources(0, 0, 0, 0)


#: Yosys on the iCE40 puts every memory of more than this many bits in block RAM (a line
#: buffer bank of 28 x 8 bits and a 13-entry output FIFO took one each in tiny_cnn's build).
_ICE40_BRAM_MIN_BITS = 128
#: iCE40: logic cells per flip-flop, as nextpnr packs a flip-flop with the LUT that feeds it
#: only sometimes (tiny_cnn W4A4 on the UP5K: 3,204 LUT4s and 3,263 flip-flops filled
#: 5,200 logic cells).
_ICE40_LCS_PER_FF = 0.6


def _bram_blocks(depth, width, device):
    """Block RAMs for a ``depth x width`` memory; tiny ones go to LUTs (returns 0)."""
    if device.family == "ice40":
        if depth * width <= _ICE40_BRAM_MIN_BITS or depth == 1:
            return 0
    elif depth * width <= 1024 or depth <= 32:
        return 0
    if device.family == "ice40":
        shapes = [(256, 16), (512, 8), (1024, 4), (2048, 2)]
    else:
        shapes = [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)]
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in shapes)


def lane_luts(kind, weight_bits, in_bits, device):
    """LUT4s (an ECP5 carry cell counted as two) of one MAC lane: its adder in the PE's
    adder tree, and a LUT-built product's radix-4 Booth rows (a multiplexer per bit) and
    adders.

    Fitted to ``python -m hw.macbench --bits 2,4,8 --multiplier dsp,lut,packed`` (README,
    "Cost of a MAC lane", less the array's accumulators and control) and to tiny_cnn's
    first layer on the UP5K (4-bit weights, 8-bit pixels: about 36 LUTs a LUT-built lane).
    """
    product = product_bits(weight_bits, unsigned(in_bits))
    adder = product + 1
    if weight_bits == 1:
        return adder + in_bits  # add or subtract, no multiplier
    if kind == "lut" or (kind == "dsp" and product < device.dsp_min_product):
        digits = -(-weight_bits // 2)
        return adder + digits * (in_bits + 2) + (digits - 1) * (in_bits + weight_bits)
    return adder


#: LUT4s (an ECP5 carry cell counted as two) of one adder of a ``"constant"`` layer's trees
#: beyond the bits of its input (:func:`hw.multiplier.constant_sum`: its terms are shifted
#: inputs, its sums a few bits wider), and the share of its adders' bits that are registered:
#: a register every second level holds a third of the adders' sums, plus the odd nodes carried
#: past a level and the difference of the two trees, each as wide as a sum; the share itself
#: fitted to tiny_cnn's first layer on the UP5K (``hw.macbench --build``: 1,445 LUT4s, 1,247
#: FFs).
_CONSTANT_ADDER_BITS = 3
_CONSTANT_REGISTERED = 0.5


#: LUTs of a loaded layer's RAM besides its blocks: the address multiplexer (RAM address
#: from the load or the array) and the load's word and block counters.
_LOADED_LUTS = 60


def constant_adders(layer):
    """Adders of a ``"constant"`` layer's :func:`~hw.multiplier.constant_sum` trees: per PE,
    one fewer than each tree's signed digits, and the difference."""
    adders = 0
    for weights in layer.matrix.T:
        plus, minus = constant_terms(weights.tolist())
        adders += max(len(plus) - 1, 0) + max(len(minus) - 1, 0) + 1
    return adders


def _lane_dsps(kind, pe, simd, weight_bits, product, device):
    """Hard multipliers of a layer's ``pe x simd`` lanes (a product narrower than
    ``device.dsp_min_product`` stays in LUTs, and so does an odd packed array's last PE's)."""
    wide = product >= device.dsp_min_product
    if weight_bits == 1 or kind in ("lut", "constant") or (kind == "dsp" and not wide):
        return 0
    if kind == "packed":
        return simd * (pe // 2 + (pe % 2 if wide else 0))
    return simd * pe


def kinds(layer, pe, device, simd=None):
    """The multiplier kinds worth considering for a layer folded to ``pe`` x ``simd`` lanes on
    ``device``, the cheapest in LUTs first: constant weights (no multiplier, no ROM) where
    every weight has a lane (``simd`` given and ``pe x simd`` the whole matrix); LUTs always;
    hard multipliers where Yosys maps the product to one; packed pairs where two PEs share
    an input and the pair fits the device's multiplier (on the iCE40, whose DSPs take only
    products of 11 bits and more, even PEs only, so that no lane falls back to Yosys' own LUT
    product, and only where the packed multiplication's product is that wide). Operands wider
    than ``PROVEN_BITS``: hard multipliers only, on every lane (:func:`check_widths` says when
    the device has none)."""
    shape = element_shape(layer.in_bits, layer.in_signed)
    product = product_bits(layer.weight_bits, shape)
    wide = product >= device.dsp_min_product
    if hard_only(layer.weight_bits, shape):
        return ("dsp",)  # every lane hard (check_widths: the device has them)
    constant = (["constant"] if (pe, simd) == (layer.channels, layer.fan_in)
                and lut_buildable(layer.weight_bits, shape) else [])
    if layer.weight_bits == 1 or not device.dsps:
        return (*constant, "lut")
    options = [*constant, "lut", "dsp"] if wide else [*constant, "lut"]
    try:
        shift = packing_shift(layer.weight_bits, shape, DSP_WIDTHS[device.family])
    except ValueError:
        return tuple(options)
    # The packed multiplication's own product: Yosys leaves one narrower than the device's
    # DSPs take in LUTs too (iCE40: LeNet-5's second convolution at 2 bits, 2-bit inputs).
    packed = shift + layer.weight_bits + shape.width + (0 if shape.signed else 1)
    if pe >= 2 and (wide or pe % 2 == 0) and packed >= device.dsp_min_product:
        options.append("packed")
    return tuple(options)


def lanes_by_kind(qmodel, fold, device):
    """MAC lanes of ``fold`` on ``device`` by what computes their products: ``"dsp"`` (one
    hard multiplier each), ``"packed"`` (two to a hard multiplier), ``"lut"`` (LUTs and carry
    chains, including products too narrow for the device's DSPs), ``"constant"`` (constant
    weights' signed digits in adder trees) and ``"adder"`` (1-bit weights: add or
    subtract)."""
    fold = check_fold(qmodel, fold, DSP_WIDTHS[device.family])
    counts = dict.fromkeys(("dsp", "packed", "lut", "constant", "adder"), 0)
    for layer in qmodel.weight_layers:
        pe, simd, kind, hard = _hard(fold[layer.name])
        product = product_bits(layer.weight_bits, element_shape(layer.in_bits, layer.in_signed))
        dsps = _lane_dsps(kind, pe, hard, layer.weight_bits, product, device)
        if kind == "constant":
            counts["constant"] += pe * simd
            continue
        if layer.weight_bits == 1:
            counts["adder"] += pe * simd
            continue
        counts["lut"] += pe * (simd - hard)
        if kind == "packed":
            paired = hard * (pe - pe % 2)
            counts["packed"] += paired
            counts["dsp" if dsps > paired // 2 else "lut"] += pe * hard - paired
        else:
            counts["dsp" if dsps else "lut"] += pe * hard
    return counts


def device_lanes(qmodel, device):
    """MAC lanes the device could hold if its every multiplier resource were busy: two per
    hard multiplier where the model's products pack (one where they do not), plus as many
    LUT-built lanes of the model's widest layer as :data:`LUT_MARGIN` of its LUTs hold.
    The ceiling a fold's lanes are measured against (``mac_efficiency_device``)."""
    layers = [layer for layer in qmodel.weight_layers if layer.weight_bits > 1]
    if not layers:  # 1-bit weights: adders only
        adder = max(lane_luts("lut", 1, layer.in_bits, device) for layer in qmodel.weight_layers)
        return int(LUT_MARGIN[device.family] * device.luts / adder)
    per_dsp = 2 if all("packed" in kinds(layer, 2, device) for layer in layers) else 1
    # LUT-built lanes only for the layers whose operands they are proven for.
    narrow = [layer for layer in layers if "lut" in kinds(layer, 1, device)]
    if not narrow:
        return device.dsps * per_dsp
    lut = max(lane_luts("lut", layer.weight_bits, layer.in_bits, device) for layer in narrow)
    return device.dsps * per_dsp + int(LUT_MARGIN[device.family] * device.luts / lut)


def _hard(entry):
    """``(pe, simd, kind, hard lanes)`` of a :class:`LayerFold`, the hard lanes counted."""
    pe, simd, kind, hard = entry
    return pe, simd, kind, 0 if kind in ("lut", "constant") else (simd if hard is None else hard)


def _lanes_cost(layer, entry, device):
    """Resources of a weight layer's MAC lanes: products, adder trees, their registers."""
    pe, simd, kind, hard = _hard(entry)
    wbits, abits = layer.weight_bits, layer.in_bits
    if kind == "constant":
        # Registered sums sit beside their adders' LUTs; the input slice is registered once
        # for all PEs.
        bits = constant_adders(layer) * (abits + _CONSTANT_ADDER_BITS)
        registered = int(_CONSTANT_REGISTERED * bits)
        return Resources(bits, registered + simd * abits, 0, 0, registered)
    product = product_bits(wbits, element_shape(layer.in_bits, layer.in_signed))
    luts = pe * (hard * lane_luts(kind, wbits, abits, device)
                 + (simd - hard) * lane_luts("lut", wbits, abits, device))
    # Per lane: the product register and its node of the adder tree; per systolic stage the
    # input's registered hop (a packed pair of PEs is one stage).
    stages = pe - pe // 2 if kind == "packed" and hard else pe
    ffs = pe * simd * (2 * product + 4) + stages * simd * abits
    return Resources(int(luts), int(ffs), 0, _lane_dsps(kind, pe, hard, wbits, product, device))


def _width_cost(elements, bits):
    """A :class:`~hw.width.WidthConverter` buffering ``elements`` elements of ``bits``."""
    return Resources(3 * elements * bits + 100, elements * bits + 10, 0, 0)


def _window_cost(window, device):
    """A :class:`~hw.window.WindowGenerator`: its line buffer banks and registers."""
    abits = window.shape.width
    brams = window.banks * _bram_blocks(window.buffer_depth, window.in_lanes * abits, device)
    if window.path == "window-register":
        mux = window.simd * abits * (window.window_words - 1)
        luts = _WINDOW_LUTS[device.family] + _WINDOW_LUTS_PER_BIT * (window.register_bits + mux)
        pixels = window.in_lanes // window.channels if window.in_lanes > window.channels else 1
        luts += (_WINDOW_LUTS_PER_PIXEL_BIT[device.family] * (pixels - 1)
                 * window.kernel ** 2 * window.channels * abits)
        return Resources(int(luts), window.register_bits + 100, brams, 0)
    return Resources(_KERNEL_ROW_LUTS[device.family] + 10 * window.simd * abits,
                     200 + 2 * window.simd * abits, brams, 0)


def _fifo_cost(fifo, device):
    """A :class:`~hw.fifo.StreamFIFO` (LUT RAM on ECP5, block RAM on the iCE40)."""
    depth, width = fifo.depth, Shape.cast(fifo.shape).width
    return Resources(50 + depth * width // 8 if device.family == "ecp5" else _ICE40_FIFO_LUTS, 30,
                     _bram_blocks(depth, width, device), 0)


def _pool_cost(pool, device):
    """A :class:`~hw.pool.Pool`: its row buffer, its lanes' compare or add, and an average's
    division."""
    bits = pool.sum_shape.width  # the element's for max, the window sum's for avg
    brams = _bram_blocks(pool.width * pool.channels, bits, device)
    luts, ffs = pool.lanes * bits * 5 + 100, pool.lanes * bits * 2 + 50
    if pool.division:
        # Per lane: the sum register, and the constant division's shift-and-add
        # adders (as wide as the sum times the multiplier).
        width = bits + pool.division[0].bit_length()
        luts += pool.lanes * pool.division_terms * width
        ffs += pool.lanes * (bits + pool.shape.width)
    return Resources(int(luts), int(ffs), brams, 0)


#: The resource model of each component a layer's stages hold besides the MAC array, its
#: width converter and its requantizer (which :func:`_frame_cost` models from the fold).
_BLOCK_COSTS = {WindowGenerator: _window_cost, StreamFIFO: _fifo_cost, Pool: _pool_cost}


def _blocks_cost(blocks, device):
    """Resources of the named components ``blocks``, built only to be priced."""
    total = _NOTHING
    for _, block in blocks:
        block._MustUse__silence = True  # built only to ask its geometry
        total += _BLOCK_COSTS[type(block)](block, device)
    return total


def _frame_cost(layer, entry, device, upstream=1, loaded=False):
    """Resources of a weight layer besides its lanes: window generator, width converter,
    input FIFO, ROMs (or a ``loaded`` layer's RAM), input buffer, accumulators, output FIFO,
    requantizer and control; ``upstream`` lanes come in."""
    pe, simd, multiplier = LayerFold(*entry)[:3]
    nf, sf = layer.channels // pe, layer.fan_in // simd
    wbits, abits, acc = layer.weight_bits, layer.in_bits, layer.acc_bits
    needed = input_lanes(layer, simd, upstream)
    total = _NOTHING
    if needed != upstream:
        total += _width_cost(upstream + needed - math.gcd(upstream, needed), abits)
    # The layer kind's input buffer: a conv's window generator, a dense layer's vector FIFO.
    total += _blocks_cost(hardware(layer).buffer("", unsigned(abits), simd, needed, pe), device)
    # Per PE: the accumulator's adder, the result's and the bias's registers, two output
    # FIFO entries, the requantizer's rounding adder and clamp; control along the stages.
    depth = adder_tree_depth(simd) + pe + 2
    luts = pe * (4 * acc + 20) + 60
    ffs = pe * (5 * acc + wbits + layer.out_bits) + 20 + 5 * depth
    brams = 0
    sprams = 0
    if loaded:
        # WeightRAM: its blocks side by side, the address multiplexer and write counters,
        # and the registers that hold each systolic stage's word until the stage's turn.
        sprams = math.ceil(pe * simd * wbits / BLOCK_WIDTH)
        stages = pe - pe // 2 if multiplier == "packed" else pe
        luts += _LOADED_LUTS
        ffs += pe * simd * wbits * (stages + 1) // 2 + _LOADED_LUTS // 2
        rom = 0
    else:
        # WeightROM: block RAM from BLOCK_MIN_DEPTH words on; Yosys keeps shorter ROMs in
        # LUTs.
        rom = _bram_blocks(nf * sf, simd * wbits, device) if nf * sf >= BLOCK_MIN_DEPTH else 0
        brams += pe * rom
    if not loaded and not rom and nf * sf > 1:
        luts += pe * math.ceil(nf * sf * simd * wbits / 16)
    if nf > 1:
        brams += _bram_blocks(sf, simd * abits, device)  # input replay buffer
    # The output FIFO: room for the folds in flight (MACArray.fifo_depth).
    depth = output_fifo_depth(sf, array_latency(pe, simd, multiplier, wbits))
    brams += _bram_blocks(depth, pe * acc, device)
    return total + Resources(int(luts), int(ffs), brams, 0, sprams=sprams)


def _weight_layer_cost(layer, entry, device, upstream=1, loaded=False):
    return (_frame_cost(layer, entry, device, upstream, loaded)
            + _lanes_cost(layer, entry, device))


def layer_estimates(qmodel, fold, device):
    """The resource model's estimate for each layer with hardware, by name, and for the
    board top (``"top"``: UART, framing, image buffer), as Yosys would count their cells
    (LUT4s and flip-flops; on the iCE40 before packing into logic cells)."""
    fold = check_fold(qmodel, fold, DSP_WIDTHS[device.family])
    image_bits = math.prod(qmodel.input_shape) * qmodel.input_bits
    top_luts, top_ffs = _TOP[device.family]
    parts = {"top": Resources(top_luts, top_ffs, math.ceil(image_bits / device.bram_bits), 0)}
    for index, layer in enumerate(qmodel.layers):
        if layer.weighted:
            first = layer is qmodel.weight_layers[0]
            parts[layer.name] = _weight_layer_cost(layer, fold[layer.name], device,
                                                   fold.pixels if first else 1,
                                                   layer.name in fold.loaded)
        elif blocks := layer_stages(qmodel, fold, index):  # a Flatten has none
            parts[layer.name] = _blocks_cost(blocks, device)
    return parts


def estimate(qmodel, fold, device):
    """Estimate the resources of the accelerator with ``fold`` (plus the UART top) on ``device``.

    ``luts`` are what nextpnr reports: LUT4s (ECP5 ``TRELLIS_COMB``), or logic cells on the
    iCE40 (``ICESTORM_LC``: LUTs and the flip-flops not packed beside one).

    Returns
    -------
    Resources
    """
    total = sum(layer_estimates(qmodel, fold, device).values(), _NOTHING)
    if device.family == "ice40":
        lone = total.ffs - total.paired_ffs
        total = Resources(int(total.luts + _ICE40_LCS_PER_FF * lone), total.ffs, total.brams,
                          total.dsps, total.paired_ffs, total.sprams)
    return total


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def _options(layer):
    """Every legal ``(pe, simd)`` of a layer with its cycles per image, fewest lanes first."""
    unit = simd_unit(layer)
    options = [(layer.positions * (layer.channels // pe) * (layer.fan_in // simd), pe * simd, pe,
                simd)
               for pe in _divisors(layer.channels) for simd in _divisors(unit)]
    return sorted(options, key=lambda option: (option[1], option[0]))


def _pixels_for(qmodel, fold, target):
    """``fold`` with the fewest input pixels per transfer (at most :data:`MAX_PIXELS`) whose
    schedule meets ``target`` cycles, or else the one with the shortest interval.

    The whole schedule decides, not the input alone: on the window-register path a window
    row's first columns take ``ceil(K / P)`` reads, so more pixels per word can also take
    the window generator's row wait away (LeNet-5's first layer: 600 cycles at two pixels,
    576 at four).
    """
    best = None
    for pixels in range(1, MAX_PIXELS + 1):
        candidate = Fold(fold, pixels)
        interval = _interval(qmodel, candidate)
        if interval is None:
            continue
        if interval <= target:
            return candidate
        if best is None or interval < best[0]:
            best = (interval, candidate)
    return best[1]


def _interval(qmodel, fold):
    """The image interval of ``fold``'s schedule, or None where its first layer cannot take
    ``fold.pixels`` pixels per word."""
    try:
        return max(stage.cycles for stage in schedule(qmodel, fold))
    except UserError:
        return None


#: A layer may take this many more lanes than the fewest that meet the interval when the
#: resource model finds that shape cheaper (fewer PEs, ROMs and line-buffer banks).
_SPARE_LANES = 1.25


def _shape_cost(layer, option, device, upstream):
    """What shape ``option`` of ``layer`` costs, each resource as a share of the device's
    (every lane LUT-built where it may be: the multiplier kinds are chosen afterwards)."""
    kind = kinds(layer, option[2], device, option[3])[0]
    need = _weight_layer_cost(layer, LayerFold(option[2], option[3], kind), device, upstream)
    return (need.luts / device.luts + need.ffs / device.ffs
            + need.brams / max(device.brams, 1))


def _fold_for(qmodel, target, device):
    """The cheapest shape of every weight layer that runs it in ``target`` cycles, and the
    input pixels per transfer, or None.

    Of the shapes with at most :data:`_SPARE_LANES` times the fewest lanes, each layer takes
    the one :func:`_shape_cost` finds cheapest on ``device`` (then the fewer lanes, then the
    narrower SIMD).
    """
    fold, upstream = {}, 1
    for layer in qmodel.weight_layers:
        fitting = [option for option in _options(layer) if option[0] <= target]
        if not fitting:
            return None
        fewest = min(option[1] for option in fitting)
        _, _, pe, simd = min(
            (option for option in fitting if option[1] <= _SPARE_LANES * fewest),
            key=lambda option: (_shape_cost(layer, option, device, upstream), option[1],
                                option[3]))
        fold[layer.name] = (pe, simd)
        upstream = pe
    return _pixels_for(qmodel, fold, target)


def assign_multipliers(qmodel, fold, device):
    """Give every layer of ``fold`` the multiplier kind, and the number of its SIMD lanes
    that use it, that spend the fewest LUTs in all while the hard multipliers last (a
    knapsack over the device's DSPs, solved exactly; LUT lanes always fit it).

    Returns
    -------
    Fold or None
        None when the layers that multiply on hard multipliers only (operands wider than
        ``hw.multiplier.PROVEN_BITS``) need more than the device has.
    """
    # best[d]: (LUTs, {layer: LayerFold}) of the cheapest assignment so far using d DSPs.
    best = {0: (0, {})}
    for layer in qmodel.weight_layers:
        pe, simd = fold[layer.name][:2]
        options = kinds(layer, pe, device, simd)
        # Hard lanes: any number where the rest may be LUT-built, else all of them.
        hards = range(1, simd + 1) if "lut" in options else [simd]
        choices = [LayerFold(pe, simd, kind, None if hard == simd else hard)
                   for kind in options
                   for hard in ([0] if kind == "lut" else [simd] if kind == "constant" else
                                hards)]
        step = {}
        for choice in choices:
            cost = _lanes_cost(layer, choice, device)
            for used, (luts, chosen) in best.items():
                total = used + cost.dsps
                if total > device.dsps:
                    continue
                if total not in step or luts + cost.luts < step[total][0]:
                    step[total] = (luts + cost.luts, {**chosen, layer.name: choice})
        best = step
    if not best:
        return None
    _, chosen = min(best.values(), key=lambda value: value[0])
    return Fold(chosen, getattr(fold, "pixels", 1))


def place_weights(qmodel, fold, device):
    """``fold`` with the weights of as few layers as needed loaded into the device's RAM a
    bitstream cannot initialize (:class:`~hw.weight_ram.WeightRAM`), so that its block RAM
    holds the rest; ``fold`` itself where that already fits, or where the device has no such
    RAM. The layers whose ROMs take the most block RAMs go first (loaded weights must be sent
    by the host after configuration, so no layer is loaded that need not be)."""
    fold = check_fold(qmodel, fold, DSP_WIDTHS[device.family])
    if not device.sprams or estimate(qmodel, fold, device).brams <= device.brams:
        return fold
    parts = layer_estimates(qmodel, fold, device)
    candidates = [layer for layer in qmodel.weight_layers
                  if fold[layer.name].multiplier != "constant"
                  and loaded_words(layer, fold[layer.name]) // math.ceil(
                      fold[layer.name].pe * fold[layer.name].simd * layer.weight_bits
                      / BLOCK_WIDTH) <= BLOCK_DEPTH]
    loaded = set()
    for layer in sorted(candidates, key=lambda layer: -parts[layer.name].brams):
        placed = Fold(fold, loaded=loaded | {layer.name})
        need = estimate(qmodel, placed, device)
        if need.sprams > device.sprams:
            continue
        loaded.add(layer.name)
        if need.brams <= device.brams:
            break
    return Fold(fold, loaded=loaded)


def auto_fold(qmodel, device, max_lanes=None, max_luts=None):
    """The fastest balanced folding that the resource model says fits ``device``.

    For each candidate interval, from the slowest, every layer gets the fewest lanes that
    meet it and the multiplier kinds that cost the fewest LUTs (:func:`assign_multipliers`);
    the fastest interval that fits wins.

    Parameters
    ----------
    qmodel : QModel
    device : Device
    max_lanes : int, optional
        Cap on MAC lanes per layer (keeps synthesis time in bounds).
    max_luts : int, optional
        Cap on the estimated LUTs, below the device's (``hw.build`` folds again with one when
        nextpnr could not place a fold the estimate said fits).

    Raises
    ------
    UserError
        When even the fully folded design (one lane per layer) does not fit, with its estimate,
        or a layer needs hard multipliers the device does not have (:func:`check_widths`).
    """
    check_widths(qmodel, device)

    def fits(fold):
        need = estimate(qmodel, fold, device)
        return need.fits(device) and (max_luts is None or need.luts <= max_luts)

    targets = sorted({option[0] for layer in qmodel.weight_layers for option in _options(layer)})
    best, best_interval = None, math.inf
    for target in reversed(targets):
        fold = _fold_for(qmodel, target, device)
        if fold is None:
            break
        if max_lanes and any(pe * simd > max_lanes for pe, simd in fold.values()):
            break
        # Costs are not monotonic in the target (a faster fold may take a narrower SIMD and
        # shed skew registers), so every target is tried; and with fewer pixels per transfer
        # than the target asks, as a slower input may be what fits.
        for pixels in range(fold.pixels, 0, -1):
            candidate = Fold(fold, pixels)
            interval = _interval(qmodel, candidate)
            if interval is None:
                continue
            candidate = assign_multipliers(qmodel, candidate, device)
            if candidate is not None:
                candidate = place_weights(qmodel, candidate, device)
            if candidate is not None and fits(candidate) and interval <= best_interval:
                best, best_interval = candidate, interval
    if best is None:
        fold = {layer.name: (1, 1, kinds(layer, 1, device)[0]) for layer in qmodel.weight_layers}
        need = estimate(qmodel, fold, device)
        raise UserError(
            f"{qmodel.name} at {qmodel.weight_bits} bits does not fit {device.name} even fully "
            f"folded: estimated {need.luts}/{device.luts} LUTs, {need.brams}/{device.brams} "
            f"block RAMs, {need.dsps}/{device.dsps} DSPs; try fewer bits, a smaller model or a "
            f"bigger board")
    # Non-MAC stages (the pixel input, pooling, width converters) may set the interval: no
    # layer needs to be faster than that, so give back the lanes it does not need.
    interval = max(stage.cycles for stage in schedule(qmodel, best))
    relaxed = assign_multipliers(qmodel, _fold_for(qmodel, interval, device), device)
    if relaxed is not None:
        relaxed = place_weights(qmodel, relaxed, device)
    # The relaxed fold may take other shapes (and memories) than the best: keep it only if
    # it fits too.
    return relaxed if relaxed is not None and fits(relaxed) else best


def check_widths(qmodel, device):
    """Raise a one-line :class:`UserError` naming the first weight layer whose operands are
    wider than LUT-built products are proven for (:func:`hw.multiplier.hard_only`) and that
    ``device`` cannot multiply: it has no hard multipliers, or they are too narrow."""
    width = DSP_WIDTHS[device.family]
    for layer in qmodel.weight_layers:
        shape = element_shape(layer.in_bits, layer.in_signed)
        wide = hard_only(layer.weight_bits, shape)
        if not wide:
            continue
        if not device.dsps:
            raise UserError(f"layer {layer.name!r}: {wide}, and the {device.name} has none: use "
                            f"at most {PROVEN_BITS} bits or a device with DSPs")
        if not fits_hard(layer.weight_bits, shape, width):
            raise UserError(f"layer {layer.name!r}: {wide}, and the {device.name}'s are "
                            f"{width}x{width} signed: at most {width - 1}-bit unsigned (ReLU) or "
                            f"{width}-bit signed inputs and {width}-bit weights")


def load_fold(path, qmodel, dsp_width=DSP_WIDTHS["ecp5"]):
    """Read a fold JSON file and validate it against ``qmodel``: ``{"pixels": P, "layers":
    {"layer": [pe, simd, multiplier, hard_lanes]}}`` as ``hw.build`` writes it, or a plain
    ``{"layer": [pe, simd]}`` (multiplier and hard lanes optional; one pixel per transfer)."""
    path = Path(path)
    try:
        fold = fold_from_json(json.loads(path.read_text()))
        for value in fold.values():
            int(value[0]), int(value[1])
    except FileNotFoundError:
        raise UserError(f"fold file {str(path)!r} not found") from None
    except (ValueError, TypeError, IndexError, AttributeError, KeyError) as error:
        raise UserError(f"fold file {str(path)!r}: expected {{\"layer\": [pe, simd]}} or "
                        f"[pe, simd, multiplier, hard_lanes]: {error}") from None
    return check_fold(qmodel, fold, dsp_width)
