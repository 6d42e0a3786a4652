"""Multiply-accumulate ops: MVAU (FINN's MatrixVectorActivation) and VVAU (FINN's
VectorVectorActivation), without activation (their accumulators go to a Requant or
Thresholding layer).

Folding (FINN's rules): MVAU ``MH % PE == 0``, ``MW % SIMD == 0``; VVAU ``C % PE == 0``,
``SIMD == 1`` (kernel positions are serial). Cycles (FINN's ``get_exp_cycles``): MVAU
``(MH/PE) * (MW/SIMD) * pixels``, VVAU ``(C/PE) * K*K * pixels``. Resources: see
:meth:`_MacOp.resources`.
"""

from __future__ import annotations

import math

from hw import golden
from hw import schedule as S
from hw.ops.base import FoldingRuleError, HWOp
from hw.ops.memory import C0_LUTS, empty_resources, memory_cost

MEM_MODES = ("internal", "external")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class _MacOp(HWOp):
    folding_knob = True
    has_mac_array = True
    has_memory = True

    def _matrix(self) -> tuple[int, int]:
        """(rows, columns) of the weight matrix: MVAU ``(MH, MW)``, VVAU ``(C, K*K)``."""
        raise NotImplementedError

    def _fold(self, entry: dict) -> None:
        pe, simd = self._check_pe_simd(int(entry.get("PE", 1)), int(entry.get("SIMD", 1)))
        self.layer.folding = {"PE": pe, "SIMD": simd}
        for k in ("resType", "ram_style"):
            if k in entry:
                self.layer.folding[k] = entry[k]
        if self.external_weights and "mem_mode" in entry:
            if entry["mem_mode"] not in MEM_MODES:
                raise FoldingRuleError(f"mem_mode must be one of {MEM_MODES}, got "
                                       f"{entry['mem_mode']!r}")
            self.layer.folding["mem_mode"] = entry["mem_mode"]

    def out_lanes(self) -> int:
        return self.pe

    def macs(self) -> int:
        mh, mw = self._matrix()
        return mh * mw * self.attrs["pixels"]

    def _component_cycles(self, comp) -> int:
        return comp.expected_cycles(self.attrs["pixels"])

    def _dsps(self, pe: int, simd: int) -> int:
        raise NotImplementedError

    def resources(self, mult_style: str = "lut", mem_style: str = "auto") -> dict:
        """Weights: ``MH*MW*W`` bits in a memory of ``MH*MW/(PE*SIMD)`` words of
        ``PE*SIMD*W`` bits (FINN's weight memory), or with ``mem_mode "external"`` none on chip
        but ``ceil(MH*MW*W/8) * pixels`` DRAM bytes per frame. Products: ``resType "dsp"``: the
        DSP48s the RTL instantiates; LUTs: FINN-R's ``(2*ceil((W+A)/6) - 1) * (W+A)`` per
        product. Adder tree ``(W+A)*(2*SIMD-1)`` and accumulator ``acc_bits`` LUTs per PE, plus
        FINN's control constant ``C0_LUTS``."""
        a, f = self.attrs, self.folding
        r = empty_resources()
        pe, simd = f.get("PE", 1), f.get("SIMD", 1)
        w, act = a["weight_bits"], a["in_bits"]
        mh, mw = self._matrix()
        r["weight_bits"] = mh * mw * w
        depth, width = mh * mw // (pe * simd), pe * simd * w
        if f.get("mem_mode") == "external":
            r["dram_bytes_per_frame"] = math.ceil(mh * mw * w / 8) * a["pixels"]
        else:
            r["bram18"], r["uram"], r["lutram_luts"] = memory_cost(depth, width, mem_style)
        if mult_style == "dsp":
            r["dsps"] = self._dsps(pe, simd)
            mult = 0
        else:
            mult = simd * (2 * math.ceil((w + act) / 6) - 1) * (w + act)
        tree = (w + act) * (2 * simd - 1)
        r["luts"] = C0_LUTS + pe * (mult + tree + a["acc_bits"]) + r["lutram_luts"]
        return r


