"""AXI4-Lite control block and AcceleratorSystem: register map in RTL simulation on the slice
graph (cocotbext-axi AxiLiteMaster + AXI-Stream drivers), plus the board-facing port names."""

from __future__ import annotations

import pytest

from hw.control import ID_VALUE, REGISTERS, AcceleratorSystem, graph_hash
from sim.runner import run_cocotb
from sw.estimate import bottleneck, estimate
from sw.folding import apply_folding, load_folding
from sw.lower import lower_qonnx

SLICE_FOLDING = "sw/configs/slice_folding.json"
TOPLEVEL = "deflow_system"  # same name as sw.driver's SimBackend: one shared Verilator build


@pytest.fixture(scope="module")
def slice_graph(slice_onnx):
    return apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))


def test_ports_are_named_for_vivado_inference(slice_graph):
    sys = AcceleratorSystem(slice_graph)
    names = set(sys.signature.members)
    assert {"ap_clk", "ap_rst_n", "s_axis_tdata", "s_axis_tlast", "m_axis_tlast",
            "s_axi_control_awaddr", "s_axi_control_rresp"} <= names
    assert not {"clk", "rst"} & names
    assert sys.in_width == 24 and sys.out_width == 64  # 3 x uint8 lanes in, 8 x int8 out
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
