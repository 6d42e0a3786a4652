"""deflow's own graph rewrites, written as qonnx ``Transformation`` s to sit in FINN's chain where
FINN has none (the rest of the front end is FINN's, :mod:`sw.finn_frontend`)."""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.transformation.base import Transformation

__all__ = ["RescaleConcatInputs", "rescale_thresholds"]


def rescale_thresholds(lo: int, hi: int, ratio: float) -> tuple[np.ndarray, int]:
    """Thresholds of ``y = round_half_up(x * ratio)`` for integers ``x`` in ``[lo, hi]``.

    Returns:
        ``(thresholds [1, N], out_bias)`` with ``y = out_bias + #{i : x >= T[i]}`` (FINN's
        ``MultiThreshold``), exact for every ``x`` in the range (checked here outright).
    """
    xs = np.arange(lo, hi + 1, dtype=np.int64)
    ys = np.floor(xs * ratio + 0.5).astype(np.int64)
    bias = int(ys[0])
    # the first x at which y reaches each level above the lowest
    thresholds = [int(xs[np.argmax(ys >= level)]) for level in range(bias + 1, int(ys[-1]) + 1)]
    t = np.asarray(thresholds, dtype=np.int64).reshape(1, -1)
    check = bias + (xs[:, None] >= t).sum(axis=1)
    assert np.array_equal(check, ys), "rescale thresholds disagree with the rounding they encode"
    return t, bias


class RescaleConcatInputs(Transformation):
    """A ``Concat`` of integer tensors with different scalar scales (``Mul(x_i, s_i)``, what
    FINN's streamlining leaves for a concat of differently quantised Brevitas tensors) becomes a
    concat on one scale: each finer input is requantised onto the coarsest scale ``s = max s_i``
    by a ``MultiThreshold`` computing ``round_half_up(x_i * s_i / s)``, so that FINN's
    ``MoveMulPastJoinConcat`` gives one scalar ``Mul`` after the concat and streamlining absorbs
    it. Each rescaled input loses up to half an LSB of the coarse scale against Brevitas, which
    concatenates the float values; the compiler's Brevitas comparison measures what that costs.
    The coarse scale keeps every input in its own bit width (the values only shrink)."""

    def apply(self, model):
        for node in list(model.graph.node):
            if node.op_type != "Concat" or len(node.input) < 2:
                continue
            muls = [model.find_producer(t) for t in node.input]
            if any(m is None or m.op_type != "Mul" for m in muls):
                continue
            scales = [model.get_initializer(m.input[1]) for m in muls]
            if any(s is None or np.asarray(s).size != 1 for s in scales):
                continue
            scales = [float(np.asarray(s).reshape(())) for s in scales]
            dts = [model.get_tensor_datatype(m.input[0]) for m in muls]
            if len(set(scales)) == 1 or not all(dt.is_integer() for dt in dts):
                continue
            target = max(scales)
            for mul, s, dt in zip(muls, scales, dts):
                if s == target:
                    continue
                x = mul.input[0]
                thresholds, bias = rescale_thresholds(int(dt.min()), int(dt.max()), s / target)
                thr_name = model.make_new_valueinfo_name()
                model.set_initializer(thr_name, thresholds.astype(np.float32))
                y = model.make_new_valueinfo_name()
                mt = helper.make_node("MultiThreshold", [x, thr_name], [y],
                                      domain="qonnx.custom_op.general", out_dtype=dt.name,
                                      out_bias=float(bias), out_scale=1.0,
                                      name=f"{node.name}_rescale_{x}")
                model.graph.node.insert(list(model.graph.node).index(mul), mt)
                model.set_tensor_datatype(y, dt)
                model.set_tensor_shape(y, model.get_tensor_shape(x))
                mul.input[0] = y
                model.set_initializer(mul.input[1], np.asarray(target, dtype=np.float32).reshape(
                    np.asarray(model.get_initializer(mul.input[1])).shape))
        return model, False  # one pass puts every concat on one scale
