"""cocotb testbench for hw/stream_utils.py.

Config (from :func:`sim.runner.load_tb_config`):

* ``kind``: ``"dup"`` (``StreamDuplicator``: ``i`` -> ``o0``, ``o1``) or ``"dwc"``
  (``StreamWidthConverter``: ``i`` -> ``o``).
* ``in_words``: packed input beats; ``exp_words``: packed expected beats on every output.
* ``runs``: list of ``{"in_stall", "out_bp": [p per output], "seed"}``; each run resets the DUT.
* ``result_path``: JSON file written with per-run ``cycles`` (first input beat accepted to the
  last output beat accepted on any output, inclusive).
"""

from __future__ import annotations

import json

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout

from sim.runner import load_tb_config
from sim.streams import StreamSink, StreamSource


async def count_cycles(dut, stats: dict, outs: list[str]) -> None:
    cycle = 0
    ports = [(getattr(dut, f"{o}__valid"), getattr(dut, f"{o}__ready")) for o in outs]
    while True:
        await RisingEdge(dut.clk)  # signals read as sampled by this edge
        if stats.get("first_in") is None and dut.i__valid.value == 1 and dut.i__ready.value == 1:
            stats["first_in"] = cycle
        if any(v.value == 1 and r.value == 1 for v, r in ports):
            stats["last_out"] = cycle
        cycle += 1


@cocotb.test()
async def stream_utils(dut):
    cfg = load_tb_config()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    outs = ["o0", "o1"] if cfg["kind"] == "dup" else ["o"]
    in_words, exp = cfg["in_words"], cfg["exp_words"]
    results = []
    for run_no, run in enumerate(cfg["runs"]):
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        seed = run.get("seed", run_no)
        src = StreamSource(dut, "i", dut.clk, stall_prob=run["in_stall"], seed=seed * 5 + 1)
        sinks = [StreamSink(dut, o, dut.clk, backpressure_prob=p, seed=seed * 5 + 2 + n)
                 for n, (o, p) in enumerate(zip(outs, run["out_bp"]))]
        stats: dict = {}
        mon = cocotb.start_soon(count_cycles(dut, stats, outs))
        send = cocotb.start_soon(src.send(in_words))
        worst = 1.0 / (1.0 - max([run["in_stall"]] + run["out_bp"]))
        limit_ns = 10 * (int(4 * worst * (len(in_words) + len(exp))) + 1000)
        tasks = [cocotb.start_soon(s.receive(len(exp))) for s in sinks]
        for t in tasks:
            await with_timeout(t, limit_ns, "ns")
        await with_timeout(send, limit_ns, "ns")
        mon.cancel()
        for o, s in zip(outs, sinks):
            got = s.words
            if got != exp:
                n = next((j for j, (g, e) in enumerate(zip(got, exp)) if g != e), len(exp))
                raise AssertionError(
                    f"run {run_no} {run}: {o}: beat {n} got "
                    f"{got[n] if n < len(got) else None!r}, expected "
                    f"{exp[n] if n < len(exp) else None!r} ({len(got)} beats received)")
        res = {"run": run, "cycles": stats["last_out"] - stats["first_in"] + 1}
        dut._log.info("run %d: %s", run_no, res)
        results.append(res)
    if cfg.get("result_path"):
        with open(cfg["result_path"], "w") as fh:
            json.dump(results, fh)
