"""cocotb testbench for hw/stream_utils.py; the check is :func:`sim.streams.stream_runs`.

Config (from :func:`sim.runner.load_tb_config`):

* ``kind``: ``"dup"`` (``StreamDuplicator``: ``i`` -> ``o0``, ``o1``) or ``"dwc"``
  (``StreamWidthConverter``: ``i`` -> ``o``).
* ``in_words``: packed input beats; ``exp_words``: packed expected beats on every output.
* ``runs``: list of ``{"stall", "backpressure", "seed"}`` (:mod:`sim.streams`; per output:
  ``{"backpressure": {"o0": 0.7, "o1": 0.1}}``); each run resets the DUT.
* ``result_path``: JSON file written with per-run ``cycles`` (first input beat accepted to the
  last output beat accepted on any output, inclusive).
"""

from __future__ import annotations

import cocotb

from sim.runner import load_tb_config
from sim.streams import stream_runs


@cocotb.test()
async def stream_utils(dut):
    cfg = load_tb_config()
    outs = ["o0", "o1"] if cfg["kind"] == "dup" else ["o"]
    await stream_runs(dut, {"i": cfg["in_words"]}, {o: cfg["exp_words"] for o in outs},
                      cfg["runs"], result_path=cfg.get("result_path"))
