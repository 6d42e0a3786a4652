# amaranth: UnusedElaboratable=no
"""The compiler's pixel-buffer estimates equal what the hardware builds: for each shape the
component is built by ``hw.registry.build_layer``, converted to Verilog, and its memory array
(or ChannelShuffle's registers) is measured; ``sw.estimate.layer_resources`` must report exactly
those bits, and BRAM18 / LUTRAM from exactly that depth and width."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from amaranth.back import verilog

from hw.registry import buffer_memory, buffer_registers, build_layer
from sw.autofold import _fit, memory_lut_floor
from sw.boards import get_board
from sw.estimate import bram18_for, layer_resources, lutram_luts_for, mux_luts
from sw.folding import MEMORY_OPS, apply_folding
from sw.hwgraph import HWGraph, HWLayer, TensorInfo
from sw.lower import CompileError
from test_hw_memory_style import memories

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

_REG = re.compile(r"reg (?:\[(\d+):0\] )?(buf\d+_\d+) =")


def one_layer(op: str, attrs: dict, shape: tuple, out_shape: tuple, lanes: int, bits: int = 8,
              extra_inputs: dict | None = None) -> tuple[HWGraph, HWLayer]:
    """A graph of one folded ``op`` layer: ``shape`` in, ``out_shape`` out, ``lanes`` per beat."""
    t = {"x": TensorInfo("x", shape, bits, False, 1.0, lanes=lanes),
         "y": TensorInfo("y", out_shape, bits, False, 1.0, lanes=lanes)}
    for name, info in (extra_inputs or {}).items():
        t[name] = info
    layer = HWLayer(f"{op}_0", op, ["x", *(extra_inputs or {})], ["y"], attrs)
    return HWGraph([layer], t, "x", "y"), layer


def window(h, w, c, k, stride, pad, dilation, lanes):
    oh = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    return one_layer("SlidingWindow", dict(ifm_dim=(h, w), channels=c, kernel=k, stride=stride,
                                           pad=pad, dilation=dilation, depthwise=False, bits=8,
                                           signed=False),
                     (h, w, c), (oh, ow, k * k * c), lanes)


def sampler(h, w, c, n, lanes):
    off = TensorInfo("off", (h, w, 1), 3, False, 1.0)
    return one_layer("DeformableSampler", dict(ifm_dim=(h, w), channels=c, max_offset=n, bits=8,
                                               offset_bits=max(1, n.bit_length())),
                     (h, w, c), (h, w, 9 * c), lanes, extra_inputs={"off": off})


def upsample(h, w, c, f, lanes):
    return one_layer("Upsample", dict(factor=f, ifm_dim=(h, w), channels=c, bits=8),
                     (h, w, c), (h * f, w * f, c), lanes)


def shuffle(h, w, c, groups, lanes, bits=8):
    return one_layer("ChannelShuffle", dict(groups=groups, channels=c, pixels=h * w, bits=bits),
                     (h, w, c), (h, w, c), lanes, bits)


#: (graph and layer, memory depth in words, word width in bits), the depth by hand from the
#: component's docstring: rows x W x C/lanes
CASES = {
    # 3x3 stride 1: (K-1)*dilation + 1 + stride = 4 rows x 8 px x 4/2 folds
    "k3s1": (window(8, 8, 4, 3, 1, 1, 1, 2), 4 * 8 * 2, 16),
    # 3x3 stride 2: 2 + 1 + 2 = 5 rows (the estimate used to count 4) x 7 px x 6/3 folds
    "k3s2": (window(9, 7, 6, 3, 2, 1, 1, 3), 5 * 7 * 2, 24),
    # 3x3 dilation 2: 4 + 1 + 1 = 6 rows x 6 px x 4/4 folds
    "k3d2": (window(10, 6, 4, 3, 1, 2, 2, 4), 6 * 6 * 1, 32),
    # 1x1 stride 2: 0 + 1 + 2 = 3 rows (the estimate used to count 2) x 5 px x 2 folds
    "k1s2": (window(6, 5, 2, 1, 2, 0, 1, 1), 3 * 5 * 2, 8),
    # 2x nearest upsample: 2 rows (ping-pong; the estimate used to count 1) x 5 px x 4/2 folds
    "up2": (upsample(3, 5, 4, 2, 2), 2 * 5 * 2, 16),
    # deformable sampler N = 7 (CoDeNet): 2N + 2 = 16 rows x 6 px x 4 folds
    "dfs7": (sampler(16, 6, 4, 7, 1), 16 * 6 * 4, 8),
    # N = 2, two lanes: 6 rows x 4 px x 1 fold
    "dfs2": (sampler(5, 4, 2, 2, 2), 6 * 4 * 1, 16),
}


@pytest.mark.parametrize("case", list(CASES))
def test_buffer_estimate_is_the_components_memory(case):
    (graph, layer), depth, width = CASES[case]
    (name, (vwidth, vdepth, _)), = memories(build_layer(graph, layer)).items()
    assert name == "mem" and (vdepth, vwidth) == (depth, f"[{width - 1}:0]")
    assert buffer_memory(graph, layer) == (depth, width)
    for style in ("auto", "bram", "lutram", "uram"):
        r = layer_resources(graph, layer, "lut", style)
        assert r["buffer_bits"] == vdepth * width == depth * width
        assert r["ffs"] == 0
    assert layer_resources(graph, layer, "lut", "bram")["bram18"] == bram18_for(depth, width)
    lut = layer_resources(graph, layer, "lut", "lutram")
    assert lut["lutram_luts"] == lutram_luts_for(depth, width)
    assert lut["luts"] == 200 + 2 * width + lutram_luts_for(depth, width)


def test_stride_two_and_upsample_figures():
    # the corrected counts in BRAM18 / LUTRAM for the stride-2 window and the upsampler
    (g, l), _, _ = CASES["k3s2"]
    assert layer_resources(g, l, "lut", "lutram")["lutram_luts"] == 24 * 2  # 70 words: 2 x 64
    (g, l), _, _ = CASES["dfs7"]
    assert layer_resources(g, l, "lut", "bram")["bram18"] == 1  # 384 x 8 bits
    big = sampler(64, 64, 32, 7, 1)  # 16 rows x 64 px x 32 folds = 32,768 words of 8 bits
    assert layer_resources(*big, "lut", "bram")["bram18"] == 16  # 2K x 9 each
    assert layer_resources(*upsample(32, 32, 64, 2, 1), "lut", "bram")["bram18"] == 2  # 4,096 x 8


@pytest.mark.parametrize("c,groups,lanes,bits", [(8, 2, 2, 8), (12, 3, 1, 4), (16, 4, 4, 8)])
def test_channel_shuffle_is_registers_not_memory(c, groups, lanes, bits):
    graph, layer = shuffle(2, 2, c, groups, lanes, bits)
    text = verilog.convert(build_layer(graph, layer), name="top")
    regs = _REG.findall(text)
    assert len(regs) == 2 * c and all(int(top or 0) + 1 == bits for top, _ in regs)
    assert not memories(build_layer(graph, layer))  # no memory array at all
    assert buffer_memory(graph, layer) is None
    assert buffer_registers(graph, layer) == {"ffs": 2 * c * bits, "mux_inputs": 2 * c // lanes,
                                              "mux_outputs": lanes * bits}
    for style in ("auto", "bram", "lutram", "uram"):  # a memory style changes nothing
        r = layer_resources(graph, layer, "lut", style)
        assert (r["bram18"], r["uram"], r["lutram_luts"]) == (0, 0, 0)
        assert r["buffer_bits"] == r["ffs"] == sum(bits for _ in regs) == 2 * c * bits
        assert r["luts"] == 50 + 2 * c // lanes + lanes * bits * mux_luts(2 * c // lanes)


def test_mux_luts_follow_lut6_and_f7_f8():
    assert [mux_luts(n) for n in (1, 2, 4, 5, 8, 16, 17, 64, 128, 464)] == \
        [0, 1, 1, 2, 2, 4, 5 + 1, 16 + 1, 32 + 2, 116 + 8 + 1]


def test_channel_shuffle_gets_no_ram_style():
    assert "ChannelShuffle" not in MEMORY_OPS
    graph, _ = shuffle(4, 4, 8, 2, 1)
    # "auto" (what earlier foldings wrote for it) is accepted and dropped; a real style is refused
    assert apply_folding(graph, {"ChannelShuffle_0": {"PE": 2, "ram_style": "auto"}}
                         ).layer("ChannelShuffle_0").folding == {"PE": 2}
    with pytest.raises(CompileError, match=r"layer 'ChannelShuffle_0' \(ChannelShuffle\): "
                                           r"ram_style 'distributed' has no memory to apply to: its "
                                           r"pixel buffers are registers"):
        apply_folding(graph, {"ChannelShuffle_0": {"PE": 2, "ram_style": "distributed"}})
    # the fitter offers it no memory style even when BRAM is zero, and the floor lists no memory
    board = replace(get_board("pynq-z2"), bram36=0)
    ok, why, cfg = _fit(graph, {"ChannelShuffle_0": {"PE": 2}}, board, 100)
    assert ok, why
    assert cfg == {"ChannelShuffle_0": {"PE": 2}}
    folded = apply_folding(graph, cfg)
    floor = memory_lut_floor(folded, 0)
    assert floor["bram18"] == 0 and floor["memories"] == []
    assert floor["luts"] == layer_resources(folded, folded.layers[0])["luts"]
