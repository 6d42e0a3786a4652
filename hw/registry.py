"""Registry of hardware layers: which Amaranth component implements each HWGraph op, its
stream ports in graph order, and its expected cycles per frame.

Adding an op means one branch in each of :func:`build_layer`, :func:`layer_ports` and
:func:`expected_layer_cycles` (docs/detector_contract.md lists the ops).
"""

from __future__ import annotations

import numpy as np

from hw.graph import HWGraph, HWLayer


def build_layer(graph: HWGraph, layer: HWLayer):
    """Instantiate the Amaranth component of one folded layer.

    The folding's FINN attributes reach the component: ``PE``/``SIMD``, ``resType`` (MVAU
    multipliers) and ``ram_style`` (``auto`` when absent) of the memory of an MVAU, VVAU,
    Requant, Thresholding, SlidingWindow, DeformableSampler or Upsample, written as a Verilog attribute on
    it (:mod:`hw.memory_style`); likewise the banked pixel buffer of a ChannelShuffle. A
    SlidingWindow's ``window_buffer`` picks its engine (:func:`hw.window.sliding_window_class`:
    ``"rows"``, the default, or ``"minimal"``).

    Raises:
        ValueError: an op without hardware, a MaxPool on a signed input, or a folding the
            component refuses (e.g. a ``ram_style`` outside FINN's four values).
    """
    from hw.channel_ops import Add, ChannelShuffle, ChannelSplit, Concat
    from hw.mvau import MVAU
    from hw.pool import MaxPool
    from hw.requant import Requantizer
    from hw.stream_utils import StreamDuplicator, StreamWidthConverter
    from hw.thresholding import Thresholding
    from hw.upsample import Upsample
    from hw.vvau import VVAU
    from hw.window import DeformableSampler, sliding_window_class

    a = layer.attrs
    ram_style = layer.folding.get("ram_style", "auto")
    t_in = graph.tensors[layer.inputs[0]]
    t_out = graph.tensors[layer.outputs[0]]
    if layer.op == "SlidingWindow":
        return sliding_window_class(layer.folding.get("window_buffer", "rows"))(
            ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"], kernel=a["kernel"],
            stride=a["stride"], pad=a["pad"], dilation=a["dilation"], lanes=t_out.lanes,
            depthwise=a["depthwise"], bits=t_in.bits, signed=t_in.signed, ram_style=ram_style)
    if layer.op == "DeformableSampler":
        return DeformableSampler(
            ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"], max_offset=a["max_offset"],
            lanes=t_out.lanes, bits=t_in.bits, offset_bits=a["offset_bits"], ram_style=ram_style)
    if layer.op == "MVAU":
        return MVAU(weights=layer.params["weights"], pe=layer.folding["PE"],
                    simd=layer.folding["SIMD"], in_bits=t_in.bits, in_signed=t_in.signed,
                    weight_bits=a["weight_bits"], acc_bits=t_out.bits,
                    mult_style=layer.folding.get("resType", "lut"),  # FINN's name
                    ram_style=ram_style)
    if layer.op == "VVAU":
        return VVAU(weights=layer.params["weights"], pe=layer.folding["PE"],
                    kernel_elems=a["kernel_elems"], in_bits=t_in.bits, in_signed=t_in.signed,
                    weight_bits=a["weight_bits"], acc_bits=t_out.bits,
                    mult_style=layer.folding.get("resType", "lut"), ram_style=ram_style)
    if layer.op == "Requant":
        return Requantizer(multiplier=layer.params["multiplier"], bias=layer.params["bias"],
                           shift=a["shift"], out_min=a["out_min"], out_max=a["out_max"],
                           lanes=t_in.lanes, acc_bits=t_in.bits, in_signed=t_in.signed,
                           ram_style=ram_style)
    if layer.op == "Thresholding":
        return Thresholding(thresholds=layer.params["thresholds"], channels=a["channels"],
                            lanes=t_in.lanes, in_bits=t_in.bits, in_signed=t_in.signed,
                            out_bits=t_out.bits, out_signed=t_out.signed,
                            out_bias=a["out_bias"], ram_style=ram_style)
    if layer.op == "Duplicate":
        return StreamDuplicator(_payload_layout(t_in))
    if layer.op == "WidthConverter":
        return StreamWidthConverter(in_lanes=a["in_lanes"], out_lanes=a["out_lanes"],
                                    bits=a["bits"], signed=a["signed"])
    lanes, bits, sgn = t_in.lanes, t_in.bits, t_in.signed
    if layer.op == "MaxPool":
        if sgn:
            # the window generator pads with 0, which would win over negative values
            raise ValueError(f"layer {layer.name}: MaxPool needs an unsigned (post-ReLU) input, "
                             f"got int{bits}")
        return MaxPool(kernel=a["kernel"], channels=a["channels"], lanes=lanes, bits=bits,
                       signed=sgn)
    if layer.op == "Upsample":
        return Upsample(factor=a["factor"], ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"],
                        lanes=lanes, bits=bits, signed=sgn, ram_style=ram_style)
    if layer.op == "Concat":
        return Concat(channels=list(a["channels"]), lanes=lanes, bits=bits, signed=sgn)
    if layer.op == "ChannelSplit":
        return ChannelSplit(sizes=list(a["sizes"]), lanes=lanes, bits=bits, signed=sgn)
    if layer.op == "ChannelShuffle":
        return ChannelShuffle(groups=a["groups"], channels=a["channels"], lanes=lanes, bits=bits,
                              signed=sgn, ram_style=ram_style)
    if layer.op == "Add":
        return Add(channels=t_out.shape[-1], lanes=lanes, in_bits=bits, in_signed=sgn,
                   out_bits=a["out_bits"], out_signed=t_out.signed)
    raise ValueError(f"layer {layer.name}: no hardware for op {layer.op}")