class MVAUOp(_MacOp):
    """MVAU: ``[pixels, MW] -> [pixels, MH]`` accumulators, weights ``[MH, MW]``
    (:class:`hw.mvau.MVAU`, :func:`hw.golden.mvau`)."""

    op = "MVAU"
    finn_op = "MVAU"
    external_weights = True
    lanes_attr = "SIMD"

    def _matrix(self):
        return self.attrs["mh"], self.attrs["mw"]

    def _check_pe_simd(self, pe: int, simd: int) -> tuple[int, int]:
        mh, mw = self._matrix()
        if pe < 1 or mh % pe:
            raise FoldingRuleError(f"MH % PE == 0 is broken: MH={mh}, PE={pe}")
        if simd < 1 or mw % simd:
            raise FoldingRuleError(f"MW % SIMD == 0 is broken: MW={mw}, SIMD={simd}")
        return pe, simd

    def candidates(self) -> list[dict]:
        """All ``(PE, SIMD)`` divisor pairs by ``PE*SIMD``, ties to the larger SIMD (FINN raises
        SIMD first); behind a window generator ``SIMD`` must also divide its channels."""
        from hw.ops import op_for

        a = self.attrs
        simds = _divisors(a["mw"])
        prod = self.graph.producer(self.layer.inputs[0])
        if prod is not None and op_for(self.graph, prod).window_producer:
            simds = [s for s in simds if prod.attrs["channels"] % s == 0]
        pairs = [(p, s) for p in _divisors(a["mh"]) for s in simds]
        pairs.sort(key=lambda ps: (ps[0] * ps[1], ps[0]))
        return [{"PE": p, "SIMD": s} for p, s in pairs]

    def in_lanes(self, port: int) -> int:
        return self.folding["SIMD"]

    def analytic_cycles(self) -> int:
        a, f = self.attrs, self.folding
        return (a["mh"] // f.get("PE", 1)) * (a["mw"] // f.get("SIMD", 1)) * a["pixels"]

    def _dsps(self, pe: int, simd: int) -> int:
        # hw.mvau.MVAU.multipliers: PE lanes 2q, 2q+1 share one DSP48 (WP486 packing)
        return math.ceil(pe / 2) * simd

    def execute(self, inputs):
        return [golden.mvau(inputs[0], self.layer.params["weights"])]

    def build(self):
        from hw.mvau import MVAU

        f = self.folding
        return MVAU(weights=self.layer.params["weights"], pe=f["PE"], simd=f["SIMD"],
                    in_bits=self.t_in.bits, in_signed=self.t_in.signed,
                    weight_bits=self.attrs["weight_bits"], acc_bits=self.t_out.bits,
                    mult_style=f.get("resType", "lut"),  # FINN's name
                    ram_style=self.ram_style)

    def token_schedule(self, comp, arrivals, frames):
        c, p = S.mvau_schedule(arrivals[0], nf=comp.nf, sf=comp.sf, latency=comp.latency)
        return [c], [p]


class VVAUOp(_MacOp):
    """VVAU (depthwise): depthwise windows ``(C/PE, K*K, PE)`` -> ``[pixels, C]``
    accumulators, weights ``[C, K*K]`` (:class:`hw.vvau.VVAU`, :func:`hw.golden.vvau`)."""

    op = "VVAU"
    finn_op = "VVAU"
    depthwise_window_reader = True

    @classmethod
    def folding_from_finn(cls, entry: dict) -> dict:
        keep = super().folding_from_finn(entry)
        if int(keep.get("SIMD", 1)) != 1:
            keep.pop("SIMD")  # FINN's VVAU SIMD splits the kernel; deflow's reads taps serially
        return keep

    def _matrix(self):
        return self.attrs["channels"], self.attrs["kernel_elems"]

    def _check_pe_simd(self, pe: int, simd: int) -> tuple[int, int]:
        c = self.attrs["channels"]
        if pe < 1 or c % pe:
            raise FoldingRuleError(f"C % PE == 0 is broken: C={c}, PE={pe}")
        if simd != 1:
            raise FoldingRuleError(f"VVAU SIMD must be 1 (kernel positions are serial), got {simd}")
        return pe, 1

    def candidates(self) -> list[dict]:
        return [{"PE": p, "SIMD": 1} for p in _divisors(self.attrs["channels"])]

    def in_lanes(self, port: int) -> int:
        return self.folding["PE"]

    def analytic_cycles(self) -> int:
        a = self.attrs
        return (a["channels"] // self.folding.get("PE", 1)) * a["kernel_elems"] * a["pixels"]

    def _dsps(self, pe: int, simd: int) -> int:
        return pe * simd  # one DSP48 per lane: lanes multiply different inputs

    def execute(self, inputs):
        win = inputs[0]
        if win.ndim == 3:  # flat window stream: restore (C/PE, K*K, PE)
            h, w, _ = win.shape
            win = win.reshape(h, w, self.attrs["channels"] // self.pe, self.attrs["kernel_elems"],
                              self.pe)
        return [golden.vvau(win, self.layer.params["weights"])]

    def build(self):
        from hw.vvau import VVAU

        f = self.folding
        return VVAU(weights=self.layer.params["weights"], pe=f["PE"],
                    kernel_elems=self.attrs["kernel_elems"], in_bits=self.t_in.bits,
                    in_signed=self.t_in.signed, weight_bits=self.attrs["weight_bits"],
                    acc_bits=self.t_out.bits, mult_style=f.get("resType", "lut"),
                    ram_style=self.ram_style)

    def token_schedule(self, comp, arrivals, frames):
        c, p = S.vvau_schedule(arrivals[0], kernel_elems=comp.kernel_elems, latency=comp.latency)
        return [c], [p]
