"""cocotb testbench of the whole accelerator (hw.top.Accelerator) through its AXI-Stream ports.

Config (from sim.runner.load_tb_config): ``frames``: list of frames, each a list of input
bytes in AXI order; ``expected``: per frame the expected output bytes; ``stall``,
``backpressure`` (and ``seed``): idle input cycles / not-ready output cycles, as in
:mod:`sim.streams`; ``timeout_cycles`` (per output frame); ``probes`` (FIFO probes of an
instrumented top: tensor, producer, consumer, depth, level_bits), ``busy_layers`` and
``watchdog_cycles`` (optional). Writes ``result.json`` (per-frame output, mismatches and
cycles; with probes also the highest level of every FIFO and the MAC-busy cycles of every
MVAU/VVAU) to the path in ``result_path``.

Watchdog: when nothing moves for ``watchdog_cycles`` (no AXI-Stream beat on either port and,
with probes, no beat through any inter-layer FIFO and no MAC step), the test fails with a
diagnosis read from the probes: which FIFOs are full (producer blocked), which are empty with
a waiting consumer, and which multi-input layer waits on one input while another is full (the
usual reconvergent-path deadlock: the full FIFO's path needs depth).
"""

from __future__ import annotations

import json

import cocotb

from sim.runner import load_tb_config
from sim.streams import StreamStall, StreamTB, write_json


def _fields(value: int, widths: list[int]) -> list[int]:
    out, pos = [], 0
    for w in widths:
        out.append((value >> pos) & ((1 << w) - 1))
        pos += w
    return out


def stall_report(probes: list[dict], full: int, starved: int, level: int) -> str:
    """Human-readable stall report from the values of an instrumented top's
    ``dbg_fifo_full``, ``dbg_fifo_starved`` and ``dbg_fifo_level`` ports (one bit / one
    ``level_bits`` field per FIFO, in ``probes`` order, first FIFO in the LSBs)."""
    if not probes:
        return "no probes (build the top level with instrument=True for a diagnosis)"
    n = len(probes)
    full_bits = _fields(full, [1] * n)
    starved_bits = _fields(starved, [1] * n)
    levels = _fields(level, [p["level_bits"] for p in probes])
    lines = []
    for p, f, s, lvl in zip(probes, full_bits, starved_bits, levels):
        if f:
            lines.append(f"  FULL    fifo_{p['tensor']} ({p['producer']} -> {p['consumer']}) "
                         f"{lvl}/{p['depth']}: {p['producer']} is blocked")
        elif s:
            lines.append(f"  EMPTY   fifo_{p['tensor']} ({p['producer']} -> {p['consumer']}): "
                         f"{p['consumer']} waits for data")
    by_consumer: dict[str, list] = {}
    for p, f, s in zip(probes, full_bits, starved_bits):
        by_consumer.setdefault(p["consumer"], []).append((p, f, s))
    for layer, ins in by_consumer.items():
        waiting = [p["tensor"] for p, f, s in ins if s]
        stuffed = [p["tensor"] for p, f, s in ins if f]
        if waiting and stuffed:
            lines.append(f"  layer {layer} waits on {', '.join(waiting)} while "
                         f"{', '.join('fifo_' + t for t in stuffed)} is full: the path "
                         f"ending in {', '.join('fifo_' + t for t in stuffed)} needs deeper FIFOs "
                         f"(size FIFOs by simulation)")
    return "\n".join(lines) or "  every FIFO neither full nor starved (a layer stopped by itself)"


def diagnose_stall(dut, probes: list[dict]) -> str:
    """:func:`stall_report` read from the ``dbg_fifo_*`` probes of an instrumented top."""
    if not probes:
        return stall_report(probes, 0, 0, 0)
    return stall_report(probes, int(dut.dbg_fifo_full.value), int(dut.dbg_fifo_starved.value),
                        int(dut.dbg_fifo_level.value))


class TopTB(StreamTB):
    """:class:`sim.streams.StreamTB` on the accelerator's AXI-Stream ports, with the watchdog
    reading the probes of an instrumented top and the MAC-busy counters sampled at every
    output tlast."""

    def __init__(self, dut, cfg: dict):
        self.probes = cfg.get("probes", [])
        self.busy_layers = cfg.get("busy_layers", [])
        super().__init__(dut, ["s_axis"], ["m_axis"],
                         watchdog_cycles=cfg.get("watchdog_cycles", 0),
                         activity=dut.dbg_activity if self.probes else None,
                         diagnose=lambda: diagnose_stall(dut, self.probes))
        self.busy_at_end: list[int] = []

    def on_frame_end(self, port: str, cycle: int) -> None:
        if port == "m_axis" and self.probes and self.busy_layers:
            self.busy_at_end.append(int(self.dut.dbg_mac_busy.value))


@cocotb.test()
async def stream_frames(dut):
    cfg = load_tb_config()
    tb = TopTB(dut, cfg)
    await tb.reset()
    tb.set_pauses(cfg)
    for frame in cfg["frames"]:
        await tb.send("s_axis", bytes(frame))
    results = []
    for i, expected in enumerate(cfg["expected"]):
        try:
            (got,) = await tb.within(cfg["timeout_cycles"], tb.recv_frame("m_axis"),
                                     what=f"timeout: output frame {i}")
        except StreamStall as exc:
            # the caller reports this text itself (cocotb's failure only names the log)
            with open(cfg["result_path"] + ".stall", "w") as f:
                f.write(str(exc))
            raise
        mism = sum(1 for a, b in zip(got, expected) if a != b) + abs(len(got) - len(expected))
        results.append({"output": got, "mismatches": mism})
    # cycle bookkeeping: first input beat accepted -> tlast of each output frame
    ends = tb.ends["m_axis"]
    cycles = [ends[0] - tb.beats["s_axis"][0] + 1] + [b - a for a, b in zip(ends, ends[1:])]
    for r, c in zip(results, cycles):
        r["cycles"] = c
    probes, busy_layers = tb.probes, tb.busy_layers
    if probes and results:
        peaks = _fields(int(dut.dbg_fifo_max.value), [p["level_bits"] for p in probes])
        results[0]["fifo_max"] = {p["tensor"]: v for p, v in zip(probes, peaks)}
    # MAC-busy cycles of every MVAU/VVAU within each frame interval (counters read at tlast)
    prev = [0] * len(busy_layers)
    for r, snap in zip(results, tb.busy_at_end):
        now = _fields(snap, [32] * len(busy_layers))
        r["mac_busy"] = {name: b - a for name, a, b in zip(busy_layers, prev, now)}
        prev = now
    # the figures also go to the simulator log, which stays in the build folder
    dut._log.info("deflow summary: %s", json.dumps(
        [{k: v for k, v in r.items() if k != "output"} for r in results]))
    write_json(cfg["result_path"], results)
    bad = [i for i, r in enumerate(results) if r["mismatches"]]
    assert not bad, f"frames {bad} differ from the golden model"
