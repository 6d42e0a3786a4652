"""``deflow simulate FOLDER``: run what ``deflow compile`` wrote.

Builds the folder's accelerator (``hw_graph.json`` with the depths of ``fifo_depths.json``)
with the native C++ Verilator testbench (:mod:`sim.native`), streams frames (random, seeded,
or given as a ``.npy``) back to back with the input always valid and the output always ready,
checks every output value against the golden model (:func:`sw.compiler.execute.run_graph`) and reports
the measured steady-state frame interval beside the compiler's II.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


class SimulateError(RuntimeError):
    """The folder or the input cannot be simulated (one line saying why)."""


def load_folder(folder: Path):
    """``(graph, fifo_depths)`` of a ``deflow compile`` folder.

    Raises:
        SimulateError: the folder, ``hw_graph.json`` or ``fifo_depths.json`` is missing or
            unreadable.
    """
    from hw.graph import load_depths
    from hw.graph import HWGraph

    folder = Path(folder)
    if not folder.is_dir():
        raise SimulateError(f"{folder} is not a folder (expected the --out folder of deflow compile)")
    gpath = folder / "hw_graph.json"
    if not gpath.is_file():
        raise SimulateError(f"{folder} has no hw_graph.json: not a deflow compile folder")
    try:
        graph = HWGraph.load(gpath)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SimulateError(f"{gpath}: cannot read the hardware graph: {exc}") from exc
    dpath = folder / "fifo_depths.json"
    if not dpath.is_file():
        raise SimulateError(f"{folder} has no fifo_depths.json (compiled with --no-verilog?); "
                            f"run deflow compile again")
    try:
        depths = load_depths(dpath)
    except ValueError as exc:
        raise SimulateError(str(exc)) from exc
    return graph, depths


def load_input(path: Path, graph, frames: int | None) -> list[np.ndarray]:
    """Frames ``[H, W, C]`` from a ``.npy`` of one frame ``[H, W, C]`` or a batch
    ``[N, H, W, C]`` (NHWC integers in the input type's range); ``frames`` repeats the batch
    cyclically to that many frames.

    Raises:
        SimulateError: missing or unreadable file, wrong shape, non-integer values or values
            outside the input type's range.
    """
    t = graph.tensors[graph.input]
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SimulateError(f"--input {path}: cannot read as .npy: {exc}") from exc
    shape = tuple(t.shape)
    if x.shape == shape:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
        raise SimulateError(f"--input {path}: shape {tuple(x.shape)}, the accelerator takes "
                            f"{shape} (NHWC) or [N, {', '.join(map(str, shape))}]")
    if not (np.issubdtype(x.dtype, np.integer) or
            (np.issubdtype(x.dtype, np.floating) and np.all(np.isfinite(x)) and np.all(x == np.round(x)))):
        raise SimulateError(f"--input {path}: values must be integers (dtype {x.dtype}); the "
                            f"input stream is {'int' if t.signed else 'uint'}{t.bits}")
    lo, hi = (-(1 << (t.bits - 1)), (1 << (t.bits - 1)) - 1) if t.signed else (0, (1 << t.bits) - 1)
    if x.size and (x.min() < lo or x.max() > hi):
        raise SimulateError(f"--input {path}: values {int(x.min())}..{int(x.max())} outside the "
                            f"input type {'int' if t.signed else 'uint'}{t.bits} [{lo}, {hi}]")
    x = x.astype(np.int64)
    n = frames or x.shape[0]
    return [x[i % x.shape[0]] for i in range(n)]


def folder_clock_mhz(folder: Path) -> float | None:
    """The clock (MHz) ``deflow compile`` estimated the folder at (``estimates.json``), or
    ``None`` when the folder has no readable estimate report."""
    try:
        return float(json.loads((Path(folder) / "estimates.json").read_text())["clock_mhz"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def simulate_folder(folder: Path, *, input_path: Path | None = None, frames: int | None = None,
                    seed: int = 0, build_root: Path | None = None,
                    clock_mhz: float | None = None) -> dict:
    """Simulate a compiled folder's accelerator on frames and compare with the golden model.

    Args:
        input_path: ``.npy`` input (see :func:`load_input`); default ``frames`` seeded random
            frames of the input type.
        frames: number of frames (default 3 random, or the file's count).
        clock_mhz: clock of the projected frame rate (default: the folder's, from its
            ``estimates.json``; no projection without either).

    Returns:
        ``{"bit_exact", "mismatches" (per frame), "values_per_frame", "frames",
        "cycles" (per frame: first frame from the first input beat, then tlast to tlast),
        "interval_cycles" (the last frame's, the steady state; None with one frame),
        "first_frame_cycles", "ii_cycles" (compiler, bottleneck layer's expected cycles),
        "bottleneck", "interval_vs_ii" (ratio), "fifo_depths_total", "build_s", "sim_s",
        "clock_mhz", "fps_at_clock" (clock / measured interval; None without an interval
        or a clock)}``.

    Raises:
        SimulateError: bad folder or input, or the simulation stalled / timed out (the
            watchdog's first line).
    """
    from sw.compiler.estimate import bottleneck, estimate
    from sw.compiler.fifo_analytic import random_frames
    from sim.rtlsim import simulate

    graph, depths = load_folder(folder)
    if frames is not None and frames < 1:
        raise SimulateError(f"--frames must be >= 1, got {frames}")
    if clock_mhz is not None and clock_mhz <= 0:
        raise SimulateError(f"--clock-mhz must be positive, got {clock_mhz:g}")
    clock = clock_mhz or folder_clock_mhz(folder)
    if input_path is not None:
        xs = load_input(Path(input_path), graph, frames)
    else:
        xs = random_frames(graph, frames or 3, seed=seed)
    bn = bottleneck(estimate(graph))
    try:
        run = simulate(graph, xs, fifo_depths=depths, harness="native", build_root=build_root)
    except AssertionError as exc:
        lines = str(exc).strip().splitlines()
        raise SimulateError(f"simulation did not finish: {lines[0] if lines else exc}") from exc
    interval = int(run.cycles[-1]) if len(run.cycles) > 1 else None
    return {
        "bit_exact": all(m == 0 for m in run.mismatches),
        "mismatches": [int(m) for m in run.mismatches],
        "values_per_frame": int(graph.tensors[graph.output].values_per_frame),
        "frames": len(xs),
        "cycles": [int(c) for c in run.cycles],
        "interval_cycles": interval,
        "first_frame_cycles": int(run.cycles[0]),
        "ii_cycles": int(bn.cycles),
        "bottleneck": bn.name,
        "interval_vs_ii": None if interval is None else round(interval / bn.cycles, 4),
        "fifo_depths_total": int(sum(depths.values())),
        "build_s": run.build_s,
        "sim_s": run.sim_s,
        "clock_mhz": clock,
        "fps_at_clock": (round(clock * 1e6 / interval, 1) if interval and clock else None),
    }


def cmd_simulate(args) -> int:
    """``deflow simulate``: exit 0 when bit-exact, 1 when some output value differs."""
    res = simulate_folder(Path(args.folder), input_path=args.input, frames=args.frames,
                          seed=args.seed, clock_mhz=args.clock_mhz)
    if args.json:
        print(json.dumps(res))
    else:
        n = res["values_per_frame"]
        exact = ("bit-exact: every output value equals the golden model's" if res["bit_exact"]
                 else "NOT bit-exact: " + ", ".join(f"frame {i}: {m} of {n} values differ"
                                                    for i, m in enumerate(res["mismatches"]) if m))
        print(f"{res['frames']} frames through {args.folder} (native Verilator testbench; "
              f"build {res['build_s']} s, simulation {res['sim_s']} s)")
        print(exact)
        print(f"cycles per frame: {', '.join(f'{c:,}' for c in res['cycles'])} "
              f"(first frame includes the pipeline fill)")
        if res["interval_cycles"] is None:
            print(f"steady-state interval: needs 2+ frames; II {res['ii_cycles']:,} cycles "
                  f"({res['bottleneck']})")
        else:
            print(f"steady-state interval {res['interval_cycles']:,} cycles vs II "
                  f"{res['ii_cycles']:,} ({res['bottleneck']}): {res['interval_vs_ii']:.4f} x II")
            if res["fps_at_clock"]:
                print(f"projected {res['fps_at_clock']:,.1f} frames/s at {res['clock_mhz']:g} MHz "
                      "(from the measured interval; not a board measurement)")
    return 0 if res["bit_exact"] else 1


def add_simulate_parser(sub) -> argparse.ArgumentParser:
    """Register ``deflow simulate`` on an argparse subparsers object."""
    s = sub.add_parser("simulate", help="run a compiled folder's accelerator in RTL simulation "
                       "(native Verilator), check it against the golden model, measure its interval",
                       description="Build the compiled folder's accelerator with the native "
                       "Verilator testbench (cached under build/sim), stream frames through it, "
                       "compare every output value with the golden model and print the measured "
                       "frame interval (--json: one JSON object). Writes nothing into the folder.")
    s.add_argument("folder", help="output folder of deflow compile (hw_graph.json, fifo_depths.json)")
    s.add_argument("--input", default=None, help=".npy of one [H, W, C] frame or [N, H, W, C] "
                   "(default: seeded random frames)")
    s.add_argument("--frames", type=int, default=None,
                   help="frames to stream (default 3 random, or the file's count; 2+ for an interval)")
    s.add_argument("--seed", type=int, default=0, help="seed of the random frames")
    s.add_argument("--clock-mhz", type=float, default=None, help="clock of the projected "
                   "frame rate (default: the one the folder was compiled for)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_simulate)
    return s

