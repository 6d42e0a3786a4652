"""Command line: ``deflow compile`` (QONNX -> folded hardware graph, estimates, Verilog) and
``deflow demo`` (the main job: a Brevitas W4A8 network with a deformable layer, exported,
compiled and run as RTL simulation on a real image, checked bit for bit)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SLICE_FOLDING = REPO_ROOT / "sw" / "configs" / "slice_folding.json"


def compile_model(onnx_path: Path, folding_path: Path, out_dir: Path) -> dict:
    """Lower, fold, estimate and emit Verilog for a QONNX model into ``out_dir``.

    Everything is written into a temporary sibling folder first and renamed at the end, so
    ``out_dir`` holds either the complete result of this run or what it held before.

    Returns:
        ``{"graph": HWGraph, "estimates": [...], "verilog": Path}``.

    Raises:
        sw.lower.CompileError: unsupported model or folding (before any file is written).
    """
    from amaranth.back import verilog

    from hw.top import Accelerator
    from sw.estimate import bottleneck, estimate
    from sw.folding import apply_folding, load_folding
    from sw.hwgraph import write_text_atomic
    from sw.lower import lower_qonnx

    graph = apply_folding(lower_qonnx(onnx_path), load_folding(folding_path))
    est = estimate(graph)
    top = Accelerator(graph)
    text = verilog.convert(top, name="deflow_top", emit_src=False)

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    graph.save(tmp / "hw_graph.json")
    write_text_atomic(tmp / "folding.json", json.dumps(
        {l.name: l.folding for l in graph.layers if l.folding}, indent=1))
    bn = bottleneck(est)
    write_text_atomic(tmp / "estimates.json", json.dumps({
        "layers": [vars(e) for e in est],
        "bottleneck": bn.name,
        "initiation_interval_cycles": bn.cycles,
        "fifo_depths": top.fifo_depths,
    }, indent=1))
    write_text_atomic(tmp / "deflow_top.v", text)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return {"graph": graph, "estimates": est, "verilog": out_dir / "deflow_top.v"}


def cmd_compile(args) -> int:
    res = compile_model(Path(args.model), Path(args.folding), Path(args.out))
    from sw.estimate import format_table

    print(format_table(res["estimates"]))
    print(f"wrote {args.out}/ (hw_graph.json, folding.json, estimates.json, deflow_top.v)")
    return 0


def cmd_demo(args) -> int:
    from models.data import SKIMAGE_FALLBACK, find_voc_root, sample_images, voc_ids
    from models.export import export_qonnx, run_qonnx
    from models.slice import build_slice_model
    from sw.estimate import bottleneck, format_table
    from sw.execute import run_graph
    from sw.rtlsim import simulate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    voc = find_voc_root(args.voc)
    print(f"[1/5] data: {'VOC at ' + str(voc) if voc else 'no VOC folder; scikit-image sample photos'}")
    calib = sample_images(8, 64, split="train", voc_root=voc)
    model = build_slice_model(seed=0, calibrate_images=calib)
    onnx_path = out / "slice.onnx"
    print(f"[2/5] export: Brevitas W4A8 network -> QONNX {onnx_path}")
    export_qonnx(model, onnx_path, input_shape=(1, 3, 64, 64))

    print(f"[3/5] compile with folding {args.folding}")
    res = compile_model(onnx_path, Path(args.folding), out / "compiled")
    graph, est = res["graph"], res["estimates"]
    print(format_table(est))

    images = sample_images(args.frames, 64, split="val", voc_root=voc)
    names = (voc_ids(voc, "val")[: args.frames] if voc else
             [SKIMAGE_FALLBACK[i % len(SKIMAGE_FALLBACK)] for i in range(args.frames)])
    print(f"[4/5] golden integer model vs QONNX (Brevitas) execution on {', '.join(names)}")
    out_info = graph.tensors[graph.output]
    for img, name in zip(images, names):
        gold = run_graph(graph, img)[graph.output]
        ref = run_qonnx(onnx_path, img[None].transpose(0, 3, 1, 2).astype(np.float32))
        ref_int = np.round(ref[0].transpose(1, 2, 0) / out_info.scale).astype(np.int64)
        diff = np.abs(gold - ref_int)
        print(f"      {name}: max |golden - QONNX| = {int(diff.max())} LSB, "
              f"{100.0 * np.mean(diff == 0):.1f}% of {diff.size} values identical")

    print(f"[5/5] RTL simulation (Verilator) of {args.frames} frame(s)")
    run = simulate(graph, images, waves=args.waves)
    bn = bottleneck(est)
    total = sum(run.mismatches)
    for name, mism, cyc in zip(names, run.mismatches, run.cycles):
        print(f"      {name}: {'BIT-EXACT' if mism == 0 else 'MISMATCH'} "
              f"({mism} of {out_info.values_per_frame} values differ), {cyc} cycles")
    print(f"cycles per frame: measured {run.cycles[0]} (first frame, incl. pipeline fill)"
          + (f", {run.cycles[-1]} (steady state)" if len(run.cycles) > 1 else "")
          + f"; expected initiation interval {bn.cycles} (bottleneck {bn.name})")
    print(f"Verilog:  {res['verilog']}")
    wave = run.build_dir / "dump.vcd"
    print(f"waveform: {wave if wave.exists() else 'not written (run with --waves)'}")
    print(f"done in {time.time() - t0:.0f} s: {'bit-exact' if total == 0 else f'{total} mismatches'}")
    return 0 if total == 0 else 1


def main(argv: list[str] | None = None) -> int:
    from sw.lower import CompileError

    p = argparse.ArgumentParser(prog="deflow", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile", help="QONNX model -> hardware graph, estimates, Verilog")
    c.add_argument("model", help="QONNX .onnx file (batch 1, fixed shape)")
    c.add_argument("--folding", default=str(DEFAULT_SLICE_FOLDING), help="FINN-format folding JSON")
    c.add_argument("--out", required=True, help="output folder (replaced whole)")
    c.set_defaults(func=cmd_compile)
    d = sub.add_parser("demo", help="the end-to-end slice on real images through RTL simulation")
    d.add_argument("--voc", default=None, help="VOC folder (default: $DEFLOW_VOC_ROOT or ../shared/data/voc2012-subset)")
    d.add_argument("--frames", type=int, default=2, help="images to stream through the RTL")
    d.add_argument("--folding", default=str(DEFAULT_SLICE_FOLDING))
    d.add_argument("--out", default=str(REPO_ROOT / "build" / "demo"))
    d.add_argument("--waves", action="store_true", help="write an FST waveform")
    d.set_defaults(func=cmd_demo)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except CompileError as exc:
        print(f"deflow: compile error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"deflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
