"""cocotb testbench behind sw.driver.SimBackend: frames into hw.control.AcceleratorSystem with
cocotbext-axi AXI-Stream drivers (one packet per frame, tlast on its last beat), output frames
out, registers read over AXI4-Lite at the end.

A hardware timeout is a result, not a test failure: the testbench reports it (and the
registers read after it) so the driver can raise ``AcceleratorTimeout`` with the STATUS.

Config: ``frames`` (byte lists), ``n_out`` (output frames to wait for), ``cycle_limit``
(cycles allowed per output frame, counted from the previous one), ``registers`` (name ->
offset), ``backpressure``/``stall`` (probabilities of m_axis_tready low / an idle input
cycle), ``result_path``. Result JSON: ``outputs`` (byte lists), ``registers`` (name -> value),
``frame_end_cycles`` (cycle of each output tlast since reset release), ``timeout`` (null or
``{"frame", "waited"}``).
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame,
                           AxiStreamSink, AxiStreamSource)

from sim.runner import load_tb_config


def _pauses(prob: float, seed: int):
    rng = random.Random(seed)
    while True:
        yield prob >= 1.0 or rng.random() < prob


@cocotb.test()
async def run_frames(dut):
    cfg = load_tb_config()
    clk = dut.ap_clk
    cocotb.start_soon(Clock(clk, 10, unit="ns").start())
    dut.ap_rst_n.value = 0
    kw = {"reset_active_level": False}
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control"), clk, dut.ap_rst_n, **kw)
    source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), clk, dut.ap_rst_n, **kw)
    sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), clk, dut.ap_rst_n, **kw)
    if cfg["stall"]:
        source.set_pause_generator(_pauses(cfg["stall"], 1))
    if cfg["backpressure"]:
        sink.set_pause_generator(_pauses(cfg["backpressure"], 2))
    for _ in range(4):
        await RisingEdge(clk)
    dut.ap_rst_n.value = 1

    ends: list[int] = []

    async def monitor():
        cycle = 0
        while True:
            await RisingEdge(clk)
            await ReadOnly()
            cycle += 1
            if dut.m_axis_tvalid.value == 1 and dut.m_axis_tready.value == 1 and dut.m_axis_tlast.value == 1:
                ends.append(cycle)

    mon = cocotb.start_soon(monitor())
    for frame in cfg["frames"]:
        await source.send(AxiStreamFrame(bytes(frame)))
    outputs, timeout = [], None
    for i in range(cfg["n_out"]):
        rx = cocotb.start_soon(sink.recv())
        waited = 0
        while not rx.done() and waited < cfg["cycle_limit"]:
            await RisingEdge(clk)
            waited += 1
        if not rx.done():
            rx.cancel()
            timeout = {"frame": i, "waited": waited}
            break
        outputs.append(list(rx.result().tdata))
    regs = {}
    for name, off in cfg["registers"].items():
        r = await axil.read(off, 4)
        regs[name] = int.from_bytes(r.data, "little")
    mon.cancel()
    path = cfg["result_path"]
    with open(path + ".tmp", "w") as f:
        json.dump({"outputs": outputs, "registers": regs, "frame_end_cycles": ends,
                   "timeout": timeout}, f)
    os.replace(path + ".tmp", path)
