"""Command line: ``deflow compile`` (QONNX -> folded hardware graph, estimates, FIFO depths,
Verilog), ``deflow simulate`` (a compiled folder in RTL simulation, :mod:`sim.folder_sim`) and
``deflow demo`` (the main job: a Brevitas W4A8 network with a deformable layer, exported,
compiled and run as RTL simulation on a real image, checked bit for bit)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SLICE_FOLDING = REPO_ROOT / "sw" / "configs" / "slice_folding.json"


def compile_model(onnx_path: Path, folding_path: Path | None, out_dir: Path, *,
                  board: str | None = None, fps: float | None = None,
                  clock_mhz: float | None = None, verilog: bool = True,
                  fifo_sizing: str = "analytical", log=print,
                  input_scale: float | str = "auto", requant: str = "exact") -> dict:
    """Lower, fold, estimate, report and (optionally) emit Verilog for a QONNX model.

    The folding comes from ``folding_path`` (FINN JSON) or, without one, from
    :func:`sw.compiler.autofold.choose_folding` for ``board`` (at ``fps``, or the fastest fitting).
    Written into ``out_dir``: ``hw_graph.json`` (the folded hardware graph), ``folding.json``
    (FINN format), ``estimates.md/json/png`` (:mod:`sw.compiler.report`) and ``deflow_top.v``
    (``hw.top.Accelerator``, unless ``verilog=False``). Everything goes into a temporary
    sibling folder first, renamed at the end: ``out_dir`` holds either the complete result of
    this run or what it held before (also when this run fails).

    Args:
        onnx_path: QONNX model (batch 1, fixed shape).
        folding_path: FINN folding JSON, or ``None`` to choose one for ``board``.
        board: board name (:func:`sw.compiler.boards.get_board`); the report's capacities. Default
            ``ultra96v2`` when a folding file is given.
        fps: target frames per second (only with automatic folding).
        clock_mhz: accelerator clock; default the board's ``fabric_mhz``.
        verilog: emit ``deflow_top.v`` and ``fifo_depths.json``, the Verilog built with
            those depths (:func:`sw.compiler.fifo_analytic.size_fifos_auto`; its figures go to
            ``fifo_sizing.json``).
        fifo_sizing: ``"analytical"`` (the layers' token schedules, no simulation; falls back
            to simulation where it cannot bound a FIFO) or ``"simulation"`` (an RTL sizing run
            on two random frames, :func:`sim.fifosizing.size_fifos`).
        log: progress lines (the sizing method and time).

    Returns:
        ``{"graph", "estimates", "report" (dict), "folding" (dict), "verilog" (Path or None),
        "fifo_depths" (dict or None), "fifo_sizing" (dict or None), "out_dir"}``.

    Raises:
        sw.compiler.lower.CompileError: unsupported model, bad folding, or a target no folding meets
            (naming the bottleneck layer and the rule); nothing is written then.
        sw.compiler.boards.BoardError: unknown board.
        ValueError: inconsistent arguments (``fps`` with a folding file, neither folding nor
            board, non-positive clock).
    """
    from sw.compiler.autofold import choose_folding
    from sw.compiler.boards import get_board
    from sw.compiler.estimate import estimate
    from sw.compiler.folding import apply_folding, load_folding
    from hw.graph import atomic_dir, write_text_atomic
    from sw.compiler.frontend import finn_folding_to_deflow, lower_model
    from sw.compiler.lower import CompileError
    from sw.compiler.report import write_report

    if folding_path is None and board is None:
        raise ValueError("compile needs a folding (--folding FILE) or a board to choose one for (--board)")
    if folding_path is not None and fps is not None:
        raise ValueError("--fps chooses a folding automatically; it cannot be combined with --folding")
    if clock_mhz is not None and clock_mhz <= 0:
        raise ValueError(f"clock must be positive, got {clock_mhz} MHz")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"model {onnx_path} does not exist")
    b = get_board(board or "ultra96v2")
    clock = float(clock_mhz or b.fabric_mhz)
    front = lower_model(onnx_path, input_scale, requant)
    lowered = front.graph
    distance = None
    if not json.loads(front.files["frontend.json"])["from_finn_hw_graph"]:
        from sw.compiler.fifo_analytic import random_frames
        from sw.compiler.frontend import brevitas_distance

        # the golden model against Brevitas's own quantised output (qonnx execution of the export)
        distance = brevitas_distance(front, lowered, onnx_path, np.stack(random_frames(lowered, 2)))
        front.files["frontend.json"] = json.dumps(
            json.loads(front.files["frontend.json"]) | {"brevitas_distance": distance},
            indent=1).encode()
        log(f"golden model vs Brevitas on 2 random frames: largest difference {distance['max_lsb']} "
            f"output LSB, {100 * distance['share_equal']:.2f}% of {distance['values']:,} values "
            "identical")
    if folding_path is not None:
        cfg = load_folding(folding_path)
        cfg = finn_folding_to_deflow(cfg, lowered)
    elif front.folding:  # an ONNX that FINN lowered and folded: keep its PE/SIMD
        cfg = finn_folding_to_deflow(front.folding, lowered)
    else:
        try:
            cfg = choose_folding(lowered, b, target_fps=fps, clock_mhz=clock)
        except CompileError as exc:
            if requant == "exact" and any(l.op == "Thresholding" for l in lowered.layers):
                raise CompileError(f"{exc} (--requant within1 turns threshold memories into "
                                   "requantisers, at most one output LSB away)") from None
            raise
    graph = apply_folding(lowered, cfg)
    est = estimate(graph)

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        graph.save(tmp / "hw_graph.json")
        for name, data in front.files.items():
            (tmp / name).write_bytes(data)
        write_text_atomic(tmp / "folding.json", json.dumps(cfg, indent=1))
        report = write_report(graph, est, b, clock, tmp, folding=cfg)
        vpath = depths = sizing = None
        if verilog:
            from amaranth.back import verilog as amaranth_verilog

            from hw.top import Accelerator
            from sw.compiler.fifo_analytic import size_fifos_auto
            from hw.graph import save_depths

            depths, sizing = size_fifos_auto(graph, fifo_sizing, log=log)
            top = Accelerator(graph, fifo_depths=depths)
            write_text_atomic(tmp / "deflow_top.v",
                              amaranth_verilog.convert(top, name="deflow_top", emit_src=False))
            save_depths(top.fifo_depths, tmp / "fifo_depths.json")
            write_text_atomic(tmp / "fifo_sizing.json", json.dumps(sizing, indent=1))
            vpath = out_dir / "deflow_top.v"
    return {"graph": graph, "estimates": est, "report": report, "folding": cfg, "lowered": front,
            "brevitas_distance": distance,
            "verilog": vpath, "fifo_depths": depths, "fifo_sizing": sizing, "out_dir": out_dir}


def _scale_arg(text: str) -> float | str:
    """``auto``, a number, or a fraction such as ``1/255``."""
    if text == "auto":
        return text
    try:
        num, _, den = text.partition("/")
        value = float(num) / (float(den) if den else 1.0)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--input-scale must be auto, a number or a fraction like 1/255, "
                         f"got {text!r}") from None
    if value <= 0:
        raise ValueError(f"--input-scale must be positive, got {text!r}")
    return value


def cmd_compile(args) -> int:
    from sw.compiler.estimate import format_table

    folding = Path(args.folding) if args.folding else None
    res = compile_model(Path(args.model), folding, Path(args.out), board=args.board,
                        fps=args.fps, clock_mhz=args.clock_mhz, verilog=not args.no_verilog,
                        fifo_sizing=args.fifo_sizing,
                        input_scale=_scale_arg(args.input_scale), requant=args.requant)
    t = res["report"]["totals"]
    print(format_table(res["estimates"]))
    print(f"estimate on {res['report']['board']} at {t['clock_mhz']:g} MHz: II {t['ii_cycles']:,} cycles "
          f"(bottleneck {t['bottleneck']}), {t['fps']:.1f} fps; LUT {t['luts']:,}, DSP {t['dsps']}, "
          f"BRAM36 {t['bram36']}, URAM {t['uram']}; fits: {'yes' if res['report']['fits'] else 'NO'}")
    fs = res["fifo_sizing"]
    if fs:
        model = (f", modelled frame interval {fs['model_interval']:,} cycles"
                 if "model_interval" in fs else "")
        print(f"FIFO depths sized by {fs['method']} in {fs['seconds']:.2f} s: "
              f"{len(res['fifo_depths'])} FIFOs, {fs['fifo_bits']:,} bits{model}")
    files = sorted(p.name for p in Path(args.out).iterdir())
    print(f"wrote {args.out}/ ({', '.join(files)})")
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with every option's default: argparse's ``(default: X)`` appended unless the
    help text already says what the default is (``default: the board's``)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _version() -> str:
    """The installed distribution's version (pyproject.toml), or ``unknown`` from a bare tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("deflow")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


