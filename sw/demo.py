"""The main job (``make demo``): the committed W4A8 detector on real images through the
accelerator, CenterNet decode on the CPU, annotated images and a report.

Steps (each printed as it runs):

1. images: the first ``--frames`` images of the VOC ``val`` split (letterboxed to the config's
   input size, with their ground truth), or scikit-image's bundled photos (``chelsea``,
   ``astronaut``, ``motorcycle_left``) where no VOC folder exists (docs/contracts.md);
2. the checkpoint (default ``models/checkpoints/small_w4a8.pt``) -> Brevitas model -> QONNX
   (cached under ``build/demo/cache`` by the checkpoint's SHA-1);
3. compile: lower to hardware layers, fold for ``--board`` at ``--fps`` (default a folding
   whose RTL simulation stays quick) and estimate cycles and resources;
4. golden integer model on every image, and its distance to the Brevitas float model;
5. the accelerator: RTL simulation (``--backend sim``: FIFO depths sized analytically from the
   layers' cycle models, :mod:`sw.fifo_analytic`, in seconds, or with ``--fifo-sizing
   simulation`` by a sizing simulation cached per graph structure; then the frames streamed
   through the driver's simulation backend) or the board
   (``--backend pynq`` with ``--bitfile``); every output value compared with the golden model;
6. CenterNet decode of the accelerator's output (dequantised per channel), boxes drawn on the
   images, and ``report.md`` / ``report.json``: detections, bit-exactness, measured and
   expected cycles, projected frames per second at the board clock, estimated resources.

All outputs go to ``--out`` (default ``build/demo``), each file written atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "checkpoints" / "small_w4a8.pt"
DEFAULT_FPS = 2000.0  # at the board clock: II of ~1e5 cycles, a design Verilator builds quickly


class DemoError(RuntimeError):
    """A demo step cannot run (missing checkpoint, bitfile, board), with what to do instead."""


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def load_images(n: int, size: int, voc_root=None):
    """``n`` images ``uint8 [S, S, 3]`` with names and ground truth (or ``None`` without VOC).

    Returns:
        ``(images, names, ground_truth, source)``; ground truth per image is
        ``(boxes [M, 4] xyxy input pixels, labels [M], difficult [M])``.
    """
    from models.data import SKIMAGE_FALLBACK, find_voc_root, skimage_images

    voc = find_voc_root(voc_root)
    if voc is not None:
        from models.voc import VOCDetection

        ds = VOCDetection(voc, "val", input_size=size, train=False, limit=n, progress=False)
        images, names, gts = [], [], []
        for i in range(min(n, len(ds))):
            sample = ds.render(i)
            images.append(np.ascontiguousarray(sample[0]))
            names.append(ds.annos[i].image_id)
            gts.append(tuple(np.asarray(a) for a in sample[1:4]))
        return images, names, gts, f"VOC val at {voc}"
    names = [SKIMAGE_FALLBACK[i % len(SKIMAGE_FALLBACK)] for i in range(n)]
    images = list(skimage_images(size, names))
    return images, names, [None] * n, "scikit-image sample photos (no VOC folder found)"


def export_cached(ckpt: Path, cache: Path):
    """(model, meta, onnx path) of a checkpoint; the QONNX export is cached by SHA-1."""
    from models.detector import CONFIGS, load_checkpoint
    from models.export import export_qonnx

    model, meta = load_checkpoint(ckpt)
    size = CONFIGS[meta["config"]].input_size
    onnx_path = cache / f"{meta['config']}_{_sha1(ckpt)}.onnx"
    if not onnx_path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        export_qonnx(model, onnx_path, input_shape=(1, 3, size, size))
    return model, meta, onnx_path, size


def structure_key(graph) -> str:
    """Hash of a folded graph's structure: tensor shapes, lanes and kinds, layer ops, wiring,
    folding and shape attributes. Stream timing (and so the FIFO depths a sizing run measures)
    depends on these, not on weight values or requantisation constants, so a retrained
    checkpoint of the same config reuses the sizing."""
    value_attrs = {"shift", "out_min", "out_max", "bias", "multiplier", "scale", "weight_bits"}
    doc = {
        "tensors": {k: [list(t.shape), t.lanes, t.kind] for k, t in graph.tensors.items()},
        "layers": [[l.name, l.op, l.inputs, l.outputs, l.folding,
                    {k: v for k, v in l.attrs.items() if k not in value_attrs}]
                   for l in graph.layers],
    }
    return hashlib.sha1(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


DRAW_SCALE = 4  # annotated images are drawn at 4x the network input (128 -> 512 pixels)


def top1_check(dets: np.ndarray, gt) -> dict | None:
    """Is the highest-scoring detection correct? It is when a ground-truth box of the same class
    overlaps it with IoU >= 0.5 (the AP50 criterion).

    Args:
        dets: ``[k, 6]`` rows ``(x1, y1, x2, y2, score, class)`` by decreasing score.
        gt: ``(boxes [M, 4], labels [M], ...)`` in the same pixels, or ``None`` (no ground
            truth: only class and score are returned).

    Returns:
        ``{"class", "score", "correct", "iou", "gt_class"}`` (``iou``/``gt_class``: the best
        overlapping ground-truth box of any class), or ``None`` without detections.
    """
    from pycocotools import mask as mask_utils

    from models.centernet import VOC_CLASSES

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


def draw_scaled(img: np.ndarray, dets: np.ndarray, gt, scale: int):
    """:func:`models.centernet.draw_detections` on ``img`` (uint8 ``[H, W, 3]``) enlarged
    ``scale`` times (bicubic), boxes and ground truth scaled with it; every row of ``dets`` is
    drawn. Returns a PIL image."""
    from PIL import Image

    from models.centernet import VOC_CLASSES, draw_detections

    big = np.asarray(Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale),
                                                 Image.BICUBIC))
    d = np.array(dets, dtype=np.float64).reshape(-1, 6)
    d[:, :4] *= scale
    g = None if gt is None else (np.asarray(gt[0], dtype=np.float64) * scale, gt[1])
    return draw_detections(big, d, VOC_CLASSES, score_thresh=-1.0, gt=g)


def dequantise(graph, y_int: np.ndarray) -> np.ndarray:
    """Accelerator output ``[H, W, C]`` integers -> real values with the per-channel scale."""
    scale = np.asarray(graph.tensors[graph.output].scale, dtype=np.float64).reshape(-1)
    return y_int.astype(np.float64) * scale


def run_demo(args) -> int:
    from models.centernet import VOC_CLASSES, decode, evaluate_ap50
    from sw.autofold import choose_folding
    from sw.boards import get_board
    from sw.estimate import bottleneck, estimate, format_table, totals
    from sw.execute import compare_with_brevitas, run_graph
    from sw.folding import apply_folding
    from hw.graph import write_text_atomic
    from sw.lower import lower_qonnx

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.checkpoint)
    if not ckpt.exists():
        raise DemoError(f"checkpoint {ckpt} not found (train one: make train CONFIG=small)")
    board = get_board(args.board)
    clock = args.clock_mhz or board.fabric_mhz

    print(f"[1/6] checkpoint {ckpt.name} -> QONNX")
    model, meta, onnx_path, size = export_cached(ckpt, out / "cache")
    print(f"      config {meta['config']} ({size}x{size}), {meta.get('decoder_form', '?')} decoder, "
          f"VOC6 mAP50 on val {meta.get('metrics', {}).get('voc6_map50', 'n/a')}")

    print(f"[2/6] images: {args.frames} at {size}x{size}")
    images, names, gts, source = load_images(args.frames, size, args.voc)
    print(f"      from {source}: {', '.join(names)}")

    print(f"[3/6] compile for {board.name} at {clock:g} MHz, target {args.fps:g} fps")
    graph = lower_qonnx(onnx_path, requant="within1")  # requantisers: the design fits the board
    folding = choose_folding(graph, board, target_fps=args.fps, clock_mhz=clock)
    graph = apply_folding(graph, folding)
    est = estimate(graph)
    bn = bottleneck(est)
    tot = totals(est, clock)
    print(format_table(est))

    print("[4/6] golden integer model; distance to the Brevitas float model")
    golden = [run_graph(graph, img)[graph.output] for img in images]
    dist = compare_with_brevitas(model, graph, np.stack(images))
    print(f"      {json.dumps(_jsonable(dist))}")

    print(f"[5/6] accelerator ({args.backend} backend): {len(images)} frame(s)")
    hw_out, counters = _run_backend(args, graph, images, out, clock)
    mism = [int(np.sum(h != g)) for h, g in zip(hw_out, golden)]
    for name, m in zip(names, mism):
        print(f"      {name}: {'BIT-EXACT' if m == 0 else f'MISMATCH ({m} values)'} vs golden")

    print("[6/6] CenterNet decode, drawing, report")
    ncls = len(VOC_CLASSES)
    dets, rows = {}, []
    for img, name, y, gt in zip(images, names, hw_out, gts):
        yr = dequantise(graph, y).transpose(2, 0, 1)  # [24, Ho, Wo]
        d = decode(yr[:ncls], yr[ncls:ncls + 2], yr[ncls + 2:ncls + 4], stride=size // yr.shape[1],
                   k=100, heat_is_logits=True)
        dets[name] = d
        keep = d[d[:, 4] >= args.score]
        top1 = top1_check(d, gt)
        rows.append({"image": name, "detections": [
            {"class": VOC_CLASSES[int(r[5])], "score": round(float(r[4]), 3),
             "box_xyxy": [round(float(v), 1) for v in r[:4]]} for r in keep], "top1": top1})
        # drawn 4x larger than the 128x128 input; only detections above the threshold are
        # drawn, the top-1 verdict is in the console and the report either way
        pic = draw_scaled(img, keep, gt, DRAW_SCALE if size < 256 else 1)
        _save_image_atomic(pic, out / f"{name}_detections.png")
        shown = ", ".join(f"{x['class']} {x['score']:.2f}" for x in rows[-1]["detections"])
        print(f"      {name}: " + (shown or f"no detection above {args.score}")
              + (f"; top-1 {top1['class']} {top1['score']:.2f} "
                 + ("correct" if top1["correct"] else "wrong")
                 + (f" (IoU {top1['iou']:.2f} with ground truth {top1['gt_class']})"
                    if top1.get("gt_class") else "") if top1 else ""))
    ap = None
    if all(g is not None for g in gts):
        ap = evaluate_ap50(dets, dict(zip(names, gts)), VOC_CLASSES)

    ii_meas = counters.get("steady_cycles") or counters.get("cycles_first")
    report = {
        "checkpoint": str(ckpt.relative_to(REPO_ROOT) if ckpt.is_relative_to(REPO_ROOT) else ckpt),
        "config": meta["config"], "input_size": size, "images": names, "image_source": source,
        "backend": args.backend, "board": board.name, "clock_mhz": clock,
        "bit_exact": all(m == 0 for m in mism), "mismatches": mism,
        "golden_vs_brevitas": _jsonable(dist),
        "cycles": {"measured": counters, "expected_ii": bn.cycles, "bottleneck": bn.name},
        "fps_projected_at_clock": {
            "from_measured_cycles": (clock * 1e6 / ii_meas) if ii_meas else None,
            "from_expected_ii": clock * 1e6 / bn.cycles},
        "resources_estimated": _jsonable(tot),
        "folding": folding,
        "score_threshold": args.score,
        "detections": rows,
        "ap50_on_these_images": _jsonable(ap),
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / "report.md", _report_md(report))
    ok = report["bit_exact"]
    print(f"report: {out / 'report.md'}; images: {out}/*_detections.png")
    print(f"done in {time.time() - t0:.0f} s: " + ("bit-exact" if ok else f"{sum(mism)} mismatches"))
    return 0 if ok else 1


def _run_backend(args, graph, images, out: Path, clock: float):
    """Accelerator outputs per image ``[H, W, C]`` and the measured counters (``clock``: MHz,
    the fabric clock the counters' times refer to)."""
    if args.backend == "pynq":
        from sw.driver import AcceleratorDriver, PynqBackend

        if not args.bitfile:
            raise DemoError("--backend pynq needs --bitfile (make bitstream BOARD=... on a "
                            "machine with Vivado, then copy the deploy folder to the board)")
        drv = AcceleratorDriver(PynqBackend(args.bitfile))
        drv.load()
        y = drv.infer(np.stack(images))
        c = drv.counters()
        drv.close()
        return list(y), c
    from sw.driver import AcceleratorDriver, SimBackend
    from sw.fifo_analytic import size_fifos_auto
    from sw.fifosizing import load_depths, save_depths

    method = getattr(args, "fifo_sizing", "analytical")
    # a simulation sizing is cached per graph structure; the analytical one takes seconds
    depth_file = out / "cache" / f"fifo_depths_{structure_key(graph)}.json"
    if method == "simulation" and depth_file.exists():
        depths = load_depths(depth_file)
        sizing = {"method": "simulation (cached)", "seconds": 0.0}
        print(f"      FIFO depths from {depth_file.name} (sized by simulation earlier)")
    else:
        print(f"      sizing FIFOs ({method}) ...")
        depths, sizing = size_fifos_auto(graph, method, frames=images[:2],
                                         log=lambda line: print(f"      {line}"))
        if sizing["method"] == "simulation":
            save_depths(depths, depth_file)
        model = (f", modelled frame interval {sizing['model_interval']:,} cycles"
                 if "model_interval" in sizing else "")
        print(f"      FIFO depths sized by {sizing['method']} in {sizing['seconds']:.2f} s: "
              f"{len(depths)} FIFOs, {sizing['fifo_bits']:,} bits{model}")
    print("      streaming the frames through the driver's RTL simulation backend ...")
    with AcceleratorDriver(SimBackend(graph, fifo_depths=depths, clock_mhz=clock)) as drv:
        y = drv.infer(np.stack(images))
        c = drv.counters()
    counters = {"frames": c["frames"], "total_cycles": c["cycles"],
                "steady_cycles": c["last_frame_cycles"] if len(images) > 1 else None,
                "cycles_first": None if len(images) > 1 else c["cycles"],
                "fifo_sizing": sizing}
    print(f"      counters: {c['frames']} frames, {c['cycles']} cycles in all, last frame "
          f"interval {c['last_frame_cycles']} cycles")
    return list(y), counters


def _save_image_atomic(pic, path: Path) -> None:
    tmp = path.with_suffix(".tmp.png")
    pic.save(tmp)
    tmp.replace(path)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if hasattr(x, "__dict__") and not isinstance(x, type):
        return _jsonable(vars(x))
    return x


def _report_md(r: dict) -> str:
    c = r["cycles"]
    m = c["measured"]
    lines = [
        f"# deflow demo: {r['config']} on {r['backend']}", "",
        f"- images: {', '.join(r['images'])} ({r['image_source']})",
        f"- checkpoint: `{r['checkpoint']}`",
        f"- bit-exact against the golden model: **{r['bit_exact']}** (mismatching values per "
        f"image: {r['mismatches']})",
        f"- golden vs Brevitas float: {json.dumps(r['golden_vs_brevitas'])}",
        f"- cycles (measured by the accelerator's own counters): {m.get('total_cycles')} for "
        f"{m.get('frames')} frames in all; steady-state frame interval (LAST_FRAME_CYCLES) "
        f"{m.get('steady_cycles')}; expected II {c['expected_ii']} (bottleneck {c['bottleneck']})",
    ]
    fs = m.get("fifo_sizing")
    if fs:
        lines.append(f"- FIFO depths sized by {fs['method']} in {fs['seconds']:.2f} s"
                     + (f" ({fs['fifo_bits']:,} bits of FIFO)" if "fifo_bits" in fs else ""))
    f = r["fps_projected_at_clock"]
    lines.append(f"- projected frames/s at {r['clock_mhz']:g} MHz on {r['board']}: "
                 + (f"{f['from_measured_cycles']:.0f} from measured cycles, " if f["from_measured_cycles"] else "")
                 + f"{f['from_expected_ii']:.0f} from the expected II (projections, not board "
                 f"measurements)")
    lines.append(f"- resources (compiler estimates): {json.dumps(r['resources_estimated'])}")
    if r["ap50_on_these_images"]:
        lines.append(f"- AP50 on these {len(r['images'])} images only (not the val figure): "
                     f"{json.dumps(r['ap50_on_these_images'])}")
    lines += ["", f"| image | detections above {r['score_threshold']} (class score) | top-1 detection "
              "| top-1 correct (same class, IoU >= 0.5) |", "|---|---|---|---|"]
    for row in r["detections"]:
        t = row.get("top1") or {}
        verdict = ("-" if t.get("correct") is None else
                   f"{'yes' if t['correct'] else 'no'} (IoU {t.get('iou', 0):.2f}, ground truth "
                   f"{t.get('gt_class', '-')})")
        lines.append(f"| {row['image']} | " + (", ".join(f"{d['class']} {d['score']:.2f}"
                                                          for d in row["detections"]) or "none")
                     + f" | {t.get('class', '-')} {t.get('score', 0):.2f} | {verdict} |")
    n_ok = sum(1 for row in r["detections"] if (row.get("top1") or {}).get("correct"))
    lines += ["", f"Top-1 detection correct on {n_ok} of {len(r['detections'])} images (the "
              "drawings show the detections above the threshold and the ground truth in green)."]
    return "\n".join(lines) + "\n"


def add_demo_parser(sub) -> argparse.ArgumentParser:
    """Register ``deflow demo`` on an argparse subparsers object."""
    d = sub.add_parser("demo", help="the committed detector on real images through the "
                       "accelerator (RTL simulation or a board), with annotated images")
    d.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    d.add_argument("--voc", default=None, help="VOC folder (default: $DEFLOW_VOC_ROOT or "
                   "../shared/data/voc2012-subset; scikit-image photos without one)")
    d.add_argument("--frames", type=int, default=3, help="images to stream through the accelerator")
    d.add_argument("--board", default="ultra96v2")
    d.add_argument("--clock-mhz", type=float, default=None)
    d.add_argument("--fps", type=float, default=DEFAULT_FPS,
                   help="folding target at the clock (lower = smaller design, faster simulation build)")
    d.add_argument("--backend", choices=("sim", "pynq"), default="sim")
    d.add_argument("--bitfile", default=None, help="bitstream for --backend pynq")
    d.add_argument("--score", type=float, default=0.3, help="score threshold for drawing/report")
    d.add_argument("--out", default=str(REPO_ROOT / "build" / "demo"))
    d.add_argument("--waves", action="store_true", help="write a VCD waveform")
    d.add_argument("--fifo-sizing", choices=("analytical", "simulation"), default="analytical",
                   help="FIFO depths from the layers' cycle models (default) or by simulation")
    d.set_defaults(func=run_demo)
    return d
