"""QONNX export of models/ networks and execution of the exported graph with qonnx.

``export_qonnx`` calls ``brevitas.export.export_qonnx`` (with torch >= 2.9 Brevitas 0.13.4 picks
the dynamo / ``torch.export`` based ONNX exporter by default; ``dynamo=False`` selects the
TorchScript exporter; both emit the ``sw.qonnx_ops::DeformableSample`` node, see
``models/deform.py``), then runs qonnx's cleanup (``qonnx.util.cleanup.cleanup_model``: InferShapes,
FoldConstants except Quant nodes, RemoveUnusedTensors, GiveUniqueNodeNames,
GiveReadableTensorNames, ...) and saves atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

PROJECT_DOMAINS = ("sw.qonnx_ops",)


def export_qonnx(model: torch.nn.Module, path: str | os.PathLike,
                 input_shape=(1, 3, 64, 64), example_input: torch.Tensor | None = None,
                 dynamo: bool | None = None):
    """Export ``model`` to a cleaned-up QONNX file at ``path``.

    Args:
        model: a Brevitas model (left in eval mode afterwards if it was; training state restored
            by Brevitas).
        path: output ``.onnx`` file (written atomically).
        input_shape: shape of the tracing input (NCHW).
        example_input: tracing input; default: mid-grey pixels (128.0) of ``input_shape``. A real
            tensor is used rather than ``torch.empty`` because Brevitas runs one eager forward
            pass on it before tracing.
        dynamo: ``None`` leaves Brevitas' default (dynamo exporter for torch >= 2.9).

    Returns:
        the cleaned ``qonnx.core.modelwrapper.ModelWrapper``.
    """
    from brevitas.export import export_qonnx as brevitas_export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if example_input is None:
        example_input = torch.full(tuple(input_shape), 128.0)
    if dynamo is None:
        import brevitas.export as bx

        dynamo = bool(getattr(bx, "_DEFAULT_DYNAMO", False))
    kwargs = {"dynamo": bool(dynamo)}
    if dynamo:
        kwargs["optimize"] = True  # recommended by Brevitas for dynamo=True (warns otherwise)
    was_training = model.training
    model.eval()
    try:
        raw = brevitas_export_qonnx(model, args=example_input, export_path=None, **kwargs)
    finally:
        model.train(was_training)
    wrapped = cleanup_model(ModelWrapper(raw))
    _save_atomic(wrapped, path)
    return wrapped


def _save_atomic(model, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_qonnx(model_or_path, x, return_full_context: bool = False):
    """Execute an exported QONNX model with ``qonnx.core.onnx_exec.execute_onnx``.

    Args:
        model_or_path: ``ModelWrapper`` or path of a ``.onnx`` file.
        x: input (numpy or torch), NCHW float; any batch size (a model exported with another
            fixed batch size is re-shaped on a copy with qonnx's ChangeBatchSize).
        return_full_context: also return every intermediate tensor.

    Returns:
        the (single) output as float32 numpy; with ``return_full_context``, ``(output, context)``.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = model_or_path if isinstance(model_or_path, ModelWrapper) else ModelWrapper(
        str(model_or_path))
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    iname = model.graph.input[0].name
    batch = model.get_tensor_shape(iname)[0]
    if x.ndim >= 1 and x.shape[0] != batch:
        # exported with a fixed batch size (1 by default): run a copy re-shaped to this batch
        from qonnx.transformation.change_batchsize import ChangeBatchSize
        from qonnx.transformation.infer_shapes import InferShapes

        model = ModelWrapper(copy.deepcopy(model.model))
        model = model.transform(ChangeBatchSize(x.shape[0])).transform(InferShapes())
    oname = model.graph.output[0].name
    ctx = execute_onnx(model, {iname: x}, return_full_exec_context=return_full_context)
    out = np.asarray(ctx[oname], dtype=np.float32)
    return (out, ctx) if return_full_context else out
