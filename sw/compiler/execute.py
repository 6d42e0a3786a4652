"""Execute a lowered :class:`~hw.graph.HWGraph` with the golden integer model.

This is the bit-level reference for the whole accelerator: RTL simulation of the generated
top level must produce exactly :func:`run_graph`'s output stream. Each layer runs its op
class's :meth:`~hw.ops.base.HWOp.execute` (:mod:`hw.golden`'s functions).
"""

from __future__ import annotations

import numpy as np

from hw import golden
from hw.graph import HWGraph
from hw.ops import UnknownOpError, op_for


def run_graph(graph: HWGraph, x: np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray]:
    """Run one frame through the graph.

    Args:
        graph: lowered (optionally folded) hardware graph.
        x: input frame ``[H, W, C]`` integers (uint8 pixels for the first layer).
        keep_all: return every tensor, not only the output.

    Returns:
        ``{tensor name: array}``; feature tensors are ``[H, W, C]``, accumulators
        ``[H, W, C]``, window tensors in their stream order (see :mod:`hw.golden`).

    Raises:
        golden.GoldenModelError: input shape or values that break the contract.
    """
    info = graph.tensors[graph.input]
    x = np.asarray(x)
    if x.shape != info.shape:
        raise golden.GoldenModelError(f"input frame has shape {x.shape}, the graph expects {info.shape}")
    lo, hi = (-(2 ** (info.bits - 1)), 2 ** (info.bits - 1) - 1) if info.signed else (0, 2**info.bits - 1)
    if x.min() < lo or x.max() > hi:
        raise golden.GoldenModelError(f"input values outside [{lo}, {hi}] of a {info.bits}-bit input")
    env: dict[str, np.ndarray] = {graph.input: x.astype(np.int64)}
    for layer in graph.layers:
        try:
            op = op_for(graph, layer)
        except UnknownOpError:
            raise golden.GoldenModelError(f"layer {layer.name}: no golden model for op {layer.op}") from None
        outs = op.execute([env[t] for t in layer.inputs])
        for name, val in zip(layer.outputs, outs):
            env[name] = val
    if keep_all:
        return env
    return {graph.output: env[graph.output]}


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.asarray(x)[None].transpose(0, 3, 1, 2).astype(np.float32)


def compare_with_brevitas(model_or_onnx, graph: HWGraph, images: np.ndarray) -> dict:
    """Distance of the golden integer model from the Brevitas float model, in output LSB.

    The reference output ``y`` (float, from the Brevitas ``torch.nn.Module`` or, given a path
    or ``ModelWrapper``, from qonnx execution of the QONNX export, which is Brevitas'
    quantisation semantics) is expressed in LSB of the graph output, ``y / scale``, and
    compared with :func:`run_graph`'s integers.

    Args:
        model_or_onnx: Brevitas module (``forward`` on raw pixels NCHW float), a ``.onnx`` path
            or a ``ModelWrapper``.
        graph: the lowered graph of that model.
        images: ``[N, H, W, 3]`` uint8.

    Returns:
        ``{"images", "values", "max_lsb", "mean_abs_lsb", "share_equal", "per_image_max_lsb"}``.
    """
    import torch

    scale = np.asarray(graph.tensors[graph.output].scale, dtype=np.float64)
    diffs = []
    for img in images:
        gold = run_graph(graph, img)[graph.output]
        if isinstance(model_or_onnx, torch.nn.Module):
            with torch.no_grad():
                ref = model_or_onnx.eval()(torch.from_numpy(_nchw(img))).detach().numpy()
        else:
            from models.export import run_qonnx

            ref = run_qonnx(model_or_onnx, _nchw(img))
        ref_lsb = np.asarray(ref, dtype=np.float64)[0].transpose(1, 2, 0) / scale
        diffs.append(np.abs(gold - np.round(ref_lsb)))
    d = np.stack(diffs)
    return {"images": int(len(images)), "values": int(d.size), "max_lsb": int(d.max()),
            "mean_abs_lsb": float(d.mean()), "share_equal": float(np.mean(d == 0)),
            "per_image_max_lsb": [int(x.max()) for x in diffs]}


def stream_values(graph: HWGraph, tensor: str, value: np.ndarray) -> np.ndarray:
    """The flat sequence of integers that crosses ``tensor``'s stream for one frame."""
    return np.asarray(value).reshape(-1)
