"""Image data for models/: the VOC folder (by option, env var or the shared default) and a
fallback to real photographs bundled with scikit-image (docs/contracts.md, "Tools and data").

The VOC folder is never copied into the repository; it is only read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
VOC_ENV_VAR = "DEFLOW_VOC_ROOT"
DEFAULT_VOC_ROOT = REPO_ROOT.parent / "shared" / "data" / "voc2012-subset"
SKIMAGE_FALLBACK = ("chelsea", "astronaut", "motorcycle_left")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file in the same folder, then
    a rename (mode 0644; ``tempfile.mkstemp`` alone would leave it 0600)."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class DataError(RuntimeError):
    """A data folder or image file is missing or unreadable."""


def find_voc_root(path: str | os.PathLike | None = None) -> Path | None:
    """Locate the VOC folder: ``path`` if given, else ``$DEFLOW_VOC_ROOT``, else
    ``../shared/data/voc2012-subset`` relative to the repository root if it exists, else None.

    An explicitly given path (argument or environment variable) that does not exist is an error,
    not a silent fallback.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise DataError(f"VOC root {p} (given as an option) is not a directory")
        return p
    env = os.environ.get(VOC_ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DataError(f"VOC root {p} (from ${VOC_ENV_VAR}) is not a directory")
        return p
    if DEFAULT_VOC_ROOT.is_dir():
        return DEFAULT_VOC_ROOT
    return None


def _resize_rgb(img, size: int, name: str) -> np.ndarray:
    from PIL import Image

    if img.mode != "RGB":
        img = img.convert("RGB")
    img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise DataError(f"{name}: unexpected decoded shape {arr.shape}")
    return arr


def load_image_nhwc(path: str | os.PathLike, size: int) -> np.ndarray:
    """Load an image file as uint8 RGB ``[size, size, 3]`` (resized with bilinear filtering,
    aspect ratio not kept).

    Raises:
        DataError: naming the file, if it is missing or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"image file not found: {p}")
    try:
        with Image.open(p) as img:
            img.load()
            return _resize_rgb(img, size, str(p))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {p}: {e}") from e


def voc_ids(voc_root: str | os.PathLike, split: str = "val") -> list[str]:
    """Image ids of ``ImageSets/Main/<split>.txt``."""
    f = Path(voc_root) / "ImageSets" / "Main" / f"{split}.txt"
    if not f.is_file():
        raise DataError(f"VOC split file not found: {f}")
    ids = [line.split()[0] for line in f.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"VOC split file is empty: {f}")
    return ids


def skimage_images(size: int, names=SKIMAGE_FALLBACK) -> list[np.ndarray]:
    """The real photographs bundled with scikit-image, as uint8 RGB ``[size, size, 3]``."""
    from PIL import Image
    import skimage.data

    out = []
    for name in names:
        try:
            if name == "motorcycle_left":  # the left image of the bundled stereo pair
                arr = skimage.data.stereo_motorcycle()[0]
            else:
                arr = getattr(skimage.data, name)()
        except Exception as e:  # missing optional data file, decode error
            raise DataError(f"cannot load scikit-image sample '{name}': {e}") from e
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        arr = arr[..., :3].astype(np.uint8)
        out.append(_resize_rgb(Image.fromarray(arr), size, f"skimage.data.{name}"))
    return out


def sample_images(n: int, size: int, voc_root: str | os.PathLike | None = None,
                  split: str = "val") -> np.ndarray:
    """``n`` real images as uint8 NHWC ``[n, size, size, 3]``.

    From the first ``n`` ids of the VOC ``split`` (default ``val``) when a VOC folder is found
    (see :func:`find_voc_root`), else from scikit-image's bundled photographs (cycled when
    ``n`` exceeds the three of them). Deterministic.
    """
    if n <= 0:
        raise ValueError(f"sample_images: n must be positive, got {n}")
    root = find_voc_root(voc_root)
    if root is not None:
        ids = voc_ids(root, split)[:n]
        if len(ids) < n:
            raise DataError(f"VOC split {split} in {root} has only {len(ids)} images, {n} asked")
        imgs = [load_image_nhwc(root / "JPEGImages" / f"{i}.jpg", size) for i in ids]
    else:
        base = skimage_images(size)
        imgs = [base[i % len(base)] for i in range(n)]
    return np.stack(imgs, 0)


def to_nchw_float(images_nhwc: np.ndarray):
    """uint8 NHWC images -> float32 torch tensor NCHW of raw pixel values 0..255."""
    import torch

    a = np.asarray(images_nhwc)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected NHWC RGB images, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).float()
