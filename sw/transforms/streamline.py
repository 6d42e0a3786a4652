"""Streamlining: a Brevitas QONNX graph becomes an integer graph (FINN's streamlining idea).

Chained by :func:`sw.transforms.streamline_model` in this order:

1. :class:`FoldWeightQuant`: ``Quant`` on a weight initializer -> integer weights; the
   per-channel weight scale becomes a ``Mul`` after the ``Conv`` and a Conv bias an ``Add``
   (``conv(x, s*W) + b == conv(x, W)*s + b``).
2. qonnx ``BatchNormToAffine``: ``BatchNormalization`` -> ``Mul`` + ``Add`` (per channel).
3. :class:`IntegerActivations`: every activation ``Quant(x; s)`` -> ``Div(s)`` -> ``Quant(x; 1)``
   -> ``Mul(s)``: the Quant now outputs the integers, the Mul restores the real value.
4. :class:`FuseChannelShuffle`: ``Reshape`` -> ``Transpose`` -> ``Reshape`` (ShuffleNet's
   shuffle) -> one ``ChannelShuffle`` node.
5. :class:`MoveScalarMulDownstream`: a per-tensor ``Mul(s > 0)`` moves past every op that
   commutes with it (Conv without bias, DeformableSample features, MaxPool, Resize, Reshape,
   Transpose, ChannelShuffle, Split; Concat and Add when all inputs carry the same scale, as
   FINN's MoveScalarMulPastConv & co.). Offsets of a DeformableSample must have scale 1.
6. :class:`CollapseToRequant`: the chain ``integer tensor -> (Mul|Div|Add const)* [Relu] ->
   Quant(1)`` is one per-channel affine map ``q = clip(round(acc*a[c] + b[c]))``; it becomes a
   ``Requant`` node (:mod:`sw.transforms.ops`) with ``M = round(a*2**S)``,
   ``B = round(b*2**S) + 2**(S-1)`` (round half up) and ``S`` the largest shift with
   ``M < 2**MULTIPLIER_BITS``. ReLU becomes the clamp's lower bound 0.
7. :class:`StripOutputScale`: the dequantising ``Mul`` on the graph output is removed; its
   scale is the output tensor's recorded scale.

The scale of every integer tensor is kept in the metadata (:mod:`sw.transforms.base`).
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper

from qonnx.core.datatype import DataType
from qonnx.transformation.base import Transformation

from sw.transforms.base import (fail, get_scales, int_range, quant_params, scale_value,
                                set_scales)
from sw.transforms.ops import DOMAIN

#: Multiplier width of the requantiser (unsigned), chosen to fit one DSP48 input (18x27).
MULTIPLIER_BITS = 16
#: Weight bits the VVAU / MVAU support.
SUPPORTED_WEIGHT_BITS = range(2, 9)
#: ops that produce integers from integers (sources of a requantisation chain)
INTEGER_OPS = {"Conv", "Quant", "Requant", "MaxPool", "Resize", "Concat", "Split", "Slice",
               "ChannelShuffle", "Add", "Reshape", "Transpose", "DeformableSample"}


def _insert_after(model, anchor, new_nodes) -> None:
    idx = list(model.graph.node).index(anchor)
    for k, n in enumerate(new_nodes):
        model.graph.node.insert(idx + 1 + k, n)


def _channel_const(value: np.ndarray, channels: int) -> np.ndarray:
    """A scalar or per-channel constant as an NCHW-broadcastable ``[1, C, 1, 1]`` array."""
    v = np.asarray(value, dtype=np.float32)
    if v.size == 1:
        return v.reshape(())
    return v.reshape(1, channels, 1, 1)


class FoldWeightQuant(Transformation):
    """``Quant`` on a Conv's weight initializer -> integer weights, then ``Mul``(weight scale)
    and ``Add``(bias) after the Conv.

    Raises:
        CompileError: weights not from a Quant on a constant, unsigned or unsupported bit
            widths (2..8 signed), or a scale that is neither per tensor nor per output channel.
    """

    def apply(self, model):
        for conv in [n for n in model.graph.node if n.op_type == "Conv"]:
            wq = model.find_producer(conv.input[1])
            if model.get_initializer(conv.input[1]) is not None and wq is None:
                if model.get_tensor_datatype(conv.input[1]).is_integer():
                    continue  # already folded
                raise fail(conv, "weights must come from a Quant node on a constant (float weights "
                                 "cannot run on the integer datapath)")
            if wq is None or wq.op_type != "Quant" or model.get_initializer(wq.input[0]) is None:
                raise fail(conv, "weights must come from a Quant node on a constant")
            s, bits, signed, narrow = quant_params(model, wq)
            if bits not in SUPPORTED_WEIGHT_BITS or not signed:
                raise fail(wq, f"weights must be signed with 2..8 bits, got {bits} bits "
                               f"{'signed' if signed else 'unsigned'}")
            w = model.get_initializer(wq.input[0]).astype(np.float64)
            cout = w.shape[0]
            if s.size not in (1, cout):
                raise fail(wq, "weight scale must be per tensor or per output channel")
            s_b = s.reshape(-1, *([1] * (w.ndim - 1))) if s.size > 1 else s.reshape(())
            lo, hi = int_range(bits, True, narrow)
            w_int = np.clip(np.round(w / s_b), lo, hi)  # Quant's own semantics (half to even)
            wname = f"{conv.name}_Wint"
            model.set_initializer(wname, w_int.astype(np.float32))
            model.set_tensor_datatype(wname, DataType[f"INT{bits}"])
            conv.input[1] = wname
            if not model.find_consumers(wq.output[0]):
                model.graph.node.remove(wq)
            out = conv.output[0]
            acc = f"{conv.name}_acc"
            conv.output[0] = acc
            sname = f"{conv.name}_wscale"
            model.set_initializer(sname, _channel_const(s, cout))
            new = []
            if len(conv.input) > 2 and conv.input[2]:
                bias = model.get_initializer(conv.input[2])
                if bias is None:
                    raise fail(conv, "the bias must be a constant initializer")
                bname = f"{conv.name}_bias"
                model.set_initializer(bname, _channel_const(bias, cout))
                del conv.input[2]
                new.append(helper.make_node("Mul", [acc, sname], [f"{conv.name}_scaled"],
                                            name=f"{conv.name}_wscale_mul"))
                new.append(helper.make_node("Add", [f"{conv.name}_scaled", bname], [out],
                                            name=f"{conv.name}_bias_add"))
            else:
                new.append(helper.make_node("Mul", [acc, sname], [out], name=f"{conv.name}_wscale_mul"))
            _insert_after(model, conv, new)
        return model, False


class IntegerActivations(Transformation):
    """Activation ``Quant(x; s)`` -> ``Div(s)``, ``Quant(x; 1)`` (integers), ``Mul(s)``.

    Raises:
        CompileError: through :func:`sw.transforms.base.quant_params` (zero point, rounding).
    """

    def apply(self, model):
        scales = get_scales(model)
        for q in [n for n in model.graph.node if n.op_type == "Quant"]:
            if model.get_initializer(q.input[0]) is not None or q.output[0] in scales:
                continue
            s, bits, signed, narrow = quant_params(model, q)
            shape = model.get_tensor_shape(q.output[0])
            ch = shape[1] if shape and len(shape) > 1 else 1
            if s.size not in (1, ch):
                raise fail(q, "activation scale must be per tensor or per channel")
            out = q.output[0]
            q_int = f"{q.name}_int"
            one = f"{q.name}_one"
            model.set_initializer(one, np.asarray(1.0, dtype=np.float32))
            q.input[1] = one
            q.output[0] = q_int
            scales[q_int] = scale_value(s)
            model.set_tensor_datatype(q_int, DataType[f"{'INT' if signed else 'UINT'}{bits}"])
            if np.all(s == 1.0):
                # rewire the readers of ``out`` (no Mul needed)
                for n in model.graph.node:
                    for i, t in enumerate(n.input):
                        if t == out:
                            n.input[i] = q_int
                for o in model.graph.output:
                    if o.name == out:
                        q.output[0] = out
                        scales[out] = scales.pop(q_int)
                continue
            sname = f"{q.name}_scale"
            model.set_initializer(sname, _channel_const(s, ch))
            div = helper.make_node("Div", [q.input[0], sname], [f"{q.name}_pre"], name=f"{q.name}_div")
            q.input[0] = f"{q.name}_pre"
            idx = list(model.graph.node).index(q)
            model.graph.node.insert(idx, div)
            _insert_after(model, q, [helper.make_node("Mul", [q_int, sname], [out], name=f"{q.name}_deq")])
        set_scales(model, scales)
        return model, False


class FuseChannelShuffle(Transformation):
    """``Reshape([N, g, C/g, H, W])`` -> ``Transpose([0, 2, 1, 3, 4])`` -> ``Reshape([N, C, H, W])``
    -> ``ChannelShuffle(groups=g)`` (torch's channel shuffle as exported)."""

    def apply(self, model):
        from sw.finn_transforms import match_channel_shuffle

        for r1 in [n for n in model.graph.node if n.op_type == "Reshape"]:
            match = match_channel_shuffle(model, r1)
            if match is None:
                continue
            tr, r2, groups = match
            node = helper.make_node("ChannelShuffle", [r1.input[0]], [r2.output[0]], domain=DOMAIN,
                                    name=f"{r1.name}_shuffle", groups=groups)
            idx = list(model.graph.node).index(r1)
            for n in (r1, tr, r2):
                model.graph.node.remove(n)
            model.graph.node.insert(idx, node)
            return model, True
        return model, False


def _scalar_mul(model, node) -> float | None:
    if node is None or node.op_type != "Mul":
        return None
    c = model.get_initializer(node.input[1])
    if c is None or c.size != 1 or float(c) <= 0:
        return None
    return float(c)


class MoveScalarMulDownstream(Transformation):
    """Move positive per-tensor ``Mul`` nodes past the ops that commute with them (module
    docstring, step 5); a Mul with several readers is first copied once per reader.

    Raises:
        CompileError: Concat/Add inputs with different scales, or deformable offsets whose
            scale is not 1 (both rules of docs/detector_contract.md section 1).
    """

    UNARY = {"Conv", "MaxPool", "Resize", "Reshape", "Transpose", "ChannelShuffle", "Split", "Slice",
             "DeformableSample"}

    def apply(self, model):
        g = model.graph
        for m in list(g.node):
            c = _scalar_mul(model, m)
            if c is None or m.output[0] in [o.name for o in g.output]:
                continue
            readers = model.find_consumers(m.output[0])
            if len(readers) > 1:
                for k, r in enumerate(readers[1:], 1):
                    t = f"{m.output[0]}_fan{k}"
                    copy = helper.make_node("Mul", [m.input[0], m.input[1]], [t], name=f"{m.name}_fan{k}")
                    _insert_after(model, m, [copy])
                    r.input[list(r.input).index(m.output[0])] = t
                return model, True
            if not readers:
                continue
            n = readers[0]
            port = list(n.input).index(m.output[0])
            if n.op_type == "DeformableSample" and port == 1:
                if c != 1.0:
                    raise fail(n, f"offsets must be integers (Quant scale 1.0), got scale {c:g}")
                n.input[1] = m.input[0]
                g.node.remove(m)
                return model, True
            if n.op_type in ("Concat", "Add"):
                prods = [model.find_producer(t) for t in n.input]
                cs = [_scalar_mul(model, p) for p in prods]
                if any(v is None for v in cs):
                    continue  # another input's Mul has not arrived yet
                if len(set(cs)) != 1:
                    raise fail(n, f"inputs carry different scales {', '.join(f'{v:g}' for v in cs)}; "
                                  "rule: all inputs must come from the same activation quantizer")
                if any(len(model.find_consumers(p.output[0])) != 1 for p in prods):
                    continue
                for i, p in enumerate(prods):
                    n.input[i] = p.input[0]
                    g.node.remove(p)
                self._mul_after(model, n, 0, c)
                return model, True
            if n.op_type not in self.UNARY or port != 0:
                continue
            if n.op_type == "Conv" and len(n.input) > 2 and n.input[2]:
                continue
            n.input[0] = m.input[0]
            g.node.remove(m)
            for k in range(len(n.output)):
                self._mul_after(model, n, k, c)
            return model, True
        return model, False

    @staticmethod
    def _mul_after(model, node, k: int, c: float) -> None:
        out = node.output[k]
        t = f"{node.name}_o{k}_int"
        node.output[k] = t
        cname = f"{node.name}_o{k}_scale"
        model.set_initializer(cname, np.asarray(c, dtype=np.float32))
        _insert_after(model, node, [helper.make_node("Mul", [t, cname], [out], name=f"{node.name}_o{k}_mul")])


class CollapseToRequant(Transformation):
    """``integer -> (Mul|Div|Add const)* [Relu] -> Quant(1)`` -> one ``Requant`` node (module
    docstring, step 6).

    Raises:
        CompileError: a chain that does not start at an integer tensor (e.g. a float op between
            two quantisers), an Add after the ReLU, a non-positive or non-finite combined scale,
            or a ratio too large for the multiplier.
    """

    CHAIN = {"Mul", "Div", "Add", "Relu"}

    def apply(self, model):
        scales = get_scales(model)
        gin = model.graph.input[0].name
        for q in [n for n in model.graph.node if n.op_type == "Quant"]:
            if model.get_initializer(q.input[0]) is not None or q.input[0] == gin:
                continue
            chain, t = [], q.input[0]
            while True:
                p = model.find_producer(t)
                if p is None or p.op_type not in self.CHAIN or len(model.find_consumers(t)) != 1:
                    break
                if p.op_type != "Relu" and model.get_initializer(p.input[1]) is None:
                    break  # an Add of two tensors is an integer source, not a constant
                chain.insert(0, p)
                t = p.input[0]
            src = model.find_producer(t)
            if src is None or src.op_type not in INTEGER_OPS or (src.op_type == "Quant" and t not in scales
                                                                 and src.input[0] != gin):
                raise fail(q, f"its input is not an integer tensor after streamlining (produced by "
                              f"{src.op_type if src else 'the graph input'} "
                              f"{src.name if src else ''!r}); rule: every float op must sit between a "
                              "Conv/integer op and an activation Quant")
            shape = model.get_tensor_shape(t)
            ch = shape[1]
            a, b, relu = np.ones(ch), np.zeros(ch), False
            for p in chain:
                if p.op_type == "Relu":
                    relu = True
                    continue
                k = np.asarray(model.get_initializer(p.input[1]), np.float64).reshape(-1)
                if k.size not in (1, ch):
                    raise fail(p, "constant must be per tensor or per channel")
                k = np.broadcast_to(k, (ch,))
                if p.op_type == "Add":
                    if relu:
                        raise fail(p, "an Add after the ReLU cannot be folded into the requantisation")
                    b = b + k
                elif p.op_type == "Mul":
                    if relu and np.any(k <= 0):
                        raise fail(p, "a non-positive scale after the ReLU cannot be folded")
                    a, b = a * k, b * k
                else:
                    a, b = a / k, b / k
            _, bits, signed, narrow = quant_params(model, q)
            lo, hi = int_range(bits, signed, narrow)
            if relu:
                lo = max(lo, 0)
            shift = choose_shift(q, a)
            mname, bname = f"{q.name}_M", f"{q.name}_B"
            multiplier = np.round(a * 2.0**shift)
            bias = np.round(b * 2.0**shift) + 2.0 ** (shift - 1)
            # int64 initializers: the bias needs up to ~40 bits, beyond float32's exact range
            model.set_initializer(mname, multiplier.astype(np.int64))
            model.set_initializer(bname, bias.astype(np.int64))
            node = helper.make_node("Requant", [t, mname, bname], [q.output[0]], domain=DOMAIN,
                                    name=f"{q.name}_requant", shift=shift, out_min=int(lo), out_max=int(hi))
            idx = list(model.graph.node).index(q)
            model.graph.node.insert(idx, node)
            for p in chain + [q]:
                model.graph.node.remove(p)
            return model, True
        return model, False


def choose_shift(node, ratio: np.ndarray) -> int:
    """Largest shift ``S`` (at most 32) with ``round(max(ratio) * 2**S) < 2**MULTIPLIER_BITS``.

    Raises:
        CompileError: a non-positive or non-finite ratio, or one too large for the multiplier.
    """
    if np.any(ratio <= 0) or not np.all(np.isfinite(ratio)):
        raise fail(node, "requantisation scale must be positive and finite (the product of input, "
                         "weight, batch-norm and output scales)")
    shift = int(math.floor(math.log2((2**MULTIPLIER_BITS - 1) / float(np.max(ratio)))))
    if shift < 1:
        raise fail(node, f"requantisation ratio {float(np.max(ratio)):.3g} too large for a "
                         f"{MULTIPLIER_BITS}-bit multiplier")
    return min(shift, 32)


class StripOutputScale(Transformation):
    """Remove the dequantising ``Mul`` that produces the graph output; the output then holds
    the integers and its recorded scale is the Mul's constant."""

    def apply(self, model):
        out = model.graph.output[0].name
        m = model.find_producer(out)
        scales = get_scales(model)
        if m is None or m.op_type != "Mul" or model.get_initializer(m.input[1]) is None:
            return model, False
        src = m.input[0]
        p = model.find_producer(src)
        # a Conv output is an accumulator, not a quantised tensor: leave it for the refusal
        if (p is None or p.op_type not in INTEGER_OPS - {"Conv", "DeformableSample"}
                or len(model.find_consumers(src)) != 1):
            return model, False
        p.output[list(p.output).index(src)] = out
        model.graph.node.remove(m)
        model.set_tensor_datatype(out, model.get_tensor_datatype(src))
        scales[out] = scale_value(model.get_initializer(m.input[1]))
        set_scales(model, scales)
        return model, True
