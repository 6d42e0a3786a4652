"""Execute a lowered :class:`~sw.hwgraph.HWGraph` with the golden integer model.

This is the bit-level reference for the whole accelerator: RTL simulation of the generated
top level must produce exactly :func:`run_graph`'s output stream.
"""

from __future__ import annotations

import numpy as np

from sw import golden
from sw.hwgraph import HWGraph


def _lanes_of_vvau(graph: HWGraph, window_tensor: str) -> int:
    for consumer in graph.consumers(window_tensor):
        if consumer.op == "VVAU":
            return int(consumer.folding.get("PE", 1))
        if consumer.op == "WidthConverter":
            return _lanes_of_vvau(graph, consumer.outputs[0])
    return 1


def run_graph(graph: HWGraph, x: np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray]:
    """Run one frame through the graph.

    Args:
        graph: lowered (optionally folded) hardware graph.
        x: input frame ``[H, W, C]`` integers (uint8 pixels for the first layer).
        keep_all: return every tensor, not only the output.

    Returns:
        ``{tensor name: array}``; feature tensors are ``[H, W, C]``, accumulators
        ``[H, W, C]``, window tensors in their stream order (see :mod:`sw.golden`).

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
        a = layer.attrs
        ins = [env[t] for t in layer.inputs]
        if layer.op == "SlidingWindow":
            lanes = _lanes_of_vvau(graph, layer.outputs[0]) if a["depthwise"] else 1
            out = golden.sliding_window(ins[0], a["kernel"], a["stride"], a["pad"], a["dilation"],
                                        a["depthwise"], lanes)
            outs = [out]
        elif layer.op == "DeformableSampler":
            lanes = _lanes_of_vvau(graph, layer.outputs[0])
            outs = [golden.deformable_sample(ins[0], ins[1][..., 0], a["max_offset"], lanes)]
        elif layer.op == "MVAU":
            outs = [golden.mvau(ins[0], layer.params["weights"])]
        elif layer.op == "VVAU":
            win = ins[0]
            if win.ndim == 3:  # flat window stream: restore (C/PE, K*K, PE)
                pe = int(layer.folding.get("PE", 1))
                h, w, _ = win.shape
                win = win.reshape(h, w, a["channels"] // pe, a["kernel_elems"], pe)
            outs = [golden.vvau(win, layer.params["weights"])]
        elif layer.op == "Requant":
            outs = [golden.requantize(ins[0], layer.params["multiplier"], layer.params["bias"],
                                      a["shift"], a["out_min"], a["out_max"])]
        elif layer.op in ("Duplicate",):
            outs = [ins[0]] * len(layer.outputs)
        elif layer.op == "WidthConverter":
            outs = [ins[0]]  # lane regrouping leaves the value sequence unchanged
        else:
            raise golden.GoldenModelError(f"layer {layer.name}: no golden model for op {layer.op}")
        for name, val in zip(layer.outputs, outs):
            env[name] = val
    if keep_all:
        return env
    return {graph.output: env[graph.output]}


def stream_values(graph: HWGraph, tensor: str, value: np.ndarray) -> np.ndarray:
    """The flat sequence of integers that crosses ``tensor``'s stream for one frame."""
    return np.asarray(value).reshape(-1)
