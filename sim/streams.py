"""The testbench base of deflow's cocotb testbenches: clock, reset, stream drivers, monitor.

Every testbench in ``sim/`` is built on :class:`StreamTB`, in the style of cocotbext-axi's own
testbenches: a TB object owns the clock, the reset, one cocotbext-axi
:class:`~cocotbext.axi.AxiStreamSource` per input stream and one
:class:`~cocotbext.axi.AxiStreamSink` per output stream, a monitor that stamps every accepted
beat with its clock cycle, and idle / back-pressure inserters given to the drivers with
cocotbext-axi's ``set_pause_generator`` (seeded random generators or ``itertools.cycle``
patterns, :func:`pause_generator`).

Two kinds of stream port are driven, found by their signal names:

* Amaranth ``lib.stream`` ports. Amaranth flattens a port ``i`` into ``i__valid``, ``i__ready``
  and ``i__payload``; a payload of ``lanes`` values of ``width`` bits is one flat vector with
  lane 0 in the least significant bits (``data.ArrayLayout`` order, :func:`pack_lanes`).
  cocotbext-axi's AXI-Stream drivers fit these ports as they are: :class:`AmaranthStreamBus`
  maps ``tdata``/``tvalid``/``tready`` to ``payload``/``valid``/``ready``; the drivers are
  given ``byte_size`` = payload width (any width: there is no ``tkeep``), so a "byte" is a
  whole beat and a frame is a list of packed beats; without ``tlast`` the sink delivers every
  beat as a frame of one word.
* AXI-Stream ports (``<prefix>_tdata``, ``_tvalid``, ``_tready``, ``_tlast``) of the
  accelerator's top level: frames are bytes, one packet per frame.

Options: one set for every testbench and every test that launches one. A run of a testbench
is a dict ``{"stall": spec, "backpressure": spec, "seed": int}``: ``stall`` pauses the input
sources (valid held low), ``backpressure`` the output sinks (ready held low). A spec is a
probability per cycle (a float in [0, 1]), a 0/1 pattern repeated forever (a list), or a dict
``{port: probability or pattern}`` (ports it does not name are not paused; ports the testbench
does not drive are ignored, so one run list serves designs with and without an optional port).
Every port's random generator is seeded from ``(seed, port)``, so runs are reproducible.

Cycles are counted as FINN's rtlsim does and ``docs/hw_conventions.md`` asks: the monitor stamps
a handshake with the index of the clock edge that samples it, edge 0 being the first edge with
reset released; a layer's ``cycles`` run from the edge of its first accepted input beat to the
edge of its last accepted output beat, both inclusive (a combinational pass-through of one beat
is 1 cycle).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
from typing import Iterator, Sequence

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, RisingEdge, Timer, gather, select
from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiResp, AxiStreamBus, AxiStreamFrame,
                           AxiStreamSink, AxiStreamSource)

#: clock period of every testbench (ns); ``sw/flows/bench.py`` converts sim time with it
CLOCK_NS = 10
#: cycles with every ready high after the expected beats, in which a stray extra beat fails
QUIET_CYCLES = 32


def pack_lanes(values: Sequence[int], width: int) -> int:
    """Pack lane values (lane 0 first; negative values in two's complement) into one int."""
    mask = (1 << width) - 1
    word = 0
    for lane, v in enumerate(values):
        word |= (int(v) & mask) << (lane * width)
    return word


def unpack_lanes(word: int, width: int, lanes: int, signed: bool) -> list[int]:
    """Inverse of :func:`pack_lanes`."""
    mask = (1 << width) - 1
    out = []
    for lane in range(lanes):
        v = (word >> (lane * width)) & mask
        if signed and v >> (width - 1):
            v -= 1 << width
        out.append(v)
    return out


class AmaranthStreamBus(AxiStreamBus):
    """cocotbext-axi's AXI-Stream bus on an Amaranth ``lib.stream`` port ``<prefix>__*``:
    ``tdata`` is ``payload``, ``tvalid`` is ``valid``, ``tready`` is ``ready``."""

    _signals = {"tdata": "payload"}
    _optional_signals = {"tvalid": "valid", "tready": "ready"}

    def __init__(self, entity, prefix: str, **kwargs):
        super().__init__(entity, prefix, bus_separator="__", **kwargs)


def stream_bus(dut, port: str) -> AxiStreamBus:
    """The cocotbext-axi bus of stream ``port``: Amaranth (``port__payload``) or AXI-Stream
    (``port_tdata``).

    Raises:
        ValueError: ``dut`` has neither signal.
    """
    if hasattr(dut, f"{port}__payload"):
        return AmaranthStreamBus(dut, port)
    if hasattr(dut, f"{port}_tdata"):
        return AxiStreamBus.from_prefix(dut, port)
    raise ValueError(f"{dut._name} has no stream port {port!r} "
                     f"(neither {port}__payload nor {port}_tdata)")


def pause_generator(spec, seed: str) -> Iterator[bool] | None:
    """cocotbext-axi pause generator (one bool per clock cycle, True = paused) from a spec.

    Args:
        spec: a probability in [0, 1] (each cycle paused at random with it, ``random.Random``
            seeded with ``seed``), or a sequence of 0/1 repeated forever (``itertools.cycle``).
        seed: seed of the random generator (a string: ``random`` hashes it deterministically).

    Returns:
        the generator, or ``None`` when the spec never pauses (0, or a pattern of zeros).

    Raises:
        ValueError: a probability outside [0, 1] or a pattern with values other than 0/1.
    """
    if isinstance(spec, (list, tuple)):
        if not spec or any(v not in (0, 1) for v in spec):
            raise ValueError(f"pause pattern {spec!r}: expected a non-empty list of 0/1")
        return itertools.cycle(bool(v) for v in spec) if any(spec) else None
    prob = float(spec)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"pause probability {spec!r} is outside [0, 1]")
    if prob == 0.0:
        return None
    rng = random.Random(seed)
    return (rng.random() < prob for _ in itertools.repeat(None))


