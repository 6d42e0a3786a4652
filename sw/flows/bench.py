"""Benchmark: ``python -m sw.flows.bench [--configs ...] [--boards ...] [--clock-mhz 200] [--quick] [--out bench]``.

Writes, each file atomically (rewritten after every step, so a long run leaves partial results):
``OUT/results.json``, ``OUT/results.md``, ``OUT/layers_<config>.png`` (per layer: expected vs
RTL-measured vs ideal cycles) and ``OUT/fps.png`` (projected fps per config x board beside
CoDeNet's published points).

What is measured and what is projected:

* **measured** here, in this run: RTL cycles (cocotb + Verilator simulation of the generated
  accelerator, FIFO depths sized analytically by :func:`sw.compiler.fifo_analytic.size_fifos_analytic`,
  or by simulation with ``--fifo-sizing simulation``): the frame interval
  (tlast to tlast of the last, steady-state frame) and every MVAU/VVAU's MAC-busy cycles in that
  frame (the instrumented top level's counters); Yosys ``synth_xilinx`` primitive counts
  (:mod:`sw.compiler.resources`); VOC6 mAP50 on our VOC2012 ``val`` split (or a prefix of it); tool
  wall times (compile, Verilator build, simulation speed).
* **computed** (analytical): expected cycles per layer (:func:`sw.compiler.estimate.estimate`, the
  compiler's model), ideal cycles ``MACs / (PE * SIMD)`` (every MAC unit busy every cycle),
  weight and buffer memory (:mod:`sw.compiler.estimate`, FINN's BRAM model).
* **projected**: frames per second = clock / II (expected II from the compiler, or the
  measured RTL frame interval) at ``--clock-mhz`` (200 MHz default). No board was run.

Per config x board the folding is the fastest that fits the board by the compiler's estimates
(:func:`sw.compiler.autofold.choose_folding` without a target, as :mod:`sw.flows.estimate_all`). The RTL
simulation uses a modest folding (``--sim-fps`` at the clock on Ultra96-V2) so that the
simulation finishes; its per-layer table is for that folding.

Published reference (constants, not measured here): CoDeNet (Huang et al., FPGA'21), Ultra96
at 250 MHz using 100% of its DSP and BRAM, VOC 2007 test: 26.9 fps / 55.1 AP50 at 256x256,
9.3 fps / 61.7 AP50 at 512x512. Their accuracy is on different data (VOC 2007 test, 20
classes) than ours (VOC6 mAP50 on a VOC2012 val subset) and is labelled so.

Weights: hardware figures use the seeded, calibrated export of :mod:`sw.flows.estimate_all` (shapes
and bit widths decide cycles and resources); accuracy uses the committed checkpoints
(``models/checkpoints/small256_w4a8.pt``, float: ``small256_float.pt``) and says "not available"
where one is missing.
"""

from __future__ import annotations

from sw import BUILD_ROOT

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]

#: CoDeNet, FPGA'21 (Huang et al., "CoDeNet: Efficient Deployment of Input-Adaptive Object
#: Detection on Embedded FPGAs"), Ultra96 at 250 MHz, 100% DSP and BRAM; AP50 on VOC 2007 test.
CODENET_PUBLISHED = (
    {"name": "CoDeNet 256x256 (published)", "input_size": 256, "board": "ultra96", "clock_mhz": 250.0,
     "fps": 26.9, "ap50_voc2007_test": 55.1, "gmac_per_frame": 0.29, "dsp_pct": 100, "bram_pct": 100},
    {"name": "CoDeNet 512x512 (published)", "input_size": 512, "board": "ultra96", "clock_mhz": 250.0,
     "fps": 9.3, "ap50_voc2007_test": 61.7, "gmac_per_frame": 1.14, "dsp_pct": 100, "bram_pct": 100},
)
CODENET_SOURCE = "CoDeNet, FPGA'21, Ultra96 at 250 MHz, VOC 2007 test (published, not measured here)"
#: the issue's target: 5x CoDeNet's 26.9 fps at 256x256 on Ultra96-V2 at 200 MHz
TARGET = {"config": "codenet256", "board": "ultra96v2", "clock_mhz": 200.0, "fps": 135.0}

DEFAULT_CONFIGS = ("small", "small256", "codenet256-0.5x", "codenet256", "codenet512")
DEFAULT_BOARDS = ("pynq-z2", "ultra96v2", "zcu104", "kv260")
DEFAULT_SIM_CONFIGS = ("small", "codenet256", "codenet256-0.5x")
#: configs whose slowest layers are simulated alone on full frames (too large to run whole)
DEFAULT_LAYER_SIM_CONFIGS = ("codenet512",)
#: target fps (at the clock) of the folding simulated in RTL, per input size: a modest folding
#: keeps the Verilog small; the demo folds the 256x256 detector for 500 fps
SIM_FPS = {64: 2000.0, 128: 2000.0, 256: 200.0, 512: 50.0}
#: boards tried in order for the simulated folding (the first on which one fits)
SIM_BOARDS = ("ultra96v2", "zcu104", "kv260")
QUICK_VAL_IMAGES = 32
FULL_VAL_IMAGES = 865  # the whole val split of ../shared/data/voc2012-subset
CLOCK_NS = 10  # sim/tb_top.py's clock period (ns); cycles = sim time / CLOCK_NS


# -- per layer ---------------------------------------------------------------------------------

