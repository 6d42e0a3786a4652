"""Estimate report of one folded accelerator on one board: ``estimates.md``, ``estimates.json``
and ``estimates.png``.

Every number in the report is an estimate of :mod:`sw.compiler.estimate` (formulas and their sources
are listed there and repeated in the Markdown): cycles are FINN's expected-cycles formulas
(with the components' fill latency where ``hw/`` provides the cycle model), memories FINN's
BRAM/LUTRAM/URAM estimation, LUTs/DSPs FINN-R's analytical cost model. Nothing here is
measured; RTL simulation (:mod:`sim.rtlsim`) measures cycles and Yosys (:mod:`sw.compiler.resources`)
counts mapped cells.

Units: cycles per frame at the accelerator clock; fps = ``clock_mhz * 1e6 / II``; memories in
BRAM18 (the board table counts BRAM36 = 2 x BRAM18; the report converts with
``ceil(bram18 / 2)``), URAM blocks (288 Kbit) and LUTs used as LUTRAM; DRAM traffic in bytes
per frame and GB/s (1e9 bytes/s).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from sw.compiler.boards import Board
from sw.compiler.estimate import LayerEstimate, totals
from hw.graph import HWGraph, write_text_atomic

#: ops whose memory holds parameters (weights, requantisation constants); others buffer pixels
WEIGHT_OPS = ("MVAU", "VVAU", "Requant", "Thresholding")
BUFFER_OPS = ("SlidingWindow", "DeformableSampler", "Upsample", "ChannelShuffle")
REPORT_FILES = ("estimates.md", "estimates.json", "estimates.png")

SOURCES = [
    "cycles: FINN expected-cycles formulas (MVAU (MH/PE)*(MW/SIMD)*pixels, VVAU (C/PE)*K*K*pixels, "
    "sliding window = output beats) plus the hw/ components' fill latency "
    "(hw.registry.expected_layer_cycles; 'contract' rows use docs/detector_contract.md section 2)",
    "II = largest per-layer cycle count (FINN's bottleneck definition); fps = clock / II",
    "memory: FINN MatrixVectorActivation.bram_estimation (BRAM18 aspect ratios 16Kx1 .. 512x36), "
    "LUTRAM width*ceil(depth/64) LUTs for depth <= 128, URAM 4K x 72 (FINN uram_estimation)",
    "pixel buffers: the depth x width of the memory each hw/ component builds (hw.registry."
    "buffer_memory: (K-1)*dilation+1+stride rows per sliding window, 2N+2 per deformable sampler, "
    "2 per upsampler, 2 pixels in PE banks per channel shuffle, one copy per read port: "
    "hw.registry.buffer_read_ports); multiplexers at UG474's 4:1 per LUT6, MUXF7/F8 to 16:1",
    "LUT: FINN-R (Blott et al. 2018) (2*ceil((W+A)/6)-1)*(W+A) per LUT product, adder tree "
    "(W+A)*(2*SIMD-1), accumulator, c0 = 300 per MVAU/VVAU",
    "DSP: the RTL's multipliers: MVAU ceil(PE/2)*SIMD (two W4xA8 products per DSP48, Xilinx WP486 "
    "packing), VVAU one per lane, one per requantiser lane; address multiplies stay in LUTs",
    "external weights: FINN mem_mode 'external', MH*MW*W/8 bytes replayed per pixel",
    "board capacities: sw/compiler/boards.py (AMD DS190 / DS891 datasheets)",
]


def _mem_kind(op: str) -> str:
    return "weights" if op in WEIGHT_OPS else "buffer" if op in BUFFER_OPS else "-"


def _mem_mode(e: LayerEstimate) -> str:
    if e.op not in ("MVAU", "VVAU"):
        return "-"
    return e.folding.get("mem_mode", "internal")


def report_data(graph: HWGraph, estimates: list[LayerEstimate], board: Board, clock_mhz: float,
                folding: dict | None = None) -> dict:
    """The report's content as a JSON-ready dict.

    Args:
        graph: the folded graph the estimates belong to (one entry per layer, same order).
        estimates: :func:`sw.compiler.estimate.estimate` of ``graph``.
        board: the board whose capacities the totals are compared with.
        clock_mhz: accelerator clock in MHz (> 0).
        folding: the FINN folding config used (stored verbatim under ``"folding_config"``).

    Returns:
        ``{"board", "clock_mhz", "estimated": True, "sources", "layers": [...], "totals": {...},
        "capacity": {...}, "utilisation_percent": {...}, "fits": bool, "folding_config"}``.

    Raises:
        ValueError: empty estimates, a non-positive clock, or estimates that do not match the
            graph's layers.
    """
    if not estimates:
        raise ValueError("report: no layer estimates (empty graph?)")
    if not clock_mhz or clock_mhz <= 0:
        raise ValueError(f"report: clock_mhz must be positive, got {clock_mhz!r}")
    names = [l.name for l in graph.layers]
    if names != [e.name for e in estimates]:
        raise ValueError("report: estimates do not belong to this graph (layer names differ); "
                         "run sw.compiler.estimate.estimate on the same folded graph")
    t = totals(estimates, clock_mhz)
    bram36 = math.ceil(t["bram18"] / 2)
    used = {"luts": t["luts"], "dsps": t["dsps"], "bram36": bram36, "uram": t["uram"]}
    cap = {"luts": board.luts, "dsps": board.dsps, "bram36": board.bram36, "uram": board.uram}
    # a resource the board lacks (URAM on Zynq-7000, Ultra96): 0 % if unused, else None (no fit)
    pct = {k: (100.0 * used[k] / cap[k] if cap[k] else (0.0 if used[k] == 0 else None))
           for k in used}
    fits_res = all(used[k] <= cap[k] for k in used)
    dram_ok = t["dram_gbps"] <= board.dram_gbps
    layers = []
    for l, e in zip(graph.layers, estimates):
        layers.append({
            "name": e.name, "op": e.op, "folding": {k: v for k, v in e.folding.items()
                                                    if k in ("PE", "SIMD")},
            "cycles": e.cycles, "cycle_model": e.cycle_model, "macs": e.macs,
            "memory_kind": _mem_kind(e.op), "bram18": e.bram18, "lutram_luts": e.lutram_luts,
            "uram": e.uram, "weight_bits": e.weight_bits, "luts": e.luts, "dsps": e.dsps,
            "res_type": e.folding.get("resType", "lut") if e.op in ("MVAU", "VVAU") else "-",
            "mem_mode": _mem_mode(e),
            "dram_bytes_per_frame": e.dram_bytes_per_frame,
            "source_node": l.source_node,
        })
    tot = dict(t)
    # flip-flops: sw.compiler.estimate has no model for them (its per-layer 0 means "not estimated")
    tot.update(ffs=None, bram36=bram36, gmac_per_s=t["macs"] * t["fps"] / 1e9,
               external_weight_layers=sum(1 for x in layers if x["mem_mode"] == "external"))
    return {
        "estimated": True,
        "board": board.name, "part": board.part, "clock_mhz": float(clock_mhz),
        "sources": SOURCES,
        "layers": layers,
        "totals": tot,
        "capacity": cap | {"dram_gbps": board.dram_gbps},
        "utilisation_percent": pct | {"dram": 100.0 * t["dram_gbps"] / board.dram_gbps},
        "fits_resources": fits_res, "fits_dram": dram_ok, "fits": fits_res and dram_ok,
        "folding_config": folding,
    }


def _fmt_fold(f: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in f.items()) or "-"


def format_markdown(data: dict) -> str:
    """The Markdown report of :func:`report_data`'s dict."""
    t, cap, pct = data["totals"], data["capacity"], data["utilisation_percent"]
    out = [f"# Estimates: {data['board']} ({data['part']}) at {data['clock_mhz']:g} MHz", "",
           "**All numbers on this page are analytical estimates**, not measurements (cycles: "
           "RTL simulation measures them; resources: Yosys or Vivado count them).", "",
           f"- initiation interval (II): **{t['ii_cycles']:,} cycles** per frame, bottleneck "
           f"`{t['bottleneck']}`",
           f"- projected throughput: **{t['fps']:.1f} fps** at {data['clock_mhz']:g} MHz",
           f"- work: {t['macs']:,} MACs/frame ({t['gmac_per_frame']:.4f} GMAC), "
           f"{t['gmac_per_s']:.2f} GMAC/s at that fps",
           f"- external weights: {t['external_weight_layers']} layer(s), "
           f"{t['dram_bytes_per_frame']:,} bytes/frame = {t['dram_gbps']:.3f} GB/s of "
           f"{cap['dram_gbps']:g} GB/s DRAM budget ({'ok' if data['fits_dram'] else 'EXCEEDED'})",
           f"- fits {data['board']}: **{'yes' if data['fits'] else 'NO'}**", "",
           "| resource | used | capacity | % |", "|---|---:|---:|---:|"]
    for k, label in (("luts", "LUT"), ("dsps", "DSP48"), ("bram36", "BRAM36"), ("uram", "URAM")):
        used = t[k]
        p = "n/a (board has none)" if pct[k] is None else f"{pct[k]:.1f}"
        out.append(f"| {label} | {used:,} | {cap[k]:,} | {p} |")
    out += ["", "## Per layer", "",
            "| layer | op | folding | cycles | MACs | mem | BRAM18 | LUTRAM LUTs | URAM | LUT | DSP "
            "| mult | mem_mode | DRAM B/frame |",
            "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|---:|"]
    for x in data["layers"]:
        bn = " **(II)**" if x["name"] == t["bottleneck"] else ""
        cm = "" if x["cycle_model"] == "registry" else " (contract)"
        out.append(f"| {x['name']}{bn} | {x['op']} | {_fmt_fold(x['folding'])} | {x['cycles']:,}{cm} "
                   f"| {x['macs']:,} | {x['memory_kind']} | {x['bram18']} | {x['lutram_luts']} "
                   f"| {x['uram']} | {x['luts']:,} | {x['dsps']} | {x['res_type']} | {x['mem_mode']} "
                   f"| {x['dram_bytes_per_frame']:,} |")
    out.append(f"| **total** ({len(data['layers'])} layers) | | | II {t['ii_cycles']:,} "
               f"| {t['macs']:,} | | {t['bram18']} | {t['lutram_luts']:,} | {t['uram']} "
               f"| {t['luts']:,} | {t['dsps']} | | | {t['dram_bytes_per_frame']:,} |")
    out += ["", f"Totals: BRAM18 {t['bram18']} (= {t['bram36']} BRAM36), LUTRAM LUTs "
                f"{t['lutram_luts']:,} (included in LUT), weight storage {t['weight_bits']:,} bits.",
            "", "## Formula sources", ""] + [f"- {s}" for s in data["sources"]] + [""]
    return "\n".join(out)


