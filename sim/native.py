"""Native Verilator testbench of the whole accelerator, for simulations too long for cocotb.

The cocotb testbench (:mod:`sim.tb_top`) runs Python code every clock cycle, which limits it to
about 1,300 simulated cycles per second on the small detector. :file:`sim/native_tb.cpp` drives
the same AXI-Stream ports of :class:`hw.top.Accelerator` from C++ (no per-cycle Python), with
the same cycle bookkeeping, optional input stalls and output back-pressure, and, on an
instrumented top, the same MAC-busy counters, FIFO high-water marks and watchdog report. On the
small detector it runs about 50,000 cycles per second with the model compiled at ``-O2``
(measured), which is what makes full frames of the 256x256 and 512x512 configs practical.

:func:`sim.rtlsim.simulate` uses it with ``harness="native"``; the tests keep cocotb (bus
drivers from cocotbext-axi) and compare the two harnesses on the same design.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sim.runner import DEFAULT_BUILD_ROOT, verilator_bin_dir

TB_SOURCE = Path(__file__).resolve().parent / "native_tb.cpp"
#: C++ optimisation of the model. ``-O2`` builds take longer than the cocotb runner's ``-O0``
#: but simulate several times faster; the native harness exists for long runs.
DEFAULT_CXX_OPT = os.environ.get("DEFLOW_NATIVE_CXX_OPT", "-O2")
#: cycles between two progress lines of the testbench (2**20)
PROGRESS_EVERY = 1 << 20


@dataclass
class NativeResult:
    """Outcome of one native run.

    Attributes:
        status: ``"ok"``, ``"timeout"`` (``timeout_cycles`` reached) or ``"watchdog"``.
        output: every output beat's bytes, in order (``out_beat_bytes`` per beat).
        first_in: cycle (rising edges after reset, from 1) that accepted the first input beat.
        frame_end: per completed output frame, the cycle that accepted its tlast beat.
        cycles_run: cycles simulated.
        mac_busy: per completed frame, the instrumented top's ``dbg_mac_busy`` port read at
            tlast as one integer (32 bits per MVAU/VVAU); empty without probes.
        fifo_max: the ``dbg_fifo_max`` port at the end as one integer; ``None`` without probes.
        stall: on a watchdog stop with probes, ``{"full", "starved", "level"}`` port values.
        seconds: wall-clock time of the simulation (not the build).
    """

    status: str
    output: bytes
    first_in: int
    frame_end: list[int]
    cycles_run: int
    mac_busy: list[int]
    fifo_max: int | None
    stall: dict[str, int] | None
    seconds: float

    def frame_cycles(self) -> list[int]:
        """Cycles per completed frame, :mod:`sim.tb_top`'s convention: frame 0 from the first
        input beat to its tlast (both counted), later frames tlast to tlast."""
        e = self.frame_end
        return ([e[0] - self.first_in + 1] if e else []) + [b - a for a, b in zip(e, e[1:])]


def _words_to_int(words: list[int]) -> int:
    return sum(int(w) << (32 * i) for i, w in enumerate(words))


#: a zero initialiser of one entry of an Amaranth FIFO's storage memory, one line each
_FIFO_ZERO_INIT = re.compile(r"^\s*storage\[\d+\] = \d+'[hd]0+;\n", re.M)


def strip_fifo_zero_init(verilog: str) -> str:
    """``verilog`` without the zero initialisers of FIFO storage memories.

    Amaranth's FIFOs (``amaranth.lib.fifo``, memory ``storage``) come out of the Verilog
    backend with one ``storage[i] = 0;`` line per entry. The frame-deep FIFOs of a sizing
    simulation of a 256x256 detector make 7.5 million such lines (227 MB of Verilog), on which
    Verilator ran out of 24 GB. A FIFO never reads an entry it has not written, so the
    initial value is unobservable (and Verilator zero-initialises anyway)."""
    return _FIFO_ZERO_INIT.sub("", verilog)


def _tool_env() -> dict[str, str]:
    root = verilator_bin_dir().parent
    env = {k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("VERILATOR_ROOT", str(root))
    return env


def build_native(component, *, toplevel: str = "deflow_top", probes: bool = False,
                 build_root: Path = DEFAULT_BUILD_ROOT, cxx_opt: str = DEFAULT_CXX_OPT,
                 jobs: int | None = None, log: Callable[[str], None] | None = None,
                 key: str | None = None) -> Path:
    """Verilog of ``component`` (a :class:`hw.top.Accelerator`), Verilated with the native
    testbench into an executable; cached by the Verilog, testbench and flags.

    Args:
        probes: the top was built with ``instrument=True`` (compiles the probe readout).
        cxx_opt: C++ optimisation flag of the model (``-O0`` builds fastest, ``-O2`` runs
            fastest).
        jobs: parallel C++ compile jobs (default: CPU count).
        log: called with a line before each of the two build steps (they take minutes on
            the 256x256 and 512x512 designs).
        key: the caller's hash of everything the component's Verilog depends on (its graph
            with weights, FIFO depths, probes, the hw/ sources). When an executable was built
            under this key before, it is returned without generating the Verilog (tens of
            seconds on the whole detector); otherwise the build proceeds as without a key and
            records it. A key that misses only costs the Verilog generation.

    Returns:
        Path of the executable.

    Raises:
        SimulatorUnavailable: Verilator is not installed.
        RuntimeError: Verilator or the C++ build failed (the message names the log file).
    """
    from amaranth.back import verilog as amaranth_verilog

    verilator_bin_dir()  # raises SimulatorUnavailable with the install hint
    index = None
    if key:  # the testbench source and build flags are part of the key too
        k = hashlib.sha1("\0".join([key, TB_SOURCE.read_text(), cxx_opt, str(probes)]).encode())
        index = Path(build_root) / "native_index" / f"{toplevel}_{k.hexdigest()[:16]}"
    if index is not None and index.is_file():
        exe = Path(build_root) / index.read_text().strip() / "obj" / "Vdeflow_top"
        if exe.is_file():
            return exe
    if log:
        log("native build: Verilog")
    verilog = strip_fifo_zero_init(amaranth_verilog.convert(component, name=toplevel,
                                                            emit_src=False))
    flags = ["-O3", "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "--prefix", "Vdeflow_top",
             "--top-module", toplevel] + (["-CFLAGS", "-DDEFLOW_PROBES"] if probes else [])
    digest = hashlib.sha1("\0".join([verilog, TB_SOURCE.read_text(), cxx_opt] + flags).encode())
    build_dir = Path(build_root) / f"{toplevel}_native_{digest.hexdigest()[:12]}"
    exe = build_dir / "obj" / "Vdeflow_top"
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.exists():
            vpath = build_dir / f"{toplevel}.v"
            vpath.write_text(verilog)
            env = _tool_env()
            steps = [
                ("verilator", ["verilator", "--cc", "--exe", *flags, "--Mdir", "obj", vpath.name,
                               str(TB_SOURCE)]),
                # the wheel's verilated.mk leaves the precompiled-header flag empty (see
                # sim.runner.prepare_simulator_env); OPT_SLOW: constructors run once
                ("c++", ["make", "-C", "obj", "-f", "Vdeflow_top.mk", f"-j{jobs or os.cpu_count() or 1}",
                         f"OPT_FAST={cxx_opt}", "OPT_SLOW=-O0", "CFG_CXXFLAGS_PCH_I=-include"]),
            ]
            for name, cmd in steps:
                if log:
                    log(f"native build: {name} ({build_dir.name})")
                log_path = build_dir / f"{name}.log"
                with open(log_path, "w") as f:
                    rc = subprocess.run(cmd, cwd=build_dir, env=env, stdout=f,
                                        stderr=subprocess.STDOUT).returncode
                if rc != 0:
                    raise RuntimeError(f"native testbench build failed in {name} (exit {rc}); "
                                       f"log: {log_path}")
    if index is not None:
        index.parent.mkdir(parents=True, exist_ok=True)
        tmp = index.with_name(index.name + f".{os.getpid()}.tmp")
        tmp.write_text(build_dir.name + "\n")
        os.replace(tmp, index)
    return exe


def run_native(exe: Path, in_bytes: bytes, *, in_beat_bytes: int, out_beat_bytes: int,
               frames: int, out_beats_per_frame: int, timeout_cycles: int,
               watchdog_cycles: int = 0, stall: float = 0.0, backpressure: float = 0.0,
               progress: Callable[[int, int, int], None] | None = None) -> NativeResult:
    """Stream ``in_bytes`` (whole frames in AXI order) through the executable of
    :func:`build_native` until ``frames`` output frames (tlast beats) are out.

    Args:
        in_beat_bytes / out_beat_bytes: bytes per ``s_axis_tdata`` / ``m_axis_tdata`` beat.
        out_beats_per_frame: output beats of one frame (reported back, not enforced).
        timeout_cycles: stop with status ``"timeout"`` after this many cycles.
        watchdog_cycles: stop with status ``"watchdog"`` when no beat moves for this many
            cycles (0: off).
        progress: called every 2**20 cycles with ``(cycles, frames done, output beats)``.

    Raises:
        ValueError: ``in_bytes`` is not a whole number of beats, or a probability is not in
            [0, 1).
        RuntimeError: the executable failed to run (not a timeout or watchdog stop).
    """
    if in_beat_bytes < 1 or len(in_bytes) % in_beat_bytes:
        raise ValueError(f"input of {len(in_bytes)} bytes is not a whole number of "
                         f"{in_beat_bytes}-byte beats")
    for name, p in (("stall", stall), ("backpressure", backpressure)):
        if not 0 <= p < 1:
            raise ValueError(f"{name} probability must be in [0, 1), got {p}")
    with tempfile.TemporaryDirectory(prefix="deflow_native_") as tmp:
        tmp = Path(tmp)
        (tmp / "in.bin").write_bytes(in_bytes)
        cmd = [str(exe), str(tmp / "in.bin"), str(tmp / "out.bin"), str(tmp / "result.json"),
               str(in_beat_bytes), str(out_beat_bytes), str(frames), str(out_beats_per_frame),
               str(timeout_cycles), str(watchdog_cycles), repr(float(stall)),
               repr(float(backpressure))]
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        errors = []
        for line in proc.stderr:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "progress":
                if progress:
                    progress(*(int(v) for v in parts[1:]))
            else:
                errors.append(line.rstrip())
        rc = proc.wait()
        seconds = time.time() - t0
        if not (tmp / "result.json").exists() or rc not in (0, 1):
            raise RuntimeError(f"native testbench {exe} exited with {rc}: "
                               + (" | ".join(errors[-5:]) or "no message"))
        r = json.loads((tmp / "result.json").read_text())
        output = (tmp / "out.bin").read_bytes()
    stall_words = ({k: _words_to_int(r[k]) for k in ("full", "starved", "level")}
                   if "full" in r else None)
    return NativeResult(status=r["status"], output=output, first_in=r["first_in"],
                        frame_end=r["frame_end"], cycles_run=r["cycles_run"],
                        mac_busy=[_words_to_int(w) for w in r["mac_busy"]],
                        fifo_max=_words_to_int(r["fifo_max"]) if "fifo_max" in r else None,
                        stall=stall_words, seconds=seconds)
