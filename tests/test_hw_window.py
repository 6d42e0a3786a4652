# amaranth: UnusedElaboratable=no
"""Window generators (hw/window.py) against hw/golden.py on Verilator.

Every case streams several frames back to back and compares every output beat bit for bit
with the golden model, in runs with random input stalls and output back-pressure (including
heavy back-pressure, which fills the line buffer and blocks the writer, and heavy input stalls,
which make the reader wait for rows). A stall-free run measures cycles against
``expected_cycles()``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from amaranth.back import verilog

from hw.window import DeformableSampler, MinimalSlidingWindowGenerator, SlidingWindowGenerator
from sim.runner import icarus_available, run_cocotb
from sim.streams import pack_lanes, stall_free
from hw import golden

FREE = {"stall": 0.0, "backpressure": 0.0, "seed": 0}
STALLS = [
    {"stall": 0.3, "backpressure": 0.3, "seed": 1},
    {"stall": 0.0, "backpressure": 0.8, "seed": 2},  # buffer fills, writer blocks
    {"stall": {"i": 0.8, "offsets": 0.5}, "backpressure": 0.1, "seed": 3},  # reader waits for rows
]


def beats(values: np.ndarray, lanes: int, bits: int) -> list[int]:
    """Flat value sequence -> packed beats of ``lanes`` values (lane 0 in the LSBs)."""
    return [pack_lanes(b, bits) for b in np.asarray(values).reshape(-1, lanes)]


def random_features(rng, shape, bits, is_signed):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)
    x = rng.integers(lo, hi + 1, size=shape)
    x.flat[0], x.flat[-1] = lo, hi  # extremes at both ends of the frame
    return x


def run_window_tb(dut, name, frames, expected, tmp_path, runs, offsets=None,
                  simulator="verilator"):
    """Stream ``frames`` (each ``[H, W, C]``) through ``dut``; return per-run cycle results."""
    lanes, bits = dut.lanes, dut.bits
    cfg = {
        "in_words": [w for x in frames for w in beats(x, lanes, bits)],
        "off_words": None if offsets is None else [int(v) for o in offsets for v in o.ravel()],
        "exp_words": [w for e in expected for w in beats(e, lanes, bits)],
        "frame_out_beats": dut.frame_out_beats,
        "runs": runs,
        "result_path": str(tmp_path / f"{name}.json"),
    }
    assert len(cfg["exp_words"]) == len(frames) * dut.frame_out_beats
    run_cocotb(dut, name, "sim.tb_window", cfg, simulator=simulator)
    return json.loads((tmp_path / f"{name}.json").read_text())


def check_cycles(dut, name, results):
    for r in results:
        if stall_free(r["run"]):
            exp = dut.expected_cycles()
            print(f"{name}: measured {r['frame0_cycles']} cycles, expected {exp} "
                  f"(output beats {dut.frame_out_beats}, buffer {dut.rows} rows = "
                  f"{dut.buffer_words} words)")
            assert abs(r["frame0_cycles"] - exp) <= 0.05 * exp
            assert r["frame0_cycles"] == exp


# ------------------------------------------------------------------------------------------
# sliding window generator
# ------------------------------------------------------------------------------------------

def run_swg(tmp_path, name, *, hw, c, k, s, p, d=1, lanes, depthwise, bits=8, is_signed=False,
            frames=2, seed=0, runs=None, simulator="verilator", cls=SlidingWindowGenerator):
    rng = np.random.default_rng(seed)
    dut = cls(ifm_dim=hw, channels=c, kernel=k, stride=s, pad=p, dilation=d,
              lanes=lanes, depthwise=depthwise, bits=bits, signed=is_signed)
    xs = [random_features(rng, (*hw, c), bits, is_signed) for _ in range(frames)]
    exp = [golden.sliding_window(x, k, s, p, d, depthwise, lanes) for x in xs]
    results = run_window_tb(dut, name, xs, exp, tmp_path, runs or [FREE] + STALLS,
                            simulator=simulator)
    check_cycles(dut, name, results)
    return dut, results


@pytest.mark.skipif(not icarus_available(), reason="iverilog not on PATH")
def test_swg_icarus(tmp_path):
    # the second simulator on a small depthwise case (the line-buffer Memory included)
    run_swg(tmp_path, "swg_ic", hw=(5, 4), c=2, k=3, s=1, p=1, lanes=2, depthwise=True,
            seed=21, simulator="icarus")


# (H, W), C, K, stride, pad, lanes, depthwise
SWG_CASES = {
    "std_k3s2p1_signed": dict(hw=(9, 8), c=4, k=3, s=2, p=1, lanes=2, depthwise=False,
                              is_signed=True),
    "std_k3s1p1": dict(hw=(6, 7), c=4, k=3, s=1, p=1, lanes=4, depthwise=False),
    "std_k1": dict(hw=(5, 6), c=4, k=1, s=1, p=0, lanes=2, depthwise=False),
    "dw_k3s1p1_l1": dict(hw=(6, 5), c=4, k=3, s=1, p=1, lanes=1, depthwise=True),
    "dw_k3s1p1_l2": dict(hw=(5, 7), c=4, k=3, s=1, p=1, lanes=2, depthwise=True),
    "dw_k3s1p1_l4": dict(hw=(7, 6), c=4, k=3, s=1, p=1, lanes=4, depthwise=True),
    "std_k1s2_inputbound": dict(hw=(6, 5), c=2, k=1, s=2, p=0, lanes=1, depthwise=False),
}


@pytest.mark.parametrize("case", list(SWG_CASES))
def test_swg(tmp_path, case):
    run_swg(tmp_path, f"swg_{case}", seed=list(SWG_CASES).index(case), **SWG_CASES[case])


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    dict(hw=(16, 12), c=8, k=3, s=1, p=1, lanes=2, depthwise=False),
    dict(hw=(13, 11), c=8, k=3, s=2, p=1, lanes=4, depthwise=True),
    dict(hw=(7, 8), c=2, k=3, s=2, p=1, lanes=1, depthwise=True, is_signed=True),
    dict(hw=(10, 9), c=4, k=3, s=1, p=2, d=2, lanes=2, depthwise=True),
    dict(hw=(9, 10), c=4, k=5, s=1, p=2, lanes=1, depthwise=False),
    dict(hw=(8, 8), c=6, k=3, s=1, p=0, lanes=3, depthwise=False),
    dict(hw=(12, 12), c=4, k=2, s=2, p=0, lanes=4, depthwise=True),
    dict(hw=(3, 4), c=2, k=3, s=1, p=1, lanes=1, depthwise=True),
], ids=["std16x12", "dw_s2_13x11", "dw_s2_signed", "dw_dil2", "std_k5", "std_p0_l3", "dw_k2s2", "tiny3x4"])
def test_swg_slow(tmp_path, case):
    run_swg(tmp_path, "swg_slow", seed=7, frames=3, **case)


def test_swg_converts():
    for kw in SWG_CASES.values():
        dut = SlidingWindowGenerator(ifm_dim=kw["hw"], channels=kw["c"], kernel=kw["k"],
                                     stride=kw["s"], pad=kw["p"], lanes=kw["lanes"],
                                     depthwise=kw["depthwise"])
        assert "module swg" in verilog.convert(dut, name="swg")


def test_swg_buffer_and_cycle_formula():
    dut = SlidingWindowGenerator(ifm_dim=(16, 16), channels=8, kernel=3, stride=1, pad=1,
                                 lanes=2, depthwise=True)
    assert dut.rows == 4 and dut.buffer_words == 4 * 16 * 4
    # reader-bound: fill of 2 rows, 1 cycle to start reading, then one beat per cycle
    assert dut.expected_cycles() == 2 * 16 * 4 + 1 + 16 * 16 * 9 * 4
    s2 = SlidingWindowGenerator(ifm_dim=(16, 16), channels=8, kernel=3, stride=2, pad=1,
                                lanes=2, depthwise=False)
    assert s2.rows == 5
    assert s2.expected_cycles() == 2 * 16 * 4 + 1 + 8 * 8 * 9 * 4


# the minimal pixel buffer engine on the same cases: bit-exact under stalls, exact cycles
MIN_SWG_CI = ("std_k3s2p1_signed", "dw_k3s1p1_l2", "std_k1s2_inputbound")


@pytest.mark.parametrize("case", MIN_SWG_CI)
def test_minimal_swg(tmp_path, case):
    run_swg(tmp_path, f"mswg_{case}", seed=30 + list(SWG_CASES).index(case),
            cls=MinimalSlidingWindowGenerator, **SWG_CASES[case])


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    dict(hw=(16, 12), c=8, k=3, s=1, p=1, lanes=2, depthwise=False),
    dict(hw=(13, 11), c=8, k=3, s=2, p=1, lanes=4, depthwise=True),
    dict(hw=(10, 9), c=4, k=3, s=1, p=2, d=2, lanes=2, depthwise=True),
    dict(hw=(9, 10), c=4, k=5, s=1, p=2, lanes=1, depthwise=False),
    dict(hw=(8, 8), c=6, k=3, s=1, p=0, lanes=3, depthwise=False),
    dict(hw=(12, 12), c=4, k=2, s=2, p=0, lanes=4, depthwise=True),
    dict(hw=(3, 4), c=2, k=3, s=1, p=1, lanes=1, depthwise=True),
    dict(hw=(6, 6), c=2, k=3, s=2, p=0, lanes=1, depthwise=False),
    dict(hw=(5, 5), c=2, k=1, s=3, p=0, lanes=2, depthwise=False),
] + [SWG_CASES[c] for c in SWG_CASES if c not in MIN_SWG_CI],
    ids=["std16x12", "dw_s2_13x11", "dw_dil2", "std_k5", "std_p0_l3", "dw_k2s2", "tiny3x4",
         "std_s2p0", "k1s3"] + [c for c in SWG_CASES if c not in MIN_SWG_CI])
def test_minimal_swg_slow(tmp_path, case):
    run_swg(tmp_path, "mswg_slow", seed=9, frames=3, cls=MinimalSlidingWindowGenerator, **case)


def test_minimal_swg_buffer_and_cycles():
    dut = MinimalSlidingWindowGenerator(ifm_dim=(16, 16), channels=8, kernel=3, stride=1, pad=1,
                                        lanes=2, depthwise=True)
    # (K-1) rows + (K-1) + 1 + stride pixels: 2*16 + 4 = 36 pixels of 4 words (row slots: 64)
    assert dut.pixels == 36 and dut.buffer_words == 144
    # stride 1: the first window waits for pixel (1, 1), then windows follow without a gap
    assert dut.expected_cycles() == (16 + 2) * 4 + 1 + 16 * 16 * 9 * 4
    assert dut.steady_cycles() == dut.frame_out_beats
    s2 = MinimalSlidingWindowGenerator(ifm_dim=(16, 16), channels=8, kernel=3, stride=2, pad=1,
                                       lanes=2, depthwise=False)
    assert s2.pixels == 37 and s2.buffer_words == 148  # row slots: 5 rows, 320 words
    # stride 2: the writer fills the row between output rows while the reader waits
    assert s2.steady_cycles() == 8 * 8 * 9 * 4 + 384
    assert "module mswg" in verilog.convert(s2, name="mswg")


def test_swg_refuses_bad_geometry():
    with pytest.raises(ValueError, match="not divisible"):
        SlidingWindowGenerator(ifm_dim=(4, 4), channels=3, kernel=3, stride=1, pad=1, lanes=2,
                               depthwise=True)
    with pytest.raises(ValueError, match="pad"):
        SlidingWindowGenerator(ifm_dim=(4, 4), channels=2, kernel=1, stride=1, pad=1, lanes=1,
                               depthwise=False)


# ------------------------------------------------------------------------------------------
# deformable sampler
# ------------------------------------------------------------------------------------------

def sampler_offsets(rng, hw, n):
    """Frames of offsets: random (with every value and the far corners at N), all N, all 0."""
    rand = rng.integers(0, n + 1, size=hw)
    rand[0, 0] = rand[-1, -1] = rand[0, -1] = rand[-1, 0] = n  # taps far outside the image
    rand.flat[1:n + 2] = np.arange(n + 1)
    return [rand, np.full(hw, n), np.zeros(hw, dtype=np.int64)]


def run_sampler(tmp_path, name, *, hw, c, n, lanes, bits=8, is_signed=False, seed=0,
                runs=None):
    rng = np.random.default_rng(seed)
    dut = DeformableSampler(ifm_dim=hw, channels=c, max_offset=n, lanes=lanes, bits=bits,
                            signed=is_signed)
    offs = sampler_offsets(rng, hw, n)
    xs = [random_features(rng, (*hw, c), bits, is_signed) for _ in offs]
    exp = [golden.deformable_sample(x, o, n, lanes) for x, o in zip(xs, offs)]
    results = run_window_tb(dut, name, xs, exp, tmp_path, runs or [FREE] + STALLS, offsets=offs)
    check_cycles(dut, name, results)
    return dut, results


@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_sampler_n7(tmp_path, lanes):
    run_sampler(tmp_path, f"dsamp_n7_l{lanes}", hw=(12, 10), c=4, n=7, lanes=lanes,
                seed=lanes)


def test_sampler_n2_small(tmp_path):
    run_sampler(tmp_path, "dsamp_n2", hw=(5, 6), c=2, n=2, lanes=1, seed=11)


def test_sampler_late_offsets(tmp_path):
    # offsets arrive rarely: the sampler must wait for them, never skip or reorder
    runs = [{"stall": {"offsets": 0.95}, "backpressure": 0.2, "seed": 5}]
    run_sampler(tmp_path, "dsamp_n2", hw=(5, 6), c=2, n=2, lanes=1, seed=12, runs=runs)


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    dict(hw=(20, 24), c=8, n=7, lanes=2),
    dict(hw=(6, 9), c=3, n=7, lanes=3, is_signed=True),  # image smaller than the reach
    dict(hw=(9, 5), c=4, n=1, lanes=4),
    dict(hw=(7, 7), c=2, n=0, lanes=1),
], ids=["n7_20x24", "n7_small_signed", "n1", "n0"])
def test_sampler_slow(tmp_path, case):
    run_sampler(tmp_path, "dsamp_slow", seed=9, **case)


def test_sampler_converts_and_buffer():
    dut = DeformableSampler(ifm_dim=(12, 10), channels=4, max_offset=7, lanes=2)
    assert dut.rows == 16 and dut.buffer_words == 16 * 10 * 2
    assert dut.offset_bits == 3
    assert dut.expected_cycles() == 8 * 10 * 2 + 1 + 12 * 10 * 9 * 2
    assert "module dsamp" in verilog.convert(dut, name="dsamp")
    with pytest.raises(ValueError, match="offset_bits"):
        DeformableSampler(ifm_dim=(4, 4), channels=1, max_offset=7, lanes=1, offset_bits=2)
