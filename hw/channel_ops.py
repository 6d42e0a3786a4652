"""Channel plumbing of the detector: Concat, ChannelSplit, ChannelShuffle and a saturating Add.

All four keep NHWC raster order and move whole pixels; a stream of ``C`` channels with ``PE``
lanes carries one pixel as ``C/PE`` beats, lane ``j`` of beat ``b`` holding channel
``b*PE + j`` (docs/hw_conventions.md). Golden semantics: ``hw.golden.concat``,
``channel_split``, ``channel_shuffle``, ``add`` (docs/detector_contract.md section 2).

Concat and ChannelSplit only route beats (a beat counter selects the port), so they are
wires plus a counter: one beat per cycle, no latency. ChannelShuffle permutes channels
across beats and so holds a pixel (a ping-pong buffer of two pixels in lane-banked memories,
written in input order and read in shuffled order); Add joins two streams through one
holding register per input.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.memory_style import check_ram_style, memory_attrs

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
        channels: C; ``C % lanes == 0`` (the folding rule, ``sw.compiler.folding``: any ``PE`` dividing
            ``C``, whether or not it divides ``C/g``).
        lanes: PE of both streams.
        bits, signed: element type.
        ram_style: FINN's ``ram_style`` of the pixel buffer (``"auto"``, ``"block"``,
            ``"distributed"``, ``"ultra"``), written as Verilog ``ram_style`` attribute on every
            bank (:mod:`hw.memory_style`); ``"auto"`` (default) adds none.

    Raises:
        ValueError: ``lanes < 1``, ``bits < 1``, ``C % g != 0``, ``C % lanes != 0`` or an unknown
            ``ram_style``.

    Streams: ``i`` and ``o``: ``ArrayLayout(type, PE)`` frames ``[H, W, C]``, NHWC, ``F = C/PE``
    beats per pixel, lane ``l`` of beat ``b`` holding channel ``b*PE + l``
    (``hw.golden.channel_shuffle``).

    Buffer: a ping-pong permuting buffer of two pixel slots in ``PE`` banks, each an
    ``amaranth.lib.memory.Memory`` of ``2*F`` words of ``bits`` bits (:meth:`buffer_memory`).
    Channel ``c`` of slot ``s`` lives in bank ``c % PE`` at address ``s*F + c // PE``, so an
    input beat writes one word into every bank at the same address (one write port per bank,
    input order). Output lane ``l`` of beat ``b`` reads its source channel
    ``src(b*PE + l)`` (:meth:`source_channel`) from bank ``src % PE``. Lanes of one beat can hit
    the same bank (e.g. ``g = 2``, ``PE = 2``, ``C/g`` even: both lanes of every beat), so each
    bank gets as many read ports as lanes hit it in one beat at most, found by enumerating the
    ``F x PE`` read schedule at elaboration (:meth:`read_ports`; at most ``g`` per bank, since
    the lanes of one group read consecutive channels, which lie in distinct banks; 1 at
    ``PE = 1``). Within a beat the lanes hitting a bank take its ports in lane order. The read
    addresses come from per-lane counters (group ``o % g``, and ``src`` as ``(row, bank)``
    digits, stepped by the constant change of ``src`` when ``o`` grows by ``PE``); the few
    beat-dependent choices (which lane drives a port's address, which port a lane takes) are
    tables over the beat index, constants where they do not vary.

    Timing: the writer fills slot ``wsel``; ``i.ready`` is "slot ``wsel`` is not full" (a
    register). The reader starts a pixel when its slot is full, or in the very cycle its last
    input beat is written: the read ports are transparent for the bank's write port, so the
    word written that cycle is forwarded. Reads are synchronous (BRAM or LUTRAM, the read
    register is the output register); their enable is held low while the output is stalled, so
    ``o.valid`` and the data come from registers. A slot is freed with its last read.

    Cycles (:meth:`expected_cycles`): ``(pixels + 1) * C/PE``: one beat per cycle in steady
    state (reading one slot while the other is written), plus the fill latency of one pixel
    (``C/PE - 1`` cycles until its last beat is written, one for the read register).
    """

    #: pixel slots the buffer holds (ping-pong: one written while the other is read)
    PIXEL_SLOTS = 2

    @staticmethod
    def buffer_memory(*, channels: int, lanes: int, bits: int = 8) -> tuple[int, int]:
        """``(depth, word_bits)`` of each of the ``lanes`` bank memories this component builds
        for these constructor arguments: ``PIXEL_SLOTS * C/lanes`` words of ``bits``
        bits; the compiler's estimate reads it (:func:`hw.registry.buffer_memory`). No
        validation (the constructor's)."""
        return ChannelShuffle.PIXEL_SLOTS * (channels // lanes), bits

    @staticmethod
    def schedule(*, groups: int, channels: int, lanes: int) -> list[list[tuple[int, int, int]]]:
        """Read schedule: ``[b][l] = (bank, port, row)`` for output lane ``l`` of beat ``b``:
        bank ``src % PE``, read port (rank of the lane among the lanes of beat ``b`` that hit
        that bank, in lane order) and row ``src // PE`` within the slot. No validation."""
        per = channels // groups
        out = []
        for b in range(channels // lanes):
            used: dict[int, int] = {}
            beat = []
            for l in range(lanes):
                o = b * lanes + l
                s = (o % groups) * per + o // groups
                bank = s % lanes
                beat.append((bank, used.get(bank, 0), s // lanes))
                used[bank] = used.get(bank, 0) + 1
            out.append(beat)
        return out

    @staticmethod
    def read_ports(*, groups: int, channels: int, lanes: int) -> list[int]:
        """Read ports of each bank (``[PE]``): the most lanes that hit it in one output beat
        (:meth:`schedule`). A LUTRAM bank is replicated per read port; a BRAM one too beyond
        the one read port of a simple-dual-port BRAM. No validation."""
        ports = [0] * lanes
        for beat in ChannelShuffle.schedule(groups=groups, channels=channels, lanes=lanes):
            for bank, port, _ in beat:
                ports[bank] = max(ports[bank], port + 1)
        return ports

    @staticmethod
    def crossbar(*, groups: int, channels: int, lanes: int) -> dict[str, list[int]]:
        """Multiplexer sizes of the read side: ``{"lane_inputs": [PE]`` distinct ``(bank, port)``
        outputs each output lane takes over a pixel, ``"port_inputs": [sum of read_ports]``
        distinct lanes whose row counter drives each read port's address``}``; 1 means a wire."""
        sched = ChannelShuffle.schedule(groups=groups, channels=channels, lanes=lanes)
        ports = ChannelShuffle.read_ports(groups=groups, channels=channels, lanes=lanes)
        lane_in = [len({beat[l][:2] for beat in sched}) for l in range(lanes)]
        port_in = []
        for k in range(lanes):
            for p in range(ports[k]):
                port_in.append(max(1, len({l for beat in sched for l, (bk, pt, _) in
                                           enumerate(beat) if (bk, pt) == (k, p)})))
        return {"lane_inputs": lane_in, "port_inputs": port_in}

    def __init__(self, *, groups: int, channels: int, lanes: int, bits: int = 8,
                 signed: bool = False, ram_style: str = "auto"):
        _check_common("ChannelShuffle", lanes, bits)
        if groups < 1 or channels % groups:
            raise ValueError(f"ChannelShuffle: channels {channels} not divisible by groups "
                             f"{groups}")
        if channels % lanes:
            raise ValueError(f"ChannelShuffle: channels {channels} not divisible by lanes "
                             f"(PE) {lanes}")
        self.ram_style = check_ram_style("ChannelShuffle", ram_style)
        self.groups, self.channels = groups, channels
        self.lanes, self.bits, self.is_signed = lanes, bits, signed
        self.folds = channels // lanes
        self.buffer_words, self.word_bits = self.buffer_memory(channels=channels, lanes=lanes,
                                                               bits=bits)
        self.ports = self.read_ports(groups=groups, channels=channels, lanes=lanes)
        lay = _layout(bits, signed, lanes)
        super().__init__({"i": In(stream.Signature(lay)), "o": Out(stream.Signature(lay))})

    def source_channel(self, out_channel: int) -> int:
        """Input channel that output channel ``out_channel`` takes (contract formula)."""
        g, per = self.groups, self.channels // self.groups
        return (out_channel % g) * per + out_channel // g

    def expected_cycles(self, pixels: int) -> int:
        """Stall-free cycles for ``pixels`` pixels: ``(pixels + 1) * C/PE`` (one pixel latency)."""
        return (pixels + 1) * self.folds

    def _step(self, j: int) -> tuple[int, int, int]:
        """Change of a lane's (group, row, bank digits of src) when its output channel grows by
        PE, from group ``j``: ``(new group, row delta, bank delta)`` with ``0 <= bank delta < PE``
        (the bank digit then carries into the row)."""
        g, per, L = self.groups, self.channels // self.groups, self.lanes
        q, r = divmod(L, g)
        if j + r < g:
            nj, d = j + r, r * per + q
        else:
            nj, d = j + r - g, (r - g) * per + q + 1
        dr, db = divmod(d, L)
        return nj, dr, db

    def elaborate(self, platform):
        m = Module()
        C, L, F, g = self.channels, self.lanes, self.folds, self.groups
        sched = self.schedule(groups=g, channels=C, lanes=L)
        attrs = memory_attrs(self.ram_style, read_only=False)
        banks, wports, rports = [], [], []
        for k in range(L):
            mem = Memory(shape=unsigned(self.bits), depth=self.buffer_words, init=[],
                         attrs=attrs)
            m.submodules[f"bank{k}"] = mem
            wp = mem.write_port()
            banks.append(mem)
            wports.append(wp)
            rports.append([mem.read_port(domain="sync", transparent_for=(wp,))
                           for _ in range(self.ports[k])])

        full = Signal(2)
        wsel, rsel = Signal(), Signal()
        wcount, rcount = Signal(range(F)), Signal(range(F))

        def slot_addr(slot, row):
            return Mux(slot, row + F, row)

        # ---- writer: input beat f -> address wsel*F + f of every bank, lane k into bank k ----
        m.d.comb += self.i.ready.eq(~full.bit_select(wsel, 1))
        w_fire = self.i.valid & self.i.ready
        w_last = w_fire & (wcount == F - 1)
        for k in range(L):
            m.d.comb += [wports[k].addr.eq(slot_addr(wsel, wcount)),
                         wports[k].data.eq(self.i.payload[k]),
                         wports[k].en.eq(w_fire)]
        with m.If(w_fire):
            with m.If(wcount == F - 1):
                m.d.sync += [wcount.eq(0), wsel.eq(~wsel)]
            with m.Else():
                m.d.sync += wcount.eq(wcount + 1)

        # ---- reader: beat rcount of slot rsel; starts once the slot is full or completes now ----
        o_valid = Signal()
        advance = ~o_valid | self.o.ready
        avail = full.bit_select(rsel, 1) | (w_last & (wsel == rsel))
        issue = avail & advance
        r_last = issue & (rcount == F - 1)

        # per-lane counters: group j = o % g and src = (row, bank) digits of lane l's source
        rows, bks = [], []
        for l in range(L):
            s0 = self.source_channel(l)
            j = Signal(range(g), name=f"grp{l}", init=l % g)
            row = Signal(range(F), name=f"row{l}", init=s0 // L)
            bk = Signal(range(L), name=f"bank{l}_digit", init=s0 % L)
            rows.append(row)
            bks.append(bk)
            with m.If(issue):
                with m.If(rcount == F - 1):
                    m.d.sync += [j.eq(l % g), row.eq(s0 // L), bk.eq(s0 % L)]
                with m.Else():
                    with m.Switch(j):
                        for jj in range(g):
                            nj, dr, db = self._step(jj)
                            with m.Case(jj):
                                if L > 1:
                                    nb = bk + db
                                    carry = nb >= L
                                    m.d.sync += [bk.eq(Mux(carry, nb - L, nb)),
                                                 row.eq(row + dr + carry)]
                                else:
                                    m.d.sync += row.eq(row + dr)
                                m.d.sync += j.eq(nj)

        def by_beat(values, name, shape):
            """Value of a per-beat table at the current read beat (a constant if it never
            changes; entries of None are don't-cares)."""
            known = [v for v in values if v is not None]
            if len(set(known)) <= 1:
                return known[0] if known else 0
            sig = Signal(shape, name=name)
            with m.Switch(rcount):
                for b, v in enumerate(values):
                    if v is not None:
                        with m.Case(b):
                            m.d.comb += sig.eq(v)
            return sig

        # read ports: port p of bank k reads the row of the lane that takes it in this beat
        for k in range(L):
            for p, rp in enumerate(rports[k]):
                lane_at = [next((l for l, (bk, pt, _) in enumerate(beat) if (bk, pt) == (k, p)),
                                None) for beat in sched]
                cands = sorted({l for l in lane_at if l is not None})
                idx = by_beat([None if l is None else cands.index(l) for l in lane_at],
                              f"port{k}_{p}_lane", range(len(cands)))
                row = Array(rows[l] for l in cands)[idx] if len(cands) > 1 else rows[cands[0]]
                m.d.comb += [rp.addr.eq(slot_addr(rsel, row)), rp.en.eq(advance)]

        # output lanes: lane l takes the (bank, port) of this beat; the choice is registered
        # with the read, as the data arrive one cycle later
        for l in range(L):
            srcs = [beat[l][:2] for beat in sched]
            cands = sorted(set(srcs))
            datas = [rports[k][p].data for k, p in cands]
            if len(cands) == 1:
                m.d.comb += self.o.payload[l].eq(datas[0])
                continue
            sel_next = by_beat([cands.index(s) for s in srcs], f"lane{l}_next",
                               range(len(cands)))
            sel = Signal(range(len(cands)), name=f"lane{l}_sel")
            with m.If(issue):
                m.d.sync += sel.eq(sel_next)
            m.d.comb += self.o.payload[l].eq(Array(datas)[sel])

        with m.If(issue):
            m.d.sync += o_valid.eq(1)
            with m.If(rcount == F - 1):
                m.d.sync += [rcount.eq(0), rsel.eq(~rsel)]
            with m.Else():
                m.d.sync += rcount.eq(rcount + 1)
        with m.Elif(advance):
            m.d.sync += o_valid.eq(0)
        m.d.comb += self.o.valid.eq(o_valid)

        # a slot becomes full on its last write and free after its last read (which may be
        # the same cycle when C/PE = 1 and the reader is waiting)
        set_ = Mux(w_last, Mux(wsel, 0b10, 0b01), 0)
        clr = Mux(r_last, Mux(rsel, 0b10, 0b01), 0)
        m.d.sync += full.eq((full | set_) & ~clr)
        return m


class Add(wiring.Component):
    """Element-wise saturating add of two streams in lockstep (``hw.golden.add``).

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