#: layers shown in the plot's "slowest layers" panel
PLOT_TOP_LAYERS = 15


def plot_report(data: dict, path: Path) -> None:
    """One page (1,320 x 990 pixels), readable at natural size, written atomically:

    * the :data:`PLOT_TOP_LAYERS` slowest layers (expected cycles per frame, log scale), the
      bottleneck in red, the II as a dashed line;
    * cycles by layer type: every layer as a dot on its op's row, the op's slowest layer as
      the bar, with the number of layers of that op;
    * resources against the board's capacity (percent, used / capacity on each bar).

    Arguments: ``data`` from :func:`report_data`, ``path`` the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    layers = data["layers"]
    t = data["totals"]
    bn = t["bottleneck"]
    fig = plt.figure(figsize=(12, 9))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.9, 1], width_ratios=[1.25, 1])
    ax1, ax3, ax2 = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])
    fig.suptitle(f"{data['board']} at {data['clock_mhz']:g} MHz: II {t['ii_cycles']:,} cycles, "
                 f"{t['fps']:,.1f} fps, bottleneck {bn} ({len(layers)} layers; estimates)",
                 fontsize=13)

    top = sorted(layers, key=lambda x: -x["cycles"])[:PLOT_TOP_LAYERS][::-1]
    y = range(len(top))
    ax1.barh(y, [x["cycles"] for x in top],
             color=["tab:red" if x["name"] == bn else "tab:blue" for x in top])
    ax1.axvline(t["ii_cycles"], color="tab:red", ls="--", lw=1)
    ax1.set_yticks(list(y))
    ax1.set_yticklabels([f"{x['name']} ({x['op']})" if x["op"] not in x["name"] else x["name"]
                         for x in top], fontsize=9)
    for i, x in enumerate(top):
        ax1.text(x["cycles"], i, f" {x['cycles']:,}", va="center", fontsize=8)
    ax1.set_xlim(0, t["ii_cycles"] * 1.25)
    ax1.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))  # wide labels: few ticks
    ax1.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax1.set_xlabel("expected cycles per frame (dashed: the II)")
    ax1.set_title(f"the {len(top)} slowest of {len(layers)} layers", fontsize=11)

    ops = sorted({x["op"] for x in layers}, key=lambda o: max(x["cycles"] for x in layers
                                                                 if x["op"] == o))
    for i, op in enumerate(ops):
        cyc = [x["cycles"] for x in layers if x["op"] == op]
        ax3.barh(i, max(cyc), color="tab:red" if any(x["name"] == bn for x in layers
                                                    if x["op"] == op) else "lightsteelblue")
        ax3.plot(cyc, [i] * len(cyc), "o", ms=3.5, color="black", alpha=0.6)
    ax3.set_yticks(range(len(ops)))
    ax3.set_yticklabels([f"{op} ({sum(1 for x in layers if x['op'] == op)})" for op in ops],
                        fontsize=9)
    ax3.set_xscale("log")
    ax3.set_xlabel("expected cycles per frame, log scale\n(dots: layers; bar: the slowest)")
    ax3.set_title("cycles by layer type (number of layers)", fontsize=11)

    keys = [("luts", "LUT"), ("dsps", "DSP"), ("bram36", "BRAM36"), ("uram", "URAM")]
    pct = [999.0 if data["utilisation_percent"][k] is None else min(data["utilisation_percent"][k], 999.0)
           for k, _ in keys]
    ax2.barh([lab for _, lab in keys][::-1], pct[::-1],
             color=["tab:green" if p <= 100 else "tab:red" for p in pct][::-1])
    ax2.axvline(100, color="black", lw=1)
    for i, (k, _) in enumerate(keys[::-1]):
        p = pct[len(keys) - 1 - i]
        cap = data["capacity"][k]
        ax2.text(p + 1, i, f"{t[k]:,} / {cap:,}" if cap else f"{t[k]:,} (the board has none)",
                 va="center", fontsize=9)
    ax2.set_xlabel(f"% of {data['board']} (compiler estimates; flip-flops not estimated)")
    ax2.set_xlim(0, max(120.0, max(pct) * 1.25))
    ax2.set_title("resources", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)


def write_report(graph: HWGraph, estimates: list[LayerEstimate], board: Board, clock_mhz: float,
                 out_dir: str | os.PathLike, folding: dict | None = None) -> dict:
    """Write ``estimates.md``, ``estimates.json`` and ``estimates.png`` into ``out_dir``.

    Each file is written through a temporary file and a rename, so a reader sees either the
    old or the new file whole. Arguments as :func:`report_data`.

    Returns:
        the report dict (the content of ``estimates.json``).

    Raises:
        ValueError: see :func:`report_data`.
    """
    out_dir = Path(out_dir)
    data = report_data(graph, estimates, board, clock_mhz, folding)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "estimates.json", json.dumps(data, indent=1, allow_nan=False))
    write_text_atomic(out_dir / "estimates.md", format_markdown(data))
    plot_report(data, out_dir / "estimates.png")
    return data
