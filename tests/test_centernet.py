"""CenterNet targets, losses, decode, AP50 (pycocotools) and drawing: models/centernet.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.centernet import (GT_COLOUR, VOC6, VOC_CLASSES, box_nms, recall_by_size, decode, decode_batch, draw_detections,
                              draw_gaussian, encode_targets, evaluate_ap50, focal_loss,
                              gaussian_radius, reg_l1_loss, results_table_md)

DOG, CAT, PERSON = VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat"), VOC_CLASSES.index("person")


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


def test_class_lists():
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane"
    assert VOC_CLASSES[-1] == "tvmonitor" and VOC_CLASSES[14] == "person"
    assert all(c in VOC_CLASSES for c in VOC6) and len(VOC6) == 6


# ----------------------------------------------------------------------------------- decode


def planted_maps():
    heat = np.full((3, 16, 16), -8.0, dtype=np.float32)
    wh = np.zeros((2, 16, 16), dtype=np.float32)
    reg = np.zeros((2, 16, 16), dtype=np.float32)
    heat[1, 4, 5] = 3.0
    heat[1, 4, 6] = 2.0  # neighbour of the first peak: not a local maximum
    heat[2, 10, 12] = 1.0
    wh[:, 4, 5] = (6.0, 4.0)
    reg[:, 4, 5] = (0.25, 0.5)
    wh[:, 10, 12] = (2.0, 8.0)
    return heat, wh, reg


def test_decode_finds_planted_peaks():
    heat, wh, reg = planted_maps()
    det = decode(heat, wh, reg, stride=4, k=3)
    assert det.shape == (3, 6) and det.dtype == np.float32
    # centre (5.25, 4.5), size 6 x 4 output pixels -> input pixels x4
    np.testing.assert_allclose(det[0], [9, 10, 33, 26, sigmoid(3.0), 1], rtol=1e-6)
    np.testing.assert_allclose(det[1], [44, 24, 52, 56, sigmoid(1.0), 2], rtol=1e-6)
    # the suppressed neighbour (logit 2) is not decoded; the third row is background
    np.testing.assert_allclose(det[2, 4], sigmoid(-8.0), rtol=1e-5)
    # probabilities in, same result; torch tensors in, same result
    det_p = decode(1 / (1 + np.exp(-heat)), wh, reg, k=2, heat_is_logits=False)
    np.testing.assert_allclose(det_p, det[:2], rtol=1e-6)
    det_t = decode(torch.from_numpy(heat), torch.from_numpy(wh), torch.from_numpy(reg), k=2)
    np.testing.assert_allclose(det_t, det[:2], rtol=1e-6)


def test_decode_batch_and_errors():
    heat, wh, reg = planted_maps()
    batch = decode_batch(np.stack([heat, heat[[2, 0, 1]]]), np.stack([wh, wh]),
                         np.stack([reg, reg]), k=2)
    assert len(batch) == 2 and batch[0].shape == batch[1].shape == (2, 6)
    np.testing.assert_allclose(batch[0], decode(heat, wh, reg, k=2))
    assert batch[1][:, 5].tolist() == [2.0, 0.0]  # classes permuted with the channels
    assert decode(heat, wh, reg, k=10_000, nms_iou=None).shape == (3 * 16 * 16, 6)
    with pytest.raises(ValueError, match="heat"):
        decode(heat[0], wh, reg)
    with pytest.raises(ValueError, match="wh, reg"):
        decode(heat, wh[:, :8], reg)


# ---------------------------------------------------------------------------------- targets


def test_gaussian_radius_and_draw():
    # min of the three CornerNet radii; for a 10x10 box the third:
    # a = 4*0.7, b = -2*0.7*20, c = -0.3*100 -> (b + sqrt(b^2 - 4ac)) / 2 = (-28 + sqrt(1120))/2
    assert gaussian_radius(10, 10) == pytest.approx((-28 + math.sqrt(1120)) / 2)
    hm = np.zeros((9, 9), dtype=np.float32)
    draw_gaussian(hm, (4, 3), 2)
    sigma = 5 / 6
    assert hm[3, 4] == 1.0 and hm.argmax() == 3 * 9 + 4
    assert hm[3, 5] == pytest.approx(math.exp(-1 / (2 * sigma ** 2)), rel=1e-6)
    assert hm[5, 6] == pytest.approx(math.exp(-8 / (2 * sigma ** 2)), rel=1e-6)
    assert hm[3, 7] == 0 and hm[0, 4] == 0  # outside the radius
    edge = np.zeros((4, 4), dtype=np.float32)
    draw_gaussian(edge, (0, 0), 3)  # clipped at the border
    assert edge[0, 0] == 1.0 and edge[3, 3] > 0
    draw_gaussian(edge, (0, 0), 0)  # max, not sum
    assert edge[0, 0] == 1.0


def test_encode_targets_values():
    boxes = np.array([[10, 20, 60, 90], [100, 30, 141, 70]], dtype=np.float32)
    t = encode_targets(boxes, [DOG, PERSON], 160, 20, stride=4, max_objs=8)
    assert t["heatmap"].shape == (20, 40, 40) and t["heatmap"].dtype == np.float32
    assert t["mask"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    # box 0 at stride 4: (2.5, 5, 15, 22.5) -> centre (8.75, 13.75), size 12.5 x 17.5
    np.testing.assert_allclose(t["wh"][:2], [[12.5, 17.5], [10.25, 10.0]])
    np.testing.assert_allclose(t["reg"][:2], [[0.75, 0.75], [0.125, 0.5]])
    assert t["index"][:2].tolist() == [13 * 40 + 8, 12 * 40 + 30]
    assert t["heatmap"][DOG, 13, 8] == 1.0 and t["heatmap"][PERSON, 12, 30] == 1.0
    assert (t["heatmap"] == 1).sum() == 2 and t["heatmap"][CAT].max() == 0
    empty = encode_targets(np.zeros((0, 4)), [], 64, 20)
    assert empty["mask"].sum() == 0 and empty["heatmap"].max() == 0
    with pytest.raises(ValueError, match="labels"):
        encode_targets(boxes, [DOG, 20], 160, 20)
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        encode_targets(boxes, [DOG], 160, 20)
    with pytest.raises(ValueError, match="divisible"):
        encode_targets(boxes, [DOG, CAT], 162, 20)


def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    size, stride = 128, 4
    out = size // stride
    xy = rng.uniform(2, 60, size=(5, 2))
    wh = rng.uniform(8, 60, size=(5, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    labels = np.array([DOG, CAT, PERSON, 0, 19])
    t = encode_targets(boxes, labels, size, 20, stride=stride)
    # perfect network output: the target maps written at the centre cells
    whm, regm = np.zeros((2, out, out)), np.zeros((2, out, out))
    for k in range(int(t["mask"].sum())):
        y, x = divmod(int(t["index"][k]), out)
        whm[:, y, x], regm[:, y, x] = t["wh"][k], t["reg"][k]
    logits = np.log(np.clip(t["heatmap"], 1e-6, 1 - 1e-6)) - np.log1p(-np.clip(
        t["heatmap"], 1e-6, 1 - 1e-6))
    det = decode(logits, whm, regm, stride=stride, k=5)
    assert sorted(det[:, 5].astype(int).tolist()) == sorted(labels.tolist())
    for box, lab in zip(boxes, labels):
        row = det[det[:, 5] == lab][0]
        assert np.abs(row[:4] - box).max() <= 1.0


# ----------------------------------------------------------------------------------- losses


def test_focal_loss_hand_computed():
    logits = torch.tensor([0.0, 0.0, math.log(3.0)]).view(1, 1, 1, 3)
    target = torch.tensor([1.0, 0.5, 0.0]).view(1, 1, 1, 3)
    ln = math.log
    # pos (p=1/2): (1/2)^2 ln(1/2); neg y=.5: (1/2)^4 (1/2)^2 ln(1/2); neg y=0, p=3/4:
    # (3/4)^2 ln(1/4); one positive
    expect = -(0.25 * ln(0.5) + 0.0625 * 0.25 * ln(0.5) + 0.5625 * ln(0.25))
    assert focal_loss(logits, target).item() == pytest.approx(expect, rel=1e-6)
    big = torch.tensor([100.0, -100.0, 100.0]).view(1, 1, 1, 3)
    val = focal_loss(big, target)
    assert torch.isfinite(val) and val.item() == pytest.approx(100.0 * 1.0, rel=1e-4)
    g = big.clone().requires_grad_()
    focal_loss(g, target).backward()
    assert torch.isfinite(g.grad).all()
    with pytest.raises(ValueError, match="shape"):
        focal_loss(logits, target[..., :2])


def test_reg_l1_loss_hand_computed():
    pred = torch.zeros(1, 2, 2, 3)
    pred[0, :, 1, 2] = torch.tensor([1.0, 2.0])  # index 1*3 + 2 = 5
    pred[0, :, 0, 0] = torch.tensor([7.0, 7.0])  # masked-out slot reads here
    index = torch.tensor([[5, 0]])
    mask = torch.tensor([[1, 0]], dtype=torch.uint8)
    target = torch.tensor([[[1.5, 1.0], [0.0, 0.0]]])
    # |1 - 1.5| + |2 - 1| over 2 masked elements
    assert reg_l1_loss(pred, index, mask, target).item() == pytest.approx(1.5 / (2 + 1e-4))
    with pytest.raises(ValueError, match="disagree"):
        reg_l1_loss(pred, index, mask, target[:, :1])


# ------------------------------------------------------------------------------------- AP50


def det_row(box, score, cls):
    return [*box, score, cls]


GT_DOG = np.array([[10, 10, 50, 60]], dtype=float)


def test_ap50_perfect_and_none():
    gt = {"a": (np.array([[10, 10, 50, 60], [60, 20, 90, 80]]), np.array([DOG, PERSON]),
                np.zeros(2, bool)),
          "b": (np.array([[5, 5, 30, 30]]), np.array([CAT]), np.zeros(1, bool))}
    perfect = {"a": np.array([det_row([10, 10, 50, 60], 0.9, DOG),
                              det_row([61, 21, 90, 80], 0.8, PERSON)]),
               "b": np.array([det_row([5, 5, 30, 31], 0.7, CAT)])}
    r = evaluate_ap50(perfect, gt)
    assert r["per_class"] == pytest.approx({"dog": 1.0, "person": 1.0, "cat": 1.0})
    assert r["voc6_map50"] == pytest.approx(1.0) and r["map50_present"] == pytest.approx(1.0)
    assert r["num_images"] == 2 and r["num_detections"] == 3
    r0 = evaluate_ap50({}, gt)
    assert r0["per_class"] == {"dog": 0.0, "person": 0.0, "cat": 0.0} and r0["voc6_map50"] == 0
    # right box, wrong class: a miss and a false positive
    wrong = {"b": np.array([det_row([5, 5, 30, 30], 0.7, DOG)])}
    assert evaluate_ap50(wrong, gt)["per_class"]["cat"] == 0.0


def test_ap50_hand_computed_101_point():
    # 2 GT dogs; a false positive (0.9) ranked above one true positive (0.8), other GT missed.
    # precision/recall after each: (0, 0), (1/2, 1/2); interpolated precision is 1/2 on the
    # 51 recall thresholds 0.00..0.50 and 0 on the 50 above: AP = 51 * 0.5 / 101.
    gt = {"a": (GT_DOG, [DOG], [False]), "b": (GT_DOG + 20, [DOG], [False])}
    dets = {"a": np.array([det_row([100, 100, 120, 120], 0.9, DOG),
                           det_row([11, 10, 50, 60], 0.8, DOG)])}
    r = evaluate_ap50(dets, gt)
    assert r["per_class"]["dog"] == pytest.approx(51 * 0.5 / 101, abs=1e-12)
    assert r["voc6_map50"] == pytest.approx(51 * 0.5 / 101 / 1, abs=1e-12)
    # a duplicate detection of an already matched box is a false positive
    dup = {"a": np.array([det_row([10, 10, 50, 60], 0.9, DOG),
                          det_row([10, 10, 50, 61], 0.8, DOG)]),
           "b": np.array([det_row([30, 30, 70, 80], 0.7, DOG)])}
    # P/R: (1, .5), (.5, .5), (2/3, 1) -> interpolated 1 up to recall .5, 2/3 above
    assert evaluate_ap50(dup, gt)["per_class"]["dog"] == pytest.approx(
        (51 * 1.0 + 50 * 2 / 3) / 101, abs=1e-12)


def test_ap50_difficult_ignored():
    boxes = np.array([[10, 10, 50, 60], [60, 10, 100, 60]], dtype=float)
    gt = {"a": (boxes, [DOG, DOG], [False, True])}
    tp = det_row([10, 10, 50, 60], 0.9, DOG)
    # no detection on the difficult box: not a miss
    assert evaluate_ap50({"a": np.array([tp])}, gt)["per_class"]["dog"] == pytest.approx(1.0)
    # a top-ranked detection on the difficult box: not a false positive
    on_difficult = det_row([60, 10, 100, 60], 0.95, DOG)
    assert evaluate_ap50({"a": np.array([on_difficult, tp])}, gt)["per_class"]["dog"] == \
        pytest.approx(1.0)
    # counted as a normal box instead, the same detections give AP 1 and 1/2 recall without it
    gt_plain = {"a": (boxes, [DOG, DOG], [False, False])}
    assert evaluate_ap50({"a": np.array([tp])}, gt_plain)["per_class"]["dog"] == pytest.approx(
        51 / 101)
    # ordinary IoU on difficult boxes (VOC), not pycocotools' crowd IoU (inter / det area): a
    # small box inside the difficult one has IoU 0.06 with it and is a false positive
    small = det_row([70, 20, 80, 30], 0.95, DOG)
    assert evaluate_ap50({"a": np.array([small, tp])}, gt)["per_class"]["dog"] == \
        pytest.approx(0.5)
    # a class with only difficult boxes is not "present"
    only_diff = {"a": (boxes[:1], [CAT], [True])}
    assert evaluate_ap50({}, only_diff)["per_class"] == {}
    assert math.isnan(evaluate_ap50({}, only_diff)["voc6_map50"])


def test_ap50_bad_input_and_table():
    gt = {"a": (GT_DOG, [DOG], [False])}
    with pytest.raises(ValueError, match="without ground truth"):
        evaluate_ap50({"zz": np.zeros((0, 6))}, gt)
    with pytest.raises(ValueError, match="label 25"):
        evaluate_ap50({}, {"a": (GT_DOG, [25], [False])})
    with pytest.raises(ValueError, match="1 boxes, 2 labels"):
        evaluate_ap50({}, {"a": (GT_DOG, [DOG, CAT], [False])})
    r = evaluate_ap50({"a": np.array([det_row([10, 10, 50, 60], 0.9, DOG)])},
                      {**gt, "b": (GT_DOG, [0], [False])})
    md = results_table_md(r)
    assert "| dog (VOC6) | 100.0 |" in md and "| aeroplane | 0.0 |" in md
    assert "| **VOC6 mAP50** | **100.0** |" in md and "| mAP50 (present classes) | 50.0 |" in md
    with pytest.raises(ValueError, match="evaluate_ap50"):
        results_table_md({})


# ---------------------------------------------------------------------------------- drawing


def test_draw_detections_pixels():
    img = np.full((120, 120, 3), 40, dtype=np.uint8)
    dets = np.array([det_row([20, 50, 70, 100], 0.9, DOG),
                     det_row([2, 105, 10, 115], 0.1, CAT)])  # below the threshold
    out = np.asarray(draw_detections(img, dets, gt=(np.array([[95, 5, 115, 30]]), [PERSON])))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[75, 20] != 40).any() and (out[100, 45] != 40).any()  # left and bottom edges
    assert (out[75, 45] == 40).all() and (out[115, 115] == 40).all()  # inside, far away
    assert (out[110, 2] == 40).all()  # the low-score box is not drawn
    assert tuple(out[20, 95]) == GT_COLOUR  # ground truth edge in green
    assert (out[40:50, 20:60] != 40).any()  # the "dog 0.90" label above the box
    assert (out[31:43, 95:110] != 40).any()  # the "gt person" label below the GT box
    assert (img == 40).all()  # the input is not modified
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(img.astype(np.float32), dets)


def test_decode_keeps_one_box_per_plateau():
    # a 2x2 block of equal maxima (what a nearest 2x upsample before a 1x1 head produces)
    # decodes once, at its first pixel in raster order; a distinct peak elsewhere survives
    heat = np.full((2, 8, 8), -6.0, np.float32)
    heat[0, 2:4, 4:6] = 2.0
    heat[1, 6, 1] = 1.0
    heat[1, 6, 2] = 0.5
    wh = np.full((2, 8, 8), 2.0, np.float32)
    reg = np.zeros((2, 8, 8), np.float32)
    det = decode(heat, wh, reg, stride=4, k=3)
    np.testing.assert_allclose(det[0], [12, 4, 20, 12, sigmoid(2.0), 0], rtol=1e-6)
    np.testing.assert_allclose(det[1], [0, 20, 8, 28, sigmoid(1.0), 1], rtol=1e-6)
    assert det[2, 4] < sigmoid(-5.0)  # no second copy of the plateau
    # a tie whose earlier neighbour is not itself a local maximum still counts as a peak
    h2 = np.full((1, 4, 6), -6.0, np.float32)
    h2[0, 1, 0], h2[0, 1, 1], h2[0, 1, 3] = 3.0, 1.0, 1.0
    h2[0, 2, 2] = 1.0  # equal to (1, 1) and (1, 3); (1, 1) is below its neighbour 3.0
    d2 = decode(h2, np.ones((2, 4, 6), np.float32), np.zeros((2, 4, 6), np.float32), k=3)
    # (1, 3) is a peak, (2, 2) ties with it and goes; (1, 1) is no peak
    np.testing.assert_allclose(d2[:, 4], [sigmoid(3.0), sigmoid(1.0), sigmoid(-6.0)], rtol=1e-6)
    np.testing.assert_allclose(d2[1, :4], [4 * 2.5, 4 * 0.5, 4 * 3.5, 4 * 1.5], rtol=1e-6)


def _board_demo():
    """hw/boards/deploy/deflow_demo.py as a module (it imports its driver copy,
    sw/runtime/driver.py, as ``driver``, the way it runs on the board)."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    sys.path.insert(0, str(root / "sw" / "runtime"))
    try:
        spec = importlib.util.spec_from_file_location("deflow_demo_board",
                                                      root / "hw/boards/deploy/deflow_demo.py")
        board_demo = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(board_demo)
    finally:
        sys.path.remove(str(root / "sw" / "runtime"))
        sys.modules.pop("driver", None)
    return board_demo


