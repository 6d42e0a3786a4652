"""Activation ops on accumulator streams: Requant (deflow's requantiser, FINN has none:
``clamp((acc * M[c] + B[c]) >> S, lo, hi)``) and Thresholding (FINN's Thresholding:
``out_bias + #{i : x >= T[c, i]}``, its RTL binary search).

Both pass lanes through (one beat in, one out) and run at one beat per cycle: FINN's
``Thresholding.get_exp_cycles``, ``pixels * C/PE``.
"""

from __future__ import annotations

from hw import golden
from hw import schedule as S
from hw.ops.base import HWOp
from hw.ops.memory import empty_resources, memory_cost


class _PassLanesOp(HWOp):
    has_memory = True

    def out_lanes(self) -> int:
        return self.t_in.lanes

    def _component_cycles(self, comp) -> int:
        return comp.expected_cycles(self.attrs["pixels"])

    def token_schedule(self, comp, arrivals, frames):
        # one beat in, one out, behind CreditedOutput
        c, p = S.requant_schedule(arrivals[0], latency=comp.latency)
        return [c], [p]


class RequantOp(_PassLanesOp):
    """Requant: ``[pixels, C]`` accumulators -> ``[pixels, C]`` in ``[out_min, out_max]``
    (:class:`hw.requant.Requantizer`, :func:`hw.golden.requantize`)."""

    op = "Requant"
    finn_op = "Requant"

    def resources(self, mult_style: str = "lut", mem_style: str = "auto") -> dict:
        """Parameters ``C * (16 + acc_bits + 16)`` bits in ``C/lanes`` words; one DSP48 per
        lane (16-bit multiplier x accumulator); ``50 + 2 * lanes * out_bits`` LUTs."""
        a = self.attrs
        r = empty_resources()
        lanes, c = self.t_in.lanes, a["channels"]
        r["weight_bits"] = c * (16 + a["acc_bits"] + 16)
        r["bram18"], r["uram"], r["lutram_luts"] = memory_cost(
            c // lanes, lanes * (16 + a["acc_bits"] + 16), mem_style)
        r["dsps"] = lanes
        r["luts"] = 50 + lanes * 2 * self.t_out.bits + r["lutram_luts"]
        return r

    def execute(self, inputs):
        a, p = self.attrs, self.layer.params
        return [golden.requantize(inputs[0], p["multiplier"], p["bias"], a["shift"],
                                  a["out_min"], a["out_max"])]

    def build(self):
        from hw.requant import Requantizer

        a, p, t_in = self.attrs, self.layer.params, self.t_in
        return Requantizer(multiplier=p["multiplier"], bias=p["bias"], shift=a["shift"],
                           out_min=a["out_min"], out_max=a["out_max"], lanes=t_in.lanes,
                           acc_bits=t_in.bits, in_signed=t_in.signed, ram_style=self.ram_style)


class ThresholdingOp(_PassLanesOp):
    """Thresholding: ``[pixels, C]`` -> ``out_bias + #{i : x >= T[c, i]}``, thresholds
    ``[C, N]`` or shared ``[1, N]`` (:class:`hw.thresholding.Thresholding`,
    :func:`hw.golden.thresholding`)."""

    op = "Thresholding"
    finn_op = "Thresholding"

    def analytic_cycles(self) -> int:
        # FINN's Thresholding.get_exp_cycles: C/PE beats per pixel
        return self.attrs["pixels"] * self.attrs["channels"] // self.t_in.lanes

    def threshold_memories(self) -> dict:
        """Threshold ROMs as :meth:`build` builds them, without building it
        (:func:`hw.thresholding.threshold_geometry`): ``{"memories": [(depth, width), ...] one
        per lane and search stage with depth > 1, "stages": M, "thr_bits", "rows": threshold
        rows (C, or 1 shared), "n": N}``.

        Raises:
            ValueError: thresholds or a folding the component refuses.
        """
        from hw.thresholding import threshold_geometry

        t_in = self.t_in
        geo = threshold_geometry(self.layer.params["thresholds"], self.attrs["channels"],
                                 t_in.lanes, t_in.bits, t_in.signed)
        return {"memories": geo["memories"], "stages": geo["stages"], "thr_bits": geo["thr_bits"],
                "rows": geo["table"].shape[0], "n": geo["n"]}

    def resources(self, mult_style: str = "lut", mem_style: str = "auto") -> dict:
        """The ROMs the component builds (FINN's ``ThresholdingRTL.get_pe_mem_geometries``):
        per lane and search stage s, ``(C/PE)*2**s`` words of ``thr_bits`` (``2**s`` for a
        shared ``[1, N]`` set; depth-1 tables are constants); LUTs: one per compared bit per
        lane and stage (the carry-chain comparator ``x >= T``), the ``out_bias`` adder, 50 of
        control (fold counter, output FIFO). Yosys synth_xilinx (xcup) of C=32, PE=4, int16 ->
        uint4 (15 thresholds, 14-bit): 431 LUT (ROMs mapped to logic), 0 BRAM; this model: 530
        LUT (224 of them LUTRAM), 0 BRAM."""
        a = self.attrs
        r = empty_resources()
        geo = self.threshold_memories()
        lanes, tb = self.t_in.lanes, geo["thr_bits"]
        rows = lanes if geo["rows"] == 1 else a["channels"]
        r["weight_bits"] = rows * ((1 << geo["stages"]) - 1) * tb
        for depth, width in geo["memories"]:
            b, u, lut = memory_cost(depth, width, mem_style)
            r["bram18"], r["uram"], r["lutram_luts"] = (r["bram18"] + b, r["uram"] + u,
                                                        r["lutram_luts"] + lut)
        cmp_bits = max(self.t_in.bits, tb)
        bias_bits = self.t_out.bits if a["out_bias"] else 0
        r["luts"] = 50 + lanes * (geo["stages"] * cmp_bits + bias_bits) + r["lutram_luts"]
        return r

    def execute(self, inputs):
        return [golden.thresholding(inputs[0], self.layer.params["thresholds"],
                                    self.attrs["out_bias"])]

    def build(self):
        from hw.thresholding import Thresholding

        a, t_in, t_out = self.attrs, self.t_in, self.t_out
        return Thresholding(thresholds=self.layer.params["thresholds"], channels=a["channels"],
                            lanes=t_in.lanes, in_bits=t_in.bits, in_signed=t_in.signed,
                            out_bits=t_out.bits, out_signed=t_out.signed,
                            out_bias=a["out_bias"], ram_style=self.ram_style)
