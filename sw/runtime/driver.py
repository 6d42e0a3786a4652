"""One accelerator API, two backends: PYNQ on a Zynq board, RTL simulation on any machine.

:class:`AcceleratorDriver` sends uint8 NHWC frames, returns the integer output tensors and
reads the AXI4-Lite counters of :mod:`hw.control` (register map there). Its backend is

* :class:`PynqBackend`: ``pynq.Overlay`` of a bitstream built by ``deflow bitstream``, AXI DMA
  in simple mode (PG021; PYNQ's ``sendchannel``/``recvchannel``), buffers from
  ``pynq.allocate`` (physically contiguous), registers through the accelerator IP's MMIO.
* :class:`SimBackend`: the same transfers against the RTL of ``hw.control.AcceleratorSystem``
  under Verilator with cocotb (``sim/tb_driver.py``): every call is one simulation from reset.

Stream byte layout (:func:`pack_frames`): values in NHWC order (channels innermost), each value
little-endian in ``ceil(bits / 8)`` bytes (two's complement for signed tensors). An AXI-Stream
beat of ``lanes`` values is then simply ``lanes * ceil(bits/8)`` consecutive bytes, so the
layout in memory is the same whatever the DMA or accelerator stream width.

This file is copied beside the bitstream into the deploy folder and runs on the board's
Python 3 (PYNQ 3.x images): it needs only numpy (and pynq for :class:`PynqBackend`) at import
time; the simulation backend imports the project lazily.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# hw.control's register map (byte offsets). Duplicated here so the deploy folder needs no hw/;
# tests/test_driver.py checks both tables are equal.
REGISTERS: dict[str, int] = {
    "CTRL": 0x00, "STATUS": 0x04, "FRAME_COUNT": 0x08, "CYCLE_COUNT_LO": 0x0C,
    "CYCLE_COUNT_HI": 0x10, "LAST_FRAME_CYCLES": 0x14, "ID": 0x18, "GRAPH_HASH": 0x1C,
    "IN_FRAME_COUNT": 0x20, "SCRATCH": 0x24,
}
CTRL_CLEAR = 0x1
STATUS_BITS = {"busy": 0, "idle": 1, "out_wait": 2, "tlast_err": 3}
ID_MAGIC = 0xDEF1  # upper 16 bits of the ID register

SPEC_FILE = "accel.json"
"""Name of the :class:`AcceleratorSpec` JSON written beside a bitstream or compiled graph."""


class AcceleratorError(RuntimeError):
    """The accelerator or its backend misbehaved (wrong ID, DMA error, bad transfer)."""


class AcceleratorTimeout(AcceleratorError):
    """The hardware did not answer in time: an input not accepted or an output frame not
    produced within the cycle limit (simulation) or the time limit (board). The message names
    the frame and the STATUS flags read afterwards."""


class BackendUnavailable(AcceleratorError):
    """The backend cannot run here: no board (pynq cannot load a bitstream), no Verilator."""


@dataclass(frozen=True)
class StreamSpec:
    """Shape and integer type of one stream's frame.

    Attributes:
        shape: ``(H, W, C)`` of one frame.
        bits: bits per value (each sent in ``ceil(bits/8)`` bytes).
        signed: two's complement values.
        lanes: values per AXI-Stream beat of the accelerator port.
    """

    shape: tuple[int, ...]
    bits: int
    signed: bool
    lanes: int = 1

    @property
    def value_bytes(self) -> int:
        """Bytes per value on the stream: ``ceil(bits / 8)``."""
        return math.ceil(self.bits / 8)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame on the stream (and in a DMA buffer)."""
        return int(np.prod(self.shape)) * self.value_bytes

    @property
    def beat_bytes(self) -> int:
        """Bytes per AXI-Stream beat of the accelerator port (``lanes * value_bytes``)."""
        return self.lanes * self.value_bytes


