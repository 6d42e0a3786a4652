# amaranth: UnusedElaboratable=no
"""Stream duplicator and width converter (hw/stream_utils.py) on Verilator.

Random data, random input stalls and independent random back-pressure per output; every
output beat is compared with the input sequence. A stall-free run checks cycles against
``expected_cycles()``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from amaranth import unsigned
from amaranth.back import verilog
from amaranth.lib import data

from hw.stream_utils import StreamDuplicator, StreamWidthConverter
from sim.runner import icarus_available, run_cocotb
from sim.streams import pack_lanes, stall_free

# the second simulator, on the small cases
ICARUS = pytest.param("icarus", marks=pytest.mark.skipif(not icarus_available(),
                                                         reason="iverilog not on PATH"))


def run_tb(dut, name, kind, in_words, exp_words, runs, tmp_path, simulator="verilator"):
    cfg = {"kind": kind, "in_words": in_words, "exp_words": exp_words, "runs": runs,
           "result_path": str(tmp_path / f"{name}.json")}
    run_cocotb(dut, name, "sim.tb_stream_utils", cfg, simulator=simulator)
    return json.loads((tmp_path / f"{name}.json").read_text())


def check_free_run(name, results, expected):
    free = [r for r in results if stall_free(r["run"])]
    for r in free:
        print(f"{name}: measured {r['cycles']} cycles, expected {expected}")
        assert abs(r["cycles"] - expected) <= 0.05 * expected
        assert r["cycles"] == expected


@pytest.mark.parametrize("simulator", ["verilator", ICARUS])
def test_duplicator(tmp_path, simulator):
    rng = np.random.default_rng(3)
    lay = data.ArrayLayout(unsigned(8), 3)
    dut = StreamDuplicator(lay)
    beats = 400
    words = [pack_lanes(v, 8) for v in rng.integers(0, 256, size=(beats, 3))]
    runs = [
        {"stall": 0.0, "backpressure": 0.0, "seed": 0},
        {"stall": 0.3, "backpressure": 0.3, "seed": 1},
        # the outputs take a beat at different times
        {"stall": 0.0, "backpressure": {"o0": 0.7, "o1": 0.1}, "seed": 2},
        {"stall": 0.5, "backpressure": {"o1": 0.8}, "seed": 3},
    ]
    res = run_tb(dut, "dup", "dup", words, words, runs, tmp_path, simulator)
    check_free_run("dup", res, dut.expected_cycles(beats))


# (in_lanes, out_lanes, bits, signed)
DWC_CASES = [(4, 1, 8, False), (1, 4, 8, False), (6, 2, 5, True), (2, 6, 4, True)]


@pytest.mark.parametrize("in_lanes,out_lanes,bits,is_signed", DWC_CASES)
def test_width_converter(tmp_path, in_lanes, out_lanes, bits, is_signed):
    run_dwc(tmp_path, in_lanes, out_lanes, bits, is_signed)


@pytest.mark.skipif(not icarus_available(), reason="iverilog not on PATH")
@pytest.mark.parametrize("in_lanes,out_lanes", [(4, 1), (1, 4)])
def test_width_converter_icarus(tmp_path, in_lanes, out_lanes):
    run_dwc(tmp_path, in_lanes, out_lanes, 8, False, simulator="icarus")


@pytest.mark.slow
@pytest.mark.parametrize("in_lanes,out_lanes,bits,is_signed", [(8, 1, 4, False),
                                                                (1, 16, 2, True)])
def test_width_converter_slow(tmp_path, in_lanes, out_lanes, bits, is_signed):
    run_dwc(tmp_path, in_lanes, out_lanes, bits, is_signed)


def run_dwc(tmp_path, in_lanes, out_lanes, bits, is_signed, simulator="verilator"):
    rng = np.random.default_rng(in_lanes * 10 + out_lanes)
    dut = StreamWidthConverter(in_lanes=in_lanes, out_lanes=out_lanes, bits=bits,
                               signed=is_signed)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)
    n = max(in_lanes, out_lanes) * 120
    vals = rng.integers(lo, hi + 1, size=n)
    vals[:2] = lo, hi
    in_words = [pack_lanes(b, bits) for b in vals.reshape(-1, in_lanes)]
    out_words = [pack_lanes(b, bits) for b in vals.reshape(-1, out_lanes)]
    runs = [
        {"stall": 0.0, "backpressure": 0.0, "seed": 0},
        {"stall": 0.3, "backpressure": 0.3, "seed": 1},
        {"stall": 0.0, "backpressure": 0.7, "seed": 2},
        {"stall": 0.7, "backpressure": 0.0, "seed": 3},
    ]
    name = f"dwc_{in_lanes}to{out_lanes}"
    res = run_tb(dut, name, "dwc", in_words, out_words, runs, tmp_path, simulator)
    check_free_run(name, res, dut.expected_cycles(len(in_words)))


def test_width_converter_wire():
    """Equal lane counts: a wire (no clock, so checked with Amaranth's simulator)."""
    from amaranth.sim import Simulator

    dut = StreamWidthConverter(in_lanes=3, out_lanes=3, bits=8)

    async def bench(ctx):
        for valid, ready, word in [(1, 1, 0x123456), (0, 1, 0xABCDEF), (1, 0, 0x0F0F0F)]:
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.payload.as_value(), word)
            assert ctx.get(dut.o.valid) == valid
            assert ctx.get(dut.i.ready) == ready
            assert ctx.get(dut.o.payload.as_value()) == word

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert dut.expected_cycles(10) == 10


def test_stream_utils_convert():
    assert "module dup" in verilog.convert(StreamDuplicator(unsigned(5)), name="dup")
    for i, o in [(4, 4), (4, 2), (2, 4)]:
        dwc = StreamWidthConverter(in_lanes=i, out_lanes=o, bits=8)
        assert "module dwc" in verilog.convert(dwc, name="dwc")
    with pytest.raises(ValueError, match="divide"):
        StreamWidthConverter(in_lanes=4, out_lanes=6, bits=8)
    assert StreamWidthConverter(in_lanes=4, out_lanes=1, bits=8).expected_cycles(10) == 41
    assert StreamWidthConverter(in_lanes=1, out_lanes=4, bits=8).expected_cycles(40) == 41
