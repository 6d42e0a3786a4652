"""Vivado batch Tcl for the four boards of sw/compiler/boards.py (Vivado 2023.x syntax).

The generated ``build.tcl`` makes a project for the board's part (and board part: the PS
presets come from the board files), a block design with

* the Zynq PS: ``processing_system7`` (Zynq-7000) or ``zynq_ultra_ps_e`` (Zynq UltraScale+),
  board presets applied, fabric clock FCLK0 / PL0 at the board's ``fabric_mhz``, one
  general-purpose AXI master (M_AXI_GP0 / M_AXI_HPM0_FPD) and one high-performance slave
  (S_AXI_HP0 / S_AXI_HP0_FPD);
* an AXI DMA (PG021) in simple mode (no scatter-gather), MM2S and S2MM, 26-bit buffer length
  register (transfers up to 64 MiB), stream widths the power of two >= the accelerator's;
  ``axis_dwidth_converter`` (PG085) between DMA and accelerator where the widths differ;
* ``deflow_system`` (hw.control.AcceleratorSystem) as a module reference, its AXI4-Lite
  ``s_axi_control`` and the DMA's ``S_AXI_LITE`` on an AXI SmartConnect from the PS master,
  the DMA's two memory masters on a SmartConnect to the PS HP port;
* ``proc_sys_reset`` making ``ap_rst_n`` synchronous to the fabric clock;

then address assignment, validation, HDL wrapper, ``synth_1`` and ``impl_1`` with a job count,
``write_bitstream``, timing and utilisation reports, and copies ``deflow.bit`` and
``deflow.hwh`` (PYNQ wants them side by side with the same stem) into ``deploy/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: hw/ imports nothing from the compiler at run time
    from sw.compiler.boards import Board

DMA_WIDTHS = (8, 16, 32, 64, 128, 256, 512, 1024)  # PG021: allowed stream data widths
BD_NAME = "deflow_bd"
TOP_MODULE = "deflow_system"


class BoardFlowError(ValueError):
    """The accelerator cannot be put in the block design as asked (names the rule)."""


@dataclass(frozen=True)
class StreamPorts:
    """Accelerator stream widths (bits) and frame sizes (bytes) the block design needs."""

    in_width: int
    out_width: int
    in_frame_bytes: int
    out_frame_bytes: int


def dma_width(width: int) -> int:
    """Smallest DMA stream width (PG021: 8..1024, powers of two) holding ``width`` bits.

    Raises:
        BoardFlowError: ``width`` is not whole bytes or above 1024.
    """
    if width % 8 or width <= 0:
        raise BoardFlowError(f"stream width {width} bits is not a whole number of bytes")
    for w in DMA_WIDTHS:
        if w >= width:
            return w
    raise BoardFlowError(f"stream width {width} bits exceeds the AXI DMA's 1024-bit maximum")


def _check_frames(name: str, width: int, frame_bytes: int) -> None:
    # a width converter without TKEEP needs every frame to fill whole beats on both sides
    both = math.lcm(width // 8, dma_width(width) // 8)
    if frame_bytes % both:
        raise BoardFlowError(
            f"{name} frame of {frame_bytes} bytes is not a multiple of {both} bytes (the least "
            f"common multiple of the accelerator's {width // 8}-byte and the DMA's "
            f"{dma_width(width) // 8}-byte beats): choose a folding with other lane counts")


def _store_item(board_part: str) -> str:
    """Board-store item of a board part: ``vendor:board:part0:ver`` ->
    ``vendor:xilinx_board_store:board:ver``."""
    parts = board_part.split(":")
    if len(parts) != 4:
        return board_part
    return f"{parts[0]}:xilinx_board_store:{parts[1]}:{parts[3]}"


def _ps_tcl(board: Board, clock_mhz: float) -> tuple[str, dict]:
    """Tcl creating and configuring the PS, and the pin names the rest of the design uses."""
    mhz = f"{clock_mhz:g}"
    if board.ps == "zynq7":
        tcl = f"""\
set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7:5.5 ps]
apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \\
    -config {{make_external "FIXED_IO, DDR" apply_board_preset "1" Master "Disable" Slave "Disable"}} $ps
