"""``DeformableWindow``: the deformable sampler as a hardware-layer node in FINN's graph.

Node (domain ``sw.qonnx_ops``)::

    DeformableWindow(x: [1, H, W, C], offsets: [1, H, W, 1]) -> [1, H, W, 9*C]
    attribute max_offset: int (>= 0)

NHWC, as FINN's hardware layers are, and its output is in the order of FINN's depthwise
``ConvolutionInputGenerator``: per pixel, tap-major ``(ky, kx)`` with the channel fastest, i.e.
element ``(ky*3 + kx)*C + c`` holds ``x[y + (ky-1)*d, x + (kx-1)*d, c]`` (0 outside the image)
with ``d = offsets[y, x]`` in ``[0, max_offset]``; so a FINN ``VVAU`` with a 3x3 kernel reads it
as it reads a depthwise window. The values are ``hw.golden.deformable_sample``'s (the single
definition of the bits). :class:`sw.compiler.finn_transforms.LowerDeformableConv` puts it in the graph
in place of ``DeformableSample`` + its grouped 1x1 ``Conv``; deflow's ``DeformableSampler``
component implements it.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from hw.golden import GoldenModelError, deformable_sample
from sw.qonnx_ops.deformable_sample import DeformableSample


class DeformableWindow(DeformableSample):
    """qonnx CustomOp: NHWC deformable 3x3 sampling in FINN's depthwise window order (its
    attribute, data type rule and node checks are :class:`DeformableSample`'s)."""

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("Concat", [node.input[0]] * 9, [node.output[0]], axis=-1)

    def execute_node(self, context, graph):
        node = self.onnx_node
        x = np.asarray(context[node.input[0]])
        off = np.asarray(context[node.input[1]])
        name = self._name()
        if x.ndim != 4 or off.shape != (*x.shape[:3], 1):
            raise ValueError(f"{name}: features {x.shape} and offsets {off.shape} disagree "
                             "(expected [N,H,W,C] and [N,H,W,1])")
        if not np.all(x == np.round(x)) or not np.all(off == np.round(off)):
            raise ValueError(f"{name}: features and offsets must be integer-valued")
        n, h, w, c = x.shape
        out = np.empty((n, h, w, 9 * c), dtype=np.float32)
        for i in range(n):
            try:
                win = deformable_sample(x[i].astype(np.int64), off[i, ..., 0].astype(np.int64),
                                        int(self.get_nodeattr("max_offset")))
            except GoldenModelError as e:
                raise ValueError(f"{name}: {e}") from e
            # [H, W, C, 9, 1] -> tap-major [H, W, 9, C]
            out[i] = win[..., 0].transpose(0, 1, 3, 2).reshape(h, w, 9 * c)
        context[node.output[0]] = out
