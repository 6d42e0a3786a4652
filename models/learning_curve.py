"""Plot the learning curve of one or more chained training runs (legs).

    python -m models.learning_curve RUN_DIR[:PHASE] [RUN_DIR[:PHASE] ...] --out curve.png [--title T]

Each ``RUN_DIR`` is an ``--out`` folder of ``python -m models.train``; its per-epoch records are
read from ``train_log.json`` (or, when that is missing, the JSON lines of ``train.log``). The runs
are drawn one after another on a common epoch axis, in the order given (leg 2 warm-started from
leg 1, and so on), with a dashed line where a leg or a phase (float -> W4A8) begins. Top panel:
mean training loss per epoch (CenterNet focal + 0.1 L1 size + L1 offset); bottom panel: VOC6
mAP50 on ``val`` in percent at the epochs where the run measured it (``--eval-every``).
``RUN_DIR:float`` (or ``:w4a8``) keeps only that phase of a run: a leg that warm-starts from the
previous leg's ``float.pt`` follows its float phase, not its W4A8 phase.

Writes the PNG atomically (:func:`models.data.write_bytes_atomic`).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from models.data import write_bytes_atomic


class LearningCurveError(ValueError):
    """A run folder has no readable per-epoch log."""


def read_run_log(run_dir) -> list[dict]:
    """The per-epoch records of one training run, in order.

    Returns:
        list of ``{"phase": "float" | "w4a8", "epoch": int (1-based within the phase),
        "loss": float, "val_map50": float (percent, only where measured), ...}``.
    Raises:
        LearningCurveError: no ``train_log.json`` or ``train.log`` in ``run_dir``, one that is not
            JSON, or one without any record that has ``phase``, ``epoch`` and ``loss``.
    """
    run_dir = Path(run_dir)
    js, lines = run_dir / "train_log.json", run_dir / "train.log"
    try:
        if js.is_file():
            recs = json.loads(js.read_text())
        elif lines.is_file():
            recs = [json.loads(s) for s in lines.read_text().splitlines() if s.strip()]
        else:
            raise LearningCurveError(f"{run_dir}: no train_log.json or train.log (not a "
                                     f"`python -m models.train --out` folder?)")
    except json.JSONDecodeError as e:
        raise LearningCurveError(f"{run_dir}: training log is not JSON ({e})") from None
    if not isinstance(recs, list):
        raise LearningCurveError(f"{run_dir}: training log is not a list of epoch records")
    recs = [r for r in recs if isinstance(r, dict) and {"phase", "epoch", "loss"} <= r.keys()]
    if not recs:
        raise LearningCurveError(f"{run_dir}: training log has no epoch records")
    return recs


PHASES = ("float", "w4a8")


def _split_phase(spec) -> tuple[Path, str | None]:
    head, sep, tail = str(spec).rpartition(":")
    return (Path(head), tail) if sep and tail in PHASES else (Path(spec), None)


def chain_runs(run_dirs) -> tuple[list[dict], list[tuple[int, str]]]:
    """Concatenate the runs' records on one epoch axis; ``DIR:float`` / ``DIR:w4a8`` keeps only
    that phase of a run.

    Returns:
        ``(points, boundaries)``: ``points`` are the records with an added ``"x"`` (1-based epoch
        on the common axis) and ``"run"`` (the folder name); ``boundaries`` are
        ``(x_before_first_epoch, label)`` for the start of every leg and every phase change.
    Raises:
        LearningCurveError: see :func:`read_run_log`.
    """
    points, bounds, x = [], [], 0
    for spec in run_dirs:
        d, only = _split_phase(spec)
        name, phase = d.name, None
        recs = [r for r in read_run_log(d) if only is None or r["phase"] == only]
        if not recs:
            raise LearningCurveError(f"{d}: no {only} epochs in its training log")
        for r in recs:
            if r["phase"] != phase:
                label = f"{name}: {r['phase']}"
                bounds.append((x, label))
                phase = r["phase"]
            x += 1
            points.append(dict(r, x=x, run=name))
    return points, bounds


def plot_learning_curve(run_dirs, out, title: str | None = None) -> dict:
    """Draw the chained learning curve of ``run_dirs`` into the PNG ``out`` (atomically).

    Returns:
        ``{"epochs": total epochs, "val": [(x, val_map50), ...], "best_val": (x, val) or None,
        "loss_scale": "linear" | "log"}``; the loss axis is logarithmic when the largest loss is
        over 5x the smallest (a fresh network's first epochs would flatten the rest).
    Raises:
        LearningCurveError: see :func:`read_run_log`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, bounds = chain_runs(run_dirs)
    val = [(p["x"], p["val_map50"]) for p in points if "val_map50" in p]
    fig, (ax_loss, ax_val) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True,
                                          gridspec_kw={"height_ratios": [1, 1]})
    colours = {"float": "tab:blue", "w4a8": "tab:orange"}
    for phase, colour in colours.items():
        xs = [p["x"] for p in points if p["phase"] == phase]
        if xs:
            ax_loss.plot(xs, [p["loss"] for p in points if p["phase"] == phase], ".", ms=3,
                         color=colour, label=f"{phase} training loss")
            pv = [(p["x"], p["val_map50"]) for p in points if p["phase"] == phase and "val_map50" in p]
            if pv:
                ax_val.plot(*zip(*pv), "o-", color=colour, label=f"{phase} val VOC6 mAP50")
                for vx, vy in pv:
                    ax_val.annotate(f"{vy:.2f}", (vx, vy), textcoords="offset points",
                                    xytext=(0, 6), ha="center", fontsize=7)
    for bx, label in bounds:
        for ax in (ax_loss, ax_val):
            ax.axvline(bx + 0.5, color="grey", ls="--", lw=0.7)
        ax_loss.text(bx + 1, 1.0, label, transform=ax_loss.get_xaxis_transform(), fontsize=7,
                     rotation=90, va="top", ha="left", color="grey")
    losses = [p["loss"] for p in points if p["loss"] > 0]
    loss_scale = "log" if losses and max(losses) > 5 * min(losses) else "linear"
    ax_loss.set_yscale(loss_scale)
    ax_loss.set_ylabel("loss (log scale)" if loss_scale == "log" else "loss")
    ax_loss.legend(fontsize=8, loc="best")
    ax_val.set_ylabel("VOC6 mAP50 (%)")
    ax_val.set_xlabel("epoch (legs chained)")
    if val:
        ax_val.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, buf.getvalue())
    best = max(val, key=lambda v: v[1]) if val else None
    return {"epochs": len(points), "val": val, "best_val": best, "loss_scale": loss_scale}


def main(argv=None, prog: str = "python -m models.learning_curve") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Plot training loss and val VOC6 mAP50 "
                                "of chained training runs (legs) into one PNG.")
    p.add_argument("runs", nargs="+", help="run folders (--out of models.train), in leg order; DIR:float or DIR:w4a8 keeps one phase")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default=None)
    a = p.parse_args(argv)
    try:
        res = plot_learning_curve(a.runs, a.out, a.title)
    except LearningCurveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    best = f", best val {res['best_val'][1]:.2f} at epoch {res['best_val'][0]}" if res["best_val"] else ""
    print(f"wrote {a.out}: {res['epochs']} epochs{best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
