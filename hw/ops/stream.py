"""Stream ops: lane-parallel layers folded by ``PE`` (MaxPool = FINN's Pool, Upsample,
Concat = StreamingConcat, ChannelSplit = StreamingSplit, ChannelShuffle, Add = elementwise
add) and the plumbing the compiler inserts (Duplicate = DuplicateStreams, WidthConverter =
StreamingDataWidthConverter).

Folding: ``C % PE == 0`` for every input and output channel count. Cycles (FINN's
``get_exp_cycles``, no latency): ``pixels * C/PE`` per output frame, ``K*K`` beats per output
pixel of a MaxPool, the output frame of an Upsample. Resources: ``50 + 2 * lanes * bits`` LUTs
of registers and muxes, except the buffers of Upsample and ChannelShuffle.
"""

from __future__ import annotations

import math

from hw import golden
from hw import schedule as S
from hw.ops.base import HWOp
from hw.ops.memory import empty_resources, memory_cost, mux_luts, pixel_buffer_resources


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class _StreamOp(HWOp):
    """A lane-parallel stream layer: ``PE`` lanes in and out."""

    folding_knob = True

    def _fold(self, entry: dict) -> None:
        self.layer.folding = {"PE": self._check_pe(entry)}

    def candidates(self) -> list[dict]:
        return [{"PE": p} for p in _divisors(math.gcd(*self.pe_channel_counts()))]

    def in_lanes(self, port: int) -> int:
        return self.pe

    def out_lanes(self) -> int:
        return self.pe

    def analytic_cycles(self) -> int:
        return self.attrs["pixels"] * self.attrs["channels"] // self.pe

    def _component_cycles(self, comp) -> int:
        return comp.expected_cycles(self._out_pixels())

    def _stream_args(self) -> dict:
        t = self.t_in
        return dict(lanes=t.lanes, bits=t.bits, signed=t.signed)


class MaxPoolOp(_StreamOp):
    """MaxPool on a depthwise window stream ``(C/PE, K*K, PE)`` -> ``[OH, OW, C]``
    (:class:`hw.pool.MaxPool`, :func:`hw.golden.maxpool`); unsigned inputs only."""

    op = "MaxPool"
    finn_op = "Pool"
    depthwise_window_reader = True

    def analytic_cycles(self) -> int:
        a = self.attrs
        return a["pixels"] * a["kernel"] ** 2 * a["channels"] // self.pe

    def execute(self, inputs):
        win = inputs[0]
        if win.ndim == 3:  # flat window stream: restore (C/PE, K*K, PE)
            h, w, _ = win.shape
            win = win.reshape(h, w, self.attrs["channels"] // self.pe, self.attrs["kernel"] ** 2,
                              self.pe)
        return [golden.maxpool(win)]

    def build(self):
        from hw.pool import MaxPool

        t = self.t_in
        if t.signed:
            # the window generator pads with 0, which would win over negative values
            raise ValueError(f"layer {self.layer.name}: MaxPool needs an unsigned (post-ReLU) "
                             f"input, got int{t.bits}")
        return MaxPool(kernel=self.attrs["kernel"], channels=self.attrs["channels"],
                       **self._stream_args())

    def token_schedule(self, comp, arrivals, frames):
        c, p = S.maxpool_schedule(arrivals[0], taps=comp.taps)
        return [c], [p]


class UpsampleOp(_StreamOp):
    """Nearest-neighbour Upsample by ``factor`` through a ping-pong row buffer
    (:class:`hw.upsample.Upsample`, :func:`hw.golden.upsample_nearest`)."""

    op = "Upsample"
    finn_op = "UpsampleNearestNeighbour"
    has_memory = True

    def analytic_cycles(self) -> int:
        a = self.attrs
        h, w = a["ifm_dim"]
        return h * a["factor"] * w * a["factor"] * a["channels"] // self.pe

    def _component_cycles(self, comp) -> int:
        return comp.expected_cycles()

    def buffer_memory(self) -> tuple[int, int]:
        from hw.upsample import Upsample

        a, t = self.attrs, self.t_in
        return Upsample.buffer_memory(ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"],
                                      lanes=t.lanes, bits=t.bits)

    def resources(self, mult_style: str = "lut", mem_style: str = "auto") -> dict:
        """The ping-pong row buffer (:meth:`buffer_memory`) plus its address logic."""
        return pixel_buffer_resources(*self.buffer_memory(), mem_style)

    def execute(self, inputs):
        return [golden.upsample_nearest(inputs[0], self.attrs["factor"])]

    def build(self):
        from hw.upsample import Upsample

        a = self.attrs
        return Upsample(factor=a["factor"], ifm_dim=tuple(a["ifm_dim"]), channels=a["channels"],
                        ram_style=self.ram_style, **self._stream_args())

    def token_schedule(self, comp, arrivals, frames):
        c, p = S.upsample_schedule(arrivals[0], height=comp.height, row_beats=comp.row_words,
                                   factor=comp.factor)
        return [c], [p]


