"""AXI4-Lite control block and AcceleratorSystem: register map in RTL simulation on the slice
graph (cocotbext-axi AxiLiteMaster + AXI-Stream drivers), plus the board-facing port names."""

from __future__ import annotations

import pytest

from hw.control import ID_VALUE, REGISTERS, AcceleratorSystem, graph_hash
from sim.runner import run_cocotb
from sw.compiler.estimate import bottleneck, estimate
from sw.compiler.folding import apply_folding, load_folding
from sw.compiler.lower import lower_qonnx

SLICE_FOLDING = "sw/configs/slice_folding.json"
TOPLEVEL = "deflow_system"  # same name as sw.runtime.driver's SimBackend: one shared Verilator build


@pytest.fixture(scope="module")
def slice_graph(slice_onnx):
    return apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))


def test_ports_are_named_for_vivado_inference(slice_graph):
    sys = AcceleratorSystem(slice_graph)
    names = set(sys.signature.members)
    assert {"ap_clk", "ap_rst_n", "s_axis_tdata", "s_axis_tlast", "m_axis_tlast",
            "s_axi_control_awaddr", "s_axi_control_rresp"} <= names
    assert not {"clk", "rst"} & names
    tin, tout = slice_graph.tensors[slice_graph.input], slice_graph.tensors[slice_graph.output]
    assert (tin.bits, tout.bits) == (8, 8)  # uint8 pixels in, int8 head out: one byte a lane
    assert (sys.in_width, sys.out_width) == (8 * tin.lanes, 8 * tout.lanes)
    assert sys.ap_rst_n.attrs["X_INTERFACE_PARAMETER"] == "POLARITY ACTIVE_LOW"
    assert graph_hash(slice_graph) == sys.graph_hash != 0


def test_registers_in_rtl_simulation(slice_graph, val_images):
    g = slice_graph
    tin = g.tensors[g.input]
    frames = [img.reshape(-1).astype(int).tolist() for img in val_images]
    ii = bottleneck(estimate(g)).cycles
    mapped = set(REGISTERS.values())
    config = {
        "frames": frames,
        "registers": REGISTERS,
        "id": ID_VALUE,
        "graph_hash": graph_hash(g),
        "unmapped": [a for a in (0x28, 0x3C) if a not in mapped],
        "in_beat_bytes": tin.lanes,
        "timeout_cycles": 10 * ii,
    }
    assert len(config["unmapped"]) == 2
    run_cocotb(AcceleratorSystem(g), TOPLEVEL, "sim.tb_control", config)


def test_axi_lite_handshakes_and_counters_in_amaranth_sim():
    """The slave alone (Amaranth's simulator, no Verilator): W before AW, B and R held by
    a master that is not ready, byte strobes, the measured II and the tlast check."""
    from amaranth.sim import Simulator

    from hw.control import ControlBlock

    dut = ControlBlock(in_beats_per_frame=4, graph_hash_value=0x1234_5678)
    p = "s_axi_control_"

    def s(name):
        return getattr(dut, p + name)

    async def bench(ctx):
        # write data first, address two cycles later
        ctx.set(s("wvalid"), 1)
        ctx.set(s("wdata"), 0xCAFEBABE)
        ctx.set(s("wstrb"), 0b1111)
        assert ctx.get(s("wready")) == 1
        await ctx.tick()
        ctx.set(s("wvalid"), 0)
        await ctx.tick().repeat(2)
        assert ctx.get(s("bvalid")) == 0, "B before AW"
        ctx.set(s("awvalid"), 1)
        ctx.set(s("awaddr"), REGISTERS["SCRATCH"])
        await ctx.tick()
        ctx.set(s("awvalid"), 0)
        await ctx.tick()
        for _ in range(3):  # master not ready for B: response held, no new address taken
            assert (ctx.get(s("bvalid")), ctx.get(s("bresp")), ctx.get(s("awready"))) == (1, 0, 0)
            await ctx.tick()
        ctx.set(s("bready"), 1)
        await ctx.tick()
        assert ctx.get(s("bvalid")) == 0

        async def read(addr, hold=0):
            ctx.set(s("arvalid"), 1)
            ctx.set(s("araddr"), addr)
            await ctx.tick()
            ctx.set(s("arvalid"), 0)
            for _ in range(hold):  # master not ready for R: data held
                assert ctx.get(s("rvalid")) == 1
                await ctx.tick()
            got = (ctx.get(s("rdata")), ctx.get(s("rresp")))
            ctx.set(s("rready"), 1)
            await ctx.tick()
            ctx.set(s("rready"), 0)
            assert ctx.get(s("rvalid")) == 0
            return got

        assert await read(REGISTERS["SCRATCH"], hold=3) == (0xCAFEBABE, 0)
        assert await read(REGISTERS["GRAPH_HASH"]) == (0x1234_5678, 0)
        assert await read(0x3C) == (0, 0b10)

        # one good input frame (tlast on beat 4), then tlast one beat early
        for last in (0, 0, 0, 1, 0, 1, 0, 1):
            ctx.set(dut.in_beat, 1)
            ctx.set(dut.in_last, last)
            await ctx.tick()
        ctx.set(dut.in_beat, 0)
        # two output frame ends 7 cycles apart
        for gap in (0, 6):
            if gap:
                await ctx.tick().repeat(gap)
            ctx.set(dut.out_beat, 1)
            ctx.set(dut.out_last, 1)
            await ctx.tick()
            ctx.set(dut.out_beat, 0)
        assert (await read(REGISTERS["IN_FRAME_COUNT"]))[0] == 2
        assert (await read(REGISTERS["FRAME_COUNT"]))[0] == 2
        assert (await read(REGISTERS["LAST_FRAME_CYCLES"]))[0] == 7
        assert (await read(REGISTERS["STATUS"]))[0] == 0b1010  # idle, tlast error

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
