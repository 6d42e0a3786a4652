"""Per-layer estimates of a folded hardware graph: cycles, II, MACs, memory, LUT, DSP, DRAM.

Models (sources):

* Cycles: the hardware's own model, ``hw.registry.expected_layer_cycles`` (FINN's formulas
  plus fill latency, e.g. MVAU ``(MH/PE)*(MW/SIMD)*pixels``); for an op whose component has
  not landed in ``hw/`` the contract's formula (docs/detector_contract.md section 2), marked
  ``cycle_model = "contract"``. :func:`analytic_cycles` (FINN's formulas without fill
  latency) drives the folding search (:mod:`sw.autofold`), where building components would
  be too slow.
* II of the pipeline: the largest per-layer cycle count (the bottleneck), FINN's
  definition; projected fps = clock / II.
* Memory (weights, line buffers): FINN's BRAM estimation (``MatrixVectorActivation.
  bram_estimation``): a memory of ``depth`` words of ``width`` bits uses BRAM18s by the
  width/depth aspect ratios 16Kx1, 8Kx2, 4Kx4, 2Kx9, 1Kx18, 512x36; a memory of depth <= 128
  goes to LUTRAM at ``width * ceil(depth/64)`` LUTs (FINN's distributed-RAM term) under
  ``ram_style`` auto; ``block`` / ``distributed`` / ``ultra`` (URAM, 4K x 72) force a style,
  per layer, as :mod:`sw.autofold` chooses (FINN's ``ram_style`` values). External weights (FINN's ``mem_mode
  external``) use no on-chip memory but DRAM bandwidth: the weight stream is replayed for
  every input vector, ``MH*MW*W/8 * pixels`` bytes per frame.
* Products: ``W``-bit weight x ``A``-bit activation. In LUTs at FINN's (FINN-R, Blott et al.
  2018) ``(2*ceil((W+A)/6) - 1) * (W+A)`` LUTs per product (36 for 4x8); in DSP48 slices
  as the hardware builds them: an MVAU packs PE lanes ``2q, 2q+1`` into one DSP (the
  shared-operand packing of Xilinx WP486, :attr:`hw.mvau.MVAU.multipliers`: ``ceil(PE/2) *
  SIMD``), a VVAU needs one DSP per lane (its lanes multiply different inputs). Adder tree ``(W+A)*(2*SIMD-1)`` and accumulator ``acc_bits`` LUTs per PE;
  ``c0 = 300`` LUTs of control per MVAU/VVAU (FINN's constant). Requantiser: one DSP48 per
  lane (16-bit multiplier x accumulator). Thresholding (FINN's RTL binary search): threshold
  ROMs per lane and search stage as the component builds them (:func:`hw.registry.
  threshold_memories`, FINN's ``get_pe_mem_geometries``: in all ``C * (2**M - 1)`` thresholds
  of ``in_bits + 1`` bits at most), one LUT per compared bit per lane and stage, plus the
  ``out_bias`` adder and 50 of control. Stream layers: ``2 * lanes * bits`` LUTs + 50.
* Pixel buffers, sized by the hardware itself (:func:`hw.registry.buffer_memory`, from the
  numbers each component builds its ``Memory`` from, so estimate and RTL cannot drift apart):
  a sliding window generator's line buffer holds ``(K-1)*dilation + 1 + stride`` rows, the
  deformable sampler's ``2N + 2``, the upsampler's 2 (ping-pong), each row ``W * C/lanes``
  words of ``lanes*bits`` bits (a sliding window with ``window_buffer "minimal"``: ``(K-1)*
  dilation`` rows plus ``(K-1)*dilation + 1 + stride`` pixels, and its cycles from the
  hardware's event model, :func:`minimal_window_cycles`); memory as above, plus ``200 + 2*lanes*bits`` LUTs of
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

import functools
import math
from dataclasses import asdict, dataclass, field

from hw.graph import HWGraph, HWLayer

#: FINN's MVAU/VVAU control-logic constant (LUTs) and LUTRAM depth threshold (words)
C0_LUTS = 300
LUTRAM_MAX_DEPTH = 128


@dataclass
class LayerEstimate:
    """Estimates of one layer for one frame (units in the field names / comments)."""

    name: str
    op: str
    folding: dict
    cycles: int  # expected cycles per frame, stall-free, including fill latency
    macs: int  # multiply-accumulates per frame
    cycle_model: str = "registry"  # registry | contract
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


def layer_macs(graph: HWGraph, layer) -> int:
    a = layer.attrs
    if layer.op == "MVAU":
        return a["mh"] * a["mw"] * a["pixels"]
    if layer.op == "VVAU":
        return a["channels"] * a["kernel_elems"] * a["pixels"]
    return 0


def _lanes_in(graph: HWGraph, layer: HWLayer) -> int:
    return graph.tensors[layer.inputs[0]].lanes


def _lanes_out(graph: HWGraph, layer: HWLayer) -> int:
    return graph.tensors[layer.outputs[0]].lanes


@functools.lru_cache(maxsize=4096)
def minimal_window_cycles(ifm_dim: tuple[int, int], channels: int, kernel: int, stride: int,
                          pad: int, dilation: int, lanes: int) -> int:
    """Cycles per frame of a SlidingWindow with ``window_buffer "minimal"`` in a stream of
    frames (:func:`hw.window.minimal_window_steady_cycles`: output beats plus the reader's
    waits for the writer, an event model of the RTL; cached by geometry)."""
    from hw.window import minimal_window_steady_cycles

    return minimal_window_steady_cycles(ifm_dim=ifm_dim, folds=channels // lanes, kernel=kernel,
                                        stride=stride, pad=pad, dilation=dilation)


def analytic_cycles(graph: HWGraph, layer: HWLayer) -> int:
    """Cycles per frame from FINN's formulas / the contract's table (no fill latency)."""
    a, f = layer.attrs, layer.folding
    if layer.op == "MVAU":
        return (a["mh"] // f.get("PE", 1)) * (a["mw"] // f.get("SIMD", 1)) * a["pixels"]
    if layer.op == "VVAU":
        return (a["channels"] // f.get("PE", 1)) * a["kernel_elems"] * a["pixels"]
    if layer.op == "SlidingWindow" and f.get("window_buffer") == "minimal":
        return minimal_window_cycles(tuple(a["ifm_dim"]), a["channels"], a["kernel"], a["stride"],
                                     a["pad"], a["dilation"], _lanes_out(graph, layer))
    if layer.op in ("SlidingWindow", "DeformableSampler"):
        lanes = _lanes_out(graph, layer)
        out_beats = graph.tensors[layer.outputs[0]].values_per_frame // lanes
        in_beats = graph.tensors[layer.inputs[0]].values_per_frame // lanes
        return max(out_beats, in_beats)
    if layer.op == "MaxPool":
        return a["pixels"] * a["kernel"] ** 2 * a["channels"] // f.get("PE", 1)
    if layer.op == "Upsample":
        h, w = a["ifm_dim"]
        return h * a["factor"] * w * a["factor"] * a["channels"] // f.get("PE", 1)
    if layer.op == "Concat":
        return a["pixels"] * sum(a["channels"]) // f.get("PE", 1)
    if layer.op in ("ChannelSplit", "ChannelShuffle", "Add"):
        return a["pixels"] * a["channels"] // f.get("PE", 1)
    if layer.op == "WidthConverter":
        t = graph.tensors[layer.inputs[0]]
        return max(t.values_per_frame // a["in_lanes"], t.values_per_frame // a["out_lanes"])
    if layer.op == "Thresholding":  # FINN's Thresholding.get_exp_cycles: C/PE beats per pixel
        return a["pixels"] * a["channels"] // _lanes_in(graph, layer)
    return graph.tensors[layer.inputs[0]].beats_per_frame  # Requant, Duplicate


def bram18_for(depth: int, width: int) -> int:
    """BRAM18 count of a ``depth`` x ``width``-bit memory (FINN's bram_estimation)."""
    if depth <= 0 or width <= 0:
        return 0
    if width == 1:
        return math.ceil(depth / 16384)
    if width == 2:
        return math.ceil(depth / 8192)
    if width <= 4:
        return math.ceil(depth / 4096) * math.ceil(width / 4)
    if width <= 9:
        return math.ceil(depth / 2048) * math.ceil(width / 9)
    if width <= 18 or depth > 512:
        return math.ceil(depth / 1024) * math.ceil(width / 18)
    return math.ceil(depth / 512) * math.ceil(width / 36)


def uram_for(depth: int, width: int) -> int:
    """URAM count (4K x 72 each; FINN's uram_estimation)."""
    return math.ceil(depth / 4096) * math.ceil(width / 72)


#: memory styles of :func:`layer_resources` and FINN's ``ram_style`` attribute for each
MEM_STYLES = {"auto": "auto", "bram": "block", "lutram": "distributed", "uram": "ultra"}


def mem_style_of(ram_style: str | None) -> str:
    """Memory style (``auto|bram|lutram|uram``) of a FINN ``ram_style`` (``auto|block|
    distributed|ultra``; ``None``: auto)."""
    if ram_style is None:
        return "auto"
    for style, finn in MEM_STYLES.items():
        if finn == ram_style:
            return style
    raise ValueError(f"ram_style must be one of {sorted(MEM_STYLES.values())}, got {ram_style!r}")


def lutram_luts_for(depth: int, width: int) -> int:
    """LUTs of a ``depth`` x ``width``-bit distributed RAM: ``width * ceil(depth/64)`` (FINN's
    ``lut_estimation`` memory term ``c2``: one 64x1 LUTRAM per bit and 64 words)."""
    return width * math.ceil(depth / 64) if depth > 0 and width > 0 else 0


def _memory(depth: int, width: int, style: str) -> tuple[int, int, int]:
    """(bram18, uram, lutram_luts) of one memory in ``style`` auto|bram|lutram|uram (auto:
    LUTRAM when ``depth <= LUTRAM_MAX_DEPTH``, else BRAM, as FINN estimates ``auto``)."""
    if style not in MEM_STYLES:
        raise ValueError(f"memory style must be one of {list(MEM_STYLES)}, got {style!r}")
    if style == "uram":
        return 0, uram_for(depth, width), 0
    if style == "lutram" or (style == "auto" and depth <= LUTRAM_MAX_DEPTH):
        return 0, 0, lutram_luts_for(depth, width)
    return bram18_for(depth, width), 0, 0


def mux_luts(inputs: int) -> int:
    """LUTs of a one-bit ``inputs``-to-1 multiplexer on a 7-series / UltraScale fabric:
    ``ceil(n/4)`` LUT6s (a LUT6 is a 4:1 mux) whose outputs the slice's MUXF7/MUXF8 combine up
    to 16:1 without LUTs (Xilinx UG474, CLB multiplexers); above 16 inputs a further
    ``ceil(n/16)``-to-1 level, recursively. 0 for ``inputs <= 1``."""
    if inputs <= 1:
        return 0
    return math.ceil(inputs / 4) + (mux_luts(math.ceil(inputs / 16)) if inputs > 16 else 0)


def layer_resources(graph: HWGraph, layer: HWLayer, mult_style: str = "lut",
                    mem_style: str = "auto") -> dict:
    """Resources of one folded layer (models in the module docstring).

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
    """
    from hw import registry

    a, f = layer.attrs, layer.folding
    r = dict(bram18=0, uram=0, lutram_luts=0, luts=0, dsps=0, weight_bits=0, dram_bytes_per_frame=0,
             buffer_bits=0, ffs=0)
    if layer.op in ("MVAU", "VVAU"):
        pe = f.get("PE", 1)
        simd = f.get("SIMD", 1)
        w, act = a["weight_bits"], a["in_bits"]
        mh, mw = (a["mh"], a["mw"]) if layer.op == "MVAU" else (a["channels"], a["kernel_elems"])
        r["weight_bits"] = mh * mw * w
        depth, width = mh * mw // (pe * simd), pe * simd * w
        if f.get("mem_mode") == "external":
            r["dram_bytes_per_frame"] = math.ceil(mh * mw * w / 8) * a["pixels"]
        else:
            r["bram18"], r["uram"], r["lutram_luts"] = _memory(depth, width, mem_style)
        products = pe * simd
        if mult_style == "dsp":
            # hw.mvau.MVAU.multipliers / hw.vvau.VVAU: what the RTL instantiates
            r["dsps"] = math.ceil(pe / 2) * simd if layer.op == "MVAU" else products
            mult = 0
        else:
            mult = simd * (2 * math.ceil((w + act) / 6) - 1) * (w + act)
        tree = (w + act) * (2 * simd - 1)
        r["luts"] = C0_LUTS + pe * (mult + tree + a["acc_bits"]) + r["lutram_luts"]
    elif layer.op == "Requant":
        lanes = _lanes_in(graph, layer)
        c = a["channels"]
        r["weight_bits"] = c * (16 + a["acc_bits"] + 16)
        r["bram18"], r["uram"], r["lutram_luts"] = _memory(c // lanes, lanes * (16 + a["acc_bits"] + 16), mem_style)
        r["dsps"] = lanes
        r["luts"] = 50 + lanes * 2 * graph.tensors[layer.outputs[0]].bits + r["lutram_luts"]
    elif layer.op == "Thresholding":
        # the ROMs the component builds (hw.registry.threshold_memories; FINN's
        # ThresholdingRTL.get_pe_mem_geometries): per lane and search stage s, (C/PE)*2**s words
        # of thr_bits (2**s for a shared [1, N] set; depth-1 tables are constants); LUTs: one
        # per compared bit per lane and stage (the carry-chain comparator x >= T), the out_bias
        # adder, 50 of control (fold counter, output FIFO). Yosys synth_xilinx (xcup) of C=32,
        # PE=4, int16 -> uint4 (15 thresholds, 14-bit): 431 LUT (ROMs mapped to logic), 0 BRAM;
        # this model: 530 LUT (224 of them LUTRAM), 0 BRAM
        geo = registry.threshold_memories(graph, layer)
        lanes, tb = _lanes_in(graph, layer), geo["thr_bits"]
        t_in, t_out = graph.tensors[layer.inputs[0]], graph.tensors[layer.outputs[0]]
        rows = lanes if geo["rows"] == 1 else a["channels"]
        r["weight_bits"] = rows * ((1 << geo["stages"]) - 1) * tb
        for depth, width in geo["memories"]:
            b, u, lut = _memory(depth, width, mem_style)
            r["bram18"], r["uram"], r["lutram_luts"] = r["bram18"] + b, r["uram"] + u, r["lutram_luts"] + lut
        cmp_bits = max(t_in.bits, tb)
        bias_bits = t_out.bits if a["out_bias"] else 0
        r["luts"] = 50 + lanes * (geo["stages"] * cmp_bits + bias_bits) + r["lutram_luts"]
    elif layer.op in ("SlidingWindow", "DeformableSampler", "Upsample"):
        # the memory the component builds (module docstring, "Pixel buffers")
        depth, width = registry.buffer_memory(graph, layer)
        r["buffer_bits"] = depth * width
        r["bram18"], r["uram"], r["lutram_luts"] = _memory(depth, width, mem_style)
        r["luts"] = 200 + 2 * width + r["lutram_luts"]
    elif layer.op == "ChannelShuffle":
        # PE banks of the memory the component builds, one copy per read port (docstring)
        depth, width = registry.buffer_memory(graph, layer)
        ports = registry.buffer_read_ports(graph, layer)
        xbar = registry.read_crossbar(graph, layer)
        r["buffer_bits"] = len(ports) * depth * width
        copies = sum(ports)
        bram18, uram, lutram = _memory(depth, width, mem_style)
        r["bram18"], r["uram"], r["lutram_luts"] = copies * bram18, copies * uram, copies * lutram
        addr_bits = max(1, (depth - 1).bit_length())
        r["luts"] = (50 + (len(ports) + copies + 1) * addr_bits
                     + width * sum(mux_luts(n) for n in xbar["lane_inputs"])
                     + addr_bits * sum(mux_luts(n) for n in xbar["port_inputs"])
                     + r["lutram_luts"])
    else:  # Duplicate, WidthConverter, MaxPool, Concat, ChannelSplit, Add: registers and muxes
        t = graph.tensors[layer.inputs[0]]
        lanes = max(_lanes_in(graph, layer), _lanes_out(graph, layer))
        r["luts"] = 50 + 2 * lanes * t.bits
    return r


def estimate(graph: HWGraph, mult_styles: dict | None = None, mem_styles: dict | None = None
             ) -> list[LayerEstimate]:
    """Expected cycles, MACs and resources of every layer of a folded graph.

    Args:
        mult_styles / mem_styles: per-layer ``lut``/``dsp`` and ``auto``/``bram``/``lutram``/``uram``
            choices (default: each layer's ``resType`` / ``ram_style`` from its folding, as
            :func:`sw.autofold.choose_folding` sets them; else LUT products, auto memory).
    """
    from hw import registry

    out = []
    for l in graph.layers:
        try:
            cycles, model = int(registry.expected_layer_cycles(graph, l)), "registry"
        except (ValueError, AttributeError, KeyError, NotImplementedError, ImportError):
            cycles, model = analytic_cycles(graph, l), "contract"
        mult = (mult_styles or {}).get(l.name, l.folding.get("resType", "lut"))
        mem = (mem_styles or {}).get(l.name) or mem_style_of(l.folding.get("ram_style"))
        res = layer_resources(graph, l, mult, mem)
        out.append(LayerEstimate(l.name, l.op, dict(l.folding), cycles, layer_macs(graph, l), model, **res))
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
    """Plain-text table of the estimates (one row per layer)."""
    rows = [f"{'layer':<34}{'op':<18}{'folding':<24}{'cycles':>10}{'MACs':>12}{'BRAM18':>8}{'LUT':>8}{'DSP':>6}"]
    for e in estimates:
        parts = [f"{k}={v}" for k, v in e.folding.items() if k in ("PE", "SIMD")]
        parts += ["dsp"] if e.folding.get("resType") == "dsp" else []
        parts += ["ext"] if e.folding.get("mem_mode") == "external" else []
        fold = ",".join(parts) or "-"
        rows.append(f"{e.name:<34}{e.op:<18}{fold:<24}{e.cycles:>10}{e.macs:>12}{e.bram18:>8}"
                    f"{e.luts:>8}{e.dsps:>6}")
    return "\n".join(rows)
