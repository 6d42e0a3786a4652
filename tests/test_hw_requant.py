"""Requantizer RTL (hw/requant.py) against hw/golden.requantize, with stalls and back-pressure."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from hw.requant import Requantizer
from sim.runner import icarus_available
from sim.streams import pack_lanes
from sim.tb_compute import DEFAULT_RUNS, run_compute_tb
from hw import golden

# instances built only to read their attributes (or refused) are never elaborated
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
# the second simulator, on the smallest case
ICARUS = pytest.param("icarus", marks=pytest.mark.skipif(not icarus_available(),
                                                         reason="iverilog not on PATH"))


def make_case(rng, c, pixels, acc_bits, mul_bits, bias_bits, shift, out_min, out_max):
    """Accumulators over the full signed range (extremes included), multipliers with a zero
    channel, wide biases, and a shift that puts the scaled values around the output range so
    both saturation sides and the inside are exercised."""
    a_lo, a_hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    acc = rng.integers(a_lo, a_hi + 1, size=(pixels, c))
    acc[0, :], acc[1, :] = a_lo, a_hi
    acc[2, :] = 0
    # small accumulators land inside the output range
    acc[3:pixels // 2] //= 1 << max(0, acc_bits - 6)
    mul = rng.integers(1 << (mul_bits - 2), 1 << mul_bits, size=c)
    mul[-1] = 0  # a dead channel: output is the clamped bias
    b_lim = 1 << (bias_bits - 1)
    bias = rng.integers(-b_lim, b_lim, size=c, dtype=np.int64)
    bias[0] = -b_lim
    # the other channels: a small random bias around the middle of the output range
    mid = ((out_min + out_max) // 2) << shift
    small = bias[1:] // (1 << max(0, bias_bits - 1 - shift + 2))
    bias[1:] = np.clip(small + mid, -b_lim, b_lim - 1)
    return acc, mul, bias


def run_requant(tmp_path, name, *, c, lanes, acc_bits, mul_bits, bias_bits, shift, out_min,
                out_max, pixels, seed, runs=DEFAULT_RUNS, simulator="verilator"):
    rng = np.random.default_rng(seed)
    acc, mul, bias = make_case(rng, c, pixels, acc_bits, mul_bits, bias_bits, shift, out_min,
                               out_max)
    dut = Requantizer(multiplier=mul, bias=bias, shift=shift, out_min=out_min, out_max=out_max,
                      lanes=lanes, acc_bits=acc_bits)
    expected = golden.requantize(acc, mul, bias, shift, out_min, out_max)
    # the case must really saturate on both sides and pass values through in between
    assert (expected == out_min).any() and (expected == out_max).any()
    assert ((expected > out_min) & (expected < out_max)).any()
    words = [pack_lanes(b, acc_bits) for b in acc.reshape(-1, lanes)]
    res = run_compute_tb(dut, name, words, expected.reshape(-1, lanes), runs=list(runs),
                         tmp_path=tmp_path, seed=seed, simulator=simulator)
    for r, run in zip(res, runs):
        if run["stall"] == 0 and run["backpressure"] == 0:
            exp = dut.expected_cycles(pixels)
            print(f"{name} C={c} lanes={lanes} pixels={pixels}: measured {r['cycles']} "
                  f"expected {exp} cycles (acc {acc_bits}b x mul {dut.mul_bits}b -> prod "
                  f"{dut.prod_bits}b, bias {dut.bias_bits}b, sum {dut.sum_bits}b, "
                  f"out {'s' if dut.out_signed else 'u'}{dut.out_bits})")
            assert abs(r["cycles"] - exp) <= 0.05 * exp
            assert r["cycles"] == exp
    return dut, res


@pytest.mark.parametrize("simulator", ["verilator", ICARUS])
def test_requant_lanes1_offsets(tmp_path, simulator):
    # 0..7: the deformable offset head (3-bit unsigned output)
    dut, _ = run_requant(tmp_path, "rq_l1", c=4, lanes=1, acc_bits=16, mul_bits=12,
                         bias_bits=24, shift=20, out_min=0, out_max=7, pixels=40, seed=31,
                         simulator=simulator)
    assert (dut.out_bits, dut.out_signed) == (3, False)


def test_requant_lanes2_uint8(tmp_path):
    dut, _ = run_requant(tmp_path, "rq_l2", c=6, lanes=2, acc_bits=16, mul_bits=14,
                         bias_bits=28, shift=18, out_min=0, out_max=255, pixels=40, seed=32)
    assert (dut.out_bits, dut.out_signed) == (8, False)


def test_requant_full_lanes_int8_wide_bias(tmp_path):
    # 24-bit accumulators, 16-bit multipliers, 40-bit biases: a 41-bit sum
    dut, _ = run_requant(tmp_path, "rq_lc", c=4, lanes=4, acc_bits=24, mul_bits=16,
                         bias_bits=40, shift=31, out_min=-128, out_max=127, pixels=40, seed=33)
    assert (dut.out_bits, dut.out_signed) == (8, True)
    assert dut.sum_bits >= 40


@pytest.mark.slow
@pytest.mark.parametrize("c,lanes,out_min,out_max", [(64, 8, 0, 255), (32, 32, -128, 127),
                                                     (16, 1, 0, 15)])
def test_requant_large(tmp_path, c, lanes, out_min, out_max):
    run_requant(tmp_path, f"rq_big_{c}_{lanes}", c=c, lanes=lanes, acc_bits=20, mul_bits=15,
                bias_bits=36, shift=24, out_min=out_min, out_max=out_max, pixels=64, seed=c + lanes)


def _amaranth_sim(dut, acc):
    """Stall-free run in Amaranth's own simulator (no Verilator build: quick edge cases)."""
    beats = acc.reshape(-1, dut.lanes)
    got = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        k = 0
        while len(got) < len(beats):
            ctx.set(dut.i.valid, k < len(beats))
            if k < len(beats):
                ctx.set(dut.i.payload, [int(v) for v in beats[k]])
            _, _, iv, ir, ov, op = await ctx.tick().sample(dut.i.valid, dut.i.ready,
                                                           dut.o.valid, dut.o.payload)
            k += bool(iv and ir)
            if ov:
                got.append([int(v) for v in op])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return np.array(got)


