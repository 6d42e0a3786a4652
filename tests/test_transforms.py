"""deflow's own streamliner (`--frontend deflow`) and lowering of the detector forms: golden model ==
execution of the streamlined integer graph, exactly, on real images; refusals name node + rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from sw.execute import compare_with_brevitas, run_graph, run_streamlined
from sw.folding import apply_folding
from sw.lower import CompileError, lower_streamlined, streamline_qonnx
from sw.lower import lower_qonnx_deflow as lower_qonnx  # these test deflow's own streamliner


class FormsNet(nn.Module):
    """conv -> BN -> ReLU, max-pool, channel split, upsample, concat (shared quantizer), shuffle."""

    def __init__(self, shared: bool = True):
        super().__init__()
        from brevitas.nn import QuantConv2d, QuantIdentity, QuantReLU
        from brevitas.quant import Uint8ActPerTensorFloat

        from models.slice import Int4WeightPerChannelFloat, PixelQuant

        self.inp = QuantIdentity(act_quant=PixelQuant)
        self.conv = QuantConv2d(3, 8, 3, padding=1, bias=False, weight_quant=Int4WeightPerChannelFloat)
        self.bn = nn.BatchNorm2d(8)
        self.act = QuantReLU(act_quant=Uint8ActPerTensorFloat)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.cat_q = QuantReLU(act_quant=Uint8ActPerTensorFloat)
        self.cat_q2 = self.cat_q if shared else QuantReLU(act_quant=Uint8ActPerTensorFloat)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        y = self.act(self.bn(self.conv(self.inp(x))))
        a, b = y.chunk(2, dim=1)
        z = torch.cat([self.cat_q(self.up(self.pool(a))), self.cat_q2(b)], 1)
        n, c, h, w = z.shape
        return z.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


def _export(model, path, images):
    from models.export import export_qonnx
    from models.slice import calibrate

    calibrate(model, torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32)))
    export_qonnx(model, path, input_shape=(1, 3, 16, 16))
    return path


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    from models.data import sample_images

    torch.manual_seed(0)
    model = FormsNet().eval()
    path = _export(model, tmp_path_factory.mktemp("forms") / "forms.onnx", sample_images(4, 16, split="train"))
    return model, path


def test_forms_lower_to_the_contract_layers(forms):
    _, path = forms
    ops = sorted(l.op for l in lower_qonnx(path).layers)
    # conv3x3 (SWG+MVAU+Requant), split, pool (SWG+MaxPool), upsample, two re-quantised concat
    # inputs (shared quantizer, new scale), concat, shuffle
    assert ops == sorted(["SlidingWindow", "MVAU", "Requant", "ChannelSplit", "SlidingWindow", "MaxPool",
                          "Upsample", "Requant", "Requant", "Concat", "ChannelShuffle"])


def test_streamlined_graph_is_integer_and_golden_equals_it_exactly(forms, slice_onnx):
    from models.data import sample_images

    for path, size in ((forms[1], 16), (slice_onnx, 64)):
        s = streamline_qonnx(path)
        assert {n.op_type for n in s.graph.node} <= {"Quant", "Conv", "Requant", "MaxPool", "Resize", "Split",
                                                      "Concat", "ChannelShuffle", "DeformableSample"}
        for fold in ({}, None):
            g = lower_streamlined(s)
            g = apply_folding(g, fold if fold is not None else {"Defaults": {"PE": 2}} if size == 16 else {})
            for img in sample_images(3, size, split="val"):
                gold = run_graph(g, img)[g.output]
                ref = run_streamlined(s, img)
                np.testing.assert_array_equal(gold, ref)
                assert gold.std() > 0.5


def test_distance_to_brevitas_is_measured(forms):
    from models.data import sample_images

    model, path = forms
    r = compare_with_brevitas(model, lower_qonnx(path), sample_images(2, 16, split="val"))
    assert r["values"] == 2 * 16 * 16 * 8
    assert r["share_equal"] > 0.9 and r["max_lsb"] <= 4


def test_concat_of_different_scales_is_refused(tmp_path):
    from models.data import sample_images

    torch.manual_seed(0)
    path = _export(FormsNet(shared=False).eval(), tmp_path / "bad.onnx", sample_images(4, 16, split="train"))
    with pytest.raises(CompileError, match=r"\(Concat\): inputs carry different scales .* same activation quantizer"):
        lower_qonnx(path)


def _q(name, x, out, signed=0):
    return helper.make_node("Quant", [x, f"{name}_s", f"{name}_z", f"{name}_b"], [out], name=name,
                            domain="qonnx.custom_op.general", signed=signed, narrow=0, rounding_mode="ROUND")


def _qi(name, scale, bits):
    return [helper.make_tensor(f"{name}_s", TensorProto.FLOAT, [], [scale]),
            helper.make_tensor(f"{name}_z", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor(f"{name}_b", TensorProto.FLOAT, [], [float(bits)])]


def test_conv_on_a_float_tensor_is_refused(tmp_path):
    w = onnx.numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    nodes = [_q("q_in", "x", "xq"), helper.make_node("Add", ["xq", "half"], ["xs"], name="add0"),
             _q("q_w", "w", "wq", 1), helper.make_node("Conv", ["xs", "wq"], ["c"], name="conv0"),
             _q("q_o", "c", "y")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                          initializer=_qi("q_in", 1.0, 8) + _qi("q_w", 1.0, 4) + _qi("q_o", 1.0, 8) + [w, half])
    onnx.save(helper.make_model(g), tmp_path / "m.onnx")
    with pytest.raises(CompileError, match=r"node 'add0' \(Add\): float op left after streamlining"):
        lower_qonnx(tmp_path / "m.onnx")


def test_dynamic_shape_is_refused(tmp_path):
    g = helper.make_graph([_q("q_in", "x", "y")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])],
                          initializer=_qi("q_in", 1.0, 8))
    onnx.save(helper.make_model(g), tmp_path / "d.onnx")
    with pytest.raises(CompileError, match="dynamic or unknown shape"):
        lower_qonnx(tmp_path / "d.onnx")
