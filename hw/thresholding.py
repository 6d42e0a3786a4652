"""Multi-threshold activation unit: FINN's Thresholding (MultiThreshold) by pipelined binary search."""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Const, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.memory_style import check_ram_style, memory_attrs
from hw.mvau import CreditedOutput, signed_bits, step_fold, value_range

__all__ = ["Thresholding", "threshold_geometry"]


def _fail(msg: str) -> ValueError:
    return ValueError(f"Thresholding: {msg}")


def threshold_geometry(thresholds, channels: int, lanes: int, in_bits: int,
                       in_signed: bool) -> dict:
    """Checked, clipped and padded threshold table and the sizes of its memories.

    Every number :class:`Thresholding` builds its memories from, without building it (the
    compiler's estimate, :func:`sw.compiler.estimate.layer_resources`, calls this through
    :func:`hw.registry.threshold_memories`).

    Args:
        thresholds: ``[C, N]`` or ``[1, N]`` integers (integer-valued floats are accepted),
            each row non-decreasing.
        channels: C.
        lanes: PE; ``C % PE == 0``.
        in_bits, in_signed: input element type.

    Returns:
        ``{"table": [rows, 2**stages - 1] int array (object dtype, exact), "stages": M,
        "n": N, "shared": rows == 1, "thr_bits": width of a stored threshold, "thr_signed",
        "memories": [(depth, width), ...] one per lane and stage with depth > 1 (depth-1
        tables are constants)}``. The table is the thresholds clipped to
        ``[in_min, in_max + 1]`` (FINN's ``RoundAndClipThresholds``: outside that range a
        threshold is always or never reached) and padded on the right with ``in_max + 1``
        (never reached) up to ``2**M - 1`` columns, ``M = bit_length(N)`` (FINN's
        ``$clog2(N+1)``), so that the binary search is uniform. ``thr_bits`` is the fewest
        bits of the table's actual range (signed for a signed input): at most
        ``in_bits + 1``, FINN's threshold type after rounding.

    Raises:
        ValueError: thresholds not a non-empty 2-D integer array, a row count that is neither
            C nor 1, an unsorted row, ``C % PE != 0``, or ``in_bits < 1``.
    """
    t = np.asarray(thresholds)
    if t.ndim != 2 or t.shape[1] == 0:
        raise _fail(f"thresholds must be a [C, N] or [1, N] array with N >= 1, got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        if not np.issubdtype(t.dtype, np.number) or not np.all(np.mod(t, 1) == 0):
            raise _fail(f"thresholds must be integers (run FINN's RoundAndClipThresholds on "
                        f"integer inputs first), got dtype {t.dtype}")
    if t.shape[0] not in (1, channels):
        raise _fail(f"thresholds have {t.shape[0]} rows, expected {channels} (one per channel) "
                    f"or 1 (shared)")
    if lanes < 1 or channels % lanes:
        raise _fail(f"folding rule C % PE == 0 broken: C={channels}, PE={lanes}")
    if in_bits < 1:
        raise _fail(f"in_bits must be >= 1, got {in_bits}")
    rows = np.array([[int(v) for v in row] for row in t], dtype=object)
    for r, row in enumerate(rows):
        if any(row[i] > row[i + 1] for i in range(len(row) - 1)):
            i = next(i for i in range(len(row) - 1) if row[i] > row[i + 1])
            raise _fail(f"threshold row {r} is not sorted ascending: T[{r}, {i}] = {row[i]} > "
                        f"T[{r}, {i + 1}] = {row[i + 1]}")
    n = rows.shape[1]
    stages = n.bit_length()
    lo, hi = value_range(in_bits, in_signed)
    table = np.full((rows.shape[0], (1 << stages) - 1), hi + 1, dtype=object)
    table[:, :n] = np.clip(rows, lo, hi + 1)
    t_lo, t_hi = int(table.min()), int(table.max())
    thr_bits = signed_bits(t_lo, t_hi) if in_signed else max(1, t_hi.bit_length())
    shared = rows.shape[0] == 1
    folds = channels // lanes
    memories = []
    for s in range(stages):
        depth = (1 if shared else folds) << s
        if depth > 1:
            memories += [(depth, thr_bits)] * lanes
    return {"table": table, "stages": stages, "n": n, "shared": shared, "thr_bits": thr_bits,
            "thr_signed": bool(in_signed), "memories": memories}


class Thresholding(wiring.Component):
    """``y[c] = out_bias + #{i : x[c] >= T[c, i]}``, per channel: FINN's Thresholding.

    Exactly :func:`hw.golden.thresholding` (qonnx's ``multithreshold``, ``>=``). Built as
    FINN's RTL thresholding (``finn-rtllib/thresholding/hdl/thresholding.sv``, Preusser): a
    pipelined binary search over the sorted thresholds, one comparison stage per result bit,
    the thresholds of each stage in their own ROM per lane, addressed by the channel fold and
    the result bits found so far.

    Parameters:
        thresholds: ``[C, N]`` integers, one non-decreasing row per channel, or ``[1, N]`` (one
            set shared by every channel). Clipped to ``[in_min, in_max + 1]`` and padded to
            ``2**M - 1`` with ``in_max + 1`` (:func:`threshold_geometry`).
        channels: C.
        lanes: PE, channels per beat; ``C % PE == 0``.
        in_bits, in_signed: input element type (MVAU/VVAU accumulators: signed).
        out_bits, out_signed: output element type (the graph's output tensor); every value
            ``out_bias .. out_bias + N`` must fit (so ``N <= 2**out_bits - 1``).
        out_bias: FINN's ``ActVal``: 0 for unsigned outputs, ``-2**(b-1)`` for signed ``b``
            bits.
        ram_style: FINN's ``ram_style`` of the threshold ROMs (``"auto"``, ``"block"``,
            ``"distributed"``, ``"ultra"``; :mod:`hw.memory_style`); another value raises
            ``ValueError``.

    Streams (``docs/hw_conventions.md``):
        ``i``: ``ArrayLayout(signed|unsigned(in_bits), PE)``: per pixel ``C/PE`` beats, lane
            ``j`` of beat ``f`` holding channel ``f*PE + j`` (the MVAU/VVAU output order).
        ``o``: ``ArrayLayout(signed|unsigned(out_bits), PE)``, same order.

    Search: ``M = bit_length(N)`` stages (FINN's ``$clog2(N+1)``). Stage ``s`` decides result
    bit ``M-1-s``: with the ``s`` bits ``p`` found so far it compares ``x >= T[c, (2p+1) *
    2**(M-1-s) - 1]`` (an index of the padded, sorted table); after ``M`` stages the bits are
    the count of thresholds ``<= x``. Stage ``s`` of lane ``j`` reads a ROM of depth
    ``(C/PE) * 2**s`` (``2**s`` for shared thresholds), word ``f * 2**s + p`` holding that
    threshold of channel ``f*PE + j``; a depth-1 table (stage 0 with ``C == PE`` or shared
    thresholds) is a constant. Threshold memory in all: ``rows * (2**M - 1) * thr_bits``
    bits, ``rows = C`` (``PE`` for shared thresholds: each lane keeps a copy, as FINN's
    ``get_pe_mem_geometries``).

    Datapath (stall-free, back-pressure absorbed at issue by :class:`hw.mvau.CreditedOutput`):
    issue (channel-fold counter) -> ``M`` stages, each a register of (value, bits so far,
    fold) beside its ROM's synchronous read, then the comparison (combinational) feeding the
    next stage's ROM address -> ``out_bias`` added on the way into the output FIFO. This is
    FINN's ``DEEP_PIPELINE = 0`` form (no extra register between a comparison and the next
    stage's ROM address); FINN's padding-free ``Scope`` masking is replaced by padding with
    ``in_max + 1``.

    Cycles: ``C/PE`` per pixel, one beat per cycle (FINN's ``get_exp_cycles``);
    :meth:`expected_cycles` adds the fill latency ``M + 2`` (``latency = M`` issue to FIFO
    write, 2 FIFO write to output).

    Raises:
        ValueError: bad thresholds or folding (:func:`threshold_geometry`), an output range
            ``[out_bias, out_bias + N]`` that ``out_bits`` cannot hold, ``out_bits < 1``, or a
            ``ram_style`` outside FINN's four values.
    """

    def __init__(self, *, thresholds, channels: int, lanes: int, in_bits: int,
                 in_signed: bool, out_bits: int, out_signed: bool, out_bias: int = 0,
                 ram_style: str = "auto"):
        self.ram_style = check_ram_style("Thresholding", ram_style)
        geo = threshold_geometry(thresholds, channels, lanes, in_bits, in_signed)
        if out_bits < 1:
            raise _fail(f"out_bits must be >= 1, got {out_bits}")
        n, out_bias = geo["n"], int(out_bias)
        o_lo, o_hi = value_range(out_bits, out_signed)
        if out_bias < o_lo or out_bias + n > o_hi:
            raise _fail(f"outputs {out_bias}..{out_bias + n} ({n} thresholds, out_bias "
                        f"{out_bias}) do not fit {'int' if out_signed else 'uint'}{out_bits} "
                        f"[{o_lo}, {o_hi}]" + (f"; at most {(1 << out_bits) - 1} thresholds fit "
                                                f"{out_bits} bits" if n >= 1 << out_bits else ""))
        self.table, self.stages, self.n = geo["table"], geo["stages"], n
        self.shared, self.thr_bits = geo["shared"], geo["thr_bits"]
        self.memories = geo["memories"]
        self.channels, self.lanes, self.folds = channels, lanes, channels // lanes
        self.out_bias = out_bias

        # payload shape information for the compiler
        self.in_bits, self.in_signed, self.in_lanes = int(in_bits), bool(in_signed), lanes
        self.out_bits, self.out_signed, self.out_lanes = int(out_bits), bool(out_signed), lanes
        self.in_shape = signed(self.in_bits) if self.in_signed else unsigned(self.in_bits)
        self.out_shape = signed(self.out_bits) if self.out_signed else unsigned(self.out_bits)
        self.thr_shape = signed(self.thr_bits) if self.in_signed else unsigned(self.thr_bits)
        self.latency = self.stages  # issue -> FIFO write: one register per stage
        self.cycles_per_pixel = self.folds
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(self.in_shape, lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(self.out_shape, lanes))),
        })

    def expected_cycles(self, pixels: int) -> int:
        """Stall-free cycles for ``pixels`` pixels, first input to last output beat:
        ``(C/PE) * pixels + M + 2``."""
        return self.cycles_per_pixel * pixels + self.latency + CreditedOutput.FIFO_LATENCY

    def stage_init(self, stage: int, lane: int) -> list[int]:
        """Contents of the ROM of ``stage`` and ``lane``: word ``f * 2**stage + p`` (``f``
        only for per-channel thresholds) holds ``T[f*PE + lane, (2p+1) * 2**(M-1-stage) - 1]``
        of the padded table."""
        sn = self.stages - 1 - stage
        folds = 1 if self.shared else self.folds
        words = []
        for f in range(folds):
            row = self.table[0 if self.shared else f * self.lanes + lane]
            for p in range(1 << stage):
                words.append(int(row[(((2 * p) + 1) << sn) - 1]))
        return words

    def elaborate(self, platform):
        m = Module()
        ln, folds, stages = self.lanes, self.folds, self.stages

        m.submodules.out = out = CreditedOutput(ln * self.out_bits, self.latency)
        m.d.comb += [
            self.o.valid.eq(out.r_valid),
            self.o.payload.eq(out.r_data),
            out.r_ready.eq(self.o.ready),
        ]

        # ---- issue: every beat yields one output beat, so each needs a slot ----------------
        fold = Signal(range(folds), name="fold")
        issue = Signal()
        m.d.comb += [
            self.i.ready.eq(out.can_reserve),
            issue.eq(out.can_reserve & self.i.valid),
            out.reserve.eq(issue),
        ]
        step_fold(m, fold, folds, issue)

        # stage inputs (combinational): valid, fold, per-lane value and bits found so far
        valid_in, fold_in = issue, fold
        vals_in = [self.i.payload[j] for j in range(ln)]
        bits_in = [Const(0, 0) for _ in range(ln)]
        for s in range(stages):
            v_r = Signal(name=f"s{s}_valid")
            f_r = Signal(range(folds), name=f"s{s}_fold")
            m.d.sync += [v_r.eq(valid_in), f_r.eq(fold_in)]
            vals_next, bits_next = [], []
            for j in range(ln):
                x_r = Signal(self.in_shape, name=f"s{s}_x_{j}")
                p_r = Signal(s, name=f"s{s}_p_{j}")
                m.d.sync += [x_r.eq(vals_in[j]), p_r.eq(bits_in[j])]
                init = self.stage_init(s, j)
                if len(init) == 1:
                    thr = Const(init[0], self.thr_shape)
                else:
                    rom = Memory(shape=self.thr_shape, depth=len(init), init=init,
                                 attrs=memory_attrs(self.ram_style, read_only=True))
                    m.submodules[f"thr_s{s}_l{j}"] = rom
                    rd = rom.read_port()
                    addr = bits_in[j] if self.shared else Cat(bits_in[j], fold_in)
                    m.d.comb += rd.addr.eq(addr)
                    thr = rd.data
                ge = Signal(name=f"s{s}_ge_{j}")
                m.d.comb += ge.eq(x_r >= thr)
                vals_next.append(x_r)
                bits_next.append(Cat(ge, p_r))  # p*2 + bit: the bits so far, MSB first
            valid_in, fold_in, vals_in, bits_in = v_r, f_r, vals_next, bits_next

        # ---- count + out_bias into the output FIFO -----------------------------------------
        lanes_out = []
        for j in range(ln):
            q = Signal(self.out_shape, name=f"q_{j}")
            m.d.comb += q.eq(bits_in[j] + self.out_bias)
            lanes_out.append(q)
        m.d.comb += [out.w_en.eq(valid_in), out.w_data.eq(Cat(*lanes_out))]
        return m