class ConcatOp(_StreamOp):
    """Channel Concat of ``n >= 2`` streams (:class:`hw.channel_ops.Concat`,
    :func:`hw.golden.concat`)."""

    op = "Concat"
    finn_op = "StreamingConcat"

    def pe_channel_counts(self) -> list[int]:
        return list(self.attrs["channels"]) + [sum(self.attrs["channels"])]

    def analytic_cycles(self) -> int:
        return self.attrs["pixels"] * sum(self.attrs["channels"]) // self.pe

    def execute(self, inputs):
        return [golden.concat(inputs)]

    def build(self):
        from hw.channel_ops import Concat

        return Concat(channels=list(self.attrs["channels"]), **self._stream_args())

    def ports(self, comp):
        return [getattr(comp, f"i{k}") for k in range(len(self.layer.inputs))], [comp.o]

    def token_schedule(self, comp, arrivals, frames):
        cs, p = S.concat_schedule(arrivals, beats=comp.beats)
        return cs, [p]


class ChannelSplitOp(_StreamOp):
    """ChannelSplit into ``sizes`` (:class:`hw.channel_ops.ChannelSplit`,
    :func:`hw.golden.channel_split`)."""

    op = "ChannelSplit"
    finn_op = "StreamingSplit"

    def pe_channel_counts(self) -> list[int]:
        return list(self.attrs["sizes"]) + [self.attrs["channels"]]

    def execute(self, inputs):
        return golden.channel_split(inputs[0], self.attrs["sizes"])

    def build(self):
        from hw.channel_ops import ChannelSplit

        return ChannelSplit(sizes=list(self.attrs["sizes"]), **self._stream_args())

    def ports(self, comp):
        return [comp.i], [getattr(comp, f"o{k}") for k in range(len(self.layer.outputs))]

    def token_schedule(self, comp, arrivals, frames):
        c, outs = S.split_schedule(arrivals[0], beats=comp.beats)
        return [c], outs


class ChannelShuffleOp(_StreamOp):
    """ShuffleNet ChannelShuffle through a banked ping-pong pixel buffer
    (:class:`hw.channel_ops.ChannelShuffle`, :func:`hw.golden.channel_shuffle`)."""

    op = "ChannelShuffle"
    finn_op = "ChannelShuffle"
    has_memory = True

    def buffer_memory(self) -> tuple[int, int]:
        from hw.channel_ops import ChannelShuffle

        t = self.t_in
        return ChannelShuffle.buffer_memory(channels=self.attrs["channels"], lanes=t.lanes,
                                            bits=t.bits)

    def buffer_read_ports(self) -> list[int]:
        from hw.channel_ops import ChannelShuffle

        return ChannelShuffle.read_ports(groups=self.attrs["groups"],
                                         channels=self.attrs["channels"], lanes=self.t_in.lanes)

    def read_crossbar(self) -> dict[str, list[int]]:
        from hw.channel_ops import ChannelShuffle

        return ChannelShuffle.crossbar(groups=self.attrs["groups"],
                                       channels=self.attrs["channels"], lanes=self.t_in.lanes)

    def resources(self, mult_style: str = "lut", mem_style: str = "auto") -> dict:
        """``PE`` banks of the memory the component builds, one copy per read port (LUTRAM
        replicates per read port; a simple-dual-port BRAM has one); LUTs: 50 of control, one
        ``addr_bits`` adder per lane counter, per read port and for the write address, and the
        read crossbar (``bits`` multiplexers of :func:`mux_luts` per output lane, ``addr_bits``
        per read port whose address comes from several lanes)."""
        r = empty_resources()
        depth, width = self.buffer_memory()
        ports = self.buffer_read_ports()
        xbar = self.read_crossbar()
        r["buffer_bits"] = len(ports) * depth * width
        copies = sum(ports)
        bram18, uram, lutram = memory_cost(depth, width, mem_style)
        r["bram18"], r["uram"], r["lutram_luts"] = copies * bram18, copies * uram, copies * lutram
        addr_bits = max(1, (depth - 1).bit_length())
        r["luts"] = (50 + (len(ports) + copies + 1) * addr_bits
                     + width * sum(mux_luts(n) for n in xbar["lane_inputs"])
                     + addr_bits * sum(mux_luts(n) for n in xbar["port_inputs"])
                     + r["lutram_luts"])
        return r

    def execute(self, inputs):
        return [golden.channel_shuffle(inputs[0], self.attrs["groups"])]

    def build(self):
        from hw.channel_ops import ChannelShuffle

        return ChannelShuffle(groups=self.attrs["groups"], channels=self.attrs["channels"],
                              ram_style=self.ram_style, **self._stream_args())

    def token_schedule(self, comp, arrivals, frames):
        c, p = S.channel_shuffle_schedule(arrivals[0], folds=comp.folds)
        return [c], [p]


