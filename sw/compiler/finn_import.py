"""FINN's hardware-layer graph to deflow's stream graph (:class:`~hw.graph.HWGraph`).

Each FINN node of the dataflow part of a :class:`~sw.compiler.finn_frontend.FinnLowering` becomes the
deflow layers that implement it, one Amaranth component each:

==================================================  ===========================================
FINN node (``finn.custom_op.fpgadataflow``)         deflow layers
==================================================  ===========================================
``FMPadding`` -> ``ConvolutionInputGenerator``      SlidingWindow (the padding is the window's)
``ConvolutionInputGenerator`` (no padding)          SlidingWindow, ``pad`` 0
``MVAU`` (``noActivation`` 1)                       MVAU (accumulators leave it)
``MVAU`` with a threshold input                     MVAU + Thresholding
``VVAU`` [with thresholds]                          VVAU [+ Thresholding]
``Thresholding``                                    Thresholding
``Pool`` (``MaxPool``) after its input generator    SlidingWindow (depthwise) + MaxPool
``UpsampleNearestNeighbour``                        Upsample
``StreamingConcat``                                 Concat
``ElementwiseAdd`` of two streams                   Add
``DuplicateStreams``                                n - 1 two-way Duplicate layers
``StreamingSplit``                                  ChannelSplit
``DeformableWindow`` (deflow's, ``sw.qonnx_ops``)     DeformableSampler
``ChannelShuffle`` (deflow's, ``sw.qonnx_ops``)       ChannelShuffle
==================================================  ===========================================

Integers only cross this boundary: a FINN tensor's ``DataType`` gives the stream's bits and
sign; scales live in FINN's thresholds and in the host epilogue. Weights keep FINN's order
(``MVAU``: ``[MW, MH]`` with ``MW`` in ``(ky, kx, c)`` order, transposed to deflow's ``[MH, MW]``;
``VVAU``: ``[C, 1, K, K]`` flattened to ``[C, K*K]``).
"""

from __future__ import annotations

import math

import numpy as np
from qonnx.custom_op.registry import getCustomOp

from sw.compiler.finn_frontend import FinnLowering, hw_op_type
from hw.graph import HWGraph, HWLayer, TensorInfo
from sw.compiler.lower import CompileError

__all__ = ["hwgraph_from_finn", "SUPPORTED_FINN_OPS"]

SUPPORTED_FINN_OPS = ("FMPadding", "ConvolutionInputGenerator", "MVAU", "VVAU", "Thresholding",
                      "Pool", "UpsampleNearestNeighbour", "StreamingConcat", "ElementwiseAdd",
                      "DuplicateStreams", "StreamingSplit", "DeformableWindow (deflow's)",
                      "ChannelShuffle (deflow's)")


