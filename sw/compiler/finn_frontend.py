"""FINN's front end: a QONNX export of a Brevitas model to FINN's hardware-layer graph.

The chain is FINN's own (finn-plus, installed from PyPI): ``ConvertQONNXtoFINN`` (Quant nodes to
``MultiThreshold``), FINN's ``Streamline`` (scales and biases moved and absorbed into thresholds,
arXiv:1709.04060), ``LowerConvsToMatMul`` (Im2Col + MatMul), the NHWC layout steps and
``RoundAndClipThresholds``, then FINN's conversion to hardware layers (``convert_to_hw``:
``InferConvInpGen``, ``InferQuantizedMatrixVectorActivation``, ``InferVectorVectorActivation``,
``InferThresholdingLayer``, ``InferPool``, ``InferUpsample``, ``InferConcatLayer``,
``InferElementwiseBinaryOperation``, ``InferDuplicateStreamsLayer``). Nothing of it needs
Vivado: the hardware-layer nodes are FINN's HW abstraction ops (``finn.custom_op.fpgadataflow``),
which execute in Python.

The result is a :class:`FinnLowering`: FINN's graph with three parts, as FINN's
``CreateDataflowPartition`` would cut it:

* the *host prologue*: the nodes before the first hardware layer (FINN keeps the layout
  ``Transpose`` NCHW -> NHWC there); the accelerator itself takes NHWC uint8 pixels;
* the *dataflow part*: FINN hardware-layer nodes only, NHWC streams of integers;
* the *host epilogue*: the nodes after the last hardware layer (the float head's per-channel
  ``Mul``/``Add`` that FINN leaves unabsorbed, the layout ``Transpose`` back to NCHW).

Input pixels: the accelerator takes integer pixels ``p`` (0..255) and the exported model's
input is ``p * input_scale``. ``input_scale="auto"`` takes 1 when the model's input quantiser
has scale 1 (raw pixels, the project's own detectors) and 1/255 otherwise (torchvision's
``ToTensor`` images in [0, 1)). As FINN's own examples do, a ``Mul`` by ``input_scale`` is put in
front of the graph and the new input is annotated ``UINT8``; streamlining then folds the scale
into the first thresholds, which ``RoundAndClipThresholds`` makes integer.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from sw.compiler.lower import CompileError

__all__ = ["FinnLowering", "finn_lower", "finn_partition", "HW_DOMAIN", "host_input_scale",
           "is_hw_node", "hw_op_type"]

HW_DOMAIN = "finn.custom_op.fpgadataflow"
SOURCE_TAG = "deflow-source:"
# deflow's own hardware-layer nodes in FINN's graph (sw.qonnx_ops)
DEFLOW_HW_OPS = ("DeformableWindow", "ChannelShuffle")
# what the host may apply to the accelerator's output: layout and per-channel dequantisation
HOST_EPILOGUE_OPS = ("Transpose", "Reshape", "Flatten", "Mul", "Div", "Add", "Sub")


@dataclass
class FinnLowering:
    """FINN's lowering of one model.

    Attributes:
        model: the whole FINN graph (prologue + hardware layers + epilogue), executable with
            ``qonnx.core.onnx_exec.execute_onnx`` on the pixel input ``[1, C, H, W]`` (float32
            holding the integers 0..255): FINN's own integer truth.
        input_scale: the exported model's input is ``pixels * input_scale``.
        prologue: names of the host nodes before the first hardware layer.
        epilogue: names of the host nodes after the last hardware layer.
        dataflow_input, dataflow_output: tensor names at the accelerator's two ends (NHWC).
    """

    model: ModelWrapper
    input_scale: float
    prologue: list[str]
    epilogue: list[str]
    dataflow_input: str
    dataflow_output: str

    def hw_nodes(self) -> list[onnx.NodeProto]:
        return [n for n in self.model.graph.node if is_hw_node(n)]

    def run(self, pixels: np.ndarray, return_context: bool = False):
        """Execute FINN's graph on ``pixels`` ``[1, C, H, W]`` (integers 0..255).

        Returns:
            the model output (float32, NCHW as exported); with ``return_context`` also the
            dict of every tensor.
        """
        from qonnx.core.onnx_exec import execute_onnx

        x = np.asarray(pixels, dtype=np.float32)
        ctx = execute_onnx(self.model, {self.model.graph.input[0].name: x},
                           return_full_exec_context=True)
        out = ctx[self.model.graph.output[0].name]
        return (out, ctx) if return_context else out

    def epilogue_model(self) -> ModelWrapper:
        """The host epilogue as a model of its own: input = the accelerator's output tensor."""
        return _submodel(self.model, self.epilogue, self.dataflow_output,
                         self.model.graph.output[0].name)