# commands whose own parsers live with their modules: `deflow NAME ARGS` is `python -m MODULE ARGS`
PASSTHROUGH = {
    "bench": ("sw.flows.bench", "measured figures: compile every config for every board, RTL "
              "interval vs II, Yosys counts, VOC6 mAP50 (results.json/md in --out)"),
    "evaluate": ("models.evaluate", "VOC6 mAP50 of a checkpoint (float, W4A8 or --golden "
                 "integer model) on a VOC split"),
    "train": ("models.train", "train a detector config (float, then W4A8 quantisation-aware), "
              "with checkpoints and --resume"),
    "learning-curve": ("models.learning_curve", "plot training loss and val VOC6 mAP50 of "
                       "chained training runs into a PNG"),
}


def main(argv: list[str] | None = None) -> int:
    import importlib

    from sw.compiler.lower import CompileError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASSTHROUGH:
        return importlib.import_module(PASSTHROUGH[argv[0]][0]).main(argv[1:], prog=f"deflow {argv[0]}")
    p = argparse.ArgumentParser(
        prog="deflow", description="deflow: quantised CNN detectors (Brevitas QONNX) to "
        "streaming dataflow accelerators, verified bit for bit in RTL simulation. "
        "`deflow COMMAND --help` lists each command's options with their defaults.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    c = sub.add_parser("compile", help="QONNX model -> hardware graph, estimates, Verilog",
                       description="Lower a QONNX model through FINN's front end, fold it for a "
                       "board, estimate cycles and resources, size the FIFOs and write Verilog "
                       "into --out: hw_graph.json, folding.json, estimates.md/json/png, "
                       "fifo_depths.json, deflow_top.v.")
    c.add_argument("model", help="QONNX .onnx file (batch 1, fixed shape)")
    c.add_argument("--folding", default=None, help="FINN-format folding JSON (default: chosen for --board)")
    c.add_argument("--board", default=None, help="board to fold for / report against "
                   "(pynq-z2, ultra96v2, zcu104, kv260; default ultra96v2 with --folding)")
    c.add_argument("--fps", type=float, default=None, help="target frames/s at the clock (default: the fastest folding that fits)")
    c.add_argument("--clock-mhz", type=float, default=None, help="accelerator clock in MHz (default: the board's)")
    c.add_argument("--no-verilog", action="store_true", help="skip the Verilog (estimates only)")
    c.add_argument("--out", required=True, help="output folder (replaced whole, only on success)")
    c.add_argument("--input-scale", default="auto",
                   help="the model's input is pixels (0..255) times this; auto: 1 when the "
                   "input quantiser has scale 1, else 1/255 (images in [0, 1))")
    c.add_argument("--requant", choices=("exact", "within1", "never"), default="exact",
                   help="where an activation's threshold set becomes a requantiser (one "
                   "multiplier instead of 2**bits-1 thresholds per channel): only where exact, "
                   "also where it moves some accumulator values by one LSB, or never")
    c.add_argument("--fifo-sizing", choices=("analytical", "simulation"), default="analytical",
                   help="FIFO depths from the layers' cycle models (seconds) or by an "
                   "RTL simulation (minutes)")
    c.set_defaults(func=cmd_compile)
    from sw.flows.bitstream import add_bitstream_parser
    from sw.flows.demo import add_demo_parser
    from sim.folder_sim import add_simulate_parser

    add_demo_parser(sub)
    add_simulate_parser(sub)
    add_bitstream_parser(sub)
    for name, (module, text) in PASSTHROUGH.items():  # listed in --help; run above
        sub.add_parser(name, help=text, add_help=False)
    for sp in sub.choices.values():  # every option's default in its --help line
        sp.formatter_class = HelpFormatter
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except CompileError as exc:
        print(f"deflow: compile error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        # DemoError, CheckpointError, DataError, BitstreamError, AcceleratorError, ...
        print(f"deflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
