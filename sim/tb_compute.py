"""Testbench of the compute layers (MVAU, VVAU, Requantizer, Thresholding): the pytest side.

All of them are one-input, one-output stream components, so they run on the generic stream
testbench :mod:`sim.tb_multistream` (port ``i`` -> ``o``). The tests
(``tests/test_hw_{mvau,vvau,requant,...}.py``) pack the input beats, compute the expected
output lanes with ``hw/golden.py`` and call :func:`run_compute_tb`.

Cycles are counted as FINN's rtlsim does and ``docs/hw_conventions.md`` asks: from the clock
edge of the first accepted input beat to the edge of the last accepted output beat, both
inclusive (a combinational pass-through of one beat is 1 cycle; :mod:`sim.streams`).
"""

from __future__ import annotations

from sim.streams import pack_lanes
from sim.tb_multistream import run_multistream

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
        component: an MVAU, VVAU, Requantizer or Thresholding (anything with ``out_bits``,
            ``out_lanes``, ``out_signed`` and stream ports ``i``/``o``).
        toplevel: Verilog module name (the build cache is per name and design).
        in_words: packed input beats.
        expected: ``[beats, out_lanes]`` integers.
        runs: list of dicts with ``stall`` and ``backpressure`` (:mod:`sim.streams`).
        tmp_path: folder for the result file.
        seed: base seed of the runs' pause generators (run ``k`` gets ``seed + 17 k``).
        simulator: ``"verilator"`` or ``"icarus"``.

    Returns:
        One ``{"run", "cycles", "in_beats", "out_beats"}`` record per run.

    Raises:
        AssertionError: a beat differs, is missing or is extra (message from the testbench).
    """
    width = component.out_bits
    out_words = [pack_lanes([int(v) for v in beat], width) for beat in expected]
    return run_multistream(
        component, toplevel, {"i": in_words}, {"o": out_words}, tmp_path=tmp_path,
        runs=[dict(r, seed=seed + 17 * k) for k, r in enumerate(runs)],
        formats={"o": (width, component.out_lanes, bool(component.out_signed))},
        simulator=simulator)
