"""sw.compiler.resources: Yosys synth_xilinx on a small deterministic design (one 18x18 multiplier, one
1024 x 18 bit memory), stat parsing and the report against board capacities."""

from __future__ import annotations

import json

import pytest
from amaranth import Module, signed
from amaranth.back import rtlil, verilog
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw.compiler.boards import get_board
from sw.compiler.resources import (Resources, SynthesisError, count_cells, parse_stat_json, report,
                          synthesize, utilisation, yosys_script)


class MulMem(wiring.Component):
    """A registered 18x18 signed product (one DSP48) and an 18 Kbit memory (one RAMB18)."""

    def __init__(self, init=()):
        self.init = list(init)
        super().__init__({"a": In(signed(18)), "b": In(signed(18)), "p": Out(signed(36)),
                          "addr": In(10), "wdata": In(18), "we": In(1), "rdata": Out(18)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.p.eq(self.a * self.b)
        m.submodules.mem = mem = Memory(shape=18, depth=1024, init=self.init)
        w, r = mem.write_port(), mem.read_port()
        m.d.comb += [w.addr.eq(self.addr), w.data.eq(self.wdata), w.en.eq(self.we),
                     r.addr.eq(self.addr), self.rdata.eq(r.data)]
        return m


@pytest.fixture(scope="module")
def mulmem_v(tmp_path_factory):
    p = tmp_path_factory.mktemp("mulmem") / "mulmem.v"
    p.write_text(verilog.convert(MulMem(), name="mulmem", emit_src=False))
    return p


def test_count_cells_maps_primitives():
    r = count_cells({"LUT6": 10, "LUT2": 5, "RAM64M": 2, "SRLC32E": 3, "FDRE": 7, "FDSE": 1,
                     "DSP48E2": 4, "RAMB18E2": 3, "RAMB36E2": 2, "URAM288": 1, "CARRY8": 6,
                     "MUXF7": 9})
    assert (r.LUT_logic, r.LUTRAM, r.LUT, r.FF, r.DSP) == (15, 11, 26, 8, 4)
    assert (r.BRAM18, r.BRAM36, r.BRAM36_eq, r.URAM, r.CARRY) == (3, 2, 3.5, 1, 6)
    stat = json.dumps({"design": {"num_cells_by_type": {"LUT3": 2, "FDCE": 1}}})
    assert parse_stat_json(stat) == Resources(LUT=2, LUT_logic=2, FF=1)
    with pytest.raises(SynthesisError, match="no design totals"):
        parse_stat_json(json.dumps({"modules": {"a": {}, "b": {}}}), "top")


def test_utilisation_against_board_capacity():
    z2 = get_board("pynq-z2")
    u = utilisation(Resources(LUT=26_600, FF=10, DSP=221, BRAM18=10, BRAM36=135), z2)
    assert u["resources"]["LUT"]["percent"] == 50.0
    assert u["resources"]["BRAM36"] == {"used": 140.0, "available": 140, "percent": 100.0}
    assert u["resources"]["DSP"]["used"] == 221 and not u["fits"]  # 220 DSPs on the Z-7020
    assert utilisation(Resources(URAM=1), z2)["fits"] is False


def test_script_replaces_abc9_with_abc():
    s = yosys_script("d.v", "top", "xcup", True, "stat.json")
    assert "synth_xilinx -family xcup -top top -flatten -noiopad -uram -run :map_dsp" in s
    assert "abc -luts 2:2,3,6:5,10,20" in s and "abc9" not in s
    assert (s.index("-run :map_dsp") < s.index("chtype -set $__soft_mul")
            < s.index("-run map_dsp:map_memory") < s.index("attrmap")
            < s.index("-run map_memory:map_luts") < s.index("abc -luts")
            < s.index("-run finalize:"))


@pytest.mark.parametrize("family", ["xc7", "xcup"])
def test_yosys_maps_one_dsp_and_one_bram18(mulmem_v, family):
    res, secs = synthesize(mulmem_v, "mulmem", family)
    assert res.DSP == 1 and res.BRAM18 == 1 and res.BRAM36 == 0 and res.URAM == 0
    assert secs > 0


def test_report_files(mulmem_v, tmp_path):
    data = report(mulmem_v, "mulmem", "kv260", tmp_path, progress=lambda s: None)
    assert data["family"] == "xcup" and data["part"] == "xck26-sfvc784-2LV-c"
    assert data["utilisation"]["DSP"] == {"used": 1, "available": 1248,
                                          "percent": round(100 / 1248, 2)}
    assert data["fits"] is True
    assert json.loads((tmp_path / "resources.json").read_text()) == data
    md = (tmp_path / "resources.md").read_text()
    assert "| DSP | 1 | 1248 |" in md and "**Fits** on kv260" in md
    assert (tmp_path / "yosys_xcup.log").exists()


def test_synthesis_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input a; endmodule\n")
    with pytest.raises(SynthesisError, match=r"yosys \(xc7\) exited with 1"):
        synthesize(bad, "bad", "xc7")
    with pytest.raises(FileNotFoundError):
        synthesize(tmp_path / "missing.v", "x", "xc7")


def test_rtlil_input_gives_the_verilog_counts(tmp_path):
    # bench and the bitstream flow hand Yosys RTLIL (read in seconds, where read_verilog takes
    # most of an hour on a full detector's memory initialisation); same netlist, same counts
    design = MulMem(init=[(i * 7919) % (1 << 18) for i in range(1024)])  # an initialised memory
    v, il = tmp_path / "m.v", tmp_path / "m.il"
    v.write_text(verilog.convert(design, name="mulmem", emit_src=False))
    il.write_text(rtlil.convert(MulMem(init=design.init), name="mulmem", emit_src=False))
    assert yosys_script("d.il", "mulmem", "xcup", False, "s.json").startswith("read_rtlil d.il")
    from_v, _ = synthesize(v, "mulmem", "xcup")
    from_il, _ = synthesize(il, "mulmem", "xcup")
    assert from_il == from_v and from_il.DSP == 1 and from_il.BRAM18 == 1


class Rom(wiring.Component):
    """A 256 x 24 ROM with a synchronous read port, styled like an MVAU weight memory."""

    def __init__(self, ram_style: str):
        self.ram_style = ram_style
        super().__init__({"addr": In(8), "data": Out(24)})

    def elaborate(self, platform):
        from hw.memory_style import memory_attrs

        m = Module()
        m.submodules.rom = rom = Memory(shape=24, depth=256,
                                        init=[(i * 2654435761) % (1 << 24) for i in range(256)],
                                        attrs=memory_attrs(self.ram_style, read_only=True))
        rd = rom.read_port()
        m.d.comb += [rd.addr.eq(self.addr), self.data.eq(rd.data)]
        return m


def test_distributed_rom_maps_to_luts_and_block_rom_to_bram(tmp_path):
    # Yosys's Xilinx LUTRAM needs a write port, so "distributed" on a ROM used to end Yosys
    # with "no valid mapping found" (every MVAU weight ROM the fitter moves to LUTRAM)
    counts = {}
    for style in ("distributed", "block"):
        p = tmp_path / f"rom_{style}.il"
        p.write_text(rtlil.convert(Rom(style), name="rom", emit_src=False))
        counts[style], _ = synthesize(p, "rom", "xcup")
    assert counts["distributed"].BRAM18 == 0 and counts["distributed"].LUT > 24
    assert counts["block"].BRAM18 == 1 and counts["block"].LUT == 0


@pytest.mark.parametrize("op", ["MVAU", "VVAU"])
def test_yosys_dsp_count_follows_the_mult_style(tmp_path, op):
    # Yosys ignores Vivado's use_dsp: without the script's chtype step every LUT product of a
    # "lut" MVAU/VVAU became a DSP48 (434 DSPs on the small detector where 317 were planned)
    import numpy as np

    from hw.mvau import MVAU
    from hw.vvau import VVAU

    rng = np.random.default_rng(7)
    dsps = {}
    for style in ("lut", "dsp"):
        if op == "MVAU":  # PE 3: one packed pair and one lane alone per SIMD lane
            dut = MVAU(weights=rng.integers(-8, 8, (6, 8)), pe=3, simd=2, mult_style=style)
        else:
            dut = VVAU(weights=rng.integers(-8, 8, (4, 9)), pe=4, mult_style=style)
        p = tmp_path / f"{op}_{style}.il"
        p.write_text(rtlil.convert(dut, name="dut", emit_src=False))
        dsps[style] = synthesize(p, "dut", "xcup")[0].DSP
    # the RTL's multipliers, which the compiler's estimate counts (sw.compiler.estimate)
    assert dsps == {"lut": 0, "dsp": 4}


def test_window_address_multipliers_stay_off_the_dsps(tmp_path):
    # a sliding window generator's address is (slot*W + x)*F + f with F = C/lanes; Yosys put
    # such constant multiplies on DSP48s (17 in the codenet256 target design) that the
    # compiler's DSP estimate, which counts MVAU/VVAU/requantiser multipliers, did not count
    from hw.upsample import Upsample
    from hw.window import DeformableSampler, MinimalSlidingWindowGenerator, SlidingWindowGenerator

    designs = {
        "swg": SlidingWindowGenerator(ifm_dim=(32, 32), channels=116, kernel=3, stride=2, pad=1,
                                      lanes=1, depthwise=True),
        "swg_minimal": MinimalSlidingWindowGenerator(ifm_dim=(32, 32), channels=116, kernel=3,
                                                     stride=2, pad=1, lanes=1, depthwise=True),
        "sampler": DeformableSampler(ifm_dim=(16, 16), channels=58, max_offset=3, lanes=1),
        "upsample": Upsample(factor=2, ifm_dim=(16, 16), channels=58, lanes=1),
    }
    for name, dut in designs.items():
        p = tmp_path / f"{name}.il"
        p.write_text(rtlil.convert(dut, name="dut", emit_src=False))
        assert synthesize(p, "dut", "xcup")[0].DSP == 0, name
