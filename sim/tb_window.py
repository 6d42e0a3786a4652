"""cocotb testbench for the window generators (hw/window.py).

Works for ``SlidingWindowGenerator`` (port ``i`` -> ``o``) and ``DeformableSampler`` (ports
``i`` and ``offsets`` -> ``o``); the check is :func:`sim.streams.stream_runs`. Config (from
:func:`sim.runner.load_tb_config`):

* ``in_words``: packed input beats of all frames; ``off_words``: packed offsets or ``None``.
* ``exp_words``: packed expected output beats (``hw.golden``), all frames.
* ``frame_out_beats``: output beats per frame.
* ``runs``: list of ``{"stall", "backpressure", "seed"}`` (:mod:`sim.streams`; per port:
  ``{"stall": {"i": 0.8, "offsets": 0.5}}``); each run resets the DUT and streams all frames.
* ``result_path``: JSON file written with per-run cycle counts: ``frame0_cycles`` (first pixel
  beat accepted on ``i`` to the last output beat of frame 0, inclusive) and ``cycles`` (to the
  last output beat).
"""

from __future__ import annotations

import cocotb

from sim.runner import load_tb_config
from sim.streams import stream_runs


@cocotb.test()
async def window_stream(dut):
    cfg = load_tb_config()
    inputs = {"i": cfg["in_words"]}
    if cfg.get("off_words") is not None:
        inputs["offsets"] = cfg["off_words"]
    await stream_runs(dut, inputs, {"o": cfg["exp_words"]}, cfg["runs"],
                      frame_out_beats={"o": cfg["frame_out_beats"]}, count_from=["i"],
                      result_path=cfg.get("result_path"))
