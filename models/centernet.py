"""CenterNet targets, losses, decoding, AP50 evaluation and drawing.

Reference: X. Zhou, D. Wang, P. Kraehenbuehl, "Objects as Points", arXiv:1904.07850 (2019),
and its code (github.com/xingyizhou/CenterNet: ``utils/image.py``, ``models/losses.py``,
``models/decode.py``), whose conventions are kept:

* outputs at stride ``R`` (4): a class heatmap ``[C, Ho, Wo]``, a size map ``wh`` ``[2, Ho, Wo]``
  (channel 0 width, 1 height, in output-stride pixels) and a sub-pixel offset map ``reg``
  ``[2, Ho, Wo]`` (channel 0 x, 1 y), ``Ho = Wo = input_size / R``;
* objects are splatted as Gaussians with the radius of ``gaussian_radius`` (the CornerNet
  formula with min overlap 0.7, as published in CenterNet's code);
* boxes are ``(x1, y1, x2, y2)`` in input pixels; detections rows are
  ``(x1, y1, x2, y2, score, class)``.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
VOC6 = ("dog", "cat", "person", "sheep", "horse", "cow")


# --------------------------------------------------------------------------------- targets


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """Gaussian radius (output pixels) for a box of ``height x width`` output pixels: the
    smallest of the three corner-displacement radii that keep IoU >= ``min_overlap``
    (CornerNet, Law & Deng ECCV'18; CenterNet ``utils/image.py:gaussian_radius``, kept as
    published, including its ``r = (b + sqrt(b^2 - 4ac)) / 2`` form)."""
    if height < 0 or width < 0:
        raise ValueError(f"gaussian_radius: negative box size {height} x {width}")
    h, w = float(height), float(width)
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: np.ndarray, center: tuple[int, int], radius: int) -> np.ndarray:
    """Splat ``exp(-(dx^2 + dy^2) / (2 sigma^2))``, ``sigma = (2r+1)/6``, centred on the integer
    ``center = (x, y)`` into ``heatmap`` ``[H, W]`` in place by element-wise max (CenterNet
    ``draw_umich_gaussian``); the peak is exactly 1. Returns ``heatmap``."""
    if heatmap.ndim != 2:
        raise ValueError(f"draw_gaussian: heatmap must be [H, W], got shape {heatmap.shape}")
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"draw_gaussian: radius must be >= 0, got {radius}")
    sigma = (2 * radius + 1) / 6
    m = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(m[None, :] ** 2 + m[:, None] ** 2) / (2 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    x, y = int(center[0]), int(center[1])
    h, w = heatmap.shape
    left, right = min(x, radius), min(w - x, radius + 1)
    top, bottom = min(y, radius), min(h - y, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return heatmap
    region = heatmap[y - top:y + bottom, x - left:x + right]
    patch = g[radius - top:radius + bottom, radius - left:radius + right]
    np.maximum(region, patch.astype(heatmap.dtype), out=region)
    return heatmap


def encode_targets(boxes_xyxy, labels, input_size: int, num_classes: int, stride: int = 4,
                   max_objs: int = 64) -> dict:
    """CenterNet training targets of one image.

    Args:
        boxes_xyxy: ``[M, 4]`` float, ``(x1, y1, x2, y2)`` in input pixels (the image already
            resized to ``input_size x input_size``).
        labels: ``[M]`` int class indices in ``[0, num_classes)``.
        input_size: square input side (pixels), divisible by ``stride``.
        num_classes: C.
        stride: output stride R.
        max_objs: capacity of the per-object arrays; objects beyond it are dropped.

    Returns:
        dict of numpy arrays: ``heatmap`` ``[C, Ho, Wo]`` float32, ``wh`` ``[max_objs, 2]``
        float32 (width, height in output pixels), ``reg`` ``[max_objs, 2]`` float32 (centre
        minus its integer cell, x then y), ``index`` ``[max_objs]`` int64 (``y * Wo + x``),
        ``mask`` ``[max_objs]`` uint8 (1 for a real object). As in CenterNet, boxes are
        clipped to ``[0, Wo - 1]`` output pixels (so a box touching the right/bottom border
        loses up to one output pixel); boxes of zero width or height after that are skipped.

    Raises:
        ValueError: shapes that disagree, labels out of range, size not divisible by stride.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) if len(boxes_xyxy) else \
        np.zeros((0, 4))
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if boxes.shape[0] != labels.shape[0]:
        raise ValueError(f"encode_targets: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
    if input_size % stride:
        raise ValueError(f"encode_targets: input_size {input_size} not divisible by "
                         f"stride {stride}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"encode_targets: labels must lie in [0, {num_classes}), got "
                         f"[{labels.min()}, {labels.max()}]")
    out = input_size // stride
    hm = np.zeros((num_classes, out, out), dtype=np.float32)
    wh = np.zeros((max_objs, 2), dtype=np.float32)
    reg = np.zeros((max_objs, 2), dtype=np.float32)
    index = np.zeros(max_objs, dtype=np.int64)
    mask = np.zeros(max_objs, dtype=np.uint8)
    k = 0
    for box, cls in zip(boxes, labels):
        if k >= max_objs:
            break
        b = np.clip(box / stride, 0, out - 1)
        bw, bh = b[2] - b[0], b[3] - b[1]
        if bw <= 0 or bh <= 0:
            continue
        radius = max(0, int(gaussian_radius(math.ceil(bh), math.ceil(bw))))
        ct = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
        ci = ct.astype(np.int64)
        draw_gaussian(hm[cls], (ci[0], ci[1]), radius)
        wh[k] = (bw, bh)
        index[k] = ci[1] * out + ci[0]
        reg[k] = ct - ci
        mask[k] = 1
        k += 1
    return {"heatmap": hm, "wh": wh, "reg": reg, "index": index, "mask": mask}


# ---------------------------------------------------------------------------------- losses


def focal_loss(heat_logits: Tensor, target_heatmap: Tensor, alpha: float = 2.0,
               beta: float = 4.0) -> Tensor:
    """Penalty-reduced pixel-wise focal loss (CenterNet eq. 1), a scalar:

    ``-1/N_pos * sum( (1-p)^a log p                 where y = 1
                      (1-y)^b p^a log(1-p)          otherwise )``

    with ``p = sigmoid(logits)``; ``log p`` and ``log(1-p)`` come from ``logsigmoid`` (stable
    for any logit). ``N_pos`` is the number of exact-1 target pixels (at least 1).

    Args:
        heat_logits: ``[N, C, Ho, Wo]`` logits.
        target_heatmap: same shape, values in ``[0, 1]`` (peaks exactly 1).
    """
    if heat_logits.shape != target_heatmap.shape:
        raise ValueError(f"focal_loss: logits {list(heat_logits.shape)} and target "
                         f"{list(target_heatmap.shape)} differ in shape")
    gt = target_heatmap.to(heat_logits.dtype)
    pos = gt.eq(1).to(heat_logits.dtype)
    p = torch.sigmoid(heat_logits)
    log_p = F.logsigmoid(heat_logits)
    log_1mp = F.logsigmoid(-heat_logits)
    pos_loss = (log_p * (1 - p) ** alpha * pos).sum()
    neg_loss = (log_1mp * p ** alpha * (1 - gt) ** beta * (1 - pos)).sum()
    return -(pos_loss + neg_loss) / pos.sum().clamp(min=1)


def gather_at(feat: Tensor, index: Tensor) -> Tensor:
    """``feat`` ``[N, D, Ho, Wo]`` read at flat indices ``index`` ``[N, K]`` (``y*Wo + x``):
    ``[N, K, D]``."""
    n, d = feat.shape[:2]
    flat = feat.reshape(n, d, -1)
    return torch.gather(flat, 2, index.long().unsqueeze(1).expand(n, d, index.shape[1])
                        ).transpose(1, 2)


def reg_l1_loss(pred: Tensor, index: Tensor, mask: Tensor, target: Tensor) -> Tensor:
    """Masked L1 loss of a 2-channel regression map at the object centres (CenterNet
    ``RegL1Loss``): ``sum(|pred[idx] - target| * mask) / (sum(mask over both channels) +
    1e-4)``, a scalar.

    Args:
        pred: ``[N, 2, Ho, Wo]``.
        index: ``[N, max_objs]`` int, flat ``y*Wo + x``.
        mask: ``[N, max_objs]`` (1 real object, 0 padding).
        target: ``[N, max_objs, 2]``.
    """
    if pred.dim() != 4 or target.shape != (pred.shape[0], index.shape[1], pred.shape[1]) \
            or mask.shape != index.shape:
        raise ValueError(f"reg_l1_loss: pred {list(pred.shape)}, index {list(index.shape)}, "
                         f"mask {list(mask.shape)}, target {list(target.shape)} disagree")
    p = gather_at(pred, index)
    m = mask.to(p.dtype).unsqueeze(2).expand_as(p)
    return (torch.abs(p - target.to(p.dtype)) * m).sum() / (m.sum() + 1e-4)


# ---------------------------------------------------------------------------------- decode


def _t(a) -> Tensor:
    return a.detach().float().cpu() if isinstance(a, Tensor) else torch.as_tensor(
        np.asarray(a), dtype=torch.float32)


# earlier neighbours in raster order (dy, dx): a plateau of equal maxima keeps its first pixel
_EARLIER = ((-1, -1), (-1, 0), (-1, 1), (0, -1))


def local_peaks(heat: Tensor) -> Tensor:
    """CenterNet's 3x3 max-pool peak test with ties broken: a pixel of ``heat``
    ``[N, C, H, W]`` is a peak if it equals the maximum of its 3x3 neighbourhood and no earlier
    neighbour in raster order (up-left, up, up-right, left) is an equal-valued candidate.

    Without the tie-break, a plateau of equal values decodes as several identical boxes: the
    nearest 2x upsample before the head makes 2x2 blocks equal, and the int8 heat of the
    hardware output ties often. Returns a bool tensor of ``heat``'s shape."""
    hmax = F.max_pool2d(heat, 3, stride=1, padding=1)
    cand = hmax == heat
    h, w = heat.shape[2:]
    pad_heat = F.pad(heat, (1, 1, 1, 0), value=float("nan"))  # NaN equals nothing
    pad_cand = F.pad(cand, (1, 1, 1, 0), value=False)
    tied = torch.zeros_like(cand)
    for dy, dx in _EARLIER:
        ys, xs = 1 + dy, 1 + dx
        tied |= pad_cand[:, :, ys:ys + h, xs:xs + w] & (pad_heat[:, :, ys:ys + h, xs:xs + w] == heat)
    return cand & ~tied


#: IoU above which a lower-scored box of the same class is dropped after peak extraction.
#: CenterNet's 3x3 peak test alone suffices at a 32x32 output (the ``small`` config), but at
#: 64x64 (256x256 input) one object's heat spreads over more pixels and raises several peaks:
#: measured on ``val`` with a ``small256`` model, box NMS took VOC6 mAP50 from 12.95 to 21.24
#: (``docs/results.md``); on ``small`` it changes 18.82 to 18.88.
NMS_IOU = 0.5


def box_nms(det: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Greedy class-wise non-maximum suppression of decoded detections.

    Args:
        det: ``[k, 6]`` rows ``(x1, y1, x2, y2, score, class)`` (any order).
        iou: a box is dropped when its IoU with a kept, higher-scored box of the same class is
            above this (Pascal VOC's 0.5 by default).

    Returns:
        the kept rows, ``[k', 6]`` float32 by decreasing score (a stable sort: equal scores
        keep their input order).
    """
    det = np.asarray(det, np.float32)
    det = det[np.argsort(-det[:, 4], kind="stable")]
    x1, y1, x2, y2 = det[:, 0], det[:, 1], det[:, 2], det[:, 3]
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    alive = np.ones(len(det), bool)
    for i in range(len(det)):
        if not alive[i]:
            continue
        rest = alive.copy()
        rest[:i + 1] = False
        rest &= det[:, 5] == det[i, 5]
        if not rest.any():
            continue
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        over = inter / np.maximum(area[i] + area[rest] - inter, 1e-9) > iou
        alive[np.flatnonzero(rest)[over]] = False
    return det[alive]


def decode_batch(heat, wh, reg, stride: int = 4, k: int = 100,
                 heat_is_logits: bool = True, nms_iou: float | None = NMS_IOU) -> list:
    """Batched :func:`decode`: ``heat`` ``[N, C, Ho, Wo]``, ``wh``/``reg`` ``[N, 2, Ho, Wo]``
    (numpy or torch) -> a list of ``N`` float32 arrays ``[k', 6]``, ``k' <= min(k, C*Ho*Wo)``
    (fewer where :func:`box_nms` dropped boxes; ``nms_iou=None`` keeps all ``k``)."""
    heat, wh, reg = _t(heat), _t(wh), _t(reg)
    if heat.dim() != 4 or wh.shape != (heat.shape[0], 2) + heat.shape[2:] or \
            reg.shape != wh.shape:
        raise ValueError(f"decode: need heat [N,C,Ho,Wo] and wh, reg [N,2,Ho,Wo], got "
                         f"{list(heat.shape)}, {list(wh.shape)}, {list(reg.shape)}")
    n, c, ho, wo = heat.shape
    if heat_is_logits:
        heat = torch.sigmoid(heat)
    heat = heat * local_peaks(heat).to(heat.dtype)
    kk = min(int(k), c * ho * wo)
    scores, idx = torch.topk(heat.reshape(n, -1), kk)
    cls = idx // (ho * wo)
    pix = idx % (ho * wo)
    ys, xs = (pix // wo), (pix % wo)
    w_, h_ = gather_at(wh, pix).unbind(2)
    dx, dy = gather_at(reg, pix).unbind(2)
    cx, cy = xs.float() + dx, ys.float() + dy
    out = torch.stack([cx - w_ / 2, cy - h_ / 2, cx + w_ / 2, cy + h_ / 2], 2) * stride
    out = torch.cat([out, scores.unsqueeze(2), cls.float().unsqueeze(2)], 2).numpy()
    return [box_nms(o, nms_iou) if nms_iou is not None else o for o in out]


def decode(heat, wh, reg, stride: int = 4, k: int = 100, heat_is_logits: bool = True,
           nms_iou: float | None = NMS_IOU) -> np.ndarray:
    """CenterNet decoding of one image (``models/decode.py:ctdet_decode``), then class-wise box
    NMS (:func:`box_nms`).

    Args:
        heat: ``[C, Ho, Wo]`` class heatmap (logits if ``heat_is_logits`` else
            probabilities), numpy or torch (e.g. the dequantised golden-model output).
        wh: ``[2, Ho, Wo]`` width, height in output pixels.
        reg: ``[2, Ho, Wo]`` centre offset x, y in output pixels.
        stride: output stride R (boxes are scaled by it back to input pixels).
        k: number of candidates (top scores among the 3x3 local maxima of
            :func:`local_peaks`, one per plateau of equal maxima; fewer if ``C*Ho*Wo < k``).
        nms_iou: IoU threshold of :func:`box_nms` (default :data:`NMS_IOU`); ``None``: none.

    Returns:
        ``[k', 6]`` float32 rows ``(x1, y1, x2, y2, score, class)`` in input pixels, by
        decreasing score, ``k' <= k``; ``score`` is the sigmoid probability.
    """
    heat, wh, reg = _t(heat), _t(wh), _t(reg)
    if heat.dim() != 3:
        raise ValueError(f"decode: heat must be [C, Ho, Wo], got {list(heat.shape)}")
    return decode_batch(heat[None], wh[None], reg[None], stride, k, heat_is_logits, nms_iou)[0]


# ------------------------------------------------------------------------------ evaluation


def evaluate_ap50(detections: dict, ground_truth: dict, class_names=VOC_CLASSES) -> dict:
    """AP at IoU 0.5 per class with pycocotools' ``COCOeval``.

    Args:
        detections: ``image_id -> [k, 6]`` rows ``(x1, y1, x2, y2, score, class)``.
        ground_truth: ``image_id -> (boxes [M, 4] xyxy, labels [M] int, difficult [M] bool)``.
            Images in ``detections`` but not here raise; images here without detections
            count (their objects are misses).
        class_names: names indexed by class id.

    Returns:
        ``{"per_class": {name: AP50}`` for classes with at least one non-difficult GT box,
        ``"voc6_map50"``: mean over the :data:`VOC6` classes present (NaN if none),
        ``"map50_present"``: mean over present classes (NaN if none), ``"num_images"``,
        ``"num_detections"``}.

    Protocol: ``iouThrs = [0.5]``, ``maxDets = [100]`` per image, one area range (all).
    VOC "difficult" boxes become COCO ``iscrowd = 1`` GT, which pycocotools marks ``ignore``:
    a detection matched to one is neither TP nor FP and the box is no miss; like VOC, one
    difficult box may absorb several detections. pycocotools would also switch to the crowd
    IoU (intersection over detection area) for such boxes; :class:`_VOCIoUEval` keeps the
    ordinary IoU as VOC does. Remaining differences to the VOC devkit: AP is COCO's 101-point
    interpolated precision (VOC2010+ uses all points; results differ by up to ~1 point), and a
    detection overlapping both a normal and a difficult box prefers the normal one.
    """
    names = list(class_names)
    img_ids = {key: i + 1 for i, key in enumerate(ground_truth)}
    missing = [key for key in detections if key not in img_ids]
    if missing:
        raise ValueError(f"evaluate_ap50: detections for images without ground truth: "
                         f"{missing[:5]}")
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    images = [{"id": i} for i in img_ids.values()]
    gt_anns = []
    for key, (boxes, labels, difficult) in ground_truth.items():
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        difficult = np.asarray(difficult, dtype=bool).reshape(-1)
        if not (len(boxes) == len(labels) == len(difficult)):
            raise ValueError(f"evaluate_ap50: image {key!r}: {len(boxes)} boxes, "
                             f"{len(labels)} labels, {len(difficult)} difficult flags")
        for b, lab, dif in zip(boxes, labels, difficult):
            if not 0 <= lab < len(names):
                raise ValueError(f"evaluate_ap50: image {key!r}: label {lab} outside "
                                 f"[0, {len(names)})")
            w, h = b[2] - b[0], b[3] - b[1]
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": img_ids[key],
                            "category_id": int(lab) + 1, "bbox": [b[0], b[1], w, h],
                            "area": w * h, "iscrowd": int(dif)})
    dt_anns = []
    for key, det in detections.items():
        det = np.asarray(det, dtype=np.float64).reshape(-1, 6)
        for x1, y1, x2, y2, s, c in det:
            if not 0 <= c < len(names):
                raise ValueError(f"evaluate_ap50: image {key!r}: detection class {c} outside "
                                 f"[0, {len(names)})")
            dt_anns.append({"id": len(dt_anns) + 1, "image_id": img_ids[key],
                            "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "area": (x2 - x1) * (y2 - y1), "score": float(s), "iscrowd": 0})

    def coco(anns):
        c = COCO()
        c.dataset = {"images": images, "categories": cats, "annotations": anns}
        with contextlib.redirect_stdout(io.StringIO()):
            c.createIndex()
        return c

    ev = _VOCIoUEval(coco(gt_anns), coco(dt_anns), "bbox")
    ev.params.iouThrs = np.array([0.5])
    ev.params.maxDets = [100]
    ev.params.areaRng = [[0.0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, 0]  # [recall thresholds, classes]
    per_class = {}
    for ci, name in enumerate(names):
        p = prec[:, ci]
        if (p > -1).any():  # -1: no non-difficult GT of this class
            per_class[name] = float(np.mean(p[p > -1]))
    voc6 = [per_class[n] for n in VOC6 if n in per_class]
    return {"per_class": per_class,
            "voc6_map50": float(np.mean(voc6)) if voc6 else float("nan"),
            "map50_present": float(np.mean(list(per_class.values()))) if per_class
            else float("nan"),
            "num_images": len(ground_truth), "num_detections": len(dt_anns)}


class _VOCIoUEval(COCOeval):
    """``COCOeval`` with the ordinary IoU also for ``iscrowd`` (VOC difficult) GT; the
    ignore/multi-match handling of crowd GT stays pycocotools'."""

    def computeIoU(self, imgId, catId):
        p = self.params
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return []
        inds = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in inds][:p.maxDets[-1]]
        return mask_utils.iou([d["bbox"] for d in dt], [g["bbox"] for g in gt], [0] * len(gt))


def top1_check(dets: np.ndarray, gt) -> dict | None:
    """Is the highest-scoring detection correct (the demo's verdict)? It is when a ground-truth
    box of the same class overlaps it with IoU >= 0.5 (the AP50 criterion).

    Args:
        dets: ``[k, 6]`` rows ``(x1, y1, x2, y2, score, class)`` by decreasing score.
        gt: ``(boxes [M, 4], labels [M], ...)`` in the same pixels, or ``None`` (no ground
            truth: only class and score are returned, ``correct`` is ``None``).

    Returns:
        ``{"class", "score", "correct", "iou", "gt_class"}`` (``iou``/``gt_class``: the best
        overlapping ground-truth box of the same class, else of any class), or ``None``
        without detections.
    """
    if len(dets) == 0:
        return None
    x1, y1, x2, y2, score, cls = (float(v) for v in dets[0])
    out = {"class": VOC_CLASSES[int(cls)], "score": round(score, 3), "correct": None}
    if gt is None:
        return out
    boxes = np.asarray(gt[0], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(gt[1]).reshape(-1)
    if not len(boxes):
        return out | {"correct": False}
    # the IoU the AP50 evaluation uses (pycocotools, boxes as x, y, w, h)
    iou = mask_utils.iou([[x1, y1, x2 - x1, y2 - y1]],
                         np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).tolist(),
                         [0] * len(boxes))[0]
    same = labels == int(cls)
    best = int(np.argmax(iou))
    return out | {"correct": bool(same.any() and iou[same].max() >= 0.5),
                  "iou": round(float(iou[same].max() if same.any() else iou[best]), 3),
                  "gt_class": VOC_CLASSES[int(labels[np.argmax(np.where(same, iou, -1))]
                                          if same.any() else labels[best])]}


def top1_rate(detections: dict, ground_truth: dict) -> dict:
    """The demo's verdict over a whole split: on how many images is the highest-scoring
    detection correct (:func:`top1_check`: same class as a ground-truth box at IoU >= 0.5)?

    Args:
        detections: ``image_id -> [k, 6]`` rows ``(x1, y1, x2, y2, score, class)``, any order.
        ground_truth: ``image_id -> (boxes [M, 4], labels [M], difficult [M])``, same pixels.

    Returns:
        ``{"images", "correct", "rate"}`` (rate 0..1; an image without detections is wrong; NaN
        for an empty split).
    """
    correct = 0
    for key, gt in ground_truth.items():
        det = np.asarray(detections.get(key, np.zeros((0, 6))), np.float64).reshape(-1, 6)
        t = top1_check(det[np.argsort(-det[:, 4], kind="stable")], gt)
        correct += bool(t and t["correct"])
    n = len(ground_truth)
    return {"images": n, "correct": correct, "rate": correct / n if n else float("nan")}


#: object-size bins of :func:`recall_by_size`: square root of the box area, in pixels of a
#: 128x128 letterboxed input (so that models of different input sizes compare per object)
SIZE_BINS = (0, 8, 16, 32, 64)


def recall_by_size(detections: dict, ground_truth: dict, input_size: int,
                   classes=None, iou: float = 0.5) -> list[dict]:
    """Recall of the detections per object size: the share of non-difficult ground-truth
    boxes that some detection of the same class overlaps by IoU >= ``iou`` (at any score, so
    it is recall over the decoder's top ``k``).

    Args:
        detections: ``image_id -> [k, 6]`` rows ``(x1, y1, x2, y2, score, class)``, input pixels.
        ground_truth: ``image_id -> (boxes [M, 4], labels [M], difficult [M])``, input pixels.
        input_size: the network's input side S in pixels; sizes are scaled by ``128 / S``.
        classes: class ids counted (default :data:`VOC6`'s).

    Returns:
        one dict per bin of :data:`SIZE_BINS`: ``{"from_px", "to_px" (None: open), "objects",
        "found", "recall"}`` (recall 0..1, NaN for an empty bin).
    """
    if classes is None:
        classes = [VOC_CLASSES.index(c) for c in VOC6]
    classes = set(int(c) for c in classes)
    found = np.zeros(len(SIZE_BINS), int)
    total = np.zeros(len(SIZE_BINS), int)
    for key, (boxes, labels, difficult) in ground_truth.items():
        det = np.asarray(detections.get(key, np.zeros((0, 6))), np.float32).reshape(-1, 6)
        for box, label, diff in zip(np.asarray(boxes), np.asarray(labels), np.asarray(difficult)):
            if diff or int(label) not in classes:
                continue
            side = math.sqrt(max(0.0, (box[2] - box[0]) * (box[3] - box[1]))) * 128.0 / input_size
            b = int(np.searchsorted(SIZE_BINS, side, side="right")) - 1
            total[b] += 1
            same = det[det[:, 5] == label]
            if len(same):
                iw = np.clip(np.minimum(box[2], same[:, 2]) - np.maximum(box[0], same[:, 0]), 0, None)
                ih = np.clip(np.minimum(box[3], same[:, 3]) - np.maximum(box[1], same[:, 1]), 0, None)
                inter = iw * ih
                union = ((box[2] - box[0]) * (box[3] - box[1])
                         + (same[:, 2] - same[:, 0]) * (same[:, 3] - same[:, 1]) - inter)
                found[b] += bool((inter / np.maximum(union, 1e-9) >= iou).any())
    edges = list(SIZE_BINS) + [None]
    return [{"from_px": edges[i], "to_px": edges[i + 1], "objects": int(total[i]),
             "found": int(found[i]),
             "recall": float(found[i] / total[i]) if total[i] else float("nan")}
            for i in range(len(SIZE_BINS))]


def recall_table_md(rows: list[dict]) -> str:
    """Markdown table of :func:`recall_by_size` rows."""
    head = " | ".join(f"{r['from_px']}-{r['to_px']}" if r["to_px"] else f">= {r['from_px']}"
                      for r in rows)
    lines = [f"| box size (px at 128x128) | {head} |", "|---" + "|---:" * len(rows) + "|",
             "| objects | " + " | ".join(str(r["objects"]) for r in rows) + " |",
             "| recall (%) | " + " | ".join(f"{100 * r['recall']:.1f}" for r in rows) + " |"]
    return "\n".join(lines)


def results_table_md(results: dict) -> str:
    """Markdown table of :func:`evaluate_ap50` results: one row per present class (AP50 in
    percent, VOC6 classes marked), then VOC6 mAP50 and the mean over present classes."""
    if "per_class" not in results:
        raise ValueError("results_table_md: expected the dict returned by evaluate_ap50")
    lines = ["| class | AP50 (%) |", "|---|---:|"]
    for name, ap in results["per_class"].items():
        lines.append(f"| {name}{' (VOC6)' if name in VOC6 else ''} | {100 * ap:.1f} |")
    lines.append(f"| **VOC6 mAP50** | **{100 * results['voc6_map50']:.1f}** |")
    lines.append(f"| mAP50 (present classes) | {100 * results['map50_present']:.1f} |")
    lines.append(f"\n{results.get('num_images', '?')} images, COCO 101-point AP at IoU 0.5.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- drawing

GT_COLOUR = (0, 255, 0)


def _class_colour(c: int) -> tuple[int, int, int]:
    """A fixed, non-green colour per class (golden-angle hue walk)."""
    import colorsys

    hue = (0.02 + 0.618034 * c) % 1.0
    if 0.22 < hue < 0.45:  # keep clear of the ground-truth green
        hue = (hue + 0.3) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_detections(image, detections, class_names=VOC_CLASSES, score_thresh: float = 0.3,
                    gt=None):
    """Draw boxes with "class score" labels on a copy of ``image`` (Pillow).

    Args:
        image: uint8 ``[H, W, 3]`` RGB.
        detections: ``[k, 6]`` rows ``(x1, y1, x2, y2, score, class)`` in image pixels; rows
            with ``score < score_thresh`` are skipped.
        gt: optional ``(boxes [M, 4], labels [M])`` drawn in green (:data:`GT_COLOUR`),
            labelled below the box (detections are labelled above).

    Returns:
        ``PIL.Image.Image`` (RGB).
    """
    from PIL import Image, ImageDraw

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"draw_detections: image must be uint8 [H, W, 3], got {img.dtype} "
                         f"{img.shape}")
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 6)
    out = Image.fromarray(img.copy(), "RGB")
    draw = ImageDraw.Draw(out)
    width = max(1, round(min(img.shape[:2]) / 200))

    def box(b, colour, text, below=False):
        x1, y1, x2, y2 = (float(v) for v in b)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        if text:
            _, top, _, bottom = draw.textbbox((0, 0), text)
            th = bottom - top + 2
            # detections label above the box, ground truth below it (so they do not collide)
            ty = (y2 + 1 if y2 + th < img.shape[0] else y2 - th) if below else \
                (y1 - th if y1 - th >= 0 else y1)
            tb = draw.textbbox((x1, ty), text)
            draw.rectangle([tb[0] - 1, tb[1] - 1, tb[2] + 1, tb[3] + 1], fill=colour)
            dark = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 128
            draw.text((x1, ty), text, fill=(0, 0, 0) if dark else (255, 255, 255))

    if gt is not None:
        gboxes, glabels = gt
        for b, lab in zip(np.asarray(gboxes).reshape(-1, 4), np.asarray(glabels).reshape(-1)):
            box(b, GT_COLOUR, f"gt {class_names[int(lab)]}", below=True)
    for x1, y1, x2, y2, s, c in det:
        if s < score_thresh:
            continue
        ci = int(c)
        name = class_names[ci] if 0 <= ci < len(class_names) else str(ci)
        box((x1, y1, x2, y2), _class_colour(ci), f"{name} {s:.2f}")
    return out
