"""cocotb testbench for stream components with any number of input and output ports.

Used for the detector's extra layers (hw/pool.py, hw/upsample.py, hw/channel_ops.py): every
input port is driven by its own :class:`sim.streams.StreamSource` (independent random stalls),
every output port drained by its own :class:`sim.streams.StreamSink` (independent random
back-pressure). Config (from :func:`sim.runner.load_tb_config`):

* ``inputs``: ``{port: [packed beats, all frames]}``.
* ``outputs``: ``{port: [packed expected beats, all frames]}`` (``hw.golden``).
* ``frame_out_beats``: ``{port: output beats per frame}``.
* ``runs``: list of ``{"in_stall", "out_bp", "seed"}``; each run resets the DUT and streams all
  frames with those stall/back-pressure probabilities.
* ``result_path``: JSON file written with per-run ``frame0_cycles`` (first input beat accepted
  on any input to the last output beat of frame 0 on any output, inclusive) and
  ``total_cycles`` (to the last output beat).

After the expected beats, ready is held high for a few cycles: a stray extra beat fails.
"""

from __future__ import annotations

import json

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout

from sim.runner import load_tb_config
from sim.streams import StreamSink, StreamSource

QUIET_CYCLES = 16
CLOCK_NS = 10


async def _monitor(dut, stats: dict, ins: list[str], outs: dict[str, int]) -> None:
    """Cycle of the first input handshake, of each output's frame-0 end and of the last beat."""
    iv = [(getattr(dut, f"{p}__valid"), getattr(dut, f"{p}__ready")) for p in ins]
    ov = {p: (getattr(dut, f"{p}__valid"), getattr(dut, f"{p}__ready")) for p in outs}
    count = dict.fromkeys(outs, 0)
    cycle = 0
    while True:
        await RisingEdge(dut.clk)  # signals read as sampled by this edge
        if stats.get("first_in") is None and any(v.value == 1 and r.value == 1 for v, r in iv):
            stats["first_in"] = cycle
        for p, (v, r) in ov.items():
            if v.value == 1 and r.value == 1:
                count[p] += 1
                stats["last_out"] = cycle
                if count[p] == outs[p]:
                    stats["frame0_out"] = max(stats.get("frame0_out", 0), cycle)
        cycle += 1


def _mismatch(port: str, got: list[int], exp: list[int], frame: int) -> str:
    for n, (g, e) in enumerate(zip(got, exp)):
        if g != e:
            bad = sum(1 for a, b in zip(got, exp) if a != b)
            return (f"{port}: {bad} of {len(exp)} beats differ; first at beat {n} (frame "
                    f"{n // frame}, beat {n % frame}): got {g:#x}, expected {e:#x}")
    return f"{port}: got {len(got)} beats, expected {len(exp)}"


@cocotb.test()
async def multistream(dut):
    cfg = load_tb_config()
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    ins, outs = cfg["inputs"], cfg["outputs"]
    n_in = sum(len(w) for w in ins.values())
    n_out = sum(len(w) for w in outs.values())
    results = []
    for run_no, run in enumerate(cfg["runs"]):
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        seed = run.get("seed", run_no)
        srcs = [StreamSource(dut, p, dut.clk, stall_prob=run["in_stall"], seed=seed * 11 + k)
                for k, p in enumerate(ins)]
        sinks = {p: StreamSink(dut, p, dut.clk, backpressure_prob=run["out_bp"],
                               seed=seed * 11 + 5 + k) for k, p in enumerate(outs)}
        stats: dict = {}
        mon = cocotb.start_soon(_monitor(dut, stats, list(ins), cfg["frame_out_beats"]))
        send = [cocotb.start_soon(s.send(ins[p])) for s, p in zip(srcs, ins)]
        # a design that loses or withholds beats fails instead of hanging
        worst = 1.0 / (1.0 - max(run["in_stall"], run["out_bp"]))
        limit_ns = CLOCK_NS * (int(4 * worst * (n_in + n_out)) + 2000)
        recv = [cocotb.start_soon(s.receive(len(outs[p]))) for p, s in sinks.items()]
        for t in recv + send:
            await with_timeout(t, limit_ns, "ns")
        for p in outs:  # nothing more may come out
            getattr(dut, f"{p}__ready").value = 1
        for _ in range(QUIET_CYCLES):
            await RisingEdge(dut.clk)
            for p in outs:
                assert getattr(dut, f"{p}__valid").value != 1, (
                    f"run {run_no}: {p}: output beat beyond the expected {len(outs[p])}")
        for p in outs:
            getattr(dut, f"{p}__ready").value = 0
        mon.cancel()
        for p, s in sinks.items():
            assert s.words == outs[p], f"run {run_no} {run}: " + _mismatch(
                p, s.words, outs[p], cfg["frame_out_beats"][p])
        res = {"run": run, "frame0_cycles": stats["frame0_out"] - stats["first_in"] + 1,
               "total_cycles": stats["last_out"] - stats["first_in"] + 1}
        dut._log.info("run %d: %s", run_no, res)
        results.append(res)
    if cfg.get("result_path"):
        with open(cfg["result_path"], "w") as fh:
            json.dump(results, fh)


# --------------------------------------------------------------------------------------------
# pytest side
# --------------------------------------------------------------------------------------------

#: stall-free: measured cycles are compared with ``expected_cycles()``
FREE = {"in_stall": 0.0, "out_bp": 0.0, "seed": 0}
#: random input stalls and back-pressure; a slow consumer; a slow producer
STALLS = [
    {"in_stall": 0.3, "out_bp": 0.3, "seed": 1},
    {"in_stall": 0.0, "out_bp": 0.8, "seed": 2},
    {"in_stall": 0.8, "out_bp": 0.1, "seed": 3},
]


def run_multistream(component, toplevel: str, inputs: dict, outputs: dict,
                    frame_out_beats: dict, *, tmp_path, runs=None,
                    simulator: str = "verilator") -> list[dict]:
    """Simulate ``component`` and check every output beat; return the per-run cycle records.

    Args:
        component: Amaranth component with the stream ports named in ``inputs``/``outputs``.
        toplevel: Verilog module name.
        inputs: ``{port: packed beats}``; outputs: ``{port: packed expected beats}``.
        frame_out_beats: ``{output port: beats per frame}``.
        tmp_path: folder for the result file.
        runs: run list (default: :data:`FREE` then :data:`STALLS`).
        simulator: ``"verilator"`` or ``"icarus"``.

    Raises:
        AssertionError: a beat differs, is missing or is extra (message from the testbench).
    """
    from pathlib import Path

    from sim.runner import run_cocotb

    result_path = Path(tmp_path) / f"{toplevel}_{simulator}.json"
    cfg = {
        "inputs": {p: [int(w) for w in ws] for p, ws in inputs.items()},
        "outputs": {p: [int(w) for w in ws] for p, ws in outputs.items()},
        "frame_out_beats": frame_out_beats,
        "runs": list(runs) if runs is not None else [FREE] + STALLS,
        "result_path": str(result_path),
    }
    run_cocotb(component, toplevel, "sim.tb_multistream", cfg, simulator=simulator)
    return json.loads(result_path.read_text())


def free_run_cycles(results: list[dict]) -> list[int]:
    """``frame0_cycles`` of the stall-free runs."""
    return [r["frame0_cycles"] for r in results
            if r["run"]["in_stall"] == 0 and r["run"]["out_bp"] == 0]
