"""Folding: PE/SIMD per layer, read from FINN's JSON folding-config format, checked, and
propagated to stream lane counts (with width converters where neighbours disagree).

FINN's folding config is ``{"Defaults": {...}, "<layer name>": {"PE": p, "SIMD": s}, ...}``;
``Defaults`` entries apply to every layer that has the attribute and no entry of its own,
e.g. ``{"Defaults": {"PE": [1, ["MVAU", "VVAU"]]}}`` in FINN; here a plain value applies to
every MVAU/VVAU. Rules (FINN's): MVAU ``MH % PE == 0`` and ``MW % SIMD == 0``; VVAU
``C % PE == 0``; a sliding window generator feeding an MVAU needs ``C % SIMD == 0``.
Besides FINN's ``resType``, ``ram_style`` and ``mem_mode``, a SlidingWindow takes
``window_buffer``: ``"rows"`` (default) or ``"minimal"`` (:data:`hw.window.WINDOW_BUFFERS`).
Each op's rules and lanes live in its op class (:meth:`hw.ops.base.HWOp.set_folding`,
:meth:`~hw.ops.base.HWOp.in_lanes`, :meth:`~hw.ops.base.HWOp.out_lanes`); this module applies
them over the graph and inserts the width converters.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hw.graph import HWGraph, HWLayer, TensorInfo
from hw.ops import OPS, FoldingRuleError, UnknownOpError, op_for
from sw.compiler.lower import CompileError


def load_folding(path: str | Path) -> dict:
    """Read a FINN-format folding config (JSON).

    Raises:
        CompileError: missing file or invalid JSON (naming the file).
    """
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise CompileError(f"folding config {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise CompileError(f"folding config {path} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise CompileError(f"folding config {path}: top level must be an object")
    return cfg


def _fail(layer: HWLayer, rule: str) -> CompileError:
    src = f" (from QONNX node {layer.source_node!r})" if layer.source_node else ""
    return CompileError(f"layer {layer.name!r} ({layer.op}){src}: {rule}")


def apply_folding(graph: HWGraph, config: dict) -> HWGraph:
    """Return a copy of ``graph`` with PE/SIMD set, rules checked and lanes propagated.

    Raises:
        CompileError: a value that breaks a folding rule, a config entry naming no layer, or
            a layer whose op has no op class (:data:`hw.ops.OPS`).
    """
    g = copy.deepcopy(graph)
    defaults = config.get("Defaults", {})
    names = {l.name for l in g.layers}
    for key in config:
        if key != "Defaults" and key not in names:
            raise CompileError(f"folding config names layer {key!r}, which the graph does not have "
                               f"(layers: {', '.join(sorted(n for n in names if not n.startswith(('Requant', 'Duplicate'))))})")
    for layer in g.layers:
        entry = {**{k: v for k, v in defaults.items() if not isinstance(v, list)},
                 **config.get(layer.name, {})}
        try:
            op = op_for(g, layer)
        except UnknownOpError:
            raise _fail(layer, f"no hardware for op {layer.op} (ops: {', '.join(OPS)})") from None
        try:
            op.set_folding(entry)
        except FoldingRuleError as exc:
            raise _fail(layer, str(exc)) from None
    _propagate_lanes(g)
    return g


#: the layers with a memory FINN's ``ram_style`` (:data:`hw.memory_style.RAM_STYLES`, the values the hardware
#: generators accept) applies to (weights, Requant parameters, threshold ROMs, line /
#: ping-pong row buffers, ChannelShuffle's banked ping-pong pixel buffer;
#: :attr:`hw.ops.base.HWOp.has_memory`)
MEMORY_OPS = tuple(n for n, c in OPS.items() if c.has_memory)


def _in_lanes(g: HWGraph, layer: HWLayer, port: int) -> int:
    return op_for(g, layer).in_lanes(port)


def _propagate_lanes(g: HWGraph) -> None:
    # window producers take their consumer's lanes
    for layer in g.layers:
        if op_for(g, layer).window_producer:
            (consumer,) = g.consumers(layer.outputs[0])
            cop = op_for(g, consumer)
            lanes = cop.in_lanes(consumer.inputs.index(layer.outputs[0]))
            ch = layer.attrs["channels"]
            if ch % lanes:
                rule = f"C % {cop.lanes_attr} == 0"
                raise _fail(layer, f"{rule} is broken for its {consumer.op} {consumer.name!r}: "
                                   f"C={ch}, lanes={lanes}")
            g.tensors[layer.outputs[0]].lanes = lanes
    # compute layers set their output lanes; pass-through layers copy their input's
    for layer in g.layers:
        lanes = op_for(g, layer).out_lanes()
        if lanes is not None:
            for out in layer.outputs:
                g.tensors[out].lanes = lanes
    # graph input: the lanes its consumer wants
    (first,) = g.consumers(g.input)
    g.tensors[g.input].lanes = _in_lanes(g, first, first.inputs.index(g.input))
    # width converters where a producer's lanes differ from what its consumer reads
    for layer in list(g.layers):
        for port, tname in enumerate(list(layer.inputs)):
            if g.producer(tname) is None:
                continue
            want = _in_lanes(g, layer, port)
            have = g.tensors[tname].lanes
            if want == have:
                continue
            if max(want, have) % min(want, have):
                err = _fail(layer, f"input {tname!r} arrives in beats of {have} lanes but the layer "
                                   f"reads {want}; one must divide the other (width converter rule)")
                err.lane_conflict = (layer.name, tname, have, want)  # for sw.compiler.autofold's repair
                raise err
            info = g.tensors[tname]
            conv_t = f"{tname}_dwc"
            g.tensors[conv_t] = TensorInfo(conv_t, info.shape, info.bits, info.signed, info.scale,
                                           info.kind, want)
            dwc = HWLayer(f"WidthConverter_{tname}", "WidthConverter", [tname], [conv_t],
                          dict(in_lanes=have, out_lanes=want, bits=info.bits, signed=info.signed))
            layer.inputs[port] = conv_t
            g.layers.insert(g.layers.index(layer), dwc)
