"""Channel plumbing of the detector: Concat, ChannelSplit, ChannelShuffle and a saturating Add.

All four keep NHWC raster order and move whole pixels; a stream of ``C`` channels with ``PE``
lanes carries one pixel as ``C/PE`` beats, lane ``j`` of beat ``b`` holding channel
``b*PE + j`` (docs/hw_conventions.md). Golden semantics: ``sw.golden.concat``,
``channel_split``, ``channel_shuffle``, ``add`` (docs/detector_contract.md section 2).

Concat and ChannelSplit only route beats (a beat counter selects the port), so they are
wires plus a counter: one beat per cycle, no latency. ChannelShuffle permutes channels
across beats and so holds a pixel (two pixel buffers, ping-pong); Add joins two streams
through one holding register per input.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Concat", "ChannelSplit", "ChannelShuffle", "Add"]


def _layout(bits: int, is_signed: bool, lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(signed(bits) if is_signed else unsigned(bits), lanes)


def _check_common(name: str, lanes: int, bits: int) -> None:
    if lanes < 1:
        raise ValueError(f"{name}: lanes (PE) must be >= 1, got {lanes}")
    if bits < 1:
        raise ValueError(f"{name}: bits must be >= 1, got {bits}")


def _check_channels(name: str, what: str, channels, lanes: int) -> list[int]:
    channels = [int(c) for c in channels]
    for c in channels:
        if c < 1 or c % lanes:
            raise ValueError(f"{name}: {what} {channels}: each must be a positive multiple of "
                             f"lanes (PE) {lanes} (whole beats are routed)")
    return channels


class Concat(wiring.Component):
    """Channel concatenation of ``n >= 2`` streams (``torch.cat(xs, 1)``).

    Parameters:
        channels: ``[C0, C1, ...]``, each a multiple of ``lanes``.
        lanes: PE of every port.
        bits, signed: element type (the same on every port: the contract requires one shared
            quantizer).

    Streams: ``i0 .. i{n-1}``: ``ArrayLayout(type, PE)`` frames ``[H, W, C_k]``;
    ``o``: ``[H, W, sum C_k]``. Per pixel, ``C0/PE`` beats are taken from ``i0``, then
    ``C1/PE`` from ``i1``, and so on. Combinational routing: ``o`` follows the selected
    input, whose ``ready`` follows ``o.ready``; the others are not ready.

    Cycles (:meth:`expected_cycles`): ``pixels * sum(C_k)/PE``, no latency.
    """

    def __init__(self, *, channels, lanes: int, bits: int = 8, signed: bool = False):
        _check_common("Concat", lanes, bits)
        self.channels = _check_channels("Concat", "channels", channels, lanes)
        if len(self.channels) < 2:
            raise ValueError(f"Concat: needs at least 2 inputs, got channels {self.channels}")
        self.lanes, self.bits, self.is_signed = lanes, bits, signed
        self.beats = [c // lanes for c in self.channels]
        self.beats_per_pixel = sum(self.beats)
        lay = _layout(bits, signed, lanes)
        members = {f"i{k}": In(stream.Signature(lay)) for k in range(len(self.channels))}
        members["o"] = Out(stream.Signature(lay))
        super().__init__(members)

    def expected_cycles(self, pixels: int) -> int:
        """Stall-free cycles for ``pixels`` pixels, first input to last output beat inclusive."""
        return pixels * self.beats_per_pixel

    def elaborate(self, platform):
        m = Module()
        ins = [getattr(self, f"i{k}") for k in range(len(self.beats))]
        sel = Signal(range(len(ins)))
        count = Signal(range(max(self.beats)))
        last = Array(b - 1 for b in self.beats)[sel] == count
        with m.Switch(sel):
            for k, port in enumerate(ins):
                with m.Case(k):
                    m.d.comb += [
                        self.o.valid.eq(port.valid),
                        self.o.payload.eq(port.payload),
                        port.ready.eq(self.o.ready),
                    ]
        with m.If(self.o.valid & self.o.ready):
            with m.If(last):
                m.d.sync += [count.eq(0), sel.eq(Mux(sel == len(ins) - 1, 0, sel + 1))]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m


class ChannelSplit(wiring.Component):
    """Split channels into ``n >= 2`` streams (``torch.split(x, sizes, 1)``).

    Parameters:
        sizes: ``[S0, S1, ...]``, each a multiple of ``lanes``.
        lanes, bits, signed: as :class:`Concat`.

    Streams: ``i``: frames ``[H, W, sum S_k]``; ``o0 .. o{n-1}``: ``[H, W, S_k]``. Per pixel,
    the first ``S0/PE`` input beats go to ``o0``, the next ``S1/PE`` to ``o1``, and so on.
    Combinational routing: the selected output follows ``i``, ``i.ready`` follows its ready.

    Cycles (:meth:`expected_cycles`): ``pixels * C/PE``, no latency.
    """

    def __init__(self, *, sizes, lanes: int, bits: int = 8, signed: bool = False):
        _check_common("ChannelSplit", lanes, bits)
        self.sizes = _check_channels("ChannelSplit", "sizes", sizes, lanes)
        if len(self.sizes) < 2:
            raise ValueError(f"ChannelSplit: needs at least 2 outputs, got sizes {self.sizes}")
        self.lanes, self.bits, self.is_signed = lanes, bits, signed
        self.channels = sum(self.sizes)
        self.beats = [s // lanes for s in self.sizes]
        self.beats_per_pixel = sum(self.beats)
        lay = _layout(bits, signed, lanes)
        members = {"i": In(stream.Signature(lay))}
        members.update({f"o{k}": Out(stream.Signature(lay)) for k in range(len(self.sizes))})
        super().__init__(members)

    def expected_cycles(self, pixels: int) -> int:
        """Stall-free cycles for ``pixels`` pixels, first input to last output beat inclusive."""
        return pixels * self.beats_per_pixel

    def elaborate(self, platform):
        m = Module()
        outs = [getattr(self, f"o{k}") for k in range(len(self.beats))]
        sel = Signal(range(len(outs)))
        count = Signal(range(max(self.beats)))
        last = Array(b - 1 for b in self.beats)[sel] == count
        for port in outs:
            m.d.comb += port.payload.eq(self.i.payload)
        with m.Switch(sel):
            for k, port in enumerate(outs):
                with m.Case(k):
                    m.d.comb += [port.valid.eq(self.i.valid), self.i.ready.eq(port.ready)]
        with m.If(self.i.valid & self.i.ready):
            with m.If(last):
                m.d.sync += [count.eq(0), sel.eq(Mux(sel == len(outs) - 1, 0, sel + 1))]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m


class ChannelShuffle(wiring.Component):
    """ShuffleNet channel shuffle: ``out[k*g + j] = in[j*(C/g) + k]`` within every pixel.

    Parameters:
        groups: g; ``C % g == 0``.
        channels: C; ``C % lanes == 0``.
        lanes, bits, signed: as :class:`Concat`.

    Streams: ``i`` and ``o``: frames ``[H, W, C]`` (``sw.golden.channel_shuffle``).

    An output beat gathers values from several input beats, so a whole pixel is buffered:
    two pixel buffers of ``C`` registers (ping-pong). The writer fills one while the reader
    sends the other; output lane ``l`` of beat ``b`` is a ``C/PE``-to-1 multiplexer over the
    fixed source channels ``src(b*PE + l)``. ``i.ready`` is "the buffer being written is
    free"; ``o.valid`` is "the buffer being read is full"; both come from registers.

    Cycles (:meth:`expected_cycles`): ``pixels * C/PE + C/PE``: full throughput, plus one
    pixel of latency (a pixel is sent once it is complete).
    """

    #: pixel buffers of ``C`` registers each (ping-pong)
    PIXEL_BUFFERS = 2

    @staticmethod
    def buffer_registers(*, channels: int, lanes: int, bits: int = 8) -> dict[str, int]:
        """Register buffers this component builds for these constructor arguments (it has no
        ``Memory``; the compiler's estimate reads this, :func:`hw.registry.buffer_registers`).

        Returns:
            ``{"ffs": PIXEL_BUFFERS * C * bits`` flip-flops holding pixels, ``"mux_inputs":
            PIXEL_BUFFERS * C/lanes`` inputs of the multiplexer in front of each of the
            ``lanes * bits`` output bits (one fixed source channel per buffer and beat),
            ``"mux_outputs": lanes * bits}``. No validation (the constructor's).
        """
        n = ChannelShuffle.PIXEL_BUFFERS
        return {"ffs": n * channels * bits, "mux_inputs": n * (channels // lanes),
                "mux_outputs": lanes * bits}

    def __init__(self, *, groups: int, channels: int, lanes: int, bits: int = 8,
                 signed: bool = False):
        _check_common("ChannelShuffle", lanes, bits)
        if groups < 1 or channels % groups:
            raise ValueError(f"ChannelShuffle: channels {channels} not divisible by groups "
                             f"{groups}")
        if channels % lanes:
            raise ValueError(f"ChannelShuffle: channels {channels} not divisible by lanes "
                             f"(PE) {lanes}")
        self.groups, self.channels = groups, channels
        self.lanes, self.bits, self.is_signed = lanes, bits, signed
        self.folds = channels // lanes
        lay = _layout(bits, signed, lanes)
        super().__init__({"i": In(stream.Signature(lay)), "o": Out(stream.Signature(lay))})

    def source_channel(self, out_channel: int) -> int:
        """Input channel that output channel ``out_channel`` takes (contract formula)."""
        g, per = self.groups, self.channels // self.groups
        return (out_channel % g) * per + out_channel // g

    def expected_cycles(self, pixels: int) -> int:
        """Stall-free cycles for ``pixels`` pixels: ``(pixels + 1) * C/PE`` (one pixel latency)."""
        return (pixels + 1) * self.folds

    def elaborate(self, platform):
        m = Module()
        C, L, F = self.channels, self.lanes, self.folds
        shape = signed(self.bits) if self.is_signed else unsigned(self.bits)
        bufs = [[Signal(shape, name=f"buf{p}_{c}") for c in range(C)]
                for p in range(self.PIXEL_BUFFERS)]
        full = Signal(2)
        wsel, rsel = Signal(), Signal()
        wcount, rcount = Signal(range(F)), Signal(range(F))

        # writer: input beat f fills channels f*L .. f*L+L-1 of buffer wsel
        m.d.comb += self.i.ready.eq(~full.bit_select(wsel, 1))
        w_fire = self.i.valid & self.i.ready
        with m.If(w_fire):
            for p in range(2):
                with m.If(wsel == p):
                    with m.Switch(wcount):
                        for f in range(F):
                            with m.Case(f):
                                m.d.sync += [bufs[p][f * L + j].eq(self.i.payload[j])
                                             for j in range(L)]
            with m.If(wcount == F - 1):
                m.d.sync += [wcount.eq(0), wsel.eq(~wsel)]
            with m.Else():
                m.d.sync += wcount.eq(wcount + 1)

        # reader: output lane j of beat b is source channel src(b*L + j) of buffer rsel
        m.d.comb += self.o.valid.eq(full.bit_select(rsel, 1))
        for j in range(L):
            cand = [Mux(rsel, bufs[1][self.source_channel(b * L + j)],
                        bufs[0][self.source_channel(b * L + j)]) for b in range(F)]
            m.d.comb += self.o.payload[j].eq(Array(cand)[rcount])
        r_fire = self.o.valid & self.o.ready
        with m.If(r_fire):
            with m.If(rcount == F - 1):
                m.d.sync += [rcount.eq(0), rsel.eq(~rsel)]
            with m.Else():
                m.d.sync += rcount.eq(rcount + 1)

        # a buffer becomes full on its last write and free after its last read; the writer
        # and the reader never work on the same buffer's flag in one cycle
        set_ = Mux(w_fire & (wcount == F - 1), Mux(wsel, 0b10, 0b01), 0)
        clr = Mux(r_fire & (rcount == F - 1), Mux(rsel, 0b10, 0b01), 0)
        m.d.sync += full.eq((full | set_) & ~clr)
        return m


class Add(wiring.Component):
    """Element-wise saturating add of two streams in lockstep (``sw.golden.add``).

    Parameters:
        channels: C of every port; ``C % lanes == 0``.
        lanes: PE of all three ports.
        in_bits, in_signed: type of both inputs (the contract requires one shared quantizer).
        out_bits, out_signed: output type (default: the input's signedness); the sum
            saturates to its range.

    Streams: ``i0``, ``i1``: ``ArrayLayout(in type, PE)``; ``o``: ``ArrayLayout(out type, PE)``;
    beat ``n`` of ``o`` is the clipped sum of beat ``n`` of ``i0`` and of ``i1``.

    Each input has a one-beat holding register, so neither ``ready`` depends on any
    ``valid`` (an input's ready is "my register is empty or is consumed this cycle"); the
    clipped sum is registered.

    Cycles (:meth:`expected_cycles`): ``pixels * C/PE + 2`` (holding register, then output
    register).
    """

    LATENCY = 2

    def __init__(self, *, channels: int, lanes: int, in_bits: int = 8, in_signed: bool = False,
                 out_bits: int = 8, out_signed: bool | None = None):
        _check_common("Add", lanes, in_bits)
        if out_bits < 1:
            raise ValueError(f"Add: out_bits must be >= 1, got {out_bits}")
        if channels < 1 or channels % lanes:
            raise ValueError(f"Add: channels {channels} not divisible by lanes (PE) {lanes}")
        self.channels, self.lanes = channels, lanes
        self.in_bits, self.in_signed = in_bits, in_signed
        self.out_bits = out_bits
        self.out_signed = in_signed if out_signed is None else bool(out_signed)
        self.out_lanes = lanes
        in_lay = _layout(in_bits, in_signed, lanes)
        super().__init__({
            "i0": In(stream.Signature(in_lay)),
            "i1": In(stream.Signature(in_lay)),
            "o": Out(stream.Signature(_layout(out_bits, self.out_signed, lanes))),
        })

    def expected_cycles(self, pixels: int) -> int:
        """Stall-free cycles for ``pixels`` pixels, first input to last output beat inclusive."""
        return pixels * (self.channels // self.lanes) + self.LATENCY

    def elaborate(self, platform):
        m = Module()
        ins = [self.i0, self.i1]
        held = [Signal.like(p.payload, name=f"held{k}") for k, p in enumerate(ins)]
        full = [Signal(name=f"full{k}") for k in range(2)]
        o_valid = Signal()
        out = Signal.like(self.o.payload)
        join = full[0] & full[1] & (~o_valid | self.o.ready)
        for k, port in enumerate(ins):
            m.d.comb += port.ready.eq(~full[k] | join)
            with m.If(port.valid & port.ready):
                m.d.sync += [held[k].eq(port.payload), full[k].eq(1)]
            with m.Elif(join):
                m.d.sync += full[k].eq(0)
        if self.out_signed:
            lo, hi = -(1 << (self.out_bits - 1)), (1 << (self.out_bits - 1)) - 1
        else:
            lo, hi = 0, (1 << self.out_bits) - 1
        with m.If(join):
            m.d.sync += o_valid.eq(1)
            for j in range(self.lanes):
                s = held[0][j] + held[1][j]  # one bit wider than the inputs: exact
                m.d.sync += out[j].eq(Mux(s < lo, lo, Mux(s > hi, hi, s)))
        with m.Elif(self.o.ready):
            m.d.sync += o_valid.eq(0)
        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.eq(out)]
        return m
