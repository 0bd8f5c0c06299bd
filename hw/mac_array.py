"""The folded systolic matrix-vector unit (FINN's MVAU): ``acc = bias + x @ weights``.

Structure (``PE`` output lanes, ``SIMD`` input lanes, ``NF = channels / PE`` output folds,
``SF = fan_in / SIMD`` input folds)::

    i ─► issue ─► input buffer (SF words) ─► reg ─► x ─────reg─────► x ─────reg────► ...
           │                                       │                 │
           └─► ROM address ─────────┬──────────────│──────reg──────┬─│─────reg────► ...
                                   ROM 0 ─► reg    │              ROM 1 ─► reg
                                           w ─► PE 0 ◄─┘                  w ─► PE 1 ◄─┘
                                                 │  SIMD-stage registered     │
                                                 │  chain, accumulator,       │
                                                 │  result register           │
                                                 └─────► deskew ◄─────────────┘ ─► FIFO ─► o

One *operation* multiplies one ``SIMD``-wide slice of the input with one ROM word per PE. The
issue stage sends one operation per cycle: during output fold ``nf = 0`` it takes the slice
from ``i`` (and writes it into the input buffer); for ``nf = 1 .. NF-1`` it replays the slice
from the buffer. Everything after the issue stage runs freely (no enable from ``o.ready``):
each operation carries a valid bit down the pipeline. Backpressure is handled by credits: a
fold (``SF`` operations, one output transfer) is only started when the output FIFO is sure to
have room for its result, counting the results still in flight.

Each lane's product comes from the ``multiplier`` kind of :mod:`hw.multiplier`: a hard
multiplier (``"dsp"``), LUTs and carry chains (``"lut"``), or, for ``"packed"``, one hard
multiplier shared by two PEs. Packed PEs ``2q`` and ``2q + 1`` form one *stage*: they read
their ROMs at the same address and multiply the same registered input, so one
multiplication ``(w_a + 2**k * w_b) * x`` gives both products; the input still hops stage to
stage through a register (the array stays systolic, with half as many hops), and PE
``2q + 1``'s ROM holds the high code ``w_b - [w_a < 0]`` the packed operand needs. With an
odd ``PE`` the last PE is a stage of its own with a plain hard multiplier.

With ``"constant"`` weights every weight has a lane of its own (``PE = channels``,
``SIMD = fan_in``: one operation per vector), so there is no ROM and no multiplier: each PE
is a pipelined adder tree over its weights' signed digits
(:func:`hw.multiplier.constant_sum`), all PEs fed the same registered input (one stage),
each followed by the bias's adder::

    i ─► issue ─► reg ─► x ─┬─► PE 0: + digits tree, - digits tree ─► difference ─► + bias ─┐
                            └─► PE 1: ...                                      ... ─► FIFO ─► o
"""

import math

import numpy as np
from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw.qmodel import MAX_BITS, accumulator_range, signed_bits, weight_range
from sw.quantize import rom_words

from .multiplier import (
    DSP_WIDTHS,
    KINDS,
    constant_depth,
    constant_levels,
    constant_sum,
    high_codes,
    lane_problem,
    lut_product,
    max_digits,
    packed_products,
    packing_shift,
    product_range,
)
from .params import check_in_shape, check_int
from .streams import lanes_signature
from .weight_ram import LOAD_LAYOUT, WeightRAM, load_chunks
from .weight_rom import STYLES, WeightROM

__all__ = ["MACArray", "adder_tree_depth", "array_latency", "constant_tree_depth",
           "output_fifo_depth"]


def _delay(m, value, cycles, name, reset_less=True, attrs=None):
    """``value`` delayed by ``cycles`` free-running registers (``value`` itself for 0).

    Data registers need no reset (only valid bits do), which keeps the reset net small.
    ``attrs`` are the registers' netlist attributes.
    """
    value = Value.cast(value)
    for index in range(cycles):
        register = Signal(value.shape(), name=f"{name}_d{index + 1}", reset_less=reset_less,
                          **({"attrs": attrs} if attrs else {}))
        m.d.sync += register.eq(value)
        value = register
    return value


def _counter(m, count, name, step):
    """A counter ``0 .. count-1`` that wraps, advancing when ``step``; ``(value, at_last)``.

    A one-value counter is the constant 0 (no zero-width signal in the Verilog).
    """
    if count == 1:
        return C(0, 1), C(1, 1)
    value = Signal(range(count), name=name)
    last = value == count - 1
    with m.If(step):
        m.d.sync += value.eq(Mux(last, 0, value + 1))
    return value, last


