#!/usr/bin/env python3
"""deflow on a Zynq board: images (a folder, or a USB camera) through the accelerator,
CenterNet boxes decoded on the ARM, annotated images written, frames per second printed.

Runs on the Python 3 of a PYNQ 3.x board image (pynq, numpy, Pillow; OpenCV only for
``--camera``), from the deploy folder that ``deflow bitstream`` writes:
``deflow.bit``, ``deflow.hwh``, ``accel.json``, ``driver.py``, this file.

    sudo -E python3 deflow_demo.py --images /home/xilinx/pictures --out annotated
    sudo -E python3 deflow_demo.py --camera 0 --frames 100

Output tensor layout (models/detector.py): channels ``heat (C-4 classes) | wh (2) | reg (2)``
at stride ``input H / output H``; real values are ``output_scale x integer`` (accel.json).
A bitstream of the default model (the untrained 64x64 slice network) runs the pipeline end to
end but its boxes mean nothing; build it with ``--model small`` for the trained detector.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from driver import AcceleratorDriver, PynqBackend  # noqa: E402  (deploy folder copy)

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def box_nms(det: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Greedy class-wise NMS of rows ``(x1, y1, x2, y2, score, class)`` (port of
    models/centernet.box_nms): kept rows by decreasing score."""
    det = det[np.argsort(-det[:, 4], kind="stable")]
    area = np.clip(det[:, 2] - det[:, 0], 0, None) * np.clip(det[:, 3] - det[:, 1], 0, None)
    alive = np.ones(len(det), bool)
    for i in range(len(det)):
        if not alive[i]:
            continue
        rest = alive.copy()
        rest[:i + 1] = False
        rest &= det[:, 5] == det[i, 5]
        iw = np.clip(np.minimum(det[i, 2], det[rest, 2]) - np.maximum(det[i, 0], det[rest, 0]), 0, None)
        ih = np.clip(np.minimum(det[i, 3], det[rest, 3]) - np.maximum(det[i, 1], det[rest, 1]), 0, None)
        over = iw * ih / np.maximum(area[i] + area[rest] - iw * ih, 1e-9) > iou
        alive[np.flatnonzero(rest)[over]] = False
    return det[alive]


def decode(out: np.ndarray, scale, stride: int, k: int = 20, nms_iou: float | None = 0.5
           ) -> np.ndarray:
    """CenterNet decoding (numpy port of models/centernet.decode: sigmoid heat, 3x3 local
    maxima with ties broken as in local_peaks, top k, class-wise box NMS at ``nms_iou``) of one
    output ``[Ho, Wo, C]`` -> rows ``(x1, y1, x2, y2, score, class)`` in input pixels."""
    x = out.astype(np.float32) * np.asarray(scale if scale is not None else 1.0, np.float32)
    ho, wo, c = x.shape
    ncls = c - 4
    if ncls < 1:
        raise ValueError(f"output has {c} channels: a CenterNet head needs classes + 4")
    heat = 1.0 / (1.0 + np.exp(-x[..., :ncls]))
    pad = np.pad(heat, ((1, 1), (1, 1), (0, 0)), constant_values=-1.0)
    hmax = np.max([pad[dy:dy + ho, dx:dx + wo] for dy in range(3) for dx in range(3)], axis=0)
    cand = hmax == heat
    # ties: a plateau of equal maxima keeps its first pixel in raster order
    pad_c = np.pad(cand, ((1, 1), (1, 1), (0, 0)), constant_values=False)
    tied = np.zeros_like(cand)
    for dy, dx in ((0, 0), (0, 1), (0, 2), (1, 0)):
        tied |= pad_c[dy:dy + ho, dx:dx + wo] & (pad[dy:dy + ho, dx:dx + wo] == heat)
    heat = np.where(cand & ~tied, heat, 0.0)
    flat = heat.reshape(-1)
    kk = min(k, flat.size)
    idx = np.argsort(-flat, kind="stable")[:kk]
    pix, cls = idx // ncls, idx % ncls
    ys, xs = pix // wo, pix % wo
    w, h = x[ys, xs, ncls], x[ys, xs, ncls + 1]
    cx, cy = xs + x[ys, xs, ncls + 2], ys + x[ys, xs, ncls + 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) * stride
    det = np.concatenate([boxes, flat[idx, None], cls[:, None].astype(np.float32)], 1)
    return box_nms(det.astype(np.float32), nms_iou) if nms_iou is not None else det


