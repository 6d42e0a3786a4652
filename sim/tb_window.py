"""cocotb testbench for the window generators (hw/window.py).

Works for ``SlidingWindowGenerator`` (port ``i`` -> ``o``) and ``DeformableSampler`` (ports
``i`` and ``offsets`` -> ``o``). Config (from :func:`sim.runner.load_tb_config`):

* ``in_words``: packed input beats of all frames; ``off_words``: packed offsets or ``None``.
* ``exp_words``: packed expected output beats (``hw.golden``), all frames.
* ``frame_out_beats``: output beats per frame.
* ``runs``: list of ``{"in_stall", "off_stall", "out_bp", "seed"}``; each run resets the DUT
  and streams all frames with those stall/back-pressure probabilities.
* ``result_path``: JSON file written with per-run cycle counts: ``frame0_cycles`` (first input
  beat accepted to the last output beat of frame 0, inclusive) and ``total_cycles``.
"""

from __future__ import annotations

import json

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout

from sim.runner import load_tb_config
from sim.streams import StreamSink, StreamSource


async def reset(dut) -> None:
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def count_cycles(dut, stats: dict, in_port: str, out_port: str, frame_out: int) -> None:
    """Record the cycle of the first input handshake and of output handshakes."""
    i_valid, i_ready = getattr(dut, f"{in_port}__valid"), getattr(dut, f"{in_port}__ready")
    o_valid, o_ready = getattr(dut, f"{out_port}__valid"), getattr(dut, f"{out_port}__ready")
    cycle = 0
    outs = 0
    while True:
        await RisingEdge(dut.clk)
        # after the edge the signals read as they were sampled by it
        if stats.get("first_in") is None and i_valid.value == 1 and i_ready.value == 1:
            stats["first_in"] = cycle
        if o_valid.value == 1 and o_ready.value == 1:
            outs += 1
            stats["last_out"] = cycle
            if outs == frame_out:
                stats["frame0_out"] = cycle
        cycle += 1


def first_mismatch(got: list[int], exp: list[int], frame_out: int) -> str:
    for n, (g, e) in enumerate(zip(got, exp)):
        if g != e:
            bad = sum(1 for a, b in zip(got, exp) if a != b)
            return (f"{bad} of {len(exp)} beats differ; first at beat {n} (frame {n // frame_out}, "
                    f"beat {n % frame_out} of the frame): got {g:#x}, expected {e:#x}")
    return f"lengths differ: got {len(got)}, expected {len(exp)}"


@cocotb.test()
async def window_stream(dut):
    cfg = load_tb_config()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    in_words, off_words, exp = cfg["in_words"], cfg.get("off_words"), cfg["exp_words"]
    frame_out = cfg["frame_out_beats"]
    results = []
    for run_no, run in enumerate(cfg["runs"]):
        await reset(dut)
        seed = run.get("seed", run_no)
        src = StreamSource(dut, "i", dut.clk, stall_prob=run["in_stall"], seed=seed * 7 + 1)
        srcs = [cocotb.start_soon(src.send(in_words))]
        if off_words is not None:
            osrc = StreamSource(dut, "offsets", dut.clk, stall_prob=run.get("off_stall", 0.0),
                                seed=seed * 7 + 2)
            srcs.append(cocotb.start_soon(osrc.send(off_words)))
        snk = StreamSink(dut, "o", dut.clk, backpressure_prob=run["out_bp"], seed=seed * 7 + 3)
        stats: dict = {}
        mon = cocotb.start_soon(count_cycles(dut, stats, "i", "o", frame_out))
        # generous bound: every beat at the slowest stall rate, plus the fill
        worst = 1.0 / (1.0 - max(run["in_stall"], run.get("off_stall", 0.0), run["out_bp"]))
        limit = int(4 * worst * (len(in_words) + len(exp))) + 2000
        got = await with_timeout(snk.receive(len(exp)), limit * 10, "ns")
        for task in srcs:  # trailing input rows that no window needs are still consumed
            await with_timeout(task, limit * 10, "ns")
        mon.cancel()
        assert got == exp, f"run {run_no} {run}: " + first_mismatch(got, exp, frame_out)
        res = {
            "run": run,
            "frame0_cycles": stats["frame0_out"] - stats["first_in"] + 1,
            "total_cycles": stats["last_out"] - stats["first_in"] + 1,
        }
        dut._log.info("run %d: %s", run_no, res)
        results.append(res)
    if cfg.get("result_path"):
        with open(cfg["result_path"], "w") as fh:
            json.dump(results, fh)
