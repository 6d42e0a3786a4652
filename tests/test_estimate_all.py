"""Issue 4's done-when on the real configs: every detector config compiles (export, lowering,
folding, estimates) for every board. Slow: six exports and lowerings of full-size detectors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sw.compiler.autofold import choose_folding
from sw.compiler.boards import get_board
from sw.compiler.estimate import estimate, totals
from sw.flows.estimate_all import BOARD_ORDER, available_configs, export_config
from sw.compiler.folding import apply_folding
from sw.compiler.lower import CompileError, lower_qonnx

ONNX_CACHE = Path(os.environ.get("DEFLOW_ONNX_CACHE", "build/estimates/onnx"))


def _fits(graph, board_name):
    board = get_board(board_name)
    cfg = choose_folding(graph, board)
    t = totals(estimate(apply_folding(graph, cfg)), board.fabric_mhz)
    assert t["luts"] <= 0.9 * board.luts and t["dsps"] <= 0.9 * board.dsps
    assert t["bram18"] <= 0.9 * board.bram18 and t["dram_gbps"] <= board.dram_gbps
    return cfg, t


@pytest.mark.slow
def test_codenet512_fits_the_pynq_z2_with_minimal_window_buffers():
    """The pair row-slot line buffers could not fit (>= 72,272 LUTs needed against 47,880)."""
    g = lower_qonnx(export_config("codenet512", ONNX_CACHE)[0])
    with pytest.raises(CompileError, match="does not fit pynq-z2"):
        choose_folding(g, get_board("pynq-z2"), window_buffers="rows")
    cfg, t = _fits(g, "pynq-z2")
    swgs = [x.name for x in g.layers if x.op == "SlidingWindow"]
    assert all(cfg[n]["window_buffer"] == "minimal" for n in swgs)
    assert t["ii_cycles"] == 14_155_782  # 7.06 fps at 100 MHz


@pytest.mark.slow
@pytest.mark.parametrize("config", list(available_configs()))
def test_every_detector_config_compiles_for_every_board(config):
    g = lower_qonnx(export_config(config, ONNX_CACHE)[0])
    for board in BOARD_ORDER:
        _fits(g, board)