def test_board_demo_decode_matches_centernet_decode():
    # the on-board numpy port breaks ties the same way
    board_demo = _board_demo()
    rng = np.random.default_rng(3)
    q = rng.integers(-8, 3, size=(16, 16, 24)).astype(np.int8)  # int8 heat: many ties
    q[..., 20:22] = rng.integers(1, 6, size=(16, 16, 2))
    n = 16 * 16 * 20  # all peaks: the order of equal scores differs (HWC vs CHW scan)
    board = board_demo.decode(q, 0.5, stride=4, k=n, nms_iou=None)
    x = q.astype(np.float32).transpose(2, 0, 1) * 0.5
    ref = decode(x[:20], x[20:22], x[22:], stride=4, k=n, nms_iou=None)

    def peaks(d):
        return sorted(map(tuple, np.rint(1000 * d[d[:, 4] > 0].astype(np.float64)).astype(int)))

    assert len(peaks(ref)) < 16 * 16 * 20 // 4 and peaks(board) == peaks(ref)


def test_box_nms_drops_same_class_overlaps_only():
    det = np.array([[0, 0, 10, 10, 0.9, 1],
                    [1, 0, 11, 10, 0.8, 1],     # IoU 0.82 with row 0, same class: dropped
                    [1, 0, 11, 10, 0.7, 2],     # same box, other class: kept
                    [5, 0, 15, 10, 0.6, 1],     # IoU 0.33 with row 0: kept
                    [0, 0, 10, 10, 0.95, 3]], np.float32)
    kept = box_nms(det, 0.5)
    assert kept[:, 4].tolist() == pytest.approx([0.95, 0.9, 0.7, 0.6])
    assert box_nms(det, 0.9).shape == (5, 6)     # 0.82 is under 0.9
    assert box_nms(det[:0], 0.5).shape == (0, 6)


