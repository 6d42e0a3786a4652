"""Lower a QONNX export of a Brevitas model to the hardware-layer graph (:mod:`hw.graph`).

Two stages:

1. :func:`streamline_qonnx`: the qonnx Transformations of :mod:`sw.transforms` (cleanup,
   weight-quant folding, BatchNorm -> affine, integer activations, scale movement, collapse of
   every ``scale/bias/BN/ReLU/Quant`` chain into one integer ``Requant``). The result is an
   integer ONNX graph that qonnx executes: the reference the golden model must equal exactly.
2. :func:`lower_streamlined`: each node of that graph becomes hardware layers
   (docs/detector_contract.md section 2):

   ====================================  ===============================================
   streamlined node                      hardware layers
   ====================================  ===============================================
   ``Quant`` on the graph input          the accelerator's (unsigned) integer input
   ``Conv`` 1x1 / stride 1 / no pad      MVAU
   ``Conv`` other, group 1               SlidingWindow (standard) + MVAU
   ``Conv`` depthwise (group = C)        SlidingWindow (depthwise) + VVAU
   ``Conv`` 1x1, group C, on a           VVAU with 9 taps (the deformable depthwise 3x3)
   ``DeformableSample``
   ``DeformableSample``                  DeformableSampler (offsets from an unsigned
                                         scale-1 Requant, clamped to [0, max_offset])
   ``Requant``                           Requant (after a Conv: on its accumulators; on an
                                         integer feature: a re-quantised passthrough)
   ``MaxPool``                           SlidingWindow (depthwise, pad value 0) + MaxPool
                                         (input must be unsigned)
   ``Resize`` (nearest, integer factor)  Upsample
   ``Concat`` (channels)                 Concat (inputs of equal scale, bits and sign)
   ``Split`` / ``Slice`` (channels)      ChannelSplit
   ``ChannelShuffle``                    ChannelShuffle
   ``Add`` (two tensors)                 Add (one bit wider; the next Requant narrows it)
   a tensor read by n > 1 layers         n - 1 Duplicate layers (FINN's DuplicateStreams)
   ====================================  ===============================================

Requantisation arithmetic: see :mod:`sw.transforms.streamline` (``M/2**S`` with bias, round
half up, ``MULTIPLIER_BITS``-bit multiplier). Its distance from Brevitas (multiplier rounding,
ties) is measured by :func:`sw.execute.compare_with_brevitas`, not assumed away.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper

from hw.graph import HWGraph, HWLayer, TensorInfo
from sw.transforms.base import CompileError, attr, get_scales
from sw.transforms.streamline import MULTIPLIER_BITS, SUPPORTED_WEIGHT_BITS  # noqa: F401

__all__ = ["CompileError", "lower_qonnx", "streamline_qonnx", "lower_streamlined",
           "MULTIPLIER_BITS", "SUPPORTED_WEIGHT_BITS", "CUSTOM_DOMAIN"]

CUSTOM_DOMAIN = "sw.qonnx_ops"
SUPPORTED = ("Quant (input), Conv, Requant, DeformableSample, MaxPool, Resize (nearest), Concat, "
             "Split/Slice (channels), ChannelShuffle, Add")


def acc_bits(in_bits: int, in_signed: bool, w_bits: int, n: int) -> int:
    """Accumulator width (bits, signed) for ``n`` products of an input and a weight: enough for
    ``n * max|x| * max|w|`` (FINN's data-type bound for the MVAU accumulator)."""
    in_mag = 2 ** (in_bits - 1) if in_signed else 2**in_bits - 1
    bound = in_mag * 2 ** (w_bits - 1) * n
    return int(math.ceil(math.log2(bound + 1))) + 1


class _Lowerer:
    def __init__(self, model: ModelWrapper):
        self.model = model
        self.graph = model.graph
        self.scales = get_scales(model)
        self.layers: list[HWLayer] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.names: dict[str, int] = {}
        self.done: set[str] = set()

    def fail(self, node, rule: str) -> CompileError:
        where = f"node {node.name!r} ({node.op_type})" if node is not None else "graph"
        return CompileError(f"{where}: {rule}")

    def uname(self, base: str) -> str:
        n = self.names.get(base, 0)
        self.names[base] = n + 1
        return f"{base}_{n}"

    def feature_info(self, tensor: str, bits: int, signed: bool, scale, kind="feature") -> TensorInfo:
        shape = self.model.get_tensor_shape(tensor)
        if shape is None or len(shape) != 4 or shape[0] != 1:
            raise CompileError(f"tensor {tensor!r}: expected NCHW with batch 1, got {shape}")
        _, c, h, w = shape
        info = TensorInfo(tensor, (h, w, c), bits, signed, scale, kind)
        self.tensors[tensor] = info
        return info

    def need_feature(self, node, tensor: str) -> TensorInfo:
        info = self.tensors.get(tensor)
        if info is None or info.kind != "feature":
            raise self.fail(node, f"input {tensor!r} is not an integer feature tensor (a float op or "
                                  "a missing activation Quant before it); rule: every layer input "
                                  "must be quantised")
        return info

    # -- the pass ----------------------------------------------------------------------------
    def run(self) -> HWGraph:
        if len(self.graph.input) != 1 or len(self.graph.output) != 1:
            raise self.fail(None, "exactly one graph input and one graph output are supported")
        gin = self.graph.input[0].name
        first = self.model.find_consumers(gin)
        if len(first) != 1 or first[0].op_type != "Quant":
            raise self.fail(first[0] if first else None,
                            "the graph input must feed exactly one Quant node (integer input)")
        qin = first[0]
        dt = self.model.get_tensor_datatype(qin.output[0])
        scale = self.scales.get(qin.output[0])
        if isinstance(scale, list):
            raise self.fail(qin, "input quantisation must be per tensor")
        if dt.signed():
            raise self.fail(qin, "the accelerator input must be unsigned (uint8 pixels)")
        self.feature_info(qin.output[0], dt.bitwidth(), False, scale)
        self.done.add(qin.name)
        for node in self.graph.node:
            if node.name in self.done:
                continue
            if node.op_type in ("Mul", "Div", "Relu", "BatchNormalization") or (
                    node.op_type == "Add" and any(self.model.get_initializer(t) is not None for t in node.input)):
                raise self.float_leftover(node)
            handler = getattr(self, f"lower_{node.op_type}", None)
            if node.op_type == "Quant":
                raise self.fail(node, "a Quant here was not absorbed into a requantisation "
                                      "(is its input a float tensor?)")
            if handler is None:
                raise self.fail(node, f"unsupported op; supported: {SUPPORTED}")
            handler(node)
            self.done.add(node.name)
        gout = self.graph.output[0].name
        if gout not in self.tensors or self.tensors[gout].kind != "feature":
            raise self.fail(self.model.find_producer(gout),
                            "the graph output must be a quantised feature map")
        self.insert_duplicates()
        return HWGraph(self.layers, self.tensors, qin.output[0], gout)

    def float_leftover(self, node) -> CompileError:
        """The error for a float op that no requantisation absorbed, naming the integer op
        it follows (usually a Conv without an output Quant)."""
        src = node
        while src is not None and (src.op_type in ("Mul", "Div", "Relu", "Add", "BatchNormalization")):
            prev = self.model.find_producer(src.input[0])
            if prev is None:
                break
            src = prev
        if src is not None and src.op_type == "Conv":
            return self.fail(src, f"a Conv must be followed by [BatchNorm ->] [Relu ->] an activation "
                                  f"Quant (the accelerator streams integers only; float op "
                                  f"{node.name!r} ({node.op_type}) is left after streamlining)")
        return self.fail(node, "float op left after streamlining: it must sit between an integer op "
                               "and an activation Quant that absorbs it")

    def add(self, op, node, inputs, outputs, attrs, params=None) -> HWLayer:
        layer = HWLayer(self.uname(op), op, inputs, outputs, attrs, params or {}, source_node=node.name)
        self.layers.append(layer)
        return layer

    def window(self, node, x: str, k, stride, pad, dilation, depthwise) -> str:
        xin = self.tensors[x]
        h, w, c = xin.shape
        from hw.golden import conv_output_dim

        oh, ow = conv_output_dim(h, k, stride, pad, dilation), conv_output_dim(w, k, stride, pad, dilation)
        src = f"{node.name}_windows"
        self.tensors[src] = TensorInfo(src, (oh, ow, k * k * c), xin.bits, xin.signed, None,
                                       "dwwindow" if depthwise else "window")
        self.add("SlidingWindow", node, [x], [src],
                 dict(ifm_dim=(h, w), channels=c, kernel=k, stride=stride, pad=pad,
                      dilation=dilation, depthwise=depthwise, bits=xin.bits, signed=xin.signed))
        return src

    @staticmethod
    def geometry(node, what: str):
        ks = list(attr(node, "kernel_shape", []) or [])
        strides = list(attr(node, "strides", [1, 1]) or [1, 1])
        pads = list(attr(node, "pads", [0, 0, 0, 0]) or [0, 0, 0, 0])
        dil = list(attr(node, "dilations", [1, 1]) or [1, 1])
        if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", ""):
            raise CompileError(f"node {node.name!r} ({node.op_type}): auto_pad is not supported; "
                               "export explicit pads")
        if (ks and ks[0] != ks[1]) or strides[0] != strides[1] or dil[0] != dil[1] or len(set(pads)) != 1:
            raise CompileError(f"node {node.name!r} ({node.op_type}): square {what}s, strides, "
                               f"dilations and symmetric padding only (kernel {ks}, strides {strides}, "
                               f"pads {pads}, dilations {dil})")
        return (ks[0] if ks else None), strides[0], pads[0], dil[0]

    def lower_Conv(self, node) -> None:
        x = node.input[0]
        xin = self.tensors.get(x)
        if xin is None:
            self.need_feature(node, x)
        w = self.model.get_initializer(node.input[1])
        wdt = self.model.get_tensor_datatype(node.input[1])
        if w is None or not wdt.is_integer():
            raise self.fail(node, "weights must be integers from a weight Quant")
        if len(node.input) > 2 and node.input[2]:
            raise self.fail(node, "a Conv bias must have been moved into the requantisation")
        w_bits = wdt.bitwidth()
        w_int = np.asarray(w).astype(np.int64)
        cout, cin_g, kh, kw = w_int.shape
        group = int(attr(node, "group", 1))
        _, stride, pad, dilation = self.geometry(node, "kernel")
        if kh != kw:
            raise self.fail(node, f"square kernels only (kernel {kh}x{kw})")
        k = kh
        acc = node.output[0]
        oshape = self.model.get_tensor_shape(acc)
        oh, ow = oshape[2], oshape[3]
        pixels = oh * ow
        if xin.kind == "window9":
            if not (k == 1 and group == cout and xin.shape[2] == cout * 9 and cin_g == 9):
                raise self.fail(node, "after a DeformableSample only a 1x1 conv with group = C_out "
                                      "and 9 inputs per group (depthwise 3x3) is supported")
            self.add_vvau(node, x, acc, w_int.reshape(cout, 9), w_bits, cout, 9, pixels)
            return
        xin = self.need_feature(node, x)
        h, wd, cin = xin.shape
        if group == 1:
            mw = k * k * cin
            weights = w_int.transpose(0, 2, 3, 1).reshape(cout, mw)
            src = x if (k == 1 and stride == 1 and pad == 0) else self.window(
                node, x, k, stride, pad, dilation, False)
            bits = acc_bits(xin.bits, xin.signed, w_bits, mw)
            self.tensors[acc] = TensorInfo(acc, (oh, ow, cout), bits, True, None, "acc")
            self.add("MVAU", node, [src], [acc],
                     dict(mh=cout, mw=mw, pixels=pixels, weight_bits=w_bits, in_bits=xin.bits,
                          in_signed=xin.signed, acc_bits=bits), dict(weights=weights))
        elif group == cin == cout and cin_g == 1:
            src = self.window(node, x, k, stride, pad, dilation, True)
            self.add_vvau(node, src, acc, w_int.reshape(cout, k * k), w_bits, cout, k * k, pixels)
        else:
            raise self.fail(node, f"grouped convolution with group={group} (C_in={cin}, "
                                  f"C_out={cout}) is neither dense nor depthwise")

    def add_vvau(self, node, src, acc, weights, w_bits, channels, kk, pixels):
        xin = self.tensors[src]
        bits = acc_bits(xin.bits, xin.signed, w_bits, kk)
        oh, ow = xin.shape[:2]
        self.tensors[acc] = TensorInfo(acc, (oh, ow, channels), bits, True, None, "acc")
        self.add("VVAU", node, [src], [acc],
                 dict(channels=channels, kernel_elems=kk, pixels=pixels, weight_bits=w_bits,
                      in_bits=xin.bits, in_signed=xin.signed, acc_bits=bits), dict(weights=weights))

    def lower_Requant(self, node) -> None:
        x, out = node.input[0], node.output[0]
        xin = self.tensors.get(x)
        if xin is None or xin.kind not in ("acc", "feature"):
            raise self.fail(node, f"input {x!r} must be a Conv accumulator or an integer feature")
        dt = self.model.get_tensor_datatype(out)
        if not dt.is_integer():
            raise self.fail(node, f"output {out!r} has no integer data type")
        lo, hi = int(attr(node, "out_min")), int(attr(node, "out_max"))
        for consumer in self.model.find_consumers(out):
            if consumer.op_type == "DeformableSample" and consumer.input[1] == out:
                if lo < 0 or self.scales.get(out) != 1.0:
                    raise self.fail(node, "deformable offsets must be unsigned integers (scale 1.0)")
                hi = min(hi, int(attr(consumer, "max_offset", 7)))
        h, w, c = xin.shape
        oinfo = self.feature_info(out, dt.bitwidth(), dt.signed(), self.scales.get(out))
        self.add("Requant", node, [x], [out],
                 dict(channels=c, pixels=h * w, shift=int(attr(node, "shift")), out_min=lo, out_max=hi,
                      acc_bits=xin.bits, in_signed=xin.signed),
                 dict(multiplier=np.asarray(self.model.get_initializer(node.input[1])).astype(np.int64).reshape(-1),
                      bias=np.asarray(self.model.get_initializer(node.input[2])).astype(np.int64).reshape(-1)))
        assert oinfo.shape[2] == c

    def lower_DeformableSample(self, node) -> None:
        x, off = node.input[0], node.input[1]
        xin = self.need_feature(node, x)
        oin = self.need_feature(node, off)
        max_offset = int(attr(node, "max_offset", 7))
        if oin.shape != (*xin.shape[:2], 1):
            raise self.fail(node, f"offsets {oin.shape} must be one channel of size {xin.shape[:2]}")
        if oin.signed or oin.scale != 1.0:
            raise self.fail(node, "offsets must be unsigned integers (Quant scale 1.0): the "
                                  "hardware-friendly form rounds offsets to whole pixels")
        h, w, c = xin.shape
        out = node.output[0]
        self.tensors[out] = TensorInfo(out, (h, w, 9 * c), xin.bits, xin.signed, xin.scale, "window9")
        self.add("DeformableSampler", node, [x, off], [out],
                 dict(ifm_dim=(h, w), channels=c, max_offset=max_offset, bits=xin.bits,
                      offset_bits=oin.bits))

    def passthrough(self, node, x: str, out: str, kind="feature") -> TensorInfo:
        xin = self.tensors[x]
        return self.feature_info(out, xin.bits, xin.signed, xin.scale, kind)

    def lower_MaxPool(self, node) -> None:
        x = node.input[0]
        xin = self.need_feature(node, x)
        if xin.signed:
            raise self.fail(node, "MaxPool input must be unsigned (the window pads with 0, which is "
                                  "the identity of max only for values >= 0; pool after a ReLU)")
        if int(attr(node, "ceil_mode", 0)) or len(node.output) > 1:
            raise self.fail(node, "ceil_mode and the indices output are not supported")
        k, stride, pad, dil = self.geometry(node, "kernel")
        src = self.window(node, x, k, stride, pad, dil, True)
        out = self.passthrough(node, x, node.output[0])
        self.add("MaxPool", node, [src], [node.output[0]],
                 dict(kernel=k, channels=xin.shape[2], pixels=out.shape[0] * out.shape[1], bits=xin.bits))

    def lower_Resize(self, node) -> None:
        x = node.input[0]
        xin = self.need_feature(node, x)
        mode = attr(node, "mode", "nearest")
        ctm = attr(node, "coordinate_transformation_mode", "half_pixel")
        nearest = attr(node, "nearest_mode", "round_prefer_floor")
        if mode != "nearest" or ctm != "asymmetric" or nearest != "floor":
            raise self.fail(node, f"only nearest upsampling out[y] = in[y // f] is supported (mode "
                                  f"{mode!r}, coordinate_transformation_mode {ctm!r}, nearest_mode "
                                  f"{nearest!r}; expected nearest/asymmetric/floor)")
        oshape = self.model.get_tensor_shape(node.output[0])
        h, w, c = xin.shape
        fh, fw = oshape[2] / h, oshape[3] / w
        if fh != fw or fh != int(fh) or fh < 1 or oshape[1] != c:
            raise self.fail(node, f"the upsampling factor must be one integer for H and W "
                                  f"(got {fh:g} x {fw:g})")
        self.passthrough(node, x, node.output[0])
        self.add("Upsample", node, [x], [node.output[0]], dict(factor=int(fh), ifm_dim=(h, w), channels=c,
                                                              bits=xin.bits))

    def lower_Concat(self, node) -> None:
        if int(attr(node, "axis", 1)) not in (1, -3):
            raise self.fail(node, "concatenation along channels (axis 1) only")
        infos = [self.need_feature(node, t) for t in node.input]
        a = infos[0]
        for b in infos[1:]:
            if (b.bits, b.signed, b.scale) != (a.bits, a.signed, a.scale) or b.shape[:2] != a.shape[:2]:
                raise self.fail(node, f"inputs {a.name!r} ({a.bits} bits, scale {a.scale}) and {b.name!r} "
                                      f"({b.bits} bits, scale {b.scale}) differ; rule: concat inputs come "
                                      "from one shared quantizer and have the same H, W")
        self.passthrough(node, node.input[0], node.output[0])
        self.add("Concat", node, list(node.input), [node.output[0]],
                 dict(channels=[i.shape[2] for i in infos], pixels=a.shape[0] * a.shape[1], bits=a.bits))

    def lower_Split(self, node) -> None:
        x = node.input[0]
        xin = self.need_feature(node, x)
        if int(attr(node, "axis", 0)) not in (1, -3):
            raise self.fail(node, "split along channels (axis 1) only")
        sizes = [self.model.get_tensor_shape(o)[1] for o in node.output]
        for o in node.output:
            self.passthrough(node, x, o)
        self.add("ChannelSplit", node, [x], list(node.output),
                 dict(sizes=sizes, channels=xin.shape[2], pixels=xin.shape[0] * xin.shape[1], bits=xin.bits))

    def lower_Slice(self, node) -> None:
        x = node.input[0]
        xin = self.need_feature(node, x)
        c = xin.shape[2]
        parts = []
        for s in self.model.find_consumers(x):
            if s.op_type != "Slice":
                continue
            consts = [self.model.get_initializer(t) if t else None for t in s.input[1:5]]
            starts, ends = consts[0], consts[1]
            axes = consts[2] if len(consts) > 2 and consts[2] is not None else np.arange(len(starts))
            steps = consts[3] if len(consts) > 3 and consts[3] is not None else np.ones(len(starts))
            if starts is None or ends is None or list(np.asarray(axes) % 4) != [1] or int(steps[0]) != 1:
                raise self.fail(s, "only constant, step-1 slices along channels (axis 1) are supported")
            parts.append((int(starts[0]), min(int(ends[0]), c), s))
        parts.sort(key=lambda p: p[0])
        pos = 0
        for lo, hi, _ in parts:
            if lo != pos:
                break
            pos = hi
        if pos != c:
            raise self.fail(node, f"the channel slices of {x!r} ({[(p[0], p[1]) for p in parts]}) must "
                                  f"partition its {c} channels (ChannelSplit rule)")
        for _, _, s in parts:
            self.passthrough(s, x, s.output[0])
            self.done.add(s.name)
        self.add("ChannelSplit", node, [x], [p[2].output[0] for p in parts],
                 dict(sizes=[p[1] - p[0] for p in parts], channels=c, pixels=xin.shape[0] * xin.shape[1],
                      bits=xin.bits))

    def lower_ChannelShuffle(self, node) -> None:
        x = node.input[0]
        xin = self.need_feature(node, x)
        g = int(attr(node, "groups"))
        self.passthrough(node, x, node.output[0])
        self.add("ChannelShuffle", node, [x], [node.output[0]],
                 dict(groups=g, channels=xin.shape[2], pixels=xin.shape[0] * xin.shape[1], bits=xin.bits))

    def lower_Add(self, node) -> None:
        a, b = (self.need_feature(node, t) for t in node.input)
        if (a.bits, a.signed, a.scale, a.shape) != (b.bits, b.signed, b.scale, b.shape):
            raise self.fail(node, "both inputs must come from one shared quantizer (same bits, sign, "
                                  "scale and shape)")
        out = node.output[0]
        self.feature_info(out, a.bits + 1, a.signed, a.scale)
        self.add("Add", node, list(node.input), [out],
                 dict(out_bits=a.bits + 1, channels=a.shape[2], pixels=a.shape[0] * a.shape[1],
                      signed=a.signed))

    def insert_duplicates(self) -> None:
        insert_duplicates(self.layers, self.tensors, self.uname)


def insert_duplicates(layers: list[HWLayer], tensors: dict[str, TensorInfo], uname) -> None:
    """A stream read by n > 1 layers gets a chain of n - 1 two-way Duplicate layers (FINN's
    DuplicateStreams, two outputs each), inserted after its producer; ``uname(base)`` names
    them."""
    for tname in list(tensors):
        readers = [l for l in layers if tname in l.inputs]
        if len(readers) <= 1:
            continue
        info = tensors[tname]
        prod = next((j for j, l in enumerate(layers) if tname in l.outputs), -1)
        src, pos = tname, prod + 1
        for i, reader in enumerate(readers):
            if i == len(readers) - 1:
                reader.inputs = [src if t == tname else t for t in reader.inputs]
                continue
            branch = f"{tname}_dup{i}"
            rest = f"{tname}_rest{i}" if i < len(readers) - 2 else f"{tname}_dup{i + 1}"
            for n in (branch, rest):
                tensors[n] = TensorInfo(n, info.shape, info.bits, info.signed, info.scale, info.kind)
            layers.insert(pos, HWLayer(uname("Duplicate"), "Duplicate", [src], [branch, rest],
                                       dict(bits=info.bits, signed=info.signed), source_node=""))
            pos += 1
            reader.inputs = [branch if t == tname else t for t in reader.inputs]
            src = rest


def _load(model) -> ModelWrapper:
    if isinstance(model, ModelWrapper):
        return model
    path = Path(model)
    if not path.is_file():
        raise CompileError(f"model file {path} does not exist")
    try:
        return ModelWrapper(str(path))
    except Exception as exc:  # onnx raises DecodeError & co. on a corrupt file
        raise CompileError(f"model file {path} is not a readable ONNX model: {exc}") from None


def streamline_qonnx(model: ModelWrapper | str | Path, progress=None) -> ModelWrapper:
    """The streamlined integer graph of a QONNX model (see :func:`sw.transforms.streamline_model`).

    Raises:
        CompileError: unreadable file, or a pass that refuses the graph.
    """
    from sw.transforms import streamline_model

    return streamline_model(_load(model), progress=progress)


def lower_streamlined(model: ModelWrapper) -> HWGraph:
    """Hardware layers of a streamlined integer graph (table in the module docstring).

    Raises:
        CompileError: naming the node and the rule broken.
    """
    return _Lowerer(model).run()


def lower_qonnx(model: ModelWrapper | str | Path, requant: str = "exact") -> HWGraph:
    """Lower a QONNX model (batch 1, fixed NCHW shape) to a :class:`HWGraph` through FINN's
    front end (:func:`sw.frontend.lower_model`, ``requant`` as there), the compiler's one path.

    Raises:
        CompileError: naming the node and the rule broken, for anything unsupported.
    """
    from sw.frontend import lower_model

    return lower_model(model, "finn", requant=requant).graph


def lower_qonnx_deflow(model: ModelWrapper | str | Path) -> HWGraph:
    """deflow's own streamliner (:func:`streamline_qonnx` then :func:`lower_streamlined`):
    ``Requant`` nodes instead of FINN's thresholds, kept for ``--frontend deflow``.

    Raises:
        CompileError: naming the node and the rule broken, for anything unsupported.
    """
    return lower_streamlined(streamline_qonnx(model))
