"""Per-layer estimates of a folded hardware graph: cycles, II, MACs, memory, LUT, DSP, DRAM.

Models (sources):

Every model below is held by the layer's op class (:mod:`hw.ops`, one
:class:`hw.ops.base.HWOp` subclass per op); this module only dispatches and sums.

* Cycles: the hardware's own model, :meth:`hw.ops.base.HWOp.expected_cycles` (FINN's formulas
  plus fill latency, e.g. MVAU ``(MH/PE)*(MW/SIMD)*pixels``); an error in it is raised, never
  replaced by another formula. :func:`analytic_cycles` (FINN's formulas without fill
  latency) drives the folding search (:mod:`sw.compiler.autofold`), where building components would
  be too slow.
* II of the pipeline: the largest per-layer cycle count (the bottleneck), FINN's
  definition; projected fps = clock / II.
* Memory (weights, line buffers): FINN's BRAM estimation (``MatrixVectorActivation.
  bram_estimation``): a memory of ``depth`` words of ``width`` bits uses BRAM18s by the
  width/depth aspect ratios 16Kx1, 8Kx2, 4Kx4, 2Kx9, 1Kx18, 512x36; a memory of depth <= 128
  goes to LUTRAM at ``width * ceil(depth/64)`` LUTs (FINN's distributed-RAM term) under
  ``ram_style`` auto; ``block`` / ``distributed`` / ``ultra`` (URAM, 4K x 72) force a style,
  per layer, as :mod:`sw.compiler.autofold` chooses (FINN's ``ram_style`` values). External weights (FINN's ``mem_mode
  external``) use no on-chip memory but DRAM bandwidth: the weight stream is replayed for
  every input vector, ``MH*MW*W/8 * pixels`` bytes per frame.
* Products: ``W``-bit weight x ``A``-bit activation. In LUTs at FINN's (FINN-R, Blott et al.
  2018) ``(2*ceil((W+A)/6) - 1) * (W+A)`` LUTs per product (36 for 4x8); in DSP48 slices
  as the hardware builds them: an MVAU packs PE lanes ``2q, 2q+1`` into one DSP (the
  shared-operand packing of Xilinx WP486, :attr:`hw.mvau.MVAU.multipliers`: ``ceil(PE/2) *
  SIMD``), a VVAU needs one DSP per lane (its lanes multiply different inputs). Adder tree ``(W+A)*(2*SIMD-1)`` and accumulator ``acc_bits`` LUTs per PE;
  ``c0 = 300`` LUTs of control per MVAU/VVAU (FINN's constant). Requantiser: one DSP48 per
  lane (16-bit multiplier x accumulator). Thresholding (FINN's RTL binary search): threshold
  ROMs per lane and search stage as the component builds them (:meth:`hw.ops.
  activation.ThresholdingOp.threshold_memories`, FINN's ``get_pe_mem_geometries``: in all ``C * (2**M - 1)`` thresholds
  of ``in_bits + 1`` bits at most), one LUT per compared bit per lane and stage, plus the
  ``out_bias`` adder and 50 of control. Stream layers: ``2 * lanes * bits`` LUTs + 50.
* Pixel buffers, sized by the hardware itself (:func:`hw.registry.buffer_memory`, from the
  numbers each component builds its ``Memory`` from, so estimate and RTL cannot drift apart):
  a sliding window generator's line buffer holds ``(K-1)*dilation + 1 + stride`` rows, the
  deformable sampler's ``2N + 2``, the upsampler's 2 (ping-pong), each row ``W * C/lanes``
  words of ``lanes*bits`` bits (a sliding window with ``window_buffer "minimal"``: ``(K-1)*
  dilation`` rows plus ``(K-1)*dilation + 1 + stride`` pixels, and its cycles from the
  hardware's event model, :func:`hw.ops.window.minimal_window_cycles`); memory as above, plus ``200 + 2*lanes*bits`` LUTs of
  address and control logic. ChannelShuffle keeps its two pixels in ``lanes`` banks, each a
  memory of ``2*C/lanes`` words of ``bits`` bits (:func:`hw.registry.buffer_memory`), with
  as many read ports as output lanes can hit the bank in one beat
  (:func:`hw.registry.buffer_read_ports`; 1 at PE 1): each read port is a copy of the bank
  (LUTRAM replicates per read port; a simple-dual-port BRAM has one read port), so memory =
  copies x one bank's BRAM18 / URAM / LUTRAM, under ``ram_style`` like the others; LUTs 50 of
  control, one ``addr_bits`` adder per lane counter, per read port and for the write address,
  and the read crossbar (:func:`hw.registry.read_crossbar`: ``bits`` multiplexers of
  :func:`mux_luts` per output lane, ``addr_bits`` per read port whose address comes from
  several lanes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hw.graph import HWGraph, HWLayer
from hw.ops import op_for
from hw.ops.memory import mem_style_of


@dataclass
class LayerEstimate:
    """Estimates of one layer for one frame (units in the field names / comments)."""

    name: str
    op: str
    folding: dict
    cycles: int  # expected cycles per frame, stall-free, including fill latency
    macs: int  # multiply-accumulates per frame
    cycle_model: str = "registry"  # the component's own model (hw.registry); the only one
    weight_bits: int = 0  # bits of weights (or requant parameters) stored
    bram18: int = 0
    uram: int = 0
    lutram_luts: int = 0
    luts: int = 0  # logic LUTs incl. LUTRAM
    dsps: int = 0
    dram_bytes_per_frame: int = 0  # external weights only
    buffer_bits: int = 0  # bits of the pixel buffer (memory depth x width, or registers)
    ffs: int = 0  # flip-flops of register pixel buffers (none since ChannelShuffle has memories)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def layer_macs(graph: HWGraph, layer: HWLayer) -> int:
    """Multiply-accumulates per frame of one layer (:meth:`hw.ops.base.HWOp.macs`)."""
    return op_for(graph, layer).macs()


def analytic_cycles(graph: HWGraph, layer: HWLayer) -> int:
    """Cycles per frame from FINN's formulas (no fill latency), the layer's op class's
    :meth:`~hw.ops.base.HWOp.analytic_cycles`.

    Raises:
        hw.ops.UnknownOpError: an op without an op class.
    """
    return op_for(graph, layer).analytic_cycles()


def layer_resources(graph: HWGraph, layer: HWLayer, mult_style: str = "lut",
                    mem_style: str = "auto") -> dict:
    """Resources of one folded layer, the layer's op class's
    :meth:`~hw.ops.base.HWOp.resources` (models in the module docstring).

    Args:
        mult_style: ``lut`` or ``dsp`` for the MVAU/VVAU products.
        mem_style: ``auto`` (LUTRAM if shallow, else BRAM), ``bram``, ``lutram`` or ``uram``
            for the layer's memory: MVAU/VVAU weights, Requant parameters, or the line /
            ping-pong buffer of a SlidingWindow, DeformableSampler, Upsample (FINN's
            ``ram_style`` of MVAU, Thresholding and ConvolutionInputGenerator), or the banked
            pixel buffer of a ChannelShuffle; ignored by layers without a memory.

    Returns:
        ``{"bram18", "uram", "lutram_luts", "luts", "dsps", "weight_bits", "dram_bytes_per_frame",
        "buffer_bits", "ffs"}``; ``buffer_bits`` is the pixel buffer's size in bits (memory
        ``depth * word_bits`` of a SlidingWindow/DeformableSampler/Upsample, ``PE`` banks of
        that of a ChannelShuffle), exactly what the component builds; ``ffs`` is 0.

    Raises:
        ValueError: an unknown ``mem_style``, an op without an op class, or thresholds the
            Thresholding component refuses.
    """
    return op_for(graph, layer).resources(mult_style, mem_style)


def estimate(graph: HWGraph, mult_styles: dict | None = None, mem_styles: dict | None = None
             ) -> list[LayerEstimate]:
    """Expected cycles, MACs and resources of every layer of a folded graph.

    Args:
        mult_styles / mem_styles: per-layer ``lut``/``dsp`` and ``auto``/``bram``/``lutram``/``uram``
            choices (default: each layer's ``resType`` / ``ram_style`` from its folding, as
            :func:`sw.compiler.autofold.choose_folding` sets them; else LUT products, auto memory).
    """
    out = []
    for l in graph.layers:
        cycles = op_for(graph, l).expected_cycles()
        mult = (mult_styles or {}).get(l.name, l.folding.get("resType", "lut"))
        mem = (mem_styles or {}).get(l.name) or mem_style_of(l.folding.get("ram_style"))
        res = layer_resources(graph, l, mult, mem)
        out.append(LayerEstimate(l.name, l.op, dict(l.folding), cycles, layer_macs(graph, l), "registry",
                                 **res))
    return out


def bottleneck(estimates: list[LayerEstimate]) -> LayerEstimate:
    """The layer that sets the pipeline's initiation interval (most cycles per frame)."""
    return max(estimates, key=lambda e: e.cycles)


