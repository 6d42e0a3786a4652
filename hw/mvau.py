"""Matrix-vector unit (FINN's MatrixVectorActivation without thresholds).

Also home of the pieces the other accumulate-and-emit layers (``hw.vvau``, ``hw.requant``)
share: exact integer-range helpers and the credit-counted output FIFO that lets a stall-free
pipeline sit behind a back-pressured output stream.
"""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Elaboratable, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.memory_style import check_ram_style, memory_attrs

__all__ = [
    "MVAU",
    "CreditedOutput",
    "step_fold",
    "signed_bits",
    "value_range",
    "dot_range",
    "accumulator_bits",
]


# --------------------------------------------------------------------------------------------
# integer range helpers (exact, from the actual constants)
# --------------------------------------------------------------------------------------------

def signed_bits(lo: int, hi: int) -> int:
    """Fewest bits of a two's complement signal holding every integer in ``[lo, hi]`` (>= 1)."""
    lo, hi = int(lo), int(hi)
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def value_range(bits: int, is_signed: bool) -> tuple[int, int]:
    """``(min, max)`` of a ``bits``-wide signal."""
    if is_signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def dot_range(weights: np.ndarray, in_bits: int, in_signed: bool) -> tuple[int, int]:
    """Exact ``(min, max)`` of ``x @ weights.T`` over every input vector ``x`` of the type.

    Each term ``w*x`` reaches its extremes at an end of the input range, independently of the
    other terms, so the row bound is the sum of the per-term extremes; the result is the
    worst row. Because every term's range contains 0, every partial sum (the accumulator
    between folds) lies inside the same bound.
    """
    w = np.asarray(weights, dtype=object).reshape(-1, np.asarray(weights).shape[-1])
    x_lo, x_hi = value_range(in_bits, in_signed)
    a, b = w * x_lo, w * x_hi
    lo = np.minimum(a, b).sum(axis=1)
    hi = np.maximum(a, b).sum(axis=1)
    return int(min(lo.min(), 0)), int(max(hi.max(), 0))


#: Verilog attribute of the product wires of LUT multipliers (Vivado UG901 ``USE_DSP``)
LUT_MULT_ATTRS = {"use_dsp": "no"}


def lut_multiplier(m, product, shape, name: str):
    """``product`` through a wire of ``shape`` that carries ``use_dsp = "no"``: Vivado then
    builds the multiplier driving it in LUTs, and :func:`sw.compiler.resources.yosys_script` keeps
    Yosys from packing it into a DSP48 (Yosys itself ignores the attribute). Returns the wire
    (a combinational alias of ``product``)."""
    wire = Signal(shape, name=name, attrs=LUT_MULT_ATTRS)
    m.d.comb += wire.eq(product)
    return wire


def accumulator_bits(weights: np.ndarray, in_bits: int, in_signed: bool) -> int:
    """Width of the signed accumulator that holds every dot product exactly.

    This is FINN's ``minimize_accumulator_width`` idea: sized from the actual weights, not from
    the weight type, so it is never wider than the type bound
    ``in_bits + weight_bits + ceil(log2(MW)) (+1 if the input is unsigned)`` and usually
    narrower. ``weights`` is ``[rows, terms]`` (MVAU ``[MH, MW]``, VVAU ``[C, K*K]``).
    """
    return signed_bits(*dot_range(weights, in_bits, in_signed))


def _check_weights(name: str, weights, weight_bits: int) -> np.ndarray:
    w = np.asarray(weights)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"{name}: weights must be a non-empty 2-D array, got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.integer):
        if not np.all(np.mod(w, 1) == 0):
            raise ValueError(f"{name}: weights must be integers, got dtype {w.dtype}")
    w = w.astype(np.int64)
    lo, hi = value_range(weight_bits, True)
    if w.min() < lo or w.max() > hi:
        raise ValueError(
            f"{name}: weights span [{w.min()}, {w.max()}], outside int{weight_bits} [{lo}, {hi}]"
        )
    return w


def _resolve_acc_bits(name: str, weights, in_bits: int, in_signed: bool, acc_bits) -> int:
    need = accumulator_bits(weights, in_bits, in_signed)
    if acc_bits is None:
        return need
    if acc_bits < need:
        lo, hi = dot_range(weights, in_bits, in_signed)
        raise ValueError(
            f"{name}: acc_bits={acc_bits} cannot hold the accumulator range [{lo}, {hi}] "
            f"(needs {need} signed bits)"
        )
    return int(acc_bits)


