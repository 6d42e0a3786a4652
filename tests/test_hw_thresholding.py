"""Thresholding RTL (hw/thresholding.py) against hw/golden.thresholding, and the golden function
against qonnx's MultiThreshold, with stalls and back-pressure; exact cycle counts; refusals;
the HWGraph op through hw/registry, sw/execute, sw/folding and sw/estimate."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator
from qonnx.custom_op.general.multithreshold import multithreshold

from hw.registry import build_layer, expected_layer_cycles, layer_ports, threshold_memories
from hw.thresholding import Thresholding
from sim.runner import icarus_available
from sim.streams import pack_lanes
from sim.tb_compute import DEFAULT_RUNS, run_compute_tb
from hw import golden
from hw.ops.memory import bram18_for, lutram_luts_for
from sw.compiler.estimate import analytic_cycles, layer_resources
from sw.compiler.execute import run_graph
from sw.compiler.folding import apply_folding
from hw.graph import HWGraph, HWLayer, TensorInfo

# instances built only to read their attributes (or refused) are never elaborated
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
ICARUS = pytest.param("icarus", marks=pytest.mark.skipif(not icarus_available(),
                                                         reason="iverilog not on PATH"))


def in_range(bits, is_signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)


def make_case(rng, *, c, n, pixels, in_bits, in_signed, shared=False):
    """Sorted random thresholds that reach past both ends of the input range (clipped by the
    hardware), with repeated values; inputs over the whole range, extremes included, and
    inputs equal to thresholds (FINN's ``>=``)."""
    lo, hi = in_range(in_bits, in_signed)
    rows = 1 if shared else c
    t = np.sort(rng.integers(lo - 5, hi + 6, size=(rows, n)), axis=1)
    if n > 2:
        t[:, 1] = t[:, 0]  # a repeated threshold
    x = rng.integers(lo, hi + 1, size=(pixels, c))
    x[0, :], x[1, :] = lo, hi
    k = rng.integers(0, n, size=(pixels - 2, c))
    hit = np.clip(t[np.zeros_like(k) if shared else np.arange(c)[None, :], k], lo, hi)
    x[2:][::3] = hit[::3]  # every third pixel sits exactly on a threshold
    return t.astype(np.int64), x


def _amaranth_sim(dut, x, *, stall=0.0, backpressure=0.0, seed=0):
    """Amaranth's simulator with random input stalls and output back-pressure.

    Returns (output beats, cycles from the first accepted input beat to the last accepted
    output beat, both inclusive: ``sim/tb_compute.py``'s count)."""
    beats = x.reshape(-1, dut.lanes)
    rng = np.random.default_rng(seed)
    got, span = [], {}

    async def tb(ctx):
        k, cyc = 0, 0
        while len(got) < len(beats):
            offer = k < len(beats) and rng.random() >= stall
            ctx.set(dut.i.valid, offer)
            if k < len(beats):
                ctx.set(dut.i.payload, [int(v) for v in beats[k]])
            ctx.set(dut.o.ready, rng.random() >= backpressure)
            _, _, iv, ir, ov, orr, op = await ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload)
            cyc += 1
            if iv and ir:
                k += 1
                span.setdefault("first", cyc)
            if ov and orr:
                got.append([int(v) for v in op])
                span["last"] = cyc
            assert cyc < 50 * len(beats) + 200, "Thresholding stopped producing output"
        # nothing beyond the expected beats
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        for _ in range(dut.latency + 8):
            _, _, ov = await ctx.tick().sample(dut.o.valid)
            assert not ov, "output beat beyond the expected ones"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return np.array(got), span["last"] - span["first"] + 1


# ---- golden function against qonnx --------------------------------------------------------

@pytest.mark.parametrize("in_bits,in_signed,n,shared,out_bias", [
    (12, True, 15, False, 0), (8, False, 3, False, -2), (16, True, 255, True, -128),
    (4, False, 1, False, 0), (10, True, 6, False, 0),
])
def test_golden_equals_qonnx_multithreshold(in_bits, in_signed, n, shared, out_bias):
    rng = np.random.default_rng(in_bits * 31 + n)
    t, x = make_case(rng, c=6, n=n, pixels=40, in_bits=in_bits, in_signed=in_signed,
                     shared=shared)
    x = x.reshape(5, 8, 6)  # [H, W, C]
    got = golden.thresholding(x, t, out_bias)
    ref = multithreshold(x[None].astype(np.float64), t.astype(np.float64), out_bias=out_bias,
                         channels_last=True)[0]
    np.testing.assert_array_equal(got, ref.astype(np.int64))
    assert out_bias <= got.min() < got.max() <= out_bias + n


