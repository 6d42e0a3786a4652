"""AXI4-Lite control/status block and the board-level top :class:`AcceleratorSystem`.

amaranth 0.5 ships no AXI library, so the AXI4-Lite slave is written here (AMBA AXI and ACE
Protocol Specification, IHI 0022, part B "AXI4-Lite"): 32-bit data, byte addresses, one
transaction of each direction in flight, responses registered.

Register map (byte offsets from the base address the block design assigns; 32-bit words):

======  ==================  ====  ===========================================================
offset  name                access meaning
======  ==================  ====  ===========================================================
0x00    CTRL                RW    bit 0 CLEAR: write 1 to zero every counter and the sticky
                                  error bits (self-clearing, reads 0). bits 31:1 USER: free,
                                  read back as written (the driver keeps nothing there).
0x04    STATUS              RO    bit 0 BUSY: a frame was started on s_axis and its output
                                  frame has not yet left m_axis; bit 1 IDLE = not BUSY;
                                  bit 2 OUT_WAIT: m_axis_tvalid high while m_axis_tready low
                                  (the receiver, e.g. the DMA S2MM channel, is not draining);
                                  bit 3 TLAST_ERR (sticky): s_axis_tlast arrived on a beat
                                  other than the last beat of an input frame, or did not
                                  arrive on it.
0x08    FRAME_COUNT         RO    output frames completed (tlast beats on m_axis).
0x0C    CYCLE_COUNT_LO      RO    bits 31:0 of the 64-bit clock-cycle counter; reading it
                                  latches bits 63:32 for CYCLE_COUNT_HI (read LO first).
0x10    CYCLE_COUNT_HI      RO    bits 63:32 latched by the last read of CYCLE_COUNT_LO.
0x14    LAST_FRAME_CYCLES   RO    cycles between the last two output tlast beats: the measured
                                  initiation interval (0 until two frames have completed).
0x18    ID                  RO    :data:`ID_VALUE` (``0xDEF1`` magic, major, minor version).
0x1C    GRAPH_HASH          RO    first 32 bits of SHA-256 of the hardware graph's JSON
                                  (:func:`graph_hash`): which network the bitstream holds.
0x20    IN_FRAME_COUNT      RO    input frames accepted completely on s_axis.
0x24    SCRATCH             RW    32 free bits (bus check; honours WSTRB).
======  ==================  ====  ===========================================================

Writes to read-only registers are accepted (BRESP OKAY) and ignored. Any access to an offset
not in the table (up to the 6-bit address window, 0x00..0x3F) answers SLVERR (``0b10``), reads
with data 0. Offsets are word-aligned; address bits 1:0 are ignored.
"""

from __future__ import annotations

import hashlib
import json

from amaranth import Cat, ClockDomain, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.graph import HWGraph

ADDR_BITS = 6
"""Width of ``s_axi_control_awaddr``/``araddr``: a 64-byte register window."""

ID_VALUE = 0xDEF1_0100
"""Contents of the ID register: magic ``0xDEF1``, version 1.0 (major byte, minor byte)."""

RESP_OKAY = 0b00
RESP_SLVERR = 0b10

REGISTERS: dict[str, int] = {
    "CTRL": 0x00,
    "STATUS": 0x04,
    "FRAME_COUNT": 0x08,
    "CYCLE_COUNT_LO": 0x0C,
    "CYCLE_COUNT_HI": 0x10,
    "LAST_FRAME_CYCLES": 0x14,
    "ID": 0x18,
    "GRAPH_HASH": 0x1C,
    "IN_FRAME_COUNT": 0x20,
    "SCRATCH": 0x24,
}
"""Register byte offsets (the table of the module docstring); the driver reads these names
from the ``.hwh`` when PYNQ exposes them and falls back to this table."""

CTRL_CLEAR = 1 << 0
STATUS_BUSY, STATUS_IDLE, STATUS_OUT_WAIT, STATUS_TLAST_ERR = 1 << 0, 1 << 1, 1 << 2, 1 << 3