set_property -dict [list \\
    CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {{{mhz}}} \\
    CONFIG.PCW_USE_M_AXI_GP0 {{1}} \\
    CONFIG.PCW_USE_S_AXI_HP0 {{1}} \\
    CONFIG.PCW_S_AXI_HP0_DATA_WIDTH {{64}} \\
] $ps
"""
        pins = {"clk": "ps/FCLK_CLK0", "resetn": "ps/FCLK_RESET0_N", "master": "ps/M_AXI_GP0",
                "hp": "ps/S_AXI_HP0", "clk_pins": ["ps/M_AXI_GP0_ACLK", "ps/S_AXI_HP0_ACLK"],
                "freq_prop": "CONFIG.PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ"}
    elif board.ps == "zynqmp":
        tcl = f"""\
set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e:3.5 ps]
apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {{apply_board_preset "1"}} $ps
set_property -dict [list \\
    CONFIG.PSU__FPGA_PL0_ENABLE {{1}} \\
    CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {{{mhz}}} \\
    CONFIG.PSU__USE__M_AXI_GP0 {{1}} \\
    CONFIG.PSU__USE__M_AXI_GP1 {{0}} \\
    CONFIG.PSU__USE__M_AXI_GP2 {{0}} \\
    CONFIG.PSU__USE__S_AXI_GP2 {{1}} \\
    CONFIG.PSU__SAXIGP2__DATA_WIDTH {{64}} \\
] $ps
"""
        pins = {"clk": "ps/pl_clk0", "resetn": "ps/pl_resetn0", "master": "ps/M_AXI_HPM0_FPD",
                "hp": "ps/S_AXI_HP0_FPD", "clk_pins": ["ps/maxihpm0_fpd_aclk", "ps/saxihp0_fpd_aclk"],
                "freq_prop": "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ"}
    else:
        raise BoardFlowError(f"board {board.name}: unknown PS type {board.ps!r}")
    return tcl, pins


def vivado_tcl(board: Board, ports: StreamPorts, *, verilog_name: str = f"{TOP_MODULE}.v",
               jobs: int = 4, clock_mhz: float | None = None) -> str:
    """The Vivado batch script for ``board`` (paths relative to the script's own folder:
    ``<verilog_name>`` beside it, project in ``vivado/``, outputs into ``deploy/``).

    Args:
        ports: the accelerator's stream widths and frame sizes.
        jobs: parallel jobs for ``launch_runs``.
        clock_mhz: fabric clock (PS FCLK0 / PL0) in MHz; default the board's ``fabric_mhz``.

    Raises:
        BoardFlowError: a stream width the DMA cannot take, frames that do not fill whole
            beats across a width converter, or a clock outside 10..500 MHz.
    """
    if jobs < 1:
        raise BoardFlowError(f"jobs must be >= 1, got {jobs}")
    mhz = float(clock_mhz or board.fabric_mhz)
    if not 10.0 <= mhz <= 500.0:  # PS PL clock range (TRM UG585 / UG1085)
        raise BoardFlowError(f"fabric clock {mhz:g} MHz outside the PS's 10..500 MHz range")
    mm2s, s2mm = dma_width(ports.in_width), dma_width(ports.out_width)
    _check_frames("input", ports.in_width, ports.in_frame_bytes)
    _check_frames("output", ports.out_width, ports.out_frame_bytes)
    ps_tcl, pins = _ps_tcl(board, mhz)

    def conv(name, s_bytes, m_bytes):
        return (f"set {name} [create_bd_cell -type ip -vlnv "
                f"xilinx.com:ip:axis_dwidth_converter:1.1 {name}]\n"
                f"set_property -dict [list CONFIG.S_TDATA_NUM_BYTES {{{s_bytes}}} "
                f"CONFIG.M_TDATA_NUM_BYTES {{{m_bytes}}} CONFIG.HAS_TLAST {{1}} "
                f"CONFIG.HAS_TKEEP {{0}}] ${name}\n")

    streams = []
    if mm2s != ports.in_width:
        streams.append(conv("conv_in", mm2s // 8, ports.in_width // 8))
        streams.append("connect_bd_intf_net [get_bd_intf_pins dma/M_AXIS_MM2S] "
                       "[get_bd_intf_pins conv_in/S_AXIS]\n"
                       "connect_bd_intf_net [get_bd_intf_pins conv_in/M_AXIS] "
                       "[get_bd_intf_pins accel/s_axis]\n")
    else:
        streams.append("connect_bd_intf_net [get_bd_intf_pins dma/M_AXIS_MM2S] "
                       "[get_bd_intf_pins accel/s_axis]\n")
    if s2mm != ports.out_width:
        streams.append(conv("conv_out", ports.out_width // 8, s2mm // 8))
        streams.append("connect_bd_intf_net [get_bd_intf_pins accel/m_axis] "
                       "[get_bd_intf_pins conv_out/S_AXIS]\n"
                       "connect_bd_intf_net [get_bd_intf_pins conv_out/M_AXIS] "
                       "[get_bd_intf_pins dma/S_AXIS_S2MM]\n")
    else:
        streams.append("connect_bd_intf_net [get_bd_intf_pins accel/m_axis] "
                       "[get_bd_intf_pins dma/S_AXIS_S2MM]\n")
    convs = [n for n, w, d in (("conv_in", ports.in_width, mm2s),
                               ("conv_out", ports.out_width, s2mm)) if w != d]
    clocked = (["accel/ap_clk", "dma/s_axi_lite_aclk", "dma/m_axi_mm2s_aclk",
                "dma/m_axi_s2mm_aclk", "ctrl_sc/aclk", "mem_sc/aclk", "rst/slowest_sync_clk"]
               + pins["clk_pins"] + [f"{c}/aclk" for c in convs])
    resets = (["accel/ap_rst_n", "dma/axi_resetn", "ctrl_sc/aresetn", "mem_sc/aresetn"]
              + [f"{c}/aresetn" for c in convs])
    pin_list = lambda names: " ".join(f"[get_bd_pins {n}]" for n in names)  # noqa: E731

    return f"""\
