# amaranth: UnusedElaboratable=no
"""MVAU and VVAU with signed int8 inputs and int4 weights (ShuffleNetV2: a depthwise conv with
no ReLU emits int8 that feeds the next 1x1 conv) against hw/golden.py, bit for bit.

Inputs hit both ends of int8 (-128 and 127), weights both ends of int4 (-8 and 7), so the
products and accumulators reach their extreme signed values; runs with stalls and
back-pressure, and a stall-free run checking cycles.
"""

from __future__ import annotations

import numpy as np
import pytest

from hw.mvau import MVAU, dot_range
from hw.vvau import VVAU
from sim.runner import icarus_available
from sim.streams import pack_lanes
from sim.tb_compute import DEFAULT_RUNS, run_compute_tb
from hw import golden

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
ICARUS = pytest.param("icarus", marks=pytest.mark.skipif(not icarus_available(),
                                                         reason="iverilog not on PATH"))


def int8_extremes(rng, shape):
    x = rng.integers(-128, 128, size=shape)
    flat = x.reshape(-1)
    flat[: flat.size // 4] = rng.choice([-128, 127], size=flat.size // 4)
    return x


def check_free_cycles(name, dut, res, runs, pixels):
    for r, run in zip(res, runs):
        if run["stall"] == 0 and run["backpressure"] == 0:
            exp = dut.expected_cycles(pixels)
            print(f"{name}: measured {r['cycles']} cycles, expected {exp}")
            assert r["cycles"] == exp


def run_mvau_signed(tmp_path, name, mh, mw, pe, simd, pixels, seed, simulator="verilator"):
    rng = np.random.default_rng(seed)
    w = rng.integers(-8, 8, size=(mh, mw))
    w[0, :], w[1, :] = -8, 7
    x = int8_extremes(rng, (pixels, mw))
    x[0, :], x[1, :] = -128, 127  # with row 0 = -8: the largest positive accumulator
    dut = MVAU(weights=w, pe=pe, simd=simd, in_bits=8, in_signed=True, weight_bits=4)
    exp = golden.mvau(x, w)
    lo, hi = dot_range(w, 8, True)
    assert exp.max() == hi == 8 * 128 * mw  # -8 * -128 on every term
    res = run_compute_tb(dut, name, [pack_lanes(b, 8) for b in x.reshape(-1, simd)],
                         exp.reshape(-1, pe), runs=list(DEFAULT_RUNS), tmp_path=tmp_path,
                         seed=seed, simulator=simulator)
    check_free_cycles(name, dut, res, DEFAULT_RUNS, pixels)


def run_vvau_signed(tmp_path, name, c, pe, h, w, seed, kernel=3):
    rng = np.random.default_rng(seed)
    wts = rng.integers(-8, 8, size=(c, kernel * kernel))
    wts[0, :] = -8
    x = int8_extremes(rng, (h, w, c))
    x[:kernel, :kernel, :] = -128  # a full window of -128 times -8
    dut = VVAU(weights=wts, pe=pe, kernel_elems=kernel * kernel, in_bits=8, in_signed=True,
               weight_bits=4)
    win = golden.sliding_window(x, kernel, 1, kernel // 2, depthwise=True, lanes=pe)
    exp = golden.vvau(win, wts)
    assert exp.max() == 8 * 128 * kernel * kernel
    res = run_compute_tb(dut, name, [pack_lanes(b, 8) for b in win.reshape(-1, pe)],
                         exp.reshape(-1, pe), runs=list(DEFAULT_RUNS), tmp_path=tmp_path,
                         seed=seed)
    check_free_cycles(name, dut, res, DEFAULT_RUNS, h * w)


@pytest.mark.parametrize("simulator", ["verilator", ICARUS])
def test_mvau_signed_int8(tmp_path, simulator):
    # on Icarus too: the weight ROM's initial contents and the input buffer
    run_mvau_signed(tmp_path, "mvau_s8", mh=4, mw=8, pe=2, simd=4, pixels=8, seed=41,
                    simulator=simulator)


def test_vvau_signed_int8(tmp_path):
    run_vvau_signed(tmp_path, "vvau_s8", c=4, pe=2, h=4, w=4, seed=42)


@pytest.mark.slow
@pytest.mark.parametrize("pe,simd", [(1, 1), (8, 16), (4, 2)])
def test_mvau_signed_int8_foldings(tmp_path, pe, simd):
    run_mvau_signed(tmp_path, f"mvau_s8_{pe}_{simd}", mh=8, mw=16, pe=pe, simd=simd, pixels=10,
                    seed=43 + pe)


@pytest.mark.slow
@pytest.mark.parametrize("pe", [1, 4])
def test_vvau_signed_int8_foldings(tmp_path, pe):
    run_vvau_signed(tmp_path, f"vvau_s8_{pe}", c=8, pe=pe, h=5, w=4, seed=44 + pe)
