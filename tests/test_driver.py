"""sw.runtime.driver: stream packing, the simulation backend on the slice graph (outputs against the
golden model, counters, throughput, timeouts) and the PYNQ backend's refusal off-board."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sw.runtime.driver import (REGISTERS, AcceleratorDriver, AcceleratorSpec, AcceleratorTimeout,
                       BackendUnavailable, PynqBackend, SimBackend, StreamSpec, pack_frames,
                       unpack_frames)
from sw.compiler.execute import run_graph
from sw.compiler.folding import apply_folding, load_folding
from sw.compiler.lower import lower_qonnx

SLICE_FOLDING = "sw/configs/slice_folding.json"


def test_register_table_matches_the_hardware():
    from hw.control import REGISTERS as HW

    assert REGISTERS == HW


def test_pack_exact_bytes_and_round_trip():
    s8 = StreamSpec((1, 2, 2), bits=8, signed=True)
    frame = np.array([[[-1, 2], [127, -128]]])
    assert pack_frames(s8, frame).tolist() == [[0xFF, 0x02, 0x7F, 0x80]]
    s12 = StreamSpec((1, 1, 3), bits=12, signed=True)  # two bytes per value, little-endian
    v = np.array([[[[-2048, 2047, -1]]]])
    packed = pack_frames(s12, v)
    assert packed.tolist() == [[0x00, 0xF8, 0xFF, 0x07, 0xFF, 0xFF]]
    np.testing.assert_array_equal(unpack_frames(s12, packed), v)
    np.testing.assert_array_equal(unpack_frames(s12, bytes(packed) * 2), np.concatenate([v, v]))
    u4 = StreamSpec((2, 2, 1), bits=4, signed=False)
    b = np.arange(8).reshape(2, 2, 2, 1)
    np.testing.assert_array_equal(unpack_frames(u4, pack_frames(u4, b)), b)
    assert s12.frame_bytes == 6 and u4.frame_bytes == 4


def test_pack_refuses_bad_frames():
    s = StreamSpec((2, 2, 3), bits=8, signed=False)
    with pytest.raises(ValueError, match=r"shape \[N, 2, 2, 3\]"):
        pack_frames(s, np.zeros((1, 2, 3, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        pack_frames(s, np.full((1, 2, 2, 3), 256))
    with pytest.raises(ValueError, match="integers"):
        pack_frames(s, np.zeros((1, 2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="whole number of frames"):
        unpack_frames(s, np.zeros(13, dtype=np.uint8))


@pytest.fixture(scope="module")
def slice_graph(slice_onnx):
    return apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))


def test_sim_backend_infer_and_counters(slice_graph, val_images):
    """Two real images: every output value equals the golden model; the counters read over
    AXI-Lite agree with the testbench's own tlast timing."""
    g = slice_graph
    backend = SimBackend(g)
    with AcceleratorDriver(backend) as drv:
        out = drv.infer(val_images)
        c = drv.counters()
    assert out.shape == (2, *g.tensors[g.output].shape)
    for img, o in zip(val_images, out):
        np.testing.assert_array_equal(o, run_graph(g, img)[g.output])
    ends = backend.last_cycles
    assert len(ends) == 2
    assert c["frames"] == 2 and c["in_frames"] == 2
    assert c["idle"] and not c["busy"] and not c["tlast_err"]
    assert c["last_frame_cycles"] == ends[1] - ends[0]
    assert c["id"] >> 16 == 0xDEF1 and c["graph_hash"] == drv.spec.graph_hash


@pytest.mark.slow
def test_sim_backend_throughput(slice_graph):
    backend = SimBackend(slice_graph, clock_mhz=100.0)
    drv = AcceleratorDriver(backend).load()
    t = drv.throughput(3)
    ends = backend.last_cycles
    assert t["frames"] == 3
    assert t["cycles_per_frame"] == ends[2] - ends[1] >= drv.spec.ii_cycles
    assert t["fps"] == pytest.approx(100e6 / t["cycles_per_frame"])
    with pytest.raises(ValueError, match="at least 2"):
        drv.throughput(1)


