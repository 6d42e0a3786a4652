"""Nearest-neighbour upsampling by an integer factor (``nn.Upsample(mode="nearest")``)."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth import signed as signed_shape  # `signed` is a constructor argument below
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.memory_style import check_ram_style, memory_attrs
from hw.mvau import lut_multiplier

__all__ = ["Upsample"]


class Upsample(wiring.Component):
    """Nearest upsampling: ``out[y, x] = in[y // f, x // f]`` (``hw.golden.upsample_nearest``).

    Parameters:
        factor: f >= 1.
        ifm_dim: ``(H, W)`` of the input.
        channels: C; ``C % lanes == 0``.
        lanes: PE of both streams.
        bits, signed: element type.
        ram_style: FINN's ``ram_style`` of the row buffer (``"auto"``, ``"block"``,
            ``"distributed"``, ``"ultra"``), written as Verilog ``ram_style`` attribute on it
            (:mod:`hw.memory_style`); ``"auto"`` (default) adds none. Another value raises
            ``ValueError``.

    Streams: ``i``: ``ArrayLayout(type, PE)`` frames ``[H, W, C]``; ``o``: frames
    ``[H*f, W*f, C]``, both NHWC with ``C/PE`` beats per pixel.

    Buffer: an ``amaranth.lib.memory.Memory`` of two input rows (``2 * W * C/PE`` words of
    ``PE*bits`` bits), ping-pong: the writer fills one row slot while the reader sends the
    other ``f`` times (each pixel repeated ``f`` times along the row). The writer starts a row
    only into a free slot; the reader starts a row once it is complete and frees it after
    its last beat, so frames follow each other with no gap. The synchronous read port is the
    output register (its enable is low while the output is stalled).

    Cycles (:meth:`expected_cycles`): the output is the bottleneck (``f*f`` output beats per
    input beat), so ``H*f * W*f * C/PE`` (the contract's formula) plus the fill latency
    ``W * C/PE + 1`` (first input row, then the read register).
    """

    #: input rows the buffer holds (ping-pong: one written while the other is read ``f`` times)
    ROW_SLOTS = 2

    @staticmethod
    def buffer_memory(*, ifm_dim, channels: int, lanes: int, bits: int = 8) -> tuple[int, int]:
        """``(depth, word_bits)`` of the row-buffer ``Memory`` this component builds for these
        constructor arguments: ``ROW_SLOTS * W * C/lanes`` words (two input rows) of
        ``lanes*bits`` bits; the compiler's estimate reads it (:func:`hw.registry.buffer_memory`).
        No validation (the constructor's)."""
        return Upsample.ROW_SLOTS * int(ifm_dim[1]) * (channels // lanes), lanes * bits

    def __init__(self, *, factor: int, ifm_dim, channels: int, lanes: int, bits: int = 8,
                 signed: bool = False, ram_style: str = "auto"):
        self.ram_style = check_ram_style("Upsample", ram_style)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"Upsample: factor must be an integer >= 1, got {factor}")
        h, w = (int(d) for d in ifm_dim)
        if h < 1 or w < 1:
            raise ValueError(f"Upsample: ifm_dim must be positive, got {ifm_dim}")
        if lanes < 1 or channels % lanes:
            raise ValueError(f"Upsample: channels {channels} not divisible by lanes (PE) {lanes}")
        if bits < 1:
            raise ValueError(f"Upsample: bits must be >= 1, got {bits}")
        self.factor, self.height, self.width = int(factor), h, w
        self.channels, self.lanes, self.bits, self.is_signed = channels, lanes, bits, signed
        self.folds = channels // lanes
        self.row_words = w * self.folds
        self.buffer_words, self.word_bits = self.buffer_memory(
            ifm_dim=(h, w), channels=channels, lanes=lanes, bits=bits)
        self.frame_in_beats = h * self.row_words
        self.frame_out_beats = h * w * self.factor ** 2 * self.folds
        shape = signed_shape(bits) if signed else unsigned(bits)
        lay = data.ArrayLayout(shape, lanes)
        super().__init__({"i": In(stream.Signature(lay)), "o": Out(stream.Signature(lay))})

    def expected_cycles(self) -> int:
        """Stall-free cycles for one frame, first input beat to last output beat inclusive."""
        return self.row_words + 1 + self.frame_out_beats

    def elaborate(self, platform):
        m = Module()
        W, F, f = self.width, self.folds, self.factor
        RW = self.row_words
        m.submodules.mem = mem = Memory(shape=unsigned(self.word_bits),
                                        depth=self.buffer_words, init=[],
                                        attrs=memory_attrs(self.ram_style, read_only=False))
        wp = mem.write_port()
        rp = mem.read_port(domain="sync")

        filled = Signal(range(3))  # complete rows held (0..2)
        free = Signal()  # the reader releases its row this cycle

        # ---- writer: row slot after row slot ---------------------------------------------
        w_addr = Signal(range(self.buffer_words))
        w_col = Signal(range(RW))
        m.d.comb += self.i.ready.eq((w_col != 0) | (filled < 2))
        w_fire = self.i.valid & self.i.ready
        w_row_done = w_fire & (w_col == RW - 1)
        m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(self.i.payload.as_value()),
                     wp.en.eq(w_fire)]
        with m.If(w_fire):
            m.d.sync += [
                w_addr.eq(Mux(w_addr == self.buffer_words - 1, 0, w_addr + 1)),
                w_col.eq(Mux(w_col == RW - 1, 0, w_col + 1)),
            ]

        # ---- reader: f output rows per input row, each pixel f times --------------------
        slot = Signal()  # row slot being read
        rep_y = Signal(range(f))
        rx = Signal(range(W))
        rep_x = Signal(range(f))
        fold = Signal(range(F))
        active = Signal()
        o_valid = Signal()
        advance = ~o_valid | self.o.ready
        issue = active & advance
        have = filled + w_row_done  # rows complete by the end of this cycle

        last_fold = fold == F - 1
        last_rep_x = rep_x == f - 1
        last_x = rx == W - 1
        last_rep_y = rep_y == f - 1
        row_last = last_fold & last_rep_x & last_x & last_rep_y
        with m.If(issue):
            m.d.sync += fold.eq(Mux(last_fold, 0, fold + 1))
            with m.If(last_fold):
                m.d.sync += rep_x.eq(Mux(last_rep_x, 0, rep_x + 1))
                with m.If(last_rep_x):
                    m.d.sync += rx.eq(Mux(last_x, 0, rx + 1))
                    with m.If(last_x):
                        m.d.sync += rep_y.eq(Mux(last_rep_y, 0, rep_y + 1))
        with m.If(issue & row_last):
            # done with this input row: free its slot; go on at once if the next is there
            m.d.comb += free.eq(1)
            m.d.sync += slot.eq(~slot)
            with m.If(have < 2):
                m.d.sync += active.eq(0)
        with m.Elif(~active & (have >= 1)):
            m.d.sync += active.eq(1)
        m.d.sync += filled.eq(filled + w_row_done - free)

        m.d.comb += [
            rp.en.eq(advance),
            # constant multiply in LUTs (hw.mvau.lut_multiplier: not a DSP48)
            rp.addr.eq(Mux(slot, RW, 0) + lut_multiplier(m, rx * F, range(RW),
                                                          "col_base") + fold),
            self.o.valid.eq(o_valid),
            self.o.payload.eq(rp.data),
        ]
        with m.If(advance):
            m.d.sync += o_valid.eq(issue)
        return m