class _Importer:
    def __init__(self, lowering: FinnLowering):
        self.fl = lowering
        self.model = lowering.model
        self.layers: list[HWLayer] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.alias: dict[str, str] = {}  # FINN tensor -> deflow tensor carrying the same stream
        self.pending_pad: dict[str, tuple[str, int]] = {}  # FMPadding output -> (input, pad)
        self.counts: dict[str, int] = {}

    # -- helpers -------------------------------------------------------------------------
    def fail(self, node, rule: str) -> CompileError:
        return CompileError(f"node {node.name!r} ({node.op_type}): {rule}")

    def uname(self, base: str) -> str:
        """Names of the layers deflow adds itself (Duplicate), apart from FINN's node names."""
        i = self.counts.get(base, 0)
        self.counts[base] = i + 1
        return f"{base}_{i}"

    def dtype(self, tensor: str):
        return self.model.get_tensor_datatype(tensor)

    def feature(self, name: str, shape, node=None) -> TensorInfo:
        dt = self.dtype(name)
        if not dt.is_integer():
            raise self.fail(node, f"tensor {name!r} is {dt.name}, not an integer stream") \
                if node is not None else CompileError(f"tensor {name!r} is not an integer stream")
        info = TensorInfo(name, tuple(int(s) for s in shape), dt.bitwidth(), dt.signed(), 1.0)
        self.tensors[name] = info
        return info

    def src(self, tensor: str) -> str:
        return self.alias.get(tensor, tensor)

    def add(self, op, node, inputs, outputs, attrs, params=None, suffix="") -> HWLayer:
        # named after the FINN node, so that a FINN folding_config.json applies as it is
        layer = HWLayer(node.name + suffix, op, inputs, outputs, attrs, params or {},
                        source_node=node.name)
        self.layers.append(layer)
        return layer

    def nhwc(self, tensor: str) -> tuple[int, int, int]:
        shape = self.model.get_tensor_shape(tensor)
        if len(shape) != 4 or shape[0] != 1:
            raise CompileError(f"tensor {tensor!r} has shape {shape}; NHWC with batch 1 expected")
        return tuple(int(s) for s in shape[1:])

    # -- the pass ------------------------------------------------------------------------
    def run(self) -> HWGraph:
        din = self.fl.dataflow_input
        self.feature(din, self.nhwc(din))
        for node in self.fl.hw_nodes():
            handler = getattr(self, f"op_{hw_op_type(node)}", None)
            if handler is None:
                raise self.fail(node, "deflow has no hardware component for this FINN op; "
                                      f"supported: {', '.join(SUPPORTED_FINN_OPS)}")
            handler(node, getCustomOp(node))
        out = self.src(self.fl.dataflow_output)
        insert_duplicates(self.layers, self.tensors, self.uname)
        self.tensors[out].scale = output_scale(self.fl, self.tensors[out].shape)
        return HWGraph(self.layers, self.tensors, din, out)

    def op_FMPadding(self, node, op) -> None:
        top, left, bottom, right = (int(v) for v in op.get_nodeattr("Padding"))
        if len({top, left, bottom, right}) != 1:
            raise self.fail(node, f"asymmetric padding {[top, left, bottom, right]} (top, left, "
                                  "bottom, right); the sliding window pads all sides alike")
        consumers = self.model.find_consumers(node.output[0]) or []
        if len(consumers) != 1 or consumers[0].op_type != "ConvolutionInputGenerator":
            raise self.fail(node, "padding must feed a ConvolutionInputGenerator")
        self.pending_pad[node.output[0]] = (self.src(node.input[0]), top)

    def op_ConvolutionInputGenerator(self, node, op) -> None:
        x, pad = self.pending_pad.pop(node.input[0], (self.src(node.input[0]), 0))
        xin = self.tensors[x]
        k = [int(v) for v in op.get_nodeattr("ConvKernelDim")]
        s = [int(v) for v in op.get_nodeattr("Stride")]
        d = [int(v) for v in op.get_nodeattr("Dilation")]
        if len(set(k)) != 1 or len(set(s)) != 1 or len(set(d)) != 1:
            raise self.fail(node, f"square kernels, strides and dilations only (kernel {k}, "
                                  f"stride {s}, dilation {d})")
        depthwise = bool(op.get_nodeattr("depthwise"))
        consumers = self.model.find_consumers(node.output[0]) or []
        if any(c.op_type == "Pool" for c in consumers):
            depthwise = True  # max-pool windows use the depthwise (per-channel) order
        h, w, c = xin.shape
        oh, ow, kkc = self.nhwc(node.output[0])
        out = node.output[0]
        self.tensors[out] = TensorInfo(out, (oh, ow, kkc), xin.bits, xin.signed, None,
                                       "dwwindow" if depthwise else "window")
        self.add("SlidingWindow", node, [x], [out],
                 dict(ifm_dim=(h, w), channels=c, kernel=k[0], stride=s[0], pad=pad,
                      dilation=d[0], depthwise=depthwise, bits=xin.bits, signed=xin.signed))

    def _thresholds(self, node, acc: str, thresholds, op) -> None:
        """Thresholding after an MVAU/VVAU: the FINN node's activation."""
        out = node.output[0]
        h, w, c = self.nhwc(out)
        info = self.feature(out, (h, w, c), node)
        self.add("Thresholding", node, [acc], [out],
                 dict(channels=c, pixels=h * w, out_bias=int(op.get_nodeattr("ActVal")),
                      out_bits=info.bits, out_signed=info.signed),
                 dict(thresholds=_int_thresholds(node, thresholds)), suffix="_thresholds")

    def _weights(self, node, op):
        w = self.model.get_initializer(node.input[1])
        wdt = self.model.get_tensor_datatype(node.input[1])
        if w is None or not wdt.is_integer():
            raise self.fail(node, f"weights must be integers (got {wdt.name})")
        wi = np.asarray(w)
        if not np.array_equal(wi, np.round(wi)):
            raise self.fail(node, "weights hold non-integer values")
        return wi.astype(np.int64), wdt

    def op_MVAU(self, node, op) -> None:
        x = self.src(node.input[0])
        xin = self.tensors[x]
        w, wdt = self._weights(node, op)
        mw, mh = w.shape
        weights = w.T.copy()
        bits = acc_bits(xin.bits, xin.signed, wdt.bitwidth(), mw)
        activation = len(node.input) > 2 and not op.get_nodeattr("noActivation")
        acc = node.output[0] + "_acc" if activation else node.output[0]
        shape = self.nhwc(node.output[0])
        self.tensors[acc] = TensorInfo(acc, shape, bits, True, None, "acc")
        pixels = shape[0] * shape[1]
        self.add("MVAU", node, [x], [acc],
                 dict(mh=mh, mw=mw, pixels=pixels, weight_bits=wdt.bitwidth(),
                      in_bits=xin.bits, in_signed=xin.signed, acc_bits=bits),
                 dict(weights=weights))
        if activation:
            self._thresholds(node, acc, self.model.get_initializer(node.input[2]), op)

    def op_VVAU(self, node, op) -> None:
        x = self.src(node.input[0])
        xin = self.tensors[x]
        if xin.kind not in ("dwwindow", "window9"):
            raise self.fail(node, "a VVAU must read a depthwise ConvolutionInputGenerator or a "
                                  "DeformableWindow")
        w, wdt = self._weights(node, op)
        c = w.shape[0]
        kk = int(np.prod(w.shape[1:]))
        weights = w.reshape(c, kk)
        bits = acc_bits(xin.bits, xin.signed, wdt.bitwidth(), kk)
        activation = len(node.input) > 2 and not op.get_nodeattr("noActivation")
        acc = node.output[0] + "_acc" if activation else node.output[0]
        shape = self.nhwc(node.output[0])
        self.tensors[acc] = TensorInfo(acc, shape, bits, True, None, "acc")
        self.add("VVAU", node, [x], [acc],
                 dict(channels=c, kernel_elems=kk, pixels=shape[0] * shape[1],
                      weight_bits=wdt.bitwidth(), in_bits=xin.bits, in_signed=xin.signed,
                      acc_bits=bits), dict(weights=weights))
        if activation:
            self._thresholds(node, acc, self.model.get_initializer(node.input[2]), op)

    def op_Thresholding(self, node, op) -> None:
        x = self.src(node.input[0])
        xin = self.tensors[x]
        out = node.output[0]
        h, w, c = self.nhwc(out)
        thresholds = _int_thresholds(node, self.model.get_initializer(node.input[1]))
        bias = int(op.get_nodeattr("ActVal"))
        if _is_identity(thresholds, bias, xin, self.dtype(out)):
            # e.g. a scale-1 input quantiser on 0..255 pixels: nothing to build
            self.alias[out] = x
            return
        info = self.feature(out, (h, w, c), node)
        self.add("Thresholding", node, [x], [out],
                 dict(channels=c, pixels=h * w, out_bias=int(op.get_nodeattr("ActVal")),
                      out_bits=info.bits, out_signed=info.signed, in_bits=xin.bits,
                      in_signed=xin.signed),
                 dict(thresholds=thresholds))

    def op_Pool(self, node, op) -> None:
        if op.get_nodeattr("Function") != "MaxPool":
            raise self.fail(node, f"pooling function {op.get_nodeattr('Function')!r}; MaxPool only")
        x = self.src(node.input[0])
        win = self.tensors[x]
        gen = next(l for l in self.layers if x in l.outputs)
        if win.signed:
            raise self.fail(node, "MaxPool input must be unsigned (the window pads with 0)")
        out = node.output[0]
        h, w, c = self.nhwc(out)
        self.feature(out, (h, w, c), node)
        self.add("MaxPool", node, [x], [out],
                 dict(kernel=gen.attrs["kernel"], channels=c, pixels=h * w, bits=win.bits))

    def op_UpsampleNearestNeighbour(self, node, op) -> None:
        x = self.src(node.input[0])
        xin = self.tensors[x]
        h, w, c = xin.shape
        oh, ow, _ = self.nhwc(node.output[0])
        if oh % h or ow % w or oh // h != ow // w:
            raise self.fail(node, f"the upsampling factor must be one integer for H and W "
                                  f"({h}x{w} -> {oh}x{ow})")
        self.feature(node.output[0], (oh, ow, c), node)
        self.add("Upsample", node, [x], [node.output[0]],
                 dict(factor=oh // h, ifm_dim=(h, w), channels=c, bits=xin.bits))

    def op_StreamingConcat(self, node, op) -> None:
        ins = [self.src(t) for t in node.input]
        infos = [self.tensors[t] for t in ins]
        a = infos[0]
        for b in infos[1:]:
            if (b.bits, b.signed) != (a.bits, a.signed):
                raise self.fail(node, f"inputs {a.name!r} ({'int' if a.signed else 'uint'}{a.bits}) "
                                      f"and {b.name!r} ({'int' if b.signed else 'uint'}{b.bits}) "
                                      "differ in type")
        h, w, c = self.nhwc(node.output[0])
        self.feature(node.output[0], (h, w, c), node)
        self.add("Concat", node, ins, [node.output[0]],
                 dict(channels=[i.shape[2] for i in infos], pixels=h * w, bits=a.bits))

    def op_ElementwiseAdd(self, node, op) -> None:
        ins = [self.src(t) for t in node.input]
        a, b = (self.tensors[t] for t in ins)
        if (a.bits, a.signed, a.shape) != (b.bits, b.signed, b.shape):
            raise self.fail(node, "both inputs of an add must have one type and shape (got "
                                  f"{a.bits}/{b.bits} bits, {a.shape}/{b.shape})")
        out = node.output[0]
        info = self.feature(out, self.nhwc(out), node)
        if info.bits < a.bits + 1 or info.signed != a.signed:
            info.bits, info.signed = a.bits + 1, a.signed
        self.add("Add", node, ins, [out],
                 dict(out_bits=info.bits, channels=a.shape[2], pixels=a.shape[0] * a.shape[1],
                      signed=info.signed))

    def op_DeformableWindow(self, node, op) -> None:
        x, off = (self.src(t) for t in node.input)
        xin, oin = self.tensors[x], self.tensors[off]
        if oin.signed or oin.shape != (*xin.shape[:2], 1):
            raise self.fail(node, f"offsets {oin.shape} must be one unsigned channel of the "
                                  f"features' size {xin.shape[:2]}")
        h, w, c = xin.shape
        out = node.output[0]
        self.tensors[out] = TensorInfo(out, (h, w, 9 * c), xin.bits, xin.signed, None, "window9")
        self.add("DeformableSampler", node, [x, off], [out],
                 dict(ifm_dim=(h, w), channels=c, max_offset=int(op.get_nodeattr("max_offset")),
                      bits=xin.bits, offset_bits=oin.bits))

    def op_StreamingSplit(self, node, op) -> None:
        x = self.src(node.input[0])
        xin = self.tensors[x]
        h, w, c = xin.shape
        sizes = [self.nhwc(o)[2] for o in node.output]
        for o in node.output:
            self.feature(o, (h, w, self.nhwc(o)[2]), node)
        self.add("ChannelSplit", node, [x], list(node.output),
                 dict(sizes=sizes, channels=c, pixels=h * w, bits=xin.bits))

    def op_ChannelShuffle(self, node, op) -> None:
        x = self.src(node.input[0])
        xin = self.tensors[x]
        h, w, c = xin.shape
        self.feature(node.output[0], (h, w, c), node)
        self.add("ChannelShuffle", node, [x], [node.output[0]],
                 dict(groups=int(op.get_nodeattr("groups")), channels=c, pixels=h * w,
                      bits=xin.bits))

    def op_DuplicateStreams(self, node, op) -> None:
        # deflow fans a stream out with its own two-way duplicators (_insert_duplicates)
        for t in node.output:
            self.alias[t] = self.src(node.input[0])


def output_scale(lowering: FinnLowering, shape) -> float | list[float] | None:
    """The real value of one LSB of the accelerator's output, per channel, when the host
    epilogue is only that (``y = scale[c] * x``: a layout ``Transpose`` and a ``Mul``); ``None``
    when it adds an offset (a float head's bias), which only the epilogue model applies.

    Measured on the epilogue itself: its output for an all-ones and an all-zeros input."""
    from qonnx.core.onnx_exec import execute_onnx

    epi = lowering.epilogue_model()
    if not epi.graph.node:
        return 1.0
    iname, oname = epi.graph.input[0].name, epi.graph.output[0].name

    def run(v):
        y = execute_onnx(epi, {iname: np.full((1, *shape), v, dtype=np.float32)})[oname]
        return np.asarray(y, dtype=np.float64)

    zero, one = run(0.0), run(1.0)
    if zero.ndim != 4 or np.any(zero != 0):
        return None
    per_channel = one.reshape(one.shape[0], one.shape[1], -1)[0]  # NCHW: [C, H*W]
    if np.any(per_channel != per_channel[:, :1]):
        return None
    scale = [float(v) for v in per_channel[:, 0]]
    return scale[0] if len(set(scale)) == 1 else scale


def _is_identity(thresholds: np.ndarray, bias: int, xin: TensorInfo, out_dt) -> bool:
    """Whether a Thresholding returns every value of its input type unchanged, checked
    outright over that type's range (inputs of at most 16 bits) and with equal output type."""
    from hw.golden import thresholding

    if xin.bits > 16 or out_dt.bitwidth() != xin.bits or out_dt.signed() != xin.signed:
        return False
    lo = -(1 << (xin.bits - 1)) if xin.signed else 0
    values = np.arange(lo, lo + (1 << xin.bits), dtype=np.int64)
    rows = thresholds.shape[0]
    got = thresholding(np.repeat(values[:, None], rows, axis=1), thresholds, bias)
    return bool(np.all(got == values[:, None]))


def _int_thresholds(node, t) -> np.ndarray:
    if t is None:
        raise CompileError(f"node {node.name!r} ({node.op_type}): thresholds are not constant")
    t = np.asarray(t, dtype=np.float64)
    if not np.array_equal(t, np.round(t)):
        raise CompileError(f"node {node.name!r} ({node.op_type}): thresholds are not integers "
                           "after RoundAndClipThresholds (a float input reaches this layer)")
    return t.astype(np.int64)


def hwgraph_from_finn(lowering: FinnLowering) -> HWGraph:
    """The deflow stream graph of FINN's hardware layers (table in the module docstring).

    Returns:
        an unfolded :class:`HWGraph`: input = the accelerator's NHWC pixel stream, output = the
        stream the host epilogue reads (accumulators for a float head).

    Raises:
        CompileError: a FINN op without a deflow component (named with its op type), or
            attributes the component does not take (asymmetric padding, non-square kernels).
    """
    return _Importer(lowering).run()


def acc_bits(in_bits: int, in_signed: bool, w_bits: int, n: int) -> int:
    """Accumulator width (bits, signed) for ``n`` products of an input and a weight: enough for
    ``n * max|x| * max|w|`` (FINN's data-type bound for the MVAU accumulator)."""
    in_mag = 2 ** (in_bits - 1) if in_signed else 2**in_bits - 1
    bound = in_mag * 2 ** (w_bits - 1) * n
    return int(math.ceil(math.log2(bound + 1))) + 1


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
