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
from test_voc import OBJ, XML, make_voc  # tests/ is on sys.path (pytest rootdir-relative import)


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
    assert saved["top1"] == res["top1"] and res["top1"]["images"] == 3
    assert (tmp_path / "eval" / "det_1.png").stat().st_size > 0
    assert "VOC6 mAP50" in (tmp_path / "eval" / "results.md").read_text()


def test_train_cli_errors_are_clear(tmp_path, capsys):
    voc = make_voc(tmp_path / "voc")
    assert train_main(["--voc-root", str(voc), "--out", str(tmp_path / "o")]) == 2
    assert "corrupt.jpg" in capsys.readouterr().err


def test_warmup_cosine_schedule():
    from models.train import lr_lambda

    f = lr_lambda(total=100, warmup=10)
    assert f(0) == pytest.approx(0.1) and f(5) == pytest.approx(0.55)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5 * 0.98 + 0.02)
    assert f(100) == pytest.approx(0.02) and f(500) == pytest.approx(0.02)
    g = lr_lambda(total=100, warmup=0)  # the schedule before warmup existed
    assert g(0) == pytest.approx(1.0) and g(50) == pytest.approx(0.5 * 0.98 + 0.02)


def test_model_ema_ramp_and_copy():
    from models.train import ModelEMA

    m = torch.nn.BatchNorm1d(2)
    ema = ModelEMA(m, decay=0.5, ramp=1.0)
    with torch.no_grad():
        m.weight.fill_(3.0)
    m.num_batches_tracked.fill_(7)
    ema.update(m)
    d = 0.5 * (1 - np.exp(-1.0))  # first update's decay
    assert torch.allclose(ema.state["weight"], torch.full((2,), d * 1.0 + (1 - d) * 3.0))
    assert int(ema.state["num_batches_tracked"]) == 7  # integer buffers are copied
    m2 = torch.nn.BatchNorm1d(2)
    ema.copy_to(m2)
    assert torch.equal(m2.weight, ema.state["weight"])
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(m, decay=1.0)


def test_init_matching_and_identity_refine_keep_the_function(tmp_path):
    """Warm start of a dw3x3-head model from an "upsampled" checkpoint: every tensor but the
    refine block's is loaded, and the identity-initialised refine block leaves the eval-mode
    output unchanged (up to float rounding)."""
    from models.detector import save_checkpoint
    from models.train import identity_init_refine, init_matching

    torch.manual_seed(0)
    old = build_detector("small", quant=False)
    old.train()
    with torch.no_grad():  # non-trivial BN statistics
        for _ in range(3):
            old(torch.rand(4, 3, 128, 128) * 255)
    old.eval()
    save_checkpoint(tmp_path / "old.pt", old)
    new = build_detector("small", quant=False, head_form="dw3x3")
    loaded, fresh = init_matching(new, tmp_path / "old.pt")
    assert len(loaded) == len(old.state_dict())
    assert fresh == ["refine.0.weight", "refine.1.bias", "refine.1.num_batches_tracked",
                     "refine.1.running_mean", "refine.1.running_var", "refine.1.weight"]
    x = torch.rand(4, 3, 128, 128) * 255
    identity_init_refine(new, [(x, None)], batches=1)
    new.eval()
    with torch.no_grad():
        a, b = old(x), new(x)
    assert (a - b).abs().max() < 1e-3 * a.abs().max()
    from models.detector import CheckpointError
    small = build_detector("small", quant=False)
    torch.save({"format": "deflow-detector-v1", "state_dict": {"x": torch.zeros(1)}},
               tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="no tensor matches"):
        init_matching(small, tmp_path / "none.pt")


def test_train_with_ema_warmup_eval_and_dw3x3_head(tmp_path):
    voc = make_voc(tmp_path / "voc")
    out = tmp_path / "run"
    args = ["--config", "small", "--head-form", "dw3x3", "--float-epochs", "2", "--epochs", "1",
            "--batch-size", "2", "--warmup-epochs", "1", "--ema", "0.9", "--eval-every", "1",
            "--voc-root", str(voc), "--out", str(out), "--skip-bad", "--threads", "1"]
    assert train_main(args) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert [(r["phase"], r["epoch"]) for r in log] == [("float", 1), ("float", 2), ("w4a8", 1)]
    assert all(0.0 <= r["val_map50"] <= 100.0 for r in log)
    assert len((out / "train.log").read_text().splitlines()) == 3
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["head_form"] == "dw3x3" and "ema" not in last["meta"]  # EMA: float phase only
    fm, fmeta = load_checkpoint(out / "float.pt", expect_head_form="dw3x3", expect_quant=False)
    m, meta = load_checkpoint(out / "final.pt", expect_head_form="dw3x3", expect_quant=True)
    assert meta["phase"] == "w4a8"


