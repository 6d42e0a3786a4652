"""FIFO depths between layers, sized by RTL simulation (FINN's ``InsertAndSetFIFODepths`` idea).

Reconvergent paths (a ``Duplicate`` whose branches meet again at a deformable sampler or a
concat) deadlock or lose throughput when one branch runs ahead of the other by more beats than
its FIFOs hold. How far ahead depends on each layer's fill latency and burst pattern, so the
depths are measured rather than derived:

1. build the accelerator with every inter-layer FIFO deep enough for a whole frame of its
   stream (capped at :data:`MAX_SIZING_DEPTH`);
2. stream ``frames`` back to back with the input always valid and the output always ready
   (the fastest the pipeline can go, which is where skew is largest);
3. read the highest level every FIFO reached (the instrumented top level's ``dbg_fifo_max``)
   and set its depth to that level plus :data:`SLACK` entries, never below 2.

The sized design is then simulated again by the caller (tests, demo, benchmark) to check that
it reaches the bottleneck layer's initiation interval and stays bit-exact.

``deflow compile``, ``make demo`` and ``make bench`` size FIFOs analytically by default
(:mod:`sw.compiler.fifo_analytic`: the same peak levels from the layers' token schedules, without a
simulation); this module is their ``--fifo-sizing simulation`` and the analysis's fallback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hw.top import default_fifo_depths
from hw.graph import HWGraph

MAX_SIZING_DEPTH = 1 << 15
SLACK = 2  # entries above the measured peak: the FIFO's own read-register and one in flight
MIN_DEPTH = 2


class FifoSizingError(RuntimeError):
    """The sizing simulation did not finish (it names the stalled FIFO and layers)."""


def sizing_depths(graph: HWGraph) -> dict[str, int]:
    """Generous depths for the sizing run: one frame of each stream, at least the default."""
    depths = default_fifo_depths(graph)
    for layer in graph.layers:
        for t in layer.inputs:
            if t == graph.input:
                continue
            beats = graph.tensors[t].beats_per_frame
            depths[t] = max(depths.get(t, MIN_DEPTH), min(beats + SLACK, MAX_SIZING_DEPTH))
    return depths


def size_fifos(graph: HWGraph, frames: list[np.ndarray], *, build_root: Path | None = None
               ) -> dict[str, int]:
    """Measure the FIFO depth every inter-layer stream of ``graph`` needs.

    Args:
        graph: folded hardware graph.
        frames: at least one input frame ``[H, W, C]`` (two give the steady state between
            frames as well as the first frame's fill).

    Returns:
        ``{tensor: depth}`` for every inter-layer FIFO (entries, each one beat).

    Raises:
        FifoSizingError: the sizing simulation stalled or failed.
    """
    from sim.rtlsim import simulate

    if not frames:
        raise ValueError("size_fifos needs at least one input frame")
    try:
        run = simulate(graph, frames, fifo_depths=sizing_depths(graph), instrument=True,
                       build_root=build_root, waves=False)
    except AssertionError as exc:
        raise FifoSizingError(f"FIFO sizing simulation failed: {exc}") from exc
    if not run.fifo_max:
        raise FifoSizingError("FIFO sizing simulation returned no FIFO levels")
    return {t: max(MIN_DEPTH, int(level) + SLACK) for t, level in run.fifo_max.items()}
