import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from sim.streams import StreamSource, StreamSink
from sim.runner import load_tb_config

@cocotb.test()
async def passthrough(dut):
    cfg = load_tb_config()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await RisingEdge(dut.clk); await RisingEdge(dut.clk)
    dut.rst.value = 0
    src = StreamSource(dut, "i", dut.clk, stall_prob=0.3)
    snk = StreamSink(dut, "o", dut.clk, backpressure_prob=0.3)
    cocotb.start_soon(src.send(cfg["data"]))
    got = await snk.receive(len(cfg["data"]))
    assert got == [(x + 1) & 0xff for x in cfg["data"]], got
