"""Hardware ops, one class per ``HWLayer.op`` (FINN's op names where FINN has the op), each
holding its folding rules, cycle models, resource estimate, golden execution and Amaranth
build (:class:`hw.ops.base.HWOp`).

:data:`OPS` maps the op name to its class; :func:`op_for` wraps one layer. Adding an op means
one new :class:`~hw.ops.base.HWOp` subclass and one entry here.
"""

from __future__ import annotations

from hw.graph import HWGraph, HWLayer
from hw.ops.activation import RequantOp, ThresholdingOp
from hw.ops.base import FoldingRuleError, HWOp
from hw.ops.mac import MVAUOp, VVAUOp
from hw.ops.stream import (AddOp, ChannelShuffleOp, ChannelSplitOp, ConcatOp, DuplicateOp,
                           MaxPoolOp, UpsampleOp, WidthConverterOp)
from hw.ops.window import DeformableSamplerOp, SlidingWindowOp

__all__ = ["OPS", "HWOp", "FoldingRuleError", "UnknownOpError", "op_for"]

#: ``HWLayer.op`` -> its :class:`HWOp` subclass
OPS: dict[str, type[HWOp]] = {cls.op: cls for cls in (
    SlidingWindowOp, DeformableSamplerOp, MVAUOp, VVAUOp, RequantOp, ThresholdingOp, MaxPoolOp,
    UpsampleOp, ConcatOp, ChannelSplitOp, ChannelShuffleOp, AddOp, DuplicateOp, WidthConverterOp)}


class UnknownOpError(ValueError):
    """A layer whose op has no :class:`HWOp` class (no hardware, no models)."""


def op_for(graph: HWGraph, layer: HWLayer) -> HWOp:
    """The :class:`HWOp` of ``layer`` in ``graph``.

    Raises:
        UnknownOpError: ``layer.op`` is not in :data:`OPS` (the message names layer and op).
    """
    try:
        cls = OPS[layer.op]
    except KeyError:
        raise UnknownOpError(f"layer {layer.name}: no hardware for op {layer.op}") from None
    return cls(graph, layer)
