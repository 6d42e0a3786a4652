"""The deformable 3x3 family (models/deform_family.py) against independent references:
ONNX's reference DeformConv for "full", direct Python loops for the other forms, and
hw.golden.deformable_sample for the hardware ("rounded") form."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
from brevitas.nn import QuantIdentity, QuantReLU
from brevitas.quant import Uint8ActPerTensorFloat
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from models.deform_family import FORMS, DeformConv3x3, sample_offsets18, sample_square
from hw.golden import deformable_sample as golden_deformable_sample

N_MAX = 7


def make(form, channels=3, quant=False, seed=0, off_std=0.6, off_bias=None, **kw):
    """A module with an offset branch that produces spread-out offsets (the default init is
    deliberately near the plain 3x3)."""
    torch.manual_seed(seed)
    m = DeformConv3x3(channels, form, quant=quant, **kw).double()
    with torch.no_grad():
        m.offset_conv.weight.normal_(0.0, off_std)
        if off_bias is not None:
            m.offset_conv.bias.fill_(off_bias)
    return m.eval()


def weight(m) -> torch.Tensor:
    """The (dequantised) 1x1 weight ``[C, C*9 / groups]`` of the tap mixer."""
    w = m.conv.quant_weight().value if m.quant else m.conv.weight
    return w.detach().reshape(w.shape[0], -1)


def bil(img: np.ndarray, y: float, x: float) -> float:
    """Scalar bilinear read of ``img[H, W]``, zero outside (the four neighbours separately)."""
    h, w = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    acc = 0.0
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                acc += (1 - abs(y - yy)) * (1 - abs(x - xx)) * img[yy, xx]
    return acc


# ------------------------------------------------------------------------- "full" vs ONNX


@pytest.mark.parametrize("quant", [False, True])
def test_full_equals_onnx_reference_deformconv(quant):
    n, c, h, w = 1, 3, 5, 6
    m = make("full", c, quant=quant, off_std=0.8)
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        y = m(x).numpy()
        off = m.offsets(x).numpy()  # [N, 18, H, W], ours: channel 2*(ky*3+kx) + (0: dy, 1: dx)
    assert np.abs(off).max() > 1.0  # real deformation, some taps leave the image
    # explicit mapping to ONNX's [N, offset_group*kH*kW*2, H, W] with (h, w) innermost pairs
    onnx_off = np.zeros((n, 18, h, w))
    for ky in range(3):
        for kx in range(3):
            t = ky * 3 + kx
            onnx_off[:, (ky * 3 + kx) * 2 + 0] = off[:, 2 * t + 0]  # dy
            onnx_off[:, (ky * 3 + kx) * 2 + 1] = off[:, 2 * t + 1]  # dx
    # ours: weight[o, i*9 + ky*3 + kx]  ->  ONNX W[o, i, ky, kx]
    wgt = weight(m).numpy()
    onnx_w = np.zeros((c, c, 3, 3))
    for o in range(c):
        for i in range(c):
            for ky in range(3):
                for kx in range(3):
                    onnx_w[o, i, ky, kx] = wgt[o, i * 9 + ky * 3 + kx]
    node = helper.make_node("DeformConv", ["X", "W", "offset"], ["Y"], kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "deform",
        [helper.make_tensor_value_info(nm, TensorProto.DOUBLE, None)
         for nm in ("X", "W", "offset")],
        [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    ref = ReferenceEvaluator(model).run(None, {"X": x.numpy(), "W": onnx_w, "offset": onnx_off})
    # the reference goes through GridSample's normalised coordinates: ~1e-7 rounding
    np.testing.assert_allclose(y, ref[0], rtol=0, atol=1e-6)


# --------------------------------------------------------------- other forms vs Python loops


def loop_reference(form, x: np.ndarray, raw: np.ndarray, wgt: np.ndarray) -> np.ndarray:
    """Direct loops. ``raw``: the offset conv output; ``wgt`` ``[C, 9]`` depthwise weights."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, h, w))
    for b in range(n):
        for ch in range(c):
            for y in range(h):
                for xx in range(w):
                    acc = 0.0
                    for ky in range(3):
                        for kx in range(3):
                            t = ky * 3 + kx
                            if form in ("depthwise", "bounded"):
                                dy, dx = raw[b, 2 * t, y, xx], raw[b, 2 * t + 1, y, xx]
                                if form == "bounded":
                                    dy, dx = min(max(dy, 0.0), N_MAX), min(max(dx, 0.0), N_MAX)
                                py, px = y + ky - 1 + dy, xx + kx - 1 + dx
                            else:
                                d = min(max(raw[b, 0, y, xx], 0.0), N_MAX)
                                if form == "rounded":
                                    d = float(round(d))  # Python rounds half to even
                                py, px = y + (ky - 1) * d, xx + (kx - 1) * d
                            acc += wgt[ch, t] * bil(x[b, ch], py, px)
                    out[b, ch, y, xx] = acc
    return out


