"""A weight memory the bitstream does not hold: written once at start-up, then read like a ROM.

The iCE40 UP5K's four SPRAMs (``SB_SPRAM256KA``, 16 K words of 16 bits each) hold four times
the weights of its block RAM, but a bitstream cannot initialize them; :class:`WeightRAM`
puts a layer's weights there and takes them through its ``load`` stream, 16 bits a transfer,
after configuration (``docs/protocol.md``, load request).
"""

import math

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["BLOCK_DEPTH", "BLOCK_WIDTH", "LOAD_LAYOUT", "WeightRAM", "load_chunks"]

#: Words and bits of one ``SB_SPRAM256KA``.
BLOCK_DEPTH, BLOCK_WIDTH = 16384, 16
#: One transfer of a load: 16 bits of the load image, and whether they are its first (which
#: restarts the write address, so a load broken off part-way leaves nothing behind for the
#: next one).
LOAD_LAYOUT = data.StructLayout({"data": unsigned(BLOCK_WIDTH), "first": unsigned(1)})


def load_chunks(words, width):
    """The 16-bit transfers that load ``words`` of ``width`` bits: word after word, each in
    ``ceil(width / 16)`` pieces, the lowest bits first."""
    blocks = math.ceil(width / BLOCK_WIDTH)
    mask = (1 << BLOCK_WIDTH) - 1
    return [word >> (BLOCK_WIDTH * block) & mask for word in words for block in range(blocks)]


class WeightRAM(wiring.Component):
    """``len(words)`` words of ``width`` bits in single-port RAM blocks of 16 x 16 K bits,
    written through ``load`` and read through a synchronous port like
    :class:`~hw.weight_rom.WeightROM`'s.

    On an iCE40 platform each 16-bit slice of the word is an ``SB_SPRAM256KA``; elsewhere (and
    in simulation) an :class:`~amaranth.lib.memory.Memory` of the same behaviour. Reads and
    writes share the one port: a read in a cycle that takes a load transfer is not made (its
    ``data`` holds), which costs nothing as a core computes nothing while it is loaded.

    Parameters
    ----------
    words : sequence of int
        The weights the load image brings; with ``preload`` the memory starts with them (for
        simulation: the hardware's RAM starts undefined).
    width : int
        Word width in bits.
    preload : bool
        Start with ``words`` in the memory (never on an iCE40, whose SPRAM cannot).

    Attributes
    ----------
    addr, en, data :
        The read port, as :class:`~hw.weight_rom.WeightROM`'s.
    load : In(stream.Signature(LOAD_LAYOUT))
        The load image's 16-bit pieces (:func:`load_chunks`), always taken; the piece marked
        ``first`` goes to the first word's lowest bits.
    """

    def __init__(self, words, *, width, preload=False):
        self.words = tuple(int(word) for word in words)
        if not self.words:
            raise ValueError("WeightRAM needs at least one word")
        if len(self.words) > BLOCK_DEPTH:
            raise ValueError(f"WeightRAM holds at most {BLOCK_DEPTH} words, not "
                             f"{len(self.words)}")
        if any(not 0 <= word < 1 << width for word in self.words):
            raise ValueError(f"a word does not fit {width} unsigned bits")
        self.width, self.depth, self.preload = width, len(self.words), bool(preload)
        #: RAM blocks side by side, one per 16 bits of the word.
        self.blocks = math.ceil(width / BLOCK_WIDTH)
        super().__init__({
            "addr": In(range(self.depth)),
            "en": In(1),
            "data": Out(width),
            "load": In(stream.Signature(LOAD_LAYOUT)),
        })

    def elaborate(self, platform):
        m = Module()
        write_addr, block = self._write_counters(m)
        writing = self.load.valid
        address = Signal(range(BLOCK_DEPTH), name="ram_address")
        m.d.comb += address.eq(Mux(writing, write_addr, self.addr))
        slices = []
        spram = getattr(platform, "family", "").lower() == "ice40" and not self.preload
        for b in range(self.blocks):
            out = Signal(BLOCK_WIDTH, name=f"data_{b}")
            write = writing & (block == b)
            if spram:
                self._spram(m, b, address, write, self.en & ~writing, out)
            else:
                self._memory(m, b, address, write, self.en & ~writing, out)
            slices.append(out)
        m.d.comb += self.data.eq(Cat(*slices)[:self.width])
        return m

    def _write_counters(self, m):
        """The word and the block the load transfer in hand goes to."""
        word = Signal(range(self.depth), name="write_word")
        block = Signal(range(self.blocks), name="write_block")
        m.d.comb += self.load.ready.eq(1)
        here_word = Mux(self.load.payload.first, 0, word)
        here_block = Mux(self.load.payload.first, 0, block)
        with m.If(self.load.valid):
            with m.If(here_block == self.blocks - 1):
                m.d.sync += [block.eq(0),
                             word.eq(Mux(here_word == self.depth - 1, 0, here_word + 1))]
            with m.Else():
                m.d.sync += [block.eq(here_block + 1), word.eq(here_word)]
        written = Signal(range(self.depth), name="write_address")
        at_block = Signal(range(self.blocks), name="write_at_block")
        m.d.comb += [written.eq(here_word), at_block.eq(here_block)]
        return written, at_block

    def _memory(self, m, b, address, write, read, out):
        mask = (1 << BLOCK_WIDTH) - 1
        init = ([word >> (BLOCK_WIDTH * b) & mask for word in self.words] if self.preload
                else [])
        memory = m.submodules[f"block{b}"] = Memory(shape=unsigned(BLOCK_WIDTH),
                                                    depth=self.depth, init=init)
        write_port = memory.write_port()
        read_port = memory.read_port()
        m.d.comb += [
            write_port.addr.eq(address), write_port.data.eq(self.load.payload.data),
            write_port.en.eq(write),
            read_port.addr.eq(address), read_port.en.eq(read), out.eq(read_port.data),
        ]

    def _spram(self, m, b, address, write, read, out):
        m.submodules[f"block{b}"] = Instance(
            "SB_SPRAM256KA",
            i_ADDRESS=address, i_DATAIN=self.load.payload.data, i_MASKWREN=Const(0b1111, 4),
            i_WREN=write, i_CHIPSELECT=write | read, i_CLOCK=ClockSignal(),
            i_STANDBY=Const(0), i_SLEEP=Const(0), i_POWEROFF=Const(1), o_DATAOUT=out)
