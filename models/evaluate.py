"""Evaluate a detector checkpoint on a VOC split: CenterNet decode, VOC AP50, drawn examples.

    python -m models.evaluate CKPT [--split val] [--out DIR] [--voc-root PATH] [--limit N]
        [--images 6] [--batch-size 32]
    python -m models.evaluate CKPT --golden ...    # W4A8 CKPT: also its golden integer model
    python -m models.evaluate --baseline prior [--split val] [--out DIR]   # trivial baseline

Writes to ``--out`` (default: next to the checkpoint, ``<ckpt stem>_<split>/``), each file
atomically: ``results.json`` (``per_class`` AP50 for the classes present, ``voc6_map50``,
``map50_present``, ``recall_by_size``, ``top1``: on how many images the highest-scoring detection
is correct, the demo's verdict, :func:`models.centernet.top1_rate`; counts, checkpoint meta),
``results.md`` (the same as tables) and
``det_<i>.png`` examples with drawn detections (score >= 0.3) and ground truth (green).

``--golden`` (W4A8 checkpoints): the checkpoint is exported to QONNX (cached in ``--out`` by
SHA-1, :func:`export_qonnx_cached`), lowered by the compiler (``sw.compiler.lower.lower_qonnx``) and every
image is run through the integer golden model (``sw.compiler.execute.run_graph``, the hardware's bits,
about 0.1 s per 128x128 image); its dequantised output is decoded and scored like the Brevitas
model's, in ``results.json`` under ``golden``.

Bad input: every image skipped (missing/corrupt JPEG or annotation) is named on the console
(stderr) with the reason and listed in ``results.json`` (``skipped_images``); a split left with
fewer than ``MIN_EVAL_IMAGES`` usable images gets a ``warning`` in ``results.json`` /
``results.md`` and on the line that prints the figure.

Decoding and AP50 are ``models.centernet``'s (CenterNet top-100 decode; pycocotools AP at IoU 0.5
with VOC ``difficult`` objects ignored). Boxes are compared in the letterboxed network input
frame (a uniform scale + shift of the image, which leaves IoU unchanged).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from models.centernet import (decode_batch, draw_detections, evaluate_ap50,
                              recall_by_size, recall_table_md, results_table_md, top1_rate)
from models.data import write_bytes_atomic
from models.detector import CheckpointError, load_checkpoint, split_heads

# Below this many images the figure is not a measurement: VOC val has ~145 images per VOC6
# class on average (865 images), so 100 images leave ~15 per class, where one detection moves a
# class's AP by several points; a single image can score 100.
MIN_EVAL_IMAGES = 100


def report_bad_input(ds, split: str, file=None) -> dict:
    """Name each image of ``ds`` (a ``VOCDetection`` built with ``skip_bad=True``) that was
    skipped, with its reason, one line each on ``file`` (default stderr), and judge the split's
    size.

    Returns:
        ``{"skipped_images": [{"id", "reason"}, ...], "warning": str | None}``; the warning is
        set when fewer than :data:`MIN_EVAL_IMAGES` usable images remain.
    """
    file = file or sys.stderr
    for image_id, reason in ds.bad:
        print(f"skipped image {image_id} of {split}: {reason}", file=file, flush=True)
    warning = None
    if len(ds) < MIN_EVAL_IMAGES:
        warning = (f"only {len(ds)} usable images in {split} ({ds.skipped} skipped): too few "
                   f"for the figure to mean anything (< {MIN_EVAL_IMAGES})")
    return {"skipped_images": [{"id": i, "reason": r} for i, r in ds.bad], "warning": warning}


def _top1_text(t: dict) -> str:
    return f"{t['correct']} of {t['images']} images ({100 * t['rate']:.1f} %)"


def _md(title: str, res: dict) -> bytes:
    warn = f"**Warning: {res['warning']}.**\n\n" if res.get("warning") else ""
    skipped = "".join(f"- skipped {d['id']}: {d['reason']}\n" for d in res.get("skipped_images", []))
    if skipped:
        skipped = "\nSkipped images:\n\n" + skipped
    golden = ""
    if "golden" in res:
        golden = ("\n## Golden integer model (the hardware's bits)\n\n"
                  + results_table_md(dict(res["golden"], num_images=res.get("num_images")))
                  + "\n")
    if "golden" in res and res["golden"].get("top1"):
        golden += f"\nTop-1 detection correct on {_top1_text(res['golden']['top1'])}.\n"
    top1 = ""
    if res.get("top1"):
        top1 = (f"\nTop-1 detection correct (the demo's verdict: same class as a ground-truth "
                f"box at IoU >= 0.5) on {_top1_text(res['top1'])}.\n")
    sizes = ""
    if res.get("recall_by_size"):
        sizes = ("\n## Recall by object size (VOC6, IoU 0.5, top-100 detections)\n\n"
                 + recall_table_md(res["recall_by_size"]) + "\n")
    return f"# {title}\n\n{warn}{results_table_md(res)}{top1}\n{sizes}{golden}{skipped}".encode()

@torch.no_grad()
def run_detection(model, dataset, batch_size: int = 32, k: int = 100, progress: bool = True):
    """Detections and ground truth over a (val) ``VOCDetection``, as the two dicts
    ``image_id -> [k, 6]`` and ``image_id -> (boxes, labels, difficult)`` of
    ``models.centernet.evaluate_ap50`` (letterboxed input pixels)."""
    from tqdm import tqdm

    model.eval()
    dets, gts = {}, {}
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for x, tgt in tqdm(loader, desc="evaluate", disable=not progress, mininterval=10):
        out = decode_batch(*split_heads(model(x)), k=k)
        for j in range(x.shape[0]):
            key = dataset.annos[int(tgt["index_in_split"][j])].image_id
            v = tgt["labels"][j] >= 0
            dets[key] = out[j]
            gts[key] = (tgt["boxes"][j][v].numpy(), tgt["labels"][j][v].numpy(),
                        tgt["difficult"][j][v].numpy())
    return dets, gts


def export_qonnx_cached(ckpt, cache_dir) -> tuple[Path, int]:
    """QONNX export of checkpoint ``ckpt`` at its config's input size, cached in ``cache_dir``
    as ``<config>_<first 12 hex digits of the file's SHA-1>.onnx`` (written atomically by
    ``models.export.export_qonnx``); returns ``(onnx path, input size in pixels)``.

    Raises:
        CheckpointError: unreadable checkpoint.
    """
    import hashlib

    from models.detector import CONFIGS
    from models.export import export_qonnx

    ckpt, cache_dir = Path(ckpt), Path(cache_dir)
    model, meta = load_checkpoint(ckpt)
    size = CONFIGS[meta["config"]].input_size
    digest = hashlib.sha1(ckpt.read_bytes()).hexdigest()[:12]
    onnx_path = cache_dir / f"{meta['config']}_{digest}.onnx"
    if not onnx_path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        export_qonnx(model, onnx_path, input_shape=(1, 3, size, size))
    return onnx_path, size


def golden_detections(ckpt, dataset, cache_dir, k: int = 100, progress: bool = True) -> dict:
    """Detections of the golden integer model of W4A8 checkpoint ``ckpt`` over ``dataset`` (a
    val ``VOCDetection``), as ``image_id -> [k, 6]`` like :func:`run_detection`.

    Raises:
        CheckpointError: ``ckpt`` is not a W4A8 (quantised) checkpoint.
        sw.compiler.lower.CompileError: the export does not lower.
    """
    import numpy as np
    from tqdm import tqdm

    from models.centernet import decode
    from models.detector import NUM_CLASSES, read_checkpoint
    from sw.flows.demo import dequantise
    from sw.compiler.execute import run_graph
    from sw.compiler.lower import lower_qonnx

    if not read_checkpoint(ckpt).get("quant"):
        raise CheckpointError(f"--golden needs a W4A8 checkpoint; {ckpt} is float")
    onnx_path, size = export_qonnx_cached(ckpt, cache_dir)
    graph = lower_qonnx(onnx_path)
    dets = {}
    for i in tqdm(range(len(dataset)), desc="golden model", disable=not progress,
                  mininterval=10):
        arr = dataset.render(i)[0]
        y = dequantise(graph, run_graph(graph, arr)[graph.output]).transpose(2, 0, 1)
        y = np.ascontiguousarray(y, dtype=np.float32)
        dets[dataset.annos[i].image_id] = decode(
            y[:NUM_CLASSES], y[NUM_CLASSES:NUM_CLASSES + 2], y[NUM_CLASSES + 2:NUM_CLASSES + 4],
            stride=size // y.shape[1], k=k)
    return dets


def prior_baseline_detections(train, val, class_names=None):
    """The trivial baseline: a detector that never looks at the pixels.

    For every ``val`` image it outputs one box per class: the class's median centre and size on
    ``train`` (relative to the image, so it follows each image's letterbox), scored by the
    class's share of the ``train`` objects. A trained detector must beat this to have learnt
    anything from the image.

    Args:
        train, val: :class:`models.voc.VOCDetection` splits (their cached annotations are read;
            difficult training objects count too).
        class_names: class list (default ``VOC_CLASSES``); classes absent from ``train`` get
            no box.

    Returns:
        ``(detections, ground_truth)`` in the format of :func:`models.centernet.evaluate_ap50`
        (``image_id -> [n, 6]`` rows ``x1, y1, x2, y2, score, class`` in letterboxed input
        pixels; GT as :func:`run_detection` returns it).
    """
    import numpy as np

    from models.centernet import VOC_CLASSES

    names = list(class_names or VOC_CLASSES)
    rel = {c: [] for c in range(len(names))}
    for img, ann in zip(train.images, train.annos):
        h, w = img.shape[:2]
        for (x1, y1, x2, y2), c in zip(ann.boxes, ann.labels):
            rel[int(c)].append(((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h))
    total = sum(len(v) for v in rel.values())
    prior = {c: (np.median(np.array(v), axis=0), len(v) / total) for c, v in rel.items() if v}
    dets, gts = {}, {}
    for i, (img, ann) in enumerate(zip(val.images, val.annos)):
        h, w = img.shape[:2]
        s, (ox, oy), _ = val.transform_params(i, None)
        rows = []
        for c, ((cx, cy, bw, bh), score) in prior.items():
            x, y, bw, bh = cx * w * s + ox, cy * h * s + oy, bw * w * s, bh * h * s
            rows.append([x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2, score, c])
        dets[ann.image_id] = np.array(rows, dtype=np.float32).reshape(-1, 6)
        _, boxes, labels, difficult = val.render(i)
        gts[ann.image_id] = (boxes, labels, difficult)
    return dets, gts


def evaluate_checkpoint(ckpt, split: str = "val", out=None, voc_root=None, limit=None,
                        n_images: int = 6, batch_size: int = 32, progress: bool = True,
                        golden: bool = False) -> dict:
    """Evaluate ``ckpt`` on ``split`` and write the outputs (module docstring); returns results
    (``golden``: also the golden integer model's, under ``results["golden"]``)."""
    import io

    from models.detector import CONFIGS
    from models.voc import VOCDetection

    model, meta = load_checkpoint(ckpt)
    ds = VOCDetection(voc_root, split, CONFIGS[meta["config"]].input_size, train=False,
                      limit=limit, progress=progress, skip_bad=True)
    bad = report_bad_input(ds, split)
    dets, gts = run_detection(model, ds, batch_size, progress=progress)
    res = evaluate_ap50(dets, gts)
    res["recall_by_size"] = recall_by_size(dets, gts, CONFIGS[meta["config"]].input_size)
    res["top1"] = top1_rate(dets, gts)
    res.update(checkpoint=str(ckpt), split=split, images=len(ds), skipped=ds.skipped,
               config=meta["config"], quant=meta["quant"], decoder_form=meta["decoder_form"],
               head_form=meta.get("head_form"), epoch=meta.get("epoch"),
               phase=meta.get("phase"), **bad)
    out = Path(out) if out else Path(ckpt).with_name(f"{Path(ckpt).stem}_{split}")
    out.mkdir(parents=True, exist_ok=True)
    if golden:
        gdets = golden_detections(ckpt, ds, out, progress=progress)
        gres = evaluate_ap50(gdets, gts)
        res["golden"] = {k: gres[k] for k in ("voc6_map50", "map50_present", "per_class")}
        res["golden"]["top1"] = top1_rate(gdets, gts)
    write_bytes_atomic(out / "results.json", json.dumps(res, indent=1).encode())
    title = (f"{meta['config']} {'W4A8' if meta['quant'] else 'float'} "
             f"decoder={meta['decoder_form']} on VOC {split} ({len(ds)} images)")
    write_bytes_atomic(out / "results.md", _md(title, res))
    for i in range(min(n_images, len(ds))):
        arr, boxes, labels, _ = ds.render(i)
        buf = io.BytesIO()
        draw_detections(arr, dets[ds.annos[i].image_id], gt=(boxes, labels)).resize(
            (2 * arr.shape[1], 2 * arr.shape[0])).save(buf, format="PNG")
        write_bytes_atomic(out / f"det_{i}.png", buf.getvalue())
    return res


def evaluate_prior_baseline(split: str = "val", out="runs/baseline_prior", voc_root=None,
                            limit=None, input_size: int = 128) -> dict:
    """AP50 of :func:`prior_baseline_detections` (priors from ``train``) on ``split``; writes
    ``results.json`` / ``results.md`` under ``out`` like :func:`evaluate_checkpoint`.

    Raises:
        models.data.DataError: a missing VOC folder or split.
    """
    from models.voc import VOCDetection

    train = VOCDetection(voc_root, "train", input_size, train=False, limit=limit,
                         progress=False, skip_bad=True)
    val = VOCDetection(voc_root, split, input_size, train=False, limit=limit, progress=False,
                       skip_bad=True)
    bad = report_bad_input(val, split)
    res = evaluate_ap50(*prior_baseline_detections(train, val))
    res.update(baseline="prior", split=split, images=len(val), skipped=val.skipped,
               input_size=input_size, **bad)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "results.json", json.dumps(res, indent=1).encode())
    title = f"train-prior baseline (no pixels) on VOC {split} ({len(val)} images)"
    write_bytes_atomic(out / "results.md", _md(title, res))
    return res


def main(argv=None, prog: str = "python -m models.evaluate") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("ckpt", nargs="?", help="checkpoint (omit with --baseline)")
    p.add_argument("--baseline", choices=("prior",), default=None,
                   help="evaluate the trivial train-prior detector instead of a checkpoint")
    p.add_argument("--split", default="val")
    p.add_argument("--out", default=None)
    p.add_argument("--voc-root", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--golden", action="store_true", help="also evaluate the W4A8 checkpoint's "
                   "golden integer model (compiler lowering, sw.compiler.execute.run_graph)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from models.data import DataError

    if (a.ckpt is None) == (a.baseline is None):
        p.error("give a checkpoint or --baseline prior (one of them)")
    try:
        if a.baseline:
            res = evaluate_prior_baseline(a.split, a.out or "runs/baseline_prior", a.voc_root,
                                          a.limit)
        else:
            res = evaluate_checkpoint(a.ckpt, a.split, a.out, a.voc_root, a.limit, a.images,
                                      a.batch_size, golden=a.golden)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    warn = f"  WARNING: {res['warning']}" if res.get("warning") else ""
    print(f"VOC6 mAP50 {100 * res['voc6_map50']:.2f}  (mAP50 over present classes "
          f"{100 * res['map50_present']:.2f}, {res['images']} images, "
          f"{res['skipped']} skipped){warn}")
    if res.get("top1"):
        print(f"top-1 detection correct (the demo's verdict: same class, IoU >= 0.5) on "
              f"{_top1_text(res['top1'])}")
    if res.get("recall_by_size"):
        print("recall by object size (px at 128x128; " + ", ".join(
            f"{r['from_px']}-{r['to_px'] or ''}: {100 * r['recall']:.1f} %"
            for r in res["recall_by_size"]) + ")")
    if "golden" in res:
        print(f"golden integer model: VOC6 mAP50 {100 * res['golden']['voc6_map50']:.2f}  "
              f"(mAP50 over present classes {100 * res['golden']['map50_present']:.2f}){warn}")
        if res["golden"].get("top1"):
            print(f"golden integer model: top-1 correct on {_top1_text(res['golden']['top1'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