@pytest.mark.parametrize("form,bias", [("depthwise", 0.0), ("bounded", 0.5), ("square", 2.0),
                                       ("rounded", 2.0)])
def test_forms_equal_python_loops(form, bias):
    n, c, h, w = 2, 2, 5, 7
    m = make(form, c, off_std=0.8, off_bias=bias)
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        y = m(x).numpy()
        raw = m.offset_conv(x).numpy()
    if form == "bounded":  # the bound is exercised
        assert raw.min() < 0
    if form in ("square", "rounded"):  # real dilations, some outside [0, N]
        assert raw.min() < 0 and (raw > 1.5).any()
    np.testing.assert_allclose(y, loop_reference(form, x.numpy(), raw, weight(m).numpy()),
                               rtol=1e-9, atol=1e-9)


def test_offsets_ranges_and_init():
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    for form in FORMS:
        torch.manual_seed(0)
        m = DeformConv3x3(4, form, quant=False)
        off = m.offsets(x).detach()
        if form in ("full", "depthwise", "bounded"):
            assert off.shape == (2, 18, 6, 6)
            assert off.abs().max() < 0.05  # starts near zero displacement
        else:
            assert off.shape == (2, 1, 6, 6)
            assert (off - 1).abs().max() < 0.05  # starts near dilation 1
        if form == "rounded":
            assert torch.equal(off, torch.ones_like(off))
        # at init every form is close to a plain (dense or depthwise) 3x3 conv
        wgt = m.conv.weight.detach().reshape(4, -1, 3, 3)
        ref = torch.nn.functional.conv2d(x, wgt, padding=1, groups=1 if form == "full" else 4)
        torch.testing.assert_close(m(x).detach(), ref, atol=0.05, rtol=0)
    m = make("bounded", 4, off_std=2.0)
    off = m.offsets(x.double())
    assert off.min() == 0 and off.max() <= N_MAX and (off > 0).any()


# ---------------------------------------------------------------- rounded == hardware golden


@pytest.mark.parametrize("quant", [False, True])
def test_rounded_equals_golden(quant):
    n, c, h, w = 2, 3, 8, 9
    torch.manual_seed(1)
    m = DeformConv3x3(c, "rounded", quant=quant).eval()
    with torch.no_grad():
        m.offset_conv.weight.normal_(0.0, 0.05)
        m.offset_conv.bias.fill_(3.0)
    x = torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(2)).float()
    with torch.no_grad():
        off = m.offsets(x)
        taps = m.sample(x)
        y = m(x)
    d = off.numpy().astype(np.int64)
    assert np.array_equal(off.numpy(), d) and d.min() >= 0 and d.max() <= N_MAX
    assert len(np.unique(d)) >= 3  # several dilations in play
    for b in range(n):
        win = golden_deformable_sample(x[b].numpy().astype(np.int64).transpose(1, 2, 0), d[b, 0],
                                       N_MAX)
        ref = win[..., 0].reshape(h, w, c * 9).transpose(2, 0, 1)
        np.testing.assert_array_equal(taps[b].numpy().astype(np.int64), ref)
        mixed = np.einsum("ct,cthw->chw", weight(m).numpy(), ref.reshape(c, 9, h, w))
        np.testing.assert_allclose(y[b].numpy(), mixed, rtol=1e-5, atol=1e-3)


def test_rounded_quant_offsets_are_3bit_scale_one():
    m = DeformConv3x3(2, "rounded", quant=True)
    with torch.no_grad():
        m.offset_conv.weight.zero_()
        m.offset_conv.weight[0, 0, 1, 1] = 1.0
        m.offset_conv.bias.fill_(0.0)
    x = torch.tensor([-2.0, 0.4, 1.5, 2.5, 6.6, 11.0]).view(1, 1, 1, 6).repeat(1, 2, 1, 1)
    # centre tap of channel 0 weight 1 -> raw offsets = x[0]; 4-bit weight quant keeps 1.0
    off = m.offsets(x).detach()
    assert off.flatten().tolist() == [0.0, 0.0, 2.0, 2.0, 7.0, 7.0]


