"""``deflow bitstream``: everything a Vivado machine needs to build the accelerator for a board,
and the build itself where Vivado is on PATH.

    deflow bitstream --board ultra96v2 [--model model.onnx --folding f.json | --build-dir compiled]
                     [--out build/bitstream/ultra96v2] [--jobs 4] [--no-yosys]

Writes (atomically: into ``<out>.partial``, then renamed over ``<out>``):

* ``deflow_system.v``: hw.control.AcceleratorSystem (accelerator + AXI4-Lite control);
* ``build.tcl``: the Vivado batch project (hw.boards.vivado_tcl);
* ``resources.json`` / ``resources.md`` / ``yosys_<family>.log``: the Yosys estimate
  (sw.compiler.resources) against the board's capacity, read from ``deflow_system.il`` (the same design
  as RTLIL, which Yosys parses far faster than the Verilog);
* ``deploy/``: what goes onto the board: ``driver.py`` (sw/runtime/driver.py), ``deflow_demo.py``
  and its README (hw/boards/deploy/), ``accel.json`` (stream shapes, graph hash, clock);
  Vivado adds ``deflow.bit`` and ``deflow.hwh``.

Then, if ``vivado`` is on PATH, runs ``vivado -mode batch -source build.tcl`` in ``<out>``
(progress lines printed); otherwise stops with exit code :data:`EXIT_NO_VIVADO` and says what
to run on a machine with Vivado.

Model: ``--build-dir`` (a ``deflow compile`` folder) or ``--model``/``--folding``; without
either, :data:`DEFAULT_MODEL` (the slice network, the quickest to build); ``--model small256``
builds the shipped detector, ``--model small`` the 128x128 one (:data:`MODELS`).
"""

from __future__ import annotations

from sw import BUILD_ROOT

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_TEMPLATE = REPO_ROOT / "hw" / "boards" / "deploy"

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_NO_VIVADO = 3
EXIT_VIVADO_FAILED = 4


def _slice_onnx(path: Path) -> None:
    """The slice network (models/slice.py), calibrated on 8 real images, exported to QONNX."""
    from models.data import sample_images
    from models.export import export_qonnx
    from models.slice import build_slice_model

    model = build_slice_model(seed=0, calibrate_images=sample_images(8, 64, split="train"))
    export_qonnx(model, path, input_shape=(1, 3, 64, 64))


def _checkpoint_onnx(name: str, path: Path) -> None:
    """The committed W4A8 checkpoint ``models/checkpoints/<name>_w4a8.pt``, exported to QONNX
    at its config's input size."""
    from models.detector import CONFIGS, load_checkpoint
    from models.export import export_qonnx

    model, meta = load_checkpoint(REPO_ROOT / "models" / "checkpoints" / f"{name}_w4a8.pt")
    size = CONFIGS[meta["config"]].input_size
    export_qonnx(model, path, input_shape=(1, 3, size, size))


MODELS = {
    "slice": (_slice_onnx, REPO_ROOT / "sw" / "configs" / "slice_folding.json"),
    "small": (functools.partial(_checkpoint_onnx, "small"), None),
    "small256": (functools.partial(_checkpoint_onnx, "small256"), None),
}
"""Built-in models: name -> (function writing its QONNX file, default folding JSON; None:
chosen for the board by :func:`sw.compiler.autofold.choose_folding`)."""

DEFAULT_MODEL = "slice"


def say(msg: str) -> None:
    """Progress line, flushed (the command's output is often piped into a log)."""
    print(msg, flush=True)


class BitstreamError(ValueError):
    """Bad input to the bitstream command (names the option and the problem)."""


