"""sw.demo's pieces that run without the RTL simulation: the top-1 check, the enlarged drawing
and the report table (the whole demo is `make demo`, 10+ minutes of Verilator)."""

from __future__ import annotations

import numpy as np

from models.centernet import GT_COLOUR, VOC_CLASSES
from sw.demo import _report_md, draw_scaled, top1_check

CAT, DOG = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")


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


def test_draw_scaled_enlarges_image_boxes_and_ground_truth():
    img = np.zeros((32, 32, 3), np.uint8)
    dets = np.array([[4, 4, 12, 12, 0.1, CAT]])  # below any usual threshold: still drawn
    pic = np.asarray(draw_scaled(img, dets, (np.array([[20, 20, 30, 30]]), np.array([DOG])), 4))
    assert pic.shape == (128, 128, 3)
    assert tuple(pic[80, 120]) == GT_COLOUR  # right edge of the 4x ground-truth box (x = 120)
    assert pic[30, 16].any() and not pic[30, 30].any()  # the detection's left edge at x = 16


def test_report_table_states_the_top1_verdict():
    r = {"config": "small", "backend": "sim", "images": ["a", "b"], "image_source": "VOC val",
         "checkpoint": "c.pt", "bit_exact": True, "mismatches": [0, 0], "golden_vs_brevitas": {},
         "cycles": {"measured": {"total_cycles": 10, "frames": 2, "steady_cycles": 4},
                    "expected_ii": 4, "bottleneck": "MVAU_0"},
         "clock_mhz": 200.0, "board": "ultra96v2",
         "fps_projected_at_clock": {"from_measured_cycles": 5e7, "from_expected_ii": 5e7},
         "resources_estimated": {}, "ap50_on_these_images": None, "score_threshold": 0.3,
         "detections": [
             {"image": "a", "detections": [{"class": "cat", "score": 0.41, "box_xyxy": [0] * 4}],
              "top1": {"class": "cat", "score": 0.41, "correct": True, "iou": 0.9, "gt_class": "cat"}},
             {"image": "b", "detections": [],
              "top1": {"class": "dog", "score": 0.2, "correct": False, "iou": 0.1, "gt_class": "cat"}}]}
    md = _report_md(r)
    assert "| a | cat 0.41 | cat 0.41 | yes (IoU 0.90, ground truth cat) |" in md
    assert "| b | none | dog 0.20 | no (IoU 0.10, ground truth cat) |" in md
    assert "Top-1 detection correct on 1 of 2 images" in md