def test_golden_counts_equal_thresholds():
    # >= (FINN), not >: an input equal to a threshold counts it
    t = np.array([[0, 3, 3, 7]])
    x = np.array([[-1], [0], [2], [3], [6], [7], [100]])
    assert golden.thresholding(x, t).ravel().tolist() == [0, 1, 1, 3, 3, 4, 4]
    with pytest.raises(golden.GoldenModelError, match=r"\[C, N\] or \[1, N\]"):
        golden.thresholding(np.zeros((2, 3)), np.zeros((2, 4)))


# ---- RTL in Amaranth's simulator: many foldings and types, stalls, exact cycles -------------

CASES = {
    # name: c, pe, in_bits, in_signed, out_bits, out_signed, out_bias, n, shared
    "u1_pe1": (3, 1, 8, False, 1, False, 0, 1, False),
    "s2_pe2_signed_out": (4, 2, 10, True, 2, True, -2, 3, False),
    "u4_pe3_acc": (6, 3, 14, True, 4, False, 0, 15, False),
    "u4_pe4_fewer_thresholds": (8, 4, 9, True, 4, False, 0, 9, False),
    "s8_pe2_shared": (4, 2, 16, True, 8, True, -128, 255, True),
    "u8_pe1_unsigned_in": (2, 1, 8, False, 8, False, 0, 255, False),
    "u4_full_pe_shared": (4, 4, 6, False, 4, False, 0, 15, True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_thresholding_amaranth_sim(name):
    c, pe, ib, isg, ob, osg, bias, n, shared = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    pixels = 24
    t, x = make_case(rng, c=c, n=n, pixels=pixels, in_bits=ib, in_signed=isg, shared=shared)
    dut = Thresholding(thresholds=t, channels=c, lanes=pe, in_bits=ib, in_signed=isg,
                       out_bits=ob, out_signed=osg, out_bias=bias)
    assert dut.stages == n.bit_length() and dut.thr_bits <= ib + 1
    exp = golden.thresholding(x, t, bias)
    assert len(np.unique(exp)) >= min(n + 1, 3)  # the case exercises several output values
    for k, (stall, bp) in enumerate([(0.3, 0.3), (0.05, 0.75), (0.0, 0.0)]):
        got, cycles = _amaranth_sim(dut, x, stall=stall, backpressure=bp, seed=k)
        np.testing.assert_array_equal(got.reshape(exp.shape), exp, err_msg=f"run {k}")
    assert cycles == dut.expected_cycles(pixels) == c // pe * pixels + n.bit_length() + 2


def test_thresholding_every_input_value():
    # every 8-bit signed input against thresholds at and beyond both ends of the range
    t = np.array([[-300, -128, -128, -1, 0, 5, 127, 128, 129, 400],
                  [-127, -50, -49, -48, 0, 1, 2, 126, 127, 127]])
    x = np.array([list(range(-128, 128))] * 2).T
    dut = Thresholding(thresholds=t, channels=2, lanes=2, in_bits=8, in_signed=True,
                       out_bits=4, out_signed=False, out_bias=0)
    assert dut.thr_bits == 9  # clipped to [-128, 128]: int9, FINN's RoundAndClipThresholds type
    got, _ = _amaranth_sim(dut, x)
    np.testing.assert_array_equal(got.reshape(x.shape), golden.thresholding(x, t))


# ---- RTL in Verilator / Icarus through cocotb (the Verilog the top level instantiates) ------

def run_rtl(tmp_path, name, *, c, pe, in_bits, in_signed, out_bits, out_signed, out_bias, n,
            shared, pixels, seed, simulator="verilator"):
    rng = np.random.default_rng(seed)
    t, x = make_case(rng, c=c, n=n, pixels=pixels, in_bits=in_bits, in_signed=in_signed,
                     shared=shared)
    dut = Thresholding(thresholds=t, channels=c, lanes=pe, in_bits=in_bits,
                       in_signed=in_signed, out_bits=out_bits, out_signed=out_signed,
                       out_bias=out_bias)
    expected = golden.thresholding(x, t, out_bias)
    words = [pack_lanes(b, in_bits) for b in x.reshape(-1, pe)]
    res = run_compute_tb(dut, name, words, expected.reshape(-1, pe), runs=list(DEFAULT_RUNS),
                         tmp_path=tmp_path, seed=seed, simulator=simulator)
    for r, run in zip(res, DEFAULT_RUNS):
        if run["stall"] == 0 and run["backpressure"] == 0:
            print(f"{name}: measured {r['cycles']} expected {dut.expected_cycles(pixels)} cycles")
            assert r["cycles"] == dut.expected_cycles(pixels)
    return dut


@pytest.mark.parametrize("simulator", ["verilator", ICARUS])
def test_thresholding_rtl_u4_pe2(tmp_path, simulator):
    # MVAU accumulators (signed 12-bit) to a uint4 activation, 15 thresholds per channel
    run_rtl(tmp_path, "thr_u4", c=6, pe=2, in_bits=12, in_signed=True, out_bits=4,
            out_signed=False, out_bias=0, n=15, shared=False, pixels=30, seed=41,
            simulator=simulator)


def test_thresholding_rtl_s8_shared_pe4(tmp_path):
    # int8 output (out_bias -128), one shared set of 255 thresholds, signed 16-bit input
    dut = run_rtl(tmp_path, "thr_s8", c=8, pe=4, in_bits=16, in_signed=True, out_bits=8,
                  out_signed=True, out_bias=-128, n=255, shared=True, pixels=20, seed=42)
    assert dut.stages == 8


# ---- refusals -----------------------------------------------------------------------------

def _make(t, **kw):
    args = dict(thresholds=np.asarray(t), channels=2, lanes=1, in_bits=8, in_signed=True,
                out_bits=2, out_signed=False, out_bias=0) | kw
    return Thresholding(**args)


@pytest.mark.parametrize("t,kw,msg", [
    ([[0, 2, 1], [0, 1, 2]], {}, r"row 0 is not sorted ascending: T\[0, 1\] = 2 > T\[0, 2\] = 1"),
    ([[0, 1, 2, 3], [0, 1, 2, 3]], {}, r"outputs 0\.\.4 .* do not fit uint2 .* at most 3 thresholds"),
    ([[0, 1, 2]] * 3, {"channels": 3, "lanes": 2}, r"C % PE == 0 broken: C=3, PE=2"),
    ([[0.5, 1, 2], [0, 1, 2]], {}, r"must be integers .*RoundAndClipThresholds"),
    ([[0, 1, 2]] * 3, {}, r"thresholds have 3 rows, expected 2"),
    ([0, 1, 2], {}, r"\[C, N\] or \[1, N\] array with N >= 1"),
    (np.zeros((2, 0)), {}, r"N >= 1"),
    ([[0, 1, 2], [0, 1, 2]], {"out_bias": -2}, r"outputs -2\.\.1 .* do not fit uint2"),
    ([[0, 1, 2], [0, 1, 2]], {"ram_style": "bram"}, r"ram_style must be one of"),
])
def test_thresholding_refusals(t, kw, msg):
    with pytest.raises(ValueError, match=msg) as exc:
        _make(t, **kw)
    assert str(exc.value).startswith("Thresholding: ") and "\n" not in str(exc.value)


def test_thresholding_accepts_clipped_and_integer_float_thresholds():
    # float container with integer values (FINN's after RoundAndClipThresholds), far outside
    # the input range: clipped, like FINN, to [in_min, in_max + 1]
    d = _make(np.array([[-1e6, 1.0, 1e6], [0.0, 0.0, 0.0]]), out_signed=True, out_bits=3,
              out_bias=-4)
    assert d.table[0].tolist() == [-128, 1, 128] and d.thr_bits == 9
    d = _make([[1, 2, 3], [1, 2, 3]], in_signed=False)
    assert d.thr_bits == 2 and d.stages == 2
    assert "module thr" in verilog.convert(d, name="thr")


# ---- the HWGraph op: registry, execute, folding, estimate ---------------------------------

def threshold_graph(t, *, c=8, pixels=6, in_bits=12, out_bits=4, out_bias=0, out_signed=False,
                    pe=2):
    ts = {
        "acc": TensorInfo("acc", (2, 3, c), in_bits, True, kind="acc", lanes=pe),
        "y": TensorInfo("y", (2, 3, c), out_bits, out_signed, scale=0.5, lanes=pe),
    }
    layer = HWLayer("thr0", "Thresholding", ["acc"], ["y"],
                    attrs={"channels": c, "pixels": pixels, "out_bias": out_bias},
                    params={"thresholds": np.asarray(t, dtype=np.int64)},
                    source_node="MultiThreshold_0")
    return HWGraph(layers=[layer], tensors=ts, input="acc", output="y"), layer


def test_registry_builds_thresholding_layer():
    rng = np.random.default_rng(7)
    t = np.sort(rng.integers(-2048, 2048, size=(8, 15)), axis=1)
    g, layer = threshold_graph(t)
    layer.folding = {"ram_style": "distributed"}
    comp = build_layer(g, layer)
    comp._MustUse__silence = True
    assert isinstance(comp, Thresholding)
    assert (comp.lanes, comp.folds, comp.stages, comp.out_bits, comp.ram_style) == \
        (2, 4, 4, 4, "distributed")
    assert layer_ports(layer, comp) == ([comp.i], [comp.o])
    assert expected_layer_cycles(g, layer, comp) == 4 * 6 + 4 + 2
    assert analytic_cycles(g, layer) == 4 * 6
    x = rng.integers(-2048, 2048, size=(2, 3, 8))
    out = run_graph(g, x)["y"]
    np.testing.assert_array_equal(out, golden.thresholding(x, t, 0))
    # JSON round trip keeps the op
    g2 = HWGraph.from_json(g.to_json())
    np.testing.assert_array_equal(run_graph(g2, x)["y"], out)


def test_folding_and_estimate_of_thresholding():
    t = np.tile(np.arange(-7, 8), (8, 1))  # 15 thresholds per channel, 12-bit signed input
    g, layer = threshold_graph(t, pe=4)
    g.tensors["y"].lanes = 1  # folding gives the output its input's lanes (the Requant rule)
    fg = apply_folding(g, {"thr0": {"ram_style": "block"}})
    fl = fg.layer("thr0")
    assert fl.folding == {"ram_style": "block"} and fg.tensors["y"].lanes == 4
    geo = threshold_memories(fg, fl)
    # per lane, stage s: (C/PE) * 2**s words of thr_bits; C/PE = 2
    assert geo["stages"] == 4 and geo["thr_bits"] == 4  # clipped range [-7, 7]: int4
    assert geo["memories"] == [(2 << s, 4) for s in range(4) for _ in range(4)]
    r = layer_resources(fg, fl, mem_style="lutram")
    assert r["weight_bits"] == 8 * 15 * 4  # C * (2**M - 1) * thr_bits
    assert r["lutram_luts"] == sum(4 * lutram_luts_for(2 << s, 4) for s in range(4)) == 64
    assert r["bram18"] == 0 and r["luts"] == 50 + 4 * 4 * 12 + 64
    r = layer_resources(fg, fl, mem_style="bram")
    assert r["bram18"] == sum(4 * bram18_for(2 << s, 4) for s in range(4)) == 16
    # shared thresholds: each lane keeps its copy, stage 0 is a constant
    g, layer = threshold_graph(t[:1], out_bias=-8, out_signed=True)
    geo = threshold_memories(g, layer)
    assert geo["memories"] == [(1 << s, 4) for s in range(1, 4) for _ in range(2)]
    r = layer_resources(g, layer)
    assert r["weight_bits"] == 2 * 15 * 4 and r["luts"] == 50 + 2 * (4 * 12 + 4) + 2 * 3 * 4


def test_mvau_thresholding_accelerator_rtl_bit_exact_under_stalls():
    """MVAU -> Thresholding as a whole accelerator (hw/top.py, AXI-Stream, inter-layer FIFOs)
    after sw.compiler.folding: a 1x1 conv whose activation is a per-channel threshold set (FINN's
    MVAU + Thresholding), bit-exact against run_graph under 20% stalls and back-pressure."""
    from hw.mvau import accumulator_bits
    from sim.rtlsim import simulate

    rng = np.random.default_rng(11)
    w = rng.integers(-8, 8, size=(8, 6))
    acc = accumulator_bits(w, 8, False)
    t = np.sort(rng.integers(-600, 600, size=(8, 15)), axis=1)
    ts = {
        "x": TensorInfo("x", (4, 4, 6), 8, False, scale=1.0),
        "acc": TensorInfo("acc", (4, 4, 8), acc, True, kind="acc"),
        "y": TensorInfo("y", (4, 4, 8), 4, False, scale=0.25),
    }
    layers = [
        HWLayer("MVAU_0", "MVAU", ["x"], ["acc"],
                attrs=dict(mh=8, mw=6, pixels=16, weight_bits=4, in_bits=8, in_signed=False,
                           acc_bits=acc), params={"weights": w}),
        HWLayer("Thresholding_0", "Thresholding", ["acc"], ["y"],
                attrs={"channels": 8, "pixels": 16, "out_bias": 0}, params={"thresholds": t}),
    ]
    g = apply_folding(HWGraph(layers, ts, "x", "y"),
                      {"MVAU_0": {"PE": 4, "SIMD": 3}, "Thresholding_0": {"ram_style": "distributed"}})
    assert g.tensors["y"].lanes == 4 and g.layer("Thresholding_0").folding["ram_style"] == "distributed"
    frames = [rng.integers(0, 256, size=(4, 4, 6)) for _ in range(2)]
    y = run_graph(g, frames[0])["y"]
    assert len(np.unique(y)) > 8  # the thresholds span the accumulators' values
    run = simulate(g, frames, stall=0.2, backpressure=0.2)
    assert run.mismatches == [0, 0]
    np.testing.assert_array_equal(run.outputs[0], y)


def test_autofold_folds_around_a_thresholding_layer():
    """sw.compiler.autofold: the Thresholding takes its MVAU's PE (no PE of its own, like Requant), its
    cycles come from the registry (the component's model) and stay below the MVAU's."""
    from sw.compiler.autofold import choose_folding
    from sw.compiler.boards import get_board
    from sw.compiler.estimate import estimate

    rng = np.random.default_rng(3)
    ts = {
        "x": TensorInfo("x", (8, 8, 16), 8, False, scale=1.0),
        "acc": TensorInfo("acc", (8, 8, 32), 16, True, kind="acc"),
        "y": TensorInfo("y", (8, 8, 32), 4, False, scale=0.25),
    }
    layers = [
        HWLayer("MVAU_0", "MVAU", ["x"], ["acc"],
                attrs=dict(mh=32, mw=16, pixels=64, weight_bits=4, in_bits=8, in_signed=False,
                           acc_bits=16), params={"weights": rng.integers(-8, 8, size=(32, 16))}),
        HWLayer("Thresholding_0", "Thresholding", ["acc"], ["y"],
                attrs={"channels": 32, "pixels": 64, "out_bias": 0},
                params={"thresholds": np.sort(rng.integers(-3000, 3000, size=(32, 15)), axis=1)}),
    ]
    g = HWGraph(layers, ts, "x", "y")
    cfg = choose_folding(g, get_board("ultra96v2"), target_fps=200_000, clock_mhz=200)
    fg = apply_folding(g, cfg)
    pe = fg.layer("MVAU_0").folding["PE"]
    assert fg.tensors["y"].lanes == pe > 1 and "PE" not in fg.layer("Thresholding_0").folding
    est = {e.name: e for e in estimate(fg)}
    thr = est["Thresholding_0"]
    assert thr.cycle_model == "registry"
    assert thr.cycles == 32 // pe * 64 + 4 + 2 <= est["MVAU_0"].cycles
    assert thr.weight_bits == 32 * 15 * 13  # thresholds clipped to [-3000, 3000]: int13