@pytest.mark.parametrize("mul,bias,shift,lo,hi", [
    ([3, 0], [5, -7], 40, 0, 7),                       # shift beyond the sum width
    ([3, 1], [5, -7], 0, -100, 100),                   # no shift
    ([255, 1], [-(1 << 39), (1 << 39) - 1], 12, -128, 127),  # 40-bit bias, both rails
    ([1, 1], [0, 0], 0, -128, 127),                    # range inside: no clamp logic
    ([1, 2], [1000, -1000], 0, 0, 7),                  # always saturated
])
def test_requant_edges_amaranth_sim(mul, bias, shift, lo, hi):
    acc = np.array([list(range(-128, 128))] * 2).T  # every 8-bit accumulator, 2 channels
    dut = Requantizer(multiplier=np.array(mul), bias=np.array(bias), shift=shift, out_min=lo,
                      out_max=hi, lanes=2, acc_bits=8)
    got = _amaranth_sim(dut, acc)
    exp = golden.requantize(acc, np.array(mul), np.array(bias), shift, lo, hi)
    np.testing.assert_array_equal(got.reshape(exp.shape), exp)



def test_requant_unsigned_input_amaranth_sim():
    # the passthrough branch of a ShuffleNet unit rescales a uint8 stream (the whole
    # detector's first RTL mismatch: 151 read as signed 8-bit is -105, clamped to 0)
    acc = np.array([list(range(256))] * 2).T  # every uint8 value, 2 channels
    mul, bias = np.array([34479, 32768]), np.array([16384, 0])
    dut = Requantizer(multiplier=mul, bias=bias, shift=15, out_min=0, out_max=255, lanes=2,
                      acc_bits=8, in_signed=False)
    assert (dut.in_bits, dut.in_signed) == (8, False)
    got = _amaranth_sim(dut, acc)
    exp = golden.requantize(acc, mul, bias, 15, 0, 255)
    assert exp[200, 0] == 210 and exp[200, 1] == 200 and exp[255, 0] == 255
    np.testing.assert_array_equal(got.reshape(exp.shape), exp)

def test_requant_rules_and_shapes():
    m, b = np.array([1, 2, 3]), np.array([0, 0, 0])
    with pytest.raises(ValueError, match="C % lanes == 0"):
        Requantizer(multiplier=m, bias=b, shift=0, out_min=0, out_max=255, lanes=2, acc_bits=8)
    with pytest.raises(ValueError, match="non-negative"):
        Requantizer(multiplier=-m, bias=b, shift=0, out_min=0, out_max=255, lanes=1, acc_bits=8)
    with pytest.raises(ValueError, match="channels"):
        Requantizer(multiplier=m, bias=b[:2], shift=0, out_min=0, out_max=255, lanes=1,
                    acc_bits=8)
    shapes = {(0, 255): (8, False), (-128, 127): (8, True), (0, 7): (3, False),
              (-1, 0): (1, True), (0, 1): (1, False)}
    for (lo, hi), want in shapes.items():
        d = Requantizer(multiplier=m, bias=b, shift=0, out_min=lo, out_max=hi, lanes=3,
                        acc_bits=8)
        assert (d.out_bits, d.out_signed) == want
    assert d.expected_cycles(10) == 10 + 5


def test_requant_converts():
    d = Requantizer(multiplier=np.array([5, 7]), bias=np.array([-(1 << 39), 3]), shift=8,
                    out_min=0, out_max=255, lanes=2, acc_bits=20)
    assert "module requant" in verilog.convert(d, name="requant")
