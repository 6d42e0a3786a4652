"""Small Brevitas models written the way a Brevitas user writes them, shaped unlike the project's
own configs: the compiler's front end must take each as it is exported.

Each builder returns an eval-mode model whose BatchNorm statistics were moved off their defaults
by a few training-mode passes on random input, so that every quantiser has a non-trivial scale.
``FOREIGN_MODELS`` maps a name to ``(builder, input shape NCHW, input range)``; the input range
is ``"unit"`` for images in [0, 1) (torchvision's ``ToTensor``) or ``"pixels"`` for 0..255.

What the set covers (issue: "Any common Brevitas export compiles"):

==================  =====================================================================
model               covers
==================  =====================================================================
``mobile_like``     ``Uint8ActPerTensorFloat`` input on [0, 1); non-square 40x56 input;
                    8-bit first conv at stride 2; stride-2 depthwise; depthwise/pointwise
                    pairs of 12, 20, 36 channels; per-channel 4-bit weights; 8-bit
                    activations; a float head (last conv without activation quantiser)
``decoder_like``    stride-2 stem, max-pool, 1x1 conv, nearest 2x upsample, concat of two
                    differently quantised tensors, 1x1 float head
``residual_odd``    residual add; odd channel counts (5, 7, 13); 2-bit per-tensor weights;
                    4-bit activations; raw 0..255 pixels on a scale-1 input quantiser
``w8a8_plain``      8-bit per-tensor weights, 8-bit activations, plain 3x3 convs with a
                    biased head
``pool_fork``       stride-2 stem, 3x3 stride-2 max-pool with padding whose output two
                    branches read (a stride-2 ShuffleNetV2 unit: depthwise stride 2 then
                    pointwise, beside pointwise then depthwise stride 2), concat
==================  =====================================================================
"""

from __future__ import annotations

import brevitas.nn as qnn
import torch
import torch.nn as nn
from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerChannelFloat,
                            Int8WeightPerTensorFloat, Uint8ActPerTensorFloat)


class Int4WeightPerChannel(Int8WeightPerChannelFloat):
    bit_width = 4


class Int2WeightPerTensor(Int8WeightPerTensorFloat):
    bit_width = 2


class Uint4Act(Uint8ActPerTensorFloat):
    bit_width = 4


class PixelInput(Uint8ActPerTensorFloat):
    """Raw 0..255 pixels on a fixed scale of 1 (the project's own models' input)."""

    scaling_impl_type = "const"
    scaling_init = 255.0


def _relu(bits: int = 8):
    return qnn.QuantReLU(act_quant=Uint4Act if bits == 4 else Uint8ActPerTensorFloat,
                         return_quant_tensor=True)


def _conv_bn_relu(cin, cout, k, stride=1, groups=1, wq=Int4WeightPerChannel, act_bits=8):
    return nn.Sequential(
        qnn.QuantConv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False,
                        weight_quant=wq),
        nn.BatchNorm2d(cout), _relu(act_bits))


class MobileLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True)
        self.stem = _conv_bn_relu(3, 12, 3, stride=2, wq=Int8WeightPerTensorFloat)
        self.dw1 = _conv_bn_relu(12, 12, 3, groups=12)
        self.pw1 = _conv_bn_relu(12, 20, 1)
        self.dw2 = _conv_bn_relu(20, 20, 3, stride=2, groups=20)
        self.pw2 = _conv_bn_relu(20, 36, 1)
        self.head = qnn.QuantConv2d(36, 10, 1, bias=True, weight_quant=Int4WeightPerChannel)

    def forward(self, x):
        x = self.inp(x)
        x = self.pw2(self.dw2(self.pw1(self.dw1(self.stem(x)))))
        return self.head(x)


class DecoderLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True)
        self.stem = _conv_bn_relu(3, 8, 3, stride=2)
        self.pool = nn.MaxPool2d(2)  # Brevitas passes a QuantTensor through max-pool
        self.mid = _conv_bn_relu(8, 16, 1)
        self.up = qnn.QuantUpsamplingNearest2d(scale_factor=2, return_quant_tensor=True)
        self.head = qnn.QuantConv2d(24, 6, 1, bias=True, weight_quant=Int4WeightPerChannel)

    def forward(self, x):
        skip = self.stem(self.inp(x))
        y = self.up(self.mid(self.pool(skip)))
        # two differently quantised tensors side by side, as a Brevitas user writes it
        return self.head(torch.cat([skip.value, y.value], dim=1))


class ResidualOdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=PixelInput, return_quant_tensor=True)
        self.stem = _conv_bn_relu(3, 7, 3, wq=Int8WeightPerTensorFloat, act_bits=4)
        self.shared = qnn.QuantIdentity(act_quant=Uint4Act, return_quant_tensor=True)
        self.a = _conv_bn_relu(7, 13, 1, wq=Int2WeightPerTensor, act_bits=4)
        self.b = qnn.QuantConv2d(13, 7, 1, bias=False, weight_quant=Int2WeightPerTensor)
        self.bn = nn.BatchNorm2d(7)
        self.relu_b = _relu(4)
        self.out = _conv_bn_relu(7, 5, 3, act_bits=4)

    def forward(self, x):
        x = self.shared(self.stem(self.inp(x)))
        y = self.shared(self.relu_b(self.bn(self.b(self.a(x)))))
        return self.out(x + y).value  # a plain tensor leaves the model, as usual


class W8A8Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True)
        self.c1 = _conv_bn_relu(3, 6, 3, wq=Int8WeightPerTensorFloat)
        self.c2 = _conv_bn_relu(6, 6, 3, stride=2, wq=Int8WeightPerTensorFloat)
        self.head = qnn.QuantConv2d(6, 4, 3, padding=1, bias=True,
                                    weight_quant=Int8WeightPerTensorFloat,
                                    output_quant=Int8ActPerTensorFloat)

    def forward(self, x):
        return self.head(self.c2(self.c1(self.inp(x))))


class PoolFork(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True)
        self.stem = _conv_bn_relu(3, 8, 3, stride=2, wq=Int8WeightPerTensorFloat)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.left = nn.Sequential(_conv_bn_relu(8, 8, 3, stride=2, groups=8), _conv_bn_relu(8, 6, 1))
        self.right = nn.Sequential(_conv_bn_relu(8, 6, 1), _conv_bn_relu(6, 6, 3, stride=2, groups=6))
        self.shared = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True)
        self.head = qnn.QuantConv2d(12, 5, 1, bias=True, weight_quant=Int4WeightPerChannel)

    def forward(self, x):
        x = self.pool(self.stem(self.inp(x)))
        both = torch.cat([self.shared(self.left(x)).value, self.shared(self.right(x)).value], 1)
        return self.head(self.shared(both))


FOREIGN_MODELS = {
    "mobile_like": (MobileLike, (1, 3, 40, 56), "unit"),
    "decoder_like": (DecoderLike, (1, 3, 16, 24), "unit"),
    "residual_odd": (ResidualOdd, (1, 3, 12, 10), "pixels"),
    "w8a8_plain": (W8A8Plain, (1, 3, 12, 12), "unit"),
    "pool_fork": (PoolFork, (1, 3, 24, 32), "unit"),
}


def sample_input(name: str, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """A reproducible input batch for model ``name`` on its input grid: ``p/255`` for ``unit``
    models, ``p`` for ``pixels`` models, ``p`` uniform in 0..255 (uint8 pixels)."""
    _, shape, kind = FOREIGN_MODELS[name]
    g = torch.Generator().manual_seed(seed)
    p = torch.randint(0, 256, (batch, *shape[1:]), generator=g).float()
    return p / 255.0 if kind == "unit" else p


def build_foreign(name: str, seed: int = 0) -> nn.Module:
    """Model ``name`` with seeded weights and BatchNorm statistics moved by 4 training passes."""
    builder, _, _ = FOREIGN_MODELS[name]
    torch.manual_seed(seed)
    model = builder()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.3)
        model.train()
        for i in range(4):
            model(sample_input(name, seed=100 + i, batch=4))
    return model.eval()
