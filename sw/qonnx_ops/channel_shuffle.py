"""``ChannelShuffle``: ShuffleNetV2's channel shuffle as a hardware-layer node in FINN's graph.

Node (domain ``sw.qonnx_ops``)::

    ChannelShuffle(x: [1, H, W, C]) -> [1, H, W, C]
    attribute groups: int g (C % g == 0)

NHWC, as FINN's hardware layers are: output channel ``j*g + i`` is input channel ``i*C/g + j``
(torch's ``x.view(N, g, C/g, H, W).transpose(1, 2)``), the values of
``hw.golden.channel_shuffle``. FINN has no hardware layer for it;
:class:`sw.compiler.finn_transforms.LowerChannelShuffle` puts it in the graph and deflow's
``ChannelShuffle`` component implements it.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.custom_op.base import CustomOp

from hw.golden import channel_shuffle


class ChannelShuffle(CustomOp):
    """qonnx CustomOp: channel shuffle of an NHWC tensor."""

    def get_nodeattr_types(self):
        return {"groups": ("i", True, 2)}

    def make_shape_compatible_op(self, model):
        return helper.make_node("Identity", [self.onnx_node.input[0]], [self.onnx_node.output[0]])

    def infer_node_datatype(self, model):
        node = self.onnx_node
        model.set_tensor_datatype(node.output[0], model.get_tensor_datatype(node.input[0]))

    def execute_node(self, context, graph):
        node = self.onnx_node
        x = np.asarray(context[node.input[0]])
        g = int(self.get_nodeattr("groups"))
        out = np.stack([channel_shuffle(f.astype(np.int64), g) if np.all(f == np.round(f))
                        else _float_shuffle(f, g) for f in x])
        context[node.output[0]] = out.astype(x.dtype)

    def verify_node(self):
        return [] if len(self.onnx_node.input) == 1 else ["ChannelShuffle takes one input"]


def _float_shuffle(x: np.ndarray, g: int) -> np.ndarray:
    h, w, c = x.shape
    return x.reshape(h, w, g, c // g).transpose(0, 1, 3, 2).reshape(h, w, c)
