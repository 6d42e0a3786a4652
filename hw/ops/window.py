"""Window ops: SlidingWindow (FINN's ConvolutionInputGenerator) and DeformableSampler (deflow's
custom op, CoDeNet's hardware deformable 3x3: integer offsets, taps ``d`` apart).

Both write a window stream in the lanes their consumer reads (``C % SIMD == 0`` behind an
MVAU, ``C % PE == 0`` behind a VVAU or MaxPool) from a line buffer of rows
(:mod:`hw.window`; a SlidingWindow takes ``window_buffer "minimal"`` for FINN's RTL SWG
sizing). Cycles per frame: ``max(output beats, input beats)`` (FINN's ``get_exp_cycles``
without latency); the minimal buffer's from its event model
(:func:`hw.window.minimal_window_steady_cycles`).
"""

from __future__ import annotations

import functools
import math

from hw import golden
from hw import schedule as S
from hw.ops.base import FoldingRuleError, HWOp
from hw.ops.memory import pixel_buffer_resources


def consumer_window_lanes(graph, tensor: str) -> int:
    """Lanes ``PE`` of the depthwise window reader (VVAU, MaxPool) that consumes ``tensor``,
    through width converters; 1 where none does (the golden model's window layout)."""
    from hw.ops import op_for

    for consumer in graph.consumers(tensor):
        op = op_for(graph, consumer)
        if op.depthwise_window_reader:
            return op.pe
        if op.regroups_lanes:
            return consumer_window_lanes(graph, consumer.outputs[0])
    return 1


@functools.lru_cache(maxsize=4096)
def minimal_window_cycles(ifm_dim: tuple[int, int], channels: int, kernel: int, stride: int,
                          pad: int, dilation: int, lanes: int) -> int:
    """Cycles per frame of a SlidingWindow with ``window_buffer "minimal"`` in a stream of
    frames (:func:`hw.window.minimal_window_steady_cycles`: output beats plus the reader's
    waits for the writer, an event model of the RTL; cached by geometry)."""
    from hw.window import minimal_window_steady_cycles

    return minimal_window_steady_cycles(ifm_dim=ifm_dim, folds=channels // lanes, kernel=kernel,
                                        stride=stride, pad=pad, dilation=dilation)


class _WindowOp(HWOp):
    has_memory = True
    window_producer = True

    def in_lanes(self, port: int) -> int:
        return 1 if port == 1 else self.t_out.lanes

    def analytic_cycles(self) -> int:
        lanes = self.t_out.lanes
        out_beats = self.t_out.values_per_frame // lanes
        in_beats = self.t_in.values_per_frame // lanes
        return max(out_beats, in_beats)

    def resources(self, mult_style: str = "lut", mem_style: str = "auto") -> dict:
        """The line buffer the component builds (:meth:`buffer_memory`) in ``mem_style``, plus
        ``200 + 2*width`` LUTs of address and control logic."""
        return pixel_buffer_resources(*self.buffer_memory(), mem_style)

    def _line_buffer_args(self, comp) -> dict:
        return dict(height=comp.height, row_beats=comp.width * comp.folds, rows=comp.rows,
                    out_rows=comp.out_rows, row_lo_hi=comp._row_lo_hi,
                    beats_per_out_row=comp.beats_per_out_row)