# deflow: Vivado batch build of the accelerator for {board.name} ({board.part})
# generated by sw/flows/bitstream.py; run: vivado -mode batch -source build.tcl -tclargs <jobs>
# Vivado 2023.x. Needs the board files of {board.board_part or board.part} (Xilinx board store).
set script_dir [file dirname [file normalize [info script]]]
set jobs {jobs}
if {{[llength $argv] > 0}} {{ set jobs [lindex $argv 0] }}
set proj_dir $script_dir/vivado
set deploy_dir $script_dir/deploy
proc step {{msg}} {{ puts "deflow: $msg"; flush stdout }}

step "1/8 project {board.part}"
create_project -force deflow_{board.name.replace('-', '_')} $proj_dir -part {board.part}
set board_part {{{board.board_part}}}
if {{$board_part ne ""}} {{
    if {{[llength [get_board_parts -quiet $board_part]] == 0}} {{
        # try the Xilinx board store (needs network), then look again
        catch {{
            xhub::refresh_catalog [xhub::get_xstores xilinx_board_store]
            xhub::install [xhub::get_xitems {_store_item(board.board_part)}]
            set_param board.repoPaths [get_property LOCAL_ROOT_DIR [xhub::get_xstores xilinx_board_store]]
        }}
    }}
    if {{[llength [get_board_parts -quiet $board_part]] == 0}} {{
        error "deflow: board files for $board_part are not installed (Vivado: Tools > Vivado Store > Boards); the PS presets need them"
    }}
    set_property board_part $board_part [current_project]
}}
set_property target_language Verilog [current_project]
add_files -norecurse $script_dir/{verilog_name}
update_compile_order -fileset sources_1

