"""cocotb testbench of hw.control.AcceleratorSystem: the AXI4-Lite register block beside the
streaming accelerator, driven with cocotbext-axi (AxiLiteMaster, AxiStreamSource/Sink).

Config (sim.runner.load_tb_config): ``frames``: input frames as byte lists in AXI order;
``registers``: name -> byte offset (hw.control.REGISTERS); ``id``, ``graph_hash``: expected
constants; ``timeout_cycles``: limit for one output frame.
"""

from __future__ import annotations

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiResp, AxiStreamBus, AxiStreamFrame,
                           AxiStreamSink, AxiStreamSource)

from sim.runner import load_tb_config


class Env:
    """Clock, active-low reset, bus drivers and a cycle-accurate monitor of the DUT."""

    def __init__(self, dut, cfg):
        self.dut, self.cfg = dut, cfg
        self.reg = cfg["registers"]
        cocotb.start_soon(Clock(dut.ap_clk, 10, unit="ns").start())
        dut.ap_rst_n.value = 0
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control"), dut.ap_clk,
                                  dut.ap_rst_n, reset_active_level=False)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.ap_clk,
                                      dut.ap_rst_n, reset_active_level=False)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.ap_clk,
                                  dut.ap_rst_n, reset_active_level=False)
        self.cycle = 0  # rising edges since reset release
        self.ends: list[int] = []  # cycle of each output tlast beat
        self.ar_cycle: dict[int, int] = {}  # address -> cycle of its last AR handshake

    async def reset(self):
        for _ in range(4):
            await RisingEdge(self.dut.ap_clk)
        self.dut.ap_rst_n.value = 1
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        d = self.dut
        while True:
            await RisingEdge(d.ap_clk)
            await ReadOnly()
            self.cycle += 1
            if d.m_axis_tvalid.value == 1 and d.m_axis_tready.value == 1 and d.m_axis_tlast.value == 1:
                self.ends.append(self.cycle)
            if d.s_axi_control_arvalid.value == 1 and d.s_axi_control_arready.value == 1:
                self.ar_cycle[int(d.s_axi_control_araddr.value)] = self.cycle

    async def read(self, name_or_addr) -> tuple[int, AxiResp]:
        addr = self.reg[name_or_addr] if isinstance(name_or_addr, str) else name_or_addr
        r = await self.axil.read(addr, 4)
        return int.from_bytes(r.data, "little"), r.resp

    async def write(self, name_or_addr, value: int, strb_bytes: int = 4) -> AxiResp:
        addr = self.reg[name_or_addr] if isinstance(name_or_addr, str) else name_or_addr
        r = await self.axil.write(addr, value.to_bytes(4, "little")[:strb_bytes])
        return r.resp

    async def recv_frame(self, limit: int) -> list[int]:
        rx = cocotb.start_soon(self.sink.recv())
        for _ in range(limit):
            if rx.done():
                return list(rx.result().tdata)
            await RisingEdge(self.dut.ap_clk)
        raise AssertionError(f"no output frame within {limit} cycles")


@cocotb.test()
async def counters_after_two_frames(dut):
    """FRAME_COUNT, IN_FRAME_COUNT, LAST_FRAME_CYCLES (II between tlasts), the 64-bit cycle
    counter, STATUS busy/idle, ID and GRAPH_HASH."""
    cfg = load_tb_config()
    env = Env(dut, cfg)
    await env.reset()
    assert await env.read("ID") == (cfg["id"], AxiResp.OKAY)
    assert await env.read("GRAPH_HASH") == (cfg["graph_hash"], AxiResp.OKAY)
    status, _ = await env.read("STATUS")
    assert status & 0b11 == 0b10, f"STATUS {status:#x} before any frame: expected IDLE"
    for frame in cfg["frames"]:
        await env.source.send(AxiStreamFrame(bytes(frame)))
    await env.source.wait()  # all input accepted: a frame is now in flight
    status, _ = await env.read("STATUS")
    assert status & 0b11 == 0b01, f"STATUS {status:#x} with frames in flight: expected BUSY"
    for _ in cfg["frames"]:
        await env.recv_frame(cfg["timeout_cycles"])
    for _ in range(4):
        await RisingEdge(dut.ap_clk)
    n = len(cfg["frames"])
    assert await env.read("FRAME_COUNT") == (n, AxiResp.OKAY)
    assert await env.read("IN_FRAME_COUNT") == (n, AxiResp.OKAY)
    ii, _ = await env.read("LAST_FRAME_CYCLES")
    assert ii == env.ends[-1] - env.ends[-2], (ii, env.ends)
    status, _ = await env.read("STATUS")
    assert status == 0b10, f"STATUS {status:#x} after all frames: expected IDLE only"
    lo, _ = await env.read("CYCLE_COUNT_LO")
    hi, _ = await env.read("CYCLE_COUNT_HI")
    # the register samples the counter at the AR handshake edge, when it has counted exactly
    # the edges since reset release that the monitor counted up to that handshake
    assert hi == 0 and lo == env.ar_cycle[env.reg["CYCLE_COUNT_LO"]], (lo, env.ar_cycle)


@cocotb.test()
async def ctrl_scratch_clear_and_unmapped(dut):
    """CTRL/SCRATCH read back (byte strobes honoured), CTRL.CLEAR zeroes the counters, writes
    to read-only registers are ignored with OKAY, unmapped offsets answer SLVERR with data 0,
    and a tlast on the wrong beat sets STATUS.TLAST_ERR until CLEAR."""
    cfg = load_tb_config()
    env = Env(dut, cfg)
    await env.reset()
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
    await env.source.send(AxiStreamFrame(frame[:-beat]))  # tlast on the second-to-last beat
    await env.source.send(AxiStreamFrame(frame[-beat:]))  # tlast on the last beat
    await env.recv_frame(cfg["timeout_cycles"])
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
