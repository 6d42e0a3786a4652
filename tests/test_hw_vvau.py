"""VVAU RTL (hw/vvau.py) against hw/golden.vvau on Verilator, with stalls and back-pressure."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog

from hw.vvau import VVAU
from sim.streams import pack_lanes
from sim.tb_compute import DEFAULT_RUNS, run_compute_tb
from hw import golden

# instances built only to read their attributes (or refused) are never elaborated
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def make_case(rng, c, kernel, h, w, weight_bits=4):
    """Weights over the full signed range (two channels pinned to the extremes) and a uint8
    feature map with saturated and zero regions."""
    lo, hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    wts = rng.integers(lo, hi + 1, size=(c, kernel * kernel))
    wts[0, :] = lo
    if c > 1:
        wts[1, :] = hi
    x = rng.integers(0, 256, size=(h, w, c))
    x[: kernel, : kernel, :] = 255  # a full window of maxima: extreme accumulators
    x[-1, :, :] = 0
    return wts, x


def run_vvau(tmp_path, name, c, pe, seed, *, kernel=3, h=5, w=5, stride=1, pad=1,
             weight_bits=4, deformable=False, runs=DEFAULT_RUNS):
    rng = np.random.default_rng(seed)
    wts, x = make_case(rng, c, kernel, h, w, weight_bits)
    dut = VVAU(weights=wts, pe=pe, kernel_elems=kernel * kernel, weight_bits=weight_bits)
    win = golden.sliding_window(x, kernel, stride=stride, pad=pad, depthwise=True, lanes=pe)
    frames = [win]
    if deformable:
        # the deformable sampler's output has the same stream order: same hardware
        offs = rng.integers(0, 4, size=(h, w))
        frames.append(golden.deformable_sample(x, offs, max_offset=3, lanes=pe))
    words, expected, pixels = [], [], 0
    for fr in frames:
        words += [pack_lanes(b, 8) for b in fr.reshape(-1, pe)]
        expected.append(golden.vvau(fr, wts).reshape(-1, pe))
        pixels += fr.shape[0] * fr.shape[1]
    expected = np.concatenate(expected)
    res = run_compute_tb(dut, name, words, expected, runs=list(runs), tmp_path=tmp_path,
                         seed=seed)
    for r, run in zip(res, runs):
        if run["stall"] == 0 and run["backpressure"] == 0:
            exp = dut.expected_cycles(pixels)
            print(f"{name} C={c} K={kernel} PE={pe} pixels={pixels}: measured {r['cycles']} "
                  f"expected {exp} cycles (acc_bits={dut.acc_bits})")
            assert abs(r["cycles"] - exp) <= 0.05 * exp
            assert r["cycles"] == exp
    return dut, res


@pytest.mark.parametrize("pe", [1, 2, 4])
def test_vvau_foldings(tmp_path, pe):
    run_vvau(tmp_path, f"vvau_p{pe}", 4, pe, seed=20 + pe, deformable=(pe == 2))


def test_vvau_int8_weights(tmp_path):
    run_vvau(tmp_path, "vvau_w8", 6, 3, seed=7, weight_bits=8, stride=2)


@pytest.mark.slow
@pytest.mark.parametrize("c,pe,kernel", [(32, 8, 3), (16, 16, 5), (24, 1, 1)])
def test_vvau_large(tmp_path, c, pe, kernel):
    run_vvau(tmp_path, f"vvau_l{c}_{pe}_{kernel}", c, pe, seed=c + pe, kernel=kernel, h=8, w=8,
             pad=kernel // 2)


def test_vvau_rules_and_shapes():
    w = np.zeros((6, 9), dtype=np.int64)
    with pytest.raises(ValueError, match="C % PE == 0"):
        VVAU(weights=w, pe=4)
    with pytest.raises(ValueError, match="kernel_elems"):
        VVAU(weights=w, pe=2, kernel_elems=4)
    with pytest.raises(ValueError, match="outside int4"):
        VVAU(weights=w - 9, pe=2)
    dut = VVAU(weights=np.full((6, 9), -8), pe=3)
    # 9 * 255 * -8 = -18360: 16 signed bits
    assert (dut.acc_bits, dut.out_bits, dut.out_signed, dut.out_lanes) == (16, 16, True, 3)
    assert dut.expected_cycles(7) == 2 * 9 * 7 + 5


def test_vvau_converts():
    w = np.random.default_rng(1).integers(-8, 8, size=(4, 9))
    assert "module vvau" in verilog.convert(VVAU(weights=w, pe=2), name="vvau")
