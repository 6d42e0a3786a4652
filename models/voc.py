"""Pascal VOC detection dataset for the detector (train with CenterNet augmentation, val with a
deterministic letterbox), with a RAM cache of decoded images.

Layout (standard VOC): ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml``,
``ImageSets/Main/<split>.txt``. The folder comes from :func:`models.data.find_voc_root` (option,
``$DEFLOW_VOC_ROOT``, or ``../shared/data/voc2012-subset``); it is only read.

Each image is decoded once (Pillow) and kept in RAM as uint8 RGB with its longer side scaled to
``cache_side`` (default ``1.25 * input_size``: the largest size the augmentation's scale range
needs at full resolution most of the time), so an epoch costs no JPEG decoding.

Sample: ``(image uint8 [S, S, 3] as float tensor [3, S, S] of raw pixels 0..255, target dict)``
with the CenterNet target tensors (``models.centernet.encode_targets``) plus ``boxes``
(``[K, 4]`` x1, y1, x2, y2 in input pixels, float32, padded to ``max_objects`` with ``valid``)
for evaluation.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from models.centernet import VOC_CLASSES, encode_targets
from models.data import DataError, find_voc_root, voc_ids



@dataclass
class Annotation:
    """One image's objects: ``boxes`` float32 ``[K, 4]`` (x1, y1, x2, y2, pixels of the original
    image, VOC's 1-based coordinates minus 1), ``labels`` int64 ``[K]`` (index in VOC_CLASSES),
    ``difficult`` bool ``[K]``; ``size`` (width, height)."""
    image_id: str
    size: tuple
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def parse_voc_xml(path: str | os.PathLike) -> Annotation:
    """Parse one VOC annotation XML.

    Raises:
        DataError: naming the file, if it is missing, not well-formed XML, or lacks required
        fields (size, object name, bndbox), or names a class outside VOC_CLASSES.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"annotation file not found: {p}")
    try:
        root = ET.parse(p).getroot()
        size = root.find("size")
        w, h = int(size.find("width").text), int(size.find("height").text)
        boxes, labels, diff = [], [], []
        for obj in root.iter("object"):
            name = obj.find("name").text.strip()
            if name not in VOC_CLASSES:
                raise DataError(f"{p}: unknown class {name!r}")
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.find(k).text) - 1.0 for k in ("xmin", "ymin", "xmax", "ymax"))
            d = obj.find("difficult")
            boxes.append((x1, y1, x2, y2))
            labels.append(VOC_CLASSES.index(name))
            diff.append(d is not None and d.text is not None and d.text.strip() == "1")
    except DataError:
        raise
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise DataError(f"cannot parse VOC annotation {p}: {type(e).__name__}: {e}") from e
    return Annotation(p.stem, (w, h), np.asarray(boxes, np.float32).reshape(-1, 4),
                      np.asarray(labels, np.int64), np.asarray(diff, bool))


