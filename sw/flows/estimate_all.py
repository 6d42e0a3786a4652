"""Estimates of every detector config on every board: ``python -m sw.flows.estimate_all``.

For each config (the slice network and every entry of ``models.detector.CONFIGS`` when that
module is importable) this exports the Brevitas W4A8 model to QONNX (cached under
``OUT/onnx/``), lowers it, chooses the fastest folding that fits each board
(:func:`sw.compiler.autofold.choose_folding`, no fps target) and writes the :mod:`sw.compiler.report` files to
``OUT/<config>/<board>/`` plus an index ``OUT/summary.md`` / ``OUT/summary.json`` (one row per
config x board: fps at the board's clock, II, bottleneck, LUT/DSP/BRAM36/URAM percent,
external-weight layers, DRAM GB/s; or why nothing fits).

All figures are analytical estimates (see :mod:`sw.compiler.report`). The detector weights are seeded
(``torch.manual_seed(0)``) and untrained, activation scales calibrated on 4 real images: the
estimates depend on shapes and bit widths only, not on trained values.

Cache: ``OUT/onnx/<config>.onnx`` with ``<config>.json`` beside it recording the exporter and
a hash of the models/ sources it was built from; a changed source or exporter re-exports.
"""

from __future__ import annotations

from sw import BUILD_ROOT

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BOARD_ORDER = ("pynq-z2", "ultra96v2", "zcu104", "kv260")
MODEL_SOURCES = ("models/detector.py", "models/deform.py", "models/slice.py", "models/export.py")


def available_configs() -> dict[str, int]:
    """``{config: input size}``: ``slice`` (64) and every ``models.detector.CONFIGS`` entry
    (empty besides the slice while models/detector.py has not landed)."""
    out = {"slice": 64}
    try:
        from models.detector import CONFIGS
    except ImportError:
        return out
    # smallest first, so that partial runs still cover the cheap configs
    for name, cfg in sorted(CONFIGS.items(), key=lambda kv: (kv[1].input_size, kv[0])):
        out[name] = cfg.input_size
    return out


def _sources_hash() -> str:
    h = hashlib.sha256()
    for rel in MODEL_SOURCES:
        p = REPO_ROOT / rel
        h.update(rel.encode() + (p.read_bytes() if p.exists() else b""))
    return h.hexdigest()[:16]


def export_config(name: str, onnx_dir: Path, dynamo: bool = True, force: bool = False) -> tuple[Path, float]:
    """QONNX export of config ``name`` into ``onnx_dir`` (cached).

    Returns:
        (path of the ``.onnx``, seconds spent exporting; 0.0 on a cache hit).

    Raises:
        ValueError: unknown config name.
    """
    import torch

    from models.data import sample_images
    from models.export import export_qonnx

    sizes = available_configs()
    if name not in sizes:
        raise ValueError(f"unknown config {name!r}; known: {', '.join(sizes)}")
    path, meta_path = onnx_dir / f"{name}.onnx", onnx_dir / f"{name}.json"
    meta = {"config": name, "exporter": "dynamo" if dynamo else "torchscript", "sources": _sources_hash()}
    if not force and path.exists() and meta_path.exists():
        try:
            cached = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            cached = {}
        if {k: cached.get(k) for k in meta} == meta:
            return path, 0.0
    size = sizes[name]
    t0 = time.time()
    calib = sample_images(4, size, split="train")
    if name == "slice":
        from models.slice import build_slice_model

        model = build_slice_model(seed=0, calibrate_images=calib)
    else:
        from models.detector import build_detector
        from models.slice import calibrate

        torch.manual_seed(0)
        model = build_detector(name).eval()
        calibrate(model, torch.from_numpy(calib.transpose(0, 3, 1, 2).astype("float32")))
    export_qonnx(model, path, input_shape=(1, 3, size, size), dynamo=dynamo)
    dt = time.time() - t0
    from hw.graph import write_text_atomic

    write_text_atomic(meta_path, json.dumps(meta | {"export_s": round(dt, 1)}, indent=1))
    return path, dt