@dataclass(frozen=True)
class AcceleratorSpec:
    """What software must know about a built accelerator (``accel.json``).

    Attributes:
        input, output: the two streams.
        graph_hash: expected GRAPH_HASH register value (hw.control.graph_hash).
        clock_mhz: fabric clock the design was built for (PS FCLK), MHz.
        ii_cycles: the compiler's expected initiation interval (cycles per frame).
        registers: register byte offsets (hw.control.REGISTERS).
        fill_cycles: bound on the first frame's pipeline fill: the sum of every layer's expected
            cycles per frame (as if each layer waited for its whole input; measured fills are
            2.6 x II on the slice and 5.1 x II on the small detector, both below it).
        output_scale: real value of one output LSB: a float (per-tensor quantiser), a list of
            ``C`` floats (per-channel quantiser, e.g. the detector's merged int8 heads), or
            None if the graph does not state it.
    """

    input: StreamSpec
    output: StreamSpec
    graph_hash: int
    clock_mhz: float
    ii_cycles: int
    registers: dict
    output_scale: float | list[float] | None = None
    fill_cycles: int | None = None

    def to_json(self) -> str:
        """The spec as the JSON text of ``accel.json``."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "AcceleratorSpec":
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        return cls(input=StreamSpec(**(d["input"] | {"shape": tuple(d["input"]["shape"])})),
                   output=StreamSpec(**(d["output"] | {"shape": tuple(d["output"]["shape"])})),
                   graph_hash=int(d["graph_hash"]), clock_mhz=float(d["clock_mhz"]),
                   ii_cycles=int(d["ii_cycles"]), registers=dict(d["registers"]),
                   output_scale=d.get("output_scale"), fill_cycles=d.get("fill_cycles"))

    @classmethod
    def load(cls, path) -> "AcceleratorSpec":
        """Read ``path`` (a JSON file, or a folder holding :data:`SPEC_FILE`).

        Raises:
            FileNotFoundError: no such file.
        """
        p = Path(path)
        if p.is_dir():
            p = p / SPEC_FILE
        if not p.exists():
            raise FileNotFoundError(f"accelerator description {p} not found "
                                    f"(written by `deflow bitstream` beside the .bit)")
        return cls.from_json(p.read_text())

    @classmethod
    def from_graph(cls, graph, clock_mhz: float) -> "AcceleratorSpec":
        """The spec of ``hw.control.AcceleratorSystem(graph)`` (imports the project)."""
        from hw.control import REGISTERS as HW_REGISTERS, graph_hash
        from sw.compiler.estimate import bottleneck, estimate

        def stream(t):
            return StreamSpec(tuple(int(s) for s in t.shape), int(t.bits), bool(t.signed),
                              int(t.lanes))

        est = estimate(graph)
        tout = graph.tensors[graph.output]
        scale = None
        if tout.scale is not None:
            s = np.asarray(tout.scale, dtype=np.float64).reshape(-1)
            scale = float(s[0]) if s.size == 1 else [float(v) for v in s]
        return cls(stream(graph.tensors[graph.input]), stream(tout),
                   graph_hash(graph), float(clock_mhz), int(bottleneck(est).cycles),
                   dict(HW_REGISTERS), scale, int(sum(e.cycles for e in est)))


# -- packing -------------------------------------------------------------------------------

def pack_frames(spec: StreamSpec, batch) -> np.ndarray:
    """NHWC integer frames -> the bytes the accelerator's input stream takes.

    Args:
        spec: the stream.
        batch: array ``[N, *spec.shape]`` (or one frame ``spec.shape``) of integers that fit
            ``spec.bits`` (unsigned, or signed if ``spec.signed``).

    Returns:
        uint8 array ``[N, spec.frame_bytes]``.

    Raises:
        ValueError: wrong shape, or a value outside the stream's integer range.
    """
    a = np.asarray(batch)
    if a.shape == tuple(spec.shape):
        a = a[None]
    if a.ndim != len(spec.shape) + 1 or a.shape[1:] != tuple(spec.shape):
        raise ValueError(f"frames must have shape [N, {', '.join(map(str, spec.shape))}] "
                         f"(NHWC), got {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"frames must be integers, got dtype {a.dtype}")
    lo, hi = ((-(1 << (spec.bits - 1)), (1 << (spec.bits - 1)) - 1) if spec.signed
              else (0, (1 << spec.bits) - 1))
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"frame values must lie in [{lo}, {hi}] ({spec.bits}-bit "
                         f"{'signed' if spec.signed else 'unsigned'}), got "
                         f"[{int(a.min())}, {int(a.max())}]")
    n = a.shape[0]
    v = a.astype(np.int64).reshape(n, -1) & ((1 << (8 * spec.value_bytes)) - 1)
    # little-endian bytes of each value, value after value (int64 -> 8 bytes, keep the low ones)
    raw = v.astype("<u8").view(np.uint8).reshape(n, -1, 8)[:, :, : spec.value_bytes]
    return np.ascontiguousarray(raw.reshape(n, spec.frame_bytes))


def unpack_frames(spec: StreamSpec, data) -> np.ndarray:
    """Inverse of :func:`pack_frames`: bytes (``bytes`` or a uint8 array ``[N, frame_bytes]``
    or flat) -> int64
    ``[N, *spec.shape]``, sign-extended for signed streams.

    Raises:
        ValueError: the byte count is not a whole number of frames.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(data, dtype=np.uint8)
    else:
        raw = np.asarray(data, dtype=np.uint8).reshape(-1)
    if raw.size % spec.frame_bytes:
        raise ValueError(f"{raw.size} bytes are not a whole number of frames of "
                         f"{spec.frame_bytes} bytes")
    nb = spec.value_bytes
    b = raw.reshape(-1, nb).astype(np.int64)
    vals = np.zeros(b.shape[0], dtype=np.int64)
    for i in range(nb):
        vals |= b[:, i] << (8 * i)
    if spec.signed:
        width = 8 * nb
        vals = np.where(vals >= 1 << (width - 1), vals - (1 << width), vals)
    return vals.reshape(-1, *spec.shape)


