"""Registry of hardware layers: the Amaranth component of each HWGraph layer, its stream
ports in graph order and its expected cycles per frame, through the layer's op class
(:data:`hw.ops.OPS`, one :class:`hw.ops.base.HWOp` subclass per op).

Adding an op means one :class:`~hw.ops.base.HWOp` subclass in :mod:`hw.ops` and its entry in
:data:`hw.ops.OPS` (docs/detector_contract.md lists the ops).
"""

from __future__ import annotations

from hw.graph import HWGraph, HWLayer
from hw.ops import op_for


def build_layer(graph: HWGraph, layer: HWLayer):
    """Instantiate the Amaranth component of one folded layer (:meth:`HWOp.build`).

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
    return op_for(graph, layer).build()


def buffer_memory(graph: HWGraph, layer: HWLayer) -> tuple[int, int] | None:
    """``(depth, word_bits)`` of the pixel-buffer ``amaranth.lib.memory.Memory`` that
    :func:`build_layer` gives a SlidingWindow, DeformableSampler, Upsample or ChannelShuffle
    layer (for a ChannelShuffle: each of its ``PE`` banks, :func:`buffer_read_ports`), from the
    component's own ``buffer_memory`` (the numbers its constructor builds the memory from), with
    the arguments :func:`build_layer` passes; ``None`` for other ops (no pixel-buffer memory).
    The op's memory estimate (:meth:`HWOp.resources`) uses it without building the component."""
    return op_for(graph, layer).buffer_memory()


def threshold_memories(graph: HWGraph, layer: HWLayer) -> dict:
    """Threshold ROMs of a Thresholding layer as :func:`build_layer` builds them, without
    building it (:meth:`hw.ops.activation.ThresholdingOp.threshold_memories`).

    Raises:
        ValueError: the layer is not a Thresholding, or its thresholds or folding are refused.
    """
    return op_for(graph, layer).threshold_memories()


def buffer_read_ports(graph: HWGraph, layer: HWLayer) -> list[int] | None:
    """Read ports of each bank of a ChannelShuffle layer's pixel buffer as :func:`build_layer`
    builds it (:meth:`hw.channel_ops.ChannelShuffle.read_ports`, one entry per bank, each bank a
    :func:`buffer_memory` memory); ``None`` for other ops (one memory, one read port)."""
    return op_for(graph, layer).buffer_read_ports()


def read_crossbar(graph: HWGraph, layer: HWLayer) -> dict[str, list[int]] | None:
    """Multiplexer sizes of a ChannelShuffle layer's read side as :func:`build_layer` builds it
    (:meth:`hw.channel_ops.ChannelShuffle.crossbar`: ``lane_inputs`` per output lane,
    ``port_inputs`` per read port); ``None`` for other ops."""
    return op_for(graph, layer).read_crossbar()


def layer_ports(layer: HWLayer, comp):
    """(input stream ports in ``layer.inputs`` order, output stream ports in ``layer.outputs`` order).

    Raises:
        ValueError: an op without hardware.
    """
    return op_for(None, layer).ports(comp)


def expected_layer_cycles(graph: HWGraph, layer: HWLayer, comp=None) -> int:
    """Expected cycles per frame of one layer, from its component's cycle model
    (:meth:`HWOp.expected_cycles`; ``comp``: the component if already built).

    Raises:
        ValueError: an op without hardware or a layer its component refuses.
    """
    return op_for(graph, layer).expected_cycles(comp)