def port_spec(option, port: str):
    """The pause spec of ``port`` in a ``stall`` / ``backpressure`` option (see the module)."""
    if isinstance(option, dict):
        return option.get(port, 0.0)
    return 0.0 if option is None else option


def stall_free(run: dict) -> bool:
    """True when a run pauses no port (its measured cycles are the design's own)."""
    def free(option) -> bool:
        specs = option.values() if isinstance(option, dict) else [option]
        return all(not any(s) if isinstance(s, (list, tuple)) else float(s or 0) == 0
                   for s in specs)
    return free(run.get("stall", 0.0)) and free(run.get("backpressure", 0.0))


def worst_slowdown(run: dict) -> float:
    """1 / (1 - the highest pause probability of a run): the slowdown a cycle budget allows."""
    probs = []
    for option in (run.get("stall", 0.0), run.get("backpressure", 0.0)):
        for s in (option.values() if isinstance(option, dict) else [option]):
            probs.append(sum(s) / len(s) if isinstance(s, (list, tuple)) else float(s or 0))
    return 1.0 / max(1e-3, 1.0 - max(probs, default=0.0))


class StreamTimeout(AssertionError):
    """The design did not finish within the testbench's cycle budget."""


class StreamStall(AssertionError):
    """The watchdog saw nothing move for its number of cycles (message: its diagnosis)."""


