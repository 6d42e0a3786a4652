"""Run the generated accelerator in RTL simulation (cocotb + Verilator) on real frames.

This is the simulation backend used by the tests and ``make demo``: frames in, output
values and measured cycles out, every value compared with the golden model.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sw.compiler.execute import run_graph
from hw.graph import HWGraph, TensorInfo


@dataclass
class RTLRun:
    """Result of one RTL simulation.

    Attributes:
        outputs: per frame, the output tensor ``[H, W, C]`` as the RTL produced it.
        expected: per frame, the golden model's output.
        mismatches: per frame, the number of output values that differ.
        cycles: per frame, measured clock cycles (frame 0: first input beat accepted to the
            last output beat; later frames: tlast to tlast, i.e. the steady-state interval).
        build_dir: simulator build folder (Verilog, waveform when enabled).
        fifo_max: highest level seen on every inter-layer FIFO ``{tensor: entries}`` over
            the whole run (instrumented builds; empty otherwise).
        mac_busy: per frame, ``{layer: cycles}`` in which each MVAU/VVAU issued a MAC step
            during that frame's interval (same intervals as ``cycles``).
        build_s, sim_s: native harness only: seconds to build (Verilog emission, Verilator,
            C++; near 0 when cached) and to simulate; ``None`` with cocotb.
    """

    outputs: list[np.ndarray]
    expected: list[np.ndarray]
    mismatches: list[int]
    cycles: list[int]
    build_dir: Path
    fifo_max: dict[str, int] = field(default_factory=dict)
    mac_busy: list[dict[str, int]] = field(default_factory=list)
    build_s: float | None = None
    sim_s: float | None = None


def _to_axi_bytes(t: TensorInfo, values: np.ndarray) -> list[int]:
    """Bytes of a tensor on AXI-Stream (:func:`sw.runtime.driver.pack_frames`, the driver's packing:
    each value little-endian in ``ceil(bits/8)`` bytes)."""
    from sw.runtime.driver import StreamSpec, pack_frames

    v = np.asarray(values)
    return pack_frames(StreamSpec(tuple(v.shape), t.bits, t.signed), v).reshape(-1).tolist()


def _from_axi_bytes(graph: HWGraph, data: list[int]) -> np.ndarray:
    from sw.runtime.driver import StreamSpec, unpack_frames

    t = graph.tensors[graph.output]
    return unpack_frames(StreamSpec(tuple(t.shape), t.bits, t.signed), data)[0]


def _run_limits(graph: HWGraph, n_frames: int, stall: float, backpressure: float,
                watchdog_cycles: int | None) -> tuple[int, int]:
    """``(timeout, watchdog)`` cycles of a run, the same for both harnesses: the timeout is
    generous (stalls and back-pressure at most halve throughput each, plus pipeline fill), the
    watchdog defaults to a quarter of the bottleneck's II, at least 20,000."""
    from sw.compiler.estimate import bottleneck, estimate

    ii = bottleneck(estimate(graph)).cycles
    timeout = int(4 * ii * (n_frames + 1) / max(1e-3, (1 - stall) * (1 - backpressure)))
    return timeout, max(20_000, ii // 4) if watchdog_cycles is None else watchdog_cycles


def simulate(graph: HWGraph, frames: list[np.ndarray], *, stall: float = 0.0,
             backpressure: float = 0.0, waves: bool | None = None,
             build_root: Path | None = None, toplevel: str = "deflow_top",
             fifo_depths: dict[str, int] | None = None, instrument: bool = True,
             watchdog_cycles: int | None = None, harness: str = "cocotb",
             progress=None, expected: list[np.ndarray] | None = None, build_log=None,
             on_built=None, native_key: str | None = None) -> RTLRun:
    """Stream ``frames`` (each ``[H, W, C]`` integers) through the RTL of ``graph``.

    Args:
        harness: ``"cocotb"`` (:mod:`sim.tb_top`, cocotbext-axi bus drivers, Verilator model
            at ``-O0``) or ``"native"`` (:mod:`sim.native`, a C++ testbench with the same
            cycle bookkeeping and probes, model at ``-O2``: about 40x faster on long runs,
            minutes more to build).
        progress: native harness only: called every 2**20 cycles with ``(cycles, frames
            done, output beats)``.
        expected: the golden model's output per frame when the caller has it already
            (default: computed here with :func:`sw.compiler.execute.run_graph`).
        build_log: native harness only: called with a line before each build step
            (:func:`sim.native.build_native`; default: timestamped lines on stderr).
        on_built: native harness only: called without arguments once the executable is
            ready, before the simulation starts.
        native_key: native harness only: the caller's hash of everything the design's
            Verilog depends on, which lets a cached build skip the Verilog generation
            (:func:`sim.native.build_native`'s ``key``).
        stall, backpressure: probability of an idle input cycle / a not-ready output cycle.
        fifo_depths: ``{tensor: entries}`` overriding :func:`hw.top.default_fifo_depths`.
        instrument: build the probed top level (FIFO levels, MAC-busy counters, watchdog
            diagnosis); the results then carry ``fifo_max`` and ``mac_busy``.
        watchdog_cycles: fail with a stall diagnosis when no AXI-Stream beat moves for this
            many cycles (default: a quarter of the bottleneck's II, at least 20,000).

    Returns:
        the run; outputs that differ from the golden model are counted in ``mismatches``
        (callers check it).

    Raises:
        AssertionError: the simulation times out, or the watchdog fires (the message names
            the stalled layers and FIFOs).
        ValueError: unknown ``harness``.
    """
    from hw.top import Accelerator
    from sim.runner import DEFAULT_BUILD_ROOT, run_cocotb

    if harness not in ("cocotb", "native"):
        raise ValueError(f"unknown harness {harness!r}: use 'cocotb' or 'native'")
    build_root = Path(build_root or DEFAULT_BUILD_ROOT)
    if expected is None:
        expected = [run_graph(graph, f)[graph.output] for f in frames]
    if len(expected) != len(frames):
        raise ValueError(f"{len(expected)} expected outputs for {len(frames)} frames")
    if harness == "native":
        return _simulate_native(graph, frames, expected, stall=stall, backpressure=backpressure,
                                build_root=build_root, toplevel=toplevel,
                                fifo_depths=fifo_depths, instrument=instrument,
                                watchdog_cycles=watchdog_cycles, progress=progress,
                                build_log=build_log, on_built=on_built, native_key=native_key)
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "result.json")
        timeout, watchdog_cycles = _run_limits(graph, len(frames), stall, backpressure,
                                               watchdog_cycles)
        top = Accelerator(graph, fifo_depths=fifo_depths, instrument=instrument)
        config = {
            "frames": [_to_axi_bytes(graph.tensors[graph.input], f) for f in frames],
            "expected": [_to_axi_bytes(graph.tensors[graph.output], e) for e in expected],
            "stall": stall,
            "backpressure": backpressure,
            "timeout_cycles": timeout + 100_000,
            "result_path": result_path,
            "probes": [asdict(p) for p in top.fifo_probes] if instrument else [],
            "busy_layers": top.busy_layers if instrument else [],
            "watchdog_cycles": watchdog_cycles,
        }
        failure = None
        try:
            run_cocotb(top, toplevel, "sim.tb_top", config, waves=waves,
                       build_root=build_root)
        except AssertionError as exc:
            failure = exc
        stall_path = result_path + ".stall"
        if os.path.exists(stall_path):
            raise AssertionError(f"{Path(stall_path).read_text()}\n({failure})")
        if not os.path.exists(result_path):
            raise failure or AssertionError("RTL simulation produced no result")
        results = json.loads(Path(result_path).read_text())
    outputs = [_from_axi_bytes(graph, r["output"]) for r in results]
    mism = [int(np.sum(o != e)) for o, e in zip(outputs, expected)]
    build_dirs = sorted(build_root.glob(f"{toplevel}_verilator_*"), key=lambda p: p.stat().st_mtime)
    return RTLRun(outputs, expected, mism, [r["cycles"] for r in results],
                  build_dirs[-1] if build_dirs else build_root,
                  fifo_max=results[0].get("fifo_max", {}) if results else {},
                  mac_busy=[r.get("mac_busy", {}) for r in results])