def load_images(folder: Path, size: tuple[int, int], limit: int):
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise SystemExit(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    for f in files:
        img = Image.open(f).convert("RGB")
        yield f.stem, img, np.asarray(img.resize((size[1], size[0]), Image.BILINEAR), np.uint8)


def camera_frames(index: int, size: tuple[int, int], limit: int):
    import cv2
    from PIL import Image

    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise SystemExit(f"camera {index} cannot be opened")
    try:
        for i in range(limit):
            ok, bgr = cap.read()
            if not ok:
                raise SystemExit(f"camera {index}: no frame")
            img = Image.fromarray(bgr[:, :, ::-1])
            yield f"cam{i:04d}", img, np.asarray(img.resize((size[1], size[0])), np.uint8)
    finally:
        cap.release()


def draw(img, dets: np.ndarray, in_hw: tuple[int, int], threshold: float):
    from PIL import ImageDraw

    sx, sy = img.width / in_hw[1], img.height / in_hw[0]
    d = ImageDraw.Draw(img)
    for x1, y1, x2, y2, score, cls in dets:
        if score < threshold:
            continue
        name = VOC_CLASSES[int(cls)] if int(cls) < len(VOC_CLASSES) else str(int(cls))
        d.rectangle([x1 * sx, y1 * sy, x2 * sx, y2 * sy], outline=(255, 0, 0), width=2)
        d.text((x1 * sx + 2, y1 * sy + 2), f"{name} {score:.2f}", fill=(255, 0, 0))
    return img


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="folder of images")
    src.add_argument("--camera", type=int, help="camera index (OpenCV)")
    p.add_argument("--frames", type=int, default=50, help="most images / camera frames")
    p.add_argument("--bit", type=Path, default=HERE / "deflow.bit")
    p.add_argument("--out", type=Path, default=HERE / "annotated")
    p.add_argument("--threshold", type=float, default=0.3, help="score to draw a box")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per DMA transfer")
    args = p.parse_args(argv)

    drv = AcceleratorDriver(PynqBackend(args.bit, timeout_s=args.timeout)).load()
    spec = drv.spec
    in_hw = spec.input.shape[:2]
    stride = spec.input.shape[0] // spec.output.shape[0]
    print(f"deflow: {args.bit.name} loaded; input {spec.input.shape}, output "
          f"{spec.output.shape}, fabric {spec.clock_mhz:g} MHz")
    args.out.mkdir(parents=True, exist_ok=True)
    frames = (load_images(args.images, in_hw, args.frames) if args.images is not None
              else camera_frames(args.camera, in_hw, args.frames))
    n, t_accel, t0 = 0, 0.0, time.perf_counter()
    for name, img, x in frames:
        t = time.perf_counter()
        out = drv.infer(x[None])[0]  # driver.pack_frames -> DMA -> driver.unpack_frames
        t_accel += time.perf_counter() - t
        dets = decode(out, spec.output_scale, stride)
        draw(img, dets, in_hw, args.threshold).save(args.out / f"{name}.jpg")
        n += 1
        kept = int(np.sum(dets[:, 4] >= args.threshold))
        print(f"  {name}: {kept} box(es) >= {args.threshold}")
    total = time.perf_counter() - t0
    c = drv.counters()
    print(f"deflow: {n} frame(s); accelerator calls {n / t_accel:.1f} fps, end to end "
          f"(load, decode, draw) {n / total:.1f} fps")
    if n >= 2:
        t = drv.throughput(min(n, 16))
        print(f"deflow: streamed back to back: {t['cycles_per_frame']} cycles/frame = "
              f"{t['fps']:.1f} fps at {t['clock_mhz']:g} MHz (hardware counters), "
              f"{t.get('wall_fps', 0):.1f} fps wall clock")
    print(f"deflow: counters {c}; annotated images in {args.out}")
    drv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
