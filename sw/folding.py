"""Folding: PE/SIMD per layer, read from FINN's JSON folding-config format, checked, and
propagated to stream lane counts (with width converters where neighbours disagree).

FINN's folding config is ``{"Defaults": {...}, "<layer name>": {"PE": p, "SIMD": s}, ...}``;
``Defaults`` entries apply to every layer that has the attribute and no entry of its own,
e.g. ``{"Defaults": {"PE": [1, ["MVAU", "VVAU"]]}}`` in FINN; here a plain value applies to
every MVAU/VVAU. Rules (FINN's): MVAU ``MH % PE == 0`` and ``MW % SIMD == 0``; VVAU
``C % PE == 0``; a sliding window generator feeding an MVAU needs ``C % SIMD == 0``.
Besides FINN's ``resType``, ``ram_style`` and ``mem_mode``, a SlidingWindow takes
``window_buffer``: ``"rows"`` (default) or ``"minimal"`` (:data:`hw.window.WINDOW_BUFFERS`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hw.memory_style import RAM_STYLES
from hw.window import WINDOW_BUFFERS
from hw.graph import HWGraph, HWLayer, TensorInfo
from sw.lower import CompileError


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
        CompileError: a value that breaks a folding rule, or a config entry naming no layer.
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
        if layer.op == "MVAU":
            pe, simd = int(entry.get("PE", 1)), int(entry.get("SIMD", 1))
            mh, mw = layer.attrs["mh"], layer.attrs["mw"]
            if pe < 1 or mh % pe:
                raise _fail(layer, f"MH % PE == 0 is broken: MH={mh}, PE={pe}")
            if simd < 1 or mw % simd:
                raise _fail(layer, f"MW % SIMD == 0 is broken: MW={mw}, SIMD={simd}")
            layer.folding = {"PE": pe, "SIMD": simd}
            for k in ("resType", "ram_style"):
                if k in entry:
                    layer.folding[k] = entry[k]
        elif layer.op == "VVAU":
            pe, simd = int(entry.get("PE", 1)), int(entry.get("SIMD", 1))
            c = layer.attrs["channels"]
            if pe < 1 or c % pe:
                raise _fail(layer, f"C % PE == 0 is broken: C={c}, PE={pe}")
            if simd != 1:
                raise _fail(layer, f"VVAU SIMD must be 1 (kernel positions are serial), got {simd}")
            layer.folding = {"PE": pe, "SIMD": 1}
            for k in ("resType", "ram_style"):
                if k in entry:
                    layer.folding[k] = entry[k]
        elif layer.op in STREAM_OPS:
            pe = int(entry.get("PE", 1))
            for c in stream_op_channel_counts(layer):
                if pe < 1 or c % pe:
                    raise _fail(layer, f"C % PE == 0 is broken: C={c}, PE={pe} (every input and "
                                       "output channel count must be a multiple of PE)")
            layer.folding = {"PE": pe}
        if layer.op == "MVAU" and "mem_mode" in entry:
            layer.folding["mem_mode"] = _mem_mode(layer, entry["mem_mode"])
        if layer.op in MEMORY_OPS and "ram_style" in entry:
            if entry["ram_style"] not in RAM_STYLES:
                raise _fail(layer, f"ram_style must be one of {RAM_STYLES}, got {entry['ram_style']!r}")
            layer.folding = {**layer.folding, "ram_style": entry["ram_style"]}
        if layer.op == "SlidingWindow" and "window_buffer" in entry:
            if entry["window_buffer"] not in WINDOW_BUFFERS:
                raise _fail(layer, f"window_buffer must be one of {WINDOW_BUFFERS}, got "
                                   f"{entry['window_buffer']!r}")
            layer.folding = {**layer.folding, "window_buffer": entry["window_buffer"]}
    _propagate_lanes(g)
    return g


#: lane-parallel stream layers of docs/detector_contract.md section 2 (folded by ``PE``)
STREAM_OPS = ("MaxPool", "Upsample", "Concat", "ChannelSplit", "ChannelShuffle", "Add")
MEM_MODES = ("internal", "external")
#: the layers with a memory FINN's ``ram_style`` (:data:`RAM_STYLES`, the values the hardware
#: generators accept) applies to (weights, Requant parameters, threshold ROMs, line /
#: ping-pong row buffers, ChannelShuffle's banked ping-pong pixel buffer; see
#: :func:`sw.estimate.layer_resources`)
MEMORY_OPS = ("MVAU", "VVAU", "Requant", "Thresholding", "SlidingWindow", "DeformableSampler",
              "Upsample", "ChannelShuffle")


def _mem_mode(layer: HWLayer, mode: str) -> str:
    if mode not in MEM_MODES:
        raise _fail(layer, f"mem_mode must be one of {MEM_MODES}, got {mode!r}")
    return mode


def stream_op_channel_counts(layer: HWLayer) -> list[int]:
    """Channel counts that ``PE`` of a stream layer must divide (contract section 2)."""
    a = layer.attrs
    if layer.op == "Concat":
        return list(a["channels"]) + [sum(a["channels"])]
    if layer.op == "ChannelSplit":
        return list(a["sizes"]) + [a["channels"]]
    return [a["channels"]]


def _in_lanes(g: HWGraph, layer: HWLayer, port: int) -> int:
    if layer.op in STREAM_OPS:
        return layer.folding.get("PE", 1)
    if layer.op == "MVAU":
        return layer.folding["SIMD"]
    if layer.op == "VVAU":
        return layer.folding["PE"]
    if layer.op in ("SlidingWindow", "DeformableSampler"):
        return 1 if port == 1 else g.tensors[layer.outputs[0]].lanes
    if layer.op == "WidthConverter":
        return layer.attrs["in_lanes"]
    return g.tensors[layer.outputs[0]].lanes  # Requant, Thresholding, Duplicate: pass-through


def _propagate_lanes(g: HWGraph) -> None:
    # window producers take their consumer's lanes
    for layer in g.layers:
        if layer.op in ("SlidingWindow", "DeformableSampler"):
            (consumer,) = g.consumers(layer.outputs[0])
            lanes = _in_lanes(g, consumer, consumer.inputs.index(layer.outputs[0]))
            ch = layer.attrs["channels"]
            if ch % lanes:
                rule = "C % SIMD == 0" if consumer.op == "MVAU" else "C % PE == 0"
                raise _fail(layer, f"{rule} is broken for its {consumer.op} {consumer.name!r}: "
                                   f"C={ch}, lanes={lanes}")
            g.tensors[layer.outputs[0]].lanes = lanes
    # compute layers set their output lanes; pass-through layers copy their input's
    for layer in g.layers:
        if layer.op in ("MVAU", "VVAU") or layer.op in STREAM_OPS:
            for out in layer.outputs:
                g.tensors[out].lanes = layer.folding.get("PE", 1)
        elif layer.op in ("Requant", "Thresholding", "Duplicate"):
            for out in layer.outputs:
                g.tensors[out].lanes = g.tensors[layer.inputs[0]].lanes
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
                err.lane_conflict = (layer.name, tname, have, want)  # for sw.autofold's repair
                raise err
            info = g.tensors[tname]
            conv_t = f"{tname}_dwc"
            g.tensors[conv_t] = TensorInfo(conv_t, info.shape, info.bits, info.signed, info.scale,
                                           info.kind, want)
            dwc = HWLayer(f"WidthConverter_{tname}", "WidthConverter", [tname], [conv_t],
                          dict(in_lanes=have, out_lanes=want, bits=info.bits, signed=info.signed))
            layer.inputs[port] = conv_t
            g.layers.insert(g.layers.index(layer), dwc)
