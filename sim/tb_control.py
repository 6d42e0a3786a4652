"""cocotb testbench of hw.control.AcceleratorSystem: the AXI4-Lite register block beside the
streaming accelerator, driven through :class:`sim.streams.StreamTB` (cocotbext-axi's
AxiLiteMaster, AxiStreamSource/Sink).

Config (sim.runner.load_tb_config): ``frames``: input frames as byte lists in AXI order;
``registers``: name -> byte offset (hw.control.REGISTERS); ``id``, ``graph_hash``: expected
constants; ``timeout_cycles``: limit for one output frame.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiResp

from sim.runner import load_tb_config
from sim.streams import StreamTB


def system_tb(dut, cfg) -> StreamTB:
    """The AcceleratorSystem's streams and AXI4-Lite port; the monitor also stamps every AR
    handshake with its address (``beats["ar"]``, ``values["ar"]``)."""
    return StreamTB(dut, ["s_axis"], ["m_axis"], clock="ap_clk", reset="ap_rst_n",
                    reset_active_level=0, axil="s_axi_control", registers=cfg["registers"],
                    watch={"ar": ("s_axi_control_arvalid", "s_axi_control_arready",
                                  "s_axi_control_araddr")})


async def recv_frame(tb: StreamTB, limit: int) -> list[int]:
    """The next output frame within ``limit`` cycles."""
    (frame,) = await tb.within(limit, tb.recv_frame("m_axis"), what="output frame")
    return frame


@cocotb.test()
async def counters_after_two_frames(dut):
    """FRAME_COUNT, IN_FRAME_COUNT, LAST_FRAME_CYCLES (II between tlasts), the 64-bit cycle
    counter, STATUS busy/idle, ID and GRAPH_HASH."""
    cfg = load_tb_config()
    env = system_tb(dut, cfg)
    await env.reset(4)
    assert await env.read("ID") == (cfg["id"], AxiResp.OKAY)
    assert await env.read("GRAPH_HASH") == (cfg["graph_hash"], AxiResp.OKAY)
    status, _ = await env.read("STATUS")
    assert status & 0b11 == 0b10, f"STATUS {status:#x} before any frame: expected IDLE"
    for frame in cfg["frames"]:
        await env.send("s_axis", bytes(frame))
    await env.sent()  # all input accepted: a frame is now in flight
    status, _ = await env.read("STATUS")
    assert status & 0b11 == 0b01, f"STATUS {status:#x} with frames in flight: expected BUSY"
    for _ in cfg["frames"]:
        await recv_frame(env, cfg["timeout_cycles"])
    for _ in range(4):
        await RisingEdge(dut.ap_clk)
    n = len(cfg["frames"])
    assert await env.read("FRAME_COUNT") == (n, AxiResp.OKAY)
    assert await env.read("IN_FRAME_COUNT") == (n, AxiResp.OKAY)
    ii, _ = await env.read("LAST_FRAME_CYCLES")
    ends = env.ends["m_axis"]
    assert ii == ends[-1] - ends[-2], (ii, ends)
    status, _ = await env.read("STATUS")
    assert status == 0b10, f"STATUS {status:#x} after all frames: expected IDLE only"
    lo, _ = await env.read("CYCLE_COUNT_LO")
    hi, _ = await env.read("CYCLE_COUNT_HI")
    # the register samples the counter at the AR handshake edge, when it has counted exactly
    # the edges since reset release that the monitor counted up to that handshake
    ar = {addr: cycle for cycle, addr in zip(env.beats["ar"], env.values["ar"])}
    assert hi == 0 and lo == ar[cfg["registers"]["CYCLE_COUNT_LO"]], (lo, ar)


@cocotb.test()
async def ctrl_scratch_clear_and_unmapped(dut):
    """CTRL/SCRATCH read back (byte strobes honoured), CTRL.CLEAR zeroes the counters, writes
    to read-only registers are ignored with OKAY, unmapped offsets answer SLVERR with data 0,
    and a tlast on the wrong beat sets STATUS.TLAST_ERR until CLEAR."""
    cfg = load_tb_config()
    env = system_tb(dut, cfg)
    await env.reset(4)
    assert await env.write("SCRATCH", 0x12345678) == AxiResp.OKAY
    assert await env.read("SCRATCH") == (0x12345678, AxiResp.OKAY)
    assert await env.write("SCRATCH", 0xAB, strb_bytes=1) == AxiResp.OKAY  # WSTRB = 0b0001
    assert await env.read("SCRATCH") == (0x123456AB, AxiResp.OKAY)
    assert await env.write("CTRL", 0xA5A5A5A4) == AxiResp.OKAY
    assert await env.read("CTRL") == (0xA5A5A5A4, AxiResp.OKAY)
    assert await env.write("ID", 0) == AxiResp.OKAY
    assert await env.read("ID") == (cfg["id"], AxiResp.OKAY)
    for addr in cfg["unmapped"]:
        assert await env.read(addr) == (0, AxiResp.SLVERR), hex(addr)
        assert await env.write(addr, 0xFFFFFFFF) == AxiResp.SLVERR, hex(addr)

    # one frame with tlast one beat early: counted, flagged
    frame = bytes(cfg["frames"][0])
    beat = cfg["in_beat_bytes"]
    await env.send("s_axis", frame[:-beat])  # tlast on the second-to-last beat
    await env.send("s_axis", frame[-beat:])  # tlast on the last beat
    await recv_frame(env, cfg["timeout_cycles"])
    assert (await env.read("FRAME_COUNT"))[0] == 1
    status, _ = await env.read("STATUS")
    assert status & 0b1000, f"STATUS {status:#x}: TLAST_ERR not set"
    before, _ = await env.read("CYCLE_COUNT_LO")
    assert before > 0
    assert await env.write("CTRL", 0xA5A5A5A5) == AxiResp.OKAY  # CLEAR (+ user bits)
    assert await env.read("CTRL") == (0xA5A5A5A4, AxiResp.OKAY)  # CLEAR reads 0
    assert (await env.read("FRAME_COUNT"))[0] == 0
    assert (await env.read("IN_FRAME_COUNT"))[0] == 0
    status, _ = await env.read("STATUS")
    assert status == 0b10, f"STATUS {status:#x} after CLEAR"
    after, _ = await env.read("CYCLE_COUNT_LO")
    assert after < 20, f"cycle counter {after} not cleared (was {before})"