def totals(estimates: list[LayerEstimate], clock_mhz: float) -> dict:
    """Whole-accelerator figures: II (cycles), fps at ``clock_mhz``, MACs, resources, DRAM GB/s."""
    bn = bottleneck(estimates)
    fps = clock_mhz * 1e6 / bn.cycles
    keys = ("macs", "bram18", "uram", "lutram_luts", "luts", "dsps", "weight_bits", "dram_bytes_per_frame",
            "buffer_bits", "ffs")
    t = {k: int(sum(getattr(e, k) for e in estimates)) for k in keys}
    t.update(ii_cycles=bn.cycles, bottleneck=bn.name, clock_mhz=clock_mhz, fps=fps,
             dram_gbps=t["dram_bytes_per_frame"] * fps / 1e9, gmac_per_frame=t["macs"] / 1e9)
    return t


def format_table(estimates: list[LayerEstimate]) -> str:
    """Plain-text table of the estimates (one row per layer, a total row last); the name
    column is as wide as the longest layer name."""
    w = max([len("layer")] + [len(e.name) for e in estimates]) + 2
    rows = [f"{'layer':<{w}}{'op':<18}{'folding':<24}{'cycles':>10}{'MACs':>12}{'BRAM18':>8}{'LUT':>8}{'DSP':>6}"]
    for e in estimates:
        parts = [f"{k}={v}" for k, v in e.folding.items() if k in ("PE", "SIMD")]
        parts += ["dsp"] if e.folding.get("resType") == "dsp" else []
        parts += ["ext"] if e.folding.get("mem_mode") == "external" else []
        fold = ",".join(parts) or "-"
        rows.append(f"{e.name:<{w}}{e.op:<18}{fold:<24}{e.cycles:>10}{e.macs:>12}{e.bram18:>8}"
                    f"{e.luts:>8}{e.dsps:>6}")
    ii = max((e.cycles for e in estimates), default=0)
    rows.append(f"{'total (II: slowest layer)':<{w}}{'':<18}{'':<24}{ii:>10}"
                f"{sum(e.macs for e in estimates):>12}{sum(e.bram18 for e in estimates):>8}"
                f"{sum(e.luts for e in estimates):>8}{sum(e.dsps for e in estimates):>6}")
    return "\n".join(rows)