def graph_hash(graph: HWGraph) -> int:
    """First 32 bits (big-endian) of SHA-256 over the graph's canonical JSON (sorted keys, no
    spaces): the GRAPH_HASH register value, so software can check it drives the network it
    was compiled for."""
    text = json.dumps(graph.to_json(), sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def axi_lite_signature(addr_bits: int = ADDR_BITS) -> dict:
    """Ports of an AXI4-Lite slave named ``s_axi_control_*`` (slave direction)."""
    p = "s_axi_control_"
    return {
        p + "awaddr": In(addr_bits), p + "awvalid": In(1), p + "awready": Out(1),
        p + "wdata": In(32), p + "wstrb": In(4), p + "wvalid": In(1), p + "wready": Out(1),
        p + "bresp": Out(2), p + "bvalid": Out(1), p + "bready": In(1),
        p + "araddr": In(addr_bits), p + "arvalid": In(1), p + "arready": Out(1),
        p + "rdata": Out(32), p + "rresp": Out(2), p + "rvalid": Out(1), p + "rready": In(1),
    }


class ControlBlock(wiring.Component):
    """AXI4-Lite slave with the register map of the module docstring (``sync`` domain).

    Inputs from the stream ports are observed, never driven: ``in_beat``/``in_last``
    (an s_axis beat accepted, and its tlast), ``out_beat``/``out_last`` (an m_axis beat
    accepted, and its tlast), ``out_wait`` (m_axis valid without ready).

    Args:
        in_beats_per_frame: s_axis beats in one input frame (for BUSY, IN_FRAME_COUNT and
            TLAST_ERR).
        graph_hash_value: 32-bit GRAPH_HASH contents.
    """

    def __init__(self, in_beats_per_frame: int, graph_hash_value: int):
        if in_beats_per_frame < 1:
            raise ValueError(f"in_beats_per_frame must be >= 1, got {in_beats_per_frame}")
        self.in_beats_per_frame = in_beats_per_frame
        self.graph_hash_value = graph_hash_value & 0xFFFF_FFFF
        super().__init__(axi_lite_signature() | {
            "in_beat": In(1), "in_last": In(1), "out_beat": In(1), "out_last": In(1),
            "out_wait": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = "s_axi_control_"
        bus = {k[len(p):]: v for k, v in self.signature.members.items() if k.startswith(p)}
        s = {name: getattr(self, p + name) for name in bus}

        # -- counters -----------------------------------------------------------------------
        clear = Signal()
        cycles = Signal(64)
        cycles_hi_latch = Signal(32)
        frames = Signal(32)
        in_frames = Signal(32)
        last_end = Signal(64)  # cycle of the last output tlast
        seen_end = Signal()
        last_frame_cycles = Signal(32)
        in_beat_idx = Signal(range(max(self.in_beats_per_frame, 2)))
        in_flight = Signal(32)  # frames started on s_axis minus frames finished on m_axis
        tlast_err = Signal()
        ctrl_reg = Signal(32)  # bit 0 (CLEAR) is a pulse: never read back
        scratch = Signal(32)

        started = self.in_beat & (in_beat_idx == 0)
        finished = self.out_beat & self.out_last
        in_frame_end = in_beat_idx == self.in_beats_per_frame - 1

        with m.If(clear):
            m.d.sync += [cycles.eq(0), frames.eq(0), in_frames.eq(0), seen_end.eq(0),
                         last_frame_cycles.eq(0), tlast_err.eq(0)]
        with m.Else():
            m.d.sync += cycles.eq(cycles + 1)
            with m.If(finished):
                m.d.sync += [frames.eq(frames + 1), last_end.eq(cycles), seen_end.eq(1)]
                with m.If(seen_end):
                    m.d.sync += last_frame_cycles.eq(cycles - last_end)
            with m.If(self.in_beat):
                with m.If(in_frame_end):
                    m.d.sync += in_frames.eq(in_frames + 1)
                with m.If(self.in_last != in_frame_end):
                    m.d.sync += tlast_err.eq(1)
        # frame position and in-flight count are stream state, not statistics: CLEAR keeps them
        with m.If(self.in_beat):
            m.d.sync += in_beat_idx.eq(Const(0) if self.in_beats_per_frame == 1 else
                                      _wrap_inc(in_beat_idx, self.in_beats_per_frame))
        m.d.sync += in_flight.eq(in_flight + started - finished)
        busy = (in_flight != 0) | (in_beat_idx != 0)
        status = Cat(busy, ~busy, self.out_wait, tlast_err)

        # -- write channel ------------------------------------------------------------------
        aw_full = Signal()
        w_full = Signal()
        aw_addr = Signal(ADDR_BITS)
        w_data = Signal(32)
        w_strb = Signal(4)
        m.d.comb += [s["awready"].eq(~aw_full & ~s["bvalid"]),
                     s["wready"].eq(~w_full & ~s["bvalid"])]
        with m.If(s["awvalid"] & s["awready"]):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(s["awaddr"])]
        with m.If(s["wvalid"] & s["wready"]):
            m.d.sync += [w_full.eq(1), w_data.eq(s["wdata"]), w_strb.eq(s["wstrb"])]
        with m.If(s["bvalid"] & s["bready"]):
            m.d.sync += s["bvalid"].eq(0)
        with m.If(aw_full & w_full & ~s["bvalid"]):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), s["bvalid"].eq(1)]
            waddr = aw_addr[2:]
            known = Signal()
            m.d.comb += known.eq(0)
            for off in REGISTERS.values():
                with m.If(waddr == off >> 2):
                    m.d.comb += known.eq(1)
            m.d.sync += s["bresp"].eq(Mux(known, RESP_OKAY, RESP_SLVERR))
            with m.If(waddr == REGISTERS["CTRL"] >> 2):
                with m.If(w_strb[0]):
                    m.d.comb += clear.eq(w_data[0])
            for name, reg in (("CTRL", ctrl_reg), ("SCRATCH", scratch)):
                with m.If(waddr == REGISTERS[name] >> 2):
                    for b in range(4):
                        with m.If(w_strb[b]):
                            m.d.sync += reg[8 * b: 8 * b + 8].eq(w_data[8 * b: 8 * b + 8])

        # -- read channel -------------------------------------------------------------------
        m.d.comb += s["arready"].eq(~s["rvalid"])
        with m.If(s["rvalid"] & s["rready"]):
            m.d.sync += s["rvalid"].eq(0)
        with m.If(s["arvalid"] & s["arready"]):
            raddr = s["araddr"][2:]
            m.d.sync += [s["rvalid"].eq(1), s["rresp"].eq(RESP_SLVERR), s["rdata"].eq(0)]
            values = {
                "CTRL": Cat(Const(0, 1), ctrl_reg[1:]),
                "STATUS": status,
                "FRAME_COUNT": frames,
                "CYCLE_COUNT_LO": cycles[:32],
                "CYCLE_COUNT_HI": cycles_hi_latch,
                "LAST_FRAME_CYCLES": last_frame_cycles,
                "ID": Const(ID_VALUE, 32),
                "GRAPH_HASH": Const(self.graph_hash_value, 32),
                "IN_FRAME_COUNT": in_frames,
                "SCRATCH": scratch,
            }
            with m.Switch(raddr):
                for name, off in REGISTERS.items():
                    with m.Case(off >> 2):
                        m.d.sync += [s["rdata"].eq(values[name]), s["rresp"].eq(RESP_OKAY)]
                        if name == "CYCLE_COUNT_LO":
                            m.d.sync += cycles_hi_latch.eq(cycles[32:])
        return m


