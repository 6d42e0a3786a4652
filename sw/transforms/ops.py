"""qonnx CustomOps of the streamlined integer graph, domain ``sw.transforms.ops``.

The streamline transformations (:mod:`sw.transforms.streamline`) rewrite a Brevitas QONNX
export into a graph whose every activation tensor holds integers (in float32 carriers, as in
FINN's streamlined graphs). Two ops have no standard ONNX form and live here; both execute
under ``qonnx.core.onnx_exec.execute_onnx`` (qonnx resolves the domain as this module).

``Requant(x, multiplier[C], bias[C]) -> y``, attrs ``shift``, ``out_min``, ``out_max``:
    ``y = clip(floor((x * M[c] + B[c]) / 2**shift), out_min, out_max)`` over NCHW channels,
    evaluated with Python-exact int64 arithmetic (``x`` must be integer-valued). This is
    batch norm, bias, weight/activation scales and ReLU of one layer as one per-channel
    integer affine map (FINN folds the same into thresholds; the hardware requantiser
    computes this form directly, see :func:`hw.golden.requantize`).
``ChannelShuffle(x) -> y``, attr ``groups``: ShuffleNet's channel shuffle, executed as the
    torch ``view(n, g, c//g, h, w).transpose(1, 2).reshape(n, c, h, w)`` it was fused from.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from qonnx.custom_op.base import CustomOp

from sw.qonnx_ops.channel_shuffle import ChannelShuffle as NHWCChannelShuffle

DOMAIN = "sw.transforms.ops"


class Requant(CustomOp):
    """Per-channel integer requantisation (see module docstring)."""

    def get_nodeattr_types(self):
        return {"shift": ("i", True, 0), "out_min": ("i", True, 0), "out_max": ("i", True, 0)}

    def make_shape_compatible_op(self, model):
        return helper.make_node("Identity", [self.onnx_node.input[0]], [self.onnx_node.output[0]])

    def infer_node_datatype(self, model):
        from qonnx.core.datatype import DataType

        lo, hi = self.get_nodeattr("out_min"), self.get_nodeattr("out_max")
        bits = max(int(hi).bit_length(), 1) + (1 if lo < 0 else 0)
        if lo < 0:
            bits = max(bits, int(-lo - 1).bit_length() + 1)
        model.set_tensor_datatype(self.onnx_node.output[0], DataType[f"{'INT' if lo < 0 else 'UINT'}{bits}"])

    def execute_node(self, context, graph):
        node = self.onnx_node
        x = np.asarray(context[node.input[0]], dtype=np.float64)
        if not np.all(x == np.round(x)):
            raise ValueError(f"{node.name}: Requant input must be integer-valued")
        m = np.asarray(context[node.input[1]], dtype=np.int64).reshape(1, -1, 1, 1)
        b = np.asarray(context[node.input[2]], dtype=np.int64).reshape(1, -1, 1, 1)
        acc = x.astype(np.int64)
        y = np.floor_divide(acc * m + b, np.int64(2) ** self.get_nodeattr("shift"))
        y = np.clip(y, self.get_nodeattr("out_min"), self.get_nodeattr("out_max"))
        context[node.output[0]] = y.astype(np.float32)

    def verify_node(self):
        return [] if len(self.onnx_node.input) == 3 else [f"{self.onnx_node.name}: needs 3 inputs"]


class ChannelShuffle(NHWCChannelShuffle):
    """Channel shuffle of an NCHW tensor (see module docstring); attributes, shape and type
    rules as :class:`sw.qonnx_ops.channel_shuffle.ChannelShuffle`, the NHWC node."""

    def execute_node(self, context, graph):
        node = self.onnx_node
        x = np.asarray(context[node.input[0]])
        n, c, h, w = x.shape
        g = self.get_nodeattr("groups")
        context[node.output[0]] = x.reshape(n, g, c // g, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)


__all__ = ["Requant", "ChannelShuffle"]
