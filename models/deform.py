"""Hardware-friendly deformable 3x3 sampling (docs/contracts.md default form, CoDeNet FPGA'21).

One scalar integer offset ``d`` per output pixel dilates the 3x3 grid ("square" shape):

    out[n, c*9 + ky*3 + kx, y, x] = x[n, c, y + (ky-1)*d, x + (kx-1)*d]   (0 outside the image)

with ``d = offsets[n, 0, y, x]`` an integer in ``[0, max_offset]``. ``d = 0`` samples the centre
nine times, ``d = 1`` is a plain 3x3 window. Eager mode rounds (half to even) and clips other
offset values into that range first (the docs/contracts.md form); the exported ONNX node and the golden
model require integers in range, which a QuantReLU with 3-bit unsigned output and scale 1.0
guarantees. The bits are defined by
``hw.golden.deformable_sample``; this module is its differentiable PyTorch twin (tested equal).

The output is meant to feed a grouped 1x1 convolution with ``groups = C`` (9 inputs per group),
which is exactly a depthwise 3x3 convolution over the sampled taps.

Gradients
---------
* w.r.t. ``x``: exact (scatter-add of the output gradient onto the sampled positions; taps
  outside the image get none).
* w.r.t. ``offsets``: the op is piecewise constant in ``d``, so the true gradient is zero almost
  everywhere. We use a straight-through *central finite difference in d*:
  ``d out / d d ~= (sample(d + 1) - sample(d - 1)) / 2`` (samples at ``d - 1 < 0`` or
  ``d + 1 > max_offset`` are taken at the clipped value, i.e. one-sided differences at the
  ends; out-of-image taps read 0 as in the forward), the finite-difference analogue of a
  bilinear deformable convolution's offset gradient along each tap's direction. It lets the
  offset branch (a QuantReLU with its own straight-through estimator) learn; it is an estimate,
  not validated by training yet.

ONNX export
-----------
The op exports as a single node ``DeformableSample`` in domain ``sw.qonnx_ops`` (version 1)
with the int attribute ``max_offset``; ``sw/qonnx_ops`` holds the matching qonnx ``CustomOp``.
``brevitas.export.export_qonnx`` under torch >= 2.9 uses the dynamo (``torch.export``) exporter
by default; there the node is emitted with ``torch.onnx.ops.symbolic`` (the same mechanism
Brevitas uses for its own ``Quant`` nodes). With ``dynamo=False`` (TorchScript exporter) the
autograd Function's ``symbolic`` staticmethod emits the same node.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

DOMAIN = "sw.qonnx_ops"
OP_TYPE = "DeformableSample"
OP_VERSION = 1
DEFAULT_MAX_OFFSET = 7


def _check_offsets(offsets: Tensor, x: Tensor) -> None:
    n, _, h, w = x.shape
    if tuple(offsets.shape) != (n, 1, h, w):
        raise ValueError(
            f"deform_sample: offsets must have shape [N, 1, H, W] = {[n, 1, h, w]}, "
            f"got {list(offsets.shape)}"
        )


def offsets_to_int(offsets: Tensor, max_offset: int) -> Tensor:
    """The design form of the offsets: round half to even, clip to ``[0, max_offset]``;
    int64 ``[N, H, W]``. The identity on integer offsets already in range."""
    return torch.round(offsets.detach()).clamp(0, max_offset).to(torch.int64)[:, 0]


def _tap_index(d: Tensor, h: int, w: int):
    """For integer offsets ``d`` [N, H, W], flat gather indices [N, 9, H*W] and validity masks."""
    dev = d.device
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    # the tap displacement (k-1)*d, written without multiplying by the constants 0 and 1: the
    # TorchScript exporter's peephole pass crashes ("Argument passed to at() was not in the
    # map") when it simplifies `1 * d` inside the autograd Function's traced sub-block.
    step = (-d, torch.zeros_like(d), d)
    idx, mask = [], []
    for ky in range(3):
        for kx in range(3):
            ty = ys + step[ky]
            tx = xs + step[kx]
            inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
            flat = ty.clamp(0, h - 1) * w + tx.clamp(0, w - 1)
            idx.append(flat.reshape(d.shape[0], h * w))
            mask.append(inside.reshape(d.shape[0], h * w))
    return torch.stack(idx, 1), torch.stack(mask, 1)


def _sample(x: Tensor, d: Tensor) -> Tensor:
    """Forward sampling with integer offsets ``d`` [N, H, W] (int64): [N, C*9, H, W]."""
    n, c, h, w = x.shape
    idx, mask = _tap_index(d, h, w)  # [N, 9, HW]
    xf = x.reshape(n, c, 1, h * w).expand(n, c, 9, h * w)
    g = torch.gather(xf, 3, idx.unsqueeze(1).expand(n, c, 9, h * w))
    g = g * mask.unsqueeze(1).to(x.dtype)
    return g.reshape(n, c * 9, h, w)


class DeformSampleFunction(torch.autograd.Function):
    """Autograd Function for eager mode and the TorchScript ONNX exporter."""

    @staticmethod
    def forward(ctx, x: Tensor, offsets: Tensor, max_offset: int) -> Tensor:
        _check_offsets(offsets, x)
        d = offsets_to_int(offsets, max_offset)
        ctx.max_offset = int(max_offset)
        ctx.save_for_backward(x, d)
        return _sample(x, d)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, d = ctx.saved_tensors
        n, c, h, w = x.shape
        grad_x = grad_off = None
        g = grad_out.reshape(n, c, 9, h * w)
        if ctx.needs_input_grad[0]:
            idx, mask = _tap_index(d, h, w)
            src = g * mask.unsqueeze(1).to(g.dtype)
            grad_x = torch.zeros(n, c, h * w, dtype=g.dtype, device=g.device)
            grad_x.scatter_add_(2, idx.unsqueeze(1).expand(n, c, 9, h * w).reshape(n, c, 9 * h * w),
                                src.reshape(n, c, 9 * h * w))
            grad_x = grad_x.reshape(n, c, h, w)
        if ctx.needs_input_grad[1]:
            with torch.no_grad():
                dp = (d + 1).clamp(max=ctx.max_offset)
                dm = (d - 1).clamp(min=0)
                span = (dp - dm).clamp(min=1).to(x.dtype)  # 2 inside, 1 at the ends
                diff = (_sample(x, dp) - _sample(x, dm)).reshape(n, c, 9, h * w)
                grad_off = (g * diff).sum(dim=(1, 2)).reshape(n, 1, h, w) / span.unsqueeze(1)
        return grad_x, grad_off, None

    @staticmethod
    def symbolic(g, x, offsets, max_offset):
        out = g.op(f"{DOMAIN}::{OP_TYPE}", x, offsets, max_offset_i=int(max_offset))
        sizes = x.type().sizes() if hasattr(x.type(), "sizes") else None
        if sizes is not None and None not in sizes and len(sizes) == 4:
            n, c, h, w = sizes
            out.setType(x.type().with_sizes([n, c * 9, h, w]))
        return out


def deform_sample(x: Tensor, offsets: Tensor, max_offset: int = DEFAULT_MAX_OFFSET) -> Tensor:
    """Hardware-friendly deformable 3x3 sampling.

    Args:
        x: features ``[N, C, H, W]``.
        offsets: ``[N, 1, H, W]``, integer-valued in ``[0, max_offset]`` (float or int dtype).
            Other values are rounded (half to even) and clipped to ``[0, max_offset]`` first,
            the docs/contracts.md form, so that the op also works where offsets are not yet quantised
            (e.g. Brevitas calibration mode, which disables activation quantisation).
        max_offset: N of the design (7 in CoDeNet).

    Returns:
        ``[N, C*9, H, W]``, channel ``c*9 + ky*3 + kx``.

    Raises:
        ValueError: x not 4D or offsets not ``[N, 1, H, W]``.
    """
    if x.dim() != 4:
        raise ValueError(f"deform_sample: x must be [N, C, H, W], got shape {list(x.shape)}")
    if torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing():
        # dynamo (torch.export) ONNX exporter: emit the custom node directly.
        n, c, h, w = x.shape
        return torch.onnx.ops.symbolic(
            f"{DOMAIN}::{OP_TYPE}",
            (x, offsets),
            {"max_offset": int(max_offset)},
            dtype=x.dtype,
            shape=(n, c * 9, h, w),
            version=OP_VERSION,
        )
    return DeformSampleFunction.apply(x, offsets, int(max_offset))


class DeformSample(nn.Module):
    """Module wrapper of :func:`deform_sample` (``forward(x, offsets)``)."""

    def __init__(self, max_offset: int = DEFAULT_MAX_OFFSET):
        super().__init__()
        if int(max_offset) < 0:
            raise ValueError(f"DeformSample: max_offset must be >= 0, got {max_offset}")
        self.max_offset = int(max_offset)

    def forward(self, x: Tensor, offsets: Tensor) -> Tensor:
        return deform_sample(x, offsets, self.max_offset)

    def extra_repr(self) -> str:
        return f"max_offset={self.max_offset}"
