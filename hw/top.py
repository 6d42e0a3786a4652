"""Top level: one Amaranth component per hardware layer of a folded :class:`~hw.graph.HWGraph`,
stitched with FIFOs, behind an AXI-Stream slave (input frames) and master (output frames).

Ports (Verilog names, AXI4-Stream as an AXI DMA expects them):

* ``s_axis_tdata`` / ``s_axis_tvalid`` / ``s_axis_tready``: input pixels NHWC, one beat =
  ``lanes`` channels of the input tensor, each in ``ceil(bits/8)`` bytes.
* ``m_axis_tdata`` / ``m_axis_tvalid`` / ``m_axis_tready`` / ``m_axis_tlast``: output values
  NHWC, one beat = ``lanes`` channels, each sign- or zero-extended to whole bytes; ``tlast`` on
  the last beat of every frame.
* ``cycle_count`` (32 bits): clock cycles since reset; ``frame_count`` (32 bits): output
  frames completed. (AXI-Lite access to them comes with the board flow.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.graph import HWGraph
from hw.ops import op_for


def _byte_width(bits: int) -> int:
    return 8 * math.ceil(bits / 8)


@dataclass(frozen=True)
class FifoProbe:
    """One inter-layer FIFO as the instrumented top level reports it.

    Attributes:
        tensor: the stream's tensor name (the FIFO is ``fifo_<tensor>`` in the hierarchy).
        producer, consumer: layer names at its two ends.
        depth: entries.
        level_bits: width of its level field in the ``dbg_fifo_level``/``dbg_fifo_max`` ports.
    """

    tensor: str
    producer: str
    consumer: str
    depth: int
    level_bits: int


class Accelerator(wiring.Component):
    """The whole streaming accelerator of a folded hardware graph.

    Args:
        graph: folded :class:`HWGraph` (the compiler's ``sw.compiler.folding.apply_folding``).
        fifo_depths: ``{tensor name: depth}`` for the FIFO on that stream; default 2.
            The offsets stream of a deformable sampler needs ``(N + 2) * W`` entries, since the
            sampler reads feature rows up to N ahead of the offsets it consumes
            (:func:`default_fifo_depths`). :func:`sim.fifosizing.size_fifos` finds depths by
            simulation.
        instrument: add simulation probes (they cost fabric, so bitstreams leave them out):

            * ``dbg_fifo_level`` / ``dbg_fifo_max``: current / highest level of every FIFO,
              ``level_bits`` each, in :attr:`fifo_probes` order (first FIFO in the LSBs);
            * ``dbg_fifo_full`` / ``dbg_fifo_starved``: one bit per FIFO, the producer is
              blocked by a full FIFO / the consumer is ready but the FIFO is empty;
            * ``dbg_mac_busy``: 32-bit count of the cycles in which each MVAU/VVAU issued a
              MAC step, in :attr:`busy_layers` order (FINN-style utilisation: busy cycles /
              frame cycles);
            * ``dbg_activity``: a beat moved through some inter-layer FIFO or some MAC array
              stepped in this cycle (the watchdog's notion of progress: a deep pipeline can go
              many thousand cycles between AXI-Stream beats while it fills).
    """

    def __init__(self, graph: HWGraph, fifo_depths: dict[str, int] | None = None,
                 instrument: bool = False):
        self.graph = graph
        self.fifo_depths = default_fifo_depths(graph) | (fifo_depths or {})
        self.instrument = instrument
        tin, tout = graph.tensors[graph.input], graph.tensors[graph.output]
        self.in_lane_bits, self.out_lane_bits = _byte_width(tin.bits), _byte_width(tout.bits)
        self.in_width = tin.lanes * self.in_lane_bits
        self.out_width = tout.lanes * self.out_lane_bits
        self.fifo_probes: list[FifoProbe] = []
        for layer in graph.layers:
            for t in layer.inputs:
                if t == graph.input:
                    continue
                producer = graph.producer(t)
                depth = self.fifo_depths.get(t, 2)
                self.fifo_probes.append(FifoProbe(t, producer.name if producer else "?",
                                                  layer.name, depth, depth.bit_length()))
        self.busy_layers = [layer.name for layer in graph.layers
                            if op_for(graph, layer).has_mac_array]
        ports = {
            "s_axis_tdata": In(self.in_width),
            "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1),
            "m_axis_tdata": Out(self.out_width),
            "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
            "cycle_count": Out(32),
            "frame_count": Out(32),
        }
        if instrument:
            level_width = max(1, sum(p.level_bits for p in self.fifo_probes))
            nfifo = max(1, len(self.fifo_probes))
            ports |= {
                "dbg_fifo_level": Out(level_width),
                "dbg_fifo_max": Out(level_width),
                "dbg_fifo_full": Out(nfifo),
                "dbg_fifo_starved": Out(nfifo),
                "dbg_mac_busy": Out(max(1, 32 * len(self.busy_layers))),
                "dbg_activity": Out(1),
            }
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        g = self.graph
        sources = {}  # tensor -> producing stream port
        sinks = {}  # tensor -> consuming stream port
        comps = {}
        for layer in g.layers:
            op = op_for(g, layer)
            comp = op.build()
            comps[layer.name] = comp
            m.submodules[layer.name] = comp
            ins, outs = op.ports(comp)
            for t, port in zip(layer.inputs, ins):
                sinks[t] = port
            for t, port in zip(layer.outputs, outs):
                sources[t] = port

        levels, maxes, fulls, starved, moves = [], [], [], [], []
        for probe in self.fifo_probes:
            fifo = self._connect(m, probe.tensor, sources[probe.tensor], sinks[probe.tensor])
            if self.instrument:
                level = Signal(probe.level_bits, name=f"lvl_{probe.tensor}")
                peak = Signal(probe.level_bits, name=f"max_{probe.tensor}")
                m.d.comb += level.eq(fifo.level)
                with m.If(level > peak):
                    m.d.sync += peak.eq(level)
                levels.append(level)
                maxes.append(peak)
                fulls.append(sources[probe.tensor].valid & ~fifo.w_rdy)
                starved.append(sinks[probe.tensor].ready & ~fifo.r_rdy)
                moves.append((fifo.w_en & fifo.w_rdy) | (fifo.r_en & fifo.r_rdy))
        if self.instrument:
            busy = []
            for name in self.busy_layers:
                count = Signal(32, name=f"busy_{name}")
                with m.If(comps[name].mac_active):
                    m.d.sync += count.eq(count + 1)
                busy.append(count)
            if levels:
                m.d.comb += [
                    self.dbg_fifo_level.eq(Cat(*levels)),
                    self.dbg_fifo_max.eq(Cat(*maxes)),
                    self.dbg_fifo_full.eq(Cat(*fulls)),
                    self.dbg_fifo_starved.eq(Cat(*starved)),
                ]
            if busy:
                m.d.comb += self.dbg_mac_busy.eq(Cat(*busy))
            # any beat through any inter-layer FIFO or any MAC step: the pipeline is alive
            macs = [comps[name].mac_active for name in self.busy_layers]
            if moves or macs:
                m.d.comb += self.dbg_activity.eq(Cat(*moves, *macs).any())

        # AXI-Stream input: strip byte padding of each lane
        tin = g.tensors[g.input]
        dst = sinks[g.input]
        lanes_in = [self.s_axis_tdata[i * self.in_lane_bits: i * self.in_lane_bits + tin.bits]
                    for i in range(tin.lanes)]
        m.d.comb += [
            dst.payload.eq(Cat(*lanes_in)),
            dst.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(dst.ready),
        ]

        # AXI-Stream output: sign/zero-extend each lane to bytes, tlast at the end of a frame
        tout = g.tensors[g.output]
        src = sources[g.output]
        lanes_out = [_extend(Value.cast(src.payload[i]), self.out_lane_bits, tout.signed)
                     for i in range(tout.lanes)]
        beats = tout.beats_per_frame
        beat = Signal(range(max(beats, 2)))
        last = beat == beats - 1
        m.d.comb += [
            self.m_axis_tdata.eq(Cat(*lanes_out)),
            self.m_axis_tvalid.eq(src.valid),
            src.ready.eq(self.m_axis_tready),
            self.m_axis_tlast.eq(last),
        ]
        with m.If(src.valid & self.m_axis_tready):
            with m.If(last):
                m.d.sync += [beat.eq(0), self.frame_count.eq(self.frame_count + 1)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        m.d.sync += self.cycle_count.eq(self.cycle_count + 1)
        return m

    def _connect(self, m, tensor, src, dst) -> SyncFIFOBuffered:
        src_shape, dst_shape = src.payload.shape(), dst.payload.shape()
        if src_shape != dst_shape:
            # same width but another element type (e.g. unsigned bits read as signed) would
            # pass the FIFO silently and corrupt values: refuse at elaboration instead
            producer, consumer = self.graph.producer(tensor), self.graph.consumers(tensor)
            raise ValueError(
                f"tensor {tensor}: {producer.name if producer else 'input'} writes {src_shape} "
                f"but {', '.join(c.name for c in consumer)} reads {dst_shape}")
        depth = self.fifo_depths.get(tensor, 2)
        width = Value.cast(src.payload).shape().width
        fifo = SyncFIFOBuffered(width=width, depth=depth)
        m.submodules[f"fifo_{tensor}"] = fifo
        m.d.comb += [
            fifo.w_data.eq(src.payload),
            fifo.w_en.eq(src.valid),
            src.ready.eq(fifo.w_rdy),
            dst.payload.eq(fifo.r_data),
            dst.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(dst.ready),
        ]
        return fifo


def _extend(v: Value, width: int, is_signed: bool) -> Value:
    """Sign- or zero-extend ``v`` to exactly ``width`` bits."""
    extra = width - len(v)
    if extra <= 0:
        return v[:width]
    fill = v[-1].replicate(extra) if is_signed else Const(0, extra)
    return Cat(v, fill)


def default_fifo_depths(graph: HWGraph) -> dict[str, int]:
    """FIFO depths that keep the pipeline deadlock-free: 2 everywhere, except where a layer's
    op class asks for more (:meth:`hw.ops.base.HWOp.default_fifo_depths`): the offsets input of
    each deformable sampler gets ``(N + 2) * W`` beats (rounded up to a power of two) because
    the sampler buffers feature rows up to N ahead of the offset it needs."""
    depths: dict[str, int] = {}
    for layer in graph.layers:
        depths |= op_for(graph, layer).default_fifo_depths()
    return depths