def test_resume_restores_the_ema_state(tmp_path):
    """last.pt carries the EMA: resuming a finished float run reproduces its EMA weights."""
    voc = make_voc(tmp_path / "voc")
    args = ["--config", "small", "--float", "--epochs", "2", "--batch-size", "2", "--ema", "0.9",
            "--voc-root", str(voc), "--skip-bad", "--threads", "1"]
    assert train_main(args + ["--out", str(tmp_path / "a")]) == 0
    last = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    assert last["meta"]["ema"]["updates"] == 2  # 2 epochs x 1 iteration (3 images, batch 2)
    a, _ = load_checkpoint(tmp_path / "a" / "final.pt")
    for k, v in a.state_dict().items():  # final.pt holds the EMA weights, not the raw ones
        assert torch.equal(v, last["meta"]["ema"]["state"][k]), k
    assert train_main(args + ["--out", str(tmp_path / "b"),
                              "--resume", str(tmp_path / "a" / "last.pt")]) == 0
    b, _ = load_checkpoint(tmp_path / "b" / "final.pt")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_restart_ema_starts_the_average_from_the_resumed_weights(tmp_path, capsys):
    """--restart-ema on a resume drops last.pt's EMA: the resumed phase's EMA starts from the
    raw weights of last.pt (an epoch of 0 remaining iterations leaves exactly those)."""
    voc = make_voc(tmp_path / "voc")
    args = ["--config", "small", "--float", "--epochs", "2", "--batch-size", "2", "--ema", "0.9",
            "--voc-root", str(voc), "--skip-bad", "--threads", "1"]
    assert train_main(args + ["--out", str(tmp_path / "a")]) == 0
    raw, _ = load_checkpoint(tmp_path / "a" / "last.pt")
    ema = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["meta"]["ema"]["state"]
    assert any(not torch.equal(v, ema[k]) for k, v in raw.state_dict().items()
               if v.dtype.is_floating_point)
    assert train_main(args + ["--out", str(tmp_path / "b"), "--restart-ema",
                              "--resume", str(tmp_path / "a" / "last.pt")]) == 0
    b, _ = load_checkpoint(tmp_path / "b" / "final.pt")
    for k, v in raw.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert train_main(args + ["--out", str(tmp_path / "c"), "--restart-ema"]) == 2
    assert "--restart-ema needs --resume" in capsys.readouterr().err


def test_qat_ema_averages_the_w4a8_weights_and_resumes(tmp_path):
    """--qat-ema: the W4A8 phase keeps an EMA (activation scales included); final.pt holds the
    EMA state, last.pt carries it, and a resume of the finished run reproduces it."""
    voc = make_voc(tmp_path / "voc")
    args = ["--config", "small", "--head-form", "dw3x3", "--epochs", "3", "--batch-size", "2",
            "--qat-ema", "0.9", "--ema-ramp", "1", "--voc-root", str(voc), "--skip-bad",
            "--threads", "1"]
    assert train_main(args + ["--out", str(tmp_path / "a")]) == 0
    last = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    assert last["meta"]["phase"] == "w4a8"
    assert last["meta"]["ema"]["updates"] == 3  # 3 epochs x 1 iteration (3 images, batch 2)
    a, _ = load_checkpoint(tmp_path / "a" / "final.pt", expect_quant=True)
    raw = last["state_dict"]
    ema_state = last["meta"]["ema"]["state"]
    scales = [k for k in ema_state if k.endswith("scaling_impl.value")]
    assert scales  # the learned activation scales are averaged too
    differ = [k for k, v in ema_state.items()
              if v.dtype.is_floating_point and not torch.equal(v, raw[k])]
    assert differ  # the EMA is not the raw weights
    for k, v in a.state_dict().items():  # final.pt holds the EMA weights
        assert torch.equal(v, ema_state[k]), k
    assert train_main(args + ["--out", str(tmp_path / "b"),
                              "--resume", str(tmp_path / "a" / "last.pt")]) == 0
    b, _ = load_checkpoint(tmp_path / "b" / "final.pt")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_init_from_another_input_size_scales_only_the_box_size_rows(tmp_path):
    """small -> small256: every tensor loads; the head's box-size rows (channels 20, 21, in
    output pixels) double with the input, the heat and offset rows do not."""
    from models.detector import save_checkpoint
    from models.train import init_matching

    torch.manual_seed(0)
    src = build_detector("small", quant=False, head_form="dw3x3")
    save_checkpoint(tmp_path / "small.pt", src, {})
    dst = build_detector("small256", quant=False, head_form="dw3x3")
    loaded, fresh = init_matching(dst, tmp_path / "small.pt")
    assert fresh == [] and len(loaded) == len(src.state_dict())
    for name in ("head.weight", "head.bias"):
        a, b = src.state_dict()[name], dst.state_dict()[name]
        assert torch.equal(b[20:22], 2 * a[20:22]), name
        assert torch.equal(b[:20], a[:20]) and torch.equal(b[22:], a[22:]), name