def _wrap_inc(v, n: int):
    return Mux(v == n - 1, 0, v + 1)


class AcceleratorSystem(wiring.Component):
    """:class:`hw.top.Accelerator` plus :class:`ControlBlock`, with the port names Vivado's
    module-reference flow infers interfaces from (UG994, "Inferring AXI interfaces"):

    * ``ap_clk``: the one clock; ``ap_rst_n``: active-low synchronous reset (as
      ``proc_sys_reset``'s ``peripheral_aresetn`` drives it; synchronous to ``ap_clk``).
    * ``s_axis_tdata/tvalid/tready/tlast``: input frames (AXI4-Stream slave, e.g. from the DMA
      MM2S channel); ``tlast`` is checked (STATUS.TLAST_ERR), not needed for framing.
    * ``m_axis_tdata/tvalid/tready/tlast``: output frames (AXI4-Stream master, to S2MM).
    * ``s_axi_control_*``: the AXI4-Lite register block (:data:`REGISTERS`).

    Stream data widths are those of the Accelerator (lanes x whole bytes, see hw/top.py);
    ``in_width``/``out_width`` give them in bits.

    Args:
        graph: folded :class:`~hw.graph.HWGraph`.
        fifo_depths: passed to :class:`hw.top.Accelerator`.
    """

    def __init__(self, graph: HWGraph, fifo_depths: dict[str, int] | None = None):
        from hw.top import Accelerator

        self.graph = graph
        self.accel = Accelerator(graph, fifo_depths)
        self.in_width, self.out_width = self.accel.in_width, self.accel.out_width
        self.in_beats_per_frame = graph.tensors[graph.input].beats_per_frame
        self.graph_hash = graph_hash(graph)
        super().__init__({
            "ap_clk": In(1),
            "ap_rst_n": In(1),
            "s_axis_tdata": In(self.in_width), "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1), "s_axis_tlast": In(1),
            "m_axis_tdata": Out(self.out_width), "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1), "m_axis_tlast": Out(1),
        } | axi_lite_signature())
        # Vivado reads these to associate the clock with the bus interfaces and to know the
        # reset polarity (UG994, X_INTERFACE_PARAMETER attributes on module-reference ports)
        self.ap_clk.attrs["X_INTERFACE_PARAMETER"] = \
            "ASSOCIATED_BUSIF s_axis:m_axis:s_axi_control, ASSOCIATED_RESET ap_rst_n"
        self.ap_rst_n.attrs["X_INTERFACE_PARAMETER"] = "POLARITY ACTIVE_LOW"

    def elaborate(self, platform):
        m = Module()
        # the whole design runs in `sync`, clocked by ap_clk and reset by ~ap_rst_n
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.ap_clk), cd.rst.eq(~self.ap_rst_n)]
        m.submodules.accel = a = self.accel
        m.submodules.control = c = ControlBlock(self.in_beats_per_frame, self.graph_hash)
        m.d.comb += [
            a.s_axis_tdata.eq(self.s_axis_tdata),
            a.s_axis_tvalid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(a.s_axis_tready),
            self.m_axis_tdata.eq(a.m_axis_tdata),
            self.m_axis_tvalid.eq(a.m_axis_tvalid),
            self.m_axis_tlast.eq(a.m_axis_tlast),
            a.m_axis_tready.eq(self.m_axis_tready),
            c.in_beat.eq(self.s_axis_tvalid & a.s_axis_tready),
            c.in_last.eq(self.s_axis_tlast),
            c.out_beat.eq(a.m_axis_tvalid & self.m_axis_tready),
            c.out_last.eq(a.m_axis_tlast),
            c.out_wait.eq(a.m_axis_tvalid & ~self.m_axis_tready),
        ]
        for name in axi_lite_signature():
            port, inner = getattr(self, name), getattr(c, name)
            if self.signature.members[name].flow == In:
                m.d.comb += inner.eq(port)
            else:
                m.d.comb += port.eq(inner)
        return m
