"""cocotb testbench for stream components with any number of input and output ports.

Used for the compute layers (MVAU, VVAU, Requantizer, Thresholding; :mod:`sim.tb_compute`) and
the detector's extra layers (hw/pool.py, hw/upsample.py, hw/channel_ops.py): every input port
is driven by its own source (independent stalls), every output port drained by its own sink
(independent back-pressure), all from :class:`sim.streams.StreamTB`; the check is
:func:`sim.streams.stream_runs`. Config (from :func:`sim.runner.load_tb_config`):

* ``inputs``: ``{port: [packed beats, all frames]}``.
* ``outputs``: ``{port: [packed expected beats, all frames]}`` (``hw.golden``).
* ``runs``: list of ``{"stall", "backpressure", "seed"}`` (:mod:`sim.streams`); each run resets
  the DUT and streams all frames.
* ``frame_out_beats`` (optional): ``{port: output beats per frame}``, for ``frame0_cycles``.
* ``formats`` (optional): ``{port: [width, lanes, signed]}``, to show a mismatch as lanes.
* ``timeout_cycles`` (optional): cycle budget per run.
* ``result_path``: JSON file written with one record per run (``cycles``: first input beat
  accepted on any input to the last output beat on any output, inclusive; ``frame0_cycles``:
  to the last output beat of frame 0; ``in_beats``, ``out_beats``).

After the expected beats, ready is held high for a few cycles: a stray extra beat fails.
"""

from __future__ import annotations

import json

import cocotb

from sim.runner import load_tb_config
from sim.streams import stall_free, stream_runs


@cocotb.test()
async def multistream(dut):
    cfg = load_tb_config()
    await stream_runs(dut, cfg["inputs"], cfg["outputs"], cfg["runs"],
                      frame_out_beats=cfg.get("frame_out_beats"),
                      formats={p: tuple(f) for p, f in cfg.get("formats", {}).items()},
                      timeout_cycles=cfg.get("timeout_cycles"),
                      result_path=cfg.get("result_path"))


# --------------------------------------------------------------------------------------------
# pytest side
# --------------------------------------------------------------------------------------------

#: stall-free: measured cycles are compared with ``expected_cycles()``
FREE = {"stall": 0.0, "backpressure": 0.0, "seed": 0}
#: random input stalls and back-pressure; a slow consumer; a slow producer
STALLS = [
    {"stall": 0.3, "backpressure": 0.3, "seed": 1},
    {"stall": 0.0, "backpressure": 0.8, "seed": 2},
    {"stall": 0.8, "backpressure": 0.1, "seed": 3},
]


def run_multistream(component, toplevel: str, inputs: dict, outputs: dict,
                    frame_out_beats: dict | None = None, *, tmp_path, runs=None,
                    formats: dict | None = None, simulator: str = "verilator") -> list[dict]:
    """Simulate ``component`` and check every output beat; return the per-run cycle records.

    Args:
        component: Amaranth component with the stream ports named in ``inputs``/``outputs``.
        toplevel: Verilog module name.
        inputs: ``{port: packed beats}``; outputs: ``{port: packed expected beats}``.
        frame_out_beats: ``{output port: beats per frame}``.
        tmp_path: folder for the result file.
        runs: run list (default: :data:`FREE` then :data:`STALLS`).
        formats: ``{output port: (width, lanes, signed)}`` for mismatch messages.
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
        "runs": list(runs) if runs is not None else [FREE] + STALLS,
        "result_path": str(result_path),
    }
    if frame_out_beats:
        cfg["frame_out_beats"] = frame_out_beats
    if formats:
        cfg["formats"] = {p: list(f) for p, f in formats.items()}
    run_cocotb(component, toplevel, "sim.tb_multistream", cfg, simulator=simulator)
    return json.loads(result_path.read_text())


def free_run_cycles(results: list[dict], key: str = "frame0_cycles") -> list[int]:
    """``key`` of the stall-free runs."""
    return [r[key] for r in results if stall_free(r["run"])]
