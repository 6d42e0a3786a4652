"""Per-channel integer requantiser: accumulators to the next layer's activation type."""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.memory_style import check_ram_style, memory_attrs
from hw.mvau import CreditedOutput, signed_bits, step_fold, value_range

__all__ = ["Requantizer"]


def _int_vector(name: str, a, channels: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"Requantizer: {name} must be a non-empty 1-D array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer) and not np.all(np.mod(a, 1) == 0):
        raise ValueError(f"Requantizer: {name} must hold integers, got dtype {a.dtype}")
    if channels is not None and a.size != channels:
        raise ValueError(f"Requantizer: {name} has {a.size} channels, multiplier has {channels}")
    return np.array([int(v) for v in a], dtype=object)  # exact Python ints (bias may be wide)


class Requantizer(wiring.Component):
    """``o[c] = clamp((acc[c] * M[c] + B[c]) >> S, out_min, out_max)``, per channel.

    Exactly ``hw.golden.requantize`` (``>>`` is an arithmetic shift, i.e. floor division by
    ``2**S``; round-to-nearest is folded into ``B``). This is where batch norm, bias, weight
    and activation scales of a layer reach the hardware, after an MVAU or VVAU.

    Parameters:
        multiplier: ``[C]`` non-negative integers M.
        bias: ``[C]`` integers B (may be wide, e.g. 40 bits).
        shift: S >= 0.
        out_min, out_max: output range (0..255 uint8, -128..127 int8, 0..N offsets).
        lanes: channels per beat; ``C % lanes == 0``.
        acc_bits: width of the input values.
        in_signed: input type: signed accumulators (after an MVAU/VVAU, the default) or
            unsigned activations (a requantiser that rescales an unsigned uint8 stream, e.g. the
            passthrough branch of a ShuffleNet unit, whose scale must match a concat partner).
        ram_style: FINN's ``ram_style`` of the parameter ROM (``"auto"``, ``"block"``,
            ``"distributed"``, ``"ultra"``), written as Verilog ``ram_style``/``rom_style`` attributes on it
            (:mod:`hw.memory_style`); ``"auto"`` (default) adds none. Another value raises
            ``ValueError``.

    Streams (``docs/hw_conventions.md``):
        ``i``: ``ArrayLayout(signed|unsigned(acc_bits), lanes)``: per pixel ``C/lanes`` beats, lane
            ``j`` of beat ``f`` holding channel ``f*lanes + j`` (the MVAU/VVAU output order).
        ``o``: ``ArrayLayout(out_shape, lanes)``, same order; ``out_shape`` is unsigned when
            ``out_min >= 0`` else signed, of ``out_bits`` = the fewest bits holding
            ``[out_min, out_max]`` (8 for 0..255 and -128..127, 3 for 0..7).

    Widths (from the actual constants, not their types):
        ``mul_bits`` (unsigned M) = bit length of ``max(M)``;
        ``bias_bits`` = signed bits of ``[min(B), max(B)]``;
        ``prod_bits`` = signed bits of ``acc * M`` over the input range and ``max(M)``;
        ``sum_bits`` = signed bits of ``[min_c(acc_min*M[c] + B[c]), max_c(acc_max*M[c] + B[c])]``.
        Clamp comparators are only generated on a side that can actually saturate.

    Datapath (stall-free, back-pressure absorbed at issue by
    :class:`hw.mvau.CreditedOutput`): issue (channel-fold counter, parameter ROM address) ->
    accumulator register and ROM read (M, B) -> product register (``acc_bits x mul_bits``
    multiplier with registered inputs and output: maps to a DSP's A/B, M registers) -> sum
    register (the DSP post-adder's P register; B delayed one stage to line up) -> shift
    (wiring) and clamp into the output FIFO. Parameter ROM: ``amaranth.lib.memory.Memory``,
    depth ``C/lanes``, width ``lanes*(mul_bits + bias_bits)``, synchronous read; word ``f``
    lane ``j`` holds ``M[f*lanes + j]`` (low bits) and ``B[f*lanes + j]``.

    Cycles: ``C/lanes`` per pixel, one beat per cycle; :meth:`expected_cycles` adds the fill
    latency ``latency + 2`` (``latency`` = 3 issue to FIFO write, 2 = FIFO write to output).
    """

    def __init__(self, *, multiplier: np.ndarray, bias: np.ndarray, shift: int, out_min: int,
                 out_max: int, lanes: int, acc_bits: int, in_signed: bool = True,
                 ram_style: str = "auto"):
        mul = _int_vector("multiplier", multiplier)
        self.ram_style = check_ram_style("Requantizer", ram_style)
        c = mul.size
        b = _int_vector("bias", bias, c)
        if min(mul) < 0:
            raise ValueError(f"Requantizer: multipliers must be non-negative, min is {min(mul)}")
        if lanes < 1 or c % lanes:
            raise ValueError(
                f"Requantizer folding rule C % lanes == 0 broken: C={c}, lanes={lanes}")
        if shift < 0:
            raise ValueError(f"Requantizer: shift must be >= 0, got {shift}")
        if out_min > out_max:
            raise ValueError(f"Requantizer: out_min {out_min} > out_max {out_max}")
        if acc_bits < 1:
            raise ValueError(f"Requantizer: acc_bits must be >= 1, got {acc_bits}")
        self.multiplier, self.bias = mul, b
        self.channels, self.lanes, self.folds = c, lanes, c // lanes
        self.shift, self.out_min, self.out_max = int(shift), int(out_min), int(out_max)
        self.acc_bits, self.acc_signed = int(acc_bits), bool(in_signed)

        a_lo, a_hi = value_range(self.acc_bits, self.acc_signed)
        m_max = int(max(mul))
        self.mul_bits = max(1, m_max.bit_length())
        self.bias_bits = signed_bits(min(b), max(b))
        self.prod_bits = signed_bits(a_lo * m_max, a_hi * m_max)
        self.sum_min = int(min(a_lo * mm + bb for mm, bb in zip(mul, b)))
        self.sum_max = int(max(a_hi * mm + bb for mm, bb in zip(mul, b)))
        self.sum_bits = signed_bits(self.sum_min, self.sum_max)
        # range of the shifted value: decides which clamp comparators exist
        self.y_min, self.y_max = self.sum_min >> self.shift, self.sum_max >> self.shift

        # payload shape information for the compiler
        self.in_bits, self.in_signed, self.in_lanes = self.acc_bits, self.acc_signed, lanes
        if self.out_min >= 0:
            self.out_signed = False
            self.out_bits = max(1, self.out_max.bit_length())
        else:
            self.out_signed = True
            self.out_bits = signed_bits(self.out_min, self.out_max)
        self.out_lanes = lanes
        self.out_shape = signed(self.out_bits) if self.out_signed else unsigned(self.out_bits)
        self.latency = 3  # issue -> FIFO write: input/ROM register, product, sum
        self.cycles_per_pixel = self.folds
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(
                signed(self.acc_bits) if self.acc_signed else unsigned(self.acc_bits), lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(self.out_shape, lanes))),
        })

    def expected_cycles(self, pixels: int) -> int:
        """Stall-free cycles for ``pixels`` pixels, first input to last output beat.

        ``(C/lanes)*pixels`` plus the fill latency ``latency + 2`` (= 5).
        """
        return self.cycles_per_pixel * pixels + self.latency + CreditedOutput.FIFO_LATENCY

    def rom_init(self) -> list[int]:
        """Parameter ROM contents (see the class docstring for the word layout)."""
        mb, bb, ln = self.mul_bits, self.bias_bits, self.lanes
        words = []
        for f in range(self.folds):
            word = 0
            for j in range(ln):
                c = f * ln + j
                lane = int(self.multiplier[c]) | ((int(self.bias[c]) & ((1 << bb) - 1)) << mb)
                word |= lane << (j * (mb + bb))
            words.append(word)
        return words

    def elaborate(self, platform):
        m = Module()
        ln, ab, mb, bb = self.lanes, self.acc_bits, self.mul_bits, self.bias_bits
        folds = self.folds

        m.submodules.out = out = CreditedOutput(ln * self.out_bits, self.latency)
        m.d.comb += [
            self.o.valid.eq(out.r_valid),
            self.o.payload.eq(out.r_data),
            out.r_ready.eq(self.o.ready),
        ]
        m.submodules.rom = rom = Memory(shape=unsigned(ln * (mb + bb)), depth=folds,
                                        init=self.rom_init(),
                                        attrs=memory_attrs(self.ram_style, read_only=True))
        rom_rd = rom.read_port()

        # ---- issue stage: every beat yields one output beat, so each needs a slot ----------
        fold = Signal(range(folds))
        issue = Signal()
        m.d.comb += [
            self.i.ready.eq(out.can_reserve),
            issue.eq(out.can_reserve & self.i.valid),
            out.reserve.eq(issue),
            rom_rd.addr.eq(fold),
        ]
        step_fold(m, fold, folds, issue)

        # ---- stage 1: accumulator register, parameter ROM read ------------------------------
        acc1 = Signal(ln * ab)
        v1 = Signal()
        m.d.sync += [acc1.eq(self.i.payload.as_value()), v1.eq(issue)]

        # ---- stage 2: product (DSP M register); bias delayed alongside ----------------------
        prods = [Signal(signed(self.prod_bits), name=f"prod_{j}") for j in range(ln)]
        bias2 = [Signal(signed(bb), name=f"bias_{j}") for j in range(ln)]
        for j in range(ln):
            base = j * (mb + bb)
            a = acc1[j * ab:(j + 1) * ab]
            # an unsigned input gets a zero sign bit so that the product stays signed
            a = a.as_signed() if self.acc_signed else Cat(a, 0).as_signed()
            mul = rom_rd.data[base:base + mb]  # unsigned: M >= 0
            m.d.sync += [
                prods[j].eq(a * mul),
                bias2[j].eq(rom_rd.data[base + mb:base + mb + bb].as_signed()),
            ]
        v2 = Signal()
        m.d.sync += v2.eq(v1)

        # ---- stage 3: sum (DSP P register) -------------------------------------------------
        sums = [Signal(signed(self.sum_bits), name=f"sum_{j}") for j in range(ln)]
        for j in range(ln):
            m.d.sync += sums[j].eq(prods[j] + bias2[j])
        v3 = Signal()
        m.d.sync += v3.eq(v2)

        # ---- shift (floor) and clamp into the output FIFO ----------------------------------
        lanes_out = []
        for j in range(ln):
            y = sums[j] >> self.shift  # arithmetic on a signed value: floor(sum / 2**S)
            q = Signal(self.out_shape, name=f"q_{j}")
            clamped = y
            if self.y_max > self.out_max:
                clamped = Mux(y > self.out_max, self.out_max, clamped)
            if self.y_min < self.out_min:
                clamped = Mux(y < self.out_min, self.out_min, clamped)
            m.d.comb += q.eq(clamped)
            lanes_out.append(q)
        m.d.comb += [out.w_en.eq(v3), out.w_data.eq(Cat(*lanes_out))]
        return m