def adder_tree_depth(simd):
    """Registered levels of an adder tree over ``simd`` lanes: ``ceil(log2(simd))``."""
    return (simd - 1).bit_length()


def constant_adder_depth(simd, weight_bits):
    """Levels of adders of each tree of a ``"constant"`` PE's
    :func:`~hw.multiplier.constant_sum` over ``simd`` weights of ``weight_bits``: as many as
    the most signed digits they can have need."""
    return constant_depth(simd * max_digits(weight_bits))


def constant_tree_depth(simd, weight_bits):
    """:attr:`MACArray.tree_depth` of ``"constant"`` lanes: the registered levels of a PE's
    :func:`~hw.multiplier.constant_sum`, but one (the products' register of the other
    kinds)."""
    return constant_levels(constant_adder_depth(simd, weight_bits)) - 1


def array_latency(pe, simd, multiplier, weight_bits=None):
    """:attr:`MACArray.latency` of an array of ``pe`` x ``simd`` ``multiplier`` lanes
    (``weight_bits`` wide: ``"constant"`` lanes' adder trees depend on it)."""
    if multiplier == "constant":
        return 1 + constant_tree_depth(simd, weight_bits) + 5
    stages = -(-pe // 2) if multiplier == "packed" else pe
    return stages + adder_tree_depth(simd) + 5


def output_fifo_depth(sf, latency):
    """:attr:`MACArray.fifo_depth` for ``sf`` input folds and ``latency``."""
    return max(2, math.ceil((sf + latency) / sf))


def _check_choices(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not "
                         f"{value!r}")
    return value


def _check_matrix(weights, bias, weight_bits):
    """``weights`` and ``bias`` as ``int64`` arrays, checked against each other and the
    ``weight_bits`` range."""
    weights = np.asarray(weights)
    if weights.dtype.kind not in "iu":
        raise TypeError(f"weights must be integers, not {weights.dtype}")
    if weights.ndim != 2 or 0 in weights.shape:
        raise ValueError(f"weights must be a non-empty (fan_in, channels) matrix, not shape "
                         f"{weights.shape}")
    weights = weights.astype(np.int64)
    lo, hi = weight_range(weight_bits)
    if weights.min() < lo or weights.max() > hi:
        raise ValueError(f"weights must lie in the {weight_bits}-bit range {lo}..{hi}, found "
                         f"{weights.min()}..{weights.max()}")
    if weight_bits == 1 and np.any(weights == 0):
        raise ValueError("1-bit weights must be -1 or +1, found 0")
    bias = np.asarray(bias)
    if bias.dtype.kind not in "iu":
        raise TypeError(f"bias must be integers, not {bias.dtype}")
    if bias.shape != (weights.shape[1],):
        raise ValueError(f"bias must have shape ({weights.shape[1]},) to match the weights, "
                         f"not {bias.shape}")
    return weights, bias.astype(np.int64)


class MACArray(wiring.Component):
    """Folded systolic matrix-vector multiply-accumulate unit.

    For every input vector ``x`` (``fan_in`` values, ``SF`` transfers of ``simd`` lanes,
    element ``sf * simd + s`` in transfer ``sf``, lane ``s``) it produces ``NF`` output
    transfers; transfer ``nf`` holds in lane ``p`` the exact accumulator
    ``bias[c] + sum_k weights[k, c] * x[k]`` of channel ``c = nf * pe + p``. Vectors follow
    each other back to back; at full rate one vector takes exactly :attr:`cycles_per_vector`
    ``= NF * SF`` cycles, whatever the ``multiplier``.

    Parameters
    ----------
    weights : array of int, shape (fan_in, channels)
        Integer weights in the ``weight_bits`` range of ``docs/numerics.md``
        (``-1``/``+1`` for 1 bit).
    bias : array of int, shape (channels,)
        Integer bias, in the accumulator's scale.
    weight_bits : int
        Weight width, 1..16. ROM words are :func:`sw.quantize.rom_words`; 1-bit weights use an
        adder/subtractor instead of a multiplier. Weights or inputs wider than
        :data:`~hw.multiplier.PROVEN_BITS` multiply on hard multipliers only: ``"dsp"``, every
        lane hard.
    in_shape : Shape
        Shape of one input value, e.g. ``unsigned(8)`` or ``signed(4)``.
    acc_bits : int
        Accumulator width; at least the exact width of ``docs/numerics.md`` for these
        weights, bias and inputs (``acc_bits`` of the :mod:`sw.qmodel` layer).
    pe : int
        Output lanes (processing elements); must divide ``channels``.
    simd : int
        Input lanes per PE; must divide ``fan_in``.
    rom_style : {"auto", "block", "logic"}
        Placement of the ``pe`` weight ROMs (``NF * SF`` words each), see
        :class:`~hw.weight_rom.WeightROM`.
    multiplier : {"dsp", "lut", "packed", "constant"}
        How the lanes multiply (:mod:`hw.multiplier`): ``"dsp"`` (default) one hard
        multiplier per lane; ``"lut"`` LUTs and carry chains, no hard multiplier; ``"packed"``
        one hard multiplier for the two lanes of PEs ``2q`` and ``2q + 1`` that share an
        input, which also halves the input hops (see :attr:`stages`); ``"constant"`` no
        multiplier and no ROM, the weights' signed digits summed by adder trees, for an array
        with a lane for every weight (``pe = channels``, ``simd = fan_in``). 1-bit weights
        add or subtract whatever the kind.
    dsp_width : int
        Signed operand width of the target's hard multiplier, 18 (ECP5, default) or 16
        (iCE40 UP5K), see :data:`hw.multiplier.DSP_WIDTHS`: ``"packed"`` is refused unless a
        packed pair fits it.
    hard_lanes : int, optional
        How many SIMD lanes (lanes ``0 .. hard_lanes - 1`` of every PE) use ``multiplier``'s
        hard multipliers; the others are ``"lut"``. All of them when not given, so that a
        layer can use exactly the hard multipliers a device has left.
    loaded : bool
        Keep the weights in a :class:`~hw.weight_ram.WeightRAM` (the iCE40 UP5K's SPRAM), one
        word of every PE's weights a cycle, written through ``load`` after configuration
        instead of ROMs the bitstream initializes. Not for ``"constant"`` weights.
    preload : bool
        With ``loaded``: the RAM starts with the weights (simulation only; the hardware's
        starts undefined).

    Attributes
    ----------
    i : stream.Interface, in
        ``ArrayLayout(in_shape, simd)``.
    o : stream.Interface, out
        ``ArrayLayout(signed(acc_bits), pe)``.
    weights, bias : ndarray of int64
        The parameters, checked; with ``weight_bits``, ``in_shape``, ``acc_bits``, ``pe``,
        ``simd``, ``rom_style``, ``dsp_width`` as given.
    multiplier, hard_lanes : str, int
        The multiplier kind and the SIMD lanes multiplying with it (``"lut"`` and 0 when no
        lane is hard); the other lanes are LUT-built.
    loaded, preload : bool
        As given.
    load : stream.Interface, in
        With ``loaded`` only: the weights' load transfers (:meth:`load_chunks`).
    fan_in, channels : int
        The matrix's shape.
    nf, sf : int
        Output folds (transfers on ``o`` per input vector, ``channels / pe``) and input folds
        (transfers on ``i`` per vector, ``fan_in / simd``).
    cycles_per_vector : int
        Cycles per input vector at full rate: ``nf * sf`` (one operation a cycle).
    stages : tuple of tuple of int
        The PEs of each systolic stage, ``((0,), (1,), ...)``; pairs when ``"packed"``, all
        PEs in one when ``"constant"``. The PEs of a stage share one registered input and
        compute in the same cycle; the input hops from stage to stage.
    product_bits : int
        Width of one lane's product (exact for the weight and input ranges).
    tree_depth : int
        Registered levels of each PE's adder tree: ``ceil(log2(simd))``; for ``"constant"``
        those of :func:`~hw.multiplier.constant_sum` but one, :func:`constant_tree_depth`
        (it takes the input slice a cycle before the other kinds' products would, and its
        sum waits a cycle in a register).
    latency : int
        Cycles from the last input transfer of a vector to its first output, at full rate:
        ``len(stages) + tree_depth + 5``: one cycle to read the input buffer and ROMs, one to
        register what they read, one to register the products, the adder tree's levels,
        ``len(stages) - 1`` hops to the last stage, the result register after the
        accumulator's adder, and the output FIFO's two cycles.
    fifo_depth : int
        Output FIFO entries: enough credits that the pipeline never waits at full rate. A
        fold's credit is back ``sf + latency`` cycles after the fold starts (its last
        operation, the latency, the transfer), and a fold starts every ``sf`` cycles at full
        rate. Depth 1 is avoided: ``SyncFIFOBuffered`` of depth 1 only passes every other
        cycle.

    Raises
    ------
    TypeError
        If a parameter has the wrong type.
    ValueError
        If a parameter is out of range, ``pe``/``simd`` does not divide the matrix,
        ``acc_bits`` is too narrow to hold every partial sum, or a ``"packed"`` pair does
        not fit the hard multiplier.
    """

    def __init__(self, weights, bias, *, weight_bits, in_shape, acc_bits, pe, simd,
                 rom_style="auto", multiplier="dsp", dsp_width=DSP_WIDTHS["ecp5"],
                 hard_lanes=None, loaded=False, preload=False):
        self.weight_bits = check_int("weight_bits", weight_bits)
        if self.weight_bits > MAX_BITS:
            raise ValueError(f"weight_bits must be in 1..{MAX_BITS}, not {weight_bits}")
        self.in_shape = check_in_shape(in_shape)
        self.acc_bits = check_int("acc_bits", acc_bits)
        self.pe = check_int("pe", pe)
        self.simd = check_int("simd", simd)
        self.rom_style = _check_choices("rom_style", rom_style, STYLES)
        _check_choices("multiplier", multiplier, KINDS)
        self.dsp_width = check_int("dsp_width", dsp_width, minimum=2)
        hard_lanes = simd if hard_lanes is None else check_int("hard_lanes", hard_lanes,
                                                                minimum=0)
        if hard_lanes > simd:
            raise ValueError(f"hard_lanes {hard_lanes} exceeds simd {simd}")
        if multiplier == "constant":
            hard_lanes = 0
        elif multiplier == "lut" or hard_lanes == 0:
            multiplier, hard_lanes = "lut", 0
        #: The multiplier kind, and the SIMD lanes multiplying with it (0 for ``"lut"``); the
        #: rest are LUT-built.
        self.multiplier, self.hard_lanes = multiplier, hard_lanes
        problem = lane_problem(multiplier, self.weight_bits, self.in_shape, self.dsp_width,
                               hard_lanes == self.simd)
        if problem:
            raise ValueError(problem)
        # The packed operand's shift; None where no multiplier is packed.
        self._shift = (packing_shift(self.weight_bits, in_shape, self.dsp_width)
                       if multiplier == "packed" and self.weight_bits > 1 else None)
        self.weights, self.bias = _check_matrix(weights, bias, self.weight_bits)
        self.fan_in, self.channels = self.weights.shape
        if self.channels % pe:
            raise ValueError(f"pe {pe} does not divide the {self.channels} output channels")
        if self.fan_in % simd:
            raise ValueError(f"simd {simd} does not divide the fan-in of {self.fan_in} inputs")
        if multiplier == "constant" and (pe, simd) != (self.channels, self.fan_in):
            raise ValueError(f"multiplier 'constant' needs a lane for every weight: pe "
                             f"{self.channels} and simd {self.fan_in}, not {pe} and {simd}")
        # The exact accumulator range of docs/numerics.md: it bounds every partial sum too.
        need = signed_bits(*accumulator_range(self.weights, self.bias, in_shape.width,
                                              in_shape.signed))
        if self.acc_bits < need:
            raise ValueError(f"acc_bits {acc_bits} is too narrow: these weights, bias and "
                             f"{in_shape!r} inputs need {need} bits")
        self.loaded, self.preload = bool(loaded), bool(preload)
        if self.loaded and multiplier == "constant":
            raise ValueError("multiplier 'constant' keeps its weights in logic: it cannot load "
                             "them")
        self._derive()
        ports = {
            "i": In(lanes_signature(in_shape, simd)),
            "o": Out(lanes_signature(signed(acc_bits), pe)),
        }
        if self.loaded:
            ports["load"] = In(stream.Signature(LOAD_LAYOUT))
        super().__init__(ports)

    def _derive(self):
        """The figures that follow from the parameters (see the class's attributes)."""
        pe, pairs = self.pe, self.multiplier == "packed"
        constant = self.multiplier == "constant"
        # Yosys 0.70's synth_ice40 -dsp puts a register of a DSP product both into the
        # SB_MAC16 that makes it and into the input of the SB_MAC16 that adds it to another,
        # leaving that input undriven: one of two summed products is lost (the gate-level
        # simulation of tests/test_sim_netlist.py found it). Kept registers are not merged.
        self._keep_products = self.dsp_width == DSP_WIDTHS["ice40"]
        self.nf, self.sf = self.channels // pe, self.fan_in // self.simd
        self._product_range = product_range(self.weight_bits, self.in_shape)
        self.product_bits = signed_bits(*self._product_range)
        self.stages = ((tuple(range(pe)),) if constant else
                       tuple(tuple(range(p, min(p + 2, pe))) if pairs else (p,)
                             for p in range(0, pe, 2 if pairs else 1)))
        self.cycles_per_vector = self.nf * self.sf
        self.tree_depth = (constant_tree_depth(self.simd, self.weight_bits) if constant else
                           adder_tree_depth(self.simd))
        self.latency = array_latency(pe, self.simd, self.multiplier, self.weight_bits)
        self.fifo_depth = output_fifo_depth(self.sf, self.latency)

    def _rom_matrix(self):
        """The weights as the ROMs hold them: the second PE of a packed pair stores high codes.

        Channel ``c`` is PE ``c % pe``'s; an odd PE is paired with the one before it.
        """
        if self._shift is None:
            return self.weights
        matrix = self.weights.copy()
        odd = np.flatnonzero(np.arange(self.channels) % self.pe % 2 == 1)
        # Row k is multiplied in SIMD lane k % simd: only the packed lanes hold high codes.
        rows = np.flatnonzero(np.arange(self.fan_in) % self.simd < self.hard_lanes)
        block = np.ix_(rows, odd)
        matrix[block] = high_codes(self.weights[np.ix_(rows, odd - 1)], matrix[block])
        return matrix

    def _ram_words(self):
        """The words of the :class:`~hw.weight_ram.WeightRAM` of a ``loaded`` array: every PE's
        ROM word side by side, PE 0 in the lowest bits."""
        words = rom_words(self._rom_matrix(), self.weight_bits, self.pe, self.simd)
        width = self.simd * self.weight_bits
        return [sum(column[p] << (p * width) for p in range(self.pe))
                for column in zip(*words, strict=True)]

    def load_chunks(self):
        """The 16-bit transfers that load a ``loaded`` array's weights through ``load``."""
        return load_chunks(self._ram_words(), self.pe * self.simd * self.weight_bits)

    def _products(self, m, lane, codes, s):
        """The products of one SIMD lane for the PEs of one stage.

        ``codes`` maps each PE of the stage to its weight code for this lane. Returns
        ``({pe: product signal}, {pe: borrow})``: a LUT-built product and the second of a
        packed pair come with a borrow bit that the adder using the product must add too
        (:mod:`hw.multiplier`).
        """
        products, borrows = {}, {}
        kind = self.multiplier if s < self.hard_lanes else "lut"
        for p in codes:
            products[p] = Signal(signed(self.product_bits), name=f"product_pe{p}_s{s}")
            if self.weight_bits == 1:
                # Bit b means weight 2b - 1: add or subtract the input, no multiplier.
                m.d.comb += products[p].eq(Mux(codes[p][0], lane, -lane))
            elif kind == "lut":
                value, borrows[p] = lut_product(m, lane, codes[p], name=f"product_pe{p}_s{s}")
                m.d.comb += products[p].eq(value)
            elif len(codes) == 1:
                # "dsp", and the unpaired last PE of an odd "packed" array.
                m.d.comb += products[p].eq(lane * codes[p].as_signed())
        if len(codes) == 2 and self.weight_bits > 1 and kind == "packed":
            a, b = codes
            low, high, borrows[b] = packed_products(m, lane, codes[a], codes[b],
                                                    shift=self._shift, name=f"product_pe{a}_s{s}")
            m.d.comb += [products[a].eq(low), products[b].eq(high)]
        return products, borrows

    def _adder_tree(self, m, p, nodes):
        """PE ``p``'s registered adder tree over its lanes' registered products.

        ``nodes`` are ``(lanes, value, borrow)``: a product, or a partial sum of ``lanes``
        products, and a bit still to be added (or ``None``). Each level adds neighbours in
        pairs and registers the sums (an odd one out is registered as it is), so the tree has
        :attr:`tree_depth` levels. A sum takes one pending borrow as its adder's carry-in and
        registers the other, so ``n`` borrows meet ``n - 1`` adders and one is left for the
        accumulator's adder: no adder is spent on borrows. Returns the root node.
        """
        lo, hi = self._product_range
        level = 0
        while len(nodes) > 1:
            joined = []
            for j in range(0, len(nodes), 2):
                pair = nodes[j:j + 2]
                lanes = sum(node[0] for node in pair)
                name = f"sum_pe{p}_l{level}_{j // 2}"
                # A partial sum of n products carrying its pending borrow lies in
                # n * lo - 1 .. n * hi.
                total = Signal(signed(min(self.acc_bits,
                                          signed_bits(lanes * lo - 1, lanes * hi))),
                               name=name, reset_less=True)
                borrows = [node[2] for node in pair if node[2] is not None]
                value = sum((node[1] for node in pair[1:]), pair[0][1])
                if len(pair) == 2 and borrows:
                    value = value + borrows.pop()
                m.d.sync += total.eq(value)
                joined.append((lanes, total, _delay(m, borrows[0], 1, f"{name}_borrow")
                               if borrows else None))
            nodes, level = joined, level + 1
        return nodes[0]

    def _accumulate(self, m, p, t, chain, carry, controls):
        """PE ``p``'s accumulator over the SF input folds (in stage ``t``), deskewed result.

        ``chain`` is the root of the PE's adder tree, ``carry`` a bit to add with it (or
        ``None``); ``controls[k]`` the operation's control ``k`` cycles after the input buffer and
        ROM 0 are read.
        """
        depth, nf_count, acc_bits = self.tree_depth, self.nf, self.acc_bits
        ctrl = controls[depth + t + 2]
        bias = [int(self.bias[n * self.pe + p]) for n in range(nf_count)]
        if nf_count == 1:
            start = C(bias[0], signed(acc_bits))
        else:
            # A small ROM in logic, read one cycle ahead like a synchronous port.
            start = Signal(signed(acc_bits), name=f"bias_pe{p}", reset_less=True)
            table = Array(C(b, signed(acc_bits)) for b in bias)
            m.d.sync += start.eq(table[controls[depth + t + 1]["nf"]])
        accumulator = Signal(signed(acc_bits), name=f"acc_pe{p}", reset_less=True)
        result = Signal(signed(acc_bits), name=f"result_pe{p}", reset_less=True)
        first, last = ctrl.get("first", C(1)), ctrl.get("last", C(1))
        total = Mux(first, start, accumulator) + chain
        if carry is not None:
            total = total + carry
        with m.If(ctrl["valid"]):
            m.d.sync += accumulator.eq(total)
        with m.If(ctrl["valid"] & last):
            m.d.sync += result.eq(total)
        # Deskew: stage t's results hold for at least SF cycles and are sampled
        # len(stages) - 1 - t cycles after they appear (with the last stage's), so only the
        # part of that wait beyond SF - 1 needs registers.
        return _delay(m, result, max(0, len(self.stages) - t - self.sf), f"result_pe{p}")

    def elaborate(self, platform):
        m = Module()
        issue, sf, sf_last, nf, address = self._issue(m)
        x = self._input_slice(m, issue, sf, nf, again=self.multiplier != "constant")
        controls = self._controls(m, issue, sf, sf_last, nf)
        if self.multiplier == "constant":
            results = self._constant_sums(m, x, controls)
        else:
            results = self._systolic_stages(m, x, address, controls)
        self._output(m, results, controls)
        return m

    def _issue(self, m):
        """The issue stage: one operation ``(nf, sf)`` per cycle when allowed, a fold only
        started with a FIFO entry reserved for its result. Returns ``(issue, sf, sf_last, nf,
        address)``, ``address`` the operation's ROM word."""
        depth = self.fifo_depth
        issue = Signal()
        sf, sf_last = _counter(m, self.sf, "issue_sf", issue)
        nf, _ = _counter(m, self.nf, "issue_nf", issue & sf_last)
        address, _ = _counter(m, self.nf * self.sf, "issue_address", issue)
        reserved = Signal(range(depth + 1))  # FIFO entries owed to started folds
        fold_start = sf == 0
        # Depends on registers only, so ready never waits on valid or on a long path.
        room = ~fold_start | (reserved < depth)
        m.d.comb += [
            self.i.ready.eq((nf == 0) & room),
            issue.eq(Mux(nf == 0, self.i.valid & room, room)),
        ]
        pop = self.o.valid & self.o.ready
        m.d.sync += reserved.eq(reserved + (issue & fold_start) - pop)
        return issue, sf, sf_last, nf, address

    def _input_slice(self, m, issue, sf, nf, again=True):
        """The operation's input slice, one cycle after issue: fresh from ``i`` (``nf = 0``)
        or replayed from the input buffer; registered ``again`` the cycle after (entry 1 of
        :meth:`_controls`)."""
        # Flat storage viewed as lanes, not a Signal(layout): see
        # hw.toolchain.SCRIPT_AFTER_READ.
        vector = data.ArrayLayout(self.in_shape, self.simd)
        if self.nf == 1:
            x = Signal(vector.size, name="x", reset_less=True)
            m.d.sync += x.eq(self.i.payload)
        else:
            m.submodules.input_buffer = buffer = Memory(shape=vector.size, depth=self.sf,
                                                        init=[])
            write = buffer.write_port()
            # Transparent: the slice written at nf = 0 comes out the next cycle like a replay.
            read = buffer.read_port(transparent_for=(write,))
            m.d.comb += [
                write.addr.eq(sf),
                write.data.eq(self.i.payload),
                write.en.eq(issue & (nf == 0)),
                read.addr.eq(sf),
            ]
            x = read.data
        # Register block RAM outputs before they meet a multiplier: a block RAM's clock-to-
        # output delay plus a multiplier would set the clock (ECP5: 5.6 + 3.9 ns).
        return data.View(vector, _delay(m, x, 1 if again else 0, "x_q"))

    def _controls(self, m, issue, sf, sf_last, nf):
        """The control of each operation, delayed along the stages: entry ``k`` is ``k``
        cycles after the input buffer and ROM 0 are read (the registered slice is entry 1)."""
        valid = Signal(name="op_valid")
        m.d.sync += valid.eq(issue)
        control = {"valid": valid}
        if self.sf > 1:
            control["first"] = Signal(name="op_first", reset_less=True)
            control["last"] = Signal(name="op_last", reset_less=True)
            m.d.sync += [control["first"].eq(sf == 0), control["last"].eq(sf_last)]
        if self.nf > 1:
            control["nf"] = Signal(range(self.nf), name="op_nf", reset_less=True)
            m.d.sync += control["nf"].eq(nf)
        controls = [control]
        for k in range(1, self.tree_depth + len(self.stages) + 2):
            controls.append({key: _delay(m, value, 1, f"{key}{k - 1}", reset_less=key != "valid")
                             for key, value in controls[-1].items()})
        return controls

    def _systolic_stages(self, m, x, address, controls):
        """The stages: the input hops stage to stage, each PE sums its lanes in a tree and
        accumulates. Returns every PE's deskewed result, in PE order.

        The ROMs of stage ``t`` are read ``t`` cycles after ROM 0 (their address comes along
        the stages) and their words are registered like ``x``, so a stage's weights and
        inputs meet aligned: every lane of a PE multiplies in the same cycle, no operand skew.
        """
        x_lanes = [x[s] for s in range(self.simd)]
        words = rom_words(self._rom_matrix(), self.weight_bits, self.pe, self.simd)
        ram = self._weight_ram(m, address) if self.loaded else None
        rom_address = address
        results = []
        for t, members in enumerate(self.stages):
            if t:
                x_lanes = [_delay(m, lane, 1, f"x_pe{members[0]}_s{s}")
                           for s, lane in enumerate(x_lanes)]
                if ram is None:
                    rom_address = _delay(m, rom_address, 1, f"rom_address_pe{members[0]}")
            if ram is None:
                word = self._stage_weights(m, members, words, rom_address)
            else:
                # One RAM read for all PEs: stage t's words wait t cycles more instead of
                # being read t cycles later.
                width = self.simd * self.weight_bits
                word = {p: _delay(m, ram.data[p * width:(p + 1) * width], 1 + t,
                                  f"ram_q_pe{p}") for p in members}
            leaves = self._stage_products(m, members, x_lanes, word)
            for p in members:
                _, total, carry = self._adder_tree(m, p, leaves[p])
                results.append(self._accumulate(m, p, t, total, carry, controls))
        return results

    def _constant_sums(self, m, x, controls):
        """``"constant"``: each PE's sum of its weights' signed digits over the input slice
        (:func:`~hw.multiplier.constant_sum`, ``tree_depth + 1`` registered levels and one
        more, so that its root arrives when another kind's adder tree's would), then its
        accumulator. Returns every PE's result, in PE order."""
        lanes = [x[s] for s in range(self.simd)]
        depth = constant_adder_depth(self.simd, self.weight_bits)
        results = []
        for p in range(self.pe):
            total = constant_sum(m, lanes, self.weights[:, p].tolist(), depth=depth,
                                 name=f"sum_pe{p}")
            # The input is entry 0 (not registered again: it meets no multiplier), so the sum
            # waits a cycle, in a register as wide as the sum rather than the input slice.
            total = _delay(m, total, 1, f"sum_pe{p}")
            results.append(self._accumulate(m, p, 0, total, None, controls))
        return results

    def _weight_ram(self, m, address):
        """A ``loaded`` array's :class:`~hw.weight_ram.WeightRAM`, read at ``address``."""
        ram = m.submodules.weights = WeightRAM(self._ram_words(),
                                               width=self.pe * self.simd * self.weight_bits,
                                               preload=self.preload)
        m.d.comb += [ram.addr.eq(address), ram.en.eq(1)]
        wiring.connect(m, wiring.flipped(self.load), ram.load)
        return ram

    def _stage_weights(self, m, members, words, rom_address):
        """``{pe: registered ROM word}`` of one stage's PEs at ``rom_address``."""
        wbits, word = self.weight_bits, {}
        for p in members:
            if len(words[p]) == 1:
                # One word (NF = SF = 1): the weights are constants, and Yosys reduces
                # each LUT-built product to the shifts and adds of its weight's digits.
                # Hard lanes keep a register operand: Yosys maps a multiplication by a
                # constant to hard multipliers unpredictably (31 for 25 packed lanes).
                constant = C(words[p][0], self.simd * wbits)
                hard = 0 if self.multiplier == "lut" else self.hard_lanes * wbits
                word[p] = Cat(_delay(m, constant[:hard], 1, f"rom_q_pe{p}"),
                              constant[hard:])
                continue
            rom = m.submodules[f"rom{p}"] = WeightROM(words[p], width=self.simd * wbits,
                                                       style=self.rom_style)
            m.d.comb += [rom.addr.eq(rom_address), rom.en.eq(1)]
            word[p] = _delay(m, rom.data, 1, f"rom_q_pe{p}")
        return word

    def _stage_products(self, m, members, x_lanes, word):
        """``{pe: [(1, registered product, registered borrow or None), ...]}``: the leaves
        of each PE's adder tree, one per SIMD lane."""
        wbits = self.weight_bits
        leaves = {p: [] for p in members}
        for s in range(self.simd):
            codes = {p: word[p][s * wbits:(s + 1) * wbits] for p in members}
            products, borrows = self._products(m, x_lanes[s], codes, s)
            # A register right behind each multiplier: on ECP5 nextpnr places the
            # MULT18X18Ds far from their operand and adder cells, and a DSP, a route there
            # and a route back plus the adder in one cycle held LeNet-5 below 68 MHz.
            keep = self._keep_products and s < self.hard_lanes
            for p in members:
                borrow = borrows.get(p)
                leaves[p].append((1, _delay(m, products[p], 1, f"product_q_pe{p}_s{s}",
                                            attrs={"keep": 1} if keep else None),
                                  None if borrow is None else
                                  _delay(m, borrow, 1, f"borrow_q_pe{p}_s{s}")))
        return leaves

    def _output(self, m, results, controls):
        """The output FIFO: the credits of :meth:`_issue` guarantee it is never written when
        full."""
        done = Signal(name="result_done")
        ctrl = controls[self.tree_depth + len(self.stages) + 1]
        m.d.sync += done.eq(ctrl["valid"] & ctrl.get("last", C(1)))
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.pe * self.acc_bits,
                                                    depth=self.fifo_depth)
        m.d.comb += [
            fifo.w_en.eq(done),
            fifo.w_data.eq(Cat(*results)),
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o.ready),
        ]
