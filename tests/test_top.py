"""Whole-accelerator RTL simulation: the generated top level on real images, every output value
against the golden model, under AXI-Stream stalls and back-pressure."""

from __future__ import annotations

import numpy as np
import pytest

from sw.compiler.estimate import bottleneck, estimate
from sw.compiler.folding import apply_folding, load_folding
from sw.compiler.lower import lower_qonnx
from sim.rtlsim import simulate
from sim.fifosizing import size_fifos
from hw.top import Accelerator

SLICE_FOLDING = "sw/configs/slice_folding.json"


def test_whole_network_bit_exact_on_a_real_image_with_stalls(slice_onnx, val_images):
    """Another folding than the demo's (other lane counts, other width converters), one real
    image with 20% input stalls and 20% output back-pressure."""
    g = apply_folding(lower_qonnx(slice_onnx), {
        "MVAU_0": {"PE": 8, "SIMD": 3}, "VVAU_0": {"PE": 8}, "MVAU_1": {"PE": 8, "SIMD": 8},
        "MVAU_2": {"PE": 1, "SIMD": 16}, "VVAU_1": {"PE": 8}, "MVAU_3": {"PE": 4, "SIMD": 8}})
    run = simulate(g, [val_images[0]], stall=0.2, backpressure=0.2)
    assert run.mismatches == [0]
    np.testing.assert_array_equal(run.outputs[0], run.expected[0])


def test_fifos_sized_by_simulation_reach_the_bottleneck_ii(slice_onnx, val_images):
    """The demo folding with FIFO depths measured by a sizing simulation: two frames back to
    back are bit-exact, the steady-state frame interval is within 5% of the bottleneck's
    expected cycles, and the bottleneck's MAC array is busy >= 90% of that interval."""
    g = apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))
    depths = size_fifos(g, list(val_images))
    assert set(depths) == {p.tensor for p in Accelerator(g).fifo_probes}
    assert depths[next(x for x in g.layers if x.op == "DeformableSampler").inputs[1]] > 2
    assert all(d >= 2 for d in depths.values())
    run = simulate(g, list(val_images), fifo_depths=depths)
    assert run.mismatches == [0, 0]
    bn = bottleneck(estimate(g))
    assert abs(run.cycles[1] - bn.cycles) <= 0.05 * bn.cycles, (run.cycles, bn.cycles)
    # the busiest MAC layer is the bottleneck's consumer (the sampler feeds VVAU taps 1:1)
    busiest = max(run.mac_busy[1], key=run.mac_busy[1].get)
    assert run.mac_busy[1][busiest] >= 0.90 * run.cycles[1], run.mac_busy[1]


def test_watchdog_names_the_fifo_of_a_deadlocked_path(slice_onnx, val_images):
    """A deformable sampler's offsets FIFO two entries deep deadlocks the reconvergent path
    (the sampler needs feature rows up to N ahead of the offsets); the watchdog stops the
    simulation and its message names the waiting layer and the full FIFO."""
    g = apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))
    sampler = next(layer for layer in g.layers if layer.op == "DeformableSampler")
    with pytest.raises(AssertionError) as info:
        simulate(g, [val_images[0]], fifo_depths={sampler.inputs[1]: 2},
                 watchdog_cycles=2_000, waves=False)
    msg = str(info.value)
    assert "watchdog" in msg
    assert f"layer {sampler.name} waits on" in msg
    assert f"FULL    fifo_{sampler.inputs[1]} " in msg


def test_native_harness_matches_cocotb_cycle_for_cycle(slice_onnx, val_images):
    """The C++ testbench (sim/native_tb.cpp) and the cocotb one on the same instrumented
    design and frames: the same outputs (bit-exact with the golden model), the same cycles per
    frame, MAC-busy counts and FIFO high-water marks."""
    g = apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))
    nat = simulate(g, list(val_images), harness="native")
    ref = simulate(g, list(val_images), harness="cocotb")
    assert nat.mismatches == ref.mismatches == [0, 0]
    for a, b in zip(nat.outputs, ref.outputs):
        np.testing.assert_array_equal(a, b)
    assert nat.cycles == ref.cycles
    assert nat.mac_busy == ref.mac_busy
    assert nat.fifo_max == ref.fifo_max
    assert nat.sim_s is not None and ref.sim_s is None


def test_native_harness_stalls_and_watchdog(slice_onnx, val_images):
    """The native harness under 20% input stalls and 20% back-pressure stays bit-exact and
    slower than stall-free; its watchdog names the deadlocked path as cocotb's does."""
    g = apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))
    free = simulate(g, [val_images[0]], harness="native")
    run = simulate(g, [val_images[0]], stall=0.2, backpressure=0.2, harness="native")
    assert run.mismatches == [0]
    assert run.cycles[0] > free.cycles[0]
    sampler = next(layer for layer in g.layers if layer.op == "DeformableSampler")
    with pytest.raises(AssertionError) as info:
        simulate(g, [val_images[0]], fifo_depths={sampler.inputs[1]: 2},
                 watchdog_cycles=2_000, harness="native")
    msg = str(info.value)
    assert "watchdog" in msg
    assert f"layer {sampler.name} waits on" in msg
    assert f"FULL    fifo_{sampler.inputs[1]} " in msg
    with pytest.raises(ValueError, match="unknown harness"):
        simulate(g, [val_images[0]], harness="xsim")


def _minimal_windows_graph(slice_onnx):
    cfg = load_folding(SLICE_FOLDING)
    cfg["Defaults"] = {**cfg.get("Defaults", {}), "window_buffer": "minimal"}
    g = apply_folding(lower_qonnx(slice_onnx), cfg)
    swgs = [x for x in g.layers if x.op == "SlidingWindow"]
    assert swgs and all(x.folding["window_buffer"] == "minimal" for x in swgs)
    return g


def test_minimal_window_buffers_in_the_whole_network(slice_onnx, val_images):
    """Every sliding window on the minimal pixel buffer (folding ``Defaults``): the network
    stays bit-exact under stalls and back-pressure."""
    g = _minimal_windows_graph(slice_onnx)
    run = simulate(g, [val_images[0]], stall=0.2, backpressure=0.2, harness="native")
    assert run.mismatches == [0]


@pytest.mark.slow
def test_minimal_window_buffers_reach_the_bottleneck_ii(slice_onnx, val_images):
    """With FIFOs sized by simulation, the minimal-buffer network's steady frame interval is
    the bottleneck's expected cycles (which include the minimal windows' own cycle model)."""
    g = _minimal_windows_graph(slice_onnx)
    depths = size_fifos(g, list(val_images))
    run = simulate(g, list(val_images), fifo_depths=depths, harness="native")
    assert run.mismatches == [0, 0]
    bn = bottleneck(estimate(g))
    assert abs(run.cycles[1] - bn.cycles) <= 0.05 * bn.cycles, (run.cycles, bn.cycles)
