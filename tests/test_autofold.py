"""Automatic folding: target fps met by every layer, board resources respected, refusals."""

from __future__ import annotations

import json

import pytest

from sw.compiler.autofold import choose_folding, save_folding
from sw.compiler.boards import get_board
from sw.compiler.estimate import analytic_cycles, estimate, totals
from sw.compiler.folding import apply_folding, load_folding
from sw.compiler.lower import CompileError, lower_qonnx


@pytest.fixture(scope="module")
def slice_graph(slice_onnx):
    return lower_qonnx(slice_onnx)


def test_target_fps_is_met_by_every_compute_layer_with_divisor_foldings(slice_graph, tmp_path):
    board = get_board("pynq-z2")
    cfg = choose_folding(slice_graph, board, target_fps=2000)
    g = apply_folding(slice_graph, cfg)
    target = board.fabric_mhz * 1e6 / 2000  # 50,000 cycles per frame
    for l in g.layers:
        assert analytic_cycles(g, l) <= target, l.name
        if l.op == "MVAU":
            assert l.attrs["mh"] % l.folding["PE"] == 0 and l.attrs["mw"] % l.folding["SIMD"] == 0
    # SetFolding takes the smallest parallelism that meets the target: MVAU_0 (MH=16, MW=27,
    # 1024 pixels) needs (16/PE)*(27/SIMD)*1024 <= 50,000 -> SIMD=3, PE=4 (SIMD | C=3 first)
    assert (cfg["MVAU_0"]["PE"], cfg["MVAU_0"]["SIMD"]) == (4, 3)
    save_folding(cfg, tmp_path / "f.json")
    assert load_folding(tmp_path / "f.json") == json.loads(json.dumps(cfg))


def test_fastest_folding_fits_each_board(slice_graph):
    for name in ("pynq-z2", "ultra96v2", "zcu104", "kv260"):
        board = get_board(name)
        g = apply_folding(slice_graph, choose_folding(slice_graph, board))
        t = totals(estimate(g), board.fabric_mhz)
        assert t["luts"] <= board.luts and t["dsps"] <= board.dsps and t["bram18"] <= board.bram18
        # the deformable sampler emits 9 taps per pixel: its II bounds the slice at 9*32*32 cycles
        assert t["ii_cycles"] >= 9 * 32 * 32


def test_unreachable_fps_is_refused_naming_the_bottleneck(slice_graph):
    with pytest.raises(CompileError, match=r"DeformableSampler|VVAU_1|bottleneck"):
        choose_folding(slice_graph, get_board("zcu104"), target_fps=1e6)


def test_target_that_does_not_fit_the_board_is_refused(slice_graph):
    # 20,000 fps at 100 MHz needs 5,000 cycles per layer: below the sampler's 9,216 -> refused;
    # at 10,000 fps the DSPs/LUTs of the pynq-z2 are the limit or it fits; either way a clear rule
    with pytest.raises(CompileError, match="rule: every layer's cycles <= clock / fps"):
        choose_folding(slice_graph, get_board("pynq-z2"), target_fps=20000)
