"""``deflow demo`` (sw/flows/demo.py): argument checks before any work, the images (letterboxed
photographs with hand-measured boxes when there is no VOC folder), the top-1 verdict, the
drawing, the report and the step cache; the whole demo twice (slow: a Verilator build and
the FINN lowering), bit-exact, the second run from the caches."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

import sw.flows.demo as demo
from models.centernet import GT_COLOUR, VOC_CLASSES, _class_colour, top1_check
from sw.flows.cli import main
from sw.flows.demo import (ArtifactCache, DemoError, DemoImage, FALLBACK_PHOTOS, draw_result,
                     letterbox, load_images, report_markdown, verdict_text)

CAT, DOG, PERSON = (VOC_CLASSES.index(c) for c in ("cat", "dog", "person"))


# ------------------------------------------------------------------------------ arguments


@pytest.mark.parametrize("extra, msg", [
    (["--backend", "pynq"], "--backend pynq needs --bitfile"),
    (["--backend", "pynq", "--bitfile", "nowhere.bit"], "--bitfile nowhere.bit not found"),
    (["--bitfile", "x.bit"], "--bitfile is for --backend pynq"),
    (["--frames", "0"], "--frames must be >= 1, got 0"),
    (["--score", "1.5"], "--score is a probability threshold in [0, 1], got 1.5"),
    (["--fps", "-1"], "--fps must be positive"),
    (["--clock-mhz", "0"], "--clock-mhz must be positive"),
    (["--board", "nosuch"], "--board: unknown board 'nosuch'"),
    (["--checkpoint", "missing.pt"], "--checkpoint missing.pt not found"),
    (["--voc-root", "/no/such/voc"], "--voc-root /no/such/voc is not a folder"),
    (["--voc-root", "/tmp", "--photos"], "--voc-root and --photos exclude each other"),
])
def test_bad_arguments_are_refused_in_one_line_before_any_work(extra, msg, monkeypatch, capsys,
                                                               tmp_path):
    def must_not_run(*a, **k):
        raise AssertionError("the demo started working before checking its arguments")

    monkeypatch.setattr(demo, "_run", must_not_run)
    assert main(["demo", "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deflow: error: ") and msg in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_pynq_bitfile_needs_its_hwh_and_a_board(tmp_path, monkeypatch, capsys):
    bit = tmp_path / "deflow.bit"
    bit.write_bytes(b"\0")
    monkeypatch.setattr(demo, "_run", lambda *a: pytest.fail("ran"))
    assert main(["demo", "--backend", "pynq", "--bitfile", str(bit)]) == 2
    assert "deflow.hwh is missing beside it" in capsys.readouterr().err
    bit.with_suffix(".hwh").write_text("<hwh/>")
    assert main(["demo", "--backend", "pynq", "--bitfile", str(bit)]) == 2  # no board here
    assert capsys.readouterr().err.strip() == (
        "deflow: error: --backend pynq: pynq finds no Zynq device here; run the demo on the "
        "board (PYNQ image), or use --backend sim on this machine")


# ------------------------------------------------------------------------------ images


def test_letterbox_keeps_the_aspect_ratio_with_black_bars():
    img = np.full((100, 200, 3), 200, np.uint8)  # 2:1 landscape
    out, s, (ox, oy) = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and s == pytest.approx(64 / 200) and ox == 0 and oy == 16
    assert not out[:15].any() and not out[-15:].any()  # bars above and below
    assert (out[18:46] == 200).all()  # the picture in the middle, not stretched


def test_fallback_photos_are_letterboxed_with_their_hand_measured_boxes(monkeypatch):
    import models.data

    monkeypatch.delenv("DEFLOW_VOC_ROOT", raising=False)
    monkeypatch.setattr(models.data, "DEFAULT_VOC_ROOT", models.data.REPO_ROOT / "no-such-voc")
    images, source = load_images(3, 128)
    assert "no VOC folder" in source
    assert [i.name for i in load_images(2, 128, photos=True)[0]] == ["chelsea", "astronaut"]
    assert [i.name for i in images] == ["chelsea", "astronaut", "grace_hopper"]
    assert [VOC_CLASSES[int(i.gt[1][0])] for i in images] == ["cat", "person", "person"]
    cat = images[0]
    assert cat.original.shape == (300, 451, 3) and cat.pixels.shape == (128, 128, 3)
    # 451 x 300 -> 128 x 85: 21-22 black rows above and below, none at the sides
    assert not cat.pixels[:20].any() and not cat.pixels[-20:].any() and cat.pixels[64, :3].any()
    # the hand-measured box (0, 0, 395, 300) through the letterbox
    s = 128 / 451
    np.testing.assert_allclose(cat.gt[0][0], [0, cat.offset[1], 395 * s, 300 * s + cat.offset[1]],
                               atol=0.6)
    assert all(i.gt_source == "measured by hand" for i in images)
    assert {name for name, _, _ in FALLBACK_PHOTOS} >= {i.name for i in images}


# ------------------------------------------------------------------------------ verdicts


def test_top1_is_correct_only_with_the_same_class_at_iou_half():
    gt = (np.array([[10, 10, 50, 50], [60, 60, 100, 100]]), np.array([CAT, DOG]), np.zeros(2))
    hit = np.array([[12, 10, 50, 52, 0.4, CAT], [60, 60, 100, 100, 0.3, DOG]])
    t = top1_check(hit, gt)
    # inter 38*40 = 1520, union 1600 + 1596 - 1520 = 1676
    assert t == {"class": "cat", "score": 0.4, "correct": True, "iou": round(1520 / 1676, 3),
                 "gt_class": "cat"}
    wrong_class = hit[[1, 0]].copy()
    wrong_class[0, 5] = CAT  # a cat box on the dog
    t = top1_check(wrong_class, gt)
    assert t["correct"] is False and t["gt_class"] == "cat" and t["iou"] == 0.0
    shifted = np.array([[30, 30, 70, 70, 0.5, CAT]])  # IoU 400 / 2800 with the cat
    t = top1_check(shifted, gt)
    assert t["correct"] is False and t["iou"] == round(400 / 2800, 3)
    assert top1_check(hit, None) == {"class": "cat", "score": 0.4, "correct": None}
    assert top1_check(np.zeros((0, 6)), gt) is None


def test_an_image_without_ground_truth_is_never_called_wrong():
    assert verdict_text({"class": "dog", "score": 0.23, "correct": None}) == \
        "top-1 dog 0.23: no ground truth"
    assert verdict_text({"class": "cat", "score": 0.32, "correct": True, "iou": 0.917,
                         "gt_class": "cat"}) == \
        "top-1 cat 0.32: correct (IoU 0.92 with ground truth cat)"
    assert verdict_text({"class": "sheep", "score": 0.21, "correct": False, "iou": 0.4,
                         "gt_class": "cow"}) == \
        "top-1 sheep 0.21: wrong (IoU 0.40 with ground truth cow)"
    assert verdict_text({"class": "person", "score": 0.2, "correct": True, "iou": 0.63,
                         "gt_class": "person"}, 0.3) == \
        "top-1 person 0.20 (below the 0.30 threshold): correct (IoU 0.63 with ground truth person)"
    assert verdict_text(None) == "no detection"


# ------------------------------------------------------------------------------ drawing


def _image(gt=True):
    orig = np.zeros((100, 200, 3), np.uint8)
    pix, s, off = letterbox(orig, 64)
    g = (np.array([[0.0, 16.0, 32.0, 48.0]]), np.array([DOG]), np.zeros(1, bool)) if gt else None
    return DemoImage("x", pix, g, orig, s, off, "measured by hand" if gt else None)


def test_drawing_shows_the_photo_at_its_aspect_the_ground_truth_and_a_dashed_top1():
    img = _image()
    # top-1 below the threshold: still drawn, dashed; input box (32, 16)-(64, 48) -> photo
    # pixels (100, 0)-(200, 100) -> drawn at 512/200 = 2.56x: (256, 0)-(511, 256)
    dets = np.array([[32, 16, 64, 48, 0.2, CAT]])
    pic = np.asarray(draw_result(img, dets, 0.3, top1_check(dets, img.gt), "bit-exact"))
    assert pic.shape[1] == 512 and pic.shape[0] > 256 + 4 * 21  # photo 512 x 256 + caption
    # ground truth (0, 16)-(32, 48) -> (0, 0)-(256, 256): its right edge at x = 256
    assert tuple(pic[128, 256]) in (GT_COLOUR, _class_colour(CAT))
    assert tuple(pic[200, 255]) == GT_COLOUR
    # the dashed top-1's right edge at x = 511: dashes of the class colour, gaps of black
    edge = [tuple(p) for p in pic[60:200, 510]]
    assert _class_colour(CAT) in edge and (0, 0, 0) in edge


def test_drawing_without_ground_truth_says_so():
    img = _image(gt=False)
    dets = np.array([[32, 16, 64, 48, 0.6, CAT]])
    pic = np.asarray(draw_result(img, dets, 0.3, top1_check(dets, None), "bit-exact"))
    assert not (pic[:256] == np.array(GT_COLOUR)).all(-1).any()  # no green box
    assert tuple(pic[128, 511]) == _class_colour(CAT)  # a solid box above the threshold


# ------------------------------------------------------------------------------ report


class _Est:
    def __init__(self, name, op, cycles, luts, dsps, bram18, folding):
        self.name, self.op, self.cycles, self.luts = name, op, cycles, luts
        self.dsps, self.bram18, self.folding = dsps, bram18, folding


def test_report_states_verdicts_rounded_figures_and_a_layer_total():
    r = {"config": "small", "backend": "sim", "input_size": 128, "image_source": "VOC val",
         "images": ["a", "b", "c"], "checkpoint": "c.pt", "bit_exact": True,
         "mismatches": [0, 0, 0], "values_per_frame": 24576,
         "harness": "native Verilator testbench", "board": "ultra96v2", "clock_mhz": 200.0,
         "target_fps": 2000.0, "layers": 2,
         "golden_vs_brevitas": {"images": 3, "values": 73728, "max_lsb": 20,
                                "mean_abs_lsb": 0.667019314, "share_equal": 0.4904378,
                                "per_image_max_lsb": [20, 19, 11]},
         "cycles": {"measured": {"frames": 3, "total_cycles": 699484, "steady_cycles": 98304,
                                 "first_frame_cycles": 502876},
                    "expected_ii": 98310, "bottleneck": "MVAU_1", "bottleneck_op": "MVAU"},
         "fps_projected_at_clock": {"from_measured_interval": 2034.5, "from_expected_ii": 2034.4},
         "resources_estimated": {"luts": 33318, "dsps": 172, "bram18": 99, "uram": 0,
                                 "flip_flops": None},
         "capacity": {"luts": 70560, "dsps": 360, "bram18": 432, "uram": 0},
         "fifo_sizing": {"method": "analytical", "fifo_bits": 310393, "model_interval": 98304},
         "score_threshold": 0.3, "ap50_on_these_images": None, "wall_s": 151.2,
         "steps": [{"step": "checkpoint -> QONNX", "seconds": 4.04, "cached": True},
                   {"step": "lower", "seconds": 0.5, "cached": True},
                   {"step": "golden", "seconds": 15.3, "cached": False}],
         "detections": [
             {"image": "a", "ground_truth": "VOC annotation",
              "detections": [{"class": "cat", "score": 0.41, "box_xyxy": [0] * 4}],
              "top1": {"class": "cat", "score": 0.41, "correct": True, "iou": 0.9,
                       "gt_class": "cat"}},
             {"image": "b", "ground_truth": "VOC annotation", "detections": [],
              "top1": {"class": "dog", "score": 0.2, "correct": False, "iou": 0.1,
                       "gt_class": "cat"}},
             {"image": "c", "ground_truth": None, "detections": [],
              "top1": {"class": "dog", "score": 0.23, "correct": None}}]}
    est = [_Est("MVAU_0", "MVAU", 50000, 1200, 8, 4, {"PE": 4, "SIMD": 8}),
           _Est("MVAU_1", "MVAU", 98310, 2000, 16, 6, {"PE": 8, "SIMD": 8})]
    md = report_markdown(r, est)
    assert "**bit-exact** on 3 of 3 images (24,576 int8 values per image" in md
    assert "1 correct, 1 wrong, 1 without ground truth" in md
    assert "| a | VOC annotation | cat 0.41 | **correct** (IoU 0.90 with cat) | cat 0.41 |" in md
    assert "| b | VOC annotation | dog 0.20 | wrong (IoU 0.10 with cat) | none |" in md
    assert "| c | none | dog 0.23 | no ground truth | none |" in md
    assert "| measured steady-state frame interval | 98,304 cycles" in md
    assert "mean 0.67 LSB, 49.0 % of 73,728 values identical" in md
    assert "LUT 33,318 of 70,560 (47 %)" in md and "flip-flops not estimated" in md
    assert "cached steps: checkpoint -> QONNX, lower" in md
    assert "| **MVAU_1** (bottleneck) | MVAU | 8 | 8 | 98,310 | 100 |" in md
    assert "| | **total** (2 layers) | | | | II 98,310 | | **3,200** | **24** | **10** |" in md
    assert "{" not in md and "0.667019" not in md  # no raw JSON, no unrounded floats


# ------------------------------------------------------------------------------ cache


def test_cache_entry_is_invalidated_by_a_change_to_code_that_made_it(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "sw").mkdir(parents=True)
    src = repo / "sw" / "fake_lowering.py"
    src.write_text("STEP = 1\n")
    mod = types.ModuleType("fake_lowering_for_test")
    mod.__file__ = str(src)
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(demo, "REPO_ROOT", repo)
    cache = ArtifactCache(tmp_path / "cache")
    assert cache.get("lowered", "k1", ".json") is None
    cache.put("lowered", "k1", ".json", lambda p: p.write_text("{}"), seconds=88.04,
              extra={"sizing": {"fifo_bits": 5}})
    path, meta = cache.get("lowered", "k1", ".json")
    assert path.read_text() == "{}" and meta["seconds"] >= 88.0  # plus the write's time
    assert meta["sizing"] == {"fifo_bits": 5}
    assert meta["code"] == {"sw/fake_lowering.py": demo._sha1(src)}
    assert cache.get("lowered", "k2", ".json") is None  # other inputs
    assert ArtifactCache(tmp_path / "cache", enabled=False).get("lowered", "k1", ".json") is None
    src.write_text("STEP = 2\n")  # the code changed
    assert cache.get("lowered", "k1", ".json") is None
    assert cache.miss == "sw/fake_lowering.py changed"
    src.write_text("STEP = 1\n")
    assert cache.get("lowered", "k1", ".json") is not None
    meta_path = tmp_path / "cache" / "lowered-k1.meta.json"
    m = json.loads(meta_path.read_text())
    m["packages"]["torch"] = "0.0"  # another library version
    meta_path.write_text(json.dumps(m))
    assert cache.get("lowered", "k1", ".json") is None
    assert cache.miss.startswith("torch 0.0 -> ")


# ------------------------------------------------------------------------------ whole demo


@pytest.mark.slow
def test_demo_is_bit_exact_and_its_second_run_comes_from_the_caches(tmp_path):
    """The shipped checkpoint on one image, twice into the same folder: every output value
    equals the golden model's, and the second run takes the export, the lowering, the FIFO
    depths and the Verilator build from the caches."""
    out = tmp_path / "demo"
    for run in (1, 2):
        assert main(["demo", "--frames", "1", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache")]) == 0
        r = json.loads((out / "report.json").read_text())
        assert r["bit_exact"] is True and r["mismatches"] == [0]
        assert r["values_per_frame"] == 64 * 64 * 24  # stride-4 output of the 256x256 input
        cached = {s["step"]: s["cached"] for s in r["steps"]}
        if run == 1:
            assert not cached["export"] and not cached["lower"] and not cached["FIFO depths"]
    assert cached == {"export": True, "images": False, "lower": True, "fold": False,
                      "golden model": False, "FIFO depths": True, "Verilator build": True,
                      "RTL simulation": False, "decode, draw, report": False}
    assert (out / f"{r['images'][0]}_detections.png").is_file()


def test_a_keyed_native_build_is_found_without_generating_verilog(tmp_path, monkeypatch):
    """sim.native.build_native's ``key`` (the demo's :func:`sw.flows.demo.design_key`): a build
    recorded under the key is returned without converting the component to Verilog."""
    import amaranth.back.verilog

    from sim import native

    def no_verilog(*a, **k):
        raise AssertionError("Verilog generated although the key was recorded")

    monkeypatch.setattr(amaranth.back.verilog, "convert", no_verilog)
    exe = tmp_path / "deflow_top_native_abc" / "obj" / "Vdeflow_top"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    k = native.hashlib.sha1("\0".join(["design-1", native.TB_SOURCE.read_text(),
                                       native.DEFAULT_CXX_OPT, "True"]).encode()).hexdigest()[:16]
    (tmp_path / "native_index").mkdir()
    (tmp_path / "native_index" / f"deflow_top_{k}").write_text("deflow_top_native_abc\n")
    assert native.build_native(None, probes=True, build_root=tmp_path, key="design-1") == exe
    with pytest.raises(AssertionError, match="Verilog generated"):  # another key: a build
        native.build_native(None, probes=True, build_root=tmp_path, key="design-2")