# ---------------------------------------------------------------- gradients, quant, errors


@pytest.mark.parametrize("quant", [False, True])
@pytest.mark.parametrize("form", FORMS)
def test_gradients_flow(form, quant):
    torch.manual_seed(0)
    m = DeformConv3x3(3, form, quant=quant)
    if form == "bounded":  # offsets strictly inside (0, N) so the clip passes gradients
        with torch.no_grad():
            m.offset_conv.bias.fill_(0.5)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(4), requires_grad=True)
    r = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    (m(x) * r).sum().backward()
    for name, p in (("offset_conv.weight", m.offset_conv.weight),
                    ("offset_conv.bias", m.offset_conv.bias), ("conv.weight", m.conv.weight)):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    # gradient w.r.t. the offsets themselves
    off = m.offsets(x).detach().requires_grad_()
    xv = x.detach()
    if form == "rounded":
        taps = m.sampler(xv, off)
    elif form == "square":
        taps = sample_square(xv, off)
    else:
        taps = sample_offsets18(xv, off)
    (m.conv(taps) * r).sum().backward()
    assert off.grad.abs().sum() > 0


@pytest.mark.parametrize("form", FORMS)
def test_between_brevitas_layers(form):
    torch.manual_seed(0)
    m = DeformConv3x3(4, form, quant=True).eval()
    before = QuantReLU(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True).eval()
    after = QuantReLU(act_quant=Uint8ActPerTensorFloat).eval()
    x = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        qt = before(x)
        assert not isinstance(qt, torch.Tensor)  # a QuantTensor goes in
        y = after(m(qt))
        y_float_in = after(m(qt.value))
    assert y.shape == (1, 4, 6, 5) and torch.isfinite(y).all() and (y > 0).any()
    torch.testing.assert_close(y, y_float_in)
    # weights really are 4-bit per output channel
    qw = m.conv.quant_weight()
    ints = qw.value / qw.scale
    assert torch.allclose(ints, ints.round(), atol=1e-4) and ints.abs().max() <= 7
    assert qw.scale.numel() == 4


def test_rounded_exports_deformable_sample_and_grouped_conv(tmp_path):
    from models.export import export_qonnx

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True)
            self.deform = DeformConv3x3(4, "rounded")
            self.out = QuantReLU(act_quant=Uint8ActPerTensorFloat)

        def forward(self, x):
            return self.out(self.deform(self.inp(x)))

    net = Net().eval()
    path = tmp_path / "d.onnx"
    export_qonnx(net, path, input_shape=(1, 4, 8, 8))
    g = onnx.load(str(path)).graph
    ops = [nd.op_type for nd in g.node]
    assert ops.count("DeformableSample") == 1
    convs = [nd for nd in g.node if nd.op_type == "Conv"]
    groups = sorted(next((a.i for a in nd.attribute if a.name == "group"), 1) for nd in convs)
    assert groups == [1, 4]  # the offset conv and the grouped 1x1 over the taps
    # the offsets come from a 3-bit unsigned Quant with scale 1.0
    ds = next(nd for nd in g.node if nd.op_type == "DeformableSample")
    q = next(nd for nd in g.node if nd.output[0] == ds.input[1])
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    assert q.op_type == "Quant"
    assert float(inits[q.input[1]]) == 1.0 and float(inits[q.input[3]]) == 3.0  # scale, bits
    assert next(a.i for a in q.attribute if a.name == "signed") == 0


def test_weight_bits_8():
    m = DeformConv3x3(4, "square", quant=True, weight_bits=8)
    qw = m.conv.quant_weight()
    ints = (qw.value / qw.scale).round()
    assert ints.abs().max() == 127 and len(torch.unique(ints)) > 15
    with pytest.raises(ValueError, match="weight_bits"):
        DeformConv3x3(4, "square", quant=True, weight_bits=3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="full.*depthwise.*bounded.*square.*rounded"):
        DeformConv3x3(4, "dense")
    with pytest.raises(ValueError, match="channels"):
        DeformConv3x3(0, "full")
    with pytest.raises(ValueError, match="max_offset"):
        DeformConv3x3(4, "rounded", max_offset=5, quant=True)
    with pytest.raises(ValueError, match="max_offset"):
        DeformConv3x3(4, "square", max_offset=-1)
    m = DeformConv3x3(4, "square", quant=False)
    with pytest.raises(ValueError, match=r"\[N, 4, H, W\]"):
        m(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        sample_square(torch.zeros(1, 4, 5, 5), torch.zeros(1, 2, 5, 5))
