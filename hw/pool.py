"""Max pooling on the depthwise window stream (FINN's StreamingMaxPool on an SWG's output).

The sliding window generator (``hw.window.SlidingWindowGenerator(depthwise=True)``) already
turns the feature map into windows; pooling is then a running max over the ``K*K`` beats of
each channel fold, one comparator per lane.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth import signed as signed_shape  # `signed` is a constructor argument below
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MaxPool"]


class MaxPool(wiring.Component):
    """Max over the ``K*K`` taps of every channel of a depthwise window stream.

    Parameters:
        kernel: K (square window); the stream carries ``K*K`` taps per fold.
        channels: C; ``C % lanes == 0``.
        lanes: PE, the lanes of the window stream (= the SWG's ``lanes``).
        bits, signed: element type. The contract pools unsigned (post-ReLU) tensors only,
            because the SWG pads with 0 (``hw.golden.maxpool``); ``signed=True`` computes the
            signed max of the window as given.

    Streams (docs/hw_conventions.md):
        ``i``: ``ArrayLayout(type, PE)`` in depthwise window order
            ``sliding_window(..., depthwise=True, lanes=PE)``: per output pixel ``C/PE`` folds,
            each ``K*K`` beats.
        ``o``: ``ArrayLayout(type, PE)``: per output pixel ``C/PE`` beats, lane ``j`` of beat
            ``f`` = ``hw.golden.maxpool(windows)[..., f*PE + j]``.

    Datapath: a running-max register per lane (loaded on tap 0), and an output register
    written on the last tap; ``i.ready`` is low only on a last tap while the output register
    is full and not being taken.

    Cycles (:meth:`expected_cycles`): ``pixels * K*K * C/PE`` (one input beat per cycle, the
    contract's formula) plus 1 (output register).
    """

    def __init__(self, *, kernel: int, channels: int, lanes: int, bits: int = 8,
                 signed: bool = False):
        if kernel < 1:
            raise ValueError(f"MaxPool: kernel must be >= 1, got {kernel}")
        if lanes < 1 or channels % lanes:
            raise ValueError(f"MaxPool: channels {channels} not divisible by lanes (PE) {lanes}")
        if bits < 1:
            raise ValueError(f"MaxPool: bits must be >= 1, got {bits}")
        self.kernel, self.channels, self.lanes = kernel, channels, lanes
        self.bits, self.is_signed = bits, signed
        self.taps = kernel * kernel
        self.folds = channels // lanes
        shape = signed_shape(bits) if signed else unsigned(bits)
        lay = data.ArrayLayout(shape, lanes)
        super().__init__({"i": In(stream.Signature(lay)), "o": Out(stream.Signature(lay))})

    def expected_cycles(self, pixels: int) -> int:
        """Stall-free cycles for ``pixels`` output pixels, first input to last output inclusive."""
        return pixels * self.taps * self.folds + 1

    def elaborate(self, platform):
        m = Module()
        tap = Signal(range(self.taps))
        acc = Signal.like(self.i.payload)
        o_valid = Signal()
        out = Signal.like(self.o.payload)
        last = tap == self.taps - 1
        m.d.comb += [
            self.i.ready.eq(~last | ~o_valid | self.o.ready),
            self.o.valid.eq(o_valid),
            self.o.payload.eq(out),
        ]
        fire = self.i.valid & self.i.ready
        # max of the running value and the new beat, per lane (tap 0 starts afresh)
        new = Signal.like(self.i.payload)
        for j in range(self.lanes):
            x, a = self.i.payload[j], acc[j]
            m.d.comb += new[j].eq(Mux((tap == 0) | (x > a), x, a))
        with m.If(fire):
            m.d.sync += [acc.eq(new), tap.eq(Mux(last, 0, tap + 1))]
        with m.If(fire & last):
            m.d.sync += [out.eq(new), o_valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += o_valid.eq(0)
        return m
