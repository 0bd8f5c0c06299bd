"""Label selection: the index of the largest logit, passed on together with the logits."""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int
from .streams import lanes_signature, may_load

__all__ = ["Argmax"]


class Argmax(wiring.Component):
    """Streaming argmax over each image's logits; the lowest index wins a tie.

    Parameters
    ----------
    classes : int
        Logits per image.
    shape : shape-like
        Shape of one logit (``signed(n)``; ``unsigned(n)`` works too).
    lanes : int
        Logits per input transfer; must divide ``classes``.

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(shape, lanes)))
        ``classes // lanes`` transfers per image, in class order (lane 0 lowest).
    o : Out(stream.Signature(StructLayout({"label": unsigned(label_bits),
        "logits": ArrayLayout(shape, classes)})))
        One transfer per image: ``label`` is ``sw.golden.argmax`` of the logits.

    Notes
    -----
    Every comparison feeds a register: a transfer's lanes are reduced pairwise in
    ``ceil(log2(lanes))`` registered stages (the lower index is kept unless the higher one is
    strictly larger), then one last stage compares the transfer's winner with the image's
    best so far (strictly larger replaces it, so earlier classes win ties). The whole pipeline
    advances together whenever ``o`` is empty or being read, so ``i`` is accepted every cycle
    while ``o.ready`` is high. The label of an image appears on ``o``
    ``ceil(log2(lanes)) + 1`` cycles after its last input transfer.
    """

    def __init__(self, *, classes, shape, lanes):
        self._classes = check_int("classes", classes)
        self._lanes = check_int("lanes", lanes)
        try:
            self._shape = Shape.cast(shape)
        except TypeError as error:
            raise TypeError(f"shape must be an integer shape such as signed(16), "
                            f"not {shape!r}") from error
        if self._shape.width < 1:
            raise ValueError(f"shape must be at least 1 bit wide, not {shape!r}")
        if classes % lanes:
            raise ValueError(f"lanes ({lanes}) must divide classes ({classes})")
        self._label_bits = max(1, (classes - 1).bit_length())
        super().__init__({
            "i": In(lanes_signature(self._shape, lanes)),
            "o": Out(stream.Signature(self.output_layout)),
        })

    @property
    def classes(self):
        """Logits per image."""
        return self._classes

    @property
    def shape(self):
        """Shape of one logit."""
        return self._shape

    @property
    def lanes(self):
        """Logits per input transfer."""
        return self._lanes

    @property
    def label_bits(self):
        """Width of the ``label`` field."""
        return self._label_bits

    @property
    def output_layout(self):
        """Layout of an output payload: ``label`` and ``logits``."""
        return data.StructLayout({
            "label": self._label_bits,
            "logits": data.ArrayLayout(self._shape, self._classes),
        })

    @property
    def latency(self):
        """Cycles from an image's last input transfer to its output (with ``o`` ready)."""
        return (self._lanes - 1).bit_length() + 1

    @property
    def words_per_image(self):
        """Input transfers per image."""
        return self._classes // self._lanes

    def elaborate(self, platform):
        m = Module()
        lanes, w = self._lanes, self._shape.width
        words = self.words_per_image
        lane_idx = range(lanes)

        # The pipeline moves as a whole whenever the output register can take a result.
        advance = Signal()
        m.d.comb += [advance.eq(may_load(self.o.valid, self.o.ready)), self.i.ready.eq(advance)]

        # Stage contents: valid, the transfer itself (for the logits) and (value, lane) pairs.
        valid = self.i.valid
        word = Value.cast(self.i.payload)
        pairs = [(self.i.payload[k], k) for k in range(lanes)]
        level = 0
        while len(pairs) > 1:
            next_valid = Signal(name=f"valid_{level}")
            next_word = Signal(lanes * w, name=f"word_{level}")
            next_pairs = []
            for n in range(0, len(pairs), 2):
                value = Signal(self._shape, name=f"value_{level}_{n // 2}")
                index = Signal(lane_idx, name=f"index_{level}_{n // 2}")
                if n + 1 < len(pairs):
                    (a, ia), (b, ib) = pairs[n], pairs[n + 1]
                    take_b = b > a  # strictly larger: the lower index wins a tie
                    with m.If(advance):
                        m.d.sync += [value.eq(Mux(take_b, b, a)), index.eq(Mux(take_b, ib, ia))]
                else:
                    a, ia = pairs[n]
                    with m.If(advance):
                        m.d.sync += [value.eq(a), index.eq(ia)]
                next_pairs.append((value, index))
            with m.If(advance):
                m.d.sync += [next_valid.eq(valid), next_word.eq(word)]
            valid, word, pairs, level = next_valid, next_word, next_pairs, level + 1
        (cand, cand_lane), = pairs

        # Final stage: compare the transfer's winner with the image's best so far.
        count = Signal(range(words))
        base = Signal(range(self._classes))
        best = Signal(self._shape)
        best_index = Signal(self._label_bits)
        collected = Signal((words - 1) * lanes * w)
        first, last, wins, index = Signal(), Signal(), Signal(), Signal(self._label_bits)
        m.d.comb += [
            first.eq(count == 0),
            last.eq(count == words - 1),
            wins.eq(first | (cand > best)),
            index.eq(base + cand_lane),
        ]
        with m.If(advance & valid):
            m.d.sync += [
                best.eq(Mux(wins, cand, best)),
                best_index.eq(Mux(wins, index, best_index)),
            ]
            if words > 1:
                # Shift towards the low bits, so class 0 ends up lowest.
                m.d.sync += collected.eq(Cat(collected[lanes * w:], word))
            with m.If(last):
                m.d.sync += [count.eq(0), base.eq(0)]
            with m.Else():
                m.d.sync += [count.eq(count + 1), base.eq(base + lanes)]

        with m.If(advance & valid & last):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.payload.label.eq(Mux(wins, index, best_index)),
                Value.cast(self.o.payload.logits).eq(Cat(collected, word)),
            ]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