def test_repeat_factors_follow_lvis_formula():
    """r_c = max(1, sqrt(t / f_c)); an image takes its rarest class's factor (LVIS, sec. 4)."""
    import math

    import numpy as np

    from models.train import repeat_factors

    labels = [np.array([0]), np.array([0, 0]), np.array([0, 1]), np.array([], np.int64)]
    w = repeat_factors(labels, 0.5, num_classes=3)
    # f_0 = 3/4 -> r = 1; f_1 = 1/4 -> r = sqrt(2)
    assert w.tolist() == [1.0, 1.0, math.sqrt(2.0), 1.0]
    assert repeat_factors(labels, 0.0, num_classes=3).tolist() == [1.0] * 4
    # class 1 not among the repeatable classes: nothing is repeated
    assert repeat_factors(labels, 0.5, num_classes=3, classes=[0, 2]).tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="fraction in"):
        repeat_factors(labels, 1.5)
    with pytest.raises(ValueError, match="empty split"):
        repeat_factors([], 0.1)


def test_train_with_repeat_factor_sampling(tmp_path, capsys):
    """--repeat-factor draws len(train) images per epoch through a WeightedRandomSampler;
    a threshold outside [0, 1] is one clear error."""
    from models.voc import VOCDetection

    voc = make_voc(tmp_path / "voc")
    # a sheep instead of the dog in one of the three images: sheep (in 1/3 of the images) and dog
    # (2/3) are rarer than t = 0.9, so the images are drawn sqrt(0.9 * 3) = 1.64 and
    # sqrt(0.9 * 3 / 2) = 1.16 times as often as with uniform sampling
    objs = OBJ.format(name="cat", diff=0, x1=9, y1=5, x2=41, y2=29)
    objs += OBJ.format(name="sheep", diff=0, x1=45, y1=3, x2=61, y2=13)
    (voc / "Annotations" / "img0.xml").write_text(XML.format(id="img0", w=64, h=32, objects=objs))
    ds = VOCDetection(voc, "train", 128, skip_bad=True, progress=False)
    from models.train import repeat_factors
    from models.centernet import VOC6, VOC_CLASSES

    w = repeat_factors([a.labels for a in ds.annos], 0.9, ds.num_classes,
                       [VOC_CLASSES.index(c) for c in VOC6])
    np.testing.assert_allclose(w, [(0.9 * 3) ** 0.5] + [(0.9 * 1.5) ** 0.5] * 2, rtol=1e-12)
    args = ["--config", "small", "--float", "--epochs", "1", "--batch-size", "1",
            "--voc-root", str(voc), "--skip-bad", "--threads", "1", "--out", str(tmp_path / "a")]
    assert train_main(args + ["--repeat-factor", "0.9"]) == 0
    out = capsys.readouterr().out
    assert (f"{int((w > 1).sum())} of {len(ds)} images repeated, max {w.max():.2f}") in out
    log = json.loads((tmp_path / "a" / "train_log.json").read_text())
    assert len(log) == 1 and np.isfinite(log[0]["loss"])
    assert train_main(args + ["--repeat-factor", "2"]) == 2
    assert "fraction in [0, 1], got 2.0" in capsys.readouterr().err