def is_hw_node(node) -> bool:
    """A hardware-layer node: FINN's (``finn.custom_op.fpgadataflow``, or its ``.hls`` / ``.rtl``
    specialisations such as ``MVAU_hls``), or one of deflow's own (:data:`DEFLOW_HW_OPS`)."""
    return (node.domain == HW_DOMAIN or node.domain.startswith(HW_DOMAIN + ".")
            or (node.domain == "sw.qonnx_ops" and node.op_type in DEFLOW_HW_OPS))


def hw_op_type(node) -> str:
    """FINN's op type without the ``_hls`` / ``_rtl`` specialisation suffix."""
    for suffix in ("_hls", "_rtl"):
        if node.op_type.endswith(suffix):
            return node.op_type[: -len(suffix)]
    return node.op_type


def host_input_scale(model: ModelWrapper) -> float:
    """The ``input_scale`` that ``"auto"`` picks: 1.0 when the graph input feeds a ``Quant``
    whose scale is exactly 1 (raw 0..255 pixels), else 1/255 (images in [0, 1))."""
    gin = model.graph.input[0].name
    for node in model.find_consumers(gin) or []:
        if node.op_type == "Quant":
            scale = model.get_initializer(node.input[1])
            if scale is not None and np.all(np.asarray(scale) == 1.0):
                return 1.0
    return 1.0 / 255.0


