"""deflow's own graph rewrites, written as qonnx ``Transformation`` s to sit in FINN's chain where
FINN has none (the rest of the front end is FINN's, :mod:`sw.compiler.finn_frontend`)."""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.transformation.base import Transformation

__all__ = ["RescaleConcatInputs", "LowerDeformableConv", "LowerChannelShuffle",
           "MoveScalarMulPastDataMovers", "ExplicitSplitSizes", "ExplicitConvAttributes",
           "match_channel_shuffle", "MergeForkedTransposes", "MakeMaxPoolNHWCUnforked",
           "rescale_thresholds"]


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


class LowerDeformableConv(Transformation):
    """``DeformableSample`` + its grouped 1x1 ``Conv`` (the deformable depthwise 3x3 as exported
    by ``models/deform.py``) to FINN's form of a depthwise convolution: a window node and a
    ``MatMul`` whose block-sparse weight carries FINN's depthwise sparsity annotation, so that
    FINN's ``InferVectorVectorActivation`` makes it a ``VVAU``.

    ``DeformableSample(x, off)`` (NCHW, channel ``c*9 + k``) -> ``Conv(group=C, 1x1, W[C, 9])``
    becomes ``Transpose`` -> ``DeformableWindow`` (NHWC, FINN's window order ``k*C + c``,
    :mod:`sw.qonnx_ops.deformable_window`) -> ``MatMul(W_sparse[9C, C])`` -> ``Transpose``;
    FINN's transpose absorption removes the layout transposes. Runs in place of (before)
    ``LowerConvsToMatMul``, which cannot lower a 9-input grouped conv."""

    def apply(self, model):
        graph = model.graph
        for ds in list(graph.node):
            if ds.op_type != "DeformableSample":
                continue
            consumers = model.find_consumers(ds.output[0]) or []
            if len(consumers) != 1 or consumers[0].op_type != "Conv":
                raise ValueError(f"node {ds.name!r} (DeformableSample): its output must feed one "
                                 "grouped 1x1 Conv (the deformable depthwise 3x3)")
            conv = consumers[0]
            w = model.get_initializer(conv.input[1])
            attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
            c = int(w.shape[0]) if w is not None else -1
            if (w is None or tuple(w.shape) != (c, 9, 1, 1) or attrs.get("group") != c
                    or len(conv.input) > 2):
                raise ValueError(f"node {conv.name!r} (Conv): after a DeformableSample only a "
                                 "1x1 conv with group = C, 9 inputs per group and no bias")
            max_offset = next((helper.get_attribute_value(a) for a in ds.attribute
                               if a.name == "max_offset"), 7)
            x, off = ds.input
            n, _, h, wd = model.get_tensor_shape(x)
            names = [model.make_new_valueinfo_name() for _ in range(5)]
            x_nhwc, off_nhwc, win, w_name, y_nhwc = names
            wdt = model.get_tensor_datatype(conv.input[1])
            # W_sparse[k*C + c, c] = W[c, k]: FINN's sparse depthwise matrix
            sparse = np.zeros((9 * c, c), dtype=np.float32)
            for k in range(9):
                sparse[k * c + np.arange(c), np.arange(c)] = w[:, k, 0, 0]
            model.set_initializer(w_name, sparse)
            model.set_tensor_datatype(w_name, wdt)
            model.set_tensor_sparsity(w_name, {"dw": {"kernel_shape": [3, 3]}})
            new = [
                helper.make_node("Transpose", [x], [x_nhwc], perm=[0, 2, 3, 1]),
                helper.make_node("Transpose", [off], [off_nhwc], perm=[0, 2, 3, 1]),
                helper.make_node("DeformableWindow", [x_nhwc, off_nhwc], [win],
                                 domain="sw.qonnx_ops", max_offset=int(max_offset),
                                 name=f"{ds.name}_window"),
                helper.make_node("MatMul", [win, w_name], [y_nhwc]),
                helper.make_node("Transpose", [y_nhwc], [conv.output[0]], perm=[0, 3, 1, 2]),
            ]
            model.set_tensor_shape(x_nhwc, [n, h, wd, model.get_tensor_shape(x)[1]])
            model.set_tensor_shape(off_nhwc, [n, h, wd, 1])
            model.set_tensor_shape(win, [n, h, wd, 9 * c])
            model.set_tensor_shape(y_nhwc, [n, h, wd, c])
            idx = list(graph.node).index(ds)
            graph.node.remove(ds)
            graph.node.remove(conv)
            for i, node in enumerate(new):
                graph.node.insert(idx + i, node)
        return model, False


