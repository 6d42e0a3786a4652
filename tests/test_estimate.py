"""Estimate formulas (cycles, memories, LUT/DSP), totals and the report files on a small
hand-built graph: SlidingWindow 3x3 -> MVAU (W4 x A8) -> Requant on an 8x8x4 frame."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sw.compiler.boards import get_board
from hw.ops.memory import bram18_for, uram_for
from sw.compiler.estimate import analytic_cycles, bottleneck, estimate, layer_resources, totals
from sw.compiler.folding import apply_folding
from hw.graph import HWGraph, HWLayer, TensorInfo
from sw.compiler.report import REPORT_FILES, report_data, write_report


def small_graph() -> HWGraph:
    """8x8x4 uint8 -> 3x3 conv (pad 1) to 16 channels, 4-bit weights -> uint8 requant."""
    rng = np.random.default_rng(7)
    t = {
        "x": TensorInfo("x", (8, 8, 4), 8, False, 1.0),
        "win": TensorInfo("win", (8, 8, 36), 8, False, None, "window"),
        "acc": TensorInfo("acc", (8, 8, 16), 16, True, None, "acc"),
        "y": TensorInfo("y", (8, 8, 16), 8, False, 0.05),
    }
    layers = [
        HWLayer("SlidingWindow_0", "SlidingWindow", ["x"], ["win"],
                dict(ifm_dim=(8, 8), channels=4, kernel=3, stride=1, pad=1, dilation=1,
                     depthwise=False, bits=8, signed=False)),
        HWLayer("MVAU_0", "MVAU", ["win"], ["acc"],
                dict(mh=16, mw=36, pixels=64, weight_bits=4, in_bits=8, in_signed=False, acc_bits=16),
                params={"weights": rng.integers(-7, 8, size=(16, 36))}),
        HWLayer("Requant_0", "Requant", ["acc"], ["y"],
                dict(channels=16, pixels=64, shift=16, out_min=0, out_max=255, acc_bits=16,
                     in_signed=True),
                params={"multiplier": rng.integers(1, 1000, size=16), "bias": rng.integers(-50, 50, size=16)}),
    ]
    return HWGraph(layers, t, "x", "y")


@pytest.fixture
def folded():
    return apply_folding(small_graph(), {"MVAU_0": {"PE": 4, "SIMD": 4}})


def test_bram_and_uram_formulas_follow_finn_aspect_ratios():
    assert bram18_for(16384, 1) == 1 and bram18_for(16385, 1) == 2
    assert bram18_for(4096, 4) == 1 and bram18_for(4096, 8) == 2  # 4Kx4, then 2Kx9
    assert bram18_for(1024, 18) == 1 and bram18_for(1024, 32) == 2  # 1Kx18 (depth > 512)
    assert bram18_for(512, 36) == 1 and bram18_for(512, 64) == 2  # 512x36
    assert bram18_for(36, 64) == 2 and bram18_for(0, 64) == 0
    assert uram_for(4096, 72) == 1 and uram_for(4097, 144) == 4


def test_cycles_macs_and_resources_of_each_layer(folded):
    sw, mvau, rq = folded.layers
    # FINN: MVAU (MH/PE)*(MW/SIMD)*pixels; the window generator sends 36/4 beats per pixel
    assert analytic_cycles(folded, mvau) == (16 // 4) * (36 // 4) * 64 == 2304
    assert analytic_cycles(folded, sw) == 8 * 8 * 36 // 4 == 576
    assert analytic_cycles(folded, rq) == 8 * 8 * 16 // 4 == 256
    # weight memory: depth MH*MW/(PE*SIMD) = 36 words of PE*SIMD*W = 64 bits
    lut = layer_resources(folded, mvau, "lut", "auto")
    assert lut["weight_bits"] == 16 * 36 * 4
    assert (lut["bram18"], lut["lutram_luts"]) == (0, 64)  # depth 36 <= 128: LUTRAM 64*ceil(36/64)
    assert layer_resources(folded, mvau, "lut", "bram")["bram18"] == 2  # 512x36 twice for 64 bits
    assert layer_resources(folded, mvau, "lut", "uram")["uram"] == 1
    # LUT products: SIMD*(2*ceil(12/6)-1)*12 = 144, tree 12*(2*4-1) = 84, acc 16 per PE; c0 300
    assert lut["luts"] == 300 + 4 * (144 + 84 + 16) + 64 == 1340 and lut["dsps"] == 0
    dsp = layer_resources(folded, mvau, "dsp", "auto")
    assert dsp["dsps"] == 8 and dsp["luts"] == 300 + 4 * (84 + 16) + 64  # 16 products, 2 per DSP
    r = layer_resources(folded, rq)
    assert (r["dsps"], r["lutram_luts"], r["luts"]) == (4, 192, 50 + 4 * 2 * 8 + 192)
    s = layer_resources(folded, sw)  # 4 rows x 8 px x 4 ch / 4 lanes = 32 words of 32 bits
    assert (s["lutram_luts"], s["luts"], s["bram18"]) == (32, 200 + 2 * 4 * 8 + 32, 0)
    ext = apply_folding(small_graph(), {"MVAU_0": {"PE": 4, "SIMD": 4, "mem_mode": "external"}})
    e = layer_resources(ext, ext.layers[1])
    assert e["dram_bytes_per_frame"] == 16 * 36 * 4 // 8 * 64 and e["lutram_luts"] == 0


def test_estimate_and_totals(folded):
    from hw import registry

    est = estimate(folded)
    assert [e.name for e in est] == ["SlidingWindow_0", "MVAU_0", "Requant_0"]
    for e, l in zip(est, folded.layers):
        assert e.cycle_model == "registry"
        assert e.cycles == registry.expected_layer_cycles(folded, l)
        assert e.cycles >= analytic_cycles(folded, l)  # fill latency only adds
    assert est[1].macs == 16 * 36 * 64 == 36864 and est[0].macs == est[2].macs == 0
    assert bottleneck(est).name == "MVAU_0"
    t = totals(est, 100.0)
    assert t["ii_cycles"] == est[1].cycles
    assert t["fps"] == pytest.approx(100e6 / est[1].cycles)
    assert t["macs"] == 36864 and t["dsps"] == 4  # requantiser lanes; products in LUTs by default
    assert t["luts"] == 1340 + 306 + 296 and t["lutram_luts"] == 64 + 192 + 32
    assert t["dram_gbps"] == 0.0


def test_report_files_match_estimate(folded, tmp_path):
    board = get_board("pynq-z2")
    est = estimate(folded)
    cfg = {"MVAU_0": {"PE": 4, "SIMD": 4}, "Defaults": {}}
    data = write_report(folded, est, board, 100.0, tmp_path / "r", folding=cfg)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(REPORT_FILES)
    j = json.loads((tmp_path / "r" / "estimates.json").read_text())
    assert j == json.loads(json.dumps(data))
    assert j["estimated"] is True and j["folding_config"] == cfg
    assert [x["cycles"] for x in j["layers"]] == [e.cycles for e in est]
    assert [x["luts"] for x in j["layers"]] == [e.luts for e in est]
    assert j["layers"][1]["folding"] == {"PE": 4, "SIMD": 4}
    assert j["layers"][1]["mem_mode"] == "internal" and j["layers"][1]["memory_kind"] == "weights"
    t = totals(est, 100.0)
    assert j["totals"]["ii_cycles"] == t["ii_cycles"] and j["totals"]["bottleneck"] == "MVAU_0"
    assert j["totals"]["fps"] == pytest.approx(t["fps"])
    assert j["totals"]["bram36"] == math.ceil(t["bram18"] / 2)
    assert j["utilisation_percent"]["luts"] == pytest.approx(100 * 1942 / 53_200)
    assert j["utilisation_percent"]["dsps"] == pytest.approx(100 * 4 / 220)
    assert j["utilisation_percent"]["uram"] == 0.0 and j["fits"] is True
    md = (tmp_path / "r" / "estimates.md").read_text()
    assert "analytical estimates" in md and "MVAU_0 **(II)**" in md
    assert f"{t['ii_cycles']:,} cycles" in md and "| LUT | 1,942 | 53,200 | 3.7 |" in md
    assert (tmp_path / "r" / "estimates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "r").iterdir() if ".tmp" in p.name]


def test_report_refuses_mismatched_input(folded, tmp_path):
    est = estimate(folded)
    with pytest.raises(ValueError, match="clock_mhz must be positive"):
        report_data(folded, est, get_board("kv260"), 0)
    with pytest.raises(ValueError, match="do not belong to this graph"):
        report_data(folded, est[:2], get_board("kv260"), 200)
