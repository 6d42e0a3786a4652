# amaranth: UnusedElaboratable=no
"""MaxPool (hw/pool.py) and Upsample (hw/upsample.py) against hw/golden.py.

Several frames back to back, every output beat compared bit for bit, with random input
stalls and output back-pressure; the stall-free run's cycles are compared with
``expected_cycles()``. MaxPool is fed the depthwise window stream of the golden sliding
window generator (the stream the RTL SlidingWindowGenerator produces, tested in
test_hw_window.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.pool import MaxPool
from hw.upsample import Upsample
from hw.window import SlidingWindowGenerator
from sim.runner import icarus_available
from sim.streams import pack_lanes
from sim.tb_multistream import free_run_cycles, run_multistream
from hw import golden

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
ICARUS = pytest.param("icarus", marks=pytest.mark.skipif(not icarus_available(),
                                                         reason="iverilog not on PATH"))


def beats(x, lanes, bits):
    return [pack_lanes(b, bits) for b in np.asarray(x).reshape(-1, lanes)]


def check_cycles(name, results, expected):
    for got in free_run_cycles(results):
        print(f"{name}: measured {got} cycles, expected {expected}")
        assert abs(got - expected) <= 0.05 * expected
        assert got == expected


def features(rng, shape, bits, is_signed):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)
    x = rng.integers(lo, hi + 1, size=shape)
    x.flat[0], x.flat[-1] = lo, hi
    return x


# ---- MaxPool -------------------------------------------------------------------------------

def run_maxpool(tmp_path, name, *, hw, c, k, s, p, lanes, bits=8, frames=2, seed=0, runs=None,
                simulator="verilator"):
    rng = np.random.default_rng(seed)
    dut = MaxPool(kernel=k, channels=c, lanes=lanes, bits=bits)
    xs = [features(rng, (*hw, c), bits, False) for _ in range(frames)]
    wins = [golden.sliding_window(x, k, s, p, depthwise=True, lanes=lanes) for x in xs]
    exp = [golden.maxpool(w) for w in wins]
    pixels = exp[0].shape[0] * exp[0].shape[1]
    res = run_multistream(
        dut, name, {"i": [w for win in wins for w in beats(win, lanes, bits)]},
        {"o": [w for e in exp for w in beats(e, lanes, bits)]},
        {"o": pixels * c // lanes}, tmp_path=tmp_path, runs=runs, simulator=simulator)
    check_cycles(name, res, dut.expected_cycles(pixels))


@pytest.mark.parametrize("simulator", ["verilator", ICARUS])
def test_maxpool(tmp_path, simulator):
    # the detector's nn.MaxPool2d(3, 2, 1)
    run_maxpool(tmp_path, "maxpool", hw=(5, 6), c=4, k=3, s=2, p=1, lanes=2, seed=1,
                simulator=simulator)


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    dict(hw=(8, 7), c=8, k=3, s=2, p=1, lanes=8),
    dict(hw=(6, 6), c=3, k=2, s=2, p=0, lanes=1),
    dict(hw=(5, 5), c=4, k=1, s=1, p=0, lanes=4, bits=4),
], ids=["k3s2_l8", "k2s2_l1", "k1_u4"])
def test_maxpool_slow(tmp_path, case):
    run_maxpool(tmp_path, "maxpool_slow", seed=2, frames=3, **case)


# ---- Upsample ------------------------------------------------------------------------------

def run_upsample(tmp_path, name, *, hw, c, f, lanes, bits=8, is_signed=False, frames=2, seed=0,
                 runs=None, simulator="verilator"):
    rng = np.random.default_rng(seed)
    dut = Upsample(factor=f, ifm_dim=hw, channels=c, lanes=lanes, bits=bits, signed=is_signed)
    xs = [features(rng, (*hw, c), bits, is_signed) for _ in range(frames)]
    exp = [golden.upsample_nearest(x, f) for x in xs]
    res = run_multistream(
        dut, name, {"i": [w for x in xs for w in beats(x, lanes, bits)]},
        {"o": [w for e in exp for w in beats(e, lanes, bits)]},
        {"o": dut.frame_out_beats}, tmp_path=tmp_path, runs=runs, simulator=simulator)
    check_cycles(name, res, dut.expected_cycles())


@pytest.mark.parametrize("simulator", ["verilator", ICARUS])
def test_upsample(tmp_path, simulator):
    run_upsample(tmp_path, "upsample", hw=(3, 4), c=4, f=2, lanes=2, seed=3,
                 simulator=simulator)


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    dict(hw=(4, 5), c=8, f=2, lanes=8, is_signed=True),
    dict(hw=(3, 3), c=2, f=3, lanes=1),
    dict(hw=(5, 4), c=4, f=1, lanes=2),  # factor 1: reader and writer at the same pace
    dict(hw=(1, 3), c=3, f=2, lanes=3),  # one row per frame
], ids=["f2_l8_signed", "f3_l1", "f1", "one_row"])
def test_upsample_slow(tmp_path, case):
    run_upsample(tmp_path, "upsample_slow", seed=4, frames=3, **case)


def test_pool_upsample_rules_and_formulas():
    with pytest.raises(ValueError, match="lanes"):
        MaxPool(kernel=3, channels=6, lanes=4)
    with pytest.raises(ValueError, match="factor"):
        Upsample(factor=0, ifm_dim=(4, 4), channels=2, lanes=1)
    with pytest.raises(ValueError, match="lanes"):
        Upsample(factor=2, ifm_dim=(4, 4), channels=6, lanes=4)
    # contract: pixels * K*K * C/PE (+1 output register)
    assert MaxPool(kernel=3, channels=16, lanes=4).expected_cycles(64) == 64 * 9 * 4 + 1
    up = Upsample(factor=2, ifm_dim=(16, 16), channels=8, lanes=2)
    # contract: H*f * W*f * C/PE, plus one input row and the read register
    assert up.expected_cycles() == 32 * 32 * 4 + 16 * 4 + 1
    assert up.buffer_words == 2 * 16 * 4


def test_pool_upsample_convert():
    assert "module mp" in verilog.convert(MaxPool(kernel=3, channels=4, lanes=2), name="mp")
    up = Upsample(factor=2, ifm_dim=(3, 4), channels=4, lanes=2)
    assert "module up" in verilog.convert(up, name="up")


class SwgMaxPool(wiring.Component):
    """The detector's pooling as the compiler builds it: SlidingWindowGenerator -> MaxPool."""

    def __init__(self, swg: SlidingWindowGenerator, pool: MaxPool):
        self.swg, self.pool = swg, pool
        super().__init__({"i": In(stream.Signature(swg.payload_layout)),
                          "o": Out(stream.Signature(pool.o.payload.shape()))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.swg, m.submodules.pool = self.swg, self.pool
        wiring.connect(m, wiring.flipped(self.i), self.swg.i)
        wiring.connect(m, self.swg.o, self.pool.i)
        wiring.connect(m, self.pool.o, wiring.flipped(self.o))
        return m


@pytest.mark.slow
@pytest.mark.parametrize("lanes", [1, 4])
def test_swg_maxpool_chain(tmp_path, lanes):
    """RTL window generator feeding RTL MaxPool: nn.MaxPool2d(3, 2, 1) bit for bit; cycles
    are the window generator's plus MaxPool's output register."""
    rng = np.random.default_rng(30 + lanes)
    hw, c = (9, 8), 4
    swg = SlidingWindowGenerator(ifm_dim=hw, channels=c, kernel=3, stride=2, pad=1, lanes=lanes,
                                 depthwise=True)
    dut = SwgMaxPool(swg, MaxPool(kernel=3, channels=c, lanes=lanes))
    xs = [features(rng, (*hw, c), 8, False) for _ in range(3)]
    exp = [golden.maxpool(golden.sliding_window(x, 3, 2, 1, depthwise=True, lanes=lanes))
           for x in xs]
    res = run_multistream(
        dut, f"swg_mp_l{lanes}", {"i": [w for x in xs for w in beats(x, lanes, 8)]},
        {"o": [w for e in exp for w in beats(e, lanes, 8)]}, {"o": exp[0].size // lanes},
        tmp_path=tmp_path)
    check_cycles("swg_mp", res, swg.expected_cycles() + 1)