def test_decode_merges_two_peaks_of_one_object():
    # one object raising two peaks two output pixels apart (a 64x64 output's spread heat)
    heat = np.full((2, 16, 16), -9.0, np.float32)
    heat[1, 8, 6], heat[1, 8, 8] = 2.0, 1.5
    wh = np.full((2, 16, 16), 10.0, np.float32)
    reg = np.zeros((2, 16, 16), np.float32)
    both = decode(heat, wh, reg, k=2, nms_iou=None)
    assert both[:, 5].tolist() == [1.0, 1.0]
    one = decode(heat, wh, reg, k=2)
    assert one.shape == (1, 6) and one[0, 4] == pytest.approx(sigmoid(2.0))


def test_board_demo_nms_matches_centernet_nms():
    board_demo = _board_demo()
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 20, size=(200, 2))
    det = np.concatenate([xy, xy + rng.uniform(5, 30, size=(200, 2)),
                          rng.permutation(200)[:, None] / 200.0,
                          rng.integers(0, 3, size=(200, 1))], 1).astype(np.float32)
    ref = box_nms(det, 0.5)
    assert 10 < len(ref) < 150
    np.testing.assert_array_equal(board_demo.box_nms(det, 0.5), ref)


def test_recall_by_size_counts_class_correct_overlaps_per_size_bin():
    cat, dog = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")
    boxes = np.array([[0, 0, 20, 20],      # side 20 px at 256 -> 10 at 128: bin 8-16
                      [0, 0, 100, 100],    # 50 at 128: bin 32-64
                      [50, 50, 70, 70],    # bin 8-16, found only by the wrong class
                      [0, 0, 200, 200]],   # difficult: not counted
                     np.float32)
    gts = {"a": (boxes, np.array([cat, dog, cat, cat]), np.array([0, 0, 0, 1], bool))}
    dets = {"a": np.array([[1, 1, 21, 21, 0.9, cat],    # IoU 0.82 with box 0
                           [0, 0, 60, 100, 0.8, dog],   # IoU 0.6 with box 1
                           [50, 50, 70, 70, 0.7, dog]], np.float32)}
    rows = recall_by_size(dets, gts, input_size=256)
    by = {r["from_px"]: r for r in rows}
    assert [r["objects"] for r in rows] == [0, 2, 0, 1, 0]
    assert by[8]["found"] == 1 and by[8]["recall"] == 0.5 and by[32]["recall"] == 1.0
    assert np.isnan(by[0]["recall"]) and by[64]["to_px"] is None
    # a stricter IoU drops the 0.6 match
    assert recall_by_size(dets, gts, 256, iou=0.7)[3]["found"] == 0


def test_top1_rate_judges_the_highest_score_of_each_image():
    from models.centernet import top1_rate

    cat, dog = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")
    gt_box = np.array([[10.0, 10.0, 50.0, 50.0]])
    gts = {"a": (gt_box, np.array([cat]), np.array([False])),
           "b": (gt_box, np.array([cat]), np.array([False])),
           "c": (gt_box, np.array([dog]), np.array([False])),
           "d": (gt_box, np.array([dog]), np.array([False]))}
    dets = {  # rows out of score order: the 0.9 row is the top-1
        "a": np.array([[0, 0, 5, 5, 0.2, cat], [10, 10, 50, 50, 0.9, cat]]),  # right
        "b": np.array([[10, 10, 50, 50, 0.9, dog], [10, 10, 50, 50, 0.5, cat]]),  # wrong class
        "c": np.array([[30, 30, 70, 70, 0.9, dog]]),  # IoU 400/2800 < 0.5: wrong
        # "d": no detections: wrong
    }
    assert top1_rate(dets, gts) == {"images": 4, "correct": 1, "rate": 0.25}
    assert np.isnan(top1_rate({}, {})["rate"])