class StreamTB:
    """Clock, reset, stream drivers and a cycle-stamping monitor around one DUT.

    Args:
        dut: the cocotb handle of the top level.
        inputs: stream ports the testbench drives (one AxiStreamSource each).
        outputs: stream ports the testbench drains (one AxiStreamSink each).
        clock: clock signal name; the clock starts at once with period :data:`CLOCK_NS`.
        reset: reset signal name. reset_active_level: 1 for ``rst``, 0 for ``ap_rst_n``.
        watchdog_cycles: with ``diagnose``, fail (:class:`StreamStall`) when nothing moves for
            this many cycles: no beat on a stream port, no ``activity`` signal high.
        activity: optional 1-bit signal that counts as movement (a probe inside the design).
        diagnose: ``() -> str``, the diagnosis put in the watchdog's message.
        axil: prefix of an AXI4-Lite slave port: :meth:`read` / :meth:`write` then go through
            a cocotbext-axi :class:`~cocotbext.axi.AxiLiteMaster`; ``registers`` maps names to
            byte offsets for them.
        watch: ``{name: (valid, ready, data or None)}``: further handshakes (signal names) the
            monitor stamps like stream beats, recording ``data`` in ``values[name]``.

    After :meth:`reset`, ``beats[port]`` lists the cycle of every accepted beat on every port
    (inputs, outputs, watched handshakes) and ``ends[port]`` the cycles of beats with
    ``tlast`` (AXI ports).
    The drivers are cocotbext-axi's and follow the reset signal: asserting it stops them
    and drops what they hold.
    """

    def __init__(self, dut, inputs: Sequence[str] = (), outputs: Sequence[str] = (), *,
                 clock: str = "clk", reset: str = "rst", reset_active_level: int = 1,
                 watchdog_cycles: int = 0, activity=None, diagnose=None,
                 axil: str | None = None, registers: dict[str, int] | None = None,
                 watch: dict[str, tuple] | None = None):
        self.dut = dut
        self.clk = getattr(dut, clock)
        self.rst = getattr(dut, reset)
        self.rst_active = int(reset_active_level)
        cocotb.start_soon(Clock(self.clk, CLOCK_NS, unit="ns").start())
        self.rst.value = self.rst_active
        kw = {"reset_active_level": bool(self.rst_active)}
        self.sources: dict[str, AxiStreamSource] = {}
        self.sinks: dict[str, AxiStreamSink] = {}
        for ports, cls, table in ((inputs, AxiStreamSource, self.sources),
                                  (outputs, AxiStreamSink, self.sinks)):
            for port in ports:
                # cocotbext-axi logs every frame at INFO; a beat is a frame on Amaranth ports
                logging.getLogger(f"cocotb.{dut._name}.{port}").setLevel(logging.WARNING)
                bus = stream_bus(dut, port)
                # one "byte" per beat on an Amaranth port (cocotbext-axi defaults to 8 bits)
                size = len(bus.tdata) if isinstance(bus, AmaranthStreamBus) else None
                table[port] = cls(bus, self.clk, self.rst, byte_size=size, **kw)
        self.axil = None
        if axil is not None:
            self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, axil), self.clk, self.rst, **kw)
        self.registers = dict(registers or {})
        self.watch = {name: (getattr(dut, v), getattr(dut, r), getattr(dut, d) if d else None)
                      for name, (v, r, d) in (watch or {}).items()}
        self.values: dict[str, list[int]] = {name: [] for name in self.watch}
        self.watchdog_cycles = watchdog_cycles
        self.activity = activity
        self.diagnose = diagnose
        self.beats: dict[str, list[int]] = {}
        self.ends: dict[str, list[int]] = {}
        self.cycle = 0
        self.stalled: str | None = None
        self._stall = Event()
        self._monitor_task = None

    # ---------------------------------------------------------------------------- control

    async def reset(self, cycles: int = 3) -> None:
        """Hold reset for ``cycles`` clock edges, release it and restart the monitor (cycle 0
        is the first edge after the release); the sinks' received frames are dropped."""
        if self._monitor_task is not None:
            self._monitor_task.cancel()
        self.rst.value = self.rst_active
        for _ in range(cycles):
            await RisingEdge(self.clk)
        self.rst.value = 1 - self.rst_active
        for sink in self.sinks.values():
            sink.clear()
            sink.read_queue.clear()
        self.beats = {p: [] for p in [*self.sources, *self.sinks, *self.watch]}
        self.ends = {p: [] for p in self.beats}
        self.values = {name: [] for name in self.watch}
        self.cycle = 0
        self.stalled = None
        self._stall.clear()
        self._monitor_task = cocotb.start_soon(self._monitor())

    def set_pauses(self, run: dict) -> None:
        """Install a run's ``stall`` / ``backpressure`` pause generators (see the module)."""
        seed = run.get("seed", 0)
        for option, kind, drivers in (("stall", "idle", self.sources),
                                      ("backpressure", "bp", self.sinks)):
            for port, drv in drivers.items():
                gen = pause_generator(port_spec(run.get(option), port), f"{seed}:{kind}:{port}")
                drv.set_pause_generator(gen)
                if gen is None:
                    drv.pause = False

    def clear_pauses(self) -> None:
        """Every source and sink unpaused (ready high on every output)."""
        self.set_pauses({})

    # ---------------------------------------------------------------------------- streams

    async def send(self, port: str, frame) -> None:
        """Queue one frame on input ``port``: packed beats (Amaranth) or bytes (AXI, tlast on
        its last beat). Returns at once; :meth:`sent` waits until the sources are done."""
        if len(frame):
            await self.sources[port].send(AxiStreamFrame(frame))

    async def sent(self) -> None:
        """Wait until every source has had its last queued beat accepted."""
        for src in self.sources.values():
            await src.wait()

    async def recv_beats(self, port: str, count: int) -> list[int]:
        """The next ``count`` beats of Amaranth output ``port`` (packed payloads)."""
        sink, words = self.sinks[port], []
        while len(words) < count:
            words.extend((await sink.recv(compact=False)).tdata)
        return words

    async def recv_frame(self, port: str) -> list[int]:
        """The next frame (up to tlast) of AXI-Stream output ``port``, as byte values."""
        return list((await self.sinks[port].recv()).tdata)

    async def within(self, cycles: int, *awaitables, what: str):
        """Await all of ``awaitables`` (coroutines) within ``cycles`` clock cycles.

        Returns:
            their results, in order.

        Raises:
            StreamTimeout: not all done in time (the message gives the beats seen so far).
            StreamStall: the watchdog fired first.
        """
        i, res = await select(Timer(cycles * CLOCK_NS, "ns"), self._stall.wait(),
                              gather(*awaitables))
        if i == 0:
            raise StreamTimeout(f"{what}: not done within {cycles} cycles (beats accepted so "
                                f"far: {self.counts()})")
        if i == 1:
            raise StreamStall(self.stalled)
        return res

    async def quiet(self, expected: dict[str, int], cycles: int = QUIET_CYCLES) -> None:
        """With every ready high for ``cycles`` cycles, check that no output beat comes beyond
        ``expected`` (``{port: beats}``).

        Raises:
            AssertionError: naming the port with an extra beat.
        """
        self.clear_pauses()
        for _ in range(cycles):
            await RisingEdge(self.clk)
        for port, n in expected.items():
            assert len(self.beats[port]) == n, (
                f"{port}: {len(self.beats[port])} output beats, expected {n}: a beat beyond the "
                f"expected ones")

    async def read(self, reg) -> tuple[int, AxiResp]:
        """Read the 32-bit register ``reg`` (a name in ``registers`` or a byte offset) over
        AXI4-Lite; returns (value, response)."""
        addr = self.registers[reg] if isinstance(reg, str) else reg
        r = await self.axil.read(addr, 4)
        return int.from_bytes(r.data, "little"), r.resp

    async def write(self, reg, value: int, strb_bytes: int = 4) -> AxiResp:
        """Write the low ``strb_bytes`` bytes of ``value`` to register ``reg`` (name or byte
        offset) over AXI4-Lite; returns the response."""
        addr = self.registers[reg] if isinstance(reg, str) else reg
        return (await self.axil.write(addr, value.to_bytes(4, "little")[:strb_bytes])).resp

    def counts(self) -> str:
        """Beats of every port and the cycle of the last one, as text."""
        return ", ".join(f"{p} {len(b)}" + (f" (last at cycle {b[-1]})" if b else "")
                         for p, b in self.beats.items()) + f"; now cycle {self.cycle}"

    # ---------------------------------------------------------------------------- monitor

    async def _monitor(self) -> None:
        edge = RisingEdge(self.clk)
        ports = []
        for table in (self.sources, self.sinks):
            for port, drv in table.items():
                bus = drv.bus
                ports.append((port, self.beats[port], self.ends[port], bus.tvalid, bus.tready,
                              getattr(bus, "tlast", None)))
        watched = [(self.beats[name], self.values[name], valid, ready, data)
                   for name, (valid, ready, data) in self.watch.items()]
        activity, watchdog = self.activity, self.watchdog_cycles
        last_move = 0
        while True:
            await edge
            # right after the edge, signals read as the edge sampled them
            cycle = self.cycle
            for port, stamps, ends, valid, ready, last in ports:
                if valid.value == 1 and ready.value == 1:
                    stamps.append(cycle)
                    last_move = cycle
                    if last is not None and last.value == 1:
                        ends.append(cycle)
                        self.on_frame_end(port, cycle)
            for stamps, values, valid, ready, data in watched:
                if valid.value == 1 and ready.value == 1:
                    stamps.append(cycle)
                    if data is not None:
                        values.append(int(data.value))
            if watchdog:
                if activity is not None and activity.value == 1:
                    last_move = cycle
                if cycle - last_move > watchdog:
                    self.stalled = (f"watchdog: nothing moved for {watchdog} cycles at cycle "
                                    f"{cycle}\n" + (self.diagnose() if self.diagnose else ""))
                    self._stall.set()
                    return
            self.cycle = cycle + 1

    def on_frame_end(self, port: str, cycle: int) -> None:
        """Called by the monitor at every tlast beat of ``port`` (override to sample probes)."""