def decode_registers(regs: dict[str, int]) -> dict:
    """Register values (name -> 32-bit int) -> counters: ``frames``, ``in_frames``,
    ``cycles`` (64-bit), ``last_frame_cycles``, the STATUS flags, ``id``, ``graph_hash``."""
    status = regs["STATUS"]
    out = {
        "frames": regs["FRAME_COUNT"],
        "in_frames": regs["IN_FRAME_COUNT"],
        "cycles": regs["CYCLE_COUNT_LO"] | (regs["CYCLE_COUNT_HI"] << 32),
        "last_frame_cycles": regs["LAST_FRAME_CYCLES"],
        "id": regs["ID"],
        "graph_hash": regs["GRAPH_HASH"],
    }
    out |= {k: bool(status >> bit & 1) for k, bit in STATUS_BITS.items()}
    return out


def _status_text(c: dict) -> str:
    flags = [k for k in ("busy", "out_wait", "tlast_err") if c.get(k)]
    hint = (" (output not drained: the receiver holds tready low)" if c.get("out_wait") else
            " (waiting for input: a frame is incomplete)" if c.get("busy") else "")
    return (f"STATUS {'|'.join(flags) or 'idle'}{hint}; {c['in_frames']} input and "
            f"{c['frames']} output frame(s) counted")


# -- backends ------------------------------------------------------------------------------

