"""Analytical FIFO sizing (sw/compiler/fifo_analytic.py) from the components' token schedules
(hw/schedule.py): every schedule reproduces its component's cycle model, the whole-graph model
matches the RTL cycle for cycle, and the depths it gives run at the II in RTL."""

from __future__ import annotations

import numpy as np
import pytest

from hw import schedule as S
from hw.registry import expected_layer_cycles
from sw.compiler.fifo_analytic import (AnalyticSizingError, fifo_bits, layer_schedule, schedule_graph,
                              size_fifos_analytic)
from sw.compiler.folding import apply_folding, load_folding
from sw.compiler.lower import lower_qonnx

SLICE_FOLDING = "sw/configs/slice_folding.json"


@pytest.fixture(scope="module")
def slice_graph(slice_onnx):
    return apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))


def _one_frame_cycles(graph, layer) -> int:
    """First input beat (cycle 0, every input always valid) to the last output beat, inclusive."""
    arr = [np.zeros(graph.tensors[t].beats_per_frame, dtype=np.int64) for t in layer.inputs]
    _, produce = layer_schedule(graph, layer, arr, 1)
    return max(int(p[-1]) for p in produce) + 1


@pytest.mark.parametrize("variant", ["rows", "minimal", "lanes"])
def test_every_layer_schedule_reproduces_its_expected_cycles(slice_onnx, variant):
    """With always-valid input, each layer's token schedule ends exactly at its component's
    expected_cycles(): row and minimal window engines, the deformable sampler, MVAU/VVAU,
    requantisers, width converters up and down, the duplicator."""
    cfg = load_folding(SLICE_FOLDING)
    if variant == "minimal":
        cfg["Defaults"] = {**cfg.get("Defaults", {}), "window_buffer": "minimal"}
    if variant == "lanes":
        cfg = {"MVAU_0": {"PE": 8, "SIMD": 3}, "VVAU_0": {"PE": 8}, "MVAU_1": {"PE": 8, "SIMD": 8},
               "MVAU_2": {"PE": 1, "SIMD": 16}, "VVAU_1": {"PE": 8}, "MVAU_3": {"PE": 4, "SIMD": 8}}
    g = apply_folding(lower_qonnx(slice_onnx), cfg)
    for layer in g.layers:
        assert _one_frame_cycles(g, layer) == expected_layer_cycles(g, layer), layer.name


def test_channel_op_schedules_reproduce_their_expected_cycles():
    """The ops the slice network lacks (ShuffleNetV2 and decoder plumbing), against the
    components' own cycle models."""
    from hw.channel_ops import Add, ChannelShuffle, ChannelSplit, Concat
    from hw.pool import MaxPool
    from hw.stream_utils import StreamWidthConverter
    from hw.upsample import Upsample

    z = lambda n: np.zeros(n, dtype=np.int64)  # noqa: E731
    px = 12
    for groups, c, lanes in [(2, 8, 1), (2, 8, 2), (4, 16, 4), (2, 4, 4)]:
        comp = ChannelShuffle(groups=groups, channels=c, lanes=lanes)
        _, p = S.channel_shuffle_schedule(z(px * comp.folds), folds=comp.folds)
        assert p[-1] + 1 == comp.expected_cycles(px) and p.size == px * comp.folds
    comp = Concat(channels=[4, 8], lanes=2)
    _, p = S.concat_schedule([z(px * 2), z(px * 4)], beats=comp.beats)
    assert p[-1] + 1 == comp.expected_cycles(px)
    comp = ChannelSplit(sizes=[6, 2], lanes=2)
    _, outs = S.split_schedule(z(px * 4), beats=comp.beats)
    assert max(o[-1] for o in outs) + 1 == comp.expected_cycles(px)
    comp = Add(channels=8, lanes=2)
    _, p = S.add_schedule([z(px * 4), z(px * 4)], latency=comp.LATENCY)
    assert p[-1] + 1 == comp.expected_cycles(px)
    comp = MaxPool(kernel=3, channels=4, lanes=2)
    _, p = S.maxpool_schedule(z(px * 9 * 2), taps=comp.taps)
    assert p[-1] + 1 == comp.expected_cycles(px)
    for h, w, f, lanes in [(4, 5, 2, 1), (3, 3, 3, 2)]:
        comp = Upsample(factor=f, ifm_dim=(h, w), channels=4, lanes=lanes)
        _, p = S.upsample_schedule(z(comp.frame_in_beats), height=h, row_beats=comp.row_words,
                                   factor=f)
        assert p[-1] + 1 == comp.expected_cycles() and p.size == comp.frame_out_beats
    from hw.thresholding import Thresholding

    thr = np.sort(np.random.default_rng(0).integers(-100, 100, size=(4, 7)), axis=1)
    comp = Thresholding(thresholds=thr, channels=4, lanes=2, in_bits=10, in_signed=True,
                        out_bits=3, out_signed=False)
    _, p = S.requant_schedule(z(px * 2), latency=comp.latency)
    assert p[-1] + 1 == comp.expected_cycles(px)
    for i, o in [(4, 2), (2, 4), (3, 3)]:
        comp = StreamWidthConverter(in_lanes=i, out_lanes=o, bits=8)
        _, p = S.width_converter_schedule(z(24), in_lanes=i, out_lanes=o)
        assert p[-1] + 1 == comp.expected_cycles(24)


