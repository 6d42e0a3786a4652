"""cocotb testbench of the whole accelerator (hw.top.Accelerator) through its AXI-Stream ports.

Config (from sim.runner.load_tb_config): ``frames``: list of frames, each a list of input
bytes in AXI order; ``expected``: per frame the expected output bytes; ``stall`` and
``backpressure``: probabilities of an idle input cycle / a not-ready output cycle;
``timeout_cycles``. Writes ``result.json`` (per-frame output, mismatches and cycles) to the
path in ``result_path``.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from sim.runner import load_tb_config


def _pauses(prob: float, seed: int):
    rng = random.Random(seed)
    while True:
        yield rng.random() < prob


@cocotb.test()
async def stream_frames(dut):
    cfg = load_tb_config()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
    sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
    if cfg["stall"]:
        source.set_pause_generator(_pauses(cfg["stall"], 1))
    if cfg["backpressure"]:
        sink.set_pause_generator(_pauses(cfg["backpressure"], 2))
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    # cycle bookkeeping: first input beat accepted -> tlast of each output frame
    marks = {"first_in": None, "frame_end": []}

    async def monitor():
        cycle = 0
        while True:
            await RisingEdge(dut.clk)
            cycle += 1
            if marks["first_in"] is None and dut.s_axis_tvalid.value == 1 and dut.s_axis_tready.value == 1:
                marks["first_in"] = cycle
            if (dut.m_axis_tvalid.value == 1 and dut.m_axis_tready.value == 1
                    and dut.m_axis_tlast.value == 1):
                marks["frame_end"].append(cycle)
            if cycle > cfg["timeout_cycles"]:
                return

    mon = cocotb.start_soon(monitor())
    for frame in cfg["frames"]:
        await source.send(AxiStreamFrame(bytes(frame)))
    results = []
    for i, expected in enumerate(cfg["expected"]):
        rx = cocotb.start_soon(sink.recv())
        waited = 0
        while not rx.done():
            await RisingEdge(dut.clk)
            waited += 1
            assert waited < cfg["timeout_cycles"], (
                f"timeout: output frame {i} not complete after {waited} cycles "
                f"({sink.count()} frames queued)")
        got = list(rx.result().tdata)
        mism = sum(1 for a, b in zip(got, expected) if a != b) + abs(len(got) - len(expected))
        results.append({"output": got, "mismatches": mism})
    mon.cancel()
    ends = marks["frame_end"]
    cycles = [ends[0] - marks["first_in"] + 1] + [b - a for a, b in zip(ends, ends[1:])]
    for r, c in zip(results, cycles):
        r["cycles"] = c
    path = cfg["result_path"]
    with open(path + ".tmp", "w") as f:
        json.dump(results, f)
    os.replace(path + ".tmp", path)
    bad = [i for i, r in enumerate(results) if r["mismatches"]]
    assert not bad, f"frames {bad} differ from the golden model"
