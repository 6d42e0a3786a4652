"""The compiler's graph passes, each a ``qonnx.transformation.base.Transformation`` (FINN's
style: ``model = model.transform(T())``, applied until it reports no change).

:func:`streamline_model` chains cleanup (:mod:`sw.transforms.cleanup`) and streamlining
(:mod:`sw.transforms.streamline`) into the integer graph that :mod:`sw.lower` converts to
hardware layers and that qonnx executes as the reference of the golden model.
"""

from __future__ import annotations

from sw.transforms.base import CompileError, get_scales  # noqa: F401


def streamline_model(model, progress=None):
    """Cleanup + streamline a QONNX ``ModelWrapper`` into the integer graph (a new model).

    The result executes with ``qonnx.core.onnx_exec.execute_onnx`` on integer input pixels
    (NCHW float32 carriers) and returns the integer output; the per-tensor scales are in
    :func:`sw.transforms.base.get_scales`.

    Raises:
        CompileError: from any pass, naming the node and the rule.
    """
    import copy

    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
    from qonnx.transformation.infer_shapes import InferShapes

    from sw.transforms.cleanup import Cleanup
    from sw.transforms.ops import DOMAIN
    from sw.transforms.streamline import (CollapseToRequant, FoldWeightQuant, FuseChannelShuffle,
                                          IntegerActivations, MoveScalarMulDownstream,
                                          StripOutputScale)

    model = ModelWrapper(copy.deepcopy(model.model))
    model.set_opset_import(DOMAIN, 1)
    passes = [Cleanup(), FoldWeightQuant(), BatchNormToAffine(), IntegerActivations(),
              FuseChannelShuffle(), MoveScalarMulDownstream(), CollapseToRequant(),
              StripOutputScale()]
    for t in passes:
        if progress:
            progress(type(t).__name__)
        model = model.transform(t, make_deepcopy=False)
        model = model.transform(InferShapes(), make_deepcopy=False)  # shapes of new tensors
    return model