def _simulate_native(graph: HWGraph, frames: list[np.ndarray], expected: list[np.ndarray], *,
                     stall: float, backpressure: float, build_root: Path, toplevel: str,
                     fifo_depths, instrument: bool, watchdog_cycles: int | None,
                     progress, build_log=None, on_built=None,
                     native_key: str | None = None) -> RTLRun:
    """:func:`simulate` on the native C++ testbench (:mod:`sim.native`)."""
    from hw.top import Accelerator
    from sim.native import build_native, run_native
    from sim.tb_top import _fields, stall_report

    timeout, watchdog_cycles = _run_limits(graph, len(frames), stall, backpressure,
                                           watchdog_cycles)
    top = Accelerator(graph, fifo_depths=fifo_depths, instrument=instrument)
    top._MustUse__silence = True  # a cached build (found by native_key) never elaborates it
    t0 = time.time()
    exe = build_native(top, toplevel=toplevel, probes=instrument, build_root=build_root,
                       log=build_log or (lambda line: print(f"{time.strftime('%H:%M:%S')} {line}",
                                                            file=sys.stderr, flush=True)),
                       key=native_key)
    build_s = time.time() - t0
    if on_built:
        on_built()
    t_in, t_out = graph.tensors[graph.input], graph.tensors[graph.output]
    data = [_to_axi_bytes(t_in, f) for f in frames]
    in_beats = int(np.prod(t_in.shape)) // t_in.lanes
    out_beats = int(np.prod(t_out.shape)) // t_out.lanes
    in_bb, out_bb = len(data[0]) // in_beats, len(_to_axi_bytes(t_out, expected[0])) // out_beats
    res = run_native(exe, bytes(b for d in data for b in d), in_beat_bytes=in_bb,
                     out_beat_bytes=out_bb, frames=len(frames), out_beats_per_frame=out_beats,
                     timeout_cycles=timeout + 100_000, watchdog_cycles=watchdog_cycles,
                     stall=stall, backpressure=backpressure, progress=progress)
    probes = [asdict(p) for p in top.fifo_probes] if instrument else []
    if res.status == "watchdog":
        report = (stall_report(probes, res.stall["full"], res.stall["starved"], res.stall["level"])
                  if res.stall else stall_report([], 0, 0, 0))
        raise AssertionError(f"watchdog: nothing moved for {watchdog_cycles} cycles at cycle "
                             f"{res.cycles_run}\n{report}")
    if res.status != "ok":
        raise AssertionError(f"timeout: {len(res.frame_end)} of {len(frames)} output frames "
                             f"after {res.cycles_run} cycles (native harness)")
    per_frame = out_beats * out_bb
    outputs = [_from_axi_bytes(graph, list(res.output[i * per_frame:(i + 1) * per_frame]))
               for i in range(len(frames))]
    mism = [int(np.sum(o != e)) for o, e in zip(outputs, expected)]
    fifo_max, mac_busy = {}, []
    if instrument:
        peaks = _fields(res.fifo_max or 0, [p["level_bits"] for p in probes])
        fifo_max = {p["tensor"]: v for p, v in zip(probes, peaks)}
        prev = [0] * len(top.busy_layers)
        for snap in res.mac_busy:
            now = _fields(snap, [32] * len(top.busy_layers))
            mac_busy.append({n: b - a for n, a, b in zip(top.busy_layers, prev, now)})
            prev = now
    return RTLRun(outputs, expected, mism, res.frame_cycles(), exe.parent.parent,
                  fifo_max=fifo_max, mac_busy=mac_busy, build_s=round(build_s, 1),
                  sim_s=round(res.seconds, 1))
