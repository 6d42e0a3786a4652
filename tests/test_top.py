"""Whole-accelerator RTL simulation: the generated top level on real images, every output value
against the golden model, under AXI-Stream stalls and back-pressure."""

from __future__ import annotations

import numpy as np
import pytest

from sw.estimate import bottleneck, estimate
from sw.folding import apply_folding, load_folding
from sw.lower import lower_qonnx
from sw.rtlsim import simulate

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


def test_whole_network_bit_exact_and_cycles_with_the_demo_folding(slice_onnx, val_images):
    """The demo's folding, two frames back to back, no stalls: bit-exact, and the measured
    cycles are those of the pipeline (at least the bottleneck's initiation interval)."""
    g = apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))
    run = simulate(g, list(val_images))
    assert run.mismatches == [0, 0]
    ii = bottleneck(estimate(g)).cycles
    assert run.cycles[0] >= ii and run.cycles[1] >= 0.95 * ii
    # the measured steady state is recorded here so a regression in throughput fails:
    # 2 x the bottleneck's II until the FIFO depths are sized by simulation (issue 5)
    assert run.cycles[1] <= 2 * ii
