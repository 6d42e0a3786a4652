"""cocotb testbench behind sw.runtime.driver.SimBackend: frames into hw.control.AcceleratorSystem on
its AXI-Stream input (one packet per frame, tlast on its last beat), output frames out,
registers read over AXI4-Lite at the end; all through :class:`sim.streams.StreamTB`.

A hardware timeout is a result, not a test failure: the testbench reports it (and the
registers read after it) so the driver can raise ``AcceleratorTimeout`` with the STATUS.

Config: ``frames`` (byte lists), ``n_out`` (output frames to wait for), ``cycle_limit``
(cycles allowed per output frame, counted from the previous one), ``registers`` (name ->
offset), ``stall``/``backpressure`` (and ``seed``): idle input cycles / m_axis_tready low, as
in :mod:`sim.streams`; ``result_path``. Result JSON: ``outputs`` (byte lists), ``registers``
(name -> value), ``frame_end_cycles`` (cycle of each output tlast, cycle 0 being the first
clock edge after reset release), ``timeout`` (null or ``{"frame", "waited"}``).
"""

from __future__ import annotations

import cocotb

from sim.runner import load_tb_config
from sim.streams import StreamTimeout, write_json
from sim.tb_control import system_tb


@cocotb.test()
async def run_frames(dut):
    cfg = load_tb_config()
    tb = system_tb(dut, cfg)
    tb.set_pauses(cfg)
    await tb.reset(4)
    for frame in cfg["frames"]:
        await tb.send("s_axis", bytes(frame))
    outputs, timeout = [], None
    for i in range(cfg["n_out"]):
        try:
            (frame,) = await tb.within(cfg["cycle_limit"], tb.recv_frame("m_axis"),
                                       what=f"output frame {i}")
        except StreamTimeout:
            timeout = {"frame": i, "waited": cfg["cycle_limit"]}
            break
        outputs.append(frame)
    regs = {name: (await tb.read(name))[0] for name in cfg["registers"]}
    write_json(cfg["result_path"], {"outputs": outputs, "registers": regs,
                                    "frame_end_cycles": tb.ends["m_axis"], "timeout": timeout})