class SlidingWindowOp(_WindowOp):
    """SlidingWindow: ``[H, W, C]`` -> windows, standard ``(ky, kx, c)`` (feeds an MVAU) or
    depthwise ``(C/PE, K*K, PE)`` (:func:`hw.golden.sliding_window`,
    :func:`hw.window.sliding_window_class`)."""

    op = "SlidingWindow"
    finn_op = "ConvolutionInputGenerator"

    @property
    def window_buffers(self) -> tuple[str, ...]:
        from hw.window import WINDOW_BUFFERS

        return WINDOW_BUFFERS

    def set_folding(self, entry: dict) -> None:
        super().set_folding(entry)
        if "window_buffer" in entry:
            if entry["window_buffer"] not in self.window_buffers:
                raise FoldingRuleError(f"window_buffer must be one of {self.window_buffers}, got "
                                       f"{entry['window_buffer']!r}")
            self.layer.folding = {**self.layer.folding, "window_buffer": entry["window_buffer"]}

    @property
    def minimal(self) -> bool:
        return self.folding.get("window_buffer", "rows") == "minimal"

    def analytic_cycles(self) -> int:
        if self.minimal:
            a = self.attrs
            return minimal_window_cycles(tuple(a["ifm_dim"]), a["channels"], a["kernel"],
                                         a["stride"], a["pad"], a["dilation"], self.t_out.lanes)
        return super().analytic_cycles()

    def buffer_memory(self) -> tuple[int, int]:
        from hw.window import sliding_window_class

        a = self.attrs
        return sliding_window_class(self.folding.get("window_buffer", "rows")).buffer_memory(
            ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"], kernel=a["kernel"],
            stride=a["stride"], dilation=a["dilation"], lanes=self.t_out.lanes, bits=self.t_in.bits)

    def execute(self, inputs):
        a = self.attrs
        lanes = consumer_window_lanes(self.graph, self.layer.outputs[0]) if a["depthwise"] else 1
        return [golden.sliding_window(inputs[0], a["kernel"], a["stride"], a["pad"], a["dilation"],
                                      a["depthwise"], lanes)]

    def build(self):
        from hw.window import sliding_window_class

        a, t_in = self.attrs, self.t_in
        return sliding_window_class(self.folding.get("window_buffer", "rows"))(
            ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"], kernel=a["kernel"],
            stride=a["stride"], pad=a["pad"], dilation=a["dilation"], lanes=self.t_out.lanes,
            depthwise=a["depthwise"], bits=t_in.bits, signed=t_in.signed, ram_style=self.ram_style)

    def token_schedule(self, comp, arrivals, frames):
        if self.minimal:
            c, p = S.minimal_window_schedule(arrivals[0], frames=frames, **comp._geometry_args())
        else:
            c, p = S.line_buffer_schedule(arrivals[0], **self._line_buffer_args(comp))
        return [c], [p]


class DeformableSamplerOp(_WindowOp):
    """DeformableSampler: features ``[H, W, C]`` and offsets ``[H, W, 1]`` in ``[0, N]`` ->
    depthwise windows ``(C/PE, 9, PE)`` (:class:`hw.window.DeformableSampler`,
    :func:`hw.golden.deformable_sample`)."""

    op = "DeformableSampler"
    finn_op = "DeformableSampler"

    def buffer_memory(self) -> tuple[int, int]:
        from hw.window import DeformableSampler

        a = self.attrs
        return DeformableSampler.buffer_memory(
            ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"], max_offset=a["max_offset"],
            lanes=self.t_out.lanes, bits=self.t_in.bits)

    def execute(self, inputs):
        lanes = consumer_window_lanes(self.graph, self.layer.outputs[0])
        return [golden.deformable_sample(inputs[0], inputs[1][..., 0], self.attrs["max_offset"],
                                         lanes)]

    def build(self):
        from hw.window import DeformableSampler

        a = self.attrs
        return DeformableSampler(
            ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"], max_offset=a["max_offset"],
            lanes=self.t_out.lanes, bits=self.t_in.bits, offset_bits=a["offset_bits"],
            ram_style=self.ram_style)

    def ports(self, comp):
        return [comp.i, comp.offsets], [comp.o]

    def default_fifo_depths(self) -> dict[str, int]:
        """The offsets FIFO holds ``(N + 2) * W`` beats (rounded up to a power of two): the
        sampler buffers feature rows up to N ahead of the offset it needs."""
        h, w = self.attrs["ifm_dim"]
        need = (self.attrs["max_offset"] + 2) * w
        return {self.layer.inputs[1]: 1 << math.ceil(math.log2(need))}

    def token_schedule(self, comp, arrivals, frames):
        cs, p = S.line_buffer_schedule(arrivals[0], offsets=arrivals[1],
                                       pixel_beats=9 * comp.folds, **self._line_buffer_args(comp))
        return cs, [p]
