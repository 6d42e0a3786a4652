"""Compiler: lowering of the slice network, golden model vs QONNX execution, folding rules,
and refusals of unsupported graphs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sw.compiler.execute import run_graph
from sw.compiler.folding import apply_folding, load_folding
from sw.compiler.lower import CompileError, lower_qonnx

SLICE_FOLDING = "sw/configs/slice_folding.json"


def test_slice_lowers_to_the_expected_hardware_layers(slice_onnx):
    g = lower_qonnx(slice_onnx)
    # the input quantiser (scale 1 on 0..255 pixels) is the identity: no layer for it
    ops = [l.op for l in g.layers]
    # an activation is a Thresholding, or a Requant where that is exact (sw.compiler.threshold_form;
    # whether it is depends on the calibrated scales)
    ops = ["Act" if op in ("Thresholding", "Requant") else op for op in ops]
    assert ops == [
        "SlidingWindow", "MVAU", "Act",              # conv0 3x3 s2
        "SlidingWindow", "VVAU", "Act",              # dw 3x3
        "MVAU", "Act",                               # pw 1x1
        "Duplicate",                                 # features -> offset branch + sampler
        "SlidingWindow", "MVAU", "Act",              # offset branch 3x3 -> 1 channel
        "DeformableSampler", "VVAU", "Act",          # deformable depthwise 3x3
        "MVAU", "Act",                               # head 1x1
    ]
    offsets = g.layer("MVAU_2_thresholds")  # uint3 offsets: levels 0..7
    if offsets.op == "Requant":
        assert (offsets.attrs["out_min"], offsets.attrs["out_max"]) == (0, 7)
    else:
        assert offsets.params["thresholds"].shape[1] == 7 and offsets.attrs["out_bias"] == 0
    assert g.tensors[offsets.outputs[0]].bits == 3 and not g.tensors[offsets.outputs[0]].signed
    assert g.tensors[g.output].shape == (32, 32, 8) and g.tensors[g.output].signed
    assert g.layer("MVAU_0").attrs["weight_bits"] == 8
    assert all(g.layer(n).attrs["weight_bits"] == 4 for n in ("VVAU_0", "MVAU_1", "MVAU_3"))


def test_golden_model_tracks_qonnx_execution(slice_onnx, val_images):
    """The integer model is within a few LSB of Brevitas' float semantics (measured)."""
    from models.export import run_qonnx

    g = apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))
    scale = g.tensors[g.output].scale
    for img in val_images:
        gold = run_graph(g, img)[g.output]
        ref = run_qonnx(slice_onnx, img[None].transpose(0, 3, 1, 2).astype(np.float32))
        ref_int = np.round(ref[0].transpose(1, 2, 0) / scale).astype(np.int64)
        diff = np.abs(gold - ref_int)
        # a flipped offset rounding moves 9 taps, so a few LSB can differ locally
        assert np.mean(diff == 0) > 0.99
        assert diff.max() <= 8
        assert gold.std() > 1.0  # not a degenerate (constant) output


def test_golden_model_is_independent_of_folding(slice_onnx, val_images):
    g = lower_qonnx(slice_onnx)
    a = run_graph(apply_folding(g, {}), val_images[0])[g.output]
    b = run_graph(apply_folding(g, load_folding(SLICE_FOLDING)), val_images[0])[g.output]
    np.testing.assert_array_equal(a, b)


def test_folding_inserts_width_converters_where_lanes_differ(slice_onnx):
    g = apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))
    for layer in g.layers:
        for port, t in enumerate(layer.inputs):
            prod = g.producer(t)
            if prod is not None and layer.op == "MVAU":
                assert g.tensors[t].lanes == layer.folding["SIMD"]
    dwcs = [l for l in g.layers if l.op == "WidthConverter"]
    assert {(l.attrs["in_lanes"], l.attrs["out_lanes"]) for l in dwcs} == {(4, 32), (32, 4)}


@pytest.mark.parametrize("layer,entry,rule", [
    ("MVAU_0", {"PE": 3}, "MH % PE == 0 is broken: MH=16, PE=3"),
    ("MVAU_1", {"SIMD": 5}, "MW % SIMD == 0 is broken: MW=16, SIMD=5"),
    ("VVAU_0", {"PE": 5}, "C % PE == 0 is broken: C=16, PE=5"),
    ("MVAU_0", {"SIMD": 9}, "C % SIMD == 0 is broken"),  # MW=27 allows 9, the SWG's C=3 does not
])
def test_folding_rule_violations_are_refused_naming_layer_and_rule(slice_onnx, layer, entry, rule):
    g = lower_qonnx(slice_onnx)
    with pytest.raises(CompileError) as exc:
        apply_folding(g, {layer: entry})
    assert rule in str(exc.value)
    assert ("MVAU" in str(exc.value)) or ("VVAU" in str(exc.value)) or ("SlidingWindow" in str(exc.value))


