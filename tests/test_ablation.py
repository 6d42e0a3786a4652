"""models/ablation.py end to end on a few images: rows, figures, resume without retraining."""

from __future__ import annotations

import json

import pytest

from models import ablation


@pytest.mark.slow  # trains three tiny models: about a minute
def test_ablation_rows_and_resume(tmp_path, capsys):
    out = tmp_path / "abl"
    argv = ["--forms", "plain,rounded", "--epochs", "1", "--qat-epochs", "1", "--limit", "32",
            "--threads", "1", "--out", str(out)]
    assert ablation.main(argv) == 0
    res = json.loads((out / "ablation.json").read_text())
    rows = res["rows"]
    assert [(r["decoder_form"], r["precision"]) for r in rows] == [
        ("plain", "float"), ("rounded", "float"), ("rounded", "W4A8")]
    for r in rows:
        assert 0.0 <= r["voc6_map50"] <= 100.0 and r["final_train_loss"] > 0
        assert r["train_seconds"] > 0
    md = (out / "ablation.md").read_text()
    assert "| rounded W4A8 | rounded | W4A8 |" in md
    # a second run reuses every checkpoint and evaluation: nothing is retrained
    mtime = (out / "plain_float" / "final.pt").stat().st_mtime
    assert ablation.main(argv) == 0
    assert (out / "plain_float" / "final.pt").stat().st_mtime == mtime
    assert all(r["train_seconds"] is None for r in json.loads((out / "ablation.json").read_text())["rows"])


def test_ablation_refuses_unknown_form(tmp_path, capsys):
    assert ablation.main(["--forms", "plain,wobbly", "--out", str(tmp_path)]) == 2
    assert "wobbly" in capsys.readouterr().err