def mismatch(port: str, got: list[int], exp: list[int], frame_beats: int | None = None,
             fmt: tuple[int, int, bool] | None = None) -> str:
    """One line on how ``got`` differs from ``exp``: how many beats, the first (its frame and
    beat when ``frame_beats`` is given; lanes when ``fmt`` = (width, lanes, signed))."""
    for n, (g, e) in enumerate(zip(got, exp)):
        if g != e:
            bad = sum(1 for a, b in zip(got, exp) if a != b)
            where = f"beat {n}" if not frame_beats else \
                f"beat {n} (frame {n // frame_beats}, beat {n % frame_beats})"
            shown = (f"got {unpack_lanes(g, *fmt)}, expected {unpack_lanes(e, *fmt)}" if fmt
                     else f"got {g:#x}, expected {e:#x}")
            return f"{port}: {bad} of {len(exp)} beats differ; first at {where}: {shown}"
    return f"{port}: got {len(got)} beats, expected {len(exp)}"


async def stream_runs(dut, inputs: dict[str, list[int]], outputs: dict[str, list[int]],
                      runs: list[dict], *, frame_out_beats: dict[str, int] | None = None,
                      count_from: Sequence[str] | None = None,
                      formats: dict[str, tuple[int, int, bool]] | None = None,
                      timeout_cycles: int | None = None, result_path: str | None = None
                      ) -> list[dict]:
    """The check every stream-component testbench makes, once per run.

    Each run resets the DUT, installs the run's pauses, streams every input's beats, takes the
    expected number of beats from every output within a cycle budget, holds ready high for
    :data:`QUIET_CYCLES` to catch an extra beat, and compares every beat.

    Args:
        dut: cocotb handle with Amaranth stream ports named as in ``inputs``/``outputs``
            (clock ``clk``, active-high reset ``rst``).
        inputs: ``{port: packed beats}``; outputs: ``{port: packed expected beats}``.
        runs: run dicts (``stall``, ``backpressure``, ``seed``; see the module).
        frame_out_beats: ``{output port: beats per frame}``, for ``frame0_cycles`` and the
            frame named in a mismatch.
        count_from: inputs whose first beat starts the cycle count (default: all inputs).
        formats: ``{output port: (width, lanes, signed)}`` to show mismatching beats as lanes.
        timeout_cycles: cycle budget per run (default: 20 cycles per beat at the run's worst
            slowdown, plus 2,000).
        result_path: JSON file written (atomically) with the records.

    Returns:
        One record per run: ``run``; ``cycles`` (first accepted input beat to last accepted
        output beat, inclusive); ``frame0_cycles`` (to the last output beat of frame 0 on any
        output; with ``frame_out_beats``); ``in_beats``, ``out_beats`` (totals).

    Raises:
        AssertionError: a beat differs, is missing or is extra, or the budget ran out.
    """
    tb = StreamTB(dut, list(inputs), list(outputs))
    n_in = sum(len(w) for w in inputs.values())
    n_out = sum(len(w) for w in outputs.values())
    count_from = list(count_from or inputs)
    results = []
    for k, run in enumerate(runs):
        await tb.reset()
        tb.set_pauses(run)
        for port, words in inputs.items():
            await tb.send(port, words)
        budget = timeout_cycles or int(20 * worst_slowdown(run) * (n_in + n_out)) + 2000
        got = await tb.within(budget, *(tb.recv_beats(p, len(w)) for p, w in outputs.items()),
                              tb.sent(), what=f"run {k} {run}")
        await tb.quiet({p: len(w) for p, w in outputs.items()})
        for (port, exp), words in zip(outputs.items(), got):
            assert words == exp, f"run {k} {run}: " + mismatch(
                port, words, exp, (frame_out_beats or {}).get(port), (formats or {}).get(port))
        first_in = min(tb.beats[p][0] for p in count_from if tb.beats[p])
        res = {"run": run, "cycles": max(tb.beats[p][-1] for p in outputs) - first_in + 1,
               "in_beats": sum(len(tb.beats[p]) for p in inputs),
               "out_beats": sum(len(tb.beats[p]) for p in outputs)}
        if frame_out_beats:
            res["frame0_cycles"] = max(tb.beats[p][frame_out_beats[p] - 1]
                                       for p in outputs) - first_in + 1
        assert res["in_beats"] == n_in, f"run {k}: {res['in_beats']} of {n_in} input beats taken"
        dut._log.info("run %d: %s", k, res)
        results.append(res)
    if result_path:
        write_json(result_path, results)
    return results


def write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file, then rename)."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)
