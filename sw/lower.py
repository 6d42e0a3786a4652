"""Lower a QONNX export of a Brevitas model to the hardware-layer graph (:mod:`sw.hwgraph`).

Supported pattern, node by node (everything else is refused with :class:`CompileError`
before any HDL exists):

* ``Quant`` on the graph input: the accelerator's integer input (zero point 0).
* ``Quant`` on an initializer feeding a ``Conv``: integer weights ``W / scale`` (per output
  channel scale; the quotient must be integral).
* ``Conv`` (+ optional ``Relu``) followed by an activation ``Quant``:

  - group 1, 1x1, stride 1, no pad            -> MVAU -> Requant
  - group 1, other kernels                     -> SlidingWindow (standard) -> MVAU -> Requant
  - depthwise (group = C_in = C_out)           -> SlidingWindow (depthwise) -> VVAU -> Requant
  - 1x1, group = C_out, on a DeformableSample  -> VVAU (9 taps) -> Requant
* ``DeformableSample`` (domain ``sw.qonnx_ops``) with integer offsets from a scale-1 unsigned
  ``Quant``: DeformableSampler.
* A tensor read by two layers: Duplicate.

Requantisation (how the real-valued scales become integers): the float output of a layer is
``y = act(acc * s_in * s_w[c] + bias[c])`` and Brevitas emits ``q = clamp(round(y / s_out))``.
The hardware computes ``q = clamp((acc * M[c] + B[c]) >> S)`` with
``M[c] = round(s_in * s_w[c] / s_out * 2**S)`` (``M < 2**MULTIPLIER_BITS``, the largest ``S``
that allows it), ``B[c] = round(bias[c] / s_out * 2**S) + 2**(S-1)`` (round half up).
The difference from Brevitas (the multiplier's rounding, ties) is measured by
:func:`sw.report.compare_golden_to_qonnx`, not assumed away.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from qonnx.core.modelwrapper import ModelWrapper

from sw.hwgraph import HWGraph, HWLayer, TensorInfo

#: Multiplier width of the requantiser (unsigned), chosen to fit one DSP48 input (18x27).
MULTIPLIER_BITS = 16
#: Weight bits the VVAU / MVAU support.
SUPPORTED_WEIGHT_BITS = range(2, 9)
CUSTOM_DOMAIN = "sw.qonnx_ops"


class CompileError(ValueError):
    """The compiler refuses the model: the message names the node and the rule broken."""


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


class _Lowerer:
    def __init__(self, model: ModelWrapper):
        self.model = model
        self.graph = model.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.layers: list[HWLayer] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.consumed: set[str] = set()  # QONNX nodes already lowered
        self.names: dict[str, int] = {}

    # -- helpers -----------------------------------------------------------------------------
    def fail(self, node: onnx.NodeProto | None, rule: str) -> CompileError:
        where = f"node {node.name!r} ({node.op_type})" if node is not None else "graph"
        return CompileError(f"{where}: {rule}")

    def uname(self, base: str) -> str:
        n = self.names.get(base, 0)
        self.names[base] = n + 1
        return f"{base}_{n}"

    def const(self, node: onnx.NodeProto, name: str) -> np.ndarray:
        if name not in self.inits:
            raise self.fail(node, f"input {name!r} must be a constant initializer")
        return self.inits[name]

    def consumers(self, tensor: str) -> list[onnx.NodeProto]:
        return [n for n in self.graph.node if tensor in n.input]

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        for n in self.graph.node:
            if tensor in n.output:
                return n
        return None

    def quant_params(self, node: onnx.NodeProto) -> tuple[np.ndarray, int, bool, bool]:
        """(scale, bits, signed, narrow) of a Quant node with constant parameters."""
        scale = self.const(node, node.input[1]).astype(np.float64)
        zero_point = self.const(node, node.input[2])
        bits = float(self.const(node, node.input[3]))
        if np.any(zero_point != 0):
            raise self.fail(node, "zero point must be 0 (symmetric/unsigned quantisation only)")
        if bits != int(bits) or int(bits) < 1:
            raise self.fail(node, f"bit width must be a positive integer, got {bits}")
        if np.any(scale <= 0):
            raise self.fail(node, "scale must be positive")
        rounding = _decode(_attr(node, "rounding_mode", "ROUND"))
        if rounding != "ROUND":
            raise self.fail(node, f"rounding mode {rounding!r} not supported (ROUND only)")
        return scale, int(bits), bool(_attr(node, "signed", 1)), bool(_attr(node, "narrow", 0))

    @staticmethod
    def int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
        if signed:
            lo = -(2 ** (bits - 1)) + (1 if narrow else 0)
            return lo, 2 ** (bits - 1) - 1
        return 0, 2**bits - 1 - (1 if narrow else 0)

    def shape_nchw(self, tensor: str) -> tuple[int, ...]:
        shape = self.model.get_tensor_shape(tensor)
        if shape is None or any((not isinstance(d, int)) or d <= 0 for d in shape):
            raise CompileError(f"tensor {tensor!r}: dynamic or unknown shape {shape}; "
                               "export with a fixed input shape")
        return tuple(shape)

    def feature_info(self, tensor: str, bits: int, signed: bool, scale: float) -> TensorInfo:
        shape = self.shape_nchw(tensor)
        if len(shape) != 4 or shape[0] != 1:
            raise CompileError(f"tensor {tensor!r}: expected NCHW with batch 1, got {shape}")
        _, c, h, w = shape
        info = TensorInfo(tensor, (h, w, c), bits, signed, float(scale), "feature")
        self.tensors[tensor] = info
        return info

    # -- the pass ----------------------------------------------------------------------------
    def run(self) -> HWGraph:
        if len(self.graph.input) != 1 or len(self.graph.output) != 1:
            raise self.fail(None, "exactly one graph input and one graph output are supported")
        gin = self.graph.input[0].name
        first = self.consumers(gin)
        if len(first) != 1 or first[0].op_type != "Quant":
            raise self.fail(first[0] if first else None,
                            "the graph input must feed exactly one Quant node (integer input)")
        qin = first[0]
        scale, bits, signed, narrow = self.quant_params(qin)
        if scale.size != 1:
            raise self.fail(qin, "input quantisation must be per tensor")
        if signed:
            raise self.fail(qin, "the accelerator input must be unsigned (uint8 pixels)")
        self.feature_info(qin.output[0], bits, signed, float(scale))
        self.consumed.add(qin.name)
        graph_input = qin.output[0]

        for node in self.graph.node:
            if node.name in self.consumed:
                continue
            if node.op_type == "Quant":
                if node.input[0] in self.inits:
                    continue  # weight quantiser, read by its Conv
                raise self.fail(node, "activation Quant must follow a Conv (+ Relu)")
            elif node.op_type == "Conv":
                self.lower_conv(node)
            elif node.op_type == "DeformableSample" and node.domain == CUSTOM_DOMAIN:
                self.lower_deformable(node)
            else:
                raise self.fail(
                    node,
                    "unsupported op; supported: Quant, Conv (+Relu, +Quant), "
                    f"{CUSTOM_DOMAIN}.DeformableSample",
                )
        gout = self.graph.output[0].name
        if gout not in self.tensors or self.tensors[gout].kind != "feature":
            raise self.fail(self.producer(gout), "the graph output must be a quantised feature map")
        self.insert_duplicates()
        return HWGraph(self.layers, self.tensors, graph_input, gout)

    def lower_conv(self, node: onnx.NodeProto) -> None:
        x = node.input[0]
        if x not in self.tensors:
            raise self.fail(node, "input is not a quantised integer tensor (missing input Quant)")
        xin = self.tensors[x]
        wq = self.producer(node.input[1])
        if wq is None or wq.op_type != "Quant" or wq.input[0] not in self.inits:
            raise self.fail(node, "weights must come from a Quant node on a constant")
        w_float = self.inits[wq.input[0]].astype(np.float64)
        w_scale, w_bits, w_signed, w_narrow = self.quant_params(wq)
        if w_bits not in SUPPORTED_WEIGHT_BITS or not w_signed:
            raise self.fail(wq, f"weights must be signed with 2..8 bits, got {w_bits} bits "
                            f"{'signed' if w_signed else 'unsigned'}")
        # the Quant node's own semantics: round half to even (numpy/torch), then clamp
        lo, hi = self.int_range(w_bits, True, w_narrow)
        w_int = np.clip(np.round(w_float / w_scale), lo, hi).astype(np.int64)
        cout, cin_g, kh, kw = w_int.shape
        s_w = np.broadcast_to(w_scale.reshape(-1), (cout,)) if w_scale.size in (1, cout) else None
        if s_w is None:
            raise self.fail(wq, "weight scale must be per tensor or per output channel")
        bias = np.zeros(cout)
        if len(node.input) > 2 and node.input[2]:
            bias = self.const(node, node.input[2]).astype(np.float64).reshape(-1)
        group = int(_attr(node, "group", 1))
        strides = list(_attr(node, "strides", [1, 1]) or [1, 1])
        pads = list(_attr(node, "pads", [0, 0, 0, 0]) or [0, 0, 0, 0])
        dil = list(_attr(node, "dilations", [1, 1]) or [1, 1])
        if kh != kw or strides[0] != strides[1] or dil[0] != dil[1] or len(set(pads)) != 1:
            raise self.fail(node, f"square kernels, strides, dilations and symmetric padding only "
                                  f"(kernel {kh}x{kw}, strides {strides}, pads {pads}, dilations {dil})")
        k, stride, pad, dilation = kh, strides[0], pads[0], dil[0]
        h, w, cin = xin.shape

        # activation after the conv: [Relu] -> Quant
        chain = self.consumers(node.output[0])
        relu = None
        if len(chain) == 1 and chain[0].op_type == "Relu":
            relu = chain[0]
            chain = self.consumers(relu.output[0])
        if len(chain) != 1 or chain[0].op_type != "Quant":
            raise self.fail(node, "a Conv must be followed by [Relu ->] an activation Quant "
                                  "(the accelerator streams integers only)")
        aq = chain[0]
        a_scale, a_bits, a_signed, a_narrow = self.quant_params(aq)
        if a_scale.size != 1:
            raise self.fail(aq, "activation quantisation must be per tensor")
        out_lo, out_hi = self.int_range(a_bits, a_signed, a_narrow)
        if relu is not None:
            out_lo = max(out_lo, 0)
        out = aq.output[0]
        oinfo = self.feature_info(out, a_bits, a_signed, float(a_scale))
        oh, ow, _ = oinfo.shape
        pixels = oh * ow
        for consumer in self.consumers(out):
            if consumer.op_type == "DeformableSample" and consumer.input[1] == out:
                max_offset = int(_attr(consumer, "max_offset", 7))
                if a_signed or float(a_scale) != 1.0:
                    raise self.fail(aq, "deformable offsets must be unsigned integers (scale 1.0)")
                out_hi = min(out_hi, max_offset)
        if xin.scale is None:
            raise self.fail(node, "input has no scale")

        acc_in = f"{node.name}_windows"
        if xin.kind == "window9":
            # 1x1 grouped conv over a DeformableSample: the depthwise 3x3 of the deformable conv
            if not (k == 1 and group == cout and cin == cout * 9 and cin_g == 9):
                raise self.fail(node, "after a DeformableSample only a 1x1 conv with group = C_out "
                                      "and 9 inputs per group (depthwise 3x3) is supported")
            weights = w_int.reshape(cout, 9)
            self.add_vvau(node, x, weights, w_bits, cout, 9, pixels)
        elif group == 1:
            mw = k * k * cin
            weights = w_int.transpose(0, 2, 3, 1).reshape(cout, mw)
            if k == 1 and stride == 1 and pad == 0:
                src = x
            else:
                src = acc_in
                self.tensors[src] = TensorInfo(src, (oh, ow, mw), xin.bits, xin.signed, None, "window")
                self.layers.append(HWLayer(
                    self.uname("SlidingWindow"), "SlidingWindow", [x], [src],
                    dict(ifm_dim=(h, w), channels=cin, kernel=k, stride=stride, pad=pad,
                         dilation=dilation, depthwise=False, bits=xin.bits, signed=xin.signed),
                    source_node=node.name))
            self.add_mvau(node, src, weights, w_bits, cout, mw, pixels)
        elif group == cin == cout and cin_g == 1:
            src = acc_in
            self.tensors[src] = TensorInfo(src, (oh, ow, k * k * cin), xin.bits, xin.signed, None,
                                           "dwwindow")
            self.layers.append(HWLayer(
                self.uname("SlidingWindow"), "SlidingWindow", [x], [src],
                dict(ifm_dim=(h, w), channels=cin, kernel=k, stride=stride, pad=pad,
                     dilation=dilation, depthwise=True, bits=xin.bits, signed=xin.signed),
                source_node=node.name))
            self.add_vvau(node, src, w_int.reshape(cout, k * k), w_bits, cout, k * k, pixels)
        else:
            raise self.fail(node, f"grouped convolution with group={group} (C_in={cin}, "
                                  f"C_out={cout}) is neither dense nor depthwise")

        # requantisation
        acc = self.layers[-1].outputs[0]
        ratio = xin.scale * s_w / float(a_scale)
        shift = self.choose_shift(node, ratio)
        multiplier = np.round(ratio * 2.0**shift).astype(np.int64)
        bias_int = np.round(bias / float(a_scale) * 2.0**shift).astype(np.int64) + (1 << (shift - 1))
        self.layers.append(HWLayer(
            self.uname("Requant"), "Requant", [acc], [out],
            dict(channels=cout, pixels=pixels, shift=shift, out_min=int(out_lo), out_max=int(out_hi),
                 acc_bits=self.tensors[acc].bits),
            params=dict(multiplier=multiplier, bias=bias_int), source_node=aq.name))
        self.consumed.update({node.name, aq.name} | ({relu.name} if relu else set()))

    def choose_shift(self, node, ratio: np.ndarray) -> int:
        if np.any(ratio <= 0) or not np.all(np.isfinite(ratio)):
            raise self.fail(node, "requantisation scale must be positive and finite")
        shift = int(math.floor(math.log2((2**MULTIPLIER_BITS - 1) / float(np.max(ratio)))))
        if shift < 1:
            raise self.fail(node, f"requantisation ratio {float(np.max(ratio)):.3g} too large for a "
                                  f"{MULTIPLIER_BITS}-bit multiplier")
        return min(shift, 48)

    @staticmethod
    def acc_bits(in_bits: int, in_signed: bool, w_bits: int, n: int) -> int:
        in_mag = 2 ** (in_bits - 1) if in_signed else 2**in_bits - 1
        bound = in_mag * 2 ** (w_bits - 1) * n
        return int(math.ceil(math.log2(bound + 1))) + 1

    def add_mvau(self, node, src, weights, w_bits, mh, mw, pixels):
        xin = self.tensors[src]
        acc = f"{node.name}_acc"
        bits = self.acc_bits(xin.bits, xin.signed, w_bits, mw)
        oh, ow = self.tensors[src].shape[:2]
        self.tensors[acc] = TensorInfo(acc, (oh, ow, mh), bits, True, None, "acc")
        self.layers.append(HWLayer(
            self.uname("MVAU"), "MVAU", [src], [acc],
            dict(mh=mh, mw=mw, pixels=pixels, weight_bits=w_bits, in_bits=xin.bits,
                 in_signed=xin.signed, acc_bits=bits),
            params=dict(weights=weights), source_node=node.name))

    def add_vvau(self, node, src, weights, w_bits, channels, kk, pixels):
        xin = self.tensors[src]
        acc = f"{node.name}_acc"
        bits = self.acc_bits(xin.bits, xin.signed, w_bits, kk)
        oh, ow = xin.shape[:2]
        self.tensors[acc] = TensorInfo(acc, (oh, ow, channels), bits, True, None, "acc")
        self.layers.append(HWLayer(
            self.uname("VVAU"), "VVAU", [src], [acc],
            dict(channels=channels, kernel_elems=kk, pixels=pixels, weight_bits=w_bits,
                 in_bits=xin.bits, in_signed=xin.signed, acc_bits=bits),
            params=dict(weights=weights), source_node=node.name))

    def lower_deformable(self, node: onnx.NodeProto) -> None:
        x, off = node.input[0], node.input[1]
        if x not in self.tensors or off not in self.tensors:
            raise self.fail(node, "features and offsets must be quantised integer tensors")
        xin, oin = self.tensors[x], self.tensors[off]
        max_offset = int(_attr(node, "max_offset", 7))
        if oin.shape != (*xin.shape[:2], 1):
            raise self.fail(node, f"offsets {oin.shape} must be one channel of size {xin.shape[:2]}")
        if oin.signed or oin.scale != 1.0:
            raise self.fail(node, "offsets must be unsigned integers (Quant scale 1.0): the "
                                  "hardware-friendly form rounds offsets to whole pixels")
        h, w, c = xin.shape
        out = node.output[0]
        self.tensors[out] = TensorInfo(out, (h, w, 9 * c), xin.bits, xin.signed, xin.scale, "window9")
        self.layers.append(HWLayer(
            self.uname("DeformableSampler"), "DeformableSampler", [x, off], [out],
            dict(ifm_dim=(h, w), channels=c, max_offset=max_offset, bits=xin.bits,
                 offset_bits=oin.bits), source_node=node.name))
        self.consumed.add(node.name)

    def insert_duplicates(self) -> None:
        """A stream read by two layers gets a Duplicate layer (FINN's DuplicateStreams)."""
        for tname in list(self.tensors):
            readers = [l for l in self.layers if tname in l.inputs]
            if len(readers) <= 1:
                continue
            if len(readers) > 2:
                raise CompileError(f"tensor {tname!r} is read by {len(readers)} layers; "
                                   "fan-out of at most 2 is supported")
            info = self.tensors[tname]
            outs = []
            for i, reader in enumerate(readers):
                branch = f"{tname}_dup{i}"
                self.tensors[branch] = TensorInfo(branch, info.shape, info.bits, info.signed,
                                                  info.scale, info.kind)
                reader.inputs = [branch if t == tname else t for t in reader.inputs]
                outs.append(branch)
            dup = HWLayer(self.uname("Duplicate"), "Duplicate", [tname], outs,
                          dict(bits=info.bits, signed=info.signed), source_node="")
            # place it right after the producer
            prod = next((j for j, l in enumerate(self.layers) if tname in l.outputs), -1)
            self.layers.insert(prod + 1, dup)


def lower_qonnx(model: ModelWrapper | str | Path) -> HWGraph:
    """Lower a cleaned QONNX model (batch 1, fixed NCHW shape) to a :class:`HWGraph`.

    Raises:
        CompileError: naming the node and the rule broken, for anything unsupported.
    """
    if not isinstance(model, ModelWrapper):
        path = Path(model)
        if not path.is_file():
            raise CompileError(f"model file {path} does not exist")
        try:
            model = ModelWrapper(str(path))
        except Exception as exc:  # onnx raises DecodeError & co. on a corrupt file
            raise CompileError(f"model file {path} is not a readable ONNX model: {exc}") from None
    from qonnx.transformation.infer_shapes import InferShapes

    import sw.qonnx_ops  # noqa: F401  (registers the custom ops for shape inference)

    model = model.transform(InferShapes())
    return _Lowerer(model).run()
