"""Cleanup of a QONNX export: qonnx's own cleanup passes, then a static-shape check."""

from __future__ import annotations

from qonnx.transformation.base import Transformation
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.general import (GiveReadableTensorNames, GiveUniqueNodeNames,
                                          GiveUniqueParameterTensors, RemoveStaticGraphInputs,
                                          RemoveUnusedTensors)
from qonnx.transformation.infer_shapes import InferShapes

from sw.transforms.base import CompileError


class CheckStaticShapes(Transformation):
    """Refuse a graph with a dynamic or unknown tensor shape (the accelerator's stream sizes
    are fixed at compile time).

    Raises:
        CompileError: naming the first tensor without a fully known positive shape and the
            node that produces it.
    """

    def apply(self, model):
        names = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
        for t in names:
            shape = model.get_tensor_shape(t)
            if shape is None or any((not isinstance(d, int)) or d <= 0 for d in shape):
                prod = model.find_producer(t)
                where = f"node {prod.name!r} ({prod.op_type})" if prod is not None else "graph input"
                raise CompileError(f"{where}: tensor {t!r} has a dynamic or unknown shape {shape}; "
                                   "rule: export with a fixed input shape (batch 1)")
        return model, False


class Cleanup(Transformation):
    """qonnx's cleanup sequence (as in ``qonnx.util.cleanup.cleanup_model``: InferShapes,
    GiveUniqueParameterTensors, FoldConstants except Quant, RemoveUnusedTensors,
    RemoveStaticGraphInputs, GiveUniqueNodeNames where names are missing or repeated,
    GiveReadableTensorNames), then
    :class:`CheckStaticShapes`. Idempotent."""

    def apply(self, model):
        import sw.qonnx_ops  # noqa: F401  (registers DeformableSample for shape inference)

        for t in (InferShapes(), GiveUniqueParameterTensors(), FoldConstants(exclude_op_types=["Quant"]),
                  RemoveUnusedTensors(), RemoveStaticGraphInputs()):
            model = model.transform(t)
        names = [n.name for n in model.graph.node]
        if "" in names or len(set(names)) != len(names):
            # keep the exporter's names where they are usable: errors quote them
            model = model.transform(GiveUniqueNodeNames())
        for t in (GiveReadableTensorNames(), InferShapes(), CheckStaticShapes()):
            model = model.transform(t)
        return model, False