def load_graph(model: str | None = None, folding: str | None = None,
               build_dir: str | None = None, progress=say, board=None,
               fps: float | None = None, clock_mhz: float | None = None):
    """The folded HWGraph to build: from ``build_dir`` (``hw_graph.json``), or ``model`` (a
    QONNX path or a :data:`MODELS` name, default :data:`DEFAULT_MODEL`) with ``folding``.

    Raises:
        BitstreamError: both a build dir and a model given, or a missing file.
    """
    from sw.compiler.folding import apply_folding, load_folding
    from hw.graph import HWGraph
    from sw.compiler.lower import lower_qonnx

    if build_dir:
        if model or folding:
            raise BitstreamError("give either --build-dir or --model/--folding, not both")
        gpath = Path(build_dir) / "hw_graph.json"
        if not gpath.exists():
            raise BitstreamError(f"--build-dir {build_dir}: no hw_graph.json (run `deflow compile`)")
        return HWGraph.load(gpath)
    name = model or DEFAULT_MODEL
    if name in MODELS:
        make, default_folding = MODELS[name]
        fold = Path(folding) if folding else default_folding
        if fold is None and board is None:
            raise BitstreamError(f"model {name} has no default folding: give --folding or a board")
        with tempfile.TemporaryDirectory() as tmp:
            onnx = Path(tmp) / f"{name}.onnx"
            progress(f"      exporting the {name} model to QONNX")
            make(onnx)
            graph = lower_qonnx(onnx, requant="within1")
    else:
        onnx = Path(name)
        if not onnx.exists():
            raise BitstreamError(f"--model {name}: no such file and not one of {', '.join(MODELS)}")
        if not folding:
            raise BitstreamError("--model given without --folding")
        fold = Path(folding)
        graph = lower_qonnx(onnx, requant="within1")
    if fold is None:
        from sw.compiler.autofold import choose_folding

        progress(f"      folding chosen for {board.name}"
                 + (f" at {fps:g} fps" if fps else " (fastest that fits)"))
        return apply_folding(graph, choose_folding(graph, board, target_fps=fps,
                                                   clock_mhz=clock_mhz))
    if not fold.exists():
        raise BitstreamError(f"--folding {fold}: no such file")
    return apply_folding(graph, load_folding(fold))


def load_fifo_depths(build_dir: str | None = None, path: str | None = None) -> dict | None:
    """FIFO depths for the accelerator: ``path`` (``--fifo-depths``), else the build dir's
    ``fifo_depths.json`` (written by ``deflow compile``) when present, else None (the
    accelerator's defaults). Read with :func:`hw.graph.load_depths`.

    Raises:
        BitstreamError: ``path`` missing or not a JSON object of positive integers.
    """
    import json

    from hw.graph import load_depths

    if path is None and build_dir:
        cand = Path(build_dir) / "fifo_depths.json"
        if not cand.exists() or json.loads(cand.read_text()) is None:
            return None
        path = str(cand)
    if path is None:
        return None
    if not Path(path).exists():
        raise BitstreamError(f"--fifo-depths {path}: no such file")
    try:
        return load_depths(Path(path))
    except ValueError as exc:
        raise BitstreamError(str(exc)) from exc


