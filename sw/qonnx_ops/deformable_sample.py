"""``DeformableSample``: hardware-friendly deformable 3x3 sampling as a qonnx CustomOp.

Node (domain ``sw.qonnx_ops``, version 1)::

    DeformableSample(x: float[N, C, H, W], offsets: float[N, 1, H, W]) -> float[N, C*9, H, W]
    attribute max_offset: int (required, >= 0)

Output channel ``c*9 + ky*3 + kx`` holds ``x[n, c, y + (ky-1)*d, x + (kx-1)*d]`` (0 outside the
image) with ``d = offsets[n, 0, y, x]``, an integer in ``[0, max_offset]``. The values are
computed by ``hw.golden.deformable_sample`` (the single definition of the bits); ``x`` may be any
float tensor (a Quant output is integer * scale) and is sampled exactly (see ``execute_node``);
offsets must be integers in range or execution fails with a message naming the node.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from qonnx.custom_op.base import CustomOp

from hw.golden import GoldenModelError, deformable_sample


class DeformableSample(CustomOp):
    """qonnx CustomOp for ``models.deform.deform_sample`` / ``hw.golden.deformable_sample``."""

    def get_nodeattr_types(self):
        return {"max_offset": ("i", True, 7)}

    def _name(self) -> str:
        return self.onnx_node.name or f"<unnamed {type(self).__name__}>"

    def make_shape_compatible_op(self, model):
        # Concat of nine copies of x along channels: [N, C, H, W] -> [N, 9C, H, W]. It needs no
        # known input shape (qonnx's InferShapes hides every custom op before running ONNX shape
        # inference, so after e.g. ChangeBatchSize no intermediate shape is known yet) and no
        # extra initializer.
        node = self.onnx_node
        return helper.make_node("Concat", [node.input[0]] * 9, [node.output[0]], axis=1)

    def infer_node_datatype(self, model):
        # sampling only moves values (and inserts zeros): the feature datatype is kept
        # (every qonnx integer/float datatype contains 0).
        dt = model.get_tensor_datatype(self.onnx_node.input[0])
        model.set_tensor_datatype(self.onnx_node.output[0], dt)

    def execute_node(self, context, graph):
        node = self.onnx_node
        x = np.asarray(context[node.input[0]])
        off = np.asarray(context[node.input[1]])
        max_offset = int(self.get_nodeattr("max_offset"))
        if x.ndim != 4 or off.shape != (x.shape[0], 1, x.shape[2], x.shape[3]):
            raise ValueError(
                f"{self._name()}: features {x.shape} and offsets {off.shape} disagree "
                "(expected [N,C,H,W] and [N,1,H,W])"
            )
        if not np.all(np.isfinite(off)) or not np.all(off == np.round(off)):
            raise ValueError(f"{self._name()}: offsets must be integer-valued")
        n, c, h, w = x.shape
        # The golden model works on integers and sampling is a pure gather, so a float feature
        # map (a Quant output: integer * scale) is sampled exactly by letting the golden model
        # move integer *positions* (1-based; its zero fill for out-of-image taps maps to 0.0).
        pos = np.arange(1, h * w * c + 1, dtype=np.int64).reshape(h, w, c)
        out = np.empty((n, c * 9, h, w), dtype=np.float32)
        for i in range(n):
            table = np.concatenate([[0.0], x[i].transpose(1, 2, 0).reshape(-1)])  # HWC order
            try:
                win = deformable_sample(pos, off[i, 0].astype(np.int64), max_offset)
            except GoldenModelError as e:
                raise ValueError(f"{self._name()}: {e}") from e
            vals = table[win[..., 0]]  # [H, W, C, 9] (lanes=1)
            out[i] = vals.reshape(h, w, c * 9).transpose(2, 0, 1)
        context[node.output[0]] = out

    def verify_node(self):
        info = []
        node = self.onnx_node
        if node.op_type != type(self).__name__:
            info.append(f"{self._name()}: op_type {node.op_type} is not {type(self).__name__}")
        if len(node.input) != 2:
            info.append(f"{self._name()}: expects 2 inputs (x, offsets), has {len(node.input)}")
        else:
            info.append("Number of inputs correct")
        if len(node.output) != 1:
            info.append(f"{self._name()}: expects 1 output, has {len(node.output)}")
        try:
            m = int(self.get_nodeattr("max_offset"))
            if m < 0:
                info.append(f"{self._name()}: max_offset must be >= 0, got {m}")
            else:
                info.append("Required attribute max_offset is set")
        except Exception as e:  # missing required attribute
            info.append(f"{self._name()}: {e}")
        return info


def make_deformable_sample_node(x: str, offsets: str, out: str, max_offset: int = 7,
                                name: str | None = None):
    """Helper to build a ``DeformableSample`` NodeProto (for tests and graph rewrites)."""
    return helper.make_node("DeformableSample", [x, offsets], [out], domain="sw.qonnx_ops",
                            max_offset=int(max_offset), name=name or "")
