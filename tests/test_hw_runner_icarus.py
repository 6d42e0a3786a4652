# amaranth: UnusedElaboratable=no
"""sim/runner.py's Icarus path: the time-0 fix for Yosys's Verilog and VCD waveforms."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog

from hw.channel_ops import Concat
from sim.runner import icarus_available, icarus_time0_fix
from sim.streams import pack_lanes
from sim.tb_multistream import FREE, run_multistream


def test_time0_fix_rewrites_yosys_dummy_register():
    text = verilog.convert(Concat(channels=[1, 2], lanes=1), name="cc", emit_src=False)
    fixed = icarus_time0_fix(text)
    dummy = [ln for ln in text.splitlines() if "dump_module$" in ln and ln.strip().startswith("reg")]
    assert len(dummy) == 1  # the register every `always @*` block of the module reads
    name = dummy[0].strip()[len("reg "):].split(" = ")[0]
    assert f"initial #0 {name} = 1'h1;" in fixed
    assert fixed.replace(f"  initial #0 {name} = 1'h1;\n", "") == text


@pytest.mark.skipif(not icarus_available(), reason="iverilog not on PATH")
def test_icarus_waves_are_vcd(tmp_path, monkeypatch):
    # Concat's select decode never changes while sel stays 0: without the fix, it stays x
    monkeypatch.setenv("DEFLOW_WAVES", "1")
    dut = Concat(channels=[1, 2], lanes=1)
    a, b = np.arange(4).reshape(2, 2, 1), np.arange(8).reshape(2, 2, 2) + 100
    exp = np.concatenate([a, b], axis=-1)
    run_multistream(dut, "cc_waves", {"i0": [pack_lanes([v], 8) for v in a.ravel()],
                                      "i1": [pack_lanes([v], 8) for v in b.ravel()]},
                    {"o": [pack_lanes([v], 8) for v in exp.ravel()]}, {"o": 12},
                    tmp_path=tmp_path, runs=[FREE], simulator="icarus")
    from sim.runner import DEFAULT_BUILD_ROOT

    vcds = sorted(DEFAULT_BUILD_ROOT.glob("cc_waves_icarus_*_w/dump.vcd"))
    assert vcds, "no VCD written"
    head = vcds[-1].read_text()[:2000]
    assert "$enddefinitions" in head and "o__valid" in head
