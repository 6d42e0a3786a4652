"""Folding and memory decisions of sw.compiler.autofold beyond SetFolding's order: PE x SIMD pairs by
parallelism, per-layer ``ram_style`` (BRAM <-> LUTRAM exchange), external weights by DRAM cost."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sw.compiler.autofold import _candidates, _fit, fold_for_target, memory_lut_floor
from sw.compiler.boards import get_board
from hw.ops.memory import lutram_luts_for, mem_style_of
from sw.compiler.estimate import layer_resources
from sw.compiler.folding import apply_folding
from hw.graph import HWGraph, HWLayer, TensorInfo
from sw.compiler.lower import CompileError
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


def test_memory_lut_floor_is_the_linear_relaxation_of_bram_or_lutram():
    # external weights and DSP products: the window buffer (128 x 8 bits: 1 BRAM18 or 16 LUTs)
    # and the Requant table (16 x 48 bits: 2 BRAM18 or 48 LUTs) remain; 610 LUTs of logic
    f = apply_folding(small_graph(), {"MVAU_0": {"PE": 1, "SIMD": 1}})
    mems = [("Requant_0", 2, 48), ("SlidingWindow_0", 1, 16)]
    assert memory_lut_floor(f, 3) == {"luts": 610, "bram18": 3, "bram18_to_move": 0,
                                      "lutram_luts": 0, "memories": mems}
    # 16 LUTs per BRAM18 (window) before 24 (Requant), the last one fractionally
    assert memory_lut_floor(f, 2)["luts"] == 626
    assert memory_lut_floor(f, 1)["luts"] == 650  # 16 + 48/2
    assert memory_lut_floor(f, 0) == {"luts": 674, "bram18": 3, "bram18_to_move": 3,
                                      "lutram_luts": 64, "memories": mems}
    assert f.layer("MVAU_0").folding == {"PE": 1, "SIMD": 1}  # the graph is left as it was


def test_refusal_says_what_was_tried_and_how_short_each_resource_is():
    # no BRAM and 630 usable LUTs: weights go external, every memory must be LUTRAM, and the
    # design needs 674 LUTs, which is also the lower bound
    board = replace(get_board("pynq-z2"), dsps=20, bram36=0, luts=700)
    ok, why, cfg = _fit(small_graph(), {"MVAU_0": {"PE": 1, "SIMD": 1}}, board, 1000)
    assert not ok
    assert why == (
        "LUTS 674 > 630 (90% of pynq-z2; short by 44); largest user: layer 'MVAU_0' (328). "
        "Tried: products on DSP48s in 1 of 1 MVAU/VVAUs; of 3 memories, 0 set to ram_style "
        "distributed (LUTRAM), 0 to block, 0 to ultra, the rest auto; weights external in 1 of 1 "
        "MVAUs (0.02 GB/s of DRAM, 2 GB/s available); DSP 2 of 18. Lower bound for this folding: "
        "even with every product on a DSP48 and every MVAU's weights external, the memories take "
        "3 BRAM18 all in BRAM; keeping BRAM18 within 0 puts at least 3 BRAM18 of them in LUTRAM, "
        "cheapest first (64 LUTs at 64 bits per LUT), 674 LUTs in all > 630: LUTs short by 44 "
        "(largest memories: 'Requant_0' 2 BRAM18 = 48 LUTs, 'SlidingWindow_0' 1 BRAM18 = 16 LUTs)")
    # with 702 usable LUTs the same design fits (674 LUTs)
    ok, why, _ = _fit(small_graph(), {"MVAU_0": {"PE": 1, "SIMD": 1}}, replace(board, luts=780), 1000)
    assert ok, why


def test_external_weights_bandwidth_is_checked_at_the_folding_s_own_frame_rate():
    # no BRAM, 450 usable LUTs: the 58x58 4-bit weights stream from DRAM, 1,722,368 bytes per
    # frame. PE=2, SIMD=2 runs at 116.1 fps (0.20 GB/s), PE=1, SIMD=2 at 58.1 fps (0.10 GB/s).
    # With 0.15 GB/s the bisection's target frame rates between them (< 87 fps) allow the
    # faster folding unless the bandwidth is taken at the frame rate it really runs at.
    from sw.compiler.autofold import choose_folding

    g = pointwise_graph()
    board = replace(get_board("pynq-z2"), bram36=0, luts=500, dram_gbps=0.15)
    cfg = choose_folding(g, board, clock_mhz=100)
    assert cfg["MVAU_0"] == {"PE": 1, "SIMD": 2, "mem_mode": "external", "resType": "dsp",
                             "ram_style": "auto"}
    f = apply_folding(g, cfg)
    assert layer_resources(f, f.layers[0], "dsp")["dram_bytes_per_frame"] == 58 * 58 * 4 // 8 * 1024
    assert choose_folding(g, replace(board, dram_gbps=0.25), clock_mhz=100)["MVAU_0"]["PE"] == 2


def window_graph(hw: int = 64, c: int = 8) -> HWGraph:
    """hw x hw x c uint8 -> 3x3 stride-2 conv (pad 1) to c channels -> uint8 requant: a line
    buffer of 5 rows (row slots) or 2 rows + 5 pixels (minimal)."""
    rng = np.random.default_rng(5)
    o = hw // 2
    t = {"x": TensorInfo("x", (hw, hw, c), 8, False, 1.0),
         "win": TensorInfo("win", (o, o, 9 * c), 8, False, None, "window"),
         "acc": TensorInfo("acc", (o, o, c), 16, True, None, "acc"),
         "y": TensorInfo("y", (o, o, c), 8, False, 0.05)}
    layers = [
        HWLayer("SlidingWindow_0", "SlidingWindow", ["x"], ["win"],
                dict(ifm_dim=(hw, hw), channels=c, kernel=3, stride=2, pad=1, dilation=1,
                     depthwise=False, bits=8, signed=False)),
        HWLayer("MVAU_0", "MVAU", ["win"], ["acc"],
                dict(mh=c, mw=9 * c, pixels=o * o, weight_bits=4, in_bits=8, in_signed=False,
                     acc_bits=16),
                # weights in [-1, 1]: 72 products of 255 stay within the 16-bit accumulator
                # (the MVAU refuses a narrower one, and the estimate raises what it refuses)
                params={"weights": rng.integers(-1, 2, size=(c, 9 * c))}),
        HWLayer("Requant_0", "Requant", ["acc"], ["y"],
                dict(channels=c, pixels=o * o, shift=16, out_min=0, out_max=255, acc_bits=16,
                     in_signed=True),
                params={"multiplier": rng.integers(1, 1000, size=c), "bias": rng.integers(-50, 50, size=c)}),
    ]
    return HWGraph(layers, t, "x", "y")


def test_minimal_window_buffers_only_where_row_buffers_do_not_fit():
    from sw.compiler.autofold import choose_folding
    from sw.compiler.estimate import estimate, totals

    g = window_graph()
    f = apply_folding(g, {})
    swg = f.layer("SlidingWindow_0")
    # 5 rows x 64 x 8 = 2,560 words (320 LUTs of LUTRAM) against (2*64 + 2 + 1 + 2) * 8 = 1,064
    # (136 LUTs): the relaxation's bound drops by 184 LUTs
    assert layer_resources(f, swg, "lut", "lutram")["lutram_luts"] == 320
    swg.folding["window_buffer"] = "minimal"
    assert layer_resources(f, swg, "lut", "lutram")["lutram_luts"] == 136
    del swg.folding["window_buffer"]
    assert memory_lut_floor(f, 0)["luts"] - memory_lut_floor(f, 0, minimal_windows=True)["luts"] == 184
    # no BRAM: with row buffers the smallest folding needs more LUTs than the board has
    floor = memory_lut_floor(f, 0)["luts"]
    board = replace(get_board("pynq-z2"), dsps=20, bram36=0, luts=int((floor - 100) / 0.9) + 1)
    with pytest.raises(CompileError, match="even the smallest folding"):
        choose_folding(g, board, clock_mhz=100, window_buffers="rows")
    cfg = choose_folding(g, board, clock_mhz=100)
    assert cfg["SlidingWindow_0"]["window_buffer"] == "minimal"
    t = totals(estimate(apply_folding(g, cfg)), 100)
    assert t["luts"] <= int(board.luts * 0.9) and t["bram18"] == 0
    # the minimal engine's cycles (output beats plus the stride-2 rows written while the reader
    # waits) stay within the II the MVAU sets
    assert t["bottleneck"] == "MVAU_0"
    # where row buffers fit, "auto" leaves them alone
    roomy = replace(board, luts=100_000)
    assert "window_buffer" not in choose_folding(g, roomy, clock_mhz=100).get("SlidingWindow_0", {})
    with pytest.raises(CompileError, match="window_buffers must be"):
        choose_folding(g, roomy, window_buffers="pixels")
