"""The deformable 3x3 family of CoDeNet (Huang et al., FPGA'21, Table 1), cumulative forms.

Each form adds one hardware simplification to the previous one:

============  ==============================================================================
form          sampling
============  ==============================================================================
"full"        regular deformable conv v1 (Dai et al., ICCV'17): dense (not grouped) 3x3, an
              offset conv ``C -> 18`` gives a real-valued ``(dy, dx)`` per tap and output
              pixel, bilinear sampling.
"depthwise"   as "full" but the 3x3 conv is depthwise (``groups = C``).
"bounded"     as "depthwise" with both offset components clipped to ``[0, N]`` (N =
              ``max_offset``). This is the issue's literal definition: taps only move towards
              +y/+x. CoDeNet bounds the offsets so that a line buffer of finite height
              suffices; the one-sided range is kept as specified, not symmetrised.
"square"      one real offset ``d`` per output pixel (offset conv ``C -> 1``), clipped to
              ``[0, N]``, dilates the 3x3 grid: tap ``(ky, kx)`` reads
              ``(y + (ky-1)*d, x + (kx-1)*d)``, bilinear sampling.
"rounded"     "square" with ``d`` rounded to an integer (straight-through gradient): the
              hardware default form of docs/contracts.md, built on :mod:`models.deform`
              (``DeformSample``) so its QONNX export is the ``DeformableSample`` node followed
              by a grouped 1x1 ``Conv`` (docs/detector_contract.md, deformable row).
============  ==============================================================================

Quantisation: with ``quant=True`` the weights of both convs are Brevitas per-channel; only the
"rounded" form quantises its offsets (3-bit, scale 1.0), the other forms keep real offsets
(they are accuracy ablations; the hardware runs "rounded" only, docs/contracts.md). The clip of
"bounded"/"square" passes no gradient to offsets outside ``[0, N]`` (like a ReLU; the shared
offset-conv weights still learn from the other pixels).

Every form is "sample then 1x1 conv": the sampler produces ``[N, C*9, H, W]`` with channel
``c*9 + ky*3 + kx`` (the layout of ``models.deform``) and a 1x1 conv ``9C -> C`` mixes the taps,
with ``groups = 1`` for "full" (equal to a dense 3x3 conv over the deformed taps, weight
``[C, C*9, 1, 1] == [C, C, 3, 3]`` flattened) and ``groups = C`` for the other forms (a
depthwise 3x3). Per-output-channel weight quantisation of the 1x1 weight covers exactly the
same weights as on the 3x3 weight, so the quantised forms are the quantised 3x3 convs.

Offsets layout (forms with 18 offsets): ``[N, 18, H, W]``, channel ``2*(ky*3 + kx) + j`` with
``j = 0`` the row (y) and ``j = 1`` the column (x) displacement: the layout of ONNX
``DeformConv`` with ``offset_group = 1``. Bilinear sampling reads zero outside the image
(each of the four neighbours outside counts as 0), as ONNX ``DeformConv``/``GridSample`` with
``padding_mode = zeros, align_corners = 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.deform import DeformSample

FORMS = ("full", "depthwise", "bounded", "square", "rounded")
K = 3
TAPS = K * K


def _plain(x) -> Tensor:
    """The float value of a Brevitas ``QuantTensor`` (or ``x`` itself if a tensor)."""
    return x if isinstance(x, Tensor) else x.value


def bilinear_gather(x: Tensor, py: Tensor, px: Tensor) -> Tensor:
    """Bilinear sampling of ``x`` at real positions, zero outside the image (differentiable).

    Args:
        x: features ``[N, C, H, W]``.
        py, px: row / column positions in input pixels, ``[N, T, Ho, Wo]`` (T taps, the same
            positions for every channel).

    Returns:
        ``[N, C*T, Ho, Wo]``, channel ``c*T + t``.

    Each of the four integer neighbours contributes ``(1-|py-yy|)(1-|px-xx|) * x[yy, xx]``, or
    0 if it lies outside ``[0, H) x [0, W)``. Gradients flow to ``x`` and to the positions.
    """
    if x.dim() != 4 or py.dim() != 4 or py.shape != px.shape or py.shape[0] != x.shape[0]:
        raise ValueError(f"bilinear_gather: need x [N,C,H,W] and positions [N,T,Ho,Wo] of equal "
                         f"shape, got {list(x.shape)}, {list(py.shape)}, {list(px.shape)}")
    n, c, h, w = x.shape
    _, t, ho, wo = py.shape
    y0 = torch.floor(py)
    x0 = torch.floor(px)
    ly, lx = py - y0, px - x0
    y0, x0 = y0.long(), x0.long()
    flat = x.reshape(n, c, h * w)
    out = x.new_zeros(n, c, t * ho * wo)
    for dy in (0, 1):
        wy = ly if dy else 1 - ly
        yy = y0 + dy
        for dx in (0, 1):
            wx = lx if dx else 1 - lx
            xx = x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(n, 1, -1)
            vals = torch.gather(flat, 2, idx.expand(n, c, idx.shape[2]))
            wgt = (wy * wx * inside.to(x.dtype)).reshape(n, 1, -1)
            out = out + vals * wgt
    return out.reshape(n, c, t, ho, wo).reshape(n, c * t, ho, wo)


def _grid(h: int, w: int, like: Tensor):
    ys = torch.arange(h, dtype=like.dtype, device=like.device).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=like.dtype, device=like.device).view(1, 1, 1, w)
    k = torch.arange(K, dtype=like.dtype, device=like.device) - (K - 1) / 2
    ky = k.repeat_interleave(K).view(1, TAPS, 1, 1)  # tap t = ky*3 + kx
    kx = k.repeat(K).view(1, TAPS, 1, 1)
    return ys, xs, ky, kx


def sample_offsets18(x: Tensor, offsets: Tensor) -> Tensor:
    """Deformable-conv v1 sampling: ``[N, C*9, H, W]`` from offsets ``[N, 18, H, W]``
    (layout in the module docstring); tap ``t`` of pixel ``(y, x)`` reads
    ``(y + ky - 1 + dy_t, x + kx - 1 + dx_t)`` bilinearly."""
    n, _, h, w = x.shape
    if tuple(offsets.shape) != (n, 2 * TAPS, h, w):
        raise ValueError(f"sample_offsets18: offsets must be [N, 18, H, W] = "
                         f"{[n, 2 * TAPS, h, w]}, got {list(offsets.shape)}")
    ys, xs, ky, kx = _grid(h, w, offsets)
    off = offsets.reshape(n, TAPS, 2, h, w)
    return bilinear_gather(x, ys + ky + off[:, :, 0], xs + kx + off[:, :, 1])


def sample_square(x: Tensor, d: Tensor) -> Tensor:
    """Square (dilated-grid) sampling with real offsets ``d`` ``[N, 1, H, W]``: tap
    ``(ky, kx)`` of pixel ``(y, x)`` reads ``(y + (ky-1)*d, x + (kx-1)*d)`` bilinearly;
    ``[N, C*9, H, W]``."""
    n, _, h, w = x.shape
    if tuple(d.shape) != (n, 1, h, w):
        raise ValueError(f"sample_square: offsets must be [N, 1, H, W] = {[n, 1, h, w]}, "
                         f"got {list(d.shape)}")
    ys, xs, ky, kx = _grid(h, w, d)
    return bilinear_gather(x, ys + ky * d, xs + kx * d)


def _offset_quant(max_offset: int):
    """Unsigned activation quantiser with constant scale 1.0 on ``[0, max_offset]``
    (``models.slice.OffsetQuant`` generalised); needs ``max_offset = 2**b - 1``."""
    from brevitas.inject.enum import ScalingImplType
    from brevitas.quant import Uint8ActPerTensorFloat

    bits = int(max_offset).bit_length()
    if max_offset < 1 or (1 << bits) - 1 != max_offset:
        raise ValueError(f"DeformConv3x3: quantised 'rounded' form needs max_offset = 2**b - 1 "
                         f"(scale 1.0 on b unsigned bits), got {max_offset}")

    class _OffsetQuant(Uint8ActPerTensorFloat):
        scaling_impl_type = ScalingImplType.CONST
        bit_width = bits
        max_val = float(max_offset)

    return _OffsetQuant


class DeformConv3x3(nn.Module):
    """One deformable 3x3 convolution of the CoDeNet family (see module docstring).

    Args:
        channels: C (input = output channels).
        form: one of :data:`FORMS`.
        max_offset: N, the offset bound of "bounded", "square", "rounded" (7 in CoDeNet).
        quant: Brevitas ``QuantConv2d`` layers with ``weight_bits`` per-output-channel weights
            (``models.slice.Int4WeightPerChannelFloat`` for 4 bits) if True, plain
            ``nn.Conv2d`` if False. Quantised "rounded" ends its offset branch in a
            ``QuantReLU`` with ``b`` unsigned bits and scale 1.0 (``max_offset = 2**b - 1``).
        weight_bits: 4 or 8.

    ``forward(x)``: ``x`` ``[N, C, H, W]`` float or Brevitas ``QuantTensor`` ->
    ``[N, C, H, W]`` float, the conv output before BatchNorm (stride 1, same size, no bias).

    Attributes:
        offset_conv: the offset branch conv (3x3, padding 1, with bias): ``C -> 18`` for
            "full", "depthwise", "bounded"; ``C -> 1`` for "square", "rounded".
        conv: the 1x1 conv ``9C -> C`` over the sampled taps (groups 1 for "full", else C).

    Initialisation: offset-conv weights are small (std 1e-3, not zero: a zero per-channel
    weight would give a zero quantisation scale) and its bias is 0 for the 18-offset forms
    (zero displacement: a plain 3x3) and 1 for the square forms (dilation 1: a plain 3x3).

    Raises:
        ValueError: unknown ``form``, ``channels < 1``, ``max_offset < 0``, bad
            ``weight_bits``; in forward, an input that is not ``[N, channels, H, W]``.
    """

    def __init__(self, channels: int, form: str, max_offset: int = 7, quant: bool = True,
                 weight_bits: int = 4):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"DeformConv3x3: unknown form {form!r}; expected one of {FORMS}")
        if int(channels) < 1:
            raise ValueError(f"DeformConv3x3: channels must be >= 1, got {channels}")
        if int(max_offset) < 0:
            raise ValueError(f"DeformConv3x3: max_offset must be >= 0, got {max_offset}")
        if quant and weight_bits not in (4, 8):
            raise ValueError(f"DeformConv3x3: weight_bits must be 4 or 8, got {weight_bits}")
        self.channels, self.form = int(channels), form
        self.max_offset, self.quant = int(max_offset), bool(quant)
        square = form in ("square", "rounded")
        n_off = 1 if square else 2 * TAPS
        groups = 1 if form == "full" else self.channels
        if quant:
            from brevitas.nn import QuantConv2d, QuantReLU
            from brevitas.quant import Int8WeightPerChannelFloat

            from models.slice import Int4WeightPerChannelFloat

            wq = Int4WeightPerChannelFloat if weight_bits == 4 else Int8WeightPerChannelFloat
            self.offset_conv = QuantConv2d(self.channels, n_off, K, padding=1, bias=True,
                                           weight_quant=wq)
            self.conv = QuantConv2d(self.channels * TAPS, self.channels, 1, groups=groups,
                                    bias=False, weight_quant=wq)
            self.offset_act = (QuantReLU(act_quant=_offset_quant(self.max_offset))
                               if form == "rounded" else None)
        else:
            self.offset_conv = nn.Conv2d(self.channels, n_off, K, padding=1, bias=True)
            self.conv = nn.Conv2d(self.channels * TAPS, self.channels, 1, groups=groups,
                                  bias=False)
            self.offset_act = None
        self.sampler = DeformSample(self.max_offset) if form == "rounded" else None
        with torch.no_grad():
            self.offset_conv.weight.normal_(0.0, 1e-3)
            self.offset_conv.bias.fill_(1.0 if square else 0.0)

    def offsets(self, x) -> Tensor:
        """The offsets the sampler uses, float: ``[N, 18, H, W]`` (layout in the module
        docstring) for "full"/"depthwise"/"bounded", ``[N, 1, H, W]`` for "square"/"rounded"
        (integers in ``[0, max_offset]`` for "rounded")."""
        raw = self.offset_conv(x)
        if self.form == "rounded":
            if self.offset_act is not None:
                return _plain(self.offset_act(raw))
            # float variant: clip, round half to even, straight-through gradient
            d = _plain(raw).clamp(0, self.max_offset)
            return d + (torch.round(d) - d).detach()
        raw = _plain(raw)
        if self.form in ("bounded", "square"):
            return raw.clamp(0, self.max_offset)
        return raw

    def sample(self, x) -> Tensor:
        """The sampled taps ``[N, C*9, H, W]`` (channel ``c*9 + ky*3 + kx``)."""
        self._check(x)
        off = self.offsets(x)
        xv = _plain(x)
        if self.form == "rounded":
            return self.sampler(xv, off)
        if self.form == "square":
            return sample_square(xv, off)
        return sample_offsets18(xv, off)

    def forward(self, x) -> Tensor:
        return _plain(self.conv(self.sample(x)))

    def _check(self, x) -> None:
        shape = tuple(_plain(x).shape)
        if len(shape) != 4 or shape[1] != self.channels:
            raise ValueError(f"DeformConv3x3: input must be [N, {self.channels}, H, W], "
                             f"got {list(shape)}")

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, form={self.form!r}, max_offset={self.max_offset}, "
                f"quant={self.quant}")