def _decode_resized(path: Path, side: int):
    """Decode a JPEG as RGB uint8 with its longer side scaled to ``side``; returns (array, factor)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            f = side / max(w, h)
            img = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8), f
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from e


def letterbox_params(w: int, h: int, size: int):
    """Scale and (x, y) offset that fit a ``w x h`` image into a ``size x size`` canvas, centred,
    aspect ratio kept: ``x_out = x * scale + offset``."""
    s = size / max(w, h)
    return s, ((size - w * s) / 2.0, (size - h * s) / 2.0)


class VOCDetection(Dataset):
    """VOC detection split as CenterNet training samples (module docstring).

    Args:
        root: VOC folder (None: :func:`find_voc_root`; error when none is found).
        split: ``train`` or ``val`` (any ``ImageSets/Main/<split>.txt``).
        input_size: S of the square network input.
        train: CenterNet augmentation (random flip, scale 0.6..1.4 and translation, colour
            jitter); otherwise a deterministic letterbox. Default: ``split == "train"``.
        mosaic: with ``train``, the probability that a sample is a mosaic of four augmented
            images, each at half the input size in one quadrant (YOLOv4's mosaic, Bochkovskiy
            et al. 2020): four times the objects per sample, at smaller sizes.
        num_classes: heatmap classes (20).
        skip_bad: skip images whose JPEG or XML is missing/corrupt (counted in ``self.skipped``,
            names in ``self.bad``) instead of raising DataError.
        cache_side: longer side of the cached images (default ``round(1.25 * input_size)``).
        max_objects: padding size of the per-image object arrays.
        progress: tqdm bar while caching.

    Raises:
        DataError: missing folder/split file, or (without ``skip_bad``) a bad image or XML, naming
        the file.
    """

    def __init__(self, root=None, split: str = "train", input_size: int = 128, train=None,
                 num_classes: int = 20, skip_bad: bool = False, cache_side: int | None = None,
                 max_objects: int = 64, progress: bool = True, limit: int | None = None,
                 mosaic: float = 0.0):
        if not 0.0 <= mosaic <= 1.0:
            raise ValueError(f"mosaic is a probability in [0, 1], got {mosaic}")
        self.mosaic = float(mosaic)
        r = find_voc_root(root)
        if r is None:
            raise DataError("no VOC folder found: pass one, or set $DEFLOW_VOC_ROOT")
        self.root, self.split, self.input_size = Path(r), split, int(input_size)
        self.train = (split == "train") if train is None else bool(train)
        self.num_classes, self.max_objects = num_classes, max_objects
        self.cache_side = int(cache_side or round(1.25 * input_size))
        ids = voc_ids(self.root, split)
        if limit is not None:
            ids = ids[:limit]
        self.images, self.annos, self.bad = [], [], []
        it = ids
        if progress:
            from tqdm import tqdm
            it = tqdm(ids, desc=f"caching VOC {split}", unit="img", leave=False)
        for i in it:
            try:
                ann = parse_voc_xml(self.root / "Annotations" / f"{i}.xml")
                img, f = _decode_resized(self.root / "JPEGImages" / f"{i}.jpg", self.cache_side)
            except DataError as e:
                if not skip_bad:
                    raise
                self.bad.append((i, str(e)))
                continue
            # boxes in cached-image pixels
            self.annos.append(Annotation(ann.image_id, ann.size, ann.boxes * f, ann.labels,
                                         ann.difficult))
            self.images.append(img)
        self.skipped = len(self.bad)
        if not self.images:
            raise DataError(f"VOC split {split} in {self.root}: no usable images "
                            f"({self.skipped} bad)")

    def __len__(self):
        return len(self.images)

    def transform_params(self, idx: int, rng: np.random.Generator | None, size: int | None = None):
        """(scale, (ox, oy), flip) mapping cached-image pixels to input pixels of a ``size``
        square (default the input size)."""
        S = size or self.input_size
        h, w = self.images[idx].shape[:2]
        s, (ox, oy) = letterbox_params(w, h, S)
        if rng is None or not self.train:
            return s, (ox, oy), False
        s *= rng.uniform(0.6, 1.4)
        # random placement: the image centre stays inside the central part of the canvas
        cx = rng.uniform(0.25, 0.75) * S
        cy = rng.uniform(0.25, 0.75) * S
        return s, (cx - w * s / 2.0, cy - h * s / 2.0), bool(rng.random() < 0.5)

    def render(self, idx: int, rng: np.random.Generator | None = None, size: int | None = None):
        """The input image uint8 ``[S, S, 3]`` (``S = size or input_size``) and its
        boxes/labels/difficult in its pixels."""
        from PIL import Image

        img, ann = self.images[idx], self.annos[idx]
        S = size or self.input_size
        s, (ox, oy), flip = self.transform_params(idx, rng, S)
        # Pillow's affine maps output -> input pixels: x_in = (x_out - ox) / s
        out = Image.fromarray(img).transform(
            (S, S), Image.AFFINE, (1.0 / s, 0.0, -ox / s, 0.0, 1.0 / s, -oy / s),
            resample=Image.BILINEAR, fillcolor=(0, 0, 0))
        arr = np.asarray(out, dtype=np.uint8)
        boxes = ann.boxes * s + np.array([ox, oy, ox, oy], np.float32)
        if flip:
            arr = arr[:, ::-1]
            boxes = np.stack([S - 1 - boxes[:, 2], boxes[:, 1], S - 1 - boxes[:, 0], boxes[:, 3]], 1)
        boxes = np.clip(boxes, 0, S - 1).astype(np.float32)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        if self.train and rng is not None:
            arr = color_jitter(arr, rng)
        return np.ascontiguousarray(arr), boxes[keep], ann.labels[keep], ann.difficult[keep]

    def render_mosaic(self, idx: int, rng: np.random.Generator):
        """Image ``idx`` and three others drawn by ``rng``, each augmented and rendered at
        ``S // 2`` pixels into one quadrant of an ``[S, S, 3]`` uint8 canvas; their
        boxes/labels/difficult concatenated in canvas pixels (what :meth:`render` returns)."""
        S = self.input_size
        h = S // 2
        canvas = np.zeros((S, S, 3), np.uint8)
        parts = []
        picks = [idx] + [int(i) for i in rng.integers(0, len(self.images), 3)]
        for i, (qx, qy) in zip(picks, ((0, 0), (h, 0), (0, h), (h, h))):
            arr, boxes, labels, diff = self.render(i, rng, size=h)
            canvas[qy:qy + h, qx:qx + h] = arr
            parts.append((boxes + np.array([qx, qy, qx, qy], np.float32), labels, diff))
        return (canvas, np.concatenate([p[0] for p in parts]).astype(np.float32),
                np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))

    def __getitem__(self, idx):
        rng = None
        if self.train:
            # fresh randomness per call; seeded through torch (DataLoader seeds workers)
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        if rng is not None and self.mosaic and rng.random() < self.mosaic:
            arr, boxes, labels, diff = self.render_mosaic(idx, rng)
        else:
            arr, boxes, labels, diff = self.render(idx, rng)
        train_boxes, train_labels = boxes[~diff], labels[~diff]
        tgt = {k: torch.from_numpy(v) for k, v in encode_targets(
            train_boxes, train_labels, self.input_size, self.num_classes,
            max_objs=self.max_objects).items()}
        tgt["mask"] = tgt["mask"].float()
        k = min(len(boxes), self.max_objects)
        pad_b = np.zeros((self.max_objects, 4), np.float32)
        pad_l = np.full(self.max_objects, -1, np.int64)
        pad_d = np.zeros(self.max_objects, bool)
        pad_b[:k], pad_l[:k], pad_d[:k] = boxes[:k], labels[:k], diff[:k]
        tgt.update(boxes=torch.from_numpy(pad_b), labels=torch.from_numpy(pad_l),
                   difficult=torch.from_numpy(pad_d), index_in_split=torch.tensor(idx))
        x = torch.from_numpy(arr.transpose(2, 0, 1).copy()).float()
        return x, tgt


def color_jitter(arr: np.ndarray, rng: np.random.Generator, strength: float = 0.4) -> np.ndarray:
    """Random brightness, contrast and saturation (each a factor in 1 +- strength, random order,
    as CenterNet's ``color_aug``) on uint8 RGB ``[H, W, 3]``."""
    x = arr.astype(np.float32)
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    for op in rng.permutation(3):
        a = 1.0 + rng.uniform(-strength, strength)
        if op == 0:
            x = x * a
        elif op == 1:
            x = x * a + (1 - a) * gray.mean()
        else:
            x = x * a + (1 - a) * gray[..., None]
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)