class MoveScalarMulPastDataMovers(Transformation):
    """``f(Mul(x, s))`` -> ``Mul(f(x), s)`` for a scalar ``s`` and deflow's data movers ``f``:
    ``DeformableSample`` (its feature input; sampling gathers values and fills zeros) and
    ``ChannelShuffle`` (a permutation), as FINN's ``MoveScalarLinearPastInvariants`` does for
    ``Reshape`` or ``Transpose``; FINN's moves then carry the scale on into the thresholds."""

    MOVERS = ("DeformableSample", "ChannelShuffle")

    def apply(self, model):
        graph = model.graph
        for node in list(graph.node):
            if node.op_type not in self.MOVERS:
                continue
            mul = model.find_producer(node.input[0])
            if mul is None or mul.op_type != "Mul" or len(model.find_consumers(mul.output[0])) != 1:
                continue
            scale = model.get_initializer(mul.input[1])
            if scale is None or np.asarray(scale).size != 1:
                continue
            moved = model.make_new_valueinfo_name()
            out = node.output[0]
            node.input[0] = mul.input[0]
            node.output[0] = moved
            mul.input[0] = moved
            mul.output[0] = out
            graph.node.remove(mul)
            graph.node.insert(list(graph.node).index(node) + 1, mul)
            model.set_tensor_shape(moved, model.get_tensor_shape(out))
            return model, True
        return model, False


def match_channel_shuffle(model, r1):
    """``(transpose, reshape, groups)`` when ``Reshape r1`` starts torch's channel shuffle as
    exported (``Reshape([N, g, C/g, H, W])`` -> ``Transpose([0, 2, 1, 3, 4])`` ->
    ``Reshape([N, C, H, W])``), else ``None``."""
    tr = model.find_consumer(r1.output[0])
    if tr is None or tr.op_type != "Transpose" or len(model.find_consumers(r1.output[0])) != 1:
        return None
    r2 = model.find_consumer(tr.output[0])
    if r2 is None or r2.op_type != "Reshape":
        return None
    in_shape = model.get_tensor_shape(r1.input[0])
    mid = model.get_tensor_shape(r1.output[0])
    out_shape = model.get_tensor_shape(r2.output[0])
    perm = next((list(helper.get_attribute_value(a)) for a in tr.attribute if a.name == "perm"), [])
    if (len(in_shape) != 4 or len(mid) != 5 or perm != [0, 2, 1, 3, 4]
            or list(out_shape) != list(in_shape) or mid[1] * mid[2] != in_shape[1]):
        return None
    return tr, r2, int(mid[1])


class LowerChannelShuffle(Transformation):
    """torch's channel shuffle as exported (``Reshape([N, g, C/g, H, W])`` ->
    ``Transpose([0, 2, 1, 3, 4])`` -> ``Reshape([N, C, H, W])``, NCHW) to deflow's NHWC
    ``ChannelShuffle`` node (:mod:`sw.qonnx_ops.channel_shuffle`) between layout transposes,
    which FINN's transpose absorption then cancels against its neighbours'."""

    def apply(self, model):
        graph = model.graph
        for r1 in [n for n in graph.node if n.op_type == "Reshape"]:
            match = match_channel_shuffle(model, r1)
            if match is None:
                continue
            tr, r2, groups = match
            in_shape = model.get_tensor_shape(r1.input[0])
            n, c, h, w = in_shape
            x_nhwc, y_nhwc = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
            new = [helper.make_node("Transpose", [r1.input[0]], [x_nhwc], perm=[0, 2, 3, 1]),
                   helper.make_node("ChannelShuffle", [x_nhwc], [y_nhwc], domain="sw.qonnx_ops",
                                    groups=groups, name=f"{r1.name}_shuffle"),
                   helper.make_node("Transpose", [y_nhwc], [r2.output[0]], perm=[0, 3, 1, 2])]
            for t in (x_nhwc, y_nhwc):
                model.set_tensor_shape(t, [n, h, w, c])
            idx = list(graph.node).index(r1)
            for old in (r1, tr, r2):
                graph.node.remove(old)
            for i, node in enumerate(new):
                graph.node.insert(idx + i, node)
            return model, True
        return model, False


