# amaranth: UnusedElaboratable=no
"""Concat, ChannelSplit, ChannelShuffle and Add (hw/channel_ops.py) against hw/golden.py.

Several frames back to back, every output beat compared bit for bit, in runs with random
input stalls (independent per input) and output back-pressure (independent per output);
the stall-free run's cycles are compared with ``expected_cycles()``. The CI cases run on
Verilator; a tiny case of each also on Icarus.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog

from hw.channel_ops import Add, ChannelShuffle, ChannelSplit, Concat
from sim.runner import icarus_available
from sim.streams import pack_lanes
from sim.tb_multistream import FREE, STALLS, free_run_cycles, run_multistream
from hw import golden

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
ICARUS = pytest.param("icarus", marks=pytest.mark.skipif(not icarus_available(),
                                                         reason="iverilog not on PATH"))


def beats(x: np.ndarray, lanes: int, bits: int) -> list[int]:
    return [pack_lanes(b, bits) for b in np.asarray(x).reshape(-1, lanes)]


def frames_of(rng, n, shape, bits=8, is_signed=False):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)
    xs = [rng.integers(lo, hi + 1, size=shape) for _ in range(n)]
    xs[0].flat[0], xs[0].flat[-1] = lo, hi
    return xs


def check_cycles(name, results, expected):
    for got in free_run_cycles(results):
        print(f"{name}: measured {got} cycles, expected {expected}")
        assert abs(got - expected) <= 0.05 * expected
        assert got == expected


# ---- Concat ---------------------------------------------------------------------------------

def run_concat(tmp_path, name, *, hw, chans, lanes, bits=8, is_signed=False, frames=2, seed=0,
               runs=None, simulator="verilator"):
    rng = np.random.default_rng(seed)
    dut = Concat(channels=chans, lanes=lanes, bits=bits, signed=is_signed)
    ins = [frames_of(rng, frames, (*hw, c), bits, is_signed) for c in chans]
    exp = [golden.concat([x[f] for x in ins]) for f in range(frames)]
    res = run_multistream(
        dut, name, {f"i{k}": [w for x in xs for w in beats(x, lanes, bits)]
                    for k, xs in enumerate(ins)},
        {"o": [w for e in exp for w in beats(e, lanes, bits)]},
        {"o": exp[0].size // lanes}, tmp_path=tmp_path, runs=runs, simulator=simulator)
    check_cycles(name, res, dut.expected_cycles(hw[0] * hw[1]))


@pytest.mark.parametrize("simulator", ["verilator", ICARUS])
def test_concat(tmp_path, simulator):
    run_concat(tmp_path, "concat", hw=(3, 4), chans=[2, 6], lanes=2, seed=1, simulator=simulator)


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    dict(hw=(4, 5), chans=[4, 4], lanes=4, is_signed=True),
    dict(hw=(3, 3), chans=[1, 3], lanes=1),
    dict(hw=(2, 6), chans=[6, 3, 9], lanes=3),
], ids=["halves_l4", "l1", "three_inputs"])
def test_concat_slow(tmp_path, case):
    run_concat(tmp_path, "concat_slow", seed=2, frames=3, **case)


# ---- ChannelSplit ----------------------------------------------------------------------------

def run_split(tmp_path, name, *, hw, sizes, lanes, bits=8, is_signed=False, frames=2, seed=0,
              runs=None, simulator="verilator"):
    rng = np.random.default_rng(seed)
    dut = ChannelSplit(sizes=sizes, lanes=lanes, bits=bits, signed=is_signed)
    xs = frames_of(rng, frames, (*hw, sum(sizes)), bits, is_signed)
    parts = [golden.channel_split(x, sizes) for x in xs]
    outs = {f"o{k}": [w for p in parts for w in beats(p[k], lanes, bits)]
            for k in range(len(sizes))}
    res = run_multistream(
        dut, name, {"i": [w for x in xs for w in beats(x, lanes, bits)]}, outs,
        {f"o{k}": hw[0] * hw[1] * s // lanes for k, s in enumerate(sizes)},
        tmp_path=tmp_path, runs=runs, simulator=simulator)
    check_cycles(name, res, dut.expected_cycles(hw[0] * hw[1]))


@pytest.mark.parametrize("simulator", ["verilator", ICARUS])
def test_split(tmp_path, simulator):
    run_split(tmp_path, "csplit", hw=(3, 4), sizes=[4, 2], lanes=2, seed=3, simulator=simulator)


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    dict(hw=(4, 4), sizes=[8, 8], lanes=4, is_signed=True),
    dict(hw=(3, 5), sizes=[1, 2], lanes=1),
    dict(hw=(2, 3), sizes=[3, 6, 3], lanes=3),
], ids=["halves_l4", "l1", "three_outputs"])
def test_split_slow(tmp_path, case):
    run_split(tmp_path, "csplit_slow", seed=4, frames=3, **case)


# ---- ChannelShuffle --------------------------------------------------------------------------

def run_shuffle(tmp_path, name, *, hw, c, groups, lanes, bits=8, is_signed=False, frames=2,
                seed=0, runs=None, simulator="verilator", ram_style="auto"):
    rng = np.random.default_rng(seed)
    dut = ChannelShuffle(groups=groups, channels=c, lanes=lanes, bits=bits, signed=is_signed,
                         ram_style=ram_style)
    xs = frames_of(rng, frames, (*hw, c), bits, is_signed)
    exp = [golden.channel_shuffle(x, groups) for x in xs]
    res = run_multistream(
        dut, name, {"i": [w for x in xs for w in beats(x, lanes, bits)]},
        {"o": [w for e in exp for w in beats(e, lanes, bits)]},
        {"o": hw[0] * hw[1] * c // lanes}, tmp_path=tmp_path, runs=runs, simulator=simulator)
    check_cycles(name, res, dut.expected_cycles(hw[0] * hw[1]))


@pytest.mark.parametrize("simulator", ["verilator", ICARUS])
@pytest.mark.parametrize("case", [
    dict(c=8, groups=2, lanes=2),  # both lanes of every beat in one bank: 2 read ports
    dict(c=9, groups=3, lanes=1),  # PE 1, odd C/PE
    dict(c=12, groups=2, lanes=4),  # PE 4 does not divide C/g = 6; C/PE = 3
], ids=["c8_l2", "c9_g3_l1", "c12_l4_odd"])
def test_shuffle(tmp_path, simulator, case):
    run_shuffle(tmp_path, "cshuf", hw=(3, 4), seed=5, simulator=simulator, **case)


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    dict(hw=(4, 4), c=12, groups=3, lanes=4, is_signed=True),
    dict(hw=(3, 5), c=6, groups=2, lanes=1),
    dict(hw=(2, 3), c=8, groups=4, lanes=8),  # one beat per pixel
    dict(hw=(3, 3), c=16, groups=2, lanes=2),
    dict(hw=(3, 3), c=6, groups=2, lanes=2),  # C/PE = 3, C/g = 3 odd: 1 port, 2-way crossbar
    dict(hw=(2, 3), c=10, groups=2, lanes=2, bits=4),  # C/PE = 5
    dict(hw=(2, 2), c=116, groups=2, lanes=4, ram_style="distributed"),  # C/PE = 29
    dict(hw=(2, 2), c=232, groups=2, lanes=1, ram_style="block"),  # the compiler's PE
    dict(hw=(3, 3), c=12, groups=2, lanes=3),  # PE not a power of two
    dict(hw=(3, 3), c=9, groups=3, lanes=3, is_signed=True),  # 3 read ports per bank
    dict(hw=(2, 3), c=4, groups=2, lanes=4),  # one beat per pixel, g = 2
], ids=["g3_l4", "l1", "one_beat", "c16", "c6_l2", "c10_l2_u4", "c116_l4", "c232_l1", "l3",
        "g3_l3", "one_beat_g2"])
def test_shuffle_slow(tmp_path, case):
    run_shuffle(tmp_path, "cshuf_slow", seed=6, frames=3, **case)


# ---- Add -----------------------------------------------------------------------------------

def run_add(tmp_path, name, *, hw, c, lanes, in_bits=8, in_signed=False, out_bits=8,
            out_signed=None, frames=2, seed=0, runs=None, simulator="verilator"):
    rng = np.random.default_rng(seed)
    out_signed = in_signed if out_signed is None else out_signed
    dut = Add(channels=c, lanes=lanes, in_bits=in_bits, in_signed=in_signed, out_bits=out_bits,
              out_signed=out_signed)
    a = frames_of(rng, frames, (*hw, c), in_bits, in_signed)
    b = frames_of(rng, frames, (*hw, c), in_bits, in_signed)
    exp = [golden.add(x, y, out_bits, out_signed) for x, y in zip(a, b)]
    lo, hi = (-(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1) if out_signed else (0, (1 << out_bits) - 1)
    allv = np.concatenate([e.ravel() for e in exp])
    assert (allv == hi).any() and ((allv > lo) & (allv < hi)).any()  # saturates and passes
    res = run_multistream(
        dut, name, {"i0": [w for x in a for w in beats(x, lanes, in_bits)],
                    "i1": [w for x in b for w in beats(x, lanes, in_bits)]},
        {"o": [w for e in exp for w in beats(e, lanes, out_bits)]},
        {"o": hw[0] * hw[1] * c // lanes}, tmp_path=tmp_path, runs=runs, simulator=simulator)
    check_cycles(name, res, dut.expected_cycles(hw[0] * hw[1]))


@pytest.mark.parametrize("simulator", ["verilator", ICARUS])
def test_add(tmp_path, simulator):
    run_add(tmp_path, "add", hw=(3, 4), c=4, lanes=2, in_signed=True, seed=7,
            simulator=simulator)


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    dict(hw=(4, 4), c=8, lanes=4),
    dict(hw=(3, 5), c=3, lanes=1, in_bits=4, out_bits=4),
    dict(hw=(3, 3), c=4, lanes=4, in_signed=True, out_bits=7, out_signed=False),
    dict(hw=(3, 4), c=2, lanes=2, in_signed=True, out_bits=6),
], ids=["uint8_l4", "u4", "signed_to_u7", "s8_to_s6"])
def test_add_slow(tmp_path, case):
    run_add(tmp_path, "add_slow", seed=8, frames=3, **case)


# ---- rules and conversion --------------------------------------------------------------------

def test_channel_ops_rules():
    with pytest.raises(ValueError, match="multiple of lanes"):
        Concat(channels=[2, 3], lanes=2)
    with pytest.raises(ValueError, match="at least 2"):
        Concat(channels=[4], lanes=2)
    with pytest.raises(ValueError, match="multiple of lanes"):
        ChannelSplit(sizes=[4, 1], lanes=2)
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(groups=3, channels=8, lanes=2)
    with pytest.raises(ValueError, match="lanes"):
        ChannelShuffle(groups=2, channels=6, lanes=4)
    with pytest.raises(ValueError, match="lanes"):
        Add(channels=6, lanes=4)
    assert Concat(channels=[2, 6], lanes=2).expected_cycles(10) == 40
    assert ChannelSplit(sizes=[4, 2], lanes=2).expected_cycles(10) == 30
    assert ChannelShuffle(groups=2, channels=8, lanes=2).expected_cycles(10) == 44
    assert Add(channels=4, lanes=2).expected_cycles(10) == 22
    sh = ChannelShuffle(groups=2, channels=8, lanes=2)
    assert [sh.source_channel(o) for o in range(8)] == [0, 4, 1, 5, 2, 6, 3, 7]
    with pytest.raises(ValueError, match=r"ChannelShuffle: ram_style must be one of"):
        ChannelShuffle(groups=2, channels=8, lanes=2, ram_style="registers")


def test_shuffle_banks_and_read_ports():
    # bank = channel % PE, row = channel // PE; (bank, port, row) per output lane and beat
    sched = ChannelShuffle.schedule(groups=2, channels=8, lanes=2)
    assert sched == [[(0, 0, 0), (0, 1, 2)], [(1, 0, 0), (1, 1, 2)],
                     [(0, 0, 1), (0, 1, 3)], [(1, 0, 1), (1, 1, 3)]]
    assert ChannelShuffle.read_ports(groups=2, channels=8, lanes=2) == [2, 2]
    assert ChannelShuffle.crossbar(groups=2, channels=8, lanes=2) == {
        "lane_inputs": [2, 2], "port_inputs": [1, 1, 1, 1]}
    # PE 1: one bank, one port, no crossbar (the detector's shuffles)
    assert ChannelShuffle.read_ports(groups=2, channels=232, lanes=1) == [1]
    assert ChannelShuffle.crossbar(groups=2, channels=232, lanes=1) == {
        "lane_inputs": [1], "port_inputs": [1]}
    assert ChannelShuffle.buffer_memory(channels=232, lanes=1) == (464, 8)
    # C/g = 58 is 2 mod PE 4: the two groups of a beat fall in disjoint banks
    assert ChannelShuffle.read_ports(groups=2, channels=116, lanes=4) == [1, 1, 1, 1]
    assert ChannelShuffle.buffer_memory(channels=116, lanes=4, bits=4) == (58, 4)
    # at most g ports per bank (lanes of one group read consecutive channels)
    assert ChannelShuffle.read_ports(groups=3, channels=12, lanes=4) == [3, 2, 2, 3]
    assert ChannelShuffle.read_ports(groups=3, channels=9, lanes=3) == [3, 3, 3]
    assert ChannelShuffle.read_ports(groups=4, channels=8, lanes=8) == [1] * 8
    for g, c, lanes in [(2, 8, 2), (2, 6, 2), (2, 116, 4), (3, 12, 4), (2, 12, 3)]:
        sched = ChannelShuffle.schedule(groups=g, channels=c, lanes=lanes)
        sh = ChannelShuffle(groups=g, channels=c, lanes=lanes)
        sh._MustUse__silence = True
        got = {(bank, row) for beat in sched for bank, _, row in beat}
        assert len(got) == c  # every channel read exactly once per pixel
        for b, beat in enumerate(sched):
            for l, (bank, _, row) in enumerate(beat):
                assert row * lanes + bank == sh.source_channel(b * lanes + l)


def test_channel_ops_convert():
    for name, dut in [("cc", Concat(channels=[2, 4], lanes=2)),
                      ("cs", ChannelSplit(sizes=[2, 4], lanes=2)),
                      ("sh", ChannelShuffle(groups=2, channels=4, lanes=2)),
                      ("ad", Add(channels=4, lanes=2, in_signed=True))]:
        assert f"module {name}" in verilog.convert(dut, name=name)