def test_timeout_on_a_truncated_frame(slice_graph):
    backend = SimBackend(slice_graph, cycle_limit=30_000)
    backend.load()
    frame = bytes(pack_frames(backend.spec.input, np.zeros(backend.spec.input.shape, np.uint8))[0])
    with pytest.raises(AcceleratorTimeout, match=r"frame 0 not complete after 30000 cycles.*busy"):
        backend.transfer([frame[: len(frame) // 2]], 1)
    regs = backend.read_registers()
    assert regs["IN_FRAME_COUNT"] == 0 and regs["FRAME_COUNT"] == 0


def test_timeout_when_the_output_never_drains(slice_graph):
    backend = SimBackend(slice_graph, cycle_limit=30_000, backpressure=1.0)
    with pytest.raises(AcceleratorTimeout, match=r"out_wait.*not drained"):
        AcceleratorDriver(backend).infer(np.zeros((1, 64, 64, 3), np.uint8))


def test_pynq_backend_refuses_off_board(tmp_path, slice_graph):
    spec = AcceleratorSpec.from_graph(slice_graph, 100.0)
    (tmp_path / "deflow.bit").write_bytes(b"\x00" * 16)
    (tmp_path / "deflow.hwh").write_text("<xml/>")
    (tmp_path / "accel.json").write_text(spec.to_json())
    assert AcceleratorSpec.load(tmp_path) == spec
    with pytest.raises(BackendUnavailable, match="needs a Zynq board"):
        PynqBackend(tmp_path / "deflow.bit").load()
    with pytest.raises(FileNotFoundError, match="hwh"):
        (tmp_path / "deflow.hwh").unlink()
        PynqBackend(tmp_path / "deflow.bit").load()
    assert json.loads(spec.to_json())["registers"]["LAST_FRAME_CYCLES"] == 0x14


def test_sim_backend_reads_a_compiled_folder_and_refuses_bad_arguments(tmp_path, slice_graph):
    slice_graph.save(tmp_path / "hw_graph.json")
    tensor = slice_graph.layers[0].outputs[0]
    (tmp_path / "fifo_depths.json").write_text(json.dumps({tensor: 16}))
    b = SimBackend(tmp_path)
    assert b.fifo_depths == {tensor: 16}
    assert b.spec == AcceleratorSpec.from_graph(slice_graph, 200.0)
    assert b.cycle_limit == 4 * b.spec.ii_cycles + b.spec.fill_cycles + 10_000
    with pytest.raises(FileNotFoundError, match="deflow compile"):
        SimBackend(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="backpressure must be a probability"):
        SimBackend(slice_graph, backpressure=1.5)


def test_spec_keeps_a_per_channel_output_scale():
    # the detector's merged heads are quantised per channel: accel.json must carry all C scales
    from hw.graph import HWGraph, HWLayer, TensorInfo

    rq = HWLayer("rq", "Requant", ["acc"], ["y"],
                 attrs={"shift": 8, "out_min": -128, "out_max": 127, "channels": 3,
                        "pixels": 4, "acc_bits": 16, "in_signed": True},
                 params={"multiplier": np.array([3, 5, 7]), "bias": np.array([0, 0, 0])})
    ts = {"acc": TensorInfo(name="acc", shape=(2, 2, 3), bits=16, signed=True, lanes=1),
          "y": TensorInfo(name="y", shape=(2, 2, 3), bits=8, signed=True, lanes=1,
                          scale=[0.5, 0.25, 0.125])}
    g = HWGraph(layers=[rq], tensors=ts, input="acc", output="y")
    spec = AcceleratorSpec.from_graph(g, 150.0)
    assert spec.output_scale == [0.5, 0.25, 0.125]
    back = AcceleratorSpec.from_json(spec.to_json())
    assert back.output_scale == [0.5, 0.25, 0.125] and back.clock_mhz == 150.0
    ts["y"].scale = 0.5
    assert AcceleratorSpec.from_graph(g, 150.0).output_scale == 0.5


def test_sim_backend_waits_for_the_pipeline_fill(slice_graph):
    # the first frame's fill is a multiple of II (5.1 x II on the small detector): the default
    # timeout must include the sum of the layers' cycles, not only 4 x II
    from sw.compiler.estimate import estimate

    b = SimBackend(slice_graph)
    est = estimate(slice_graph)
    fill = sum(e.cycles for e in est)
    assert b.spec.fill_cycles == fill and fill > b.spec.ii_cycles
    assert b.cycle_limit == 4 * b.spec.ii_cycles + fill + 10_000
    assert AcceleratorSpec.from_json(b.spec.to_json()).fill_cycles == fill