def prepare(board_name: str, graph, out: Path, *, jobs: int = 4, yosys: bool = True,
            yosys_timeout_s: float = 3600, clock_mhz: float | None = None,
            fifo_depths: dict | None = None, progress=say) -> dict:
    """Write Verilog, Tcl, the resource report and the deploy folder into ``out`` (replaced
    whole, atomically).

    Returns:
        ``{"out", "tcl", "verilog", "resources" (dict or None), "spec"}``.

    Raises:
        sw.compiler.boards.BoardError: unknown board.
        hw.boards.BoardFlowError: stream widths or frame sizes the block design cannot take.
        sw.compiler.resources.SynthesisError: Yosys failed.
    """
    from amaranth.back import verilog

    from hw.boards import TOP_MODULE, StreamPorts, vivado_tcl
    from hw.control import AcceleratorSystem
    from sw.compiler.boards import get_board
    from sw.runtime.driver import SPEC_FILE, AcceleratorSpec
    from hw.graph import atomic_dir, write_text_atomic

    board = get_board(board_name)
    system = AcceleratorSystem(graph, fifo_depths)
    mhz = float(clock_mhz or board.fabric_mhz)
    spec = AcceleratorSpec.from_graph(graph, mhz)
    ports = StreamPorts(system.in_width, system.out_width, spec.input.frame_bytes,
                        spec.output.frame_bytes)
    # refuses bad widths or clocks before anything is written
    tcl = vivado_tcl(board, ports, jobs=jobs, clock_mhz=mhz)

    out = Path(out)
    with atomic_dir(out) as tmp:
        progress(f"      Verilog of {TOP_MODULE} ({system.in_width}-bit in, "
                 f"{system.out_width}-bit out, AXI4-Lite control)")
        vpath = tmp / f"{TOP_MODULE}.v"
        write_text_atomic(vpath, verilog.convert(system, name=TOP_MODULE, emit_src=False))
        write_text_atomic(tmp / "build.tcl", tcl)
        deploy = tmp / "deploy"
        deploy.mkdir()
        shutil.copyfile(REPO_ROOT / "sw" / "runtime" / "driver.py", deploy / "driver.py")
        for f in sorted(DEPLOY_TEMPLATE.iterdir()):
            if f.is_file() and not f.name.startswith((".", "__")):
                shutil.copyfile(f, deploy / f.name)
        write_text_atomic(deploy / SPEC_FILE, spec.to_json())
        resources = None
        if yosys:
            from amaranth.back import rtlil

            from sw.compiler.resources import report

            # the same design as RTLIL: Yosys reads it in seconds, the Verilog in minutes
            il = tmp / f"{TOP_MODULE}.il"
            write_text_atomic(il, rtlil.convert(system, name=TOP_MODULE, emit_src=False))
            resources = report(il, TOP_MODULE, board.name, tmp, timeout_s=yosys_timeout_s,
                               progress=progress)
    return {"out": out, "tcl": out / "build.tcl", "verilog": out / f"{TOP_MODULE}.v",
            "resources": resources, "spec": spec}


def vivado_command(out: Path, jobs: int) -> list[str]:
    """The batch command line run in ``out``."""
    return ["vivado", "-mode", "batch", "-nojournal", "-log", "vivado.log",
            "-source", "build.tcl", "-tclargs", str(jobs)]


