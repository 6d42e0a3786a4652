# amaranth: UnusedElaboratable=no
"""FINN's ram_style reaches the Verilog: ``amaranth.lib.memory.Memory(attrs=...)`` writes
``(* ram_style = ... *)`` (and ``rom_style`` on a ROM) on the memory array (hw/memory_style.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.back import verilog

from hw.memory_style import memory_attrs
from hw.mvau import MVAU
from hw.registry import build_layer
from hw.requant import Requantizer
from hw.upsample import Upsample
from hw.vvau import VVAU
from hw.window import DeformableSampler, SlidingWindowGenerator
from sw.compiler.folding import apply_folding
from test_estimate import small_graph

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

_MEMORY = re.compile(r"((?:[ \t]*\(\*[^\n]*\*\)\n)*)[ \t]*reg (\[\d+:0\]) (\S+) \[(\d+):0\];")


def memories(component) -> dict[str, tuple[str, int, dict]]:
    """``{array name: (width, depth, attributes other than src)}`` of every memory array in
    the component's Verilog."""
    out = {}
    for attrs, width, name, top in _MEMORY.findall(verilog.convert(component, name="top")):
        found = dict(re.findall(r'\(\* (\w+) = "([^"]*)" \*\)', attrs))
        found.pop("src", None)
        out[name] = (width, int(top) + 1, found)
    return out


def sliding(style):
    return SlidingWindowGenerator(ifm_dim=(4, 4), channels=2, kernel=3, stride=1, pad=1,
                                  lanes=1, depthwise=False, ram_style=style)


def test_line_buffers_carry_ram_style_and_auto_adds_none():
    # (K-1)*dilation + 1 + stride = 4 row slots x 4 pixels x 2 folds = 32 words of 8 bits
    assert memories(sliding("distributed"))["mem"] == ("[7:0]", 32, {"ram_style": "distributed"})
    assert memories(sliding("auto"))["mem"] == ("[7:0]", 32, {})
    ds = DeformableSampler(ifm_dim=(5, 3), channels=4, max_offset=1, lanes=2, ram_style="block")
    assert memories(ds)["mem"] == ("[15:0]", 4 * 3 * 2, {"ram_style": "block"})  # 2N+2 rows
    up = Upsample(factor=2, ifm_dim=(2, 3), channels=2, lanes=2, ram_style="distributed")
    assert memories(up)["mem"] == ("[15:0]", 6, {"ram_style": "distributed"})  # two rows


def test_roms_carry_ram_style_and_rom_style_only_on_the_rom():
    mvau = MVAU(weights=np.arange(-4, 4).reshape(4, 2), pe=2, simd=1, ram_style="distributed")
    got = memories(mvau)
    assert got["rom"] == ("[7:0]", 4, {"ram_style": "distributed", "rom_style": "distributed"})
    assert got["ibuf"] == ("[7:0]", 2, {})  # the input buffer and the output FIFO stay auto
    assert got["storage"][2] == {}
    assert memories(MVAU(weights=np.arange(-4, 4).reshape(4, 2), pe=2, simd=1))["rom"][2] == {}
    vvau = VVAU(weights=np.arange(-8, 10).reshape(2, 9) % 15 - 7, pe=1, ram_style="ultra")
    assert memories(vvau)["rom"] == ("[3:0]", 18, {"ram_style": "ultra", "rom_style": "ultra"})
    rq = Requantizer(multiplier=np.array([3, 5]), bias=np.array([-1, 2]), shift=2, out_min=0,
                     out_max=255, lanes=1, acc_bits=12, ram_style="block")
    # one word per channel: mul_bits 3 + bias_bits 3
    assert memories(rq)["rom"] == ("[5:0]", 2, {"ram_style": "block", "rom_style": "block"})


def test_unknown_ram_style_is_refused():
    with pytest.raises(ValueError, match=r"SlidingWindowGenerator: ram_style must be one of "
                                         r"\('auto', 'block', 'distributed', 'ultra'\), got 'lutram'"):
        sliding("lutram")
    with pytest.raises(ValueError, match="MVAU: ram_style must be one of"):
        MVAU(weights=np.ones((2, 2), dtype=int), pe=1, simd=1, ram_style="registers")
    assert memory_attrs("auto", read_only=True) == {}
    assert memory_attrs("block", read_only=False) == {"ram_style": "block"}


def test_build_layer_passes_the_folding_ram_style():
    g = apply_folding(small_graph(), {"MVAU_0": {"PE": 1, "SIMD": 1, "ram_style": "distributed"},
                                      "SlidingWindow_0": {"ram_style": "block"}})
    comps = {l.name: build_layer(g, l) for l in g.layers}
    comps["Requant_0"]._MustUse__silence = True  # built for its attribute, never elaborated
    assert {n: c.ram_style for n, c in comps.items()} == {
        "SlidingWindow_0": "block", "MVAU_0": "distributed", "Requant_0": "auto"}
    # 16 x 36 weights at PE = SIMD = 1: 576 words of 4 bits
    assert memories(comps["MVAU_0"])["rom"] == ("[3:0]", 576, {"ram_style": "distributed",
                                                                "rom_style": "distributed"})
    # 8x8x4 input, 3x3 stride 1: 4 row slots x 8 pixels x 4 channels
    assert memories(comps["SlidingWindow_0"])["mem"] == ("[7:0]", 128, {"ram_style": "block"})
