# amaranth: UnusedElaboratable=no
"""The compiler's pixel-buffer estimates equal what the hardware builds: for each shape the
component is built by ``hw.registry.build_layer``, converted to Verilog, and its memory arrays
(ChannelShuffle: one per bank) are measured; ``sw.compiler.estimate.layer_resources`` must report exactly
those bits, and BRAM18 / LUTRAM from exactly that depth and width (times the read ports)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from amaranth.back import verilog

from hw.channel_ops import ChannelShuffle
from hw.registry import buffer_memory, buffer_read_ports, build_layer, read_crossbar
from sw.compiler.autofold import _fit, memory_lut_floor
from sw.compiler.boards import get_board
from hw.ops.memory import bram18_for, lutram_luts_for, mux_luts
from sw.compiler.estimate import layer_resources
from sw.compiler.folding import MEMORY_OPS, apply_folding
from hw.graph import HWGraph, HWLayer, TensorInfo
from sw.compiler.lower import CompileError
from test_hw_memory_style import memories

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


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


def minimal(graph_layer):
    """The same window layer with ``window_buffer "minimal"`` (the pixel-buffer engine)."""
    graph, layer = graph_layer
    layer.folding = {**layer.folding, "window_buffer": "minimal"}
    return graph, layer


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
    # minimal buffers: (K-1)*dilation rows + (K-1)*dilation + 1 + stride pixels, x C/lanes
    "k3s1_min": (minimal(window(8, 8, 4, 3, 1, 1, 1, 2)), (2 * 8 + 2 + 1 + 1) * 2, 16),
    "k3s2_min": (minimal(window(9, 7, 6, 3, 2, 1, 1, 3)), (2 * 7 + 2 + 1 + 2) * 2, 24),
    "k3d2_min": (minimal(window(10, 6, 4, 3, 1, 2, 2, 4)), (4 * 6 + 4 + 1 + 1) * 1, 32),
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


@pytest.mark.parametrize("c,groups,lanes,bits,ports", [
    (8, 2, 2, 8, [2, 2]),  # both lanes of a beat in one bank
    (12, 3, 1, 4, [1]),
    (16, 4, 4, 8, [4, 4, 4, 4]),  # C/g = PE: a beat's four lanes in one bank (g ports, the most)
    (232, 2, 1, 8, [1]),  # the detector's shuffles: one 464 x 8 memory
    (12, 2, 3, 8, [2, 1, 2]),
])
def test_channel_shuffle_is_a_banked_memory(c, groups, lanes, bits, ports):
    graph, layer = shuffle(2, 2, c, groups, lanes, bits)
    depth = 2 * c // lanes  # two pixel slots of C/PE words per bank
    found = memories(build_layer(graph, layer))
    assert found == {f"bank{k}": (f"[{bits - 1}:0]", depth, {}) for k in range(lanes)}
    assert buffer_memory(graph, layer) == (depth, bits)
    assert buffer_read_ports(graph, layer) == ports
    xbar = read_crossbar(graph, layer)
    addr_bits = (depth - 1).bit_length()
    logic = (50 + (lanes + sum(ports) + 1) * addr_bits
             + bits * sum(mux_luts(n) for n in xbar["lane_inputs"])
             + addr_bits * sum(mux_luts(n) for n in xbar["port_inputs"]))
    for style in ("auto", "bram", "lutram", "uram"):
        r = layer_resources(graph, layer, "lut", style)
        assert r["buffer_bits"] == lanes * depth * bits == 2 * c * bits
        assert r["ffs"] == 0
    lut = layer_resources(graph, layer, "lut", "lutram")
    assert lut["lutram_luts"] == sum(ports) * lutram_luts_for(depth, bits)
    assert (lut["bram18"], lut["luts"]) == (0, logic + lut["lutram_luts"])
    blk = layer_resources(graph, layer, "lut", "bram")
    assert (blk["bram18"], blk["lutram_luts"], blk["luts"]) == (
        sum(ports) * bram18_for(depth, bits), 0, logic)
    for style, attr in (("block", "block"), ("distributed", "distributed"), ("ultra", "ultra")):
        g = apply_folding(graph, {"ChannelShuffle_0": {"PE": lanes, "ram_style": style}})
        assert {v[2].get("ram_style") for v in memories(build_layer(g, g.layers[0])).values()} \
            == {attr}


def test_channel_shuffle_figures():
    # one C = 232 shuffle at PE 1 (codenet256 stage 3): 464 x 8 bits, one read port, addresses
    # of 9 bits, no crossbar: 50 + 3 * 9 = 77 LUTs of logic plus 1 BRAM18 or 64 LUTs of LUTRAM
    graph, layer = shuffle(16, 16, 232, 2, 1)
    assert layer_resources(graph, layer, "lut", "bram") | {} == dict(
        bram18=1, uram=0, lutram_luts=0, luts=77, dsps=0, weight_bits=0,
        dram_bytes_per_frame=0, buffer_bits=3712, ffs=0)
    assert layer_resources(graph, layer, "lut", "auto")["bram18"] == 1  # 464 words > 128
    lut = layer_resources(graph, layer, "lut", "lutram")
    assert (lut["bram18"], lut["lutram_luts"], lut["luts"]) == (0, 64, 141)
    # PE 2: two banks of 232 x 8, two read ports each (4 copies), a 2-way crossbar per lane
    graph, layer = shuffle(16, 16, 232, 2, 2)
    r = layer_resources(graph, layer, "lut", "lutram")
    assert buffer_read_ports(graph, layer) == [2, 2]
    assert (r["lutram_luts"], r["luts"]) == (4 * 32, 50 + 7 * 8 + 2 * 8 * 1 + 4 * 32)


def test_mux_luts_follow_lut6_and_f7_f8():
    assert [mux_luts(n) for n in (1, 2, 4, 5, 8, 16, 17, 64, 128, 464)] == \
        [0, 1, 1, 2, 2, 4, 5 + 1, 16 + 1, 32 + 2, 116 + 8 + 1]


def test_channel_shuffle_takes_a_ram_style():
    assert "ChannelShuffle" in MEMORY_OPS
    graph, _ = shuffle(4, 4, 8, 2, 1)
    assert apply_folding(graph, {"ChannelShuffle_0": {"PE": 2, "ram_style": "distributed"}}
                         ).layer("ChannelShuffle_0").folding == {"PE": 2, "ram_style": "distributed"}
    with pytest.raises(CompileError, match=r"layer 'ChannelShuffle_0' \(ChannelShuffle\): "
                                           r"ram_style must be one of"):
        apply_folding(graph, {"ChannelShuffle_0": {"PE": 2, "ram_style": "registers"}})
    # with no BRAM the fitter moves the buffer to LUTRAM (8 words x 8 bits, 2 ports x 2 banks)
    board = replace(get_board("pynq-z2"), bram36=0)
    ok, why, cfg = _fit(graph, {"ChannelShuffle_0": {"PE": 2}}, board, 100)
    assert ok, why
    assert cfg == {"ChannelShuffle_0": {"PE": 2, "ram_style": "auto"}}  # shallow: auto is LUTRAM
    folded = apply_folding(graph, cfg)
    r = layer_resources(folded, folded.layers[0], "lut", "auto")
    assert (r["bram18"], r["lutram_luts"]) == (0, 4 * 8)
    floor = memory_lut_floor(folded, 0)
    assert floor["bram18"] == 4 and floor["memories"] == [("ChannelShuffle_0", 4, 32)]
    assert floor["luts"] == r["luts"]
    # with no LUTs to spare, a 928-word buffer stays in BRAM under auto and is refused in LUTRAM
    big, _ = shuffle(4, 4, 464, 2, 1)
    ok, why, cfg = _fit(big, {"ChannelShuffle_0": {"PE": 1}}, replace(board, luts=200), 100)
    assert ok is False and "BRAM18 1 > 0" in why


def test_window_buffer_is_a_folding_choice():
    from test_estimate import small_graph

    g = apply_folding(small_graph(), {"SlidingWindow_0": {"window_buffer": "minimal"}})
    swg = g.layer("SlidingWindow_0")
    assert swg.folding["window_buffer"] == "minimal"
    assert type(build_layer(g, swg)).__name__ == "MinimalSlidingWindowGenerator"
    assert buffer_memory(g, swg) == ((2 * 8 + 4) * 4, 8)  # lanes 1 (MVAU SIMD 1)
    with pytest.raises(CompileError, match=r"'SlidingWindow_0' \(SlidingWindow\).*window_buffer must "
                                           r"be one of \('rows', 'minimal'\), got 'pixels'"):
        apply_folding(small_graph(), {"SlidingWindow_0": {"window_buffer": "pixels"}})