def test_schedules_wait_for_late_inputs():
    """Late arrivals delay exactly what depends on them: an Add's output waits for the later
    input, and its early input's holding register stays full until the join (cycle 11); a
    VVAU's output waits for its group's last beat; the FIFO level counts a beat from the cycle
    after its write to the cycle after its read."""
    cons, p = S.add_schedule([np.array([0, 1, 2]), np.array([10, 11, 12])])
    assert cons[0].tolist() == [0, 11, 12] and cons[1].tolist() == [10, 11, 12]
    assert p.tolist() == [12, 13, 14]
    c, p = S.vvau_schedule(np.array([0, 0, 7, 0, 0, 0]), kernel_elems=3)
    assert c.tolist() == [0, 1, 7, 8, 9, 10] and p.tolist() == [12, 15]
    assert S.fifo_peak_level([0, 1, 2, 3], [2, 3, 9, 10]) == 2  # read 2 and 3 as 2 and 3 land
    assert S.fifo_peak_level([0, 1, 2, 3], [5, 6, 7, 8]) == 4


def test_model_of_the_slice_network(slice_graph):
    """The whole-graph model: one frame per 9,216 cycles (the deformable VVAU's and sampler's
    steady rate), the offsets FIFO of the sampler's reconvergent path 189 beats at its peak,
    every other FIFO at most 2 (tests/test_top.py measures 9,216 in RTL with
    simulation-sized FIFOs)."""
    res = size_fifos_analytic(slice_graph)
    offsets = next(x for x in slice_graph.layers if x.op == "DeformableSampler").inputs[1]
    assert res.period == res.interval == 9216
    assert res.peaks[offsets] == 189 and res.depths[offsets] == 191
    assert max(v for k, v in res.peaks.items() if k != offsets) <= 2
    assert set(res.depths) == {t for x in slice_graph.layers for t in x.inputs
                               if t != slice_graph.input}
    assert res.fifo_bits(slice_graph) == fifo_bits(slice_graph, res.depths) == 10852
    # with always-valid input (as the RTL sizing run streams it) the same steady state
    _, _, ends = schedule_graph(slice_graph, frames=2, period=0)
    assert ends[1] - ends[0] == 9216
    # an input pace the pipeline cannot keep is raised to the model's own interval
    slow = size_fifos_analytic(slice_graph, period=5000)
    assert (slow.period, slow.interval, slow.depths) == (9216, 9216, res.depths)


def test_an_op_without_a_schedule_is_named(slice_graph):
    import copy

    g = copy.deepcopy(slice_graph)
    g.layers[3].op = "Mystery"
    with pytest.raises(AnalyticSizingError, match=f"layer {g.layers[3].name}: .*Mystery"):
        size_fifos_analytic(g)
    with pytest.raises(ValueError, match="at least 3 frames"):
        size_fifos_analytic(slice_graph, frames=2)


def test_analytical_depths_run_at_the_ii_in_rtl(slice_graph, val_images):
    """The acceptance check on the slice network: the analytically sized design streams three
    real frames bit-exact, with no deadlock, at a steady interval within 1% of the compiler's
    II, and exactly at the model's interval (native Verilator testbench, about 1.5 minutes)."""
    from sw.compiler.estimate import bottleneck, estimate
    from sim.rtlsim import simulate

    res = size_fifos_analytic(slice_graph)
    frames = [val_images[0], val_images[1], val_images[0]]
    run = simulate(slice_graph, frames, fifo_depths=res.depths, harness="native")
    assert run.mismatches == [0, 0, 0]
    ii = bottleneck(estimate(slice_graph)).cycles
    assert run.cycles[1:] == [res.interval, res.interval] and res.interval <= 1.01 * ii
    # the first frame, pipeline fill included, is the model's with the RTL's always-valid input
    _, _, ends = schedule_graph(slice_graph, frames=2, period=0)
    assert run.cycles[0] == ends[0] + 1


@pytest.mark.slow
def test_analytical_model_equals_the_rtl_sizing_run(slice_graph, val_images):
    """The RTL sizing run (sim.fifosizing.size_fifos: frame-deep FIFOs, input always valid)
    and the model with the same always-valid input give the same peak level on every FIFO, so
    the analytical depths equal the simulation-sized ones here (FIFO bits ratio 1.0)."""
    from sim.fifosizing import size_fifos

    sim = size_fifos(slice_graph, list(val_images))
    peaks, _, _ = schedule_graph(slice_graph, frames=2, period=0)
    assert {t: max(2, p + 2) for t, p in peaks.items()} == sim
    assert fifo_bits(slice_graph, size_fifos_analytic(slice_graph).depths) == fifo_bits(slice_graph, sim)


def test_design_the_analysis_cannot_bound_falls_back_to_simulation(slice_graph, monkeypatch):
    """size_fifos_auto: a layer without a token schedule sends that design to the sizing
    simulation (stood in for here by a recorder), and the reason names the layer."""
    import copy

    import sim.fifosizing
    from sw.compiler.fifo_analytic import size_fifos_auto

    g = copy.deepcopy(slice_graph)
    g.layers[5].op = "Mystery"
    calls, lines = [], []

    def fake_size_fifos(graph, frames, build_root=None):
        calls.append(len(frames))
        return {t: 7 for t in graph.tensors if t != graph.input and t != graph.output}

    monkeypatch.setattr(sim.fifosizing, "size_fifos", fake_size_fifos)
    depths, info = size_fifos_auto(g, "analytical", log=lines.append)
    assert calls == [2] and info["method"] == "simulation" and set(depths.values()) == {7}
    assert g.layers[5].name in info["fallback"] and g.layers[5].name in lines[0]
    depths, info = size_fifos_auto(slice_graph, "analytical")
    assert info["method"] == "analytical" and "fallback" not in info and calls == [2]
    with pytest.raises(ValueError, match="must be one of"):
        size_fifos_auto(slice_graph, "guess")
