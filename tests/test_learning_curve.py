"""models.learning_curve: chained legs on one epoch axis, phase filter, bad input."""
import json

import pytest

from models.learning_curve import LearningCurveError, chain_runs, main, plot_learning_curve


def _run(tmp_path, name, recs, jsonl=False):
    d = tmp_path / name
    d.mkdir()
    if jsonl:
        (d / "train.log").write_text("".join(json.dumps(r) + "\n" for r in recs))
    else:
        (d / "train_log.json").write_text(json.dumps(recs))
    return d


def _recs(phase, n, loss0, val_every=0, val0=20.0):
    out = []
    for e in range(1, n + 1):
        r = {"phase": phase, "epoch": e, "loss": loss0 - 0.01 * e, "seconds": 40.0}
        if val_every and e % val_every == 0:
            r["val_map50"] = val0 + e / 10
        out.append(r)
    return out


def test_chain_runs_axis_boundaries_and_phase_filter(tmp_path):
    a = _run(tmp_path, "leg1", _recs("float", 4, 3.0, 2) + _recs("w4a8", 2, 3.1, 1))
    b = _run(tmp_path, "leg2", _recs("float", 3, 2.9, 3, 25.0), jsonl=True)
    pts, bounds = chain_runs([a, b])
    assert [p["x"] for p in pts] == list(range(1, 10))
    assert bounds == [(0, "leg1: float"), (4, "leg1: w4a8"), (6, "leg2: float")]
    pts, bounds = chain_runs([f"{a}:float", b])
    assert [(p["run"], p["phase"], p["epoch"], p["x"]) for p in pts][3:5] == [
        ("leg1", "float", 4, 4), ("leg2", "float", 1, 5)]
    assert bounds == [(0, "leg1: float"), (4, "leg2: float")]


def test_plot_writes_png_and_reports_best_val(tmp_path):
    a = _run(tmp_path, "leg1", _recs("float", 4, 3.0, 2))
    b = _run(tmp_path, "leg2", _recs("float", 3, 2.9, 3, 25.0))
    out = tmp_path / "sub" / "curve.png"
    res = plot_learning_curve([a, b], out, title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["epochs"] == 7
    assert res["val"] == [(2, 20.2), (4, 20.4), (7, 25.3)]
    assert res["best_val"] == (7, 25.3)
    assert res["loss_scale"] == "linear"
    assert [p.name for p in out.parent.iterdir()] == ["curve.png"]
    # a fresh network's first epoch (loss 38 against 3) switches the loss axis to log
    c = _run(tmp_path, "fresh", [{"phase": "float", "epoch": 1, "loss": 38.0}] + _recs("float", 3, 3.0)[1:])
    assert plot_learning_curve([c], tmp_path / "fresh.png")["loss_scale"] == "log"


def test_bad_input_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "c.png"
    assert main([str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no train_log.json or train.log" in err
    assert "\n" not in err and not out.exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train_log.json").write_text("{not json")
    with pytest.raises(LearningCurveError, match="not JSON"):
        chain_runs([bad])
    only_float = _run(tmp_path, "f", _recs("float", 2, 3.0))
    with pytest.raises(LearningCurveError, match="no w4a8 epochs"):
        chain_runs([f"{only_float}:w4a8"])