def run_vivado(out: Path, jobs: int, *, timeout_s: float = 6 * 3600, progress=say) -> int:
    """Run Vivado on ``out/build.tcl``, printing its ``deflow:`` steps, errors and run status
    lines. Returns Vivado's exit status (-1 after a timeout, the process killed)."""
    keep = ("deflow:", "ERROR:", "CRITICAL WARNING:", "launch_runs", "wait_on_run",
            "Run output will be captured", "Finished")
    t0 = time.monotonic()
    proc = subprocess.Popen(vivado_command(out, jobs), cwd=out, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in proc.stdout:
            if line.lstrip().startswith(keep) or "deflow:" in line:
                progress(f"      [{time.monotonic() - t0:6.0f} s] {line.rstrip()}")
            if time.monotonic() - t0 > timeout_s:
                proc.kill()
                progress(f"      vivado killed after {timeout_s:.0f} s")
                proc.wait()
                return -1
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()


def add_bitstream_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``bitstream`` subcommand on an argparse ``subparsers`` object."""
    from sw.compiler.boards import BOARDS

    b = subparsers.add_parser("bitstream", help="Verilog + Vivado Tcl + Yosys report for a "
                              "board; the bitstream itself where Vivado is on PATH",
                              description="Write into --out the accelerator system's Verilog "
                              "(deflow_system.v), a Vivado batch script (build.tcl), the Yosys "
                              "resource report (resources.md/json) and deploy/ (driver, "
                              "accel.json); with Vivado on PATH also deploy/deflow.bit and .hwh.")
    b.add_argument("--board", required=True, help=f"one of {', '.join(BOARDS)}")
    b.add_argument("--model", default=None,
                   help=f"QONNX .onnx or a built-in model ({', '.join(MODELS)}; default {DEFAULT_MODEL})")
    b.add_argument("--folding", default=None, help="FINN-format folding JSON (default: the "
                   "model's, or chosen for the board)")
    b.add_argument("--fps", type=float, default=None,
                   help="folding target when the folding is chosen for the board "
                        "(default: the fastest that fits)")
    b.add_argument("--build-dir", default=None, help="a `deflow compile` output folder instead of --model (default: none)")
    b.add_argument("--fifo-depths", default=None,
                   help="FIFO depths JSON (default: the build dir's fifo_depths.json if any)")
    b.add_argument("--out", default=None, help="output folder (default build/bitstream/<board>; replaced whole)")
    b.add_argument("--clock-mhz", type=float, default=None,
                   help="fabric clock in MHz (default: the board's, sw/compiler/boards.py)")
    b.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="Vivado launch_runs jobs")
    b.add_argument("--no-yosys", action="store_true", help="skip the Yosys resource estimate")
    b.add_argument("--yosys-timeout", type=float, default=3600, help="seconds Yosys may run")
    b.add_argument("--vivado-timeout", type=float, default=6 * 3600, help="seconds Vivado may run")
    b.set_defaults(func=cmd_bitstream)
    return b


def cmd_bitstream(args) -> int:
    """Run the bitstream subcommand; returns the process exit code (0 built, 2 bad input,
    3 prepared but no Vivado here, 4 Vivado failed)."""
    from hw.boards import BoardFlowError
    from sw.compiler.boards import BoardError, get_board
    from sw.compiler.resources import SynthesisError

    try:
        board = get_board(args.board)
        if args.jobs < 1:
            raise BitstreamError(f"--jobs must be >= 1, got {args.jobs}")
        out = Path(args.out or BUILD_ROOT / "bitstream" / board.name)
        say("[1/3] model -> folded hardware graph")
        graph = load_graph(args.model, args.folding, args.build_dir, board=board,
                           fps=args.fps, clock_mhz=args.clock_mhz)
        depths = load_fifo_depths(args.build_dir, args.fifo_depths)
        say(f"[2/3] {board.name} ({board.part}, {board.ps}, {args.clock_mhz or board.fabric_mhz:g} MHz): "
              f"Verilog, Vivado Tcl{'' if args.no_yosys else ', Yosys estimate'} -> {out}")
        res = prepare(board.name, graph, out, jobs=args.jobs, yosys=not args.no_yosys,
                      yosys_timeout_s=args.yosys_timeout, clock_mhz=args.clock_mhz,
                      fifo_depths=depths)
    except (BoardError, BitstreamError, BoardFlowError, FileNotFoundError) as exc:
        print(f"deflow bitstream: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SynthesisError as exc:
        print(f"deflow bitstream: Yosys failed: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if res["resources"]:
        r = res["resources"]
        u = r["utilisation"]
        say("      " + ", ".join(f"{k} {v['used']:g}/{v['available']} ({v['percent']:g}%)"
                                   for k, v in u.items())
              + f": {'fits' if r['fits'] else 'does NOT fit'} (Yosys {r['yosys_seconds']} s)")
    cmd = " ".join(vivado_command(out, args.jobs))
    if shutil.which("vivado") is None:
        print(f"[3/3] vivado is not on PATH: stopping before the bitstream.\n"
              f"      written: {out}/ (deflow_system.v, build.tcl, "
              f"{'' if args.no_yosys else 'resources.md/json, '}deploy/)\n"
              f"      on a machine with Vivado 2023.x (and the {board.name} board files): "
              f"cd {out} && {cmd}\n"
              f"      then copy {out}/deploy/ to the board and run there "
              f"`sudo -E python3 deflow_demo.py --images <folder>`", file=sys.stderr)
        return EXIT_NO_VIVADO
    say(f"[3/3] vivado batch build in {out} (log vivado.log)")
    rc = run_vivado(out, args.jobs, timeout_s=args.vivado_timeout)
    bit = out / "deploy" / "deflow.bit"
    if rc != 0 or not bit.exists():
        print(f"deflow bitstream: vivado failed (exit {rc}); see {out}/vivado.log", file=sys.stderr)
        return EXIT_VIVADO_FAILED
    print(f"done: {bit} and deflow.hwh in {out}/deploy/")
    return EXIT_OK


def main(argv=None) -> int:
    """``python -m sw.flows.bitstream --board B ...``: the subcommand without sw/flows/cli.py."""
    p = argparse.ArgumentParser(prog="deflow-bitstream")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_bitstream_parser(sub)
    args = p.parse_args(["bitstream", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