def buffer_memory(graph: HWGraph, layer: HWLayer) -> tuple[int, int] | None:
    """``(depth, word_bits)`` of the pixel-buffer ``amaranth.lib.memory.Memory`` that
    :func:`build_layer` gives a SlidingWindow, DeformableSampler, Upsample or ChannelShuffle
    layer (for a ChannelShuffle: each of its ``PE`` banks, :func:`buffer_read_ports`), from the
    component's own ``buffer_memory`` (the numbers its constructor builds the memory from), with
    the arguments :func:`build_layer` passes; ``None`` for other ops (no pixel-buffer memory).
    The compiler's memory estimate (:func:`sw.estimate.layer_resources`) uses it without
    building the component."""
    from hw.channel_ops import ChannelShuffle
    from hw.upsample import Upsample
    from hw.window import DeformableSampler, sliding_window_class

    a = layer.attrs
    t_in = graph.tensors[layer.inputs[0]]
    t_out = graph.tensors[layer.outputs[0]]
    if layer.op == "SlidingWindow":
        return sliding_window_class(layer.folding.get("window_buffer", "rows")).buffer_memory(
            ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"], kernel=a["kernel"],
            stride=a["stride"], dilation=a["dilation"], lanes=t_out.lanes, bits=t_in.bits)
    if layer.op == "DeformableSampler":
        return DeformableSampler.buffer_memory(
            ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"], max_offset=a["max_offset"],
            lanes=t_out.lanes, bits=t_in.bits)
    if layer.op == "Upsample":
        return Upsample.buffer_memory(ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"],
                                      lanes=t_in.lanes, bits=t_in.bits)
    if layer.op == "ChannelShuffle":
        return ChannelShuffle.buffer_memory(channels=a["channels"], lanes=t_in.lanes,
                                            bits=t_in.bits)
    return None


