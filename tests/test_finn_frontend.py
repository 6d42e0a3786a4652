"""FINN's front end on Brevitas models written outside the project (tests/foreign_models.py):
each lowers through FINN's transformations, the golden model equals FINN's execution of the
hardware-layer graph exactly, its distance to Brevitas is measured, each compiles for every
board, and the small ones run bit-exact in RTL under stalls. Bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from foreign_models import FOREIGN_MODELS, build_foreign, sample_input
from sw.compiler.boards import BOARDS
from sw.flows.cli import main
from sw.compiler.execute import run_graph
from sw.compiler.folding import apply_folding
from sw.compiler.frontend import brevitas_distance, lower_model

# largest distance to Brevitas's output, in output LSB, measured on 3 random frames; 0 where
# FINN's thresholds reproduce Brevitas exactly. decoder_like concatenates two differently
# quantised tensors: the finer one is requantised onto the coarser scale
# (sw.compiler.finn_transforms.RescaleConcatInputs), which the float head's accumulator LSB shows.
MAX_LSB = {"mobile_like": 0, "decoder_like": 11, "residual_odd": 0, "w8a8_plain": 0,
           "pool_fork": 0}
RTL_MODELS = ("residual_odd", "w8a8_plain", "decoder_like", "pool_fork")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from models.export import export_qonnx

    root = tmp_path_factory.mktemp("foreign")
    paths = {}
    for name, (_, shape, _) in FOREIGN_MODELS.items():
        paths[name] = root / f"{name}.onnx"
        export_qonnx(build_foreign(name), paths[name], input_shape=shape,
                     example_input=sample_input(name, seed=3), dynamo=False)
    return paths


@pytest.fixture(scope="module")
def lowered(exports):
    return {name: lower_model(path) for name, path in exports.items()}


def _pixels(name, n, seed=0):
    shape = FOREIGN_MODELS[name][1]
    return np.random.default_rng(seed).integers(0, 256, (n, shape[2], shape[3], shape[1]))


@pytest.mark.parametrize("name", sorted(FOREIGN_MODELS))
def test_golden_model_equals_finn_execution(lowered, name):
    lw = lowered[name]
    fl = lw.finn
    for p in _pixels(name, 2):
        _, ctx = fl.run(p.transpose(2, 0, 1)[None], return_context=True)
        finn_out = ctx[fl.dataflow_output][0]
        gold = run_graph(lw.graph, p)[lw.graph.output]
        np.testing.assert_array_equal(gold, finn_out)


@pytest.mark.parametrize("name", sorted(FOREIGN_MODELS))
def test_distance_to_brevitas(lowered, exports, name):
    d = brevitas_distance(lowered[name], lowered[name].graph, exports[name], _pixels(name, 3))
    assert d["max_lsb"] == MAX_LSB[name], d
    if MAX_LSB[name] == 0:
        assert d["share_equal"] == 1.0


def test_input_scale_follows_the_input_quantiser(lowered):
    assert lowered["mobile_like"].finn.input_scale == pytest.approx(1 / 255)
    assert lowered["residual_odd"].finn.input_scale == 1.0  # a scale-1 quantiser: raw pixels


def test_ops_cover_the_foreign_set(lowered):
    ops = {l.op for lw in lowered.values() for l in lw.graph.layers}
    assert {"Thresholding", "SlidingWindow", "MVAU", "VVAU", "MaxPool", "Upsample", "Concat",
            "Add", "Duplicate"} <= ops


@pytest.mark.parametrize("board", sorted(BOARDS))
@pytest.mark.parametrize("name", sorted(FOREIGN_MODELS))
def test_compiles_for_every_board(exports, name, board, tmp_path):
    out = tmp_path / "out"
    assert main(["compile", str(exports[name]), "--board", board, "--no-verilog",
                 "--out", str(out)]) == 0
    rep = json.loads((out / "estimates.json").read_text())
    assert rep["fits"] is True
    front = json.loads((out / "frontend.json").read_text())
    assert front["frontend"] == "finn"
    assert {"finn_hw.onnx", "host_epilogue.onnx"} <= {p.name for p in out.iterdir()}


def test_finn_lowered_onnx_and_folding_config_are_accepted(exports, tmp_path):
    out = tmp_path / "first"
    assert main(["compile", str(exports["w8a8_plain"]), "--board", "pynq-z2", "--no-verilog",
                 "--out", str(out)]) == 0
    finn_cfg = {"Defaults": {}, "MVAU_0": {"PE": 2, "SIMD": 3}, "FMPadding_0": {"SIMD": 1}}
    (tmp_path / "folding_config.json").write_text(json.dumps(finn_cfg))
    again = tmp_path / "again"
    assert main(["compile", str(out / "finn_hw.onnx"), "--folding",
                 str(tmp_path / "folding_config.json"), "--no-verilog", "--out", str(again)]) == 0
    cfg = json.loads((again / "folding.json").read_text())
    assert cfg["MVAU_0"] == {"PE": 2, "SIMD": 3}
    assert json.loads((again / "frontend.json").read_text())["from_finn_hw_graph"] is True


@pytest.mark.parametrize("name", RTL_MODELS)
def test_rtl_bit_exact_under_stalls(lowered, name):
    from sim.rtlsim import simulate

    from sw.compiler.fifo_analytic import size_fifos_analytic

    lw = lowered[name]
    g = apply_folding(lw.graph, {})
    depths = size_fifos_analytic(g).depths  # the residual and skip paths need deep FIFOs
    frames = list(_pixels(name, 2, seed=5))
    run = simulate(g, frames, stall=0.2, backpressure=0.2, harness="native", fifo_depths=depths)
    assert run.mismatches == [0, 0]
    for got, want in zip(run.outputs, run.expected):
        np.testing.assert_array_equal(got, want)


# -- bad input ------------------------------------------------------------------------------
def test_empty_onnx_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    out = tmp_path / "o"
    assert main(["compile", str(empty), "--board", "pynq-z2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty.onnx" in err[0]
    assert not out.exists()


def test_softmax_after_the_last_conv_is_refused_by_name(exports, tmp_path, capsys):
    m = onnx.load(str(exports["w8a8_plain"]))
    old_out = m.graph.output[0]
    sm_out = helper.make_tensor_value_info("probabilities", old_out.type.tensor_type.elem_type,
                                           None)
    m.graph.node.append(helper.make_node("Softmax", [old_out.name], ["probabilities"],
                                         axis=1, name="Softmax_head"))
    m.graph.output.remove(old_out)
    m.graph.output.append(sm_out)
    path = tmp_path / "softmax.onnx"
    onnx.save(m, str(path))
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    assert main(["compile", str(path), "--board", "pynq-z2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Softmax" in err[0], err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # nothing half-written


def test_dynamic_input_shape_is_one_line(tmp_path, capsys):
    q = helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], name="q_in",
                         domain="qonnx.custom_op.general", signed=0, narrow=0, rounding_mode="ROUND")
    consts = [helper.make_tensor(n, TensorProto.FLOAT, [], [v])
              for n, v in (("s", 1.0), ("z", 0.0), ("b", 8.0))]
    g = helper.make_graph([q], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])],
                          initializer=consts)
    path = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    assert main(["compile", str(path), "--board", "pynq-z2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["deflow: compile error: graph input 'x' has a dynamic or unknown shape "
                   "['N', 3, 4, 4]; export with a fixed batch-1 NCHW shape"], err
