"""Vector-vector unit (FINN's VectorVectorActivation without thresholds): depthwise conv."""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.memory_style import check_ram_style, memory_attrs
from hw.mvau import (CreditedOutput, _check_weights, _pack, _resolve_acc_bits, lut_multiplier,
                     signed_bits, value_range)

__all__ = ["VVAU"]


class VVAU(wiring.Component):
    """Folded depthwise dot products: ``o[c] = sum_k W[c, k] * window[c, k]`` (no thresholds).

    FINN's VectorVectorActivation (``noActivation=1``) with SIMD = 1 over the kernel
    dimension: each of the ``PE`` lanes owns one channel and multiplies one window element
    per cycle.

    Parameters:
        weights: ``[C, K*K]`` signed integers (torch's ``[C, 1, ky, kx]`` flattened).
        pe: channel lanes; ``C % PE == 0``.
        kernel_elems: ``K*K`` (9 for 3x3); must equal ``weights.shape[1]``.
        in_bits, in_signed: input element type (uint8 by default).
        weight_bits: weight type (int4 by default; weights must fit).
        acc_bits: accumulator width; default the exact range from the actual weights
            (:func:`hw.mvau.accumulator_bits`). A smaller value is refused.
        mult_style: ``"lut"`` (default): the ``PE`` products in LUTs (wires marked
            ``use_dsp = "no"``, :func:`hw.mvau.lut_multiplier`); ``"dsp"``: one DSP48 per
            lane (the lanes multiply different inputs, so the two-products-per-DSP packing of
            the MVAU does not apply). Another value raises ``ValueError``.
        ram_style: FINN's ``ram_style`` of the weight ROM (``"auto"``, ``"block"``,
            ``"distributed"``, ``"ultra"``), written as Verilog ``ram_style``/``rom_style`` attributes on it
            (:mod:`hw.memory_style`); ``"auto"`` (default) adds none. Another value raises
            ``ValueError``.

    Streams (``docs/hw_conventions.md``):
        ``i``: ``ArrayLayout(unsigned|signed(in_bits), PE)``, the depthwise window order of
            ``hw.golden.sliding_window(..., depthwise=True, lanes=PE)`` (also
            ``hw.golden.deformable_sample``): per pixel ``C/PE`` channel folds, each ``K*K``
            beats in kernel raster order, beat lane ``j`` holding channel ``f*PE + j``.
        ``o``: ``ArrayLayout(signed(acc_bits), PE)``: per pixel ``C/PE`` beats, lane ``j`` of
            beat ``f`` holding ``hw.golden.vvau(...)[f*PE + j]``.

    Cycles: ``(C/PE)*K*K`` per pixel (FINN's VVAU formula), one input beat per cycle; the
    input is never reused, so no input buffer is needed.

    Datapath (stall-free, back-pressure absorbed at issue by
    :class:`hw.mvau.CreditedOutput`): issue (ROM address, input register) -> ``PE`` products
    registered (multipliers with registered inputs and output) -> accumulator (cleared on
    the first kernel element) -> output FIFO on the last kernel element. Weight ROM:
    ``amaranth.lib.memory.Memory``, depth ``(C/PE)*K*K``, width ``PE*weight_bits``,
    synchronous read; word ``f*K*K + k`` lane ``j`` holds ``W[f*PE + j, k]``.

    :meth:`expected_cycles`: ``(C/PE)*K*K*pixels + latency + 2`` (``latency`` = 3 issue to
    FIFO write, 2 = FIFO write to output), first input to last output handshake inclusive.
    """

    def __init__(self, *, weights: np.ndarray, pe: int, kernel_elems: int = 9, in_bits: int = 8,
                 in_signed: bool = False, weight_bits: int = 4, acc_bits: int | None = None,
                 mult_style: str = "lut", ram_style: str = "auto"):
        w = _check_weights("VVAU", weights, weight_bits)
        if mult_style not in ("lut", "dsp"):
            raise ValueError(f"VVAU: mult_style must be 'lut' or 'dsp', got {mult_style!r}")
        self.mult_style = mult_style
        self.ram_style = check_ram_style("VVAU", ram_style)
        c, kk = w.shape
        if kk != kernel_elems:
            raise ValueError(
                f"VVAU: weights have {kk} kernel elements, kernel_elems={kernel_elems}")
        if pe < 1 or c % pe:
            raise ValueError(f"VVAU folding rule C % PE == 0 broken: C={c}, PE={pe}")
        self.weights = w
        self.channels, self.kernel_elems, self.pe = c, kk, pe
        self.folds = c // pe
        self.in_bits, self.in_signed = in_bits, in_signed
        self.weight_bits = weight_bits
        self.acc_bits = _resolve_acc_bits("VVAU", w, in_bits, in_signed, acc_bits)
        self.in_lanes, self.out_lanes = pe, pe
        self.out_bits, self.out_signed = self.acc_bits, True
        self.latency = 3  # issue -> FIFO write: input/ROM register, product, accumulator
        self.cycles_per_pixel = self.folds * kk
        in_shape = signed(in_bits) if in_signed else unsigned(in_bits)
        # high in every cycle the PE array issues a MAC step (for utilisation counters)
        self.mac_active = Signal()
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(in_shape, pe))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(self.acc_bits), pe))),
        })

    def expected_cycles(self, pixels: int) -> int:
        """Stall-free cycles for ``pixels`` output pixels, first input to last output beat.

        ``(C/PE)*K*K*pixels`` (FINN) plus the fill latency ``latency + 2`` (= 5).
        """
        return self.cycles_per_pixel * pixels + self.latency + CreditedOutput.FIFO_LATENCY

    def rom_init(self) -> list[int]:
        """Weight ROM contents (see the class docstring for the word layout)."""
        return [_pack(self.weights[f * self.pe:(f + 1) * self.pe, k], self.weight_bits)
                for f in range(self.folds) for k in range(self.kernel_elems)]

    def elaborate(self, platform):
        m = Module()
        pe, kk, ib, wb = self.pe, self.kernel_elems, self.in_bits, self.weight_bits
        depth = self.folds * kk

        m.submodules.out = out = CreditedOutput(pe * self.acc_bits, self.latency)
        m.d.comb += [
            self.o.valid.eq(out.r_valid),
            self.o.payload.eq(out.r_data),
            out.r_ready.eq(self.o.ready),
        ]
        m.submodules.rom = rom = Memory(shape=unsigned(pe * wb), depth=depth,
                                        init=self.rom_init(),
                                        attrs=memory_attrs(self.ram_style, read_only=True))
        rom_rd = rom.read_port()

        # ---- issue stage -------------------------------------------------------------------
        k = Signal(range(kk))
        addr = Signal(range(depth))
        first_k, last_k = k == 0, k == kk - 1
        # only the beat that closes a channel fold needs an output slot
        slot_ok = ~last_k | out.can_reserve
        issue = Signal()
        m.d.comb += self.mac_active.eq(issue)
        m.d.comb += [
            self.i.ready.eq(slot_ok),
            issue.eq(slot_ok & self.i.valid),
            out.reserve.eq(issue & last_k),
            rom_rd.addr.eq(addr),
        ]
        with m.If(issue):
            with m.If(last_k):
                m.d.sync += k.eq(0)
            with m.Else():
                m.d.sync += k.eq(k + 1)
            if depth > 1:
                with m.If(addr == depth - 1):
                    m.d.sync += addr.eq(0)
                with m.Else():
                    m.d.sync += addr.eq(addr + 1)

        # ---- stage 1: input register, weight ROM read --------------------------------------
        x1 = Signal(pe * ib)
        v1, first1, last1 = Signal(), Signal(), Signal()
        m.d.sync += [x1.eq(self.i.payload.as_value()),
                     v1.eq(issue), first1.eq(first_k), last1.eq(last_k)]

        # ---- stage 2: products --------------------------------------------------------------
        x_lo, x_hi = value_range(ib, self.in_signed)
        w_lo, w_hi = value_range(wb, True)
        ends = [x_lo * w_lo, x_lo * w_hi, x_hi * w_lo, x_hi * w_hi]
        prod_shape = signed(signed_bits(min(ends), max(ends)))
        prods = [Signal(prod_shape, name=f"prod_{j}") for j in range(pe)]
        for j in range(pe):
            xj = x1[j * ib:(j + 1) * ib]
            xj = xj.as_signed() if self.in_signed else xj
            wj = rom_rd.data[j * wb:(j + 1) * wb].as_signed()
            prod = xj * wj
            if self.mult_style == "lut":
                prod = lut_multiplier(m, prod, prod_shape, f"mul_{j}")
            m.d.sync += prods[j].eq(prod)
        v2, first2, last2 = Signal(), Signal(), Signal()
        m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1)]

        # ---- stage 3: accumulate over the kernel; the last element's sum is the output -----
        accs = [Signal(signed(self.acc_bits), name=f"acc_{j}") for j in range(pe)]
        with m.If(v2):
            for j in range(pe):
                with m.If(first2):
                    m.d.sync += accs[j].eq(prods[j])
                with m.Else():
                    m.d.sync += accs[j].eq(accs[j] + prods[j])
        vo = Signal()
        m.d.sync += vo.eq(v2 & last2)
        m.d.comb += [out.w_en.eq(vo), out.w_data.eq(Cat(*accs))]
        return m
