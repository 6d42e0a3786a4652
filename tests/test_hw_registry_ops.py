# amaranth: UnusedElaboratable=no
"""hw/registry.py entries of the detector's extra layers: component, ports, expected cycles."""

from __future__ import annotations

import pytest

from hw.channel_ops import Add, ChannelShuffle, ChannelSplit, Concat
from hw.pool import MaxPool
from hw.registry import build_layer, expected_layer_cycles, layer_ports
from hw.upsample import Upsample
from hw.graph import HWGraph, HWLayer, TensorInfo

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def build(graph, layer):
    comp = build_layer(graph, layer)
    comp._MustUse__silence = True  # built for its attributes only, never elaborated
    return comp


def graph_of(layer, tensors):
    ts = {t.name: t for t in tensors}
    return HWGraph(layers=[layer], tensors=ts, input=layer.inputs[0], output=layer.outputs[0])


def feat(name, shape, lanes, bits=8, signed=False):
    return TensorInfo(name=name, shape=shape, bits=bits, signed=signed, lanes=lanes)


def test_maxpool_entry():
    win = TensorInfo(name="w", shape=(4, 4, 9 * 8), bits=8, signed=False, kind="dwwindow",
                     lanes=4)
    layer = HWLayer("mp", "MaxPool", ["w"], ["y"], attrs={"kernel": 3, "channels": 8})
    g = graph_of(layer, [win, feat("y", (4, 4, 8), 4)])
    comp = build(g, layer)
    assert isinstance(comp, MaxPool) and (comp.lanes, comp.taps, comp.folds) == (4, 9, 2)
    assert layer_ports(layer, comp) == ([comp.i], [comp.o])
    assert expected_layer_cycles(g, layer, comp) == 16 * 9 * 2 + 1
    win.signed = True
    with pytest.raises(ValueError, match="mp: MaxPool needs an unsigned"):
        build_layer(g, layer)


def test_upsample_entry():
    layer = HWLayer("up", "Upsample", ["x"], ["y"],
                    attrs={"factor": 2, "ifm_dim": [4, 5], "channels": 8})
    g = graph_of(layer, [feat("x", (4, 5, 8), 2, signed=True), feat("y", (8, 10, 8), 2, signed=True)])
    comp = build(g, layer)
    assert isinstance(comp, Upsample) and comp.is_signed
    assert expected_layer_cycles(g, layer, comp) == 8 * 10 * 4 + 5 * 4 + 1


def test_concat_and_split_entries():
    cat = HWLayer("cat", "Concat", ["a", "b"], ["y"], attrs={"channels": [4, 8]})
    g = graph_of(cat, [feat("a", (3, 3, 4), 2), feat("b", (3, 3, 8), 2), feat("y", (3, 3, 12), 2)])
    comp = build(g, cat)
    assert isinstance(comp, Concat)
    assert layer_ports(cat, comp) == ([comp.i0, comp.i1], [comp.o])
    assert expected_layer_cycles(g, cat, comp) == 9 * 6

    split = HWLayer("sp", "ChannelSplit", ["x"], ["a", "b"], attrs={"sizes": [4, 8]})
    g = graph_of(split, [feat("x", (3, 3, 12), 4), feat("a", (3, 3, 4), 4), feat("b", (3, 3, 8), 4)])
    comp = build(g, split)
    assert isinstance(comp, ChannelSplit)
    assert layer_ports(split, comp) == ([comp.i], [comp.o0, comp.o1])
    # pixels of the first output times all input beats per pixel
    assert expected_layer_cycles(g, split, comp) == 9 * 3


def test_shuffle_and_add_entries():
    sh = HWLayer("sh", "ChannelShuffle", ["x"], ["y"], attrs={"groups": 2, "channels": 8})
    g = graph_of(sh, [feat("x", (2, 3, 8), 2), feat("y", (2, 3, 8), 2)])
    comp = build(g, sh)
    assert isinstance(comp, ChannelShuffle)
    assert expected_layer_cycles(g, sh, comp) == 6 * 4 + 4

    add = HWLayer("add", "Add", ["a", "b"], ["y"], attrs={"out_bits": 8})
    g = graph_of(add, [feat("a", (2, 3, 8), 4, signed=True), feat("b", (2, 3, 8), 4, signed=True),
                       feat("y", (2, 3, 8), 4, signed=True)])
    comp = build(g, add)
    assert isinstance(comp, Add) and comp.out_signed and comp.out_bits == 8
    assert layer_ports(add, comp) == ([comp.i0, comp.i1], [comp.o])
    assert expected_layer_cycles(g, add) == 6 * 2 + 2


def test_mvau_res_type_folding():
    import numpy as np

    w = np.ones((4, 8), dtype=np.int64)
    layer = HWLayer("fc", "MVAU", ["x"], ["acc"], attrs={"mh": 4, "mw": 8, "pixels": 9,
                                                          "weight_bits": 4},
                    params={"weights": w}, folding={"PE": 2, "SIMD": 4, "resType": "dsp"})
    g = graph_of(layer, [feat("x", (3, 3, 8), 4), feat("acc", (3, 3, 4), 2, bits=12, signed=True)])
    comp = build(g, layer)
    assert comp.mult_style == "dsp" and comp.multipliers == 4
    del layer.folding["resType"]  # default: plain products
    assert build(g, layer).mult_style == "lut"


def test_requant_entry_follows_input_signedness_and_top_refuses_mismatch(monkeypatch):
    import numpy as np
    from amaranth.back import rtlil

    import hw.requant
    from hw.requant import Requantizer
    from hw.top import Accelerator

    params = {"multiplier": np.array([34479, 34479]), "bias": np.array([16384, 16384])}
    attrs = {"shift": 15, "out_min": 0, "out_max": 255}
    split = HWLayer("sp", "ChannelSplit", ["x"], ["a", "b"], attrs={"sizes": [2, 2]})
    rq_a = HWLayer("rq_a", "Requant", ["a"], ["ya"], attrs=attrs, params=params)
    rq_b = HWLayer("rq_b", "Requant", ["b"], ["yb"], attrs=attrs, params=params)
    cat = HWLayer("cat", "Concat", ["ya", "yb"], ["y"], attrs={"channels": [2, 2]})
    ts = {t.name: t for t in [feat("x", (2, 2, 4), 1), feat("a", (2, 2, 2), 1),
                              feat("b", (2, 2, 2), 1), feat("ya", (2, 2, 2), 1),
                              feat("yb", (2, 2, 2), 1), feat("y", (2, 2, 4), 1)]}
    g = HWGraph(layers=[split, rq_a, rq_b, cat], tensors=ts, input="x", output="y")
    comp = build(g, rq_a)
    assert isinstance(comp, Requantizer) and (comp.in_bits, comp.in_signed) == (8, False)
    rtlil.convert(Accelerator(g), name="top")  # layouts agree on every FIFO

    # a generator that read the uint8 stream as signed (the bug this guards against)
    real = hw.requant.Requantizer
    monkeypatch.setattr(hw.requant, "Requantizer",
                        lambda **kw: real(**(kw | {"in_signed": True})))
    with pytest.raises(ValueError, match=r"tensor a: sp writes .*unsigned\(8\).* rq_a reads "
                                         r".*signed\(8\)"):
        rtlil.convert(Accelerator(g), name="top")
