"""Requantization of accumulators to activations: rounding shift, then saturation."""


import numpy as np
from amaranth.hdl import C, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sw.qmodel import value_range

from .params import check_int
from .streams import lanes_signature, may_load

__all__ = ["Requantize"]


class Requantize(wiring.Component):
    """Per-channel rounding shift and clamp of ``docs/numerics.md``, ``pe`` lanes at a time.

    Input transfer ``k`` (counted modulo ``NF = channels / pe``) holds channels
    ``(k mod NF) * pe + p`` in lane ``p``, the order :class:`~hw.mac_array.MACArray` produces.
    Each lane computes :func:`sw.golden.requantize` exactly: ``(acc + 2**(s-1)) >> s`` for a
    shift ``s > 0`` (round half up), ``acc << -s`` for ``s <= 0``, then the clamp to the
    output range (to ``0 .. 2**out_bits - 1`` when unsigned, which is ReLU).

    One registered pipeline stage, one transfer per cycle. Where a lane's channels have
    different shifts, every distinct shift is computed (constant shifts are only wiring and a
    rounding adder) and the fold counter selects the result; equal shifts need no selection.

    Parameters
    ----------
    shift : array of int, shape (channels,)
        Right shift per output channel; zero or negative shifts left.
    pe : int
        Lanes per transfer; must divide ``channels``.
    acc_bits : int
        Width of the signed accumulators on ``i``.
    out_bits : int
        Width of the outputs on ``o``.
    out_signed : bool
        Signed outputs (no ReLU); unsigned outputs clamp at 0 (ReLU).

    Attributes
    ----------
    i : stream.Interface, in
        ``ArrayLayout(signed(acc_bits), pe)``.
    o : stream.Interface, out
        ``ArrayLayout(signed(out_bits) or unsigned(out_bits), pe)``.

    Raises
    ------
    TypeError
        If a parameter has the wrong type.
    ValueError
        If a parameter is out of range or ``pe`` does not divide the channels.
    """

    def __init__(self, shift, *, pe, acc_bits, out_bits, out_signed):
        shift = np.asarray(shift)
        if shift.dtype.kind not in "iu":
            raise TypeError(f"shift must be integers, not {shift.dtype}")
        if shift.ndim != 1 or shift.size == 0:
            raise ValueError(f"shift must be a non-empty (channels,) vector, not shape "
                             f"{shift.shape}")
        pe = check_int("pe", pe)
        acc_bits = check_int("acc_bits", acc_bits)
        out_bits = check_int("out_bits", out_bits)
        if not isinstance(out_signed, bool | np.bool_):
            raise TypeError(f"out_signed must be a bool, not {out_signed!r}")
        out_signed = bool(out_signed)
        if len(shift) % pe:
            raise ValueError(f"pe {pe} does not divide the {len(shift)} channels")
        self._shift = tuple(int(s) for s in shift)
        self._pe, self._acc_bits, self._out_bits, self._out_signed = (pe, acc_bits, out_bits,
                                                                       out_signed)
        out_shape = signed(out_bits) if out_signed else unsigned(out_bits)
        super().__init__({
            "i": In(lanes_signature(signed(acc_bits), pe)),
            "o": Out(lanes_signature(out_shape, pe)),
        })

    @property
    def shift(self):
        """The per-channel shifts, a tuple of int."""
        return self._shift

    @property
    def channels(self):
        return len(self._shift)

    @property
    def pe(self):
        return self._pe

    @property
    def nf(self):
        """Transfers per output vector (``channels / pe``)."""
        return len(self._shift) // self._pe

    @property
    def acc_bits(self):
        return self._acc_bits

    @property
    def out_bits(self):
        return self._out_bits

    @property
    def out_signed(self):
        return self._out_signed

    @property
    def latency(self):
        """Cycles from an input transfer to its output being valid (one register)."""
        return 1

    def _lane(self, acc, shift):
        """``acc`` requantized by a constant ``shift``, with the clamps it can need."""
        lo, hi = value_range(self._acc_bits, True)
        if shift > 0:
            half = 1 << (shift - 1)
            value = (acc + half) >> shift
            lo, hi = (lo + half) >> shift, (hi + half) >> shift
        else:
            value = acc << -shift
            lo, hi = lo << -shift, hi << -shift
        out_lo, out_hi = value_range(self._out_bits, self._out_signed)
        if lo == hi:
            # Shifted past every accumulator bit: a constant.
            return C(min(max(lo, out_lo), out_hi), signed(self._out_bits + 1))
        # The bounds are powers of two, so the comparisons are bit tests (no carry chains),
        # and only those the shifted range can fail are built.
        bits, sign = self._out_bits, value[-1]
        if self._out_signed:
            top = value[bits - 1:]  # in range iff these bits are all equal
            over = ~sign & top.any() if hi > out_hi else C(0)
            under = sign & ~top.all() if lo < out_lo else C(0)
        else:
            over = ~sign & value[bits:].any() if hi > out_hi else C(0)
            under = sign if lo < out_lo else C(0)
        return Mux(over, out_hi, Mux(under, out_lo, value[:bits]))

    def elaborate(self, platform):
        m = Module()
        pe, nf_count = self._pe, self.nf
        # No zero-width counter when there is one fold: the constant selects case 0.
        fold = Signal(range(nf_count)) if nf_count > 1 else C(0)
        out_shape = signed(self._out_bits) if self._out_signed else unsigned(self._out_bits)

        lanes = []
        for p in range(pe):
            shifts = [self._shift[k * pe + p] for k in range(nf_count)]
            acc = self.i.payload[p]
            if len(set(shifts)) == 1:
                lanes.append(self._lane(acc, shifts[0]))
                continue
            # A small table indexed by the fold counter, in logic: each case is one
            # constant-shift datapath.
            value = Signal(out_shape, name=f"lane{p}")
            with m.Switch(fold):
                for shift in sorted(set(shifts)):
                    with m.Case(*[k for k in range(nf_count) if shifts[k] == shift]):
                        m.d.comb += value.eq(self._lane(acc, shift))
            lanes.append(value)

        # The stream pipeline stage: take a word when the output register is free or leaving.
        m.d.comb += self.i.ready.eq(may_load(self.o.valid, self.o.ready))
        with m.If(self.i.valid & may_load(self.o.valid, self.o.ready)):
            m.d.sync += self.o.valid.eq(1)
            if nf_count > 1:
                m.d.sync += fold.eq(Mux(fold == nf_count - 1, 0, fold + 1))
            # The clamps make every lane fit out_bits, so the assignment only drops sign bits.
            m.d.sync += [self.o.payload[p].eq(lane) for p, lane in enumerate(lanes)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
