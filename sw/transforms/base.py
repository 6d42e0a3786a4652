"""Shared pieces of the compiler passes: the refusal error and the integer-scale annotations.

The streamlined graph records, for every integer tensor, the real value of one LSB
(``scale``: a float, or a per-channel list) in the model's metadata property
``deflow.int_scales`` (JSON ``{tensor: scale}``): the ONNX graph itself carries only the
integers, as FINN's streamlined graphs do.
"""

from __future__ import annotations

import json

import numpy as np
import onnx

SCALES_KEY = "deflow.int_scales"


class CompileError(ValueError):
    """The compiler refuses the model: the message names the node and the rule broken."""


def fail(node: onnx.NodeProto | None, rule: str) -> CompileError:
    """A :class:`CompileError` naming ``node`` (or the graph) and ``rule``."""
    where = f"node {node.name!r} ({node.op_type})" if node is not None else "graph"
    return CompileError(f"{where}: {rule}")


def get_scales(model) -> dict:
    raw = model.get_metadata_prop(SCALES_KEY)
    return json.loads(raw) if raw else {}


def set_scales(model, scales: dict) -> None:
    model.set_metadata_prop(SCALES_KEY, json.dumps(scales))


def scale_value(s: np.ndarray):
    """JSON form of a scale: a float for per-tensor, a list for per-channel."""
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    return float(s[0]) if s.size == 1 or np.all(s == s[0]) else [float(v) for v in s]


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def quant_params(model, node: onnx.NodeProto) -> tuple[np.ndarray, int, bool, bool]:
    """(scale, bits, signed, narrow) of a qonnx ``Quant`` node with constant parameters.

    Raises:
        CompileError: non-constant parameters, a non-zero zero point, a non-integer bit
            width, a non-positive scale or a rounding mode other than ROUND.
    """
    vals = []
    for i, what in zip(node.input[1:4], ("scale", "zero point", "bit width")):
        v = model.get_initializer(i)
        if v is None:
            raise fail(node, f"the {what} must be a constant initializer")
        vals.append(np.asarray(v, dtype=np.float64))
    scale, zp, bits = vals
    if np.any(zp != 0):
        raise fail(node, "zero point must be 0 (symmetric/unsigned quantisation only)")
    if bits.size != 1 or float(bits) != int(bits) or int(bits) < 1:
        raise fail(node, f"bit width must be a positive integer, got {bits}")
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise fail(node, "scale must be positive and finite")
    rounding = attr(node, "rounding_mode", "ROUND")
    if rounding != "ROUND":
        raise fail(node, f"rounding mode {rounding!r} not supported (ROUND only)")
    return scale, int(bits), bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0))


def int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """Integer range of a ``bits``-bit (narrow-range) signed or unsigned quantiser."""
    if signed:
        return -(2 ** (bits - 1)) + (1 if narrow else 0), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - (1 if narrow else 0)
