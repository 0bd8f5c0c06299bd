"""A read-only weight memory with one synchronous read port (maps to FPGA block RAM)."""

import operator

from amaranth.hdl import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["BLOCK_MIN_DEPTH", "STYLES", "WeightROM"]

STYLES = ("auto", "block", "logic")
#: ``style="auto"`` puts ROMs of at least this many words in block RAM. Yosys alone keeps
#: ROMs of a few kilobits in LUTs, where a 64-word ROM costs about five LUT4s per bit: on an
#: iCE40 UP5K (5280 LUTs, 30 block RAMs) a block RAM is the cheaper place for it.
BLOCK_MIN_DEPTH = 64


class WeightROM(wiring.Component):
    """A ROM of ``len(words)`` words of ``width`` bits with a synchronous read port.

    The memory is built in :meth:`elaborate` as :class:`amaranth.lib.memory.Memory` with an
    initial value and no write port, so Yosys maps it to ``SB_RAM40_4K`` (iCE40) or
    ``DP16KD`` (ECP5) block RAM when it is big enough.

    Parameters
    ----------
    words : sequence of int
        The contents; every word in ``0 .. 2**width - 1``.
    width : int
        Word width in bits.
    style : {"auto", "block", "logic"}
        Where the ROM goes: ``"block"`` forces block RAM (Yosys attribute
        ``rom_style = "block"``), ``"logic"`` forces LUTs, ``"auto"`` (default) forces block
        RAM from :data:`BLOCK_MIN_DEPTH` words up and leaves smaller ROMs to Yosys (a LUT ROM
        of fewer words costs only a few LUTs per bit, cheaper than a whole block RAM).

    Attributes
    ----------
    addr : Signal(range(depth)), in
        Read address.
    en : Signal(1), in
        Read enable: ``data`` takes the word at ``addr`` on the next cycle when high, and
        holds its value when low.
    data : Signal(width), out
        The word read, valid the cycle after ``addr``/``en``.

    Raises
    ------
    TypeError
        If ``width`` is not an int or a word is not an int.
    ValueError
        If ``words`` is empty, ``width`` is not positive, a word does not fit ``width``, or
        ``style`` is unknown.
    """

    def __init__(self, words, *, width, style="auto"):
        if not isinstance(width, int) or isinstance(width, bool):
            raise TypeError(f"ROM width must be an int, not {width!r}")
        if width < 1:
            raise ValueError(f"ROM width must be at least 1, not {width}")
        words = list(words)
        if not words:
            raise ValueError("ROM needs at least one word")
        for index, word in enumerate(words):
            try:
                # numpy integers are accepted: they convert to int losslessly.
                word = operator.index(word)
            except TypeError:
                raise TypeError(f"ROM word {index} is {word!r}, not an int") from None
            if not 0 <= word < 1 << width:
                raise ValueError(f"ROM word {index} = {word} does not fit {width} unsigned bits")
        if style not in STYLES:
            raise ValueError(f"ROM style must be one of {', '.join(map(repr, STYLES))}, not "
                             f"{style!r}")
        self._words = tuple(operator.index(word) for word in words)
        self._width = width
        self._style = style
        super().__init__({
            "addr": In(range(len(self._words))),
            "en": In(1),
            "data": Out(width),
        })

    @property
    def words(self):
        """The contents, a tuple of int."""
        return self._words

    @property
    def width(self):
        """Word width in bits."""
        return self._width

    @property
    def depth(self):
        """Number of words."""
        return len(self._words)

    @property
    def style(self):
        """The requested style, ``"auto"``, ``"block"`` or ``"logic"``."""
        return self._style

    @property
    def attrs(self):
        """Yosys attributes given to the memory (``rom_style``), resolved from :attr:`style`."""
        style = self._style
        if style == "auto":
            style = "block" if self.depth >= BLOCK_MIN_DEPTH else None
        return {} if style is None else {"rom_style": style}

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = memory = Memory(shape=unsigned(self._width), depth=self.depth,
                                              init=self._words, attrs=self.attrs)
        port = memory.read_port()
        m.d.comb += [
            port.addr.eq(self.addr),
            port.en.eq(self.en),
            self.data.eq(port.data),
        ]
        return m