step "2/8 block design: PS ({board.ps}), AXI DMA, deflow_system at {mhz:g} MHz"
create_bd_design {BD_NAME}
{ps_tcl}
set accel [create_bd_cell -type module -reference {TOP_MODULE} accel]
set dma [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma:7.1 dma]
set_property -dict [list \\
    CONFIG.c_include_sg {{0}} \\
    CONFIG.c_sg_include_stscntrl_strm {{0}} \\
    CONFIG.c_sg_length_width {{26}} \\
    CONFIG.c_include_mm2s {{1}} \\
    CONFIG.c_include_s2mm {{1}} \\
    CONFIG.c_m_axis_mm2s_tdata_width {{{mm2s}}} \\
    CONFIG.c_s_axis_s2mm_tdata_width {{{s2mm}}} \\
    CONFIG.c_m_axi_mm2s_data_width {{64}} \\
    CONFIG.c_m_axi_s2mm_data_width {{64}} \\
    CONFIG.c_mm2s_burst_size {{16}} \\
    CONFIG.c_s2mm_burst_size {{16}} \\
] $dma
set ctrl_sc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect:1.0 ctrl_sc]
set_property -dict [list CONFIG.NUM_SI {{1}} CONFIG.NUM_MI {{2}}] $ctrl_sc
set mem_sc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect:1.0 mem_sc]
set_property -dict [list CONFIG.NUM_SI {{2}} CONFIG.NUM_MI {{1}}] $mem_sc
set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset:5.0 rst]

connect_bd_intf_net [get_bd_intf_pins {pins['master']}] [get_bd_intf_pins ctrl_sc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins ctrl_sc/M00_AXI] [get_bd_intf_pins dma/S_AXI_LITE]
connect_bd_intf_net [get_bd_intf_pins ctrl_sc/M01_AXI] [get_bd_intf_pins accel/s_axi_control]
connect_bd_intf_net [get_bd_intf_pins dma/M_AXI_MM2S] [get_bd_intf_pins mem_sc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins dma/M_AXI_S2MM] [get_bd_intf_pins mem_sc/S01_AXI]
connect_bd_intf_net [get_bd_intf_pins mem_sc/M00_AXI] [get_bd_intf_pins {pins['hp']}]
{''.join(streams)}
connect_bd_net [get_bd_pins {pins['clk']}] {pin_list(clocked)}
connect_bd_net [get_bd_pins {pins['resetn']}] [get_bd_pins rst/ext_reset_in]
connect_bd_net [get_bd_pins rst/peripheral_aresetn] {pin_list(resets)}

step "3/8 addresses, validation"
assign_bd_address
validate_bd_design
set fclk [get_property {pins['freq_prop']} $ps]
if {{abs($fclk - {mhz:g}) > 0.5}} {{
    puts "deflow: WARNING: fabric clock is $fclk MHz (asked {mhz:g} MHz): the PS PLL cannot divide to it exactly"
}}
save_bd_design

step "4/8 HDL wrapper"
set bd_file [get_files {BD_NAME}.bd]
generate_target all $bd_file
set wrapper [make_wrapper -files $bd_file -top]
add_files -norecurse $wrapper
set_property top {BD_NAME}_wrapper [current_fileset]
update_compile_order -fileset sources_1

step "5/8 synthesis (synth_1, $jobs jobs)"
launch_runs synth_1 -jobs $jobs
wait_on_run synth_1
if {{[get_property PROGRESS [get_runs synth_1]] ne "100%"}} {{ error "deflow: synth_1 failed, see $proj_dir" }}

step "6/8 implementation and bitstream (impl_1, $jobs jobs)"
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {{[get_property PROGRESS [get_runs impl_1]] ne "100%"}} {{ error "deflow: impl_1 failed, see $proj_dir" }}

step "7/8 reports"
open_run impl_1
report_timing_summary -file $script_dir/timing_summary.rpt
report_utilization -file $script_dir/utilization.rpt
set wns [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]]
puts "deflow: worst negative slack $wns ns at {mhz:g} MHz"

step "8/8 deploy folder"
file mkdir $deploy_dir
set impl_dir [get_property DIRECTORY [get_runs impl_1]]
file copy -force $impl_dir/{BD_NAME}_wrapper.bit $deploy_dir/deflow.bit
set hwh [lindex [glob -nocomplain $proj_dir/*.gen/sources_1/bd/{BD_NAME}/hw_handoff/{BD_NAME}.hwh \\
                                  $proj_dir/*.srcs/sources_1/bd/{BD_NAME}/hw_handoff/{BD_NAME}.hwh] 0]
if {{$hwh eq ""}} {{ error "deflow: {BD_NAME}.hwh not found under $proj_dir" }}
file copy -force $hwh $deploy_dir/deflow.hwh
puts "deflow: done: $deploy_dir/deflow.bit, deflow.hwh"
"""
