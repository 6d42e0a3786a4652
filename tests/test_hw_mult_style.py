# amaranth: UnusedElaboratable=no
"""MVAU ``mult_style="dsp"`` (two products per multiplier, hw/mvau.py) against hw/golden.mvau.

The packing identity is checked exhaustively in Python; the RTL bit for bit under stalls
and back-pressure (unsigned and signed inputs, an odd PE so one lane is unpaired), with
cycles equal to the ``"lut"`` style's.
"""

from __future__ import annotations

import numpy as np
import pytest

from hw.mvau import MVAU
from sim.streams import pack_lanes
from sim.tb_compute import DEFAULT_RUNS, run_compute_tb
from hw import golden


@pytest.mark.parametrize("in_signed", [False, True])
def test_packing_identity_exhaustive(in_signed):
    """Every (x, w0, w1) of uint8/int8 x int4 x int4: the extraction of the hardware is exact."""
    dut = MVAU(weights=np.zeros((2, 1), dtype=int), pe=2, simd=1, in_signed=in_signed,
               mult_style="dsp")
    k = dut.prod_bits
    x = np.arange(-128, 128) if in_signed else np.arange(256)
    w0, w1 = np.meshgrid(np.arange(-8, 8), np.arange(-8, 8), indexing="ij")
    p = x[:, None, None] * ((w1 << k) + w0)[None]
    lo = ((p & ((1 << k) - 1)) ^ (1 << (k - 1))) - (1 << (k - 1))  # sign-extend the low K bits
    hi = (p >> k) + ((p >> (k - 1)) & 1)
    np.testing.assert_array_equal(lo, x[:, None, None] * w0[None])
    np.testing.assert_array_equal(hi, x[:, None, None] * w1[None])


def run_mvau_dsp(tmp_path, name, mh, mw, pe, simd, pixels, seed, *, in_signed=False,
                 weight_bits=4):
    rng = np.random.default_rng(seed)
    w_lo, w_hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    w = rng.integers(w_lo, w_hi + 1, size=(mh, mw))
    w[0, :], w[1, :] = w_lo, w_hi  # a pair with both extremes
    x_lo, x_hi = (-128, 127) if in_signed else (0, 255)
    x = rng.integers(x_lo, x_hi + 1, size=(pixels, mw))
    x[0, :], x[1, :] = x_lo, x_hi
    dut = MVAU(weights=w, pe=pe, simd=simd, in_signed=in_signed, weight_bits=weight_bits,
               mult_style="dsp")
    exp = golden.mvau(x, w)
    res = run_compute_tb(dut, name, [pack_lanes(b, 8) for b in x.reshape(-1, simd)],
                         exp.reshape(-1, pe), runs=list(DEFAULT_RUNS), tmp_path=tmp_path,
                         seed=seed)
    lut = MVAU(weights=w, pe=pe, simd=simd, in_signed=in_signed, weight_bits=weight_bits)
    for r, run in zip(res, DEFAULT_RUNS):
        if run["stall"] == 0 and run["backpressure"] == 0:
            print(f"{name}: measured {r['cycles']} cycles, expected {dut.expected_cycles(pixels)}"
                  f"; {dut.multipliers} multipliers (lut: {lut.multipliers})")
            assert r["cycles"] == dut.expected_cycles(pixels) == lut.expected_cycles(pixels)
    return dut


def test_mvau_dsp_unsigned_odd_pe(tmp_path):
    dut = run_mvau_dsp(tmp_path, "mvau_dsp", mh=6, mw=8, pe=3, simd=4, pixels=8, seed=51)
    assert dut.multipliers == 2 * 4


@pytest.mark.slow
def test_mvau_dsp_signed(tmp_path):
    run_mvau_dsp(tmp_path, "mvau_dsp_s", mh=8, mw=6, pe=4, simd=3, pixels=8, seed=52,
                 in_signed=True)


@pytest.mark.slow
def test_mvau_dsp_int8_weights(tmp_path):
    # the first conv's 8-bit weights: 24-bit packed operand, still one DSP48E1 A port
    run_mvau_dsp(tmp_path, "mvau_dsp_w8", mh=4, mw=6, pe=2, simd=2, pixels=6, seed=53,
                 weight_bits=8)


def test_mult_style_rules():
    w = np.zeros((4, 4), dtype=int)
    with pytest.raises(ValueError, match="mult_style must be"):
        MVAU(weights=w, pe=2, simd=1, mult_style="dsp48")
    with pytest.raises(ValueError, match="B port"):
        MVAU(weights=w, pe=2, simd=1, in_bits=18, weight_bits=2, mult_style="dsp")
    with pytest.raises(ValueError, match="A port"):
        MVAU(weights=w, pe=2, simd=1, in_bits=12, weight_bits=8, mult_style="dsp")
    assert MVAU(weights=w, pe=4, simd=2).multipliers == 8
    assert MVAU(weights=w, pe=4, simd=2, mult_style="dsp").multipliers == 4
    assert MVAU(weights=w, pe=2, simd=1, mult_style="dsp").prod_bits == 12  # u8 x s4