def _quiet(fn, *args):
    """Run a FINN/qonnx call with its warnings and log chatter kept off the console."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            return fn(*args)
        finally:
            logging.disable(logging.NOTSET)


def _prepend_input_scale(model: ModelWrapper, scale: float) -> ModelWrapper:
    """FINN's pre-processing step: a new ``UINT8`` graph input ``pixels`` feeding
    ``Mul(pixels, scale)`` into the old input."""
    graph = model.graph
    old = graph.input[0]
    shape = model.get_tensor_shape(old.name)
    new_name = "pixels"
    new_in = helper.make_tensor_value_info(new_name, onnx.TensorProto.FLOAT, shape)
    scale_name = "pixels_scale"
    model.set_initializer(scale_name, np.asarray(scale, dtype=np.float32))
    mul = helper.make_node("Mul", [new_name, scale_name], [old.name], name="InputScale")
    graph.node.insert(0, mul)
    graph.value_info.append(copy.deepcopy(old))
    graph.input.remove(old)
    graph.input.insert(0, new_in)
    model.set_tensor_datatype(new_name, DataType["UINT8"])
    return model


def _streamline(model: ModelWrapper) -> ModelWrapper:
    """FINN's streamlining with the reorderings that forks, joins and resizes need, repeated
    until the graph stops changing (FINN's build steps do the same in ``step_streamline``)."""
    from finn.transformation.streamline.absorb import (Absorb1BitMulIntoConv,
                                                       Absorb1BitMulIntoMatMul,
                                                       AbsorbAddIntoMultiThreshold,
                                                       AbsorbMulIntoMultiThreshold,
                                                       AbsorbScalarBiasIntoMultiThreshold,
                                                       FactorOutMulSignMagnitude)
    from finn.transformation.streamline.reorder import MoveScalesPastIm2Col
    from finn.transformation.streamline.sign_to_thres import ConvertSignToThres
    from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
    from qonnx.transformation.general import ConvertDivToMul, ConvertSubToAdd
    from qonnx.transformation.remove import RemoveIdentityOps
    from finn.transformation.streamline.collapse_repeated import (CollapseRepeatedAdd,
                                                                  CollapseRepeatedMul)
    from finn.transformation.streamline.absorb import (AbsorbConsecutiveTransposes,
                                                       AbsorbTransposeIntoMultiThreshold,
                                                       AbsorbTransposeIntoResize)
    from finn.transformation.streamline.reorder import (MakeScaleResizeNHWC,
                                                        MoveAddPastConv, MoveAddPastMul,
                                                        MoveLinearPastFork,
                                                        MoveMulPastJoinAdd,
                                                        MoveMulPastJoinConcat,
                                                        MoveMulPastMaxPool,
                                                        MoveScalarLinearPastInvariants,
                                                        MoveScalarAddPastMatMul,
                                                        MoveScalarLinearPastSplit,
                                                        MoveScalarMulPastConv,
                                                        MoveScalarMulPastMatMul,
                                                        MoveTransposePastFork,
                                                        MoveTransposePastJoinAdd,
                                                        MoveTransposePastJoinConcat,
                                                        MoveTransposePastSplit)
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    from finn.transformation.fpgadataflow.convert_to_hw.split import InferSplitLayer

    from sw.compiler.finn_transforms import (ExplicitSplitSizes, LowerDeformableConv,
                                    MakeMaxPoolNHWCUnforked, MergeForkedTransposes,
                                    MoveScalarMulPastDataMovers, RescaleConcatInputs)

    moves = [RescaleConcatInputs(), MoveScalarMulPastDataMovers(), MoveLinearPastFork(),
             MoveScalarLinearPastSplit(), MoveTransposePastSplit(), MoveScalarLinearPastInvariants(),
             MoveMulPastMaxPool(), MoveMulPastJoinAdd(), MoveMulPastJoinConcat(),
             AbsorbTransposeIntoMultiThreshold(), AbsorbTransposeIntoResize(),
             MoveTransposePastFork(), MoveTransposePastJoinConcat(), MoveTransposePastJoinAdd(),
             AbsorbConsecutiveTransposes(), MergeForkedTransposes(), MakeMaxPoolNHWCUnforked(),
             MakeScaleResizeNHWC()]
    # FINN's Streamline() steps, in its order
    streamline = [ConvertSubToAdd(), ConvertDivToMul(), BatchNormToAffine(), ConvertSignToThres(),
                  MoveMulPastMaxPool(), AbsorbScalarBiasIntoMultiThreshold(),
                  MoveScalesPastIm2Col(), MoveScalarLinearPastInvariants(), MoveAddPastMul(),
                  MoveScalarAddPastMatMul(), MoveAddPastConv(), MoveScalarMulPastMatMul(),
                  MoveScalarMulPastConv(), MoveAddPastMul(), CollapseRepeatedAdd(),
                  CollapseRepeatedMul(), MoveMulPastMaxPool(), AbsorbAddIntoMultiThreshold(),
                  FactorOutMulSignMagnitude(), AbsorbMulIntoMultiThreshold(),
                  Absorb1BitMulIntoMatMul(), Absorb1BitMulIntoConv(), RemoveIdentityOps()]
    absorbs = [MoveAddPastMul(), MoveScalarAddPastMatMul(), MoveAddPastConv(),
               MoveScalarMulPastMatMul(), MoveScalarMulPastConv(), CollapseRepeatedAdd(),
               CollapseRepeatedMul(), AbsorbAddIntoMultiThreshold(), AbsorbMulIntoMultiThreshold(),
               FactorOutMulSignMagnitude(), AbsorbScalarBiasIntoMultiThreshold()]

    def apply(model, t):
        # ModelWrapper.transform(t, make_deepcopy=False, cleanup=False), also saying whether
        # the graph changed
        changed = False
        while True:
            model, modified = t.apply(model)
            if not modified:
                return model, changed
            changed = True

    def fixpoint(model, transforms):
        # FINN's Streamline copies the model, cleans it up and infers data types after every
        # step (a minute per call on a detector under load); the same steps in place, data
        # types refreshed after each step that changed the graph (qonnx's InferDataTypes is
        # quadratic in the graph size: most of the front end's time on codenet256) and the
        # graph cleaned up once a round, until a round changes nothing
        for _ in range(12):
            before = model.model.SerializeToString()
            for t in transforms:
                model, changed = apply(model, t)
                if changed:
                    model = model.transform(InferDataTypes(), make_deepcopy=False, cleanup=False)
            model = model.transform(InferShapes(), make_deepcopy=False)
            model = model.transform(InferDataLayouts(), make_deepcopy=False, cleanup=False)
            if model.model.SerializeToString() == before:
                return model
        return model

    def settle(model):
        return fixpoint(model, streamline + moves + absorbs)

    model = settle(model)
    model = model.transform(LowerDeformableConv())
    model = model.transform(LowerConvsToMatMul())
    model = model.transform(MergeForkedTransposes())
    model = model.transform(MakeMaxPoolNHWCUnforked())
    model = model.transform(MakeScaleResizeNHWC())
    model = settle(model)
    # FINN's StreamingSplit before rounding: a standard Split hides its outputs' integer type,
    # and RoundAndClipThresholds rounds only thresholds on integer inputs
    model = model.transform(ExplicitSplitSizes()).transform(InferSplitLayer())
    model = model.transform(InferShapes()).transform(InferDataTypes())
    model = model.transform(InferDataLayouts())
    model = model.transform(RoundAndClipThresholds())
    model = model.transform(InferShapes()).transform(InferDataTypes())
    return model.transform(GiveUniqueNodeNames()).transform(GiveReadableTensorNames())


def _convert_to_hw(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.fpgadataflow.convert_to_hw.concat import InferConcatLayer
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import (
        InferDuplicateStreamsLayer)
    from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
        InferElementwiseBinaryOperation)
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation)
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer
    from finn.transformation.fpgadataflow.convert_to_hw.upsample import InferUpsample
    from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import (
        InferVectorVectorActivation)
    from finn.transformation.streamline.absorb import AbsorbConsecutiveTransposes
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    chain = [
        InferPool(),
        InferConvInpGen(),
        InferVectorVectorActivation(),
        InferQuantizedMatrixVectorActivation(),
        InferThresholdingLayer(),
        InferUpsample(),
        InferConcatLayer(),
        # only the adds of two integer streams (residuals); a float head's per-channel
        # Mul/Add stay on the host, as FINN leaves its output dequantisation off-chip
        InferElementwiseBinaryOperation(_integer_stream_add),
        InferDuplicateStreamsLayer(),
    ]
    for t in chain:
        model = model.transform(t)
    # the first Thresholding runs on NHWC pixels: cancel the Transpose pairs around it
    model = model.transform(AbsorbConsecutiveTransposes())
    model = model.transform(InferShapes()).transform(InferDataTypes())
    return model.transform(GiveUniqueNodeNames()).transform(GiveReadableTensorNames())