def test_folding_config_naming_an_unknown_layer_is_refused(slice_onnx):
    with pytest.raises(CompileError, match="MVAU_99"):
        apply_folding(lower_qonnx(slice_onnx), {"MVAU_99": {"PE": 1}})


def test_bad_folding_file_is_refused(tmp_path):
    p = tmp_path / "f.json"
    p.write_text("{not json")
    with pytest.raises(CompileError, match="not valid JSON"):
        load_folding(p)
    with pytest.raises(CompileError, match="does not exist"):
        load_folding(tmp_path / "missing.json")


def _quant(name, x, out, bits, signed):
    return helper.make_node("Quant", [x, f"{name}_s", f"{name}_z", f"{name}_b"], [out], name=name,
                            domain="qonnx.custom_op.general", signed=signed, narrow=0,
                            rounding_mode="ROUND")


def _quant_inits(name, scale, bits):
    return [helper.make_tensor(f"{name}_s", TensorProto.FLOAT, [], [scale]),
            helper.make_tensor(f"{name}_z", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor(f"{name}_b", TensorProto.FLOAT, [], [float(bits)])]


def test_unsupported_op_is_refused_before_any_hdl(tmp_path):
    """A Sigmoid (no hardware layer) is refused, naming the node as exported and the rule."""
    w = np.ones((4, 3, 1, 1), dtype=np.float32)
    nodes = [_quant("q_in", "x", "xq", 8, 0), _quant("q_w", "w", "wq", 4, 1),
             helper.make_node("Conv", ["xq", "wq"], ["c"], name="conv0", kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c"], ["y"], name="sig0")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=_quant_inits("q_in", 1.0, 8) + _quant_inits("q_w", 1.0, 4)
        + [onnx.numpy_helper.from_array(w, "w")])
    path = tmp_path / "sig.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(CompileError, match=r"\(Sigmoid\) \(exported as 'sig0'\) after the last "
                                           r"hardware layer"):
        lower_qonnx(path)


def test_conv_without_output_quant_is_a_float_head(tmp_path):
    """A last conv with no activation quantiser: its accumulators leave the fabric and the
    host applies the scale (FINN's float head)."""
    from sw.compiler.frontend import lower_model

    w = np.ones((4, 3, 1, 1), dtype=np.float32)
    nodes = [_quant("q_in", "x", "xq", 8, 0), _quant("q_w", "w", "wq", 4, 1),
             helper.make_node("Conv", ["xq", "wq"], ["y"], name="conv0", kernel_shape=[1, 1])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=_quant_inits("q_in", 1.0, 8) + _quant_inits("q_w", 1.0, 4)
        + [onnx.numpy_helper.from_array(w, "w")])
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    lw = lower_model(path)
    assert [l.op for l in lw.graph.layers] == ["MVAU"]
    out = lw.graph.tensors[lw.graph.output]
    assert out.kind == "acc" and out.signed
    x = np.arange(8 * 8 * 3).reshape(8, 8, 3) % 256
    y = run_graph(lw.graph, x)[lw.graph.output]
    np.testing.assert_array_equal(y, np.repeat(x.sum(-1, keepdims=True), 4, axis=-1))


def test_missing_or_corrupt_model_file_is_refused(tmp_path):
    with pytest.raises(CompileError, match="does not exist"):
        lower_qonnx(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CompileError, match="not a readable ONNX model"):
        lower_qonnx(bad)


def test_hw_graph_round_trips_through_json(slice_onnx, tmp_path):
    g = apply_folding(lower_qonnx(slice_onnx), load_folding(SLICE_FOLDING))
    g.save(tmp_path / "g.json")
    from hw.graph import HWGraph

    g2 = HWGraph.load(tmp_path / "g.json")
    x = np.random.default_rng(0).integers(0, 256, (64, 64, 3))
    np.testing.assert_array_equal(run_graph(g, x)[g.output], run_graph(g2, x)[g2.output])
    assert json.loads((tmp_path / "g.json").read_text())["output"] == g.output