class ExplicitSplitSizes(Transformation):
    """A ``Split`` without its ``split`` input (``torch.chunk`` exports an equal split that way)
    gets the sizes as a constant input, the form FINN's ``InferSplitLayer`` reads."""

    def apply(self, model):
        for node in model.graph.node:
            if node.op_type != "Split" or (len(node.input) > 1 and node.input[1]):
                continue
            axis = next((helper.get_attribute_value(a) for a in node.attribute
                         if a.name == "axis"), 0)
            sizes = [model.get_tensor_shape(o)[axis] for o in node.output]
            name = model.make_new_valueinfo_name()
            model.set_initializer(name, np.asarray(sizes, dtype=np.int64))
            if len(node.input) > 1:
                node.input[1] = name
            else:
                node.input.append(name)
            for a in list(node.attribute):
                if a.name == "num_outputs":
                    node.attribute.remove(a)
        return model, False


class ExplicitConvAttributes(Transformation):
    """``Conv`` / ``MaxPool`` attributes that ONNX lets default (strides, pads, dilations,
    group, kernel_shape) written out, as qonnx's ``LowerConvsToMatMul`` reads them; exporters
    such as Brevitas's write them, hand-built graphs often do not."""

    def apply(self, model):
        for node in model.graph.node:
            if node.op_type not in ("Conv", "MaxPool"):
                continue
            have = {a.name for a in node.attribute}
            if "kernel_shape" not in have and node.op_type == "Conv":
                w = model.get_tensor_shape(node.input[1])
                if w is not None:
                    node.attribute.append(helper.make_attribute("kernel_shape", list(w[2:])))
            defaults = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1]}
            if node.op_type == "Conv":
                defaults["group"] = 1
            for name, value in defaults.items():
                if name not in have:
                    node.attribute.append(helper.make_attribute(name, value))
        return model, False


class MergeForkedTransposes(Transformation):
    """A tensor read only by Transposes of one ``perm`` (two or more of them) is transposed
    once, and the fork moves after that single Transpose.

    FINN's ``MoveTransposePastFork`` goes the other way (one Transpose before a fork becomes one
    per branch); after ``LowerConvsToMatMul`` a forked NCHW tensor, such as the max-pool output
    that both branches of a stride-2 ShuffleNetV2 unit read, has one NCHW->NHWC Transpose per
    branch, and nothing in FINN merges them. ``MakeMaxPoolNHWC`` then needs a single consumer.
    """

    def apply(self, model):
        graph, changed = model.graph, False
        outputs = {o.name for o in graph.output}
        for tensor in dict.fromkeys(i for n in graph.node for i in n.input):  # graph order
            readers = model.find_consumers(tensor)
            if len(readers) < 2 or any(r.op_type != "Transpose" for r in readers):
                continue
            perms = {tuple(next(a.ints for a in r.attribute if a.name == "perm")) for r in readers}
            if len(perms) != 1 or any(r.output[0] in outputs for r in readers[1:]):
                continue
            keep = readers[0]
            for r in readers[1:]:
                for n in graph.node:
                    n.input[:] = [keep.output[0] if i == r.output[0] else i for i in n.input]
                graph.node.remove(r)
            changed = True
        return model, changed


class MakeMaxPoolNHWCUnforked(Transformation):
    """FINN's ``MakeMaxPoolNHWC`` applied only to MaxPool nodes with at most one reader.

    FINN's version swaps a MaxPool with the Transpose it finds as *a* consumer without checking
    for a fork, so on a forked MaxPool the other branches silently read the un-pooled tensor
    (found on codenet256's stem, finn-plus 1.6.1). A forked MaxPool is left NCHW here; run
    :class:`MergeForkedTransposes` first so that a fork into like Transposes is not a fork.
    """

    def apply(self, model):
        from finn.transformation.streamline.reorder import MakeMaxPoolNHWC

        forked = [n for n in model.graph.node
                  if n.op_type == "MaxPool" and len(model.find_consumers(n.output[0])) > 1]
        for n in forked:  # hidden from FINN's pass, restored below
            n.op_type = "MaxPoolForked"
        try:
            model, changed = MakeMaxPoolNHWC().apply(model)
        finally:
            for n in forked:
                n.op_type = "MaxPool"
        return model, changed
