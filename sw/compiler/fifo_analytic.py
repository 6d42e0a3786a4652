"""FIFO depths between layers from the layers' own cycle models, with no RTL simulation.

Every hardware component has a token schedule (:mod:`hw.schedule`): the cycle in which it
takes each input beat and gives each output beat, for any input arrival times, from the same
model as its ``expected_cycles()``. This module runs those schedules layer after layer over
the folded graph, a discrete-event model of the whole accelerator at beat granularity:

1. the input stream delivers one frame per ``period`` cycles, the slowest layer's cycles per
   frame in a stream of frames (:func:`sw.compiler.estimate.analytic_cycles`; raised to the model's own
   frame interval if the pipeline cannot keep that pace), its beats spread evenly over the
   period (or, where that starves the first layer, each frame whole at its period's start);
2. every inter-layer FIFO is infinitely deep (a producer never waits), so each layer's times
   follow from its inputs' times alone and the whole schedule is one pass in topological
   order; a beat written in cycle ``t`` reaches its consumer at ``t + 2``
   (``SyncFIFOBuffered``);
3. each FIFO's highest level over ``frames`` frames (:func:`hw.schedule.fifo_peak_level`) plus
   :data:`sim.fifosizing.SLACK` entries is its depth, never below 2.

Reconvergent paths (DuplicateStreams into a deformable sampler's features and offsets, a
ShuffleNetV2 unit's split and concat, residual adds) need no special case: the skew between
the branches is the difference of their schedules, and it shows up as the level of the FIFO
on the faster branch.

Why the depths suffice: with these depths no FIFO of the model ever fills, so the model's
schedule obeys every constraint of the RTL (FIFO capacities included) and delivers one frame
per ``period``. The RTL (input always valid) takes every beat at the earliest cycle its
constraints allow, which is no later than this schedule as long as each component's
behaviour is monotone (later inputs never make an output earlier) and its schedule is exact,
so it reaches at least the same frame rate. The tests check the result in RTL.

Where the analysis cannot bound a path (an op without a token schedule, or a pipeline whose
model does not settle into a periodic schedule), :class:`AnalyticSizingError` names the
layer or FIFO, and :func:`size_fifos_auto` falls back to simulation for that design.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hw import schedule as S
from hw.graph import HWGraph, HWLayer
from hw.ops import UnknownOpError, op_for
from sim.fifosizing import MIN_DEPTH, SLACK

#: frames the model streams: the first one's fill plus two in the steady state
DEFAULT_FRAMES = 3
#: times the source period is raised to the model's own interval before giving up
MAX_PERIOD_TRIES = 4
METHODS = ("analytical", "simulation")


class AnalyticSizingError(RuntimeError):
    """The analytical sizer cannot bound a FIFO (the message names the layer or FIFO)."""


@dataclass
class AnalyticSizing:
    """Result of :func:`size_fifos_analytic`.

    Attributes:
        depths: ``{tensor: entries}`` for every inter-layer FIFO.
        peaks: ``{tensor: entries}``, the highest level of each FIFO in the model.
        period: cycles between input frames in the model.
        pacing: how the model's input was spread over the period (:func:`source_times`).
        interval: the model's steady-state output frame interval (cycles; last two frames).
        first_frame: cycles from the first input beat to the first frame's last output beat.
        frames: frames streamed. seconds: wall time of the sizing.
    """

    depths: dict[str, int]
    peaks: dict[str, int]
    period: int
    interval: int
    pacing: str
    first_frame: int
    frames: int
    seconds: float
    frame_ends: list[int] = field(default_factory=list)

    def fifo_bits(self, graph: HWGraph) -> int:
        """Total FIFO storage in bits (depth x beat width) of :attr:`depths`."""
        return fifo_bits(graph, self.depths)


def fifo_bits(graph: HWGraph, depths: dict[str, int]) -> int:
    """Bits of FIFO storage of ``depths``: entries x ``lanes * bits`` of each stream."""
    return int(sum(d * graph.tensors[t].lanes * graph.tensors[t].bits for t, d in depths.items()))


def inter_layer_tensors(graph: HWGraph) -> list[str]:
    """The streams that get a FIFO in :class:`hw.top.Accelerator` (every layer input but the
    accelerator's input), in the top level's order."""
    return [t for layer in graph.layers for t in layer.inputs if t != graph.input]


def layer_schedule(graph: HWGraph, layer: HWLayer, arrivals: list[np.ndarray], frames: int
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token schedule of one folded layer (:meth:`hw.ops.base.HWOp.token_schedule`, from
    :mod:`hw.schedule`), with the parameters its component is built with.

    Args:
        arrivals: per input (``layer.inputs`` order), the cycle each beat is available,
            ``frames`` frames back to back.

    Returns:
        ``(consume per input, produce per output)`` cycle arrays.

    Raises:
        AnalyticSizingError: a layer whose component refuses its parameters (an op without an
            op class included).
    """
    try:
        op = op_for(graph, layer)
        comp = op.build()
    except ValueError as exc:
        raise AnalyticSizingError(f"layer {layer.name}: {exc}; its FIFOs cannot be bounded "
                                  f"analytically") from exc
    comp._MustUse__silence = True  # only asked for its parameters, never elaborated
    return op.token_schedule(comp, arrivals, frames)


def steady_period(graph: HWGraph) -> int:
    """Cycles per frame of the slowest layer in a stream of frames (FINN's formulas and the
    window event models, :func:`sw.compiler.estimate.analytic_cycles`): the pace the model's input
    starts from.

    Raises:
        AnalyticSizingError: a layer whose op has no op class (:mod:`hw.ops`).
    """
    from sw.compiler.estimate import analytic_cycles

    try:
        return max(int(analytic_cycles(graph, layer)) for layer in graph.layers)
    except UnknownOpError as exc:
        raise AnalyticSizingError(f"{exc}; its FIFOs cannot be bounded analytically") from exc


def source_times(graph: HWGraph, frames: int, period: int, pacing: str) -> np.ndarray:
    """Cycle from which each input beat is available: ``"frame"``: frame ``f`` whole from
    ``f * period``; ``"smooth"``: beat ``i`` of the stream at ``floor(i * period / B)``
    (``B`` beats per frame), the input spread evenly over the period."""
    beats = graph.tensors[graph.input].beats_per_frame
    if pacing == "frame":
        return np.repeat(np.arange(frames, dtype=np.int64) * period, beats)
    if pacing == "smooth":
        return (np.arange(frames * beats, dtype=np.int64) * period) // beats
    raise ValueError(f"pacing must be 'frame' or 'smooth', got {pacing!r}")


def schedule_graph(graph: HWGraph, *, frames: int, period: int, pacing: str = "frame",
                   progress: bool = False
                   ) -> tuple[dict[str, int], dict[str, np.ndarray], np.ndarray]:
    """Run every layer's token schedule over ``frames`` frames, the input paced by
    :func:`source_times` (``period = 0``: always valid, as the RTL sizing run streams it),
    every FIFO unbounded.

    Returns:
        ``(peaks, frame_peaks, output_frame_ends)``: highest level per FIFO, the same per
        frame of the written beats ``[frames]``, and the cycle of each frame's last output
        handshake.

    Raises:
        AnalyticSizingError: a layer without a token schedule.
    """
    from tqdm import tqdm

    src = source_times(graph, frames, period, pacing)
    writes: dict[str, np.ndarray] = {}
    pending = {t: len(graph.consumers(t)) for t in graph.tensors}
    peaks: dict[str, int] = {}
    frame_peaks: dict[str, np.ndarray] = {}
    out_ends = None
    for layer in tqdm(graph.layers, desc="FIFO sizing (analytical)", unit="layer",
                      disable=not progress, leave=False):
        arr = []
        for t in layer.inputs:
            if t == graph.input:
                arr.append(src)
            else:
                if t not in writes:
                    raise AnalyticSizingError(f"layer {layer.name}: input {t} has no producer "
                                              f"before it (graph not in topological order)")
                arr.append(writes[t] + S.FIFO_LATENCY)
        consume, produce = layer_schedule(graph, layer, arr, frames)
        for t, c in zip(layer.inputs, consume):
            if t == graph.input:
                continue
            w = writes[t]
            if w.size != c.size:
                raise AnalyticSizingError(f"FIFO {t}: {layer.name} reads {c.size} beats but "
                                          f"its producer writes {w.size}")
            level = np.arange(1, w.size + 1) - np.searchsorted(c, w, side="right")
            per_frame = level.reshape(frames, -1).max(axis=1)
            frame_peaks[t] = per_frame
            peaks[t] = int(per_frame.max())
            pending[t] -= 1
            if pending[t] <= 0:
                del writes[t]
        for t, p in zip(layer.outputs, produce):
            expect = frames * graph.tensors[t].beats_per_frame
            if p.size != expect:
                raise AnalyticSizingError(f"layer {layer.name}: schedule gives {p.size} beats "
                                          f"of {t}, the graph says {expect}")
            if t == graph.output:
                out_ends = p.reshape(frames, -1)[:, -1].copy()
            else:
                writes[t] = p
    return peaks, frame_peaks, out_ends


def size_fifos_analytic(graph: HWGraph, *, frames: int = DEFAULT_FRAMES, slack: int = SLACK,
                        period: int | None = None, progress: bool = False) -> AnalyticSizing:
    """Depth of every inter-layer FIFO of ``graph`` from the layers' token schedules.

    Args:
        graph: folded hardware graph.
        frames: frames the model streams (>= 3: fill, then the steady state).
        slack: entries above each FIFO's peak level (the same margin as
            :func:`sim.fifosizing.size_fifos`).
        period: cycles between input frames; default :func:`steady_period`.

    Returns:
        :class:`AnalyticSizing` (``depths`` is ``{tensor: entries}``, as
        :func:`sim.fifosizing.size_fifos` returns).

    Raises:
        AnalyticSizingError: a layer has no token schedule, or the model does not settle to a
            periodic schedule (a FIFO whose level grows frame after frame, named).
        ValueError: ``frames < 3``.
    """
    if frames < 3:
        raise ValueError(f"analytical FIFO sizing needs at least 3 frames, got {frames}")
    t0 = time.time()
    period = int(period or steady_period(graph))
    for _ in range(MAX_PERIOD_TRIES):
        # the input spread evenly over the period gives the smallest FIFOs; where that starves
        # a layer that wants its input in bursts (the first layer as the bottleneck), whole
        # frames at once as the RTL's always-valid input does
        for pacing in ("smooth", "frame"):
            peaks, frame_peaks, ends = schedule_graph(graph, frames=frames, period=period,
                                                      pacing=pacing, progress=progress)
            interval = int(ends[-1] - ends[-2])
            if interval <= period:
                break
        if interval <= period:
            break
        period = interval  # the pipeline is slower than its slowest layer's formula
    else:
        raise AnalyticSizingError(
            f"the model's frame interval ({interval} cycles) keeps growing beyond the input "
            f"period ({period}); FIFOs cannot be bounded analytically")
    growing = [t for t, fp in frame_peaks.items() if fp[-1] > fp[-2] + slack]
    if growing:
        raise AnalyticSizingError(
            f"FIFO level still growing in the last modelled frame on {', '.join(growing[:5])}"
            f"{' ...' if len(growing) > 5 else ''}: not bounded analytically")
    depths = {t: max(MIN_DEPTH, peaks[t] + slack) for t in inter_layer_tensors(graph)}
    return AnalyticSizing(depths=depths, peaks=peaks, period=period, interval=interval,
                          pacing=pacing, first_frame=int(ends[0]) + 1, frames=frames,
                          seconds=round(time.time() - t0, 3), frame_ends=[int(e) for e in ends])


def size_fifos_auto(graph: HWGraph, method: str = "analytical", *, frames=None,
                    build_root=None, log=print) -> tuple[dict[str, int], dict]:
    """FIFO depths by ``method``: ``"analytical"`` (:func:`size_fifos_analytic`, falling back
    to simulation where it cannot bound a FIFO, with the reason logged) or ``"simulation"``
    (:func:`sim.fifosizing.size_fifos`).

    Args:
        frames: input frames ``[H, W, C]`` for a sizing simulation; default two seeded random
            frames of the input type.
        log: called with one line per step.

    Returns:
        ``(depths, info)``; ``info`` has ``method`` (what sized the FIFOs), ``seconds``,
        ``fifo_bits`` and, when analytical, ``model_interval`` / ``period`` (cycles), or
        ``fallback`` (the reason the analysis gave up).

    Raises:
        ValueError: unknown ``method``.
        sim.fifosizing.FifoSizingError: the simulation fallback failed.
    """
    if method not in METHODS:
        raise ValueError(f"FIFO sizing method must be one of {METHODS}, got {method!r}")
    info: dict = {}
    if method == "analytical":
        try:
            res = size_fifos_analytic(graph)
            info = {"method": "analytical", "seconds": res.seconds, "period": res.period,
                    "model_interval": res.interval, "fifo_bits": res.fifo_bits(graph)}
            return res.depths, info
        except AnalyticSizingError as exc:
            log(f"analytical FIFO sizing gave up ({exc}); sizing this design by simulation")
            info["fallback"] = str(exc)
    from sim.fifosizing import size_fifos

    if frames is None:
        frames = random_frames(graph, 2, seed=0)
    t0 = time.time()
    depths = size_fifos(graph, list(frames), build_root=build_root)
    info.update(method="simulation", seconds=round(time.time() - t0, 1),
                fifo_bits=fifo_bits(graph, depths))
    return depths, info


def random_frames(graph: HWGraph, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` seeded random input frames ``[H, W, C]`` covering the input type's range."""
    t = graph.tensors[graph.input]
    lo, hi = (-(1 << (t.bits - 1)), (1 << (t.bits - 1)) - 1) if t.signed else (0, (1 << t.bits) - 1)
    rng = np.random.default_rng(seed)
    return [rng.integers(lo, hi + 1, size=t.shape, dtype=np.int64) for _ in range(n)]