def _integer_stream_add(model: ModelWrapper, node) -> bool:
    return node.op_type == "Add" and all(
        model.get_initializer(t) is None and model.get_tensor_datatype(t).is_integer()
        for t in node.input)


def finn_lower(model: ModelWrapper | str | Path, input_scale: float | str = "auto") -> FinnLowering:
    """Lower a QONNX model (batch 1, NCHW) through FINN's transformations.

    Args:
        model: a cleaned-up QONNX export (``models.export.export_qonnx``) or its path.
        input_scale: the model input is ``pixels * input_scale``; ``"auto"``: see
            :func:`host_input_scale`.

    Returns:
        :class:`FinnLowering`.

    Raises:
        CompileError: an unreadable file, a graph that is not one input / one output, or a
            node between hardware layers that FINN did not turn into one (named with its op).
    """
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from qonnx.util.cleanup import cleanup_model

    from sw.compiler.finn_transforms import ExplicitConvAttributes, LowerChannelShuffle

    model = _load(model)
    for vi in model.graph.input:
        if model.get_initializer(vi.name) is not None:
            continue  # a constant listed as an input (torch's dynamo exporter lifts some)
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in vi.type.tensor_type.shape.dim]
        if not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
            raise CompileError(f"graph input {vi.name!r} has a dynamic or unknown shape {dims}; "
                               "export with a fixed batch-1 NCHW shape")
    for node in model.graph.node:  # the exported name survives FINN's renaming, for messages
        node.doc_string = f"{SOURCE_TAG}{node.name or node.op_type}"
    try:
        model = _quiet(cleanup_model, model)
    except Exception as exc:
        raise CompileError(f"graph: qonnx cannot clean it up ({type(exc).__name__}: {exc})") from None
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise CompileError("graph: exactly one graph input and one graph output are supported "
                           f"(got {len(model.graph.input)} and {len(model.graph.output)})")
    if input_scale == "auto":
        input_scale = host_input_scale(model)
    input_scale = float(input_scale)
    try:
        model = model.transform(ExplicitConvAttributes())
        model = _quiet(model.transform, ConvertQONNXtoFINN())
        model = model.transform(LowerChannelShuffle())
        model = _prepend_input_scale(model, input_scale)
        model = _quiet(_streamline, model)
        model = _quiet(_convert_to_hw, model)
    except CompileError:
        raise
    except Exception as exc:  # a FINN transformation refusing the graph
        raise CompileError(f"FINN's lowering stopped: {type(exc).__name__}: {exc}") from None
    return finn_partition(model, input_scale)


