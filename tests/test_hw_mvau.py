"""MVAU RTL (hw/mvau.py) against hw/golden.mvau on Verilator, with stalls and back-pressure."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog

from hw.mvau import MVAU, accumulator_bits, dot_range
from sim.streams import pack_lanes
from sim.tb_compute import DEFAULT_RUNS, run_compute_tb
from hw import golden

# instances built only to read their attributes (or refused) are never elaborated
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def make_case(rng, mh, mw, pixels, weight_bits=4, in_bits=8, in_signed=False):
    """Random weights over the full signed range plus rows/inputs that hit the extremes."""
    w_lo, w_hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    w = rng.integers(w_lo, w_hi + 1, size=(mh, mw))
    w[0, :] = w_lo  # most negative accumulator with the largest input
    if mh > 1:
        w[1, :] = w_hi
    if in_signed:
        x_lo, x_hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    else:
        x_lo, x_hi = 0, (1 << in_bits) - 1
    x = rng.integers(x_lo, x_hi + 1, size=(pixels, mw))
    x[0, :] = x_hi
    x[1, :] = x_lo
    if pixels > 2:
        x[2, :] = rng.choice([x_lo, x_hi], size=mw)
    return w, x


def stream_in(x, simd, in_bits):
    """[pixels, MW] -> beats of SIMD lanes (element s*SIMD + j in beat s, lane j)."""
    return [pack_lanes(beat, in_bits) for beat in x.reshape(-1, simd)]


def run_mvau(tmp_path, name, mh, mw, pe, simd, pixels, seed, *, weight_bits=4, in_bits=8,
             in_signed=False, runs=DEFAULT_RUNS):
    rng = np.random.default_rng(seed)
    w, x = make_case(rng, mh, mw, pixels, weight_bits, in_bits, in_signed)
    dut = MVAU(weights=w, pe=pe, simd=simd, in_bits=in_bits, in_signed=in_signed,
               weight_bits=weight_bits)
    expected = golden.mvau(x, w).reshape(-1, pe)
    lo, hi = dot_range(w, in_bits, in_signed)
    assert expected.min() >= lo and expected.max() <= hi
    res = run_compute_tb(dut, name, stream_in(x, simd, in_bits), expected, runs=list(runs),
                         tmp_path=tmp_path, seed=seed)
    for r, run in zip(res, runs):
        if run["stall"] == 0 and run["backpressure"] == 0:
            exp = dut.expected_cycles(pixels)
            print(f"{name} MH={mh} MW={mw} PE={pe} SIMD={simd} pixels={pixels}: "
                  f"measured {r['cycles']} expected {exp} cycles (acc_bits={dut.acc_bits})")
            assert abs(r["cycles"] - exp) <= 0.05 * exp
            assert r["cycles"] == exp
    return dut, res


# (PE, SIMD) on MH=8, MW=12: none, partial and full folding on each axis (one Verilator
# build each, ~17 s, so the mixed ones are in the slow set)
FOLDINGS = [(1, 1), (2, 3), (8, 12), (4, 4)]
FOLDINGS_SLOW = [(8, 1), (1, 6), (1, 12), (8, 3)]


@pytest.mark.parametrize("pe,simd", FOLDINGS)
def test_mvau_foldings(tmp_path, pe, simd):
    run_mvau(tmp_path, f"mvau_p{pe}_s{simd}", 8, 12, pe, simd, pixels=12, seed=10 * pe + simd)


@pytest.mark.slow
@pytest.mark.parametrize("pe,simd", FOLDINGS_SLOW)
def test_mvau_foldings_more(tmp_path, pe, simd):
    run_mvau(tmp_path, f"mvau_p{pe}_s{simd}", 8, 12, pe, simd, pixels=12, seed=10 * pe + simd)


def test_mvau_int8_weights(tmp_path):
    dut, _ = run_mvau(tmp_path, "mvau_w8", 6, 8, 3, 2, pixels=10, seed=3, weight_bits=8)
    assert dut.acc_bits == accumulator_bits(dut.weights, 8, False)


@pytest.mark.slow
def test_mvau_signed_input(tmp_path):
    run_mvau(tmp_path, "mvau_sin", 4, 6, 2, 3, pixels=10, seed=4, in_signed=True)


@pytest.mark.slow
def test_mvau_single_neuron_single_synapse(tmp_path):
    # MH = MW = 1: every beat is a whole vector (depth-1 ROM, no input buffer)
    run_mvau(tmp_path, "mvau_1x1", 1, 1, 1, 1, pixels=24, seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("mh,mw,pe,simd", [(32, 72, 4, 8), (16, 144, 16, 16), (64, 27, 8, 3)])
def test_mvau_large(tmp_path, mh, mw, pe, simd):
    run_mvau(tmp_path, f"mvau_l{mh}_{mw}_{pe}_{simd}", mh, mw, pe, simd, pixels=16, seed=mh + mw)


def test_mvau_folding_rules():
    w = np.zeros((8, 12), dtype=np.int64)
    with pytest.raises(ValueError, match="MH % PE == 0"):
        MVAU(weights=w, pe=3, simd=1)
    with pytest.raises(ValueError, match="MW % SIMD == 0"):
        MVAU(weights=w, pe=1, simd=5)
    with pytest.raises(ValueError, match="outside int4"):
        MVAU(weights=w + 8, pe=1, simd=1)
    with pytest.raises(ValueError, match="acc_bits=8"):
        MVAU(weights=w + 7, pe=1, simd=1, acc_bits=8)


def test_mvau_acc_bits_and_shapes():
    w = np.full((8, 12), -8)
    dut = MVAU(weights=w, pe=2, simd=3)
    # 12 * 255 * -8 = -24480 needs 16 signed bits; type bound 8 + 4 + ceil(log2 12) = 16
    assert dut.acc_bits == 16
    assert (dut.out_bits, dut.out_signed, dut.out_lanes, dut.in_lanes) == (16, True, 2, 3)
    assert MVAU(weights=np.ones((8, 12), dtype=int), pe=1, simd=1).acc_bits == 13
    assert dut.expected_cycles(10) == 4 * 4 * 10 + dut.latency + 2


def test_mvau_converts():
    rng = np.random.default_rng(0)
    w = rng.integers(-8, 8, size=(8, 12))
    text = verilog.convert(MVAU(weights=w, pe=2, simd=3), name="mvau")
    assert "module mvau" in text