class AddOp(_StreamOp):
    """Element-wise saturating Add of two streams of one scale (:class:`hw.channel_ops.Add`,
    :func:`hw.golden.add`)."""

    op = "Add"
    finn_op = "AddStreams"

    def execute(self, inputs):
        return [golden.add(inputs[0], inputs[1], self.attrs["out_bits"], self.attrs["signed"])]

    def build(self):
        from hw.channel_ops import Add

        t = self.t_in
        return Add(channels=self.t_out.shape[-1], lanes=t.lanes, in_bits=t.bits,
                   in_signed=t.signed, out_bits=self.attrs["out_bits"], out_signed=self.t_out.signed)

    def ports(self, comp):
        return [getattr(comp, f"i{k}") for k in range(len(self.layer.inputs))], [comp.o]

    def token_schedule(self, comp, arrivals, frames):
        cs, p = S.add_schedule(arrivals, latency=comp.LATENCY)
        return cs, [p]


class DuplicateOp(HWOp):
    """Duplicate: one stream to two consumers (:class:`hw.stream_utils.StreamDuplicator`)."""

    op = "Duplicate"
    finn_op = "DuplicateStreams"

    def out_lanes(self) -> int:
        return self.t_in.lanes

    def _component_cycles(self, comp) -> int:
        return comp.expected_cycles(self.t_in.beats_per_frame)

    def execute(self, inputs):
        return [inputs[0]] * len(self.layer.outputs)

    def build(self):
        from hw.stream_utils import StreamDuplicator

        return StreamDuplicator(self._payload_layout(self.t_in))

    def ports(self, comp):
        return [comp.i], [comp.o0, comp.o1]

    def token_schedule(self, comp, arrivals, frames):
        c, outs = S.duplicate_schedule(arrivals[0])
        return [c], outs


class WidthConverterOp(HWOp):
    """WidthConverter from ``in_lanes`` to ``out_lanes`` (inserted by folding where lane counts
    differ; :class:`hw.stream_utils.StreamWidthConverter`): the value sequence is unchanged."""

    op = "WidthConverter"
    finn_op = "StreamingDataWidthConverter"
    regroups_lanes = True

    def in_lanes(self, port: int) -> int:
        return self.attrs["in_lanes"]

    def analytic_cycles(self) -> int:
        a, t = self.attrs, self.t_in
        return max(t.values_per_frame // a["in_lanes"], t.values_per_frame // a["out_lanes"])

    def _component_cycles(self, comp) -> int:
        return comp.expected_cycles(self.t_in.beats_per_frame)

    def execute(self, inputs):
        return [inputs[0]]  # lane regrouping leaves the value sequence unchanged

    def build(self):
        from hw.stream_utils import StreamWidthConverter

        a = self.attrs
        return StreamWidthConverter(in_lanes=a["in_lanes"], out_lanes=a["out_lanes"],
                                    bits=a["bits"], signed=a["signed"])

    def token_schedule(self, comp, arrivals, frames):
        c, p = S.width_converter_schedule(arrivals[0], in_lanes=comp.in_lanes,
                                          out_lanes=comp.out_lanes)
        return [c], [p]
