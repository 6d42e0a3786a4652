"""cocotb testbench shared by the compute layers (MVAU, VVAU, Requantizer).

All three are one-input, one-output stream components, so one testbench drives them. The
pytest side (``tests/test_hw_{mvau,vvau,requant}.py``) packs the input beats, computes the
expected output lanes with ``hw/golden.py`` and passes them through
:func:`sim.runner.load_tb_config`:

``in_words``
    packed input beats (lane 0 in the least significant bits).
``expected``
    expected output beats, each a list of ``out_lanes`` integers.
``out_width``, ``out_lanes``, ``out_signed``
    output payload format.
``runs``
    list of ``{"stall", "backpressure", "seed"}``; each run resets the design and streams the
    whole input again, with that probability of an input stall / output back-pressure per
    cycle. Stall-free runs give the cycle count.
``timeout_cycles`` (optional)
    cycle budget per run before the test fails instead of hanging.
``result_path``
    JSON file written with one ``{"cycles", "in_beats", "out_beats"}`` record per run.

Cycles are counted as FINN's rtlsim does and ``docs/hw_conventions.md`` asks: from the clock
edge of the first accepted input beat to the edge of the last accepted output beat, both
inclusive (a combinational pass-through of one beat is 1 cycle).
"""

from __future__ import annotations

import json

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, SimTimeoutError, with_timeout

from sim.runner import load_tb_config
from sim.streams import StreamSink, StreamSource, unpack_lanes

# cycles to watch for spurious output beats after the last expected one
QUIET_CYCLES = 32
CLOCK_NS = 10


class HandshakeMonitor:
    """Counts handshakes on ``i`` and ``o`` and the cycle span from first input to last output."""

    def __init__(self, dut, clk):
        self.dut, self.clk = dut, clk
        self.edge = 0
        self.first_in: int | None = None
        self.last_out: int | None = None
        self.in_beats = 0
        self.out_beats = 0

    async def run(self) -> None:
        dut = self.dut
        while True:
            await RisingEdge(self.clk)
            self.edge += 1
            # values read at the edge are those the flops sampled (pre-edge)
            if dut.i__valid.value == 1 and dut.i__ready.value == 1:
                self.in_beats += 1
                if self.first_in is None:
                    self.first_in = self.edge
            if dut.o__valid.value == 1 and dut.o__ready.value == 1:
                self.out_beats += 1
                self.last_out = self.edge

    @property
    def cycles(self) -> int:
        return self.last_out - self.first_in + 1


async def _reset(dut) -> None:
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


@cocotb.test()
async def compute_layer(dut):
    cfg = load_tb_config()
    in_words = [int(w) for w in cfg["in_words"]]
    expected = cfg["expected"]
    width, lanes, is_signed = cfg["out_width"], cfg["out_lanes"], cfg["out_signed"]
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    # a design that loses or withholds beats must fail, not hang: a generous cycle budget
    # (stalls and back-pressure at most ~4x the beat count, plus fill latency)
    budget = cfg.get("timeout_cycles") or 20 * (len(in_words) + len(expected)) + 2000

    results = []
    for k, run in enumerate(cfg["runs"]):
        await _reset(dut)
        mon = HandshakeMonitor(dut, dut.clk)
        mon_task = cocotb.start_soon(mon.run())
        src = StreamSource(dut, "i", dut.clk, stall_prob=run["stall"], seed=run["seed"])
        snk = StreamSink(dut, "o", dut.clk, backpressure_prob=run["backpressure"],
                         seed=run["seed"] + 1000)
        src_task = cocotb.start_soon(src.send(in_words))
        try:
            words = await with_timeout(snk.receive(len(expected)), budget * CLOCK_NS, "ns")
        except SimTimeoutError:
            raise AssertionError(
                f"run {k} ({run}): timeout after {budget} cycles with {len(snk.words)} of "
                f"{len(expected)} output beats ({mon.in_beats} of {len(in_words)} input beats "
                f"accepted)"
            ) from None
        await src_task
        # nothing more may come out (ready held high so a stray beat would be seen)
        dut.o__ready.value = 1
        for _ in range(QUIET_CYCLES):
            await RisingEdge(dut.clk)
            assert dut.o__valid.value != 1, (
                f"run {k}: output beat beyond the expected {len(expected)}")
        dut.o__ready.value = 0
        mon_task.cancel()

        got = [unpack_lanes(w, width, lanes, is_signed) for w in words]
        for b, (g, e) in enumerate(zip(got, expected)):
            assert g == list(e), (
                f"run {k} ({run}): beat {b} of {len(expected)}: got {g}, expected {e}")
        assert mon.in_beats == len(in_words), (mon.in_beats, len(in_words))
        assert mon.out_beats == len(expected), (mon.out_beats, len(expected))
        dut._log.info("run %d %s: %d beats in, %d out, %d cycles", k, run, mon.in_beats,
                      mon.out_beats, mon.cycles)
        results.append({"cycles": mon.cycles, "in_beats": mon.in_beats, "out_beats": mon.out_beats})

    if cfg.get("result_path"):
        with open(cfg["result_path"], "w") as f:
            json.dump(results, f)


# --------------------------------------------------------------------------------------------
# pytest side
# --------------------------------------------------------------------------------------------

#: ~30% random input stalls and output back-pressure
STALL_RUN = {"stall": 0.3, "backpressure": 0.3}
#: a slow consumer: the output FIFO fills and the credit limit throttles issue
SLOW_SINK_RUN = {"stall": 0.05, "backpressure": 0.75}
#: stall-free: the measured cycles are compared with ``expected_cycles()``
FREE_RUN = {"stall": 0.0, "backpressure": 0.0}
#: the default run list of the tests
DEFAULT_RUNS = (STALL_RUN, SLOW_SINK_RUN, FREE_RUN)


def run_compute_tb(component, toplevel: str, in_words, expected, *, runs, tmp_path,
                   seed: int = 0, simulator: str = "verilator") -> list[dict]:
    """Simulate ``component`` on ``in_words`` and check every output beat against ``expected``.

    Args:
        component: an MVAU, VVAU or Requantizer (anything with ``out_bits``, ``out_lanes``,
            ``out_signed`` and stream ports ``i``/``o``).
        toplevel: Verilog module name (the build cache is per name and design).
        in_words: packed input beats.
        expected: ``[beats, out_lanes]`` integers.
        runs: list of dicts with ``stall`` and ``backpressure`` probabilities.
        tmp_path: folder for the result file.
        seed: base seed for the stall/back-pressure random generators.
        simulator: ``"verilator"`` or ``"icarus"``.

    Returns:
        One ``{"cycles", "in_beats", "out_beats"}`` record per run.
    """
    from pathlib import Path

    from sim.runner import run_cocotb

    result_path = Path(tmp_path) / f"{toplevel}_result.json"
    config = {
        "in_words": [int(w) for w in in_words],
        "expected": [[int(v) for v in beat] for beat in expected],
        "out_width": component.out_bits,
        "out_lanes": component.out_lanes,
        "out_signed": bool(component.out_signed),
        "runs": [dict(r, seed=seed + 17 * k) for k, r in enumerate(runs)],
        "result_path": str(result_path),
    }
    run_cocotb(component, toplevel, "sim.tb_compute", config, simulator=simulator)
    return json.loads(result_path.read_text())
