"""``SliceNet``: the first thin slice of the detector, a small real Brevitas W4A8 network.

Topology (fixed: the compiler lowers it node by node)::

    input  [N,3,64,64] raw pixels 0..255 (float)
    inp    QuantIdentity   uint8, constant scale 1.0 (exact on pixels)
    conv0  QuantConv2d 3->16 k3 s2 p1, int8 per-channel weights, float bias ; act0 QuantReLU uint8
    dw1    QuantConv2d 16->16 k3 s1 p1 groups=16, int4 per-channel, bias    ; act1 QuantReLU uint8
    pw1    QuantConv2d 16->32 k1, int4 per-channel, bias                    ; act2 QuantReLU uint8
    off_conv QuantConv2d 32->1 k3 s1 p1, int4 per-channel, bias ; off_act QuantReLU 3-bit unsigned,
             constant scale 1.0  -> integer offsets in [0, 7]
    deform DeformableSample(x=act2, offsets=off_act), max_offset=7 -> [N, 288, 32, 32]
    dconv  QuantConv2d 288->32 k1 groups=32 (depthwise 3x3 over the taps), int4 per-channel, bias
                                                                            ; act3 QuantReLU uint8
    head   QuantConv2d 32->8 k1, int4 per-channel, bias ; out_q QuantIdentity int8 per-tensor

Weights are narrow-range signed (int8: [-127, 127], int4: [-7, 7]) with float per-output-channel
scales from the weights' max-abs (Brevitas ``Int8WeightPerChannelFloat`` and a 4-bit variant).
Activation scales are per-tensor floats (``Uint8ActPerTensorFloat`` / ``Int8ActPerTensorFloat``),
calibrated on real images. Biases are float (not quantised); the compiler rounds them.

Input normalisation is folded into conv0 (no separate normalisation op exists in the graph):
the network is defined on raw pixels 0..255. ``fold_input_normalisation`` converts a conv that
expects ``(x/255 - mean)/std`` into one on raw pixels: ``W' = W / (255*std_c)``,
``b' = b - sum(W * mean_c/std_c)``. This is exact except on the 1-pixel zero-padded border, where
the raw-pixel network pads with black (0) instead of the normalised mean (documented
difference; a network trained on raw pixels, as SliceNet is meant to be, has no such issue).
In this slice the *initial* float weights of conv0 are a standard (Kaiming) init for normalised
input, folded this way before quantisation.

Weights in this slice are random (seeded) but not degenerate: the offset branch is rescaled on the
calibration images so its pre-activation has mean 3.5 and std 2 (offsets spread over 0..7), and
every activation scale is calibrated with ``brevitas.graph.calibrate.calibration_mode`` (99.999th
percentile statistics, averaged over batches). No training.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantReLU
from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerChannelFloat,
                            Uint8ActPerTensorFloat)

from models.deform import DeformSample

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_OFFSET = 7
INPUT_SIZE = 64


class Int4WeightPerChannelFloat(Int8WeightPerChannelFloat):
    """4-bit narrow-range signed weights ([-7, 7]), float per-output-channel scale (max-abs)."""
    bit_width = 4


class PixelQuant(Uint8ActPerTensorFloat):
    """uint8 with the constant scale 255/255 = 1.0: exact on raw pixel values 0..255."""
    scaling_impl_type = ScalingImplType.CONST
    max_val = 255.0


class OffsetQuant(Uint8ActPerTensorFloat):
    """3-bit unsigned with the constant scale 7/7 = 1.0: round-half-even and clip to [0, 7]."""
    scaling_impl_type = ScalingImplType.CONST
    bit_width = 3
    max_val = float(MAX_OFFSET)


def fold_input_normalisation(conv: nn.Conv2d, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                             pixel_max: float = 255.0) -> None:
    """Fold ``x_n = (x/pixel_max - mean)/std`` into ``conv`` in place (float weights and bias),
    so that it takes raw pixels. Exact except at zero-padded borders (see module docstring)."""
    with torch.no_grad():
        m = torch.tensor(mean, dtype=conv.weight.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=conv.weight.dtype).view(1, -1, 1, 1)
        w = conv.weight.clone()
        shift = (w * (m / s)).sum(dim=(1, 2, 3))
        if conv.bias is None:
            raise ValueError("fold_input_normalisation needs a conv with a bias")
        conv.bias.sub_(shift)
        conv.weight.copy_(w / (pixel_max * s))


def _wq(bits: int):
    return Int8WeightPerChannelFloat if bits == 8 else Int4WeightPerChannelFloat


class SliceNet(nn.Module):
    """See module docstring. ``forward(x)`` takes raw pixels NCHW float and returns the int8
    head output (dequantised: int8 * scale) ``[N, 8, 32, 32]``."""

    def __init__(self, max_offset: int = MAX_OFFSET):
        super().__init__()
        self.inp = QuantIdentity(act_quant=PixelQuant)
        self.conv0 = QuantConv2d(3, 16, 3, stride=2, padding=1, bias=True, weight_quant=_wq(8))
        self.act0 = QuantReLU(act_quant=Uint8ActPerTensorFloat)
        self.dw1 = QuantConv2d(16, 16, 3, stride=1, padding=1, groups=16, bias=True,
                               weight_quant=_wq(4))
        self.act1 = QuantReLU(act_quant=Uint8ActPerTensorFloat)
        self.pw1 = QuantConv2d(16, 32, 1, bias=True, weight_quant=_wq(4))
        self.act2 = QuantReLU(act_quant=Uint8ActPerTensorFloat)
        self.off_conv = QuantConv2d(32, 1, 3, stride=1, padding=1, bias=True, weight_quant=_wq(4))
        self.off_act = QuantReLU(act_quant=OffsetQuant)
        self.deform = DeformSample(max_offset)
        self.dconv = QuantConv2d(32 * 9, 32, 1, groups=32, bias=True, weight_quant=_wq(4))
        self.act3 = QuantReLU(act_quant=Uint8ActPerTensorFloat)
        self.head = QuantConv2d(32, 8, 1, bias=True, weight_quant=_wq(4))
        self.out_q = QuantIdentity(act_quant=Int8ActPerTensorFloat)

    def features(self, x):
        """Backbone up to act2 (the deformable block's input)."""
        x = self.inp(x)
        x = self.act0(self.conv0(x))
        x = self.act1(self.dw1(x))
        return self.act2(self.pw1(x))

    def offsets(self, feat):
        """Integer offsets ``[N, 1, H, W]`` in [0, max_offset] (as float) from ``features``."""
        return self.off_act(self.off_conv(feat))

    def forward_with_offsets(self, x):
        feat = self.features(x)
        off = self.offsets(feat)
        y = self.act3(self.dconv(self.deform(feat, off)))
        return self.out_q(self.head(y)), off

    def forward(self, x):
        return self.forward_with_offsets(x)[0]


def _float_pw1_features(model: SliceNet, x: torch.Tensor) -> torch.Tensor:
    """Float (unquantised) backbone up to act2, for data-driven initialisation."""
    y = F.relu(F.conv2d(x, model.conv0.weight, model.conv0.bias, stride=2, padding=1))
    y = F.relu(F.conv2d(y, model.dw1.weight, model.dw1.bias, padding=1, groups=16))
    return F.relu(F.conv2d(y, model.pw1.weight, model.pw1.bias))


def _init_offset_branch(model: SliceNet, x: torch.Tensor, mean: float = 3.5,
                        std: float = 2.0) -> None:
    """Rescale the offset conv so its float pre-activation on ``x`` has the given mean/std."""
    with torch.no_grad():
        f = _float_pw1_features(model, x)
        pre = F.conv2d(f, model.off_conv.weight, model.off_conv.bias, padding=1)
        a = std / float(pre.std().clamp_min(1e-12))
        model.off_conv.weight.mul_(a)
        model.off_conv.bias.copy_(model.off_conv.bias * a + (mean - a * float(pre.mean())))


def calibrate(model: nn.Module, images: torch.Tensor, batch_size: int = 4) -> None:
    """Set the activation scales with Brevitas' calibration mode (float statistics,
    99.999th percentile, true average over the batches of ``images``)."""
    from brevitas.graph.calibrate import calibration_mode

    model.eval()
    with torch.no_grad(), calibration_mode(model):
        for i in range(0, images.shape[0], batch_size):
            model(images[i:i + batch_size])
    model.eval()


def build_slice_model(seed: int = 0, calibrate_images: np.ndarray | None = None) -> SliceNet:
    """Deterministic SliceNet.

    Args:
        seed: seeds the weight init (the global torch RNG is left untouched).
        calibrate_images: uint8 NHWC ``[N, 64, 64, 3]`` real images for the offset-branch init
            and activation calibration. ``None``: ``models.data.sample_images(8, 64)`` (VOC val
            if found, else scikit-image's bundled photographs).

    Returns:
        the model in eval mode, activation scales calibrated.
    """
    from models.data import sample_images, to_nchw_float

    if calibrate_images is None:
        calibrate_images = sample_images(8, INPUT_SIZE)
    x = to_nchw_float(calibrate_images)
    if tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"build_slice_model: calibration images must be "
                         f"[N, {INPUT_SIZE}, {INPUT_SIZE}, 3], got {tuple(calibrate_images.shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SliceNet()
    fold_input_normalisation(model.conv0)
    _init_offset_branch(model, x)
    calibrate(model, x)
    return model
