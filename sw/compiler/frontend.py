"""The compiler's front end: FINN's lowering of a model, and what it leaves for the host.

FINN's own transformations (:mod:`sw.compiler.finn_frontend` + :mod:`sw.compiler.finn_import`) produce the
:class:`~hw.graph.HWGraph` the back end builds, for any common Brevitas export and for ONNX files
FINN has already lowered (after ``convert_to_hw``, with or without folding attributes); deflow's
own graph rewrites sit in FINN's chain for what FINN lacks (the deformable sampler, ShuffleNetV2's
channel shuffle, concats of differently quantised tensors, forked max-pools:
:mod:`sw.compiler.finn_transforms`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from hw.graph import HWGraph
from hw.ops import OPS
from sw.compiler.lower import CompileError

__all__ = ["Lowered", "lower_model", "finn_folding_to_deflow", "brevitas_distance"]


@dataclass
class Lowered:
    """A lowered model.

    Attributes:
        graph: the unfolded :class:`HWGraph` (input: NHWC uint8 pixels).
        finn: the :class:`~sw.compiler.finn_frontend.FinnLowering`.
        files: ``{file name: bytes}`` for the compile folder: ``frontend.json``,
            ``finn_hw.onnx`` (FINN's whole graph) and ``host_epilogue.onnx``.
        folding: FINN folding attributes found on an already lowered FINN graph
            (``{node name: {"PE": .., "SIMD": ..}}``), else empty.
    """

    graph: HWGraph
    finn: object = None
    files: dict[str, bytes] = field(default_factory=dict)
    folding: dict = field(default_factory=dict)


def _read(path) -> ModelWrapper:
    from sw.compiler.finn_frontend import _load

    return _load(path)


def lower_model(path, input_scale: float | str = "auto", requant: str = "exact") -> Lowered:
    """Lower the ONNX model at ``path`` (a QONNX export, or a FINN hardware-layer graph).

    Args:
        path: ``.onnx`` file or a ``ModelWrapper``.
        input_scale: the model input is ``pixels * input_scale`` (see
            :func:`sw.compiler.finn_frontend.host_input_scale`).
        requant: where a threshold set becomes a requantiser
            (:func:`sw.compiler.threshold_form.choose_threshold_forms`): ``"exact"``, ``"within1"``
            (one output LSB on some accumulator values, for far less memory) or ``"never"``.

    Raises:
        CompileError: unreadable or empty file, or a graph the front end refuses (naming the
            node, its op type and the rule).
    """
    from sw.compiler.finn_frontend import is_hw_node

    model = _read(path)
    from sw.compiler.finn_frontend import finn_lower, finn_partition
    from sw.compiler.finn_import import hwgraph_from_finn
    from sw.compiler.threshold_form import choose_threshold_forms

    lowered_by_finn = any(is_hw_node(n) for n in model.graph.node)
    if lowered_by_finn:
        scale = 1.0 if input_scale == "auto" else float(input_scale)
        fl = finn_partition(model, scale)
    else:
        fl = finn_lower(model, input_scale)
    graph = hwgraph_from_finn(fl)
    forms = choose_threshold_forms(graph, fl.model, requant)
    folding = _finn_node_folding(fl) if lowered_by_finn else {}
    info = {"frontend": "finn", "input_scale": fl.input_scale,
            "dataflow_input": fl.dataflow_input, "dataflow_output": fl.dataflow_output,
            "host_prologue": fl.prologue, "host_epilogue": fl.epilogue,
            "from_finn_hw_graph": lowered_by_finn, "threshold_forms": forms}
    files = {"frontend.json": _json(info),
             "finn_hw.onnx": fl.model.model.SerializeToString(),
             "host_epilogue.onnx": fl.epilogue_model().model.SerializeToString()}
    return Lowered(graph, fl, files, folding)


def _json(d: dict) -> bytes:
    return json.dumps(d, indent=1).encode()


_FOLDING_ATTRS = ("PE", "SIMD", "ram_style", "resType", "mem_mode")


def _finn_node_folding(fl) -> dict:
    """The folding attributes already set on FINN's nodes (FINN's ``folding_config.json``)."""
    from qonnx.custom_op.registry import getCustomOp

    cfg = {}
    for node in fl.hw_nodes():
        op = getCustomOp(node)
        entry = {}
        for a in _FOLDING_ATTRS:
            try:
                v = op.get_nodeattr(a)
            except (AttributeError, Exception):  # the op has no such attribute
                continue
            if v not in ("", None):
                entry[a] = v if not isinstance(v, bytes) else v.decode()
        if entry:
            cfg[node.name] = entry
    return cfg


def finn_folding_to_deflow(cfg: dict, graph: HWGraph) -> dict:
    """A FINN ``folding_config.json`` for the layers of ``graph`` (named after FINN's nodes).

    Entries for FINN nodes that deflow folds into a neighbour (``FMPadding``,
    ``DuplicateStreams``, a ``Thresholding`` or ``ConvolutionInputGenerator`` whose lanes follow
    the MVAU/VVAU it feeds) are dropped: their lanes follow the layers deflow folds. Only ``PE``
    / ``SIMD`` of MVAU and VVAU layers and the memory/multiplier styles are kept.

    Raises:
        CompileError: an entry naming a node that neither the graph nor FINN's node kinds
            above account for.
    """
    layers = {l.name: l for l in graph.layers}
    out = {}
    for key, entry in cfg.items():
        if key == "Defaults":
            out[key] = entry
            continue
        layer = layers.get(key)
        if layer is None:
            if key.startswith(("FMPadding", "DuplicateStreams", "StreamingFIFO",
                               "StreamingDataWidthConverter")):
                continue
            raise CompileError(f"folding config names node {key!r}, which the graph does not have")
        if not isinstance(entry, dict):
            raise CompileError(f"folding config entry {key!r} must be an object")
        op = OPS.get(layer.op)
        if op is None:
            raise CompileError(f"folding config names node {key!r}, a {layer.op} layer, which "
                               "has no hardware op class")
        keep = op.folding_from_finn(entry)
        if keep:
            out[key] = keep
    return out


def brevitas_distance(lowered: Lowered, graph: HWGraph, reference_onnx, pixels: np.ndarray) -> dict:
    """Distance of the golden model (then the host epilogue) from Brevitas's quantised output.

    The reference is qonnx's execution of the QONNX export (Brevitas's quantisation semantics)
    on ``pixels * input_scale``. The golden output goes through the host epilogue; the
    difference is expressed in output LSB, the epilogue's per-channel step (its output for an
    accumulator of 1 minus that for 0; 1 when there is no epilogue).

    Args:
        lowered: a ``finn`` :class:`Lowered`.
        graph: its (folded) graph.
        reference_onnx: the QONNX export (path or ``ModelWrapper``).
        pixels: ``[N, H, W, C]`` integers 0..255.

    Returns:
        ``{"images", "values", "max_lsb", "mean_abs_lsb", "share_equal"}``.
    """
    from models.export import run_qonnx
    from sw.compiler.execute import run_graph

    from qonnx.util.cleanup import cleanup_model

    fl = lowered.finn
    reference_onnx = cleanup_model(_read(reference_onnx))
    epi = fl.epilogue_model()
    step, zero = _epilogue_step(epi, graph.tensors[graph.output].shape)
    diffs = []
    for p in pixels:
        gold = run_graph(graph, np.asarray(p).astype(np.int64))[graph.output]
        out = _run_epilogue(epi, gold)
        ref = run_qonnx(reference_onnx, np.asarray(p, np.float32).transpose(2, 0, 1)[None]
                        * np.float32(fl.input_scale))
        diffs.append(np.abs(np.round((out.astype(np.float64) - ref) / step)))
    d = np.stack(diffs)
    return {"images": int(len(pixels)), "values": int(d.size), "max_lsb": int(d.max()),
            "mean_abs_lsb": float(d.mean()), "share_equal": float(np.mean(d == 0))}


def _run_epilogue(epi: ModelWrapper, acc_nhwc: np.ndarray) -> np.ndarray:
    from qonnx.core.onnx_exec import execute_onnx

    iname, oname = epi.graph.input[0].name, epi.graph.output[0].name
    if not epi.graph.node:
        return acc_nhwc[None].transpose(0, 3, 1, 2).astype(np.float32)
    return execute_onnx(epi, {iname: acc_nhwc[None].astype(np.float32)})[oname]


def _epilogue_step(epi: ModelWrapper, shape) -> tuple[np.ndarray, np.ndarray]:
    zero = _run_epilogue(epi, np.zeros(shape, dtype=np.int64)).astype(np.float64)
    one = _run_epilogue(epi, np.ones(shape, dtype=np.int64)).astype(np.float64)
    step = np.abs(one - zero)
    step[step == 0] = 1.0
    return step, zero