def threshold_memories(graph: HWGraph, layer: HWLayer) -> dict:
    """Threshold ROMs of a Thresholding layer as :func:`build_layer` builds them, without
    building it (:func:`hw.thresholding.threshold_geometry`): ``{"memories": [(depth,
    width), ...] one per lane and search stage with depth > 1, "stages": M, "thr_bits",
    "rows": threshold rows (C, or 1 shared), "n": N}``; the compiler's estimate
    (:func:`sw.estimate.layer_resources`) uses it.

    Raises:
        ValueError: the layer is not a Thresholding, or its thresholds or folding are refused.
    """
    from hw.thresholding import threshold_geometry

    if layer.op != "Thresholding":
        raise ValueError(f"layer {layer.name}: threshold_memories of a {layer.op}")
    t_in = graph.tensors[layer.inputs[0]]
    geo = threshold_geometry(layer.params["thresholds"], layer.attrs["channels"], t_in.lanes,
                             t_in.bits, t_in.signed)
    return {"memories": geo["memories"], "stages": geo["stages"], "thr_bits": geo["thr_bits"],
            "rows": geo["table"].shape[0], "n": geo["n"]}


def buffer_read_ports(graph: HWGraph, layer: HWLayer) -> list[int] | None:
    """Read ports of each bank of a ChannelShuffle layer's pixel buffer as :func:`build_layer`
    builds it (:meth:`hw.channel_ops.ChannelShuffle.read_ports`, one entry per bank, each bank a
    :func:`buffer_memory` memory); ``None`` for other ops (one memory, one read port)."""
    from hw.channel_ops import ChannelShuffle

    if layer.op != "ChannelShuffle":
        return None
    return ChannelShuffle.read_ports(groups=layer.attrs["groups"],
                                     channels=layer.attrs["channels"],
                                     lanes=graph.tensors[layer.inputs[0]].lanes)


def read_crossbar(graph: HWGraph, layer: HWLayer) -> dict[str, list[int]] | None:
    """Multiplexer sizes of a ChannelShuffle layer's read side as :func:`build_layer` builds it
    (:meth:`hw.channel_ops.ChannelShuffle.crossbar`: ``lane_inputs`` per output lane,
    ``port_inputs`` per read port); ``None`` for other ops."""
    from hw.channel_ops import ChannelShuffle

    if layer.op != "ChannelShuffle":
        return None
    return ChannelShuffle.crossbar(groups=layer.attrs["groups"], channels=layer.attrs["channels"],
                                   lanes=graph.tensors[layer.inputs[0]].lanes)


def _payload_layout(t):
    from amaranth import signed, unsigned
    from amaranth.lib import data

    return data.ArrayLayout(signed(t.bits) if t.signed else unsigned(t.bits), t.lanes)


def layer_ports(layer: HWLayer, comp):
    """(input stream ports in ``layer.inputs`` order, output stream ports in ``layer.outputs`` order)."""
    if layer.op == "DeformableSampler":
        return [comp.i, comp.offsets], [comp.o]
    if layer.op == "Duplicate":
        return [comp.i], [comp.o0, comp.o1]
    if layer.op in ("Concat", "Add"):
        return [getattr(comp, f"i{k}") for k in range(len(layer.inputs))], [comp.o]
    if layer.op == "ChannelSplit":
        return [comp.i], [getattr(comp, f"o{k}") for k in range(len(layer.outputs))]
    return [comp.i], [comp.o]


def expected_layer_cycles(graph: HWGraph, layer: HWLayer, comp=None) -> int:
    """Expected cycles per frame of one layer, from its component's cycle model."""
    if comp is None:
        comp = build_layer(graph, layer)
        comp._MustUse__silence = True  # only asked for its cycle model, never elaborated
    if layer.op in ("MVAU", "VVAU", "Requant", "Thresholding"):
        return int(comp.expected_cycles(layer.attrs["pixels"]))
    if layer.op in ("MaxPool", "Concat", "ChannelSplit", "ChannelShuffle", "Add"):
        # pixels of the (first) output frame [H, W, C]
        shape = graph.tensors[layer.outputs[0]].shape
        return int(comp.expected_cycles(int(np.prod(shape[:-1]))))
    if layer.op in ("Duplicate", "WidthConverter"):
        return int(comp.expected_cycles(graph.tensors[layer.inputs[0]].beats_per_frame))
    return int(comp.expected_cycles())