def _pack(values, bits: int) -> int:
    """Lane 0 in the least significant bits; negative values in two's complement."""
    mask = (1 << bits) - 1
    word = 0
    for k, v in enumerate(values):
        word |= (int(v) & mask) << (k * bits)
    return word


# --------------------------------------------------------------------------------------------
# credit-counted output stage
# --------------------------------------------------------------------------------------------

def step_fold(m, fold, folds: int, issue) -> None:
    """Count ``fold`` through ``0 .. folds-1`` (channel folds of one pixel), one step per cycle
    in which ``issue`` is high; nothing to count for a single fold."""
    if folds > 1:
        with m.If(issue):
            with m.If(fold == folds - 1):
                m.d.sync += fold.eq(0)
            with m.Else():
                m.d.sync += fold.eq(fold + 1)


class CreditedOutput(Elaboratable):
    """Output FIFO behind a stall-free pipeline of fixed latency, with credit counting.

    The pipeline never stalls once a beat is issued, so back-pressure is handled only at
    issue: the producer raises ``reserve`` in the cycle it issues a beat that will arrive on
    ``w_en`` exactly ``latency`` cycles later, and may do so only while ``can_reserve`` is
    high. ``count`` (a register) is the number of reserved slots: results in flight plus
    results in the FIFO; it decrements when the output handshake completes. Since
    ``count <= depth`` always holds, the FIFO is never written when full (a result written
    at cycle ``t`` was counted since its issue, and it is the only thing that can fill its slot).

    Depth: a reserved slot is held from the cycle after issue until the output handshake
    ``latency + 2`` cycles after issue (the buffered FIFO shows a written word two cycles
    later), i.e. ``latency + 2`` cycles, and the decrement is seen one cycle after that. Full
    throughput (one result per cycle with ``o.ready`` always high) therefore needs
    ``depth = latency + 3``, which is what is used. ``can_reserve`` is registered state only,
    so no combinational path runs from ``o.ready`` to the producer's input ``ready``.

    Write-to-output latency: 2 cycles (``SyncFIFOBuffered``).
    """

    FIFO_LATENCY = 2

    def __init__(self, width: int, latency: int):
        self.width = width
        self.latency = latency
        self.depth = latency + 1 + self.FIFO_LATENCY
        self.reserve = Signal()
        self.can_reserve = Signal()
        self.w_en = Signal()
        self.w_data = Signal(width)
        self.r_valid = Signal()
        self.r_ready = Signal()
        self.r_data = Signal(width)

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.width, depth=self.depth)
        count = Signal(range(self.depth + 1))
        done = Signal()
        m.d.comb += [
            fifo.w_en.eq(self.w_en),
            fifo.w_data.eq(self.w_data),
            self.r_valid.eq(fifo.r_rdy),
            self.r_data.eq(fifo.r_data),
            fifo.r_en.eq(self.r_ready),
            done.eq(fifo.r_rdy & self.r_ready),
            self.can_reserve.eq(count < self.depth),
        ]
        take = self.reserve & self.can_reserve
        with m.If(take & ~done):
            m.d.sync += count.eq(count + 1)
        with m.Elif(~take & done):
            m.d.sync += count.eq(count - 1)
        return m


# --------------------------------------------------------------------------------------------
# MVAU
# --------------------------------------------------------------------------------------------

