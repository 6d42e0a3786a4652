"""Board flow: the Vivado Tcl of each board, `deflow bitstream` refusing without Vivado and
handing the right command line to a (fake) Vivado, and the self-contained deploy folder."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import stat
import sys

import numpy as np
import pytest

from hw.boards import BoardFlowError, StreamPorts, dma_width, vivado_tcl
from sw.flows.bitstream import (EXIT_BAD_INPUT, EXIT_NO_VIVADO, EXIT_OK, BitstreamError,
                          add_bitstream_parser, load_fifo_depths, vivado_command)
from sw.compiler.boards import BOARDS, get_board

SLICE_PORTS = StreamPorts(in_width=24, out_width=64, in_frame_bytes=64 * 64 * 3,
                          out_frame_bytes=32 * 32 * 8)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_tcl_for_each_board(name):
    b = get_board(name)
    tcl = vivado_tcl(b, SLICE_PORTS, jobs=3)
    assert f"create_project -force deflow_{name.replace('-', '_')} $proj_dir -part {b.part}" in tcl
    assert f"set board_part {{{b.board_part}}}" in tcl
    if b.ps == "zynq7":
        assert "xilinx.com:ip:processing_system7:5.5" in tcl
        assert f"CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {{{b.fabric_mhz:g}}}" in tcl
        assert "[get_bd_intf_pins ps/S_AXI_HP0]" in tcl and "ps/FCLK_CLK0" in tcl
        assert "zynq_ultra_ps_e" not in tcl
    else:
        assert "xilinx.com:ip:zynq_ultra_ps_e:3.5" in tcl
        assert f"CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {{{b.fabric_mhz:g}}}" in tcl
        assert "[get_bd_intf_pins ps/S_AXI_HP0_FPD]" in tcl and "ps/pl_clk0" in tcl
        assert "processing_system7" not in tcl
    assert "apply_board_preset \"1\"" in tcl
    # DMA: simple mode, 24-bit input widened to a 32-bit MM2S stream, 64-bit S2MM as is
    assert "xilinx.com:ip:axi_dma:7.1" in tcl and "CONFIG.c_include_sg {0}" in tcl
    assert "CONFIG.c_m_axis_mm2s_tdata_width {32}" in tcl
    assert "CONFIG.c_s_axis_s2mm_tdata_width {64}" in tcl
    assert "CONFIG.S_TDATA_NUM_BYTES {4} CONFIG.M_TDATA_NUM_BYTES {3}" in tcl
    assert "conv_out" not in tcl
    assert "create_bd_cell -type module -reference deflow_system accel" in tcl
    assert "[get_bd_intf_pins accel/s_axi_control]" in tcl
    assert "connect_bd_net [get_bd_pins rst/peripheral_aresetn] [get_bd_pins accel/ap_rst_n]" in tcl
    for cmd in ("assign_bd_address", "validate_bd_design", "make_wrapper",
                "launch_runs synth_1 -jobs $jobs", "-to_step write_bitstream", "set jobs 3",
                "$deploy_dir/deflow.bit", "$deploy_dir/deflow.hwh"):
        assert cmd in tcl, cmd


def test_dma_widths_and_refusals():
    assert [dma_width(w) for w in (8, 24, 64, 72)] == [8, 32, 64, 128]
    with pytest.raises(BoardFlowError, match="whole number of bytes"):
        dma_width(12)
    with pytest.raises(BoardFlowError, match="1024-bit"):
        dma_width(2048)
    with pytest.raises(BoardFlowError, match="input frame of 12290 bytes is not a multiple of 12"):
        vivado_tcl(get_board("kv260"), StreamPorts(24, 64, 12290, 8192))
    assert "PL0_REF_CTRL__FREQMHZ {150}" in vivado_tcl(get_board("kv260"), SLICE_PORTS,
                                                      clock_mhz=150)
    with pytest.raises(BoardFlowError, match="600 MHz outside"):
        vivado_tcl(get_board("zcu104"), SLICE_PORTS, clock_mhz=600)


@pytest.fixture(scope="module")
def compiled_dir(slice_onnx, tmp_path_factory):
    from sw.compiler.folding import apply_folding, load_folding
    from sw.compiler.lower import lower_qonnx

    d = tmp_path_factory.mktemp("compiled")
    apply_folding(lower_qonnx(slice_onnx), load_folding("sw/configs/slice_folding.json")).save(
        d / "hw_graph.json")
    return d


def _run(argv):
    p = argparse.ArgumentParser()
    add_bitstream_parser(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["bitstream", *argv])
    return args.func(args)


def test_bad_input_is_refused(tmp_path, capsys):
    assert _run(["--board", "zedboard", "--out", str(tmp_path / "o")]) == EXIT_BAD_INPUT
    assert "unknown board 'zedboard'" in capsys.readouterr().err
    assert _run(["--board", "kv260", "--build-dir", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "no hw_graph.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fifo_depths_follow_the_build_dir(tmp_path):
    assert load_fifo_depths(str(tmp_path)) is None  # none written: accelerator defaults
    (tmp_path / "fifo_depths.json").write_text("null")
    assert load_fifo_depths(str(tmp_path)) is None
    (tmp_path / "fifo_depths.json").write_text('{"t1": 8, "t2": 64}')
    assert load_fifo_depths(str(tmp_path)) == {"t1": 8, "t2": 64}
    other = tmp_path / "other.json"
    other.write_text('{"t1": 16}')
    assert load_fifo_depths(str(tmp_path), str(other)) == {"t1": 16}  # the option wins
    other.write_text('{"t1": 0}')
    with pytest.raises(BitstreamError, match="positive integers"):
        load_fifo_depths(None, str(other))
    with pytest.raises(BitstreamError, match="no such file"):
        load_fifo_depths(None, str(tmp_path / "missing.json"))


def _load_demo(deploy):
    sys.path.insert(0, str(deploy))
    try:
        spec = importlib.util.spec_from_file_location("deflow_demo_test", deploy / "deflow_demo.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(deploy))
        sys.modules.pop("driver", None)


def test_refuses_without_vivado_and_leaves_a_complete_folder(compiled_dir, tmp_path, monkeypatch,
                                                              capsys):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "pynq-z2"
    rc = _run(["--board", "pynq-z2", "--build-dir", str(compiled_dir), "--out", str(out),
               "--no-yosys", "--jobs", "2"])
    assert rc == EXIT_NO_VIVADO
    err = capsys.readouterr().err
    assert "vivado is not on PATH" in err and " ".join(vivado_command(out, 2)) in err
    assert "module deflow_system(" in (out / "deflow_system.v").read_text()
    assert "xc7z020clg400-1" in (out / "build.tcl").read_text()
    spec = json.loads((out / "deploy" / "accel.json").read_text())
    assert spec["input"]["shape"] == [64, 64, 3] and spec["clock_mhz"] == 100.0
    assert (out / "deploy" / "driver.py").read_text() == open("sw/runtime/driver.py").read()
    assert not (tmp_path / "pynq-z2.partial").exists()

    # the deploy folder runs without the project: the demo imports its driver copy
    demo = _load_demo(out / "deploy")
    o = np.zeros((8, 8, 6), dtype=np.int64)
    o[..., :2] = -10
    o[3, 5] = [-10, 5, 4, 2, 0, 0]  # class 1 logit 5, w 4, h 2 (output pixels), no offset
    dets = demo.decode(o, 1.0, stride=4, k=3)
    assert dets.shape == (3, 6)
    np.testing.assert_allclose(dets[0], [12, 8, 28, 16, 1 / (1 + np.exp(-5)), 1], rtol=1e-6)


def test_fake_vivado_gets_the_batch_command(compiled_dir, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vivado"
    fake.write_text(
        "#!/bin/sh\n"
        "printf '%s\\n' \"$@\" > argv.txt\n"
        "pwd > cwd.txt\n"
        "echo 'deflow: 1/8 project'\n"
        "touch deploy/deflow.bit deploy/deflow.hwh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    out = tmp_path / "kv260"
    rc = _run(["--board", "kv260", "--build-dir", str(compiled_dir), "--out", str(out),
               "--no-yosys", "--jobs", "5", "--clock-mhz", "150"])
    assert rc == EXIT_OK
    assert (out / "argv.txt").read_text().split("\n")[:-1] == [
        "-mode", "batch", "-nojournal", "-log", "vivado.log", "-source", "build.tcl",
        "-tclargs", "5"]
    assert (out / "cwd.txt").read_text().strip() == str(out)
    tcl = (out / "build.tcl").read_text()
    assert "-part xck26-sfvc784-2LV-c" in tcl and "PL0_REF_CTRL__FREQMHZ {150}" in tcl
    assert json.loads((out / "deploy" / "accel.json").read_text())["clock_mhz"] == 150.0


STUB_TCL = r"""
set argv {}
set ::calls {}
rename file _file
proc file {sub args} {
    if {$sub in {mkdir copy}} { lappend ::calls [list file $sub {*}$args]; return "" }
    return [_file $sub {*}$args]
}
proc glob {args} { return [list /proj/x.gen/sources_1/bd/deflow_bd/hw_handoff/deflow_bd.hwh] }
proc unknown {args} {
    lappend ::calls $args
    switch -- [lindex $args 0] {
        get_board_parts { return [list [lindex $args end]] }
        get_bd_pins - get_bd_intf_pins { return "pin:[lindex $args end]" }
        get_property {
            switch -glob -- [lindex $args 1] {
                PROGRESS { return "100%" }
                *FREQMHZ { return $::want_mhz }
                SLACK { return 0.25 }
                default { return /proj/impl_1 }
            }
        }
        default { return "" }
    }
}
"""


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_tcl_runs_in_a_tcl_interpreter_with_stubbed_vivado_commands(name):
    """The script is valid Tcl end to end (braces, continuations, procs): run it in Tcl 8.6
    with every Vivado command recorded by a stub."""
    tkinter = pytest.importorskip("tkinter")
    b = get_board(name)
    tcl = tkinter.Tcl()
    tcl.eval(STUB_TCL)
    tcl.eval(f"set ::want_mhz {b.fabric_mhz:g}")
    tcl.eval(vivado_tcl(b, SLICE_PORTS, jobs=2))
    calls = [tcl.splitlist(c) for c in tcl.splitlist(tcl.eval("set ::calls"))]
    heads = [c[0] for c in calls]
    order = ["create_project", "set_property", "add_files", "create_bd_design", "create_bd_cell",
             "apply_bd_automation", "assign_bd_address", "validate_bd_design", "make_wrapper",
             "launch_runs", "wait_on_run", "open_run", "report_timing_summary"]
    idx = [heads.index(h) for h in order]
    assert idx == sorted(idx), list(zip(order, idx))
    assert calls[heads.index("create_project")][-1] == b.part
    cells = {c[-1]: c[c.index("-vlnv") + 1] if "-vlnv" in c else c[c.index("-reference") + 1]
             for c in calls if c[0] == "create_bd_cell"}
    ps_ip = ("xilinx.com:ip:processing_system7:5.5" if b.ps == "zynq7"
             else "xilinx.com:ip:zynq_ultra_ps_e:3.5")
    assert cells == {"ps": ps_ip, "accel": "deflow_system", "dma": "xilinx.com:ip:axi_dma:7.1",
                     "ctrl_sc": "xilinx.com:ip:smartconnect:1.0",
                     "mem_sc": "xilinx.com:ip:smartconnect:1.0",
                     "rst": "xilinx.com:ip:proc_sys_reset:5.0",
                     "conv_in": "xilinx.com:ip:axis_dwidth_converter:1.1"}
    launches = [c for c in calls if c[0] == "launch_runs"]
    assert [c[1] for c in launches] == ["synth_1", "impl_1"] and all("2" in c for c in launches)
    nets = {c[1]: set(c[2:]) for c in calls if c[0] == "connect_bd_net"}
    ps_clk = "pin:ps/FCLK_CLK0" if b.ps == "zynq7" else "pin:ps/pl_clk0"
    assert {"pin:accel/ap_clk", "pin:dma/m_axi_s2mm_aclk", "pin:conv_in/aclk"} <= nets[ps_clk]
    assert {"pin:accel/ap_rst_n", "pin:dma/axi_resetn"} <= nets["pin:rst/peripheral_aresetn"]
    intf = {(c[1], c[2]) for c in calls if c[0] == "connect_bd_intf_net"}
    assert {("pin:dma/M_AXIS_MM2S", "pin:conv_in/S_AXIS"), ("pin:conv_in/M_AXIS", "pin:accel/s_axis"),
            ("pin:accel/m_axis", "pin:dma/S_AXIS_S2MM"),
            ("pin:ctrl_sc/M01_AXI", "pin:accel/s_axi_control")} <= intf
    copies = [c[-1] for c in calls if c[:2] == ("file", "copy")]
    assert [p.rsplit("/", 1)[-1] for p in copies] == ["deflow.bit", "deflow.hwh"]
