"""VOC dataset: XML parsing (difficult kept), bad files (clear errors or counted skips),
deterministic letterbox for val, CenterNet targets, train augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import DataError
from models.voc import VOCDetection, color_jitter, parse_voc_xml

XML = """<annotation><filename>{id}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = """<object><name>{name}</name><difficult>{diff}</difficult>
<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""


def make_voc(root: Path, bad: bool = True) -> Path:
    """A tiny VOC folder: 3 real photographs (64x32, landscape) in train and val, plus (``bad``)
    a corrupt JPEG and a broken XML in both splits."""
    from PIL import Image

    from models.data import skimage_images

    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    imgs = skimage_images(64)
    ids = []
    for k, img in enumerate(imgs):
        i = f"img{k}"
        Image.fromarray(img[16:48]).save(root / "JPEGImages" / f"{i}.jpg", quality=95)
        objs = OBJ.format(name="cat", diff=0, x1=9, y1=5, x2=41, y2=29)
        objs += OBJ.format(name="dog", diff=1, x1=45, y1=3, x2=61, y2=13)
        (root / "Annotations" / f"{i}.xml").write_text(XML.format(id=i, w=64, h=32, objects=objs))
        ids.append(i)
    if bad:
        (root / "JPEGImages" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
        (root / "Annotations" / "corrupt.xml").write_text(
            XML.format(id="corrupt", w=64, h=32, objects=""))
        Image.fromarray(imgs[0]).save(root / "JPEGImages" / "brokenxml.jpg")
        (root / "Annotations" / "brokenxml.xml").write_text("<annotation><size><width>6")
        ids += ["corrupt", "brokenxml"]
    for split in ("train", "val"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path / "voc")


def test_parse_keeps_difficult(voc):
    a = parse_voc_xml(voc / "Annotations" / "img0.xml")
    assert a.size == (64, 32)
    np.testing.assert_array_equal(a.boxes, [[8, 4, 40, 28], [44, 2, 60, 12]])
    np.testing.assert_array_equal(a.labels, [7, 11])  # cat, dog
    np.testing.assert_array_equal(a.difficult, [False, True])


def test_bad_files_raise_naming_the_file(voc):
    with pytest.raises(DataError, match="brokenxml.xml"):
        parse_voc_xml(voc / "Annotations" / "brokenxml.xml")
    with pytest.raises(DataError, match="corrupt.jpg"):
        VOCDetection(voc, "val", 32, progress=False)
    with pytest.raises(DataError, match="not found"):
        parse_voc_xml(voc / "Annotations" / "missing.xml")


def test_skip_bad_counts(voc):
    ds = VOCDetection(voc, "val", 32, skip_bad=True, progress=False)
    assert len(ds) == 3 and ds.skipped == 2
    assert sorted(i for i, _ in ds.bad) == ["brokenxml", "corrupt"]


def test_val_letterbox_is_exact(voc):
    ds = VOCDetection(voc, "val", 32, skip_bad=True, progress=False)
    assert not ds.train
    arr, boxes, labels, diff = ds.render(0)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    # 64x32 -> cache 40x20 -> letterbox 32x16 centred: x*0.5, y*0.5 + 8
    np.testing.assert_allclose(boxes, [[4, 10, 20, 22], [22, 9, 30, 14]], atol=1e-5)
    assert (arr[:8] == 0).all() and (arr[24:] == 0).all() and arr[8:24].mean() > 20
    x, tgt = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x, ds[0][0])  # deterministic
    hm = tgt["heatmap"]
    assert hm.shape == (20, 8, 8)
    # only the non-difficult cat is a training target: one peak of exactly 1 at its centre
    assert int((hm == 1).sum()) == 1 and float(hm[7, 4, 3]) == 1.0 and float(hm[11].max()) == 0
    assert tgt["mask"].tolist()[:2] == [1.0, 0.0]
    np.testing.assert_allclose(tgt["wh"][0].numpy(), [4.0, 3.0])
    # both objects (difficult flagged) are kept for evaluation
    assert tgt["labels"][:3].tolist() == [7, 11, -1]
    assert tgt["difficult"][:2].tolist() == [False, True]


def test_train_augmentation_varies_and_keeps_boxes_inside(voc):
    torch.manual_seed(0)
    ds = VOCDetection(voc, "train", 32, skip_bad=True, progress=False)
    assert ds.train
    xs = [ds[1][0] for _ in range(4)]
    assert any(not torch.equal(xs[0], x) for x in xs[1:])
    rng = np.random.default_rng(3)
    for _ in range(20):
        arr, boxes, _, _ = ds.render(2, rng)
        assert arr.shape == (32, 32, 3)
        assert ((boxes >= 0) & (boxes <= 31)).all()
        assert ((boxes[:, 2] - boxes[:, 0]) >= 1).all()


def test_mosaic_puts_four_half_size_images_in_the_quadrants(voc):
    ds = VOCDetection(voc, "train", 32, skip_bad=True, progress=False, mosaic=1.0)
    # each quadrant is exactly what render() draws at 16x16 with the same random draws
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    arr, boxes, labels, diff = ds.render_mosaic(0, rng_a)
    picks = [0] + [int(i) for i in rng_b.integers(0, len(ds), 3)]
    n = 0
    for i, (qx, qy) in zip(picks, ((0, 0), (16, 0), (0, 16), (16, 16))):
        q, qb, ql, qd = ds.render(i, rng_b, size=16)
        np.testing.assert_array_equal(arr[qy:qy + 16, qx:qx + 16], q)
        np.testing.assert_array_equal(boxes[n:n + len(qb)], qb + np.array([qx, qy, qx, qy], np.float32))
        np.testing.assert_array_equal(labels[n:n + len(qb)], ql)
        n += len(qb)
    assert arr.shape == (32, 32, 3) and n == len(boxes) == len(labels) == len(diff)
    x, tgt = ds[0]  # mosaic=1.0: every training sample is a mosaic
    assert x.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="mosaic is a probability"):
        VOCDetection(voc, "train", 32, skip_bad=True, progress=False, mosaic=1.5)


def test_color_jitter_is_seeded():
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    a = color_jitter(img, np.random.default_rng(5))
    b = color_jitter(img, np.random.default_rng(5))
    assert np.array_equal(a, b) and not np.array_equal(a, img)


def test_missing_root_is_clear(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        VOCDetection(tmp_path / "nope", "val", 32)


def test_prior_baseline_hits_a_box_that_never_moves(voc):
    from models.evaluate import evaluate_ap50, prior_baseline_detections

    train = VOCDetection(voc, "train", 64, train=False, skip_bad=True, progress=False)
    val = VOCDetection(voc, "val", 64, train=False, skip_bad=True, progress=False)
    dets, gts = prior_baseline_detections(train, val)
    # one box per class seen in train (cat and the difficult dog), scored by its share
    for key, d in dets.items():
        assert d.shape == (2, 6)
        assert sorted(d[:, 5].tolist()) == [7.0, 11.0]  # cat, dog in VOC_CLASSES
        np.testing.assert_allclose(d[:, 4], [0.5, 0.5])
        # the cat prior is exactly the (fixed) cat box in letterboxed input pixels
        cat = d[d[:, 5] == 7][0, :4]
        np.testing.assert_allclose(cat, gts[key][0][gts[key][1] == 7][0], atol=1e-4)
    res = evaluate_ap50(dets, gts)
    assert res["per_class"] == {"cat": 1.0} and res["voc6_map50"] == 1.0
