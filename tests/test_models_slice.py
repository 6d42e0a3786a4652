"""First model slice: deformable sampling op, SliceNet, its QONNX export and qonnx execution.

Run with the repository root on PYTHONPATH (qonnx imports the ``sw.qonnx_ops`` domain by name).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from models.data import DataError, load_image_nhwc, sample_images, to_nchw_float
from models.deform import DeformSample, _sample, deform_sample
from models.export import export_qonnx, run_qonnx
from models.slice import INPUT_SIZE, MAX_OFFSET, build_slice_model
from hw.golden import deformable_sample as golden_deformable_sample


def golden_nchw(x: np.ndarray, off: np.ndarray, max_offset: int) -> np.ndarray:
    """hw.golden.deformable_sample per batch item, as NCHW [N, C*9, H, W]."""
    n, c, h, w = x.shape
    out = []
    for i in range(n):
        win = golden_deformable_sample(x[i].transpose(1, 2, 0), off[i, 0], max_offset)
        out.append(win[..., 0].reshape(h, w, c * 9).transpose(2, 0, 1))
    return np.stack(out)


# --------------------------------------------------------------------------- (a) the op itself


@pytest.mark.parametrize("shape", [(2, 5, 9, 11), (1, 3, 4, 4), (1, 2, 1, 7)])
def test_deform_sample_equals_golden(shape):
    g = torch.Generator().manual_seed(sum(shape))
    n, c, h, w = shape
    x = torch.randint(-128, 128, shape, generator=g)
    off = torch.randint(0, MAX_OFFSET + 1, (n, 1, h, w), generator=g)
    off[0, 0, 0, 0] = MAX_OFFSET  # top-left corner, largest offset: taps up or left are outside
    y = deform_sample(x.float(), off.float(), MAX_OFFSET)
    ref = golden_nchw(x.numpy(), off.numpy(), MAX_OFFSET)
    assert y.shape == (n, c * 9, h, w)
    np.testing.assert_array_equal(y.numpy().astype(np.int64), ref)
    # out-of-image taps really occur and read zero
    assert (ref[0, :, 0, 0].reshape(c, 9)[:, [0, 1, 2, 3, 6]] == 0).all()


def test_deform_sample_semantics_small_cases():
    x = torch.arange(1.0, 26.0).reshape(1, 1, 5, 5)
    zero = deform_sample(x, torch.zeros(1, 1, 5, 5))
    assert torch.equal(zero, x.repeat_interleave(9, dim=1))  # d=0: the centre nine times
    one = deform_sample(x, torch.ones(1, 1, 5, 5))
    unf = torch.nn.functional.unfold(x, 3, padding=1).reshape(1, 9, 5, 5)
    assert torch.equal(one, unf)  # d=1: a plain zero-padded 3x3 window


def test_deform_sample_gradients():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    off = torch.randint(0, MAX_OFFSET + 1, (2, 1, 6, 7), generator=g).double().requires_grad_()
    wgt = torch.randn(2, 27, 6, 7, generator=g, dtype=torch.float64)
    (deform_sample(x, off) * wgt).sum().backward()
    # x: exact (compare with autograd through the gather itself)
    x2 = x.detach().clone().requires_grad_()
    (_sample(x2, off.detach().long()[:, 0]) * wgt).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    # offsets: central difference in d (one-sided at 0 and max_offset); each output pixel
    # depends only on its own offset, so a global +-1 shift gives every pixel's difference
    d = off.detach().long()[:, 0]
    dp, dm = (d + 1).clamp(max=MAX_OFFSET), (d - 1).clamp(min=0)
    diff = ((_sample(x.detach(), dp) - _sample(x.detach(), dm)) * wgt)
    expect = diff.reshape(2, 3, 9, 6, 7).sum(dim=(1, 2)) / (dp - dm).clamp(min=1)
    torch.testing.assert_close(off.grad[:, 0], expect)


def test_deform_sample_rounds_and_clips_like_design():
    x = torch.randn(1, 2, 5, 5)
    raw = torch.tensor([-3.0, 0.4, 1.5, 2.5, 6.6, 11.0]).repeat(5)[:25].reshape(1, 1, 5, 5)
    ref = deform_sample(x, torch.round(raw).clamp(0, MAX_OFFSET))
    assert torch.equal(deform_sample(x, raw), ref)
    with pytest.raises(ValueError):
        deform_sample(x, torch.zeros(1, 1, 5, 4))
    assert DeformSample(3).max_offset == 3


# ------------------------------------------------------------------ qonnx CustomOp on its own


def _one_node_model(n, c, h, w, max_offset):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model
    from sw.qonnx_ops.deformable_sample import make_deformable_sample_node

    node = make_deformable_sample_node("x", "off", "y", max_offset, name="ds0")
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w]),
         helper.make_tensor_value_info("off", TensorProto.FLOAT, [n, 1, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c * 9, h, w])])
    model = qonnx_make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                  helper.make_opsetid("sw.qonnx_ops", 1)])
    return ModelWrapper(model)


def test_qonnx_custom_op_executes_golden_on_float_values():
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.infer_shapes import InferShapes

    model = _one_node_model(2, 3, 6, 5, MAX_OFFSET)
    model = model.transform(InferShapes())
    assert model.get_tensor_shape("y") == [2, 27, 6, 5]
    assert "Required attribute max_offset is set" in getCustomOp(model.graph.node[0]).verify_node()
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (2, 3, 6, 5))
    x = (q * 0.0123).astype(np.float32)  # a Quant output: integer * scale
    off = rng.integers(0, MAX_OFFSET + 1, (2, 1, 6, 5)).astype(np.float32)
    y = execute_onnx(model, {"x": x, "off": off})["y"]
    assert y.dtype == np.float32
    expect = (golden_nchw(q, off.astype(np.int64), MAX_OFFSET) * 0.0123).astype(np.float32)
    np.testing.assert_array_equal(y, expect)
    np.testing.assert_array_equal(y, deform_sample(torch.from_numpy(x),
                                                   torch.from_numpy(off)).numpy())
    bad = off.copy()
    bad[0, 0, 0, 0] = MAX_OFFSET + 1
    with pytest.raises(Exception, match="ds0"):
        execute_onnx(model, {"x": x, "off": bad})


# --------------------------------------------------------------------- SliceNet and its export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    calib = sample_images(8, INPUT_SIZE)
    model = build_slice_model(seed=0, calibrate_images=calib)
    path = tmp_path_factory.mktemp("slice") / "slice.onnx"
    wrapper = export_qonnx(model, path, input_shape=(1, 3, INPUT_SIZE, INPUT_SIZE))
    return model, wrapper, path


EXPECTED_OPS = (["Quant"] * 7 + ["Conv", "Relu", "Quant"] * 4
                + ["DeformableSample", "Conv", "Relu", "Quant", "Conv", "Quant"])


def test_build_is_deterministic_and_calibrated(exported):
    model, _, _ = exported
    again = build_slice_model(seed=0, calibrate_images=sample_images(8, INPUT_SIZE))
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    for act in (model.act0, model.act1, model.act2, model.act3, model.out_q):
        s = float(act.act_quant.scale())
        assert np.isfinite(s) and 1e-5 < s < 10.0
    assert float(model.inp.act_quant.scale()) == 1.0
    assert float(model.off_act.act_quant.scale()) == 1.0
    assert int(model.off_act.act_quant.bit_width()) == 3


def test_export_graph_structure(exported):
    _, w, path = exported
    assert path.is_file()
    ops = [n.op_type for n in w.graph.node]
    assert ops == EXPECTED_OPS
    ds = w.get_nodes_by_op_type("DeformableSample")
    assert len(ds) == 1  # (c)
    assert ds[0].domain == "sw.qonnx_ops"
    assert [a.i for a in ds[0].attribute if a.name == "max_offset"] == [MAX_OFFSET]
    assert w.get_tensor_shape(ds[0].output[0]) == [1, 32 * 9, 32, 32]
    assert w.get_opset_imports().get("sw.qonnx_ops") == 1
    assert w.get_tensor_shape(w.graph.output[0].name) == [1, 8, 32, 32]
    # input Quant: exact on pixels
    q0 = w.graph.node[0]
    assert q0.input[0] == w.graph.input[0].name
    assert [float(w.get_initializer(i)) for i in q0.input[1:]] == [1.0, 0.0, 8.0]
    # offsets Quant: unsigned 3 bit, scale 1
    qoff = w.find_producer(ds[0].input[1])
    assert qoff.op_type == "Quant"
    assert [float(w.get_initializer(i)) for i in qoff.input[1:]] == [1.0, 0.0, 3.0]
    # weight bit widths in conv order: conv0 8, the rest 4
    bits = [float(w.get_initializer(w.find_producer(c.input[1]).input[3]))
            for c in w.get_nodes_by_op_type("Conv")]
    assert bits == [8.0, 4.0, 4.0, 4.0, 4.0, 4.0]


def test_qonnx_execution_equals_torch_on_real_images(exported):
    model, w, path = exported
    imgs = sample_images(2, INPUT_SIZE)
    x = to_nchw_float(imgs)
    with torch.no_grad():
        y_torch, off_torch = model.forward_with_offsets(x)
    y_q, ctx = run_qonnx(path, x, return_full_context=True)
    out_scale = float(w.get_initializer(w.find_producer(w.graph.output[0].name).input[1]))
    max_diff = float(np.abs(y_q - y_torch.numpy()).max())
    print(f"\nmax |qonnx - torch| = {max_diff} (output scale {out_scale})")
    # Both sides compute in float32 with different convolution kernels (torch vs onnxruntime),
    # so a value that lands exactly on a rounding boundary of an intermediate Quant node can
    # flip by one LSB and propagate (an offset flip moves a whole 3x3 window). For seed 0 on
    # these images no value flips (measured: 0 differences in every Quant output on 16 VOC val
    # images); other seeds show ~1e-4 of the outputs differing, by up to 7 LSB.
    assert max_diff <= out_scale * 1.0001, (
        f"qonnx and torch differ by {max_diff / out_scale:.2f} output LSB: most likely a "
        "float rounding-boundary flip in an intermediate Quant node, not a semantic bug")
    # (d) the offsets the exported graph feeds DeformableSample: integers in [0, 7]
    ds = w.get_nodes_by_op_type("DeformableSample")[0]
    off = ctx[ds.input[1]]
    assert off.shape == (2, 1, 32, 32)
    assert np.all(off == np.round(off)) and off.min() >= 0 and off.max() <= MAX_OFFSET
    assert len(np.unique(off)) >= 4  # not degenerate
    np.testing.assert_array_equal(off, off_torch.numpy())
    # the output is int8 * scale and not degenerate
    q = y_q / out_scale
    assert np.allclose(q, np.round(q), atol=1e-3) and q.min() >= -128 and q.max() <= 127
    assert len(np.unique(np.round(q))) > 10


def test_torchscript_exporter_gives_same_graph(exported, tmp_path):
    model, w, _ = exported
    w2 = export_qonnx(model, tmp_path / "ts.onnx", dynamo=False)
    assert [n.op_type for n in w2.graph.node] == [n.op_type for n in w.graph.node]
    x = to_nchw_float(sample_images(1, INPUT_SIZE))
    np.testing.assert_array_equal(run_qonnx(w2, x), run_qonnx(w, x))


# ----------------------------------------------------------------------------------- data


def test_data_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(DataError, match="nope.jpg"):
        load_image_nhwc(missing, 64)
    corrupt = tmp_path / "bad.jpg"
    corrupt.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="bad.jpg"):
        load_image_nhwc(corrupt, 64)


def test_sample_images_fallback_without_voc(monkeypatch, tmp_path):
    import models.data as data

    monkeypatch.delenv(data.VOC_ENV_VAR, raising=False)
    monkeypatch.setattr(data, "DEFAULT_VOC_ROOT", tmp_path / "absent")
    assert data.find_voc_root() is None
    imgs = data.sample_images(4, 32)
    assert imgs.shape == (4, 32, 32, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs[3], imgs[0])  # three photos, cycled
    monkeypatch.setenv(data.VOC_ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(DataError, match="absent"):
        data.find_voc_root()
