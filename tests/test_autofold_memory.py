"""Folding and memory decisions of sw.autofold beyond SetFolding's order: PE x SIMD pairs by
parallelism, per-layer ``ram_style`` (BRAM <-> LUTRAM exchange), external weights by DRAM cost."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sw.autofold import _candidates, _fit, fold_for_target
from sw.boards import get_board
from sw.estimate import layer_resources, lutram_luts_for, mem_style_of
from sw.folding import apply_folding
from sw.hwgraph import HWGraph, HWLayer, TensorInfo
from sw.lower import CompileError
from test_estimate import small_graph


def pointwise_graph(c: int = 58, hw: int = 32) -> HWGraph:
    """hw x hw x c uint8 -> 1x1 conv c -> c (4-bit weights), MH = MW = c: divisors 1, 2, 29, 58."""
    rng = np.random.default_rng(3)
    t = {"x": TensorInfo("x", (hw, hw, c), 8, False, 1.0),
         "acc": TensorInfo("acc", (hw, hw, c), 16, True, None, "acc")}
    mvau = HWLayer("MVAU_0", "MVAU", ["x"], ["acc"],
                   dict(mh=c, mw=c, pixels=hw * hw, weight_bits=4, in_bits=8, in_signed=False,
                        acc_bits=16), params={"weights": rng.integers(-7, 8, size=(c, c))})
    return HWGraph([mvau], t, "x", "acc")


def test_mvau_candidates_cover_pe_simd_pairs_by_parallelism():
    g = pointwise_graph()
    cands = _candidates(g, g.layers[0])
    products = [c["PE"] * c["SIMD"] for c in cands]
    assert products == sorted(products) and len(cands) == 16  # 4 PE divisors x 4 SIMD divisors
    # equal parallelism: the larger SIMD first (FINN raises SIMD before PE)
    assert cands[:4] == [{"PE": 1, "SIMD": 1}, {"PE": 1, "SIMD": 2}, {"PE": 2, "SIMD": 1},
                         {"PE": 2, "SIMD": 2}]


def test_target_takes_the_least_parallelism_not_the_next_simd_divisor():
    # 58*58*1024 = 3,444,736 cycles folded to 1. A 1,000,000-cycle target needs PE*SIMD >= 4:
    # PE=2, SIMD=2 (861,184 cycles, 4 products, 16-bit weight words); SIMD first only would
    # jump from SIMD=2 to SIMD=29 (118,784 cycles, 29 products, 116-bit words)
    g = pointwise_graph()
    cfg = fold_for_target(g, 1_000_000)
    assert cfg["MVAU_0"] == {"PE": 2, "SIMD": 2}
    f = apply_folding(g, cfg)
    assert layer_resources(f, f.layers[0], "dsp")["dsps"] == 2  # 4 products, 2 per DSP48


def test_lutram_style_and_finn_ram_style_names():
    assert lutram_luts_for(576, 4) == 36 and lutram_luts_for(65, 16) == 32 and lutram_luts_for(0, 8) == 0
    assert [mem_style_of(s) for s in (None, "auto", "block", "distributed", "ultra")] == [
        "auto", "auto", "bram", "lutram", "uram"]
    with pytest.raises(ValueError, match="ram_style must be one of"):
        mem_style_of("registers")
    f = apply_folding(small_graph(), {"MVAU_0": {"PE": 1, "SIMD": 1}})
    mvau = f.layers[1]  # 16x36 weights at PE=SIMD=1: 576 words of 4 bits
    assert layer_resources(f, mvau, "lut", "auto")["bram18"] == 1
    r = layer_resources(f, mvau, "lut", "lutram")
    assert (r["bram18"], r["lutram_luts"]) == (0, 36)
    with pytest.raises(CompileError, match="ram_style must be one of"):
        apply_folding(small_graph(), {"Requant_0": {"ram_style": "lutram"}})
    g = apply_folding(small_graph(), {"Requant_0": {"ram_style": "block"}})
    assert g.layer("Requant_0").folding == {"ram_style": "block"}


def test_fit_moves_memory_to_lutram_when_bram_is_short():
    # no BRAM at all: the MVAU's 576 x 4-bit weight memory (1 BRAM18) goes to LUTRAM (36 LUTs)
    board = replace(get_board("pynq-z2"), dsps=20, bram36=0, luts=100_000)
    ok, why, cfg = _fit(small_graph(), {"MVAU_0": {"PE": 1, "SIMD": 1}}, board, 1000)
    assert ok, why
    assert cfg["MVAU_0"] == {"PE": 1, "SIMD": 1, "resType": "dsp", "ram_style": "distributed"}
    assert "mem_mode" not in cfg["MVAU_0"]


def test_fit_moves_shallow_memory_to_bram_when_luts_are_short():
    # PE=SIMD=4: every memory is shallow (auto -> LUTRAM). With 1,500 LUTs (1,350 usable) the
    # window buffer (32 LUTs of LUTRAM for 1 BRAM18) goes to BRAM first (graph order on ties)
    board = replace(get_board("pynq-z2"), dsps=20, bram36=10, luts=1500)
    ok, why, cfg = _fit(small_graph(), {"MVAU_0": {"PE": 4, "SIMD": 4}}, board, 1000)
    assert ok, why
    assert cfg["SlidingWindow_0"] == {"ram_style": "block"}
    assert cfg["MVAU_0"]["ram_style"] == "auto"
    ok, why, _ = _fit(small_graph(), {"MVAU_0": {"PE": 4, "SIMD": 4}}, replace(board, luts=1000), 1000)
    assert not ok and why.startswith("LUTS ")


def test_fit_streams_weights_only_when_lutram_cannot_take_them():
    # no BRAM and 702 usable LUTs: the design takes 674 LUTs, its MVAU weights in LUTRAM would
    # make 710 -> FINN's external weights, 16*36*4/8 = 288 bytes per pixel x 64 pixels
    board = replace(get_board("pynq-z2"), dsps=20, bram36=0, luts=780)
    ok, why, cfg = _fit(small_graph(), {"MVAU_0": {"PE": 1, "SIMD": 1}}, board, 1000)
    assert ok, why
    assert cfg["MVAU_0"] == {"PE": 1, "SIMD": 1, "mem_mode": "external", "resType": "dsp",
                             "ram_style": "auto"}
    f = apply_folding(small_graph(), cfg)
    assert layer_resources(f, f.layer("MVAU_0"), "dsp")["dram_bytes_per_frame"] == 288 * 64
    ok, why, _ = _fit(small_graph(), {"MVAU_0": {"PE": 1, "SIMD": 1}}, replace(board, dram_gbps=0.01), 1000)
    assert not ok and "GB/s of DRAM" in why  # 18,432 B x 1000 fps = 0.018 GB/s > 0.01
