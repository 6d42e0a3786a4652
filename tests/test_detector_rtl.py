"""Whole-network RTL simulation of the small detector config (issue 5's acceptance figures).

The detector (ShuffleNetV2 backbone with split/concat/shuffle, max-pool-free stride-4 stem,
three deformable decoder blocks with nearest upsampling, merged CenterNet heads) is exported,
lowered, folded for Ultra96-V2 at a modest target, its FIFOs sized by simulation, and two real
images are streamed through the instrumented RTL. Weights are seeded and calibrated, not
trained: the test is about the hardware, which does not care what the weights are.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["upsampled", "dw3x3"])
def small_graph(tmp_path_factory, request):
    """The small detector in both head forms (``dw3x3``: the shipped checkpoint's, a depthwise
    3x3 sliding window right after the last Upsample)."""
    import torch
    from brevitas.graph.calibrate import calibration_mode

    from models.data import sample_images
    from models.detector import build_detector
    from models.export import export_qonnx
    from sw.compiler.autofold import choose_folding
    from sw.compiler.boards import get_board
    from sw.compiler.folding import apply_folding
    from sw.compiler.lower import lower_qonnx

    torch.manual_seed(0)
    model = build_detector("small", head_form=request.param)
    calib = torch.tensor(sample_images(8, 128, split="train")).permute(0, 3, 1, 2).float()
    model.eval()
    with torch.no_grad(), calibration_mode(model):
        model(calib)
    model.eval()
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    export_qonnx(model, path, input_shape=(1, 3, 128, 128))
    graph = lower_qonnx(path, requant="within1")  # the demo's form: fits the Ultra96-V2 at 2,000 fps
    folding = choose_folding(graph, get_board("ultra96v2"), target_fps=2000, clock_mhz=200)
    return apply_folding(graph, folding)


def test_small_detector_rtl_bit_exact_at_the_estimated_ii(small_graph):
    from models.data import sample_images
    from sw.compiler.estimate import bottleneck, estimate
    from sim.fifosizing import size_fifos
    from sim.rtlsim import simulate

    images = list(sample_images(2, 128, split="val"))
    depths = size_fifos(small_graph, images)
    run = simulate(small_graph, images, fifo_depths=depths)
    assert run.mismatches == [0, 0]
    for got, want in zip(run.outputs, run.expected):
        np.testing.assert_array_equal(got, want)
    bn = bottleneck(estimate(small_graph))
    # steady-state frame interval within 5% of the compiler's II
    assert abs(run.cycles[1] - bn.cycles) <= 0.05 * bn.cycles, (run.cycles, bn.cycles, bn.name)
    busy = run.mac_busy[1]
    busiest = max(busy, key=busy.get)
    assert busy[busiest] >= 0.90 * run.cycles[1], (busiest, busy[busiest], run.cycles[1])