def finn_partition(model: ModelWrapper, input_scale: float) -> FinnLowering:
    """Cut a FINN graph whose hardware layers are already inferred into host prologue,
    dataflow part and host epilogue (as FINN's ``CreateDataflowPartition`` would).

    Raises:
        CompileError: no hardware layer, a host node between hardware layers (named, with
            its op type and a hint), or more than one stream leaving the dataflow part.
    """
    nodes = list(model.graph.node)
    hw = [i for i, n in enumerate(nodes) if is_hw_node(n)]
    if not hw:
        first = next((n for n in nodes if n.op_type not in ("Transpose", "Reshape")), None)
        raise CompileError(_not_hw_message(model, first) if first is not None else
                           "graph: no layer became a hardware layer")
    lo, hi = hw[0], hw[-1]
    for n in nodes[lo:hi + 1]:
        if not is_hw_node(n):
            raise CompileError(_not_hw_message(model, n))
    prologue, epilogue = nodes[:lo], nodes[hi + 1:]
    for n in prologue:
        if n.op_type != "Transpose":
            raise CompileError(_not_hw_message(model, n))
    for n in epilogue:
        if n.op_type not in HOST_EPILOGUE_OPS:
            hint = _NOT_HW_HINT.get(n.op_type, "no FINN hardware layer covers this op")
            raise CompileError(f"node {n.name!r} ({n.op_type}){_origin(n)} after the last hardware "
                               "layer: "
                               f"{hint}; rule: only the output's dequantisation "
                               f"({', '.join(HOST_EPILOGUE_OPS)}) is left to the host")
    first, last = nodes[lo], nodes[hi]
    din = first.input[0]
    dout = last.output[0]
    if len([t for n in nodes[lo:hi + 1] for t in n.output if model.find_consumers(t) and any(
            not is_hw_node(c) for c in model.find_consumers(t))]) > 1:
        raise CompileError("graph: the accelerator must have a single output stream (two hardware "
                           "layers feed host-side nodes)")
    return FinnLowering(model, input_scale, [n.name for n in prologue], [n.name for n in epilogue],
                        din, dout)


_NOT_HW_HINT = {
    "MultiThreshold": "an activation quantiser FINN could not put on a stream here",
    "MatMul": "a conv or linear layer whose input is not an integer tensor",
    "Mul": "a float scale left between two integer layers (unequal scales that no threshold "
           "absorbed)",
    "Add": "a float bias or an add of tensors FINN could not make integer",
    "Softmax": "no hardware layer computes a Softmax; export the model without it and apply it "
               "to the accelerator's output on the host",
}


def _origin(node) -> str:
    """`` (exported as 'name')`` when FINN renamed a node the model's export created."""
    src = node.doc_string[len(SOURCE_TAG):] if node.doc_string.startswith(SOURCE_TAG) else ""
    return f" (exported as {src!r})" if src and src != node.name else ""


def _not_hw_message(model: ModelWrapper, node) -> str:
    hint = _NOT_HW_HINT.get(node.op_type, "no FINN hardware layer covers this op")
    return (f"node {node.name!r} ({node.op_type}){_origin(node)} between hardware layers: {hint}; "
            "rule: the accelerator's part of the graph must become FINN hardware layers only")


def _submodel(model: ModelWrapper, names: list[str], inp: str, out: str) -> ModelWrapper:
    """A model made of the nodes ``names`` of ``model``, from tensor ``inp`` to ``out``."""
    keep = [copy.deepcopy(n) for n in model.graph.node if n.name in names]
    used = {t for n in keep for t in n.input}
    inits = [copy.deepcopy(i) for i in model.graph.initializer if i.name in used]
    vin = helper.make_tensor_value_info(inp, onnx.TensorProto.FLOAT, model.get_tensor_shape(inp))
    vout = helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, model.get_tensor_shape(out))
    g = helper.make_graph(keep, "host_epilogue", [vin], [vout], inits)
    from qonnx.transformation.infer_shapes import InferShapes

    sub = ModelWrapper(helper.make_model(g, producer_name="deflow",
                                         opset_imports=list(model.model.opset_import)))
    return sub.transform(InferShapes())


def _load(model) -> ModelWrapper:
    if isinstance(model, ModelWrapper):
        return ModelWrapper(copy.deepcopy(model.model))
    path = Path(model)
    if not path.is_file():
        raise CompileError(f"model file {path} does not exist")
    try:
        wrapped = ModelWrapper(str(path))
    except Exception as exc:  # onnx raises DecodeError & co. on a corrupt or empty file
        raise CompileError(f"model file {path} is not a readable ONNX model: {exc}") from None
    if len(wrapped.graph.node) == 0 or len(wrapped.graph.input) == 0:
        raise CompileError(f"model file {path} holds no graph (empty or not an ONNX model)")
    return wrapped