class MVAU(wiring.Component):
    """Folded matrix-vector unit: ``o = W @ x`` with integer accumulators (no thresholds).

    FINN's MatrixVectorActivation (``noActivation=1``) as an Amaranth component.

    Parameters:
        weights: ``[MH, MW]`` signed integers in the ``weight_bits`` range.
        pe: output lanes; ``MH % PE == 0``.
        simd: input lanes; ``MW % SIMD == 0``.
        in_bits, in_signed: input element type (uint8 by default).
        weight_bits: weight type (int4 by default; weights must fit).
        acc_bits: accumulator width; default :func:`accumulator_bits` (exact range from the
            actual weights, FINN's minimised accumulator). A smaller value is refused.
        mult_style: ``"lut"`` (default): ``PE*SIMD`` plain ``in_bits x weight_bits``
            products in LUTs: each product's wire carries Vivado's ``use_dsp = "no"``
            (UG901), which :mod:`sw.compiler.resources` applies in Yosys as well
            (:func:`lut_multiplier`).
            ``"dsp"``: the two PE lanes ``2q`` and ``2q+1`` of a SIMD lane share the input
            element ``x``, so one multiplier computes both products:
            ``P = x * (w1 * 2**K + w0) = (x*w1) * 2**K + x*w0`` with ``K`` the product
            width; ``x*w0`` is the sign-extended low ``K`` bits of ``P`` and
            ``x*w1 = (P >> K) + P[K-1]`` (adding back the borrow of a negative low product).
            Exact for every input, so bit-exact with ``"lut"``. This is Xilinx WP486's INT8
            packing ("Deep Learning with INT8 Optimization on Xilinx Devices") applied to
            4-bit weights: the packed weight comes from the DSP's pre-adder, ``x`` goes to
            the B port. The packed operand must fit the DSP48E1 pre-adder/A port (25 bits,
            UG479; DSP48E2: 27 bits, UG579) and ``x`` the 18-bit B port, else the
            constructor refuses. An odd last PE lane gets a multiplier of its own.
            Multipliers: ``ceil(PE/2)*SIMD`` (see :attr:`multipliers`).
        ram_style: FINN's ``ram_style`` of the weight ROM (``"auto"``, ``"block"``,
            ``"distributed"``, ``"ultra"``), written as Verilog ``ram_style``/``rom_style``
            attributes on it (:mod:`hw.memory_style`); ``"auto"`` (default) adds none.
            Another value raises ``ValueError``.

    Streams (``docs/hw_conventions.md``):
        ``i``: ``ArrayLayout(unsigned|signed(in_bits), SIMD)``; one input vector is
            ``SF = MW/SIMD`` beats, beat ``s`` lane ``j`` holding element ``s*SIMD + j``.
        ``o``: ``ArrayLayout(signed(acc_bits), PE)``; one output vector is ``NF = MH/PE``
            beats, beat ``n`` lane ``p`` holding ``hw.golden.mvau(x, W)[n*PE + p]``.

    Folding and cycles: ``NF*SF`` cycles per vector (FINN's formula
    ``(MH/PE)*(MW/SIMD)*pixels``). Neuron fold 0 consumes the ``SF`` input beats and writes
    them to an input buffer (``SF`` words of ``SIMD*in_bits``, only when ``NF > 1``); folds
    ``1..NF-1`` re-read the buffer, so input is accepted only during fold 0 (as in FINN).
    Vectors run back to back with no bubble.

    Datapath (stall-free, back-pressure absorbed at issue by :class:`CreditedOutput`):
        issue (weight ROM and buffer addresses, input register) -> ROM/buffer data with the
        ``PE*SIMD`` products registered (each ``in_bits x weight_bits`` multiplier has
        registered inputs and output: DSP- or LUT-mappable) -> [per-PE SIMD adder tree
        registered, only when SIMD > 1] -> accumulator register (clear on the first synapse
        fold) -> output FIFO on the last synapse fold.
        Weight ROM: ``amaranth.lib.memory.Memory``, depth ``NF*SF``, width
        ``PE*SIMD*weight_bits``, synchronous read (BRAM/LUTRAM); word ``n*SF + s`` lane
        ``p*SIMD + j`` holds ``W[n*PE + p, s*SIMD + j]``.

    :meth:`expected_cycles`: ``NF*SF*pixels + latency + 2`` from the first input handshake
    to the last output handshake inclusive, with ``latency`` = issue-to-FIFO-write cycles
    (3, or 4 when SIMD > 1) and 2 the FIFO's write-to-read latency.
    """

    #: DSP48E1 (7-series, UG479) port widths, the smaller of the two families we target
    DSP_A_BITS, DSP_B_BITS = 25, 18

    def __init__(self, *, weights: np.ndarray, pe: int, simd: int, in_bits: int = 8,
                 in_signed: bool = False, weight_bits: int = 4, acc_bits: int | None = None,
                 mult_style: str = "lut", ram_style: str = "auto"):
        w = _check_weights("MVAU", weights, weight_bits)
        self.ram_style = check_ram_style("MVAU", ram_style)
        mh, mw = w.shape
        if pe < 1 or mh % pe:
            raise ValueError(f"MVAU folding rule MH % PE == 0 broken: MH={mh}, PE={pe}")
        if simd < 1 or mw % simd:
            raise ValueError(f"MVAU folding rule MW % SIMD == 0 broken: MW={mw}, SIMD={simd}")
        self.weights = w
        self.mh, self.mw, self.pe, self.simd = mh, mw, pe, simd
        self.nf, self.sf = mh // pe, mw // simd
        self.in_bits, self.in_signed = in_bits, in_signed
        self.weight_bits = weight_bits
        self.acc_bits = _resolve_acc_bits("MVAU", w, in_bits, in_signed, acc_bits)
        x_lo, x_hi = value_range(in_bits, in_signed)
        w_lo, w_hi = value_range(weight_bits, True)
        ends = [x_lo * w_lo, x_lo * w_hi, x_hi * w_lo, x_hi * w_hi]
        #: width of one product (signed), the packing offset K of ``mult_style="dsp"``
        self.prod_bits = signed_bits(min(ends), max(ends))
        if mult_style not in ("lut", "dsp"):
            raise ValueError(f"MVAU: mult_style must be 'lut' or 'dsp', got {mult_style!r}")
        if mult_style == "dsp":
            k = self.prod_bits
            a_bits = signed_bits(w_lo * (1 << k) + w_lo, w_hi * (1 << k) + w_hi)
            b_bits = in_bits + (0 if in_signed else 1)
            if a_bits > self.DSP_A_BITS:
                raise ValueError(
                    f"MVAU: mult_style='dsp': packed weight pair of {a_bits} bits exceeds the "
                    f"DSP48 A port ({self.DSP_A_BITS} bits); use mult_style='lut'")
            if b_bits > self.DSP_B_BITS:
                raise ValueError(
                    f"MVAU: mult_style='dsp': input of {b_bits} bits exceeds the DSP48 B port "
                    f"({self.DSP_B_BITS} bits); use mult_style='lut'")
        self.mult_style = mult_style
        # payload shape information for the compiler
        self.in_lanes, self.out_lanes = simd, pe
        self.out_bits, self.out_signed = self.acc_bits, True
        # issue -> FIFO write: input/ROM register, product register, [tree register], acc
        self.latency = 3 + (1 if simd > 1 else 0)
        self.cycles_per_vector = self.nf * self.sf
        in_shape = signed(in_bits) if in_signed else unsigned(in_bits)
        # high in every cycle the PE array issues a MAC step (for utilisation counters)
        self.mac_active = Signal()
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(in_shape, simd))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(self.acc_bits), pe))),
        })

    @property
    def multipliers(self) -> int:
        """Hardware multipliers: ``PE*SIMD`` (``"lut"``) or ``ceil(PE/2)*SIMD`` (``"dsp"``)."""
        per_lane = self.pe if self.mult_style == "lut" else (self.pe + 1) // 2
        return per_lane * self.simd

    def expected_cycles(self, pixels: int) -> int:
        """Stall-free cycles for ``pixels`` input vectors, first input to last output beat.

        ``(MH/PE)*(MW/SIMD)*pixels`` (FINN) plus the fill latency ``latency + 2``.
        """
        return self.cycles_per_vector * pixels + self.latency + CreditedOutput.FIFO_LATENCY

    def rom_init(self) -> list[int]:
        """Weight ROM contents (see the class docstring for the word layout)."""
        pe, simd, wb = self.pe, self.simd, self.weight_bits
        words = []
        for n in range(self.nf):
            for s in range(self.sf):
                block = self.weights[n * pe:(n + 1) * pe, s * simd:(s + 1) * simd]
                words.append(_pack(block.reshape(-1), wb))
        return words

    def elaborate(self, platform):
        m = Module()
        pe, simd, nf_n, sf_n = self.pe, self.simd, self.nf, self.sf
        wb, ib = self.weight_bits, self.in_bits

        m.submodules.out = out = CreditedOutput(pe * self.acc_bits, self.latency)
        m.d.comb += [
            self.o.valid.eq(out.r_valid),
            self.o.payload.eq(out.r_data),
            out.r_ready.eq(self.o.ready),
        ]

        m.submodules.rom = rom = Memory(shape=unsigned(pe * simd * wb), depth=nf_n * sf_n,
                                        init=self.rom_init(),
                                        attrs=memory_attrs(self.ram_style, read_only=True))
        rom_rd = rom.read_port()

        # ---- issue stage -------------------------------------------------------------------
        nf = Signal(range(nf_n))
        sf = Signal(range(sf_n))
        addr = Signal(range(nf_n * sf_n))
        first_sf = sf == 0
        last_sf = sf == sf_n - 1
        fold0 = nf == 0
        # only the beat that closes an accumulation needs an output slot
        slot_ok = ~last_sf | out.can_reserve
        issue = Signal()
        m.d.comb += self.mac_active.eq(issue)
        m.d.comb += [
            self.i.ready.eq(fold0 & slot_ok),
            issue.eq(slot_ok & (~fold0 | self.i.valid)),
            out.reserve.eq(issue & last_sf),
            rom_rd.addr.eq(addr),
        ]
        with m.If(issue):
            if nf_n * sf_n > 1:
                with m.If(addr == nf_n * sf_n - 1):
                    m.d.sync += addr.eq(0)
                with m.Else():
                    m.d.sync += addr.eq(addr + 1)
            with m.If(last_sf):
                m.d.sync += sf.eq(0)
                with m.If(nf == nf_n - 1):
                    m.d.sync += nf.eq(0)
                with m.Else():
                    m.d.sync += nf.eq(nf + 1)
            with m.Else():
                m.d.sync += sf.eq(sf + 1)

        # ---- stage 1: input register / input buffer read, weight ROM read -----------------
        x_in = Signal(simd * ib)
        m.d.sync += x_in.eq(self.i.payload.as_value())
        v1, first1, last1, fold0_1 = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [v1.eq(issue), first1.eq(first_sf), last1.eq(last_sf), fold0_1.eq(fold0)]
        if nf_n > 1:
            # folds after the first re-read the vector that fold 0 took from the stream
            m.submodules.ibuf = ibuf = Memory(shape=unsigned(simd * ib), depth=sf_n, init=[])
            ib_wr = ibuf.write_port()
            ib_rd = ibuf.read_port()
            m.d.comb += [
                ib_wr.addr.eq(sf),
                ib_wr.data.eq(self.i.payload.as_value()),
                ib_wr.en.eq(issue & fold0),
                ib_rd.addr.eq(sf),
            ]
            x1 = Signal(simd * ib)
            m.d.comb += x1.eq(x_in)
            with m.If(~fold0_1):
                m.d.comb += x1.eq(ib_rd.data)
        else:
            x1 = x_in

        def lane_x(s):
            v = x1[s * ib:(s + 1) * ib]
            return v.as_signed() if self.in_signed else v

        def lane_w(p, s):
            k = p * simd + s
            return rom_rd.data[k * wb:(k + 1) * wb].as_signed()

        # ---- stage 2: products (registered multiplier outputs) -----------------------------
        k = self.prod_bits
        prods = [[Signal(signed(k), name=f"prod_{p}_{s}") for s in range(simd)]
                 for p in range(pe)]
        paired = pe // 2 if self.mult_style == "dsp" else 0
        for q in range(paired):
            for s in range(simd):
                # one multiply, two products (class docstring): the packed weight is the
                # pre-adder's output, P the registered multiplier output
                packed = (lane_w(2 * q + 1, s) << k) + lane_w(2 * q, s)
                prod = Signal(signed(k + len(packed) + ib + 1), name=f"dsp_{q}_{s}")
                m.d.sync += prod.eq(lane_x(s) * packed)
                m.d.comb += [
                    prods[2 * q][s].eq(prod[:k].as_signed()),
                    prods[2 * q + 1][s].eq((prod >> k) + prod[k - 1]),
                ]
        for p in range(2 * paired, pe):
            for s in range(simd):
                prod = lane_x(s) * lane_w(p, s)
                if self.mult_style == "lut":
                    prod = lut_multiplier(m, prod, signed(k), f"mul_{p}_{s}")
                m.d.sync += prods[p][s].eq(prod)
        v2, first2, last2 = Signal(), Signal(), Signal()
        m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1)]

        # ---- stage 3 (SIMD > 1): per-PE adder tree, registered ----------------------------
        acc_shape = signed(self.acc_bits)
        if simd > 1:
            dots = [Signal(acc_shape, name=f"dot_{p}") for p in range(pe)]
            for p in range(pe):
                m.d.sync += dots[p].eq(_tree_sum(prods[p]))
            va, firsta, lasta = Signal(), Signal(), Signal()
            m.d.sync += [va.eq(v2), firsta.eq(first2), lasta.eq(last2)]
        else:
            dots = [prods[p][0] for p in range(pe)]
            va, firsta, lasta = v2, first2, last2

        # ---- accumulate; the last synapse fold's sum goes to the output FIFO --------------
        accs = [Signal(acc_shape, name=f"acc_{p}") for p in range(pe)]
        with m.If(va):
            for p in range(pe):
                with m.If(firsta):
                    m.d.sync += accs[p].eq(dots[p])
                with m.Else():
                    m.d.sync += accs[p].eq(accs[p] + dots[p])
        vo = Signal()
        m.d.sync += vo.eq(va & lasta)
        m.d.comb += [
            out.w_en.eq(vo),
            out.w_data.eq(_cat_lanes(accs)),
        ]
        return m


def _tree_sum(values):
    """Balanced adder tree (depth ceil(log2(n))) rather than a chain."""
    values = list(values)
    while len(values) > 1:
        nxt = [values[k] + values[k + 1] for k in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


def _cat_lanes(lanes):
    """Lane 0 in the least significant bits (``data.ArrayLayout`` order)."""
    return Cat(*lanes)
