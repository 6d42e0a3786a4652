"""Training loop, float -> W4A8 weight transfer, resume, and evaluation end to end on a tiny
VOC folder (real photographs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.centernet import encode_targets
from models.detector import build_detector, load_checkpoint
from models.train import detection_loss, main as train_main, transfer_float_weights
from test_voc import make_voc  # tests/ is on sys.path (pytest rootdir-relative import)


def _batch(boxes, labels, size=128):
    t = encode_targets(np.asarray(boxes, np.float32), np.asarray(labels), size, 20)
    return {k: torch.from_numpy(v)[None] for k, v in t.items()}


def test_detection_loss_regression_terms_vanish_at_the_target():
    tgt = _batch([[16, 24, 80, 64]], [3])
    out = torch.zeros(1, 24, 32, 32)
    cy, cx = divmod(int(tgt["index"][0, 0]), 32)
    out[0, 20:22, cy, cx] = tgt["wh"][0, 0]
    out[0, 22:24, cy, cx] = tgt["reg"][0, 0]
    loss, parts = detection_loss(out, tgt)
    assert parts["wh"] == 0.0 and parts["reg"] == 0.0
    assert loss.item() == pytest.approx(parts["heat"]) and parts["heat"] > 0
    out[0, 20, cy, cx] += 2.0  # width off by 2 output pixels: L1 = 2 / 2 channels
    assert detection_loss(out, tgt)[1]["wh"] == pytest.approx(1.0, rel=1e-3)


def test_transfer_float_weights():
    torch.manual_seed(0)
    f = build_detector("small", quant=False)
    torch.manual_seed(1)
    q = build_detector("small", quant=True)
    transfer_float_weights(q, f)
    fs, qs = f.state_dict(), q.state_dict()
    assert all(torch.equal(fs[k], qs[k]) for k in fs)


def test_train_resume_and_evaluate(tmp_path):
    from models.evaluate import evaluate_checkpoint

    voc = make_voc(tmp_path / "voc")
    out = tmp_path / "run"
    args = ["--config", "small", "--float-epochs", "1", "--epochs", "1", "--batch-size", "2",
            "--voc-root", str(voc), "--out", str(out), "--skip-bad", "--threads", "1"]
    assert train_main(args) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert [(r["phase"], r["epoch"]) for r in log] == [("float", 1), ("w4a8", 1)]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    m, meta = load_checkpoint(out / "final.pt", expect_config="small", expect_quant=True)
    assert meta["phase"] == "w4a8" and meta["epoch"] == 1
    fm, fmeta = load_checkpoint(out / "float.pt", expect_quant=False)
    assert fmeta["phase"] == "float"
    # resume of a finished run trains nothing more and reproduces the same weights
    assert train_main(args + ["--resume", str(out / "last.pt"), "--out", str(tmp_path / "r2")]) == 0
    m2, _ = load_checkpoint(tmp_path / "r2" / "final.pt")
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k

    res = evaluate_checkpoint(out / "final.pt", "val", tmp_path / "eval", voc_root=voc,
                              n_images=2, progress=False)
    assert res["images"] == 3 and res["skipped"] == 2
    assert set(res["per_class"]) == {"cat"}  # the dogs are all difficult
    assert 0.0 <= res["voc6_map50"] <= 1.0
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["voc6_map50"] == res["voc6_map50"]
    assert (tmp_path / "eval" / "det_1.png").stat().st_size > 0
    assert "VOC6 mAP50" in (tmp_path / "eval" / "results.md").read_text()


def test_train_cli_errors_are_clear(tmp_path, capsys):
    voc = make_voc(tmp_path / "voc")
    assert train_main(["--voc-root", str(voc), "--out", str(tmp_path / "o")]) == 2
    assert "corrupt.jpg" in capsys.readouterr().err
