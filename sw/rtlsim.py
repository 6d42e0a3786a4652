"""Run the generated accelerator in RTL simulation (cocotb + Verilator) on real frames.

This is the simulation backend used by the tests and ``make demo``: frames in, output
values and measured cycles out, every value compared with the golden model.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sw.execute import run_graph
from sw.hwgraph import HWGraph, TensorInfo


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
    """

    outputs: list[np.ndarray]
    expected: list[np.ndarray]
    mismatches: list[int]
    cycles: list[int]
    build_dir: Path
    fifo_max: dict[str, int] = field(default_factory=dict)
    mac_busy: list[dict[str, int]] = field(default_factory=list)


def _to_axi_bytes(t: TensorInfo, values: np.ndarray) -> list[int]:
    """Bytes of a tensor on AXI-Stream (:func:`sw.driver.pack_frames`, the driver's packing:
    each value little-endian in ``ceil(bits/8)`` bytes)."""
    from sw.driver import StreamSpec, pack_frames

    v = np.asarray(values)
    return pack_frames(StreamSpec(tuple(v.shape), t.bits, t.signed), v).reshape(-1).tolist()


def _from_axi_bytes(graph: HWGraph, data: list[int]) -> np.ndarray:
    from sw.driver import StreamSpec, unpack_frames

    t = graph.tensors[graph.output]
    return unpack_frames(StreamSpec(tuple(t.shape), t.bits, t.signed), data)[0]


def simulate(graph: HWGraph, frames: list[np.ndarray], *, stall: float = 0.0,
             backpressure: float = 0.0, waves: bool | None = None,
             build_root: Path | None = None, toplevel: str = "deflow_top",
             fifo_depths: dict[str, int] | None = None, instrument: bool = True,
             watchdog_cycles: int | None = None) -> RTLRun:
    """Stream ``frames`` (each ``[H, W, C]`` integers) through the RTL of ``graph``.

    Args:
        stall, backpressure: probability of an idle input cycle / a not-ready output cycle.
        fifo_depths: ``{tensor: entries}`` overriding :func:`hw.top.default_fifo_depths`.
        instrument: build the probed top level (FIFO levels, MAC-busy counters, watchdog
            diagnosis); the results then carry ``fifo_max`` and ``mac_busy``.
        watchdog_cycles: fail with a stall diagnosis when no AXI-Stream beat moves for this
            many cycles (default: a quarter of the bottleneck's II, at least 20,000).

    Raises:
        AssertionError: the RTL output differs from the golden model, times out, or the
            watchdog fires (the message names the stalled layers and FIFOs).
    """
    from hw.top import Accelerator
    from sim.runner import DEFAULT_BUILD_ROOT, run_cocotb

    build_root = Path(build_root or DEFAULT_BUILD_ROOT)
    expected = [run_graph(graph, f)[graph.output] for f in frames]
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "result.json")
        from sw.estimate import bottleneck, estimate

        # generous: stalls and back-pressure at most halve throughput each, plus pipeline fill
        ii = bottleneck(estimate(graph)).cycles
        timeout = int(4 * ii * (len(frames) + 1) / max(1e-3, (1 - stall) * (1 - backpressure)))
        top = Accelerator(graph, fifo_depths=fifo_depths, instrument=instrument)
        if watchdog_cycles is None:
            watchdog_cycles = max(20_000, ii // 4)
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
