"""Stream plumbing: FINN's DuplicateStreams and StreamingDataWidthConverter."""

from __future__ import annotations

from amaranth import Cat, Module, Signal, unsigned
from amaranth import signed as signed_shape  # `signed` is a constructor argument below
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamDuplicator", "StreamWidthConverter"]


class StreamDuplicator(wiring.Component):
    """FINN's DuplicateStreams: every input beat is delivered once on ``o0`` and once on ``o1``.

    Ports: ``i`` (``In(stream.Signature(payload_shape))``), ``o0``, ``o1`` (``Out``, same payload).

    The two outputs need not be ready in the same cycle: a ``taken`` flag per output records
    that it already took the current beat, and the input beat is retired in the cycle the
    last of the two takes it. No storage: ``o*.valid`` and ``o*.payload`` follow ``i``
    combinationally (and hold, because ``i`` holds until it is accepted); ``i.ready`` depends on
    ``o0.ready``/``o1.ready`` and the flags, never on ``i.valid``.

    Cycles (:meth:`expected_cycles`): one beat per cycle, no latency.
    """

    def __init__(self, payload_shape):
        self.payload_shape = payload_shape
        super().__init__({
            "i": In(stream.Signature(payload_shape)),
            "o0": Out(stream.Signature(payload_shape)),
            "o1": Out(stream.Signature(payload_shape)),
        })

    def expected_cycles(self, beats: int) -> int:
        """Cycles from the first input beat accepted to the last output beat, no stalls."""
        return beats

    def elaborate(self, platform):
        m = Module()
        taken0 = Signal()  # o0 already took the current input beat
        taken1 = Signal()
        m.d.comb += [
            self.o0.valid.eq(self.i.valid & ~taken0),
            self.o1.valid.eq(self.i.valid & ~taken1),
            self.o0.payload.eq(self.i.payload),
            self.o1.payload.eq(self.i.payload),
            self.i.ready.eq((taken0 | self.o0.ready) & (taken1 | self.o1.ready)),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [taken0.eq(0), taken1.eq(0)]
        with m.Else():
            with m.If(self.o0.valid & self.o0.ready):
                m.d.sync += taken0.eq(1)
            with m.If(self.o1.valid & self.o1.ready):
                m.d.sync += taken1.eq(1)
        return m


class StreamWidthConverter(wiring.Component):
    """FINN's StreamingDataWidthConverter between lane counts; the flat value order is kept.

    Ports: ``i``: ``In(stream.Signature(ArrayLayout(unsigned|signed(bits), in_lanes)))``;
    ``o``: ``Out(... out_lanes)``. One of ``in_lanes``/``out_lanes`` divides the other; with
    ``k`` the ratio, value ``j`` of the stream is lane ``j % lanes`` of beat ``j // lanes`` on
    both sides (lane 0 first).

    * ``in_lanes == out_lanes``: a wire (no register; its Verilog then has no ``clk``/``rst``).
    * down (``in_lanes = k*out_lanes``): the input beat is held in a shift register and sent as
      ``k`` output beats, lowest lanes first; the next input is taken in the cycle the last
      part leaves.
    * up (``out_lanes = k*in_lanes``): ``k-1`` beats are gathered in a shift register, the
      ``k``-th completes the output register; input is taken while the output register is
      free or leaving.

    Cycles (:meth:`expected_cycles`, no stalls): ``max(in_beats, out_beats) + 1`` (one register
    stage), ``in_beats`` for the wire.
    """

    def __init__(self, *, in_lanes: int, out_lanes: int, bits: int, signed: bool = False):
        if in_lanes < 1 or out_lanes < 1 or bits < 1:
            raise ValueError(f"StreamWidthConverter: lanes and bits must be >= 1, got "
                             f"in_lanes={in_lanes} out_lanes={out_lanes} bits={bits}")
        if in_lanes % out_lanes and out_lanes % in_lanes:
            raise ValueError(f"StreamWidthConverter: in_lanes {in_lanes} and out_lanes "
                             f"{out_lanes}: one must divide the other")
        self.in_lanes, self.out_lanes, self.bits, self.is_signed = in_lanes, out_lanes, bits, signed
        elem = signed_shape(bits) if signed else unsigned(bits)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(elem, in_lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(elem, out_lanes))),
        })

    def out_beats(self, in_beats: int) -> int:
        if (in_beats * self.in_lanes) % self.out_lanes:
            raise ValueError(f"StreamWidthConverter: {in_beats} beats of {self.in_lanes} lanes "
                             f"do not fill whole beats of {self.out_lanes} lanes")
        return in_beats * self.in_lanes // self.out_lanes

    def expected_cycles(self, in_beats: int) -> int:
        """Cycles from the first input beat accepted to the last output beat, no stalls."""
        out = self.out_beats(in_beats)
        if self.in_lanes == self.out_lanes:
            return in_beats
        return max(in_beats, out) + 1

    def elaborate(self, platform):
        m = Module()
        i_w = self.in_lanes * self.bits
        o_w = self.out_lanes * self.bits
        i_data = self.i.payload.as_value()
        o_data = self.o.payload.as_value()
        i_fire = self.i.valid & self.i.ready
        o_fire = self.o.valid & self.o.ready

        if self.in_lanes == self.out_lanes:
            m.d.comb += [
                self.o.valid.eq(self.i.valid),
                o_data.eq(i_data),
                self.i.ready.eq(self.o.ready),
            ]
        elif self.in_lanes > self.out_lanes:
            k = self.in_lanes // self.out_lanes
            buf = Signal(i_w)  # the parts not yet sent, lowest first
            full = Signal()
            part = Signal(range(k))
            last = part == k - 1
            m.d.comb += [
                self.o.valid.eq(full),
                o_data.eq(buf[:o_w]),
                self.i.ready.eq(~full | (last & self.o.ready)),
            ]
            with m.If(o_fire):
                m.d.sync += [buf.eq(buf >> o_w), part.eq(part + 1)]
                with m.If(last):
                    m.d.sync += [full.eq(0), part.eq(0)]
            with m.If(i_fire):  # after the o_fire statements: a new beat overrides
                m.d.sync += [buf.eq(i_data), full.eq(1), part.eq(0)]
        else:
            k = self.out_lanes // self.in_lanes
            acc = Signal((k - 1) * i_w)  # gathered beats; the oldest in the lowest bits
            count = Signal(range(k))
            out = Signal(o_w)
            o_valid = Signal()
            completes = count == k - 1
            m.d.comb += [
                self.o.valid.eq(o_valid),
                o_data.eq(out),
                self.i.ready.eq(~completes | ~o_valid | self.o.ready),
            ]
            with m.If(o_fire):
                m.d.sync += o_valid.eq(0)
            with m.If(i_fire):
                with m.If(completes):
                    m.d.sync += [out.eq(Cat(acc, i_data)), o_valid.eq(1), count.eq(0)]
                with m.Else():
                    m.d.sync += [acc.eq(Cat(acc[i_w:], i_data)), count.eq(count + 1)]
        return m
