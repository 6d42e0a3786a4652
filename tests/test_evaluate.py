"""models.evaluate: bad input (skipped images named with their reason, a split too small to mean
anything says so next to the figure; issue 17, "Bad input") and the golden integer model."""

from __future__ import annotations

import json

from models.evaluate import MIN_EVAL_IMAGES, main as evaluate_main
from test_voc import make_voc  # tests/ is on sys.path (pytest rootdir-relative import)


def test_one_readable_image_scoring_100_is_flagged_and_the_skipped_one_named(tmp_path, capsys):
    voc = make_voc(tmp_path / "voc")
    for split in ("train", "val"):  # one good image, one corrupt JPEG
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("img0\ncorrupt\n")
    out = tmp_path / "eval"
    assert evaluate_main(["--baseline", "prior", "--voc-root", str(voc), "--out", str(out),
                          "--threads", "1"]) == 0
    cap = capsys.readouterr()
    # the prior of a one-image train split is that image's box: a "perfect" score
    assert "VOC6 mAP50 100.00" in cap.out
    assert (f"WARNING: only 1 usable images in val (1 skipped): too few for the figure to "
            f"mean anything (< {MIN_EVAL_IMAGES})") in cap.out
    assert "skipped image corrupt of val: cannot decode image" in cap.err
    assert "corrupt.jpg" in cap.err
    res = json.loads((out / "results.json").read_text())
    assert res["images"] == 1 and res["skipped"] == 1
    assert [d["id"] for d in res["skipped_images"]] == ["corrupt"]
    assert "too few" in res["warning"]
    md = (out / "results.md").read_text()
    assert "Warning: only 1 usable images" in md and "skipped corrupt: cannot decode" in md


def test_checkpoint_evaluation_names_skipped_images(tmp_path, capsys):
    import torch

    from models.detector import build_detector, save_checkpoint

    voc = make_voc(tmp_path / "voc")  # 3 good images, a corrupt JPEG and a broken XML
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", build_detector("small", quant=False, head_form="dw3x3"))
    assert evaluate_main([str(tmp_path / "m.pt"), "--voc-root", str(voc), "--images", "0",
                          "--out", str(tmp_path / "e"), "--threads", "1"]) == 0
    cap = capsys.readouterr()
    assert "skipped image corrupt of val: cannot decode image" in cap.err
    assert "skipped image brokenxml of val: cannot parse VOC annotation" in cap.err
    assert "3 images, 2 skipped)  WARNING: only 3 usable images in val (2 skipped)" in cap.out
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert res["head_form"] == "dw3x3" and len(res["skipped_images"]) == 2


def test_golden_refuses_a_float_checkpoint(tmp_path, capsys):
    import torch

    from models.detector import build_detector, save_checkpoint

    voc = make_voc(tmp_path / "voc")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "f.pt", build_detector("small", quant=False))
    assert evaluate_main([str(tmp_path / "f.pt"), "--golden", "--voc-root", str(voc),
                          "--images", "0", "--out", str(tmp_path / "e"), "--threads", "1"]) == 2
    assert "--golden needs a W4A8 checkpoint" in capsys.readouterr().err


def test_golden_integer_model_tracks_the_shipped_w4a8_checkpoint(tmp_path):
    """The golden integer model (compiler lowering, the hardware's bits) of the shipped W4A8
    checkpoint scores within 0.5 VOC6 mAP50 of Brevitas on the first 100 val images."""
    from pathlib import Path

    import pytest

    from models.data import find_voc_root
    from models.evaluate import evaluate_checkpoint

    ckpt = Path(__file__).resolve().parents[1] / "models" / "checkpoints" / "small_w4a8.pt"
    voc = find_voc_root()
    if voc is None or not ckpt.exists():
        pytest.skip("needs ../shared/data/voc2012-subset and the shipped checkpoint")
    res = evaluate_checkpoint(ckpt, "val", out=tmp_path, voc_root=voc, limit=100, n_images=0,
                              progress=False, golden=True)
    assert res["images"] == 100 and res["warning"] is None
    assert abs(res["golden"]["voc6_map50"] - res["voc6_map50"]) < 0.005
    assert "Golden integer model" in (tmp_path / "results.md").read_text()