def layer_rows(graph, estimates, mac_busy: dict | None = None, interval: int | None = None) -> list[dict]:
    """Per-layer table of one folded graph.

    Args:
        graph: folded :class:`hw.graph.HWGraph`.
        estimates: :func:`sw.compiler.estimate.estimate` of ``graph`` (same layer order).
        mac_busy: ``{layer: cycles}`` MAC-busy cycles per frame (RTL, averaged over the run), or None.
        interval: measured steady-state frame interval (cycles), or None.

    Returns:
        rows with ``expected_cycles`` (compiler), ``ideal_cycles`` (``MACs / (PE*SIMD)``, MVAU/VVAU
        only), ``rtl_busy_cycles`` and ``utilisation`` (busy / interval) where measured.
    """
    from hw.ops import OPS

    rows = []
    for layer, e in zip(graph.layers, estimates):
        f = layer.folding
        lanes = f.get("PE", 1) * f.get("SIMD", 1)
        row = {"name": e.name, "op": e.op, "PE": f.get("PE"), "SIMD": f.get("SIMD"),
               "expected_cycles": e.cycles, "macs": e.macs,
               "ideal_cycles": (e.macs // lanes) if OPS[e.op].has_mac_array else None,
               "rtl_busy_cycles": None, "utilisation": None}
        if mac_busy and e.name in mac_busy:
            row["rtl_busy_cycles"] = mac_busy[e.name]
            if interval:
                row["utilisation"] = round(mac_busy[e.name] / interval, 4)
        rows.append(row)
    return rows


# -- per config x board ------------------------------------------------------------------------

def board_row(graph, board_name: str, clock_mhz: float, target_fps: float | None = None
              ) -> tuple[dict, object, dict | None]:
    """Fastest fitting folding of ``graph`` on a board (or, with ``target_fps``, the compiler's
    folding for that frame rate) and its projected figures.

    Returns:
        (row, folded graph or None, folding or None). ``row`` has ``fps_projected`` (clock / II,
        projected), ``ii_cycles``, ``bottleneck``, estimated LUT/DSP/BRAM36/URAM and their
        percent of the board, ``weight_bits`` and ``buffer_bram18`` (estimates), or ``fits``
        False with the compiler's reason.
    """
    from sw.compiler.autofold import choose_folding
    from sw.compiler.boards import get_board
    from sw.compiler.estimate import estimate, totals
    from sw.compiler.folding import apply_folding
    from sw.compiler.lower import CompileError

    board = get_board(board_name)
    t0 = time.time()
    try:
        cfg = choose_folding(graph, board, target_fps=target_fps, clock_mhz=clock_mhz)
    except CompileError as exc:
        return {"board": board.name, "fits": False, "reason": str(exc)}, None, None
    g = apply_folding(graph, cfg)
    est = estimate(g)
    t = totals(est, clock_mhz)
    bram36 = -(-t["bram18"] // 2)
    used = {"LUT": t["luts"], "DSP": t["dsps"], "BRAM36": bram36, "URAM": t["uram"]}
    cap = {"LUT": board.luts, "DSP": board.dsps, "BRAM36": board.bram36, "URAM": board.uram}
    weight_bram18 = sum(e.bram18 for e in est if e.op in ("MVAU", "VVAU", "Requant"))
    row = {
        "board": board.name, "part": board.part, "fits": all(used[k] <= cap[k] for k in used),
        "clock_mhz": clock_mhz, "ii_cycles": t["ii_cycles"], "bottleneck": t["bottleneck"],
        "fps_projected": round(t["fps"], 2), "gmac_per_frame": round(t["gmac_per_frame"], 4),
        "estimated": {k: {"used": used[k], "available": cap[k],
                          "percent": round(100 * used[k] / cap[k], 1) if cap[k] else None} for k in used},
        "weight_bits": t["weight_bits"], "weight_kib": round(t["weight_bits"] / 8 / 1024, 1),
        "weight_bram18": weight_bram18, "buffer_bram18": t["bram18"] - weight_bram18,
        "lutram_luts": t["lutram_luts"], "external_weight_layers": sum(
            1 for e in est if e.folding.get("mem_mode") == "external"),
        "dram_gbps": round(t["dram_gbps"], 3), "fold_s": round(time.time() - t0, 1),
        "yosys": {"status": "not run"},
    }
    return row, g, cfg


def run_yosys(graph, board_name: str, out_dir: Path, timeout_s: float) -> dict:
    """RTLIL of ``graph`` (``hw.top.Accelerator``) and Yosys counts against the board.

    A synthesis of the same RTLIL (SHA-256) for the same board in ``out_dir`` is reused:
    a Yosys run of a full-size detector takes most of an hour.

    Returns:
        ``{"status": "ok", counts, utilisation, fits, yosys_seconds, rtlil_s, cached}`` or
        ``{"status": "timed out after N s" | "failed: ..."}``.
    """
    import hashlib

    from amaranth.back import rtlil

    from hw.top import Accelerator
    from hw.graph import write_text_atomic
    from sw.compiler.resources import SynthesisError, report

    t0 = time.time()
    il_path = out_dir / "deflow_top.il"  # RTLIL: Yosys reads it in seconds (sw.compiler.resources)
    text = rtlil.convert(Accelerator(graph), name="deflow_top", emit_src=False)
    sha = hashlib.sha256(text.encode()).hexdigest()
    t_v = round(time.time() - t0, 1)
    done = out_dir / "resources.json"
    if done.exists() and il_path.exists():
        try:
            data = json.loads(done.read_text())
        except json.JSONDecodeError:
            data = {}
        if data.get("design_sha256") == sha and data.get("board") == board_name:
            return {"status": "ok", "counts": data["counts"], "utilisation": data["utilisation"],
                    "fits": data["fits"], "yosys_seconds": data["yosys_seconds"],
                    "rtlil_s": t_v, "cached": True}
    write_text_atomic(il_path, text)
    try:
        data = report(il_path, "deflow_top", board_name, out_dir, timeout_s=timeout_s,
                      progress=lambda s: print(s, file=sys.stderr, flush=True),
                      extra={"design_sha256": sha})
    except SynthesisError as exc:
        msg = str(exc)
        status = (f"timed out after {timeout_s:.0f} s" if "timed out" in msg
                  else "failed: " + msg.splitlines()[0])
        return {"status": status, "rtlil_s": t_v}
    return {"status": "ok", "counts": data["counts"], "utilisation": data["utilisation"],
            "fits": data["fits"], "yosys_seconds": data["yosys_seconds"], "rtlil_s": t_v,
            "cached": False}


# -- RTL simulation ----------------------------------------------------------------------------

def simulation_folding(graph, fps: float, clock_mhz: float) -> tuple[str, dict]:
    """The folding simulated in RTL for ``fps`` at ``clock_mhz``: the compiler's, with every
    weight on chip (the RTL has no DRAM weight stream), on the first of :data:`SIM_BOARDS` where
    one fits (codenet512 needs ZCU104's BRAM and URAM for its weights at 50 fps).

    Returns:
        (board name, FINN folding config).

    Raises:
        CompileError: no folding for ``fps`` fits on any of :data:`SIM_BOARDS`, with each
            board's reason.
    """
    from sw.compiler.autofold import choose_folding
    from sw.compiler.boards import get_board
    from sw.compiler.lower import CompileError

    reasons = []
    for b in SIM_BOARDS:
        try:
            return b, choose_folding(graph, get_board(b), target_fps=fps, clock_mhz=clock_mhz,
                                     external_weights=False)
        except CompileError as exc:
            reasons.append(f"{b}: {exc}")
    raise CompileError("; ".join(reasons))


def simulate_config(graph, frames: list[np.ndarray], build_root: Path | None = None,
                    harness: str = "native", progress=None,
                    fifo_sizing: str = "analytical") -> dict:
    """FIFO sizing (``fifo_sizing``: ``"analytical"``, :func:`sw.compiler.fifo_analytic.size_fifos_analytic`
    from the layers' cycle models, falling back to simulation where it cannot bound a FIFO;
    or ``"simulation"``, a sizing run), then the sized design on ``frames``; measured figures.

    Returns:
        ``{"cycles_per_frame", "steady_frame" (index: the second-to-last frame of three or
        more, else the last), "frame_interval" (its cycles, tlast to tlast), "mismatches",
        "bit_exact", "mac_busy" (per layer, MAC-busy cycles over the whole run / frames: each
        layer's cycles per frame), "mac_busy_per_frame" (in each frame interval), "fifo_depths",
        "fifo_bits", "sizing_method", "sizing_s", "model_interval" (analytical: the model's
        frame interval, cycles), "verilator_build_s",
        "sim_s", "sim_cycles_per_s", "harness"}``. ``harness``: :func:`sim.rtlsim.simulate`'s
        (``native``: the C++ testbench, default; ``cocotb``). Build time: Verilog emission +
        Verilator + C++ (0 if cached), measured by the native harness, with cocotb from the
        call's start to the build log's last write; simulation time: measured by the native
        harness, with cocotb from the build's end to the test log's last write; cycles/s =
        simulated frame cycles / sim_s. ``progress``: passed to the native harness.
    """
    from sim.rtlsim import simulate

    t0 = time.time()
    # sim.fifosizing.size_fifos with a longer watchdog: with frame-deep FIFOs the input is
    # absorbed early and a deep pipeline may send its first output beat more than the default
    # II/4 cycles later (seen on the small config: "no AXI-Stream beat for 24577 cycles" with
    # every listed FIFO empty); a real deadlock is still caught, one II later
    from sw.compiler.estimate import bottleneck, estimate
    from sim.fifosizing import MIN_DEPTH, SLACK, FifoSizingError, sizing_depths

    from sw.compiler.fifo_analytic import AnalyticSizingError, fifo_bits, size_fifos_analytic

    ii = bottleneck(estimate(graph)).cycles
    method, model_interval, fallback = fifo_sizing, None, None
    if fifo_sizing == "analytical":
        try:
            res = size_fifos_analytic(graph)
            depths, model_interval = res.depths, res.interval
        except AnalyticSizingError as exc:
            method, fallback = "simulation", str(exc)
    elif fifo_sizing != "simulation":
        raise ValueError(f"fifo_sizing must be 'analytical' or 'simulation', got {fifo_sizing!r}")
    if method == "simulation":
        try:
            sizing = simulate(graph, frames[:2], fifo_depths=sizing_depths(graph), instrument=True,
                              build_root=build_root, watchdog_cycles=max(20_000, 2 * ii),
                              harness=harness, progress=progress)
        except AssertionError as exc:
            raise FifoSizingError(f"FIFO sizing simulation failed: {exc}") from exc
        depths = {t: max(MIN_DEPTH, int(v) + SLACK) for t, v in sizing.fifo_max.items()}
    t_size = time.time() - t0
    t1 = time.time()
    run = simulate(graph, frames, fifo_depths=depths, instrument=True, build_root=build_root,
                   watchdog_cycles=max(20_000, 2 * ii), harness=harness, progress=progress)
    t_total = time.time() - t1
    if run.sim_s is not None:
        build_s, sim_s = run.build_s, max(1e-3, run.sim_s)
    else:
        bl = run.build_dir / "build.log"
        logs = sorted(run.build_dir.glob("test_*.log"), key=lambda p: p.stat().st_mtime)
        t_build_end = bl.stat().st_mtime if bl.exists() and bl.stat().st_mtime >= t1 else t1
        t_end = logs[-1].stat().st_mtime if logs else time.time()
        build_s, sim_s = t_build_end - t1, max(1e-3, t_end - t_build_end)
    cyc = [int(c) for c in run.cycles]
    # steady state: a frame with frames before and after it (the last frame's interval lacks a
    # following frame, so upstream layers sit idle in it); the last frame when only two ran
    k = len(cyc) - 2 if len(cyc) >= 3 else len(cyc) - 1
    return {"frames": len(frames), "cycles_per_frame": cyc, "steady_frame": k, "frame_interval": cyc[k],
            "mismatches": [int(m) for m in run.mismatches], "bit_exact": not any(run.mismatches),
            # per frame over the whole run: a deep pipeline's early layers finish the last frame
            # long before the output's steady-state interval, which then shows them idle
            "mac_busy": {k2: round(sum(f[k2] for f in run.mac_busy) / len(run.mac_busy), 1)
                         for k2 in (run.mac_busy[0] if run.mac_busy else {})},
            "mac_busy_per_frame": [{k2: int(v) for k2, v in f.items()} for f in run.mac_busy],
            "fifo_depths": depths, "fifo_bits": fifo_bits(graph, depths), "sizing_method": method,
            "sizing_fallback": fallback, "model_interval": model_interval,
            "sizing_s": round(t_size, 3), "sized_run_s": round(t_total, 1),
            "verilator_build_s": round(build_s, 1), "sim_s": round(sim_s, 1),
            "sim_cycles_per_s": round(sum(cyc) / sim_s, 1), "harness": harness}


def simulate_slowest_layers(graph, frames: list[np.ndarray], top_k: int = 2,
                            build_root: Path | None = None, harness: str = "native") -> list[dict]:
    """The ``top_k`` slowest layers of a folded graph, each alone in RTL on full frames.

    For designs too large to simulate whole in a benchmark (the first frame of a 256x256
    config is millions of cycles of the whole pipeline, hours of Verilator on two cores). The
    pipeline's frame interval is its slowest layer's cycles (measured on the small detector:
    98,304 against an II of 98,310), so the slowest layers' own full-frame cycles are the
    measured basis of the projected fps. Each layer gets the golden model's input tensor of
    each frame (real images) and its output is compared with the golden model's.

    Args:
        graph: folded :class:`hw.graph.HWGraph`.
        frames: input images ``[H, W, 3]`` uint8 of the graph's size (at least 2 for a
            steady-state interval).
        top_k: layers by decreasing expected cycles.
        harness: :func:`sim.rtlsim.simulate`'s (``native``: the C++ testbench).

    Returns:
        one row per layer: ``layer``, ``op``, ``folding``, ``expected_cycles`` (compiler),
        ``cycles_per_frame`` (measured; frame 0 from the first input beat to the last output
        beat, later frames tlast to tlast), ``steady_cycles`` (the last frame's),
        ``mismatches``, ``sim_s``; a layer with more than one input or output stream, or with a
        sliding-window stream, gets ``skipped`` with the reason instead.
    """
    from sw.compiler.estimate import estimate
    from sw.compiler.execute import run_graph
    from hw.graph import HWGraph
    from sim.rtlsim import simulate

    est = sorted(estimate(graph), key=lambda e: -e.cycles)[:top_k]
    acts = [run_graph(graph, f, keep_all=True) for f in frames]
    rows = []
    for e in est:
        layer = graph.layer(e.name)
        row = {"layer": e.name, "op": e.op, "folding": dict(layer.folding),
               "expected_cycles": int(e.cycles)}
        if len(layer.inputs) != 1 or len(layer.outputs) != 1:
            rows.append(row | {"skipped": f"{len(layer.inputs)} input / {len(layer.outputs)} "
                                          "output streams"})
            continue
        kinds = {graph.tensors[t].kind for t in layer.inputs + layer.outputs}
        if not kinds <= {"feature", "acc"}:  # the golden model keeps windows as [H, W, C, K*K, ..]
            rows.append(row | {"skipped": f"a {'/'.join(sorted(kinds - {'feature', 'acc'}))} stream"})
            continue
        sub = HWGraph([layer], {t: graph.tensors[t] for t in layer.inputs + layer.outputs},
                      layer.inputs[0], layer.outputs[0])
        t0 = time.time()
        run = simulate(sub, [a[layer.inputs[0]] for a in acts], instrument=False,
                       build_root=build_root, harness=harness)
        rows.append(row | {"cycles_per_frame": [int(c) for c in run.cycles],
                           "steady_cycles": int(run.cycles[-1]),
                           "mismatches": [int(m) for m in run.mismatches],
                           "sim_s": round(time.time() - t0, 1)})
    return rows


# -- accuracy ----------------------------------------------------------------------------------

def _map_entry(res: dict, images: int, what: str) -> dict:
    return {"voc6_map50": round(100 * res["voc6_map50"], 2),
            "map50_present": round(100 * res["map50_present"], 2), "images": images, "model": what}


def accuracy(ckpt: Path, float_ckpt: Path, n_images: int, golden_images: int, voc_root=None,
             cache: Path | None = None) -> dict:
    """VOC6 mAP50 (percent) on the first images of our val split: float, Brevitas W4A8 and the
    golden integer model (the hardware's bits; on ``golden_images`` images, with the W4A8
    Brevitas model on the same images beside it). Missing checkpoints give
    ``{"status": "not available", ...}`` entries."""
    import torch

    from models.centernet import VOC_CLASSES, decode, evaluate_ap50
    from models.detector import CONFIGS, load_checkpoint
    from models.evaluate import run_detection
    from models.voc import VOCDetection

    out: dict = {"data": "VOC6 mAP50 (percent), our VOC2012 val split (first N images)"}
    for key, path in (("float", float_ckpt), ("w4a8_brevitas", ckpt)):
        if not Path(path).exists():
            out[key] = {"status": "not available", "reason": f"checkpoint {path} not found"}
            continue
        model, meta = load_checkpoint(path)
        ds = VOCDetection(voc_root, "val", CONFIGS[meta["config"]].input_size, train=False,
                          limit=n_images, progress=False, skip_bad=True)
        dets, gts = run_detection(model, ds, progress=False)
        what = f"{meta['config']} {'W4A8' if meta['quant'] else 'float'} (Brevitas)"
        out[key] = _map_entry(evaluate_ap50(dets, gts), len(ds), what) | {"checkpoint": str(path)}
        if meta["quant"] != (key != "float"):
            out[key]["warning"] = f"checkpoint is {'W4A8' if meta['quant'] else 'float'}, not {key}"
    if not Path(ckpt).exists():
        out["golden_integer"] = {"status": "not available", "reason": f"checkpoint {ckpt} not found"}
        return out
    from models.evaluate import export_qonnx_cached
    from sw.flows.demo import dequantise
    from sw.compiler.execute import run_graph
    from sw.compiler.lower import HW_REQUANT, lower_qonnx

    model, meta = load_checkpoint(ckpt)
    onnx_path, size = export_qonnx_cached(ckpt, cache or BUILD_ROOT / "bench_cache")
    graph = lower_qonnx(onnx_path, requant=HW_REQUANT)  # the integer model the hardware runs
    ds = VOCDetection(voc_root, "val", size, train=False, limit=golden_images, progress=False, skip_bad=True)
    from tqdm import tqdm

    ncls = len(VOC_CLASSES)
    dets, gts = {}, {}
    sub_dets, _ = run_detection(model, ds, progress=False)
    t0 = time.time()
    for i in tqdm(range(len(ds)), desc="golden model", file=sys.stderr):
        arr, boxes, labels, diff = ds.render(i)
        y = dequantise(graph, run_graph(graph, arr)[graph.output]).transpose(2, 0, 1)
        key = ds.annos[i].image_id
        dets[key] = decode(y[:ncls], y[ncls:ncls + 2], y[ncls + 2:ncls + 4], stride=size // y.shape[1],
                           k=100, heat_is_logits=True)
        gts[key] = (boxes, labels, diff)
    out["golden_integer"] = _map_entry(evaluate_ap50(dets, gts), len(ds), "golden integer model") | {
        "seconds_per_image": round((time.time() - t0) / max(1, len(ds)), 2)}
    out["w4a8_brevitas_same_images"] = _map_entry(evaluate_ap50(sub_dets, gts), len(ds),
                                                  "Brevitas W4A8 on the golden model's images")
    del torch
    return out


# -- report ------------------------------------------------------------------------------------

def target_check(results: dict) -> dict:
    """Is the issue's target (codenet256 on Ultra96-V2, >= 135 fps at 200 MHz, within LUT/DSP/BRAM
    by Yosys) met? Judged on ``results["target_design"]`` (the compiler's folding for the target
    fps, whose RTL Yosys counts) when present, else on the fastest folding's row. Names the
    limiting layer when not."""
    row = results.get("target_design") or next(
        (r for r in results.get("boards", []) if r.get("config") == TARGET["config"]
         and r.get("board") == TARGET["board"]), None)
    out = dict(TARGET)
    if row is None:
        out.update(status="not evaluated (config or board not in this run)")
        return out
    out["design"] = "target folding" if row is results.get("target_design") else "fastest folding"
    if not row.get("fits", False) and "fps_projected" not in row:
        out.update(status="not met: no folding fits", reason=row.get("reason"))
        return out
    fps_ok = row["fps_projected"] >= TARGET["fps"]
    y = row.get("yosys", {})
    if y.get("status") == "ok":
        u = y["utilisation"]
        res_ok = all(u[k]["used"] <= u[k]["available"] for k in ("LUT", "DSP", "BRAM36"))
        res_note = "by Yosys"
    else:
        res_ok = row["fits"]
        res_note = f"by the compiler's estimates (Yosys: {y.get('status', 'not run')})"
    if results.get("target_compiler"):
        out["compiler_at_target"] = results["target_compiler"]
    out.update(fps_projected=row["fps_projected"], ii_cycles=row["ii_cycles"],
               limiting_layer=row["bottleneck"], fits=res_ok, fits_by=res_note,
               status="met" if fps_ok and res_ok else
               f"not met: {row['fps_projected']:.1f} fps projected"
               f"{'' if fps_ok else ' < %.0f' % TARGET['fps']}; limited by layer {row['bottleneck']}"
               f"{'' if res_ok else '; does not fit'}")
    return out


def _fmt(v, nd=0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{nd}f}" if isinstance(v, (int, float)) else str(v)


def format_markdown(r: dict) -> str:
    """results.md from the results dict."""
    o = [f"# deflow benchmark ({'quick' if r['quick'] else 'full'} run)", "",
         f"Clock for projections: {r['clock_mhz']:g} MHz. Started {r['started']}, "
         f"{r.get('elapsed_s', 0):.0f} s so far."
         + ("" if len(r.get("runs") or []) < 2 else " Merged (`--merge`) from the runs started "
            + ", ".join(f"{x['started']} ({' '.join(x['args']) if x.get('args') else 'arguments not recorded'})"
                        for x in r["runs"]) + "."), "",
         "Legend: **measured** = RTL simulation cycles (Verilator), Yosys counts, AP on our val "
         "split, tool times (this run); **computed** = compiler estimates (expected cycles, "
         "memory, LUT/DSP/BRAM estimates); **projected** = fps from cycles at the clock (no "
         "board ran).", ""]
    o += ["## Throughput and resources per config x board (fastest fitting folding)", "",
          "| config | board | fps projected @ MHz | II (cycles) | bottleneck | est. LUT % | est. DSP % "
          "| est. BRAM36 % | weights KiB | weight / buffer BRAM18 | Yosys LUT / DSP / BRAM36 (measured) |",
          "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for b in r["boards"]:
        if "fps_projected" not in b:
            o.append(f"| {b['config']} | {b['board']} | no fit: {b.get('reason', '?')} | | | | | | | | |")
            continue
        e, y = b["estimated"], b["yosys"]
        if y.get("status") == "ok":
            u = y["utilisation"]
            ys = " / ".join(f"{u[k]['used']:,.0f} ({u[k]['percent']:.0f}%)" for k in ("LUT", "DSP", "BRAM36"))
        else:
            ys = y.get("status", "not run")
        o.append(f"| {b['config']} | {b['board']} | {b['fps_projected']:,.1f} @ {b['clock_mhz']:g} "
                 f"| {b['ii_cycles']:,} | {b['bottleneck']} | {_fmt(e['LUT']['percent'])} "
                 f"| {_fmt(e['DSP']['percent'])} | {_fmt(e['BRAM36']['percent'])} | {b['weight_kib']:,} "
                 f"| {b['weight_bram18']} / {b['buffer_bram18']} | {ys} |")
    for p in CODENET_PUBLISHED:
        o.append(f"| {p['name']} | Ultra96 | {p['fps']} @ {p['clock_mhz']:g} (published) | | | | "
                 f"{p['dsp_pct']} | {p['bram_pct']} | | | |")
    o += ["", f"CoDeNet rows: {CODENET_SOURCE}.", ""]
    t = r.get("target", {})
    o += ["## Issue target", "",
          f"{t.get('config')} on {t.get('board')}, every layer on the fabric, >= {t.get('fps')} fps "
          f"projected at {t.get('clock_mhz')} MHz within LUT, DSP and BRAM: **{t.get('status')}**"
          + (f" (fits {t['fits_by']})" if "fits_by" in t else ""), ""]
    if t.get("compiler_at_target"):
        o += [f"Compiler asked for {t.get('fps')} fps directly (choose_folding with the target): "
              f"{t['compiler_at_target']}", ""]
    td = r.get("target_design")
    if td and "estimated" in td:
        e, y = td["estimated"], td.get("yosys", {})
        o += [f"Target design (judged above): {td['fps_projected']:,.1f} fps projected, II "
              f"{td['ii_cycles']:,} cycles, bottleneck {td['bottleneck']}; estimated LUT "
              f"{e['LUT']['used']:,} ({e['LUT']['percent']}%), DSP {e['DSP']['used']:,} "
              f"({e['DSP']['percent']}%), BRAM36 {e['BRAM36']['used']:,} ({e['BRAM36']['percent']}%); "
              f"{td['external_weight_layers']} MVAUs with external weights in the estimate "
              f"({td['dram_gbps']} GB/s), which the RTL keeps on chip like every other weight, "
              "so Yosys counts them in BRAM/LUTRAM.", ""]
        if y.get("status") == "ok":
            u = y["utilisation"]
            o += ["| Yosys (measured) | " + " | ".join(k for k in ("LUT", "FF", "DSP", "BRAM36", "URAM")
                                                       if k in u) + " |",
                  "|---|" + "---:|" * sum(k in u for k in ("LUT", "FF", "DSP", "BRAM36", "URAM")),
                  "| used / available (%) | " + " | ".join(
                      f"{u[k]['used']:,} / {u[k]['available']:,} ({u[k]['percent']}%)"
                      for k in ("LUT", "FF", "DSP", "BRAM36", "URAM") if k in u) + " |", ""]
        else:
            o += [f"Yosys on the target design: {y.get('status', 'not run')}", ""]
    if r.get("estimate_all_summary"):
        o += ["Cross-check, `build/estimates/summary.json` (sw.flows.estimate_all at the board's default clock): "
              + "; ".join(f"{s['config']} on {s['board']}: {s.get('fps', 0):.1f} fps, bottleneck "
                          f"{s.get('bottleneck')}" for s in r["estimate_all_summary"]), ""]
    o += ["## RTL simulation (measured cycles)", ""]
    for name, s in r["rtl"].items():
        if "error" in s or "status" in s:
            o += [f"### {name}: {s.get('status') or s.get('error')}", ""]
            continue
        m = s["measured"]
        what = ("the issue's target design: compiler folding" if s.get("design") == "target"
                else f"simulation folding on {s.get('board', 'ultra96v2')}")
        o += [f"### {name} ({what} for {s['sim_fps_target']:g} fps at {r['clock_mhz']:g} MHz; "
              f"whole pipeline, {m.get('harness', 'cocotb')} testbench)", "",
              f"Measured cycles per frame {m['cycles_per_frame']} (first includes pipeline fill), steady-state "
              f"interval (frame {m.get('steady_frame')}) {m['frame_interval']:,} vs expected II {s['expected_ii']:,} ({s['bottleneck']}); "
              f"projected {r['clock_mhz'] * 1e6 / m['frame_interval']:,.1f} fps from the measured interval. "
              f"Bit-exact with the golden model: {m['bit_exact']} (mismatches {m['mismatches']}). "
              f"FIFO depths sized by {m.get('sizing_method', 'simulation')} in {m['sizing_s']:,.2f} s"
              + (f", {m['fifo_bits']:,} bits of FIFO" if m.get("fifo_bits") else "")
              + (f", modelled interval {m['model_interval']:,}" if m.get("model_interval") else "")
              + (f" (analysis gave up: {m['sizing_fallback']})" if m.get("sizing_fallback") else "")
              + ".", "",
              "| layer | op | PE | SIMD | expected cycles (computed) | RTL MAC-busy cycles (measured) "
              "| ideal MACs/(PE*SIMD) (computed) | utilisation busy/interval |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
        for l in s["layers"]:
            if l["op"] not in ("MVAU", "VVAU") and l["expected_cycles"] < 0.5 * s["expected_ii"]:
                continue
            o.append(f"| {l['name']} | {l['op']} | {_fmt(l['PE'])} | {_fmt(l['SIMD'])} | {l['expected_cycles']:,} "
                     f"| {_fmt(l['rtl_busy_cycles'])} | {_fmt(l['ideal_cycles'])} "
                     f"| {'-' if l['utilisation'] is None else '%.1f%%' % (100 * l['utilisation'])} |")
        o += ["", "(Stream layers below half the II are omitted here; all layers are in results.json.)", ""]
    if r.get("layer_rtl"):
        o += ["## Slowest layers alone in RTL, full frames (measured cycles)", "",
              "Designs too large to simulate whole here: each of their slowest layers runs alone in "
              "Verilator on the golden model's input tensors of real val images; the pipeline's "
              "frame interval is its slowest layer's cycles.", "",
              "| design | layer | op | folding | expected cycles (computed) | measured cycles per frame "
              "| bit-exact |", "|---|---|---|---|---:|---|---|"]
        for design, rows in r["layer_rtl"].items():
            if isinstance(rows, dict):  # an error for the whole design
                o.append(f"| {design} | {rows.get('error')} | | | | | |")
                continue
            for l in rows:
                fold = ", ".join(f"{k}={v}" for k, v in l["folding"].items() if k in ("PE", "SIMD"))
                meas = (l.get("skipped") or
                        ", ".join(f"{c:,}" for c in l["cycles_per_frame"]))
                exact = "-" if "skipped" in l else str(not any(l["mismatches"]))
                o.append(f"| {design} | {l['layer']} | {l['op']} | {fold} | {l['expected_cycles']:,} "
                         f"| {meas} | {exact} |")
        o.append("")
    o += ["## Accuracy (measured, VOC6 mAP50 %, our VOC2012 val split)", "",
          "| model | VOC6 mAP50 | mAP50 present classes | images |", "|---|---:|---:|---:|"]
    for k, v in r.get("accuracy", {}).items():
        if not isinstance(v, dict):
            continue
        if "voc6_map50" in v:
            o.append(f"| {k} | {v['voc6_map50']:.2f} | {v['map50_present']:.2f} | {v['images']} |")
        else:
            o.append(f"| {k} | {v.get('status')}: {v.get('reason', '')} | | |")
    for p in CODENET_PUBLISHED:
        o.append(f"| {p['name']}: different data (VOC 2007 test, 20 classes) | AP50 {p['ap50_voc2007_test']} | | |")
    o += ["", "## Tool speed (measured)", "", "| config | step | seconds | note |", "|---|---|---:|---|"]
    for name, t in r.get("tools", {}).items():
        for k, v in t.items():
            o.append(f"| {name} | {k} | {v if not isinstance(v, float) else f'{v:,.1f}'} | |")
    o.append("")
    return "\n".join(o)


def plot_layers(sim: dict, name: str, path: Path) -> None:
    """Bar chart per MVAU/VVAU: expected, RTL MAC-busy and ideal cycles; measured interval line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [l for l in sim["layers"] if l["op"] in ("MVAU", "VVAU")]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(rows) + 2), 4.5))
    w = 0.28
    ax.bar(x - w, [l["expected_cycles"] for l in rows], w, label="expected (compiler)")
    ax.bar(x, [l["rtl_busy_cycles"] or 0 for l in rows], w, label="RTL MAC-busy (measured)")
    ax.bar(x + w, [l["ideal_cycles"] for l in rows], w, label="ideal MACs/(PE*SIMD)")
    ax.axhline(sim["measured"]["frame_interval"], color="k", ls="--", lw=1,
               label="measured frame interval")
    ax.set_xticks(x, [l["name"] for l in rows], rotation=90, fontsize=6)
    ax.set_ylabel("cycles per frame")
    ax.set_title(f"{name}: per-layer cycles (RTL simulation)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_fig(fig, path)


def plot_fps(results: dict, path: Path) -> None:
    """Projected fps per config x board (log scale) beside CoDeNet's published points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [b for b in results["boards"] if "fps_projected" in b]
    labels = [f"{b['config']}\n{b['board']}" for b in rows] + [p["name"].replace(" (", "\n(") for p in CODENET_PUBLISHED]
    vals = [b["fps_projected"] for b in rows] + [p["fps"] for p in CODENET_PUBLISHED]
    colors = ["tab:blue"] * len(rows) + ["tab:red"] * len(CODENET_PUBLISHED)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(labels) + 2), 4.5))
    ax.bar(range(len(vals)), vals, color=colors)
    ax.axhline(TARGET["fps"], color="g", ls="--", lw=1, label=f"target {TARGET['fps']:g} fps")
    ax.set_yscale("log")
    ax.set_xticks(range(len(vals)), labels, rotation=90, fontsize=6)
    ax.set_ylabel(f"fps (ours projected @ {results['clock_mhz']:g} MHz; CoDeNet published @ 250 MHz)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_fig(fig, path)


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def _same_folding(a: dict, b: dict) -> bool:
    """Two board rows of the same design: the compiler is deterministic, so equal II, bottleneck
    and estimated resources mean the same folding (and the same RTL)."""
    return all(a.get(k) == b.get(k) for k in ("config", "board", "ii_cycles", "bottleneck", "estimated"))


def _carry_yosys(new_row: dict, old_row: dict | None) -> dict:
    """``new_row``, with ``old_row``'s Yosys counts when this run did not synthesize and the
    folding is the same."""
    if (old_row is None or "counts" not in old_row.get("yosys", {})
            or "counts" in new_row.get("yosys", {}) or not _same_folding(new_row, old_row)):
        return new_row
    return new_row | {"yosys": old_row["yosys"] | {"from_earlier_run": True}}


def merge_results(prev: dict, new: dict) -> dict:
    """``prev`` (an earlier results.json) updated with what the run ``new`` measured.

    Per-config entries (``rtl``, ``tools``, ``layer_rtl``) and board rows (keyed by config and
    board) of ``new`` replace those of ``prev``; the others are kept. A board row (or the target
    design) that this run did not synthesize keeps the earlier Yosys counts when its folding is
    the same (:func:`_same_folding`); accuracy skipped in this run keeps the earlier figures.
    ``runs`` lists every run's start time and arguments. Used by ``--merge``, so long
    simulations of one config can be run on their own (or side by side) into one table.
    """
    out = dict(prev)
    for k, v in new.items():
        if k in ("rtl", "tools", "layer_rtl"):
            merged = dict(prev.get(k) or {})
            for name, entry in (v or {}).items():
                if k == "tools" and isinstance(merged.get(name), dict):
                    merged[name] = merged[name] | entry
                elif k == "rtl" and set(entry) == {"status"} and "measured" in (merged.get(name) or {}):
                    continue  # "not simulated in this run" does not erase a measurement
                else:
                    merged[name] = entry
            out[k] = merged
        elif k == "boards":
            rows = {(r["config"], r["board"]): r for r in prev.get("boards", [])}
            for r in v:
                rows[(r["config"], r["board"])] = _carry_yosys(r, rows.get((r["config"], r["board"])))
            out[k] = list(rows.values())
        elif k == "target_design":
            out[k] = _carry_yosys(v, prev.get(k))
        elif k == "accuracy" and "status" in v and "float" in (prev.get(k) or {}):
            continue
        elif k == "configs":
            out[k] = list(dict.fromkeys(list(prev.get(k, [])) + list(v)))
        elif k != "runs":
            out[k] = v
    out["runs"] = list(prev.get("runs") or [{"started": prev.get("started"), "args": prev.get("args")}])
    this = {"started": new.get("started"), "args": new.get("args")}
    out["runs"] = [r for r in out["runs"] if r != this] + [this]
    return out


def write_results(results: dict, out: Path) -> dict:
    """results.json and results.md, atomically; returns what was written.

    With ``results["_merge"]``, the file on disk is re-read and merged (:func:`merge_results`)
    under an exclusive lock, so several ``--merge`` runs may write to one folder side by side.
    """
    import fcntl

    from hw.graph import write_text_atomic

    results["elapsed_s"] = round(time.time() - results["_t0"], 1)
    data = {k: v for k, v in results.items() if not k.startswith("_")}
    with open(out / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = out / "results.json"
        if results.get("_merge") and path.exists():
            try:
                prev = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise SystemExit(f"bench: --merge: {path} is not valid JSON ({exc}); "
                                 "move it away or run without --merge") from None
            data = merge_results(prev, json.loads(json.dumps(data, default=str)))
        data["target"] = target_check(data)
        results["target"] = data["target"]
        write_text_atomic(path, json.dumps(data, indent=1, default=str) + "\n")
        write_text_atomic(out / "results.md", format_markdown(data))
    return data


# -- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None, prog: str = "python -m sw.flows.bench") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=None)
    p.add_argument("--boards", nargs="+", default=None)
    p.add_argument("--clock-mhz", type=float, default=200.0)
    p.add_argument("--quick", action="store_true", help="small config, one board, few val images, "
                   "no Yosys on designs above --quick-yosys-max-luts estimated LUTs")
    p.add_argument("--out", default=str(REPO_ROOT / "bench"))
    p.add_argument("--sim-configs", nargs="*", default=None, help="configs simulated in RTL "
                   f"(default: {', '.join(DEFAULT_SIM_CONFIGS)}; --quick: the first config)")
    p.add_argument("--sim-fps", type=float, default=None, help="target fps of the simulated folding "
                   "(default by input size: " + ", ".join(f"{k}: {v:g}" for k, v in SIM_FPS.items()) + ")")
    p.add_argument("--sim-frames", type=int, default=3, help="frames in the sized simulation (>= 3: "
                   "the second-to-last is a steady-state frame, with frames before and after it)")
    p.add_argument("--layer-sim-configs", nargs="*", default=list(DEFAULT_LAYER_SIM_CONFIGS),
                   help="configs whose slowest layers run alone in RTL on full frames (codenet256: "
                   "the target design; others: their fastest Ultra96-V2 folding)")
    p.add_argument("--layer-sim-top", type=int, default=2, help="slowest layers per design")
    p.add_argument("--fifo-sizing", choices=("analytical", "simulation"), default="analytical",
                   help="FIFO depths of the simulated designs from the layers' cycle models "
                   "(default, seconds) or by a sizing simulation (minutes to an hour)")
    p.add_argument("--val-images", type=int, default=None, help="images for float/W4A8 mAP "
                   f"(default {FULL_VAL_IMAGES}, --quick {QUICK_VAL_IMAGES})")
    p.add_argument("--golden-images", type=int, default=None, help="images for the golden-model "
                   "mAP (default: as --val-images; the golden model takes seconds per image)")
    p.add_argument("--checkpoint", default=str(REPO_ROOT / "models" / "checkpoints" / "small256_w4a8.pt"))
    p.add_argument("--float-checkpoint", default=str(REPO_ROOT / "models" / "checkpoints" / "small256_float.pt"))
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--no-yosys", action="store_true")
    p.add_argument("--yosys-boards", nargs="*", default=["ultra96v2"],
                   help="boards whose fastest folding Yosys synthesizes (default: ultra96v2)")
    p.add_argument("--yosys-timeout", type=float, default=900.0, help="seconds per design")
    p.add_argument("--quick-yosys-max-luts", type=int, default=40_000)
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="2: Yosys runs in a worker beside the simulations (default on 2+ cores)")
    p.add_argument("--merge", action="store_true", help="update OUT/results.json instead of "
                   "replacing it: this run's configs, boards and measurements replace the earlier "
                   "ones, the rest is kept (several --merge runs may share OUT)")
    p.add_argument("--onnx-cache", default=str(BUILD_ROOT / "estimates" / "onnx"))
    a = p.parse_args(argv)

    from tqdm import tqdm

    from sw.compiler.boards import get_board
    from sw.compiler.estimate import bottleneck, estimate
    from sw.flows.estimate_all import available_configs, export_config
    from sw.compiler.folding import apply_folding
    from sw.compiler.lower import HW_REQUANT, CompileError, lower_qonnx

    configs = a.configs or (["small"] if a.quick else list(DEFAULT_CONFIGS))
    boards = a.boards or (["ultra96v2"] if a.quick else list(DEFAULT_BOARDS))
    known = available_configs()
    bad = [c for c in configs if c not in known]
    if bad:
        print(f"bench: unknown config(s) {', '.join(bad)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    try:
        boards = [get_board(b).name for b in boards]
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    sim_configs = a.sim_configs if a.sim_configs is not None else (
        configs[:1] if a.quick else [c for c in DEFAULT_SIM_CONFIGS if c in configs])
    n_val = a.val_images or (QUICK_VAL_IMAGES if a.quick else FULL_VAL_IMAGES)
    n_golden = a.golden_images or n_val
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    R: dict = {"quick": a.quick, "clock_mhz": a.clock_mhz, "configs": configs, "boards": [], "rtl": {},
               "tools": {}, "codenet_published": list(CODENET_PUBLISHED), "codenet_source": CODENET_SOURCE,
               "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "args": list(argv if argv is not None else sys.argv[1:]), "_t0": time.time(),
               "_merge": a.merge}
    summ = BUILD_ROOT / "estimates" / "summary.json"
    if summ.exists():
        try:
            R["estimate_all_summary"] = [s for s in json.loads(summ.read_text())
                                         if s.get("config") == TARGET["config"] and "fps" in s]
        except json.JSONDecodeError:
            pass
    steps = len(configs) * (1 + len(boards)) + len(sim_configs) + (0 if a.no_accuracy else 1)
    bar = tqdm(total=steps, unit="step", file=sys.stderr)
    graphs, folded, target_cfg = {}, {}, None
    # 1. compile: export (cached), lower, fastest folding per board (estimates)
    for name in configs:
        bar.set_description(f"{name}: export + lower")
        onnx, t_exp = export_config(name, Path(a.onnx_cache))
        t0 = time.time()
        graphs[name] = lower_qonnx(onnx, requant=HW_REQUANT)
        R["tools"][name] = {"export_s (0 = cached)": round(t_exp, 1), "lower_s": round(time.time() - t0, 1)}
        bar.update(1)
        for b in boards:
            bar.set_description(f"{name}: fold {b}")
            row, g, _ = board_row(graphs[name], b, a.clock_mhz)
            R["boards"].append({"config": name} | row)
            R["tools"][name][f"fold_{b}_s"] = row.get("fold_s")
            folded[(name, b)] = g
            bar.update(1)
            write_results(R, out)
    if TARGET["config"] in graphs and TARGET["board"] in boards:
        row, g, target_cfg = board_row(graphs[TARGET["config"]], TARGET["board"], a.clock_mhz,
                                       TARGET["fps"])
        R["target_design"] = {"config": TARGET["config"]} | row
        folded["target"] = g
        R["target_compiler"] = ("a folding meeting the target fps fits by the compiler's estimates"
                                if g is not None else f"refused: {row['reason']}")
    plot_fps(write_results(R, out), out / "fps.png")

    def accuracy_pass():
        if a.no_accuracy:
            R["accuracy"] = {"status": "skipped (--no-accuracy)"}
            return
        bar.set_description("accuracy")
        fl = Path(a.float_checkpoint)
        if not fl.exists() and (REPO_ROOT / "runs" / "main" / "float.pt").exists():
            fl = REPO_ROOT / "runs" / "main" / "float.pt"  # the training run's float parent
        try:
            R["accuracy"] = accuracy(Path(a.checkpoint), fl, n_val, n_golden,
                                     cache=BUILD_ROOT / "bench_cache")
        except Exception as exc:  # data missing etc.: recorded, the rest of the bench goes on
            R["accuracy"] = {"error": f"{type(exc).__name__}: {exc}"}
        bar.update(1)
        write_results(R, out)

    # Yosys runs in a worker thread beside the simulations when --jobs > 1 (Yosys and the
    # simulators are subprocesses, one core each); the worker only sets its row's "yosys"
    # entry, and the main thread writes the results files
    pool = ThreadPoolExecutor(max_workers=1) if a.jobs > 1 else None
    jobs = []

    def yosys_one(row, key):
        where = (f"{row['config']}_{row['board']}_target{TARGET['fps']:g}fps"
                 if key == "target" else f"{key[0]}_{key[1]}")
        try:
            res = run_yosys(folded[key], row["board"], out / "yosys" / where, a.yosys_timeout)
        except Exception as exc:
            res = {"status": f"failed: {type(exc).__name__}: {exc}"}
        row["yosys"] = res

    def yosys_pass(names):
        rows = [R["target_design"]] if TARGET["config"] in names and "target_design" in R else []
        for row in rows + R["boards"]:
            key = "target" if row is R.get("target_design") else (row["config"], row["board"])
            if row["config"] not in names or folded.get(key) is None or row["yosys"] != {"status": "not run"}:
                continue  # another config, no folding fits, or done already
            if a.no_yosys:
                row["yosys"] = {"status": "skipped (--no-yosys)"}
            elif row["board"] not in (a.yosys_boards or []):
                row["yosys"] = {"status": "not run (board not in --yosys-boards)"}
            elif a.quick and row["estimated"]["LUT"]["used"] > a.quick_yosys_max_luts:
                row["yosys"] = {"status": f"skipped in --quick (> {a.quick_yosys_max_luts:,} estimated LUTs)"}
            elif pool is not None:
                row["yosys"] = {"status": "queued (running beside the simulations)"}
                jobs.append(pool.submit(yosys_one, row, key))
            else:
                bar.set_description(f"yosys {row['config']} {row['board']}")
                yosys_one(row, key)
            write_results(R, out)

    if pool is not None:  # every design, smallest first, while the simulations run
        yosys_pass([c for c in configs if c == TARGET["config"] or known[c] <= 128])
        yosys_pass(configs)

    def layer_pass():
        """The slowest layers of the designs too large to simulate whole, alone, full frames."""
        R["layer_rtl"] = {}
        designs = [(f"{TARGET['config']} target {TARGET['fps']:g} fps, {TARGET['board']}",
                    folded.get("target"), TARGET["config"])] \
            if TARGET["config"] in a.layer_sim_configs else []
        designs += [(f"{c} fastest, ultra96v2", folded.get((c, "ultra96v2")), c)
                    for c in a.layer_sim_configs if c != TARGET["config"]]
        for label, g, name in designs:
            if g is None or name not in graphs:
                continue
            bar.set_description(f"{label}: slowest layers in RTL")
            try:
                R["layer_rtl"][label] = simulate_slowest_layers(
                    g, list(sample_images(2, known[name], split="val")), a.layer_sim_top)
            except Exception as exc:
                R["layer_rtl"][label] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            write_results(R, out)

    # 3. RTL simulation of each sim config (modest folding), Yosys after the first (cheap) one
    from models.data import sample_images

    for i, name in enumerate(sim_configs):
        bar.set_description(f"{name}: RTL simulation")
        if name not in graphs:
            R["rtl"][name] = {"status": "not simulated (not in --configs)"}
            bar.update(1)
            continue
        size = known[name]
        t0 = time.time()
        if name == TARGET["config"] and folded.get("target") is not None and a.sim_fps is None:
            # the target design itself: its projected fps then rests on a measured
            # whole-pipeline frame interval
            fps, g, cfg, design = TARGET["fps"], folded["target"], target_cfg, "target"
        else:
            design = "simulation"
            fps = a.sim_fps or SIM_FPS.get(size, 100.0)
            try:
                sim_board, cfg = simulation_folding(graphs[name], fps, a.clock_mhz)
            except CompileError as exc:
                R["rtl"][name] = {"error": f"no simulation folding: {exc}"}
                bar.update(1)
                write_results(R, out)
                continue
            g = apply_folding(graphs[name], cfg)
        est = estimate(g)
        bn = bottleneck(est)
        R["tools"][name]["sim_fold_s"] = round(time.time() - t0, 1)
        frames = list(sample_images(max(2, a.sim_frames), size, split="val"))

        def sim_progress(cycles, frames_done, beats, name=name):
            bar.set_description(f"{name}: RTL simulation, {cycles / 1e6:.0f} M cycles, "
                                f"{frames_done} frames out")
        try:
            m = simulate_config(g, frames, progress=sim_progress, fifo_sizing=a.fifo_sizing)
        except Exception as exc:
            R["rtl"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
        else:
            R["rtl"][name] = {"sim_fps_target": fps, "design": design,
                              "board": TARGET["board"] if design == "target" else sim_board,
                              "expected_ii": bn.cycles, "bottleneck": bn.name,
                              "folding": cfg, "measured": m,
                              "layers": layer_rows(g, est, m["mac_busy"], m["frame_interval"])}
            R["tools"][name].update(fifo_sizing_s=m["sizing_s"], fifo_sizing_method=m["sizing_method"],
                                    verilator_build_s=m["verilator_build_s"],
                                    rtl_sim_s=m["sim_s"], rtl_sim_cycles_per_s=m["sim_cycles_per_s"])
            plot_layers(R["rtl"][name], name, out / f"layers_{name}.png")
        bar.update(1)
        write_results(R, out)
        if i == 0:  # then accuracy, the small design's and the target design's Yosys, and
            accuracy_pass()  # the layer runs, before the long whole-pipeline simulations
            yosys_pass([name, TARGET["config"]])
            layer_pass()
    if "accuracy" not in R:
        accuracy_pass()
    if "layer_rtl" not in R:
        layer_pass()
    # 5. Yosys on the remaining configs (the slow ones last)
    yosys_pass(configs)
    if pool is not None:
        bar.set_description(f"waiting for Yosys ({sum(not j.done() for j in jobs)} designs left)")
        pool.shutdown(wait=True)
    bar.close()
    data = write_results(R, out)
    plot_fps(data, out / "fps.png")
    print((out / "results.md").read_text())
    print(f"wrote {out}/results.json, results.md, fps.png"
          + "".join(f", layers_{n}.png" for n in R["rtl"] if "measured" in R["rtl"][n]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
