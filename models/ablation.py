"""Decoder-form ablation at one config, after CoDeNet's Table 1, on our VOC data.

    python -m models.ablation [--config small] [--epochs 30] [--qat-epochs 2] [--out runs/ablation]
        [--forms plain,full,...] [--threads 2] [--limit N]

For every decoder form (``plain`` depthwise 3x3, ``full`` deformable, ``depthwise``
deformable, ``+ bounded``, ``+ square``, ``+ rounded``) it trains the float model for the same
number of epochs with the same seed, learning rate and data order (``models.train --float``),
then fine-tunes the hardware form (``rounded``) to W4A8 from its float weights, and evaluates
every checkpoint on VOC ``val`` (``models.evaluate``: VOC6 mAP50 and mAP50 over the classes
present). Runs whose ``final.pt`` and ``eval/results.json`` already exist are reused, so an
interrupted ablation resumes where it stopped.

Writes ``ablation.json`` and ``ablation.md`` under ``--out`` (each atomically): one row per
model with its form, precision, epochs, final training loss, wall time (seconds) and AP50
figures in percent.

Raises (exit code 2 from the command line): ``RuntimeError`` naming the run and its log when a
training or evaluation step fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from hw.graph import write_text_atomic

#: the forms in Table 1 order: plain 3x3, then the deformable forms towards the hardware one
FORMS = ("plain", "full", "depthwise", "bounded", "square", "rounded")
HW_FORM = "rounded"


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output appended to ``log``; returns wall seconds."""
    t0 = time.time()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[2:4])} failed (exit {rc}); see {log}")
    return time.time() - t0


def _final_loss(run_dir: Path) -> float | None:
    p = run_dir / "train_log.json"
    if not p.exists():
        return None
    log = json.loads(p.read_text())
    return log[-1]["loss"] if log else None


def run_one(name: str, train_args: list[str], run_dir: Path, args) -> dict:
    """Train (unless ``final.pt`` exists) and evaluate one ablation row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "run.log"
    py = [sys.executable, "-m"]
    ckpt, res_path = run_dir / "final.pt", run_dir / "eval" / "results.json"
    train_s = None
    if not ckpt.exists():
        print(f"[ablation] training {name} ({run_dir})", flush=True)
        train_s = _run(py + ["models.train", "--config", args.config, "--batch-size",
                             str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
                             "--threads", str(args.threads), "--out", str(run_dir)]
                       + (["--limit", str(args.limit)] if args.limit else []) + train_args, log)
    if not res_path.exists():
        print(f"[ablation] evaluating {name}", flush=True)
        _run(py + ["models.evaluate", str(ckpt), "--split", "val", "--out",
                   str(run_dir / "eval"), "--threads", str(args.threads), "--batch-size", "64"]
             + (["--limit", str(args.limit)] if args.limit else []), log)
    res = json.loads(res_path.read_text())
    return {"model": name, "decoder_form": res["decoder_form"],
            "precision": "W4A8" if res["quant"] else "float",
            "final_train_loss": _final_loss(run_dir), "train_seconds": train_s,
            "voc6_map50": 100 * res["voc6_map50"], "map50_present": 100 * res["map50_present"],
            "per_class": {k: 100 * v for k, v in res["per_class"].items()},
            "checkpoint": str(ckpt)}


def table_md(rows: list[dict], args) -> str:
    lines = [f"# Decoder-form ablation, config `{args.config}`, VOC val",
             "",
             f"Float: {args.epochs} epochs per form (Adam, lr {args.lr}, batch "
             f"{args.batch_size}, seed {args.seed}); W4A8: {args.qat_epochs} epochs from the "
             f"`{HW_FORM}` float weights. AP50 in percent.",
             "",
             "| model | decoder form | precision | final train loss | VOC6 mAP50 | mAP50 (present) |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        loss = f"{r['final_train_loss']:.3f}" if r["final_train_loss"] is not None else "-"
        lines.append(f"| {r['model']} | {r['decoder_form']} | {r['precision']} | {loss} | "
                     f"{r['voc6_map50']:.2f} | {r['map50_present']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.ablation", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small")
    p.add_argument("--epochs", type=int, default=30, help="float epochs per form")
    p.add_argument("--qat-epochs", type=int, default=2, help="W4A8 epochs of the hardware form")
    p.add_argument("--forms", default=",".join(FORMS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--limit", type=int, default=None,
                   help="first N train and N val images only (a quick check of the pipeline)")
    args = p.parse_args(argv)
    forms = [f for f in args.forms.split(",") if f]
    bad = [f for f in forms if f not in FORMS]
    if bad:
        print(f"error: unknown decoder form(s) {bad}; choose from {FORMS}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for f in forms:
            rows.append(run_one(f"{f} float", ["--float", "--decoder-form", f, "--epochs",
                                               str(args.epochs)], out / f"{f}_float", args))
            write_text_atomic(out / "ablation.md", table_md(rows, args))
        if HW_FORM in forms and args.qat_epochs > 0:
            parent = out / f"{HW_FORM}_float" / "final.pt"
            rows.append(run_one(f"{HW_FORM} W4A8", ["--decoder-form", HW_FORM, "--init",
                                                    str(parent), "--epochs", str(args.qat_epochs)],
                                out / f"{HW_FORM}_w4a8", args))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_text_atomic(out / "ablation.json", json.dumps({"config": args.config, "epochs": args.epochs,
                                                      "qat_epochs": args.qat_epochs, "rows": rows},
                                                     indent=1))
    write_text_atomic(out / "ablation.md", table_md(rows, args))
    print(table_md(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