def estimate_board(graph, board_name: str, out_dir: Path) -> dict:
    """Fastest fitting folding of ``graph`` on one board, its report in ``out_dir``.

    Returns:
        a summary row (``fits`` False with ``reason`` when no folding fits).
    """
    from hw.graph import atomic_dir
    from sw.compiler.autofold import choose_folding
    from sw.compiler.boards import get_board
    from sw.compiler.estimate import estimate
    from sw.compiler.folding import apply_folding
    from sw.compiler.lower import CompileError
    from sw.compiler.report import write_report

    board = get_board(board_name)
    try:
        cfg = choose_folding(graph, board)
    except CompileError as exc:
        return {"board": board.name, "fits": False, "reason": str(exc)}
    g = apply_folding(graph, cfg)
    est = estimate(g)
    with atomic_dir(out_dir) as tmp:
        rep = write_report(g, est, board, board.fabric_mhz, tmp, folding=cfg)
        (tmp / "folding.json").write_text(json.dumps(cfg, indent=1))
    t, pct = rep["totals"], rep["utilisation_percent"]
    return {"board": board.name, "fits": rep["fits"], "clock_mhz": board.fabric_mhz,
            "fps": t["fps"], "ii_cycles": t["ii_cycles"], "bottleneck": t["bottleneck"],
            "gmac_per_frame": t["gmac_per_frame"],
            "lut_pct": pct["luts"], "dsp_pct": pct["dsps"], "bram36_pct": pct["bram36"],
            "uram_pct": pct["uram"], "external_weight_layers": t["external_weight_layers"],
            "dram_gbps": t["dram_gbps"], "report": str(out_dir)}


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def format_summary(rows: list[dict]) -> str:
    """Markdown index of the summary rows."""
    out = ["# Estimates: every config x board (fastest fitting folding)", "",
           "All figures are analytical estimates (sw/compiler/estimate.py formulas, FINN/FINN-R sources), "
           "at each board's default clock; untrained seeded weights (shapes decide the numbers).", "",
           "| config | board | fps @ MHz | II (cycles) | bottleneck | GMAC/frame | LUT % | DSP % | BRAM36 % "
           "| URAM % | ext. weight layers | DRAM GB/s |",
           "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "fps" not in r:
            out.append(f"| {r['config']} | {r['board']} | does not fit: {r.get('reason', '?')} "
                       "| | | | | | | | | |")
            continue
        out.append(f"| {r['config']} | {r['board']} | {r['fps']:.1f} @ {r['clock_mhz']:g} | {r['ii_cycles']:,} "
                   f"| {r['bottleneck']} | {r['gmac_per_frame']:.3f} | {_pct(r['lut_pct'])} "
                   f"| {_pct(r['dsp_pct'])} | {_pct(r['bram36_pct'])} | {_pct(r['uram_pct'])} "
                   f"| {r['external_weight_layers']} | {r['dram_gbps']:.2f} |")
    return "\n".join(out) + "\n"


def write_summary(rows: list[dict], out: Path) -> None:
    """``summary.json`` and ``summary.md`` in ``out``, each written atomically."""
    from hw.graph import write_text_atomic

    write_text_atomic(out / "summary.json", json.dumps(rows, indent=1))
    write_text_atomic(out / "summary.md", format_summary(rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sw.flows.estimate_all", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(BUILD_ROOT / "estimates"))
    p.add_argument("--configs", nargs="+", default=None, help="configs (default: slice + all CONFIGS)")
    p.add_argument("--boards", nargs="+", default=list(BOARD_ORDER))
    p.add_argument("--torchscript", action="store_true", help="export with the TorchScript exporter "
                   "(dynamo=False); default: Brevitas' dynamo exporter (measured faster here: 85-89 s "
                   "vs 128-170 s for the small detector; both lower to the same graph)")
    p.add_argument("--force-export", action="store_true", help="ignore the ONNX cache")
    args = p.parse_args(argv)

    from tqdm import tqdm

    from sw.compiler.boards import get_board
    from sw.compiler.lower import HW_REQUANT, CompileError, lower_qonnx

    known = available_configs()
    configs = args.configs or list(known)
    bad = [c for c in configs if c not in known]
    if bad:
        print(f"estimate_all: unknown config(s) {', '.join(bad)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    try:
        boards = [get_board(b).name for b in args.boards]
    except ValueError as exc:
        print(f"estimate_all: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rows: list[dict] = []
    bar = tqdm(total=len(configs) * (len(boards) + 2), unit="step", file=sys.stderr)
    for name in configs:
        bar.set_description(f"{name}: export")
        onnx, dt = export_config(name, out / "onnx", dynamo=not args.torchscript, force=args.force_export)
        bar.update(1)
        bar.set_description(f"{name}: lower")
        t0 = time.time()
        try:
            # deflow's streamliner until FINN's front end lowers the max-pool stem
            graph = lower_qonnx(onnx, requant=HW_REQUANT)
        except CompileError as exc:
            rows += [{"config": name, "board": b, "fits": False, "reason": f"lowering: {exc}"} for b in boards]
            bar.update(1 + len(boards))
            write_summary(rows, out)
            continue
        t_lower = time.time() - t0
        bar.update(1)
        for b in boards:
            bar.set_description(f"{name}: {b}")
            t1 = time.time()
            row = {"config": name} | estimate_board(graph, b, out / name / b)
            row.update(export_s=round(dt, 1), lower_s=round(t_lower, 1), fold_s=round(time.time() - t1, 1))
            rows.append(row)
            bar.update(1)
            write_summary(rows, out)  # partial index after every step
    bar.close()
    write_summary(rows, out)
    print(format_summary(rows))
    print(f"wrote {out}/summary.md, summary.json and {len(rows)} report folder(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