class SimBackend:
    """RTL simulation of ``hw.control.AcceleratorSystem`` (Verilator + cocotb).

    Each :meth:`transfer` is one cocotb run from reset (the Verilator build is cached by
    ``sim.runner`` per Verilog hash): frames go in through cocotbext-axi's AxiStreamSource
    (``tlast`` on each frame's last beat), outputs come back through AxiStreamSink, and the
    registers are read over AXI4-Lite at the end.

    Args:
        source: a folded ``hw.graph.HWGraph``, or a folder written by ``deflow compile``
            (``hw_graph.json``, and ``fifo_depths.json`` when present).
        fifo_depths: passed to the accelerator (default: the compiled folder's, else the
            accelerator's own).
        clock_mhz: clock to convert cycles to fps (default 200 MHz, the UltraScale+ boards').
        cycle_limit: most cycles to wait for each output frame (after the previous one) before
            :class:`AcceleratorTimeout`; default ``4 * II + fill + 10000`` from the compiler's
            estimate (``fill``: :attr:`AcceleratorSpec.fill_cycles`, which bounds the first
            frame's pipeline fill).
        backpressure: probability of a cycle with ``m_axis_tready`` low (1.0: never drains).
        stall: probability of an idle input cycle.
        build_root: simulator build folder (default ``build/sim``).
    """

    TOPLEVEL = "deflow_system"

    def __init__(self, source, *, fifo_depths=None, clock_mhz: float = 200.0,
                 cycle_limit: int | None = None, backpressure: float = 0.0, stall: float = 0.0,
                 build_root=None):
        from hw.graph import HWGraph

        if isinstance(source, (str, os.PathLike)):
            p = Path(source)
            gpath = p / "hw_graph.json" if p.is_dir() else p
            if not gpath.exists():
                raise FileNotFoundError(f"{gpath} not found: give a folded HWGraph or a folder "
                                        f"written by `deflow compile`")
            source = HWGraph.load(gpath)
            dpath = gpath.with_name("fifo_depths.json")
            if fifo_depths is None and dpath.exists() and json.loads(dpath.read_text()) is not None:
                from hw.graph import load_depths

                fifo_depths = load_depths(dpath)  # the compiled design's FIFOs
        if not isinstance(source, HWGraph):
            raise TypeError(f"SimBackend needs an HWGraph or a compiled folder, got {type(source)}")
        for name, p in (("backpressure", backpressure), ("stall", stall)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        self.graph = source
        self.fifo_depths = fifo_depths
        self.spec = AcceleratorSpec.from_graph(source, clock_mhz)
        self.cycle_limit = int(cycle_limit or 4 * self.spec.ii_cycles
                               + (self.spec.fill_cycles or 0) + 10_000)
        self.backpressure, self.stall = backpressure, stall
        self.build_root = build_root
        self.last_registers: dict[str, int] | None = None
        self.last_cycles: list[int] = []
        self._system = None

    def load(self) -> None:
        """Elaborate the design (the Verilator build happens on the first transfer)."""
        from hw.control import AcceleratorSystem
        from sim.runner import prepare_simulator_env, SimulatorUnavailable

        try:
            prepare_simulator_env("verilator")
        except SimulatorUnavailable as exc:
            raise BackendUnavailable(str(exc)) from exc
        self._system = AcceleratorSystem(self.graph, self.fifo_depths)

    def transfer(self, frames: list[bytes], n_out: int) -> list[bytes]:
        """Send ``frames`` (raw stream bytes, one AXI-Stream packet each) and receive ``n_out``
        output frames.

        Raises:
            AcceleratorTimeout: an output frame did not complete within ``cycle_limit`` cycles
                of the previous one (the message carries the STATUS read afterwards).
        """
        import tempfile

        from sim.runner import DEFAULT_BUILD_ROOT, run_cocotb

        if self._system is None:
            self.load()
        with tempfile.TemporaryDirectory() as tmp:
            result_path = os.path.join(tmp, "result.json")
            config = {
                "frames": [list(bytes(f)) for f in frames],
                "n_out": n_out,
                "cycle_limit": self.cycle_limit,
                "registers": self.spec.registers,
                "backpressure": self.backpressure,
                "stall": self.stall,
                "result_path": result_path,
            }
            run_cocotb(self._system, self.TOPLEVEL, "sim.tb_driver", config,
                       build_root=Path(self.build_root or DEFAULT_BUILD_ROOT))
            if not os.path.exists(result_path):
                raise AcceleratorError("the driver testbench wrote no result")
            res = json.loads(Path(result_path).read_text())
        self.last_registers = res["registers"]
        self.last_cycles = res["frame_end_cycles"]
        if res["timeout"]:
            t = res["timeout"]
            raise AcceleratorTimeout(
                f"output frame {t['frame']} not complete after {t['waited']} cycles "
                f"(limit {self.cycle_limit}); {_status_text(decode_registers(res['registers']))}")
        return [bytes(o) for o in res["outputs"]]

    def read_registers(self) -> dict[str, int]:
        """Registers at the end of the last simulation (one empty run if there was none)."""
        if self.last_registers is None:
            self.transfer([], 0)
        return dict(self.last_registers)

    def clear_counters(self) -> None:
        """Nothing to do: every simulation starts from reset."""

    def close(self) -> None:
        """Drop the elaborated design (the Verilator build stays cached on disk)."""
        self._system = None


class PynqBackend:
    """A deflow bitstream on a Zynq board through PYNQ (3.x/4.x API).

    Args:
        bitfile: the ``.bit``; its ``.hwh`` and :data:`SPEC_FILE` must lie beside it (the
            deploy folder ``deflow bitstream`` writes).
        timeout_s: most seconds to wait for one DMA transfer before :class:`AcceleratorTimeout`.
        dma_name, accel_name: IP names in ``overlay.ip_dict``; default: the one AXI DMA and the
            one ``deflow_system`` module (found by their VLNV ``type``).

    Register offsets come from the ``.hwh`` through PYNQ's metadata parser
    (``ip_dict[name]["registers"]``) where it lists them; a Vivado module reference carries no
    register map in the ``.hwh``, so the offsets of :data:`SPEC_FILE` (= hw.control) fill in.
    """

    def __init__(self, bitfile, *, timeout_s: float = 5.0, dma_name: str | None = None,
                 accel_name: str | None = None):
        self.bitfile = Path(bitfile)
        self.timeout_s = float(timeout_s)
        self.dma_name, self.accel_name = dma_name, accel_name
        self.spec = None
        self.overlay = None
        self.last_wall_s = 0.0

    def load(self) -> None:
        """Program the PL with the bitstream and find the DMA and the accelerator.

        Raises:
            FileNotFoundError: the .bit, .hwh or accel.json is missing.
            BackendUnavailable: pynq is not installed or cannot load a bitstream here (no
                Zynq PL device: not running on a PYNQ board image).
            AcceleratorError: the design's ID or GRAPH_HASH register is not the expected one.
        """
        if not self.bitfile.exists():
            raise FileNotFoundError(f"bitstream {self.bitfile} not found")
        hwh = self.bitfile.with_suffix(".hwh")
        if not hwh.exists():
            raise FileNotFoundError(f"{hwh} not found: PYNQ needs the .hwh beside the .bit")
        self.spec = AcceleratorSpec.load(self.bitfile.parent)
        try:
            import pynq
        except ImportError as exc:
            raise BackendUnavailable("pynq is not installed: run on a PYNQ board image "
                                     "(or `pip install pynq`)") from exc
        try:
            self.overlay = pynq.Overlay(str(self.bitfile))
        except Exception as exc:  # pynq raises RuntimeError("No Devices Found") and others
            raise BackendUnavailable(
                f"pynq cannot load {self.bitfile.name} here ({type(exc).__name__}: {exc}); "
                f"PynqBackend needs a Zynq board running a PYNQ image: use SimBackend on this "
                f"machine") from exc
        ips = self.overlay.ip_dict
        self.dma_name = self.dma_name or _one_ip(ips, "axi_dma")
        self.accel_name = self.accel_name or _one_ip(ips, "deflow_system")
        self.dma = getattr(self.overlay, self.dma_name)
        self.mmio = pynq.MMIO(ips[self.accel_name]["phys_addr"], ips[self.accel_name]["addr_range"])
        hwh_regs = ips[self.accel_name].get("registers") or {}
        self.registers = dict(self.spec.registers) | {
            k: int(v["address_offset"]) for k, v in hwh_regs.items() if k in self.spec.registers}
        ident = self.mmio.read(self.registers["ID"])
        if ident >> 16 != ID_MAGIC:
            raise AcceleratorError(f"{self.accel_name}: ID register {ident:#010x} is not a deflow "
                                   f"accelerator (magic {ID_MAGIC:#06x})")
        gh = self.mmio.read(self.registers["GRAPH_HASH"])
        if gh != self.spec.graph_hash:
            raise AcceleratorError(f"GRAPH_HASH {gh:#010x} differs from {SPEC_FILE}'s "
                                   f"{self.spec.graph_hash:#010x}: bitstream and description "
                                   f"are from different builds")
        self._allocate = pynq.allocate

    def _wait(self, channel, what: str, frame: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not channel.idle:
            if channel.error:
                break  # channel.wait() raises PYNQ's message for the error bits
            if time.monotonic() > deadline:
                c = decode_registers(self.read_registers())
                raise AcceleratorTimeout(f"DMA {what} of frame {frame} not finished after "
                                         f"{self.timeout_s} s; {_status_text(c)}")
        channel.wait()

    def transfer(self, frames: list[bytes], n_out: int) -> list[bytes]:
        """One DMA packet per frame (MM2S sets tlast on each frame's last beat; S2MM ends a
        transfer at the accelerator's tlast, so each output frame is its own transfer). The
        send of frame i+1 overlaps the computation of frame i.

        Raises:
            AcceleratorTimeout: a transfer did not finish within ``timeout_s``.
        """
        if self.overlay is None:
            self.load()
        n_in = len(frames)
        ib, ob = self.spec.input.frame_bytes, self.spec.output.frame_bytes
        inbuf = self._allocate(shape=(max(n_in, 1), ib), dtype=np.uint8)
        outbuf = self._allocate(shape=(max(n_out, 1), ob), dtype=np.uint8)
        try:
            for i, f in enumerate(frames):
                inbuf[i, :] = np.frombuffer(bytes(f), dtype=np.uint8)
            inbuf.flush()
            send, recv = self.dma.sendchannel, self.dma.recvchannel
            t0 = time.perf_counter()
            if n_out:
                recv.transfer(outbuf[0])
            if n_in:
                send.transfer(inbuf[0])
            for i in range(max(n_in, n_out)):
                if i < n_in:
                    self._wait(send, "MM2S (input)", i)
                    if i + 1 < n_in:
                        send.transfer(inbuf[i + 1])
                if i < n_out:
                    self._wait(recv, "S2MM (output)", i)
                    if i + 1 < n_out:
                        recv.transfer(outbuf[i + 1])
            self.last_wall_s = time.perf_counter() - t0
            return [bytes(outbuf[i]) for i in range(n_out)]
        finally:
            inbuf.freebuffer()
            outbuf.freebuffer()

    def read_registers(self) -> dict[str, int]:
        """Every register of the map, read now over AXI4-Lite (MMIO)."""
        return {k: self.mmio.read(off) for k, off in self.registers.items()}

    def clear_counters(self) -> None:
        """Write CTRL.CLEAR: counters and sticky error bits to zero."""
        self.mmio.write(self.registers["CTRL"], CTRL_CLEAR)

    def close(self) -> None:
        """Forget the overlay (the PL keeps its configuration)."""
        self.overlay = None


def _one_ip(ip_dict: dict, type_part: str) -> str:
    names = [k for k, v in ip_dict.items() if type_part in str(v.get("type", ""))]
    if len(names) != 1:
        raise AcceleratorError(f"expected one IP of type *{type_part}* in the overlay, found "
                               f"{names or 'none'}; name it explicitly")
    return names[0]


# -- the API -------------------------------------------------------------------------------

class AcceleratorDriver:
    """Run frames through a deflow accelerator on either backend.

    Use as a context manager or call :meth:`load` / :meth:`close`.
    """

    def __init__(self, backend):
        self.backend = backend

    @property
    def spec(self) -> AcceleratorSpec:
        """The backend's :class:`AcceleratorSpec` (stream shapes, clock, registers)."""
        return self.backend.spec

    def load(self) -> "AcceleratorDriver":
        """Load the backend (program the PL, or elaborate the RTL); returns ``self``."""
        self.backend.load()
        return self

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()

    def infer(self, batch) -> np.ndarray:
        """Run a batch of frames.

        Args:
            batch: uint8 ``[N, H, W, C]`` (NHWC, the accelerator's input shape).

        Returns:
            int64 ``[N, H', W', C']``: the output integers (real value = scale x integer).

        Raises:
            ValueError: wrong shape or values out of range.
            AcceleratorTimeout: the hardware did not answer in time.
        """
        packed = pack_frames(self.spec.input, batch)
        out = self.backend.transfer([bytes(f) for f in packed], len(packed))
        return unpack_frames(self.spec.output, b"".join(out))

    def throughput(self, n_frames: int = 4, batch=None) -> dict:
        """Stream ``n_frames`` frames back to back and read the hardware counters.

        Returns:
            ``frames``; ``cycles_per_frame``: LAST_FRAME_CYCLES, the measured interval between
            the last two output frames (steady-state II, cycles); ``total_cycles``: cycle
            counter at the end; ``clock_mhz``; ``fps``: ``clock_mhz * 1e6 / cycles_per_frame``;
            on a board also ``wall_fps`` (frames / wall-clock seconds of the DMA loop).

        Raises:
            ValueError: fewer than 2 frames (one interval needs two frames).
        """
        if n_frames < 2:
            raise ValueError(f"throughput needs at least 2 frames, got {n_frames}")
        if batch is None:
            batch = np.zeros((1, *self.spec.input.shape), dtype=np.uint8)
        packed = pack_frames(self.spec.input, batch)
        frames = [bytes(packed[i % len(packed)]) for i in range(n_frames)]
        self.backend.clear_counters()
        self.backend.transfer(frames, n_frames)
        c = self.counters()
        cpf = c["last_frame_cycles"]
        res = {"frames": c["frames"], "cycles_per_frame": cpf, "total_cycles": c["cycles"],
               "clock_mhz": self.spec.clock_mhz,
               "fps": self.spec.clock_mhz * 1e6 / cpf if cpf else 0.0}
        wall = getattr(self.backend, "last_wall_s", 0.0)
        if wall:
            res["wall_fps"] = n_frames / wall
        return res

    def counters(self) -> dict:
        """The counters (:func:`decode_registers`) as the hardware holds them now (board) or
        at the end of the last simulation (SimBackend)."""
        return decode_registers(self.backend.read_registers())

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()
