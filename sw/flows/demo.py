"""The main job (``make demo``): the committed W4A8 detector on real photographs through the
accelerator's RTL, every output value checked against the golden model, CenterNet decode on
the CPU, drawn detections and a report.

Steps (each printed with its time, and whether it came from the cache):

1. export: the checkpoint (default ``models/checkpoints/small256_w4a8.pt``) -> Brevitas model ->
   QONNX;
2. images: the first ``--frames`` images of the VOC ``val`` split with their annotations, or,
   without a VOC folder (or with ``--photos``), photographs bundled with scikit-image and
   matplotlib of classes the detector knows (:data:`FALLBACK_PHOTOS`, boxes measured by
   hand); both letterboxed to the network input (aspect ratio kept, black bars), as training
   and evaluation do;
3. lower: through FINN's front end (:func:`sw.compiler.lower.lower_qonnx`, ``requant="within1"``);
4. fold for ``--board`` at ``--fps`` and estimate cycles and resources (``estimates.md/png``);
5. golden model: the integer reference of every output value on every image, and its
   distance to the Brevitas float model;
6. FIFO depths (analytical, :mod:`sw.compiler.fifo_analytic`; ``--fifo-sizing simulation`` for an RTL
   sizing run);
7. Verilator build of the native C++ testbench (:mod:`sim.native`);
8. RTL simulation: the frames streamed back to back through it, every output value compared
   with the golden model (``--backend pynq`` with ``--bitfile``: the board instead of 6-8);
9. CenterNet decode of the accelerator's output (dequantised per channel), drawings and
   ``report.md`` / ``report.json``.

Caches (``--cache-dir``, default ``build/cache/demo``, shared by every ``--out``;
``--no-cache`` ignores them): the QONNX export, the lowered graph and the FIFO depths are each
stored with the SHA-1 of their inputs (checkpoint, options, graph structure), of the project
source files that were loaded when they were made (``models/`` for the export, ``sw/`` and
``hw/`` for the others) and the versions of the libraries that made them
(:class:`ArtifactCache`); a change to any of them makes the step run again and the console says
which. The Verilator build is cached by :mod:`sim.native` under ``build/sim`` by the hash of
its Verilog, and found without generating the Verilog by :func:`design_key`. Library messages
(Brevitas, torch, FINN) go to ``--out``/log.txt instead of the console.

All outputs go to ``--out`` (default ``build/demo``), each file written atomically.
"""

from __future__ import annotations

from sw import BUILD_ROOT

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "checkpoints" / "small256_w4a8.pt"
DEFAULT_OUT = BUILD_ROOT / "demo"
#: the step cache, shared by every --out folder
DEFAULT_CACHE = BUILD_ROOT / "cache" / "demo"
#: at the board clock: the shipped 256x256 detector at an II of ~4e5 cycles, the lanes of the
#: 128x128 one at 2,000 fps: a design that fits the Ultra96-V2 and Verilator builds in minutes
DEFAULT_FPS = 500.0
#: longer side, in pixels, of the drawn images (the photograph, not the network input)
DRAW_SIDE = 512
#: the requantisation choice of the demo's lowering (sw.compiler.threshold_form): requantisers
#: need no threshold memory; the 128x128 detector at 2,000 fps fits the Ultra96-V2 only with them
REQUANT = "within1"

#: Photographs shipped inside installed packages (no download), of classes the shipped VOC
#: detector was trained on, each with one ground-truth box measured by hand on the original
#: image (pixels x1, y1, x2, y2; the whole visible object, as VOC annotates).
FALLBACK_PHOTOS = (
    ("chelsea", "cat", (0, 0, 395, 300)),          # skimage.data.chelsea, 451 x 300
    ("astronaut", "person", (20, 15, 360, 512)),   # skimage.data.astronaut, 512 x 512
    ("grace_hopper", "person", (15, 22, 512, 600)),  # matplotlib sample_data, 512 x 600
    ("camera", "person", (0, 62, 330, 512)),       # skimage.data.camera, 512 x 512, grey
)

#: project folders whose source files key the caches
_CODE_ROOTS = ("hw", "sw", "models", "sim")
#: the demo's own front files: they present results and take no part in what is cached
_FRONT_FILES = {"sw/flows/demo.py", "sw/flows/cli.py", "sw/compiler/report.py",
                "sw/flows/bitstream.py", "sim/folder_sim.py"}
#: libraries whose versions key the caches
_CACHE_PACKAGES = ("torch", "brevitas", "qonnx", "finn-plus", "onnx", "onnxruntime", "numpy",
                   "amaranth", "verilator")


class DemoError(RuntimeError):
    """A demo step cannot run (missing checkpoint, bitfile, board), with what to do instead."""


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


# ------------------------------------------------------------------------------ arguments


def check_args(args) -> None:
    """Refuse bad arguments before any export, compilation or simulation.

    Raises:
        DemoError: one line naming the option and what to do (a missing checkpoint or
            bitstream, ``--backend pynq`` without ``--bitfile``, a non-positive ``--frames``,
            ``--fps`` or ``--clock-mhz``, a score threshold outside [0, 1], an unknown
            board, a VOC folder that does not exist, no Verilator for ``--backend sim``).
    """
    from sw.compiler.boards import BoardError, get_board

    if args.frames < 1:
        raise DemoError(f"--frames must be >= 1, got {args.frames}")
    if not 0.0 <= args.score <= 1.0:
        raise DemoError(f"--score is a probability threshold in [0, 1], got {args.score}")
    if args.fps <= 0:
        raise DemoError(f"--fps must be positive, got {args.fps:g}")
    if args.clock_mhz is not None and args.clock_mhz <= 0:
        raise DemoError(f"--clock-mhz must be positive, got {args.clock_mhz:g}")
    try:
        get_board(args.board)
    except BoardError as exc:
        raise DemoError(f"--board: {exc}") from None
    if not Path(args.checkpoint).is_file():
        raise DemoError(f"--checkpoint {args.checkpoint} not found (the shipped one is "
                        f"{DEFAULT_CHECKPOINT.relative_to(REPO_ROOT)}; train one with "
                        "make train CONFIG=small)")
    if args.backend == "pynq":
        if not args.bitfile:
            raise DemoError("--backend pynq needs --bitfile (make bitstream BOARD=... on a "
                            "machine with Vivado, then copy the deploy folder to the board)")
        bit = Path(args.bitfile)
        if not bit.is_file():
            raise DemoError(f"--bitfile {bit} not found")
        if not bit.with_suffix(".hwh").is_file():
            raise DemoError(f"--bitfile {bit}: {bit.with_suffix('.hwh').name} is missing beside "
                            "it (PYNQ needs both; copy the whole deploy folder)")
        if not _pynq_devices():
            raise DemoError("--backend pynq: pynq finds no Zynq device here; run the demo on "
                            "the board (PYNQ image), or use --backend sim on this machine")
    elif args.bitfile:
        raise DemoError("--bitfile is for --backend pynq; the sim backend builds its own RTL")
    if args.voc_root is not None and args.photos:
        raise DemoError("--voc-root and --photos exclude each other")
    if args.voc_root is not None and not Path(args.voc_root).is_dir():
        raise DemoError(f"--voc-root {args.voc_root} is not a folder")
    if args.backend == "sim":
        from sim.runner import SimulatorUnavailable, verilator_bin_dir

        try:
            verilator_bin_dir()
        except SimulatorUnavailable as exc:
            raise DemoError(f"--backend sim needs Verilator: {exc}") from None


def _pynq_devices() -> list:
    """PYNQ's devices on this machine (empty without pynq or without a Zynq/XRT device);
    pynq's import-time notices are swallowed."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            import pynq

            return list(pynq.Device.devices)
        except Exception:  # no pynq, or its device probing fails off-board
            return []


# ------------------------------------------------------------------------------ console


class Console:
    """The demo's console: step headers, result lines and progress (rich), while the
    libraries' own messages (warnings, logging, prints, C-level output) go to a log file.

    Args:
        log_path: file that receives everything the libraries write during :meth:`quiet`.
        stream: where the demo's own lines go (default: a duplicate of the process's
            standard output, so it stays on the terminal while file descriptors 1 and 2 are
            redirected).
    """

    def __init__(self, log_path: Path, stream=None):
        from rich.console import Console as RichConsole

        self.log_path = Path(log_path)
        self._own = None
        if stream is None:
            try:
                self._own = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
                stream = self._own
            except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
                stream = sys.stdout
        self.rich = RichConsole(file=stream, highlight=False, soft_wrap=True)
        self.step_no = 0
        self.steps_total = 0
        self.record: list[dict] = []

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None

    def line(self, text: str = "") -> None:
        """One line of the demo's output (indented under the current step)."""
        self.rich.print(f"      {text}" if text else "", markup=False)

    @contextlib.contextmanager
    def quiet(self):
        """Send what libraries print during the block (Python warnings and logging, prints,
        torch/FINN/C output on file descriptors 1 and 2) to :attr:`log_path`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        with open(self.log_path, "a") as log, warnings.catch_warnings():
            warnings.simplefilter("always")
            logging.captureWarnings(True)
            saved = []
            try:
                for fd in (1, 2):
                    try:
                        saved.append((fd, os.dup(fd)))
                        os.dup2(log.fileno(), fd)
                    except OSError:
                        pass
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    root = logging.getLogger()
                    handler = logging.StreamHandler(log)
                    old_handlers, root.handlers = root.handlers, [handler]
                    try:
                        yield
                    finally:
                        root.handlers = old_handlers
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, dup in saved:
                    os.dup2(dup, fd)
                    os.close(dup)
                logging.captureWarnings(False)

    @contextlib.contextmanager
    def step(self, title: str, *, expect: str = "", total: float | None = None,
             unit: str = ""):
        """A numbered step: its header now, a live spinner (and a bar when ``total`` is
        given) while it runs, its time and cache state when it ends.

        Yields:
            a :class:`StepState`; set ``.cached = True`` when the step's result came from a
            cache, call ``.advance(n)`` / ``.update(done)`` to move the bar, ``.note(text)``
            to change the live description.
        """
        from rich.progress import (BarColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)

        self.step_no += 1
        head = f"[{self.step_no}/{self.steps_total}] {title}"
        self.rich.print(head + (f" ({expect})" if expect else ""), markup=False)
        cols = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            cols += [BarColumn(), TextColumn("{task.percentage:>3.0f}%")]
        cols += [TimeElapsedColumn()]
        state = StepState(title)
        t0 = time.time()
        if self.rich.is_terminal:
            with Progress(*cols, console=self.rich, transient=True) as prog:
                state._task = prog.add_task(f"      {title}", total=total)
                state._prog = prog
                yield state
        else:  # a log file or a pipe: the header and the closing line only
            yield state
        state.seconds = time.time() - t0
        self.record.append({"step": title, "seconds": round(state.seconds, 1),
                            "cached": state.cached})
        self.line(f"done in {_fmt_s(state.seconds)}"
                  + ((" from the cache" + (f" (computing it took {_fmt_s(state.original_s)})"
                                          if state.original_s else ""))
                     if state.cached else ""))


@dataclass
class StepState:
    """What a running :meth:`Console.step` reports (see there)."""

    title: str
    cached: bool = False
    seconds: float = 0.0
    original_s: float | None = None  # a cached result's original computing time
    _prog: object = None
    _task: object = None

    def update(self, done: float, total: float | None = None) -> None:
        if self._prog is not None:
            self._prog.update(self._task, completed=done, **({"total": total} if total else {}))

    def advance(self, n: float = 1) -> None:
        if self._prog is not None:
            self._prog.advance(self._task, n)

    def note(self, text: str) -> None:
        if self._prog is not None:
            self._prog.update(self._task, description=f"      {text}")


def _fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


# ------------------------------------------------------------------------------ cache


def _code_files(roots=_CODE_ROOTS) -> dict[str, str]:
    """SHA-1 of every project source file under the folders ``roots`` among the modules
    imported so far (the demo's own front files excepted), ``{path relative to the
    repository: sha1}``."""
    out = {}
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if not f:
            continue
        try:
            rel = Path(f).resolve().relative_to(REPO_ROOT).as_posix()
        except ValueError:
            continue
        if rel.split("/")[0] in roots and rel not in _FRONT_FILES and rel.endswith(".py"):
            out[rel] = _sha1(REPO_ROOT / rel)
    return out


def _package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in _CACHE_PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


class ArtifactCache:
    """Files that a demo step produced, each reused while nothing that made it changed.

    An entry ``<kind>-<key>`` (``key``: the caller's hash of the step's inputs) is a data file
    beside a ``.meta.json`` holding the SHA-1 of every project source file loaded when the
    entry was made (:func:`_code_files`: the code that ran, whichever module it lives in) and
    the versions of :data:`_CACHE_PACKAGES`. :meth:`get` returns the data file only while every
    one of those files hashes the same and every version is the same.

    Args:
        root: cache folder (created on the first :meth:`put`).
        enabled: ``False`` makes every :meth:`get` a miss (``--no-cache``); :meth:`put`
            still stores.
    """

    def __init__(self, root: Path, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled
        self.miss: str | None = None  # why the last get() missed, where it can say

    def _paths(self, kind: str, key: str, suffix: str) -> tuple[Path, Path]:
        return self.root / f"{kind}-{key}{suffix}", self.root / f"{kind}-{key}.meta.json"

    def get(self, kind: str, key: str, suffix: str) -> tuple[Path, dict] | None:
        """``(data file, meta)`` of a valid entry, or ``None`` (:attr:`miss` then says why:
        the first changed source file, a library version, other inputs)."""
        data, meta_path = self._paths(kind, key, suffix)
        self.miss = None
        if not self.enabled:
            self.miss = "--no-cache"
            return None
        if not (data.is_file() and meta_path.is_file()):
            others = list(self.root.glob(f"{kind}-*.meta.json")) if self.root.is_dir() else []
            self.miss = "no cached entry for these inputs (another checkpoint or option)" if others else None
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            self.miss = "unreadable cache entry"
            return None
        now = _package_versions()
        for p, v in (meta.get("packages") or {}).items():
            if now.get(p) != v:
                self.miss = f"{p} {v} -> {now.get(p)}"
                return None
        changed = [rel for rel, digest in meta.get("code", {}).items()
                   if not (REPO_ROOT / rel).is_file() or _sha1(REPO_ROOT / rel) != digest]
        if changed:
            self.miss = (f"{changed[0]} changed" if len(changed) == 1 else
                         f"{changed[0]} and {len(changed) - 1} other source file(s) changed")
            return None
        return data, meta

    def put(self, kind: str, key: str, suffix: str, write, seconds: float = 0.0,
            extra: dict | None = None, roots=_CODE_ROOTS) -> Path:
        """Store an entry: ``write(tmp_path)`` writes the data, renamed into place atomically.
        The entry records the time computing it took (``seconds`` spent before the call plus
        the time of ``write``; reported on later hits), ``extra`` (JSON-ready) and the loaded
        source files under the folders ``roots`` (those whose code can change the result)."""
        from hw.graph import write_text_atomic

        self.root.mkdir(parents=True, exist_ok=True)
        data, meta_path = self._paths(kind, key, suffix)
        fd, tmp = tempfile.mkstemp(prefix=data.name + ".", suffix=".tmp" + suffix, dir=self.root)
        os.close(fd)
        t0 = time.time()
        try:
            write(Path(tmp))
            seconds += time.time() - t0
            os.chmod(tmp, 0o644)
            os.replace(tmp, data)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        write_text_atomic(meta_path, json.dumps({
            "kind": kind, "key": key, "seconds": round(seconds, 1),
            "packages": _package_versions(), "code": _code_files(roots)} | (extra or {}),
            indent=1))
        return data


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


# ------------------------------------------------------------------------------ images


@dataclass
class DemoImage:
    """One demo image.

    Attributes:
        name: VOC image id or the photograph's name.
        pixels: the network input, uint8 ``[S, S, 3]`` RGB, letterboxed (aspect ratio kept,
            black bars).
        gt: ``(boxes [M, 4] xyxy in input pixels, labels [M], difficult [M])`` or ``None``.
        original: the photograph, uint8 ``[H, W, 3]`` RGB (what the drawing shows).
        scale, offset: the letterbox, ``x_input = x_original * scale + offset``.
        gt_source: where the ground truth comes from (``"VOC annotation"``,
            ``"measured by hand"``) or ``None``.
    """

    name: str
    pixels: np.ndarray
    gt: tuple | None
    original: np.ndarray
    scale: float
    offset: tuple[float, float]
    gt_source: str | None = None


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """``img`` (uint8 ``[H, W, 3]``) fitted into a black ``size x size`` canvas, centred, aspect
    ratio kept, as :class:`models.voc.VOCDetection` renders evaluation images: the longer side
    first resized to ``1.25 * size`` (bilinear, the dataset's cached image), then Pillow's
    affine letterbox (bilinear).

    Returns:
        ``(canvas uint8 [size, size, 3], scale, (ox, oy))`` with ``x_canvas = x_img * scale +
        ox`` for pixel coordinates of ``img``.
    """
    from PIL import Image

    from models.voc import letterbox_params

    h, w = img.shape[:2]
    side = round(1.25 * size)
    f = side / max(w, h)
    cached = Image.fromarray(img).resize((max(1, round(w * f)), max(1, round(h * f))),
                                         Image.BILINEAR)
    s, (ox, oy) = letterbox_params(cached.width, cached.height, size)
    out = cached.transform((size, size), Image.AFFINE, (1.0 / s, 0.0, -ox / s, 0.0, 1.0 / s, -oy / s),
                           resample=Image.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(out, dtype=np.uint8), s * f, (ox, oy)


def fallback_photo(name: str) -> np.ndarray:
    """A photograph of :data:`FALLBACK_PHOTOS` as uint8 RGB ``[H, W, 3]``.

    Raises:
        DemoError: the package file is missing or cannot be decoded.
    """
    try:
        if name == "grace_hopper":
            import matplotlib.cbook
            from PIL import Image

            with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
                arr = np.asarray(Image.open(f).convert("RGB"))
        else:
            import skimage.data

            arr = np.asarray(getattr(skimage.data, name)())
    except Exception as exc:  # a missing optional data file, a decode error
        raise DemoError(f"cannot load the bundled photograph {name!r}: {exc}") from exc
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8))


def load_images(n: int, size: int, voc_root=None, photos: bool = False
                ) -> tuple[list[DemoImage], str]:
    """``n`` demo images letterboxed to ``size``, and where they come from.

    With a VOC folder (``voc_root``, ``$DEFLOW_VOC_ROOT`` or ``../shared/data/voc2012-subset``):
    the first ``n`` ids of ``val`` with their annotations. Without one, or with ``photos``:
    the first ``n`` of :data:`FALLBACK_PHOTOS` (cycled), with their hand-measured boxes.

    Raises:
        models.data.DataError: a VOC folder was given but is unusable.
        DemoError: a bundled photograph cannot be loaded.
    """
    from PIL import Image

    from models.centernet import VOC_CLASSES
    from models.data import find_voc_root

    voc = None if photos else find_voc_root(voc_root)
    out = []
    if voc is not None:
        from models.voc import VOCDetection, letterbox_params

        ds = VOCDetection(voc, "val", input_size=size, train=False, limit=n, progress=False)
        for i in range(min(n, len(ds))):
            pix, boxes, labels, diff = ds.render(i)
            name = ds.annos[i].image_id
            with Image.open(Path(voc) / "JPEGImages" / f"{name}.jpg") as im:
                orig = np.asarray(im.convert("RGB"))
            s, off = letterbox_params(orig.shape[1], orig.shape[0], size)
            out.append(DemoImage(name, np.ascontiguousarray(pix),
                                 (np.asarray(boxes), np.asarray(labels), np.asarray(diff)),
                                 orig, s, off, "VOC annotation"))
        return out, f"VOC val ({voc})"
    for i in range(n):
        name, cls, box = FALLBACK_PHOTOS[i % len(FALLBACK_PHOTOS)]
        orig = fallback_photo(name)
        pix, s, (ox, oy) = letterbox(orig, size)
        b = np.array([box], np.float64) * s + np.array([ox, oy, ox, oy])
        gt = (np.clip(b, 0, size - 1).astype(np.float32), np.array([VOC_CLASSES.index(cls)]),
              np.zeros(1, bool))
        out.append(DemoImage(name, pix, gt, orig, s, (ox, oy), "measured by hand"))
    return out, ("photographs bundled with scikit-image and matplotlib"
                 + ("" if photos else " (no VOC folder found)"))


# ------------------------------------------------------------------------------ verdicts


def verdict_text(top1: dict | None, score_thresh: float | None = None) -> str:
    """The top-1 verdict in words: ``correct``, ``wrong`` or ``no ground truth`` (never
    ``wrong`` for an image without ground truth), with the IoU where known, and whether the
    score is below ``score_thresh`` when one is given."""
    if top1 is None:
        return "no detection"
    below = (f" (below the {score_thresh:.2f} threshold)"
             if score_thresh is not None and top1["score"] < score_thresh else "")
    head = f"top-1 {top1['class']} {top1['score']:.2f}{below}: "
    if top1["correct"] is None:
        return head + "no ground truth"
    iou = (f" (IoU {top1['iou']:.2f} with ground truth {top1['gt_class']})"
           if top1.get("gt_class") else " (no ground-truth box)")
    return head + ("correct" if top1["correct"] else "wrong") + iou


# ------------------------------------------------------------------------------ drawing


def _font(size: int, bold: bool = False):
    """DejaVu Sans (matplotlib's bundled font) at ``size`` pixels, else Pillow's default."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        path = font_manager.findfont(font_manager.FontProperties(
            family="DejaVu Sans", weight="bold" if bold else "normal"), fallback_to_default=True)
        return ImageFont.truetype(path, size)
    except Exception:  # no matplotlib font: Pillow's built-in bitmap font at that size
        return ImageFont.load_default(size)


def _dashed_rectangle(draw, box, colour, width: int, dash: int = 10) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay, bx, by) in ((x1, y1, x2, y1), (x2, y1, x2, y2), (x2, y2, x1, y2), (x1, y2, x1, y1)):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for i in range(0, steps, 2):
            t0, t1 = i / steps, min(1.0, (i + 1) / steps)
            draw.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0),
                       (ax + (bx - ax) * t1, ay + (by - ay) * t1)], fill=colour, width=width)


def draw_result(image: DemoImage, dets: np.ndarray, score_thresh: float, top1: dict | None,
                bit_exact_line: str, *, side: int = DRAW_SIDE, max_boxes: int = 10):
    """The photograph with the accelerator's detections, the ground truth and a caption.

    The photograph (not the letterbox bars) is shown with its longer side at ``side``
    pixels; boxes are mapped back from network-input pixels through the letterbox. Drawn:
    every detection with ``score >= score_thresh`` (solid, "class score" above it, at most
    ``max_boxes``), the top-1 detection always (dashed and labelled "top-1 ... (below T)"
    when under the threshold), every ground-truth box in green with "gt class" below it,
    and a caption strip: the image name, the top-1 verdict (:func:`verdict_text`) and
    ``bit_exact_line``.

    Args:
        dets: ``[k, 6]`` rows ``(x1, y1, x2, y2, score, class)`` in network-input pixels, by
            decreasing score.

    Returns:
        ``PIL.Image.Image`` (RGB): the photograph, ``side`` pixels on its longer side (a
        portrait one centred on a canvas ``side`` wide), above the caption strip.
    """
    from PIL import Image, ImageDraw

    from models.centernet import GT_COLOUR, VOC_CLASSES, _class_colour

    h, w = image.original.shape[:2]
    k = side / max(w, h)
    W, H = max(1, round(w * k)), max(1, round(h * k))
    photo = Image.fromarray(image.original).resize((W, H), Image.BICUBIC if k > 1 else Image.LANCZOS)
    CW = max(W, side)  # portrait photographs: centred on a canvas as wide as ``side``
    px = (CW - W) // 2
    f_small, f_cap, f_bold = _font(16), _font(15), _font(16, bold=True)
    d = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
    shown = [r for r in d[:max_boxes] if r[4] >= score_thresh]
    verdict = verdict_text(top1, score_thresh)
    colour = ((0, 120, 0) if top1 and top1["correct"] else
              (180, 0, 0) if top1 and top1["correct"] is False else (60, 60, 60))
    caption = [(f"{image.name}: " + (f"ground truth {image.gt_source}" if image.gt_source
                                     else "no ground truth"), f_bold, (0, 0, 0)),
               (verdict, f_cap, colour),
               (f"{len(shown)} detection(s) >= {score_thresh:.2f}"
                + (": " + ", ".join(f"{VOC_CLASSES[int(r[5])]} {r[4]:.2f}" for r in shown)
                   if shown else ""), f_cap, (0, 0, 0)),
               (bit_exact_line, f_cap, (0, 0, 0))]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = []
    for text, font, col in caption:  # greedy word wrap to the picture's width
        line = ""
        for word in text.split(" "):
            trial = f"{line} {word}".strip()
            if line and measure.textlength(trial, font=font) > CW - 16:
                wrapped.append((line, font, col))
                line = word
            else:
                line = trial
        wrapped.append((line, font, col))
    cap_h = 21 * len(wrapped) + 12
    canvas = Image.new("RGB", (CW, H + cap_h), (255, 255, 255))
    canvas.paste(photo, (px, 0))
    draw = ImageDraw.Draw(canvas)
    lw = max(2, round(side / 170))
    ox, oy = image.offset

    def to_photo(b):
        x1, y1, x2, y2 = ((float(v) - o) / image.scale * k for v, o in zip(b, (ox, oy, ox, oy)))
        return (px + min(max(x1, 0), W - 1), min(max(y1, 0), H - 1),
                px + min(max(x2, 0), W - 1), min(max(y2, 0), H - 1))

    def label(x, y, text, colour, below=False):
        tb = draw.textbbox((0, 0), text, font=f_small)
        tw, th = tb[2] - tb[0] + 6, tb[3] - tb[1] + 6
        ty = (y + 1 if y + th < H else y - th) if below else (y - th if y - th >= 0 else y + 1)
        tx = min(max(0, x), max(0, CW - tw))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=colour)
        dark = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140
        draw.text((tx + 3, ty + 3 - tb[1]), text, font=f_small,
                  fill=(0, 0, 0) if dark else (255, 255, 255))

    if image.gt is not None:
        for b, lab in zip(np.asarray(image.gt[0]).reshape(-1, 4), np.asarray(image.gt[1]).reshape(-1)):
            x1, y1, x2, y2 = to_photo(b)
            draw.rectangle([x1, y1, x2, y2], outline=GT_COLOUR, width=lw)
            label(x1 + lw, y2, f"gt {VOC_CLASSES[int(lab)]}", GT_COLOUR, below=True)
    if len(d) and d[0][4] < score_thresh:
        r = d[0]
        c = _class_colour(int(r[5]))
        x1, y1, x2, y2 = to_photo(r[:4])
        _dashed_rectangle(draw, (x1, y1, x2, y2), c, lw)
        label(x1, y1, f"top-1 {VOC_CLASSES[int(r[5])]} {r[4]:.2f} (below {score_thresh:.2f})", c)
    for r in reversed(shown):  # the best on top
        c = _class_colour(int(r[5]))
        x1, y1, x2, y2 = to_photo(r[:4])
        draw.rectangle([x1, y1, x2, y2], outline=c, width=lw)
        label(x1, y1, f"{VOC_CLASSES[int(r[5])]} {r[4]:.2f}", c)
    y = H + 6
    for text, font, col in wrapped:
        draw.text((8, y), text, font=font, fill=col)
        y += 21
    return canvas


def _save_image_atomic(pic, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    pic.save(tmp)
    tmp.replace(path)


def dequantise(graph, y_int: np.ndarray) -> np.ndarray:
    """Accelerator output ``[H, W, C]`` integers -> real values with the per-channel scale."""
    scale = np.asarray(graph.tensors[graph.output].scale, dtype=np.float64).reshape(-1)
    return y_int.astype(np.float64) * scale


# ------------------------------------------------------------------------------ the flow


def _export(con: Console, cache: ArtifactCache, ckpt: Path):
    """(model, meta, QONNX path, input size) of the checkpoint; the export is cached."""
    from models.detector import CONFIGS, load_checkpoint

    with con.quiet():
        model, meta = load_checkpoint(ckpt)
    size = CONFIGS[meta["config"]].input_size
    key = _key("qonnx", _sha1(ckpt), size)
    with con.step("export", expect="checkpoint -> QONNX, about 30 s, cached afterwards") as st:
        hit = cache.get("qonnx", key, ".onnx")
        if hit:
            st.cached, st.original_s = True, hit[1].get("seconds")
            onnx_path = hit[0]
        else:
            from models.export import export_qonnx

            if cache.miss:
                con.line(f"not from the cache: {cache.miss}")
            with con.quiet():
                # the export is the model's code (models/) and the libraries' (versions)
                onnx_path = cache.put("qonnx", key, ".onnx", lambda p: export_qonnx(
                    model, p, input_shape=(1, 3, size, size)), roots=("models",))
    return model, meta, onnx_path, size


def _lower(con: Console, cache: ArtifactCache, onnx_path: Path):
    """The lowered (unfolded) hardware graph of the QONNX export; cached."""
    from hw.graph import HWGraph

    key = _key("lowered", _sha1(onnx_path), REQUANT)
    with con.step("lower", expect="QONNX -> hardware layers through FINN's front end, "
                  "1.5-8 min on 2 cores, cached afterwards") as st:
        hit = cache.get("lowered", key, ".json")
        if hit:
            st.cached, st.original_s = True, hit[1].get("seconds")
            return HWGraph.load(hit[0])
        from sw.compiler.lower import lower_qonnx

        if cache.miss:
            con.line(f"not from the cache: {cache.miss}")
        t0 = time.time()
        with con.quiet():
            graph = lower_qonnx(onnx_path, requant=REQUANT)
        # the compiler (sw/) and the hardware-layer definitions (hw/) make the graph
        cache.put("lowered", key, ".json", graph.save, time.time() - t0, roots=("sw", "hw"))
        return graph


def _fifo_depths(con: Console, cache: ArtifactCache, graph, method: str, images) -> tuple[dict, dict]:
    """FIFO depths of the folded graph by ``method``; cached by the graph's structure."""
    from sw.compiler.fifo_analytic import size_fifos_auto
    from hw.graph import load_depths, save_depths

    key = _key("fifo", structure_key(graph), method)
    expect = "seconds" if method == "analytical" else "an RTL sizing simulation: many minutes"
    with con.step("FIFO depths", expect=f"{method}: {expect}, cached afterwards") as st:
        hit = cache.get("fifo", key, ".json")
        if hit:
            st.cached, st.original_s = True, hit[1].get("seconds")
            meta = hit[1]
            return load_depths(hit[0]), meta.get("sizing", {"method": method})
        if cache.miss:
            con.line(f"not from the cache: {cache.miss}")
        t0 = time.time()
        lines = []
        with con.quiet():
            depths, sizing = size_fifos_auto(graph, method, frames=[i.pixels for i in images[:2]],
                                             log=lines.append)
        for line in lines:
            con.line(line)
        cache.put("fifo", key, ".json", lambda p: save_depths(depths, p), time.time() - t0,
                  extra={"sizing": _rounded(sizing)},
                  roots=("sw", "hw") if method == "analytical" else ("sw", "hw", "sim"))
        return depths, sizing


def design_key(graph, depths: dict) -> str:
    """Hash of everything the accelerator's Verilog depends on: the folded graph with its
    weights and constants, the FIFO depths, every source file under ``hw/`` and the Amaranth
    version (:func:`sim.native.build_native`'s ``key``: a cached Verilator build is then found
    without generating the Verilog again)."""
    from importlib.metadata import version

    hw_files = {p.relative_to(REPO_ROOT).as_posix(): _sha1(p)
                for p in sorted((REPO_ROOT / "hw").rglob("*.py"))}
    return _key("design", graph.to_json(), sorted(depths.items()), hw_files, version("amaranth"))


def _simulate(con: Console, graph, depths: dict, images, golden, clock: float) -> tuple[list, dict]:
    """Build the native Verilator testbench of the accelerator (cached: :mod:`sim.native`,
    found by :func:`design_key` without generating the Verilog) and stream the frames through
    it back to back; returns the outputs per frame and the measured cycles."""
    from hw.top import Accelerator
    from sim.native import build_native
    from sw.compiler.estimate import bottleneck, estimate
    from sim.rtlsim import simulate

    key = design_key(graph, depths)
    built = []
    with con.step("Verilator build", expect="native C++ testbench; the first build of a "
                  "design takes 3-10 min on 2 cores, cached afterwards") as state:
        state.note("looking for a cached build")

        def build_log(line: str) -> None:
            if "Verilog" in line:
                state.note("generating the accelerator's Verilog (about 40 s)")
            else:  # the verilator and c++ steps run only when no build of this Verilog exists
                built.append(line)
                state.note(line.replace("native build: ", "building: ").split(" (")[0]
                           + " (the first time: 3-10 min on 2 cores)")

        t0 = time.time()
        with con.quiet():
            build_native(Accelerator(graph, fifo_depths=depths, instrument=True), probes=True,
                         log=build_log, key=key)
        build_s = time.time() - t0
        state.cached = not built
    if not built and build_s > 120:
        con.line(f"built meanwhile by another process (waited {_fmt_s(build_s)})")

    ii = bottleneck(estimate(graph)).cycles
    expected_cycles = ii * (len(images) + 4)  # frames back to back plus about 4 II of fill
    with con.step("RTL simulation", expect=f"{len(images)} frame(s) back to back, about "
                  f"{expected_cycles:,} cycles at 35,000-50,000 cycles/s") as state:
        def progress(cycles: int, frames_done: int, beats: int) -> None:
            state.note(f"simulating: {cycles:,} cycles, {frames_done} frame(s) out")

        state.note(f"simulating {len(images)} frame(s)")
        with con.quiet():
            run = simulate(graph, [i.pixels for i in images], fifo_depths=depths,
                           harness="native", expected=golden, progress=progress, native_key=key)
    c = run.cycles
    con.line(f"{sum(c):,} cycles in {_fmt_s(run.sim_s)}: {sum(c) / max(run.sim_s, 1e-9):,.0f} "
             "cycles/s")
    counters = {"frames": len(c), "total_cycles": int(sum(c)),
                "first_frame_cycles": int(c[0]),
                "steady_cycles": int(c[-1]) if len(c) > 1 else None,
                "per_frame_cycles": [int(x) for x in c],
                "build_s": round(build_s, 1), "sim_s": run.sim_s, "build_cached": not built,
                "harness": "native Verilator testbench, sim/native_tb.cpp"}
    return list(run.outputs), counters


def _run_pynq(con: Console, args, images, clock: float) -> tuple[list, dict]:
    from sw.runtime.driver import AcceleratorDriver, PynqBackend

    with con.step("board", expect=f"{len(images)} frame(s) through the bitstream") as _:
        drv = AcceleratorDriver(PynqBackend(args.bitfile))
        with con.quiet():
            drv.load()
        y = drv.infer(np.stack([i.pixels for i in images]))
        c = drv.counters()
        drv.close()
    return list(y), {"frames": c["frames"], "total_cycles": c["cycles"],
                     "first_frame_cycles": None,
                     "steady_cycles": c["last_frame_cycles"] if len(images) > 1 else None,
                     "harness": "PYNQ board (AXI-Lite counters)"}


def run_demo(args) -> int:
    """``deflow demo``: see the module docstring. Exit 0 when the accelerator's output is
    bit-exact on every image, 1 when some value differs.

    Raises:
        DemoError: bad arguments (:func:`check_args`, before any work) or a failed step.
    """
    args.checkpoint = args.checkpoint or str(DEFAULT_CHECKPOINT)
    args.out = args.out or str(DEFAULT_OUT)
    check_args(args)
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.txt").write_text("")
    con = Console(out / "log.txt")
    try:
        return _run(con, args, out, t_start)
    finally:
        con.close()


def _run(con: Console, args, out: Path, t_start: float) -> int:
    from models.centernet import VOC_CLASSES, decode, evaluate_ap50, top1_check
    from sw.compiler.boards import get_board
    from hw.graph import write_text_atomic

    cache = ArtifactCache(Path(args.cache_dir or DEFAULT_CACHE), enabled=not args.no_cache)
    ckpt = Path(args.checkpoint)
    board = get_board(args.board)
    clock = args.clock_mhz or board.fabric_mhz
    con.steps_total = 9 if args.backend == "sim" else 7
    con.rich.print(f"deflow demo: {ckpt.name} on {board.name} at {clock:g} MHz, {args.frames} "
                   f"frame(s), {args.backend} backend; library messages go to {out / 'log.txt'}",
                   markup=False)

    model, meta, onnx_path, size = _export(con, cache, ckpt)
    con.line(f"config {meta['config']} ({size}x{size} input), {meta.get('decoder_form', '?')} "
             f"deformable decoder, {meta.get('head_form', '?')} head, "
             f"{'W4A8' if meta.get('quant') else 'float'}")

    with con.step("images", expect=f"{args.frames} letterboxed to {size}x{size}") as _:
        with con.quiet():
            images, source = load_images(args.frames, size, args.voc_root, photos=args.photos)
    con.line(f"from {source}: {', '.join(i.name for i in images)}")

    graph, est, folding = _compile(con, cache, onnx_path, board, clock, args.fps, out)
    from sw.compiler.estimate import bottleneck, totals

    bn = bottleneck(est)
    tot = totals(est, clock)

    with con.step("golden model", expect="the integer reference of every output value, and "
                  "its distance to the Brevitas float model; seconds", total=len(images)) as st:
        from sw.compiler.execute import compare_with_brevitas, run_graph

        golden, per = [], []
        for img in images:
            golden.append(run_graph(graph, img.pixels)[graph.output])
            with con.quiet():
                per.append(compare_with_brevitas(model, graph, img.pixels[None]))
            st.advance()
        n_val = sum(d["values"] for d in per)
        dist = {"images": len(per), "values": n_val,
                "max_lsb": max(d["max_lsb"] for d in per),
                "mean_abs_lsb": sum(d["mean_abs_lsb"] * d["values"] for d in per) / n_val,
                "share_equal": sum(d["share_equal"] * d["values"] for d in per) / n_val,
                "per_image_max_lsb": [d["max_lsb"] for d in per]}
    con.line(f"golden model vs Brevitas: largest difference {dist['max_lsb']} output LSB, mean "
             f"{dist['mean_abs_lsb']:.2f} LSB, {100 * dist['share_equal']:.1f}% of "
             f"{dist['values']:,} values identical")

    if args.backend == "pynq":
        hw_out, counters = _run_pynq(con, args, images, clock)
        sizing = None
    else:
        depths, sizing = _fifo_depths(con, cache, graph, args.fifo_sizing, images)
        con.line(f"{len(depths)} FIFOs, {sizing.get('fifo_bits', 0):,} bits"
                 + (f", modelled frame interval {sizing['model_interval']:,} cycles"
                    if sizing.get("model_interval") else ""))
        hw_out, counters = _simulate(con, graph, depths, images, golden, clock)
    values = int(np.prod(golden[0].shape))
    mism = [int(np.sum(h != g)) for h, g in zip(hw_out, golden)]
    for img, mm in zip(images, mism):
        con.line(f"{img.name}: " + ("BIT-EXACT, every one of "
                                    f"{values:,} output values equals the golden model's"
                                    if mm == 0 else f"MISMATCH: {mm:,} of {values:,} values differ"))
    if counters.get("steady_cycles"):
        con.line(f"measured steady-state frame interval {counters['steady_cycles']:,} cycles "
                 f"(expected II {bn.cycles:,}, bottleneck {bn.name}); first frame with the "
                 f"pipeline fill {counters['first_frame_cycles'] or 0:,} cycles")

    with con.step("decode, draw, report",
                  expect="CenterNet decode of the accelerator's output") as _:
        ncls = len(VOC_CLASSES)
        dets, rows = {}, []
        for img, y, mm in zip(images, hw_out, mism):
            yr = dequantise(graph, y).transpose(2, 0, 1)  # [24, Ho, Wo]
            d = decode(yr[:ncls], yr[ncls:ncls + 2], yr[ncls + 2:ncls + 4],
                       stride=size // yr.shape[1], k=100, heat_is_logits=True)
            dets[img.name] = d
            keep = d[d[:, 4] >= args.score]
            top1 = top1_check(d, img.gt)
            rows.append({"image": img.name, "ground_truth": img.gt_source,
                         "detections": [{"class": VOC_CLASSES[int(r[5])],
                                         "score": round(float(r[4]), 3),
                                         "box_xyxy": [round(float(v), 1) for v in r[:4]]}
                                        for r in keep],
                         "top1": top1, "verdict": verdict_text(top1, args.score), "mismatches": mm})
            exact = (f"accelerator output bit-exact: all {values:,} values equal the golden "
                     "model's" if mm == 0 else
                     f"accelerator output NOT bit-exact: {mm:,} of {values:,} values differ "
                     "from the golden model")
            _save_image_atomic(draw_result(img, d, args.score, top1, exact),
                               out / f"{img.name}_detections.png")
        ap = None
        if all(i.gt is not None and i.gt_source == "VOC annotation" for i in images):
            with con.quiet():
                ap = evaluate_ap50(dets, {i.name: i.gt for i in images}, VOC_CLASSES)
        ii_meas = counters.get("steady_cycles")
        report = {
            "checkpoint": str(Path(args.checkpoint).resolve().relative_to(REPO_ROOT)
                              if Path(args.checkpoint).resolve().is_relative_to(REPO_ROOT)
                              else args.checkpoint),
            "config": meta["config"], "input_size": size, "image_source": source,
            "images": [i.name for i in images],
            "backend": args.backend, "harness": counters.get("harness"),
            "board": board.name, "clock_mhz": clock, "target_fps": args.fps,
            "bit_exact": all(mm == 0 for mm in mism), "mismatches": mism,
            "values_per_frame": values,
            "golden_vs_brevitas": _rounded(dist),
            "cycles": {"measured": _rounded({k: v for k, v in counters.items()
                                             if k not in ("harness",)}),
                       "expected_ii": bn.cycles, "bottleneck": bn.name, "bottleneck_op": bn.op},
            "fps_projected_at_clock": {
                "from_measured_interval": round(clock * 1e6 / ii_meas, 1) if ii_meas else None,
                "from_expected_ii": round(clock * 1e6 / bn.cycles, 1)},
            "resources_estimated": {"luts": tot["luts"], "dsps": tot["dsps"],
                                    "bram18": tot["bram18"], "uram": tot["uram"],
                                    "flip_flops": None},
            "capacity": {"luts": board.luts, "dsps": board.dsps, "bram18": 2 * board.bram36,
                         "uram": board.uram},
            "fifo_sizing": _rounded(sizing) if sizing else None,
            "layers": len(graph.layers),
            "score_threshold": args.score,
            "detections": rows,
            "ap50_on_these_images": _rounded(ap),
            "steps": con.record,
        }
    report["steps"] = con.record
    report["wall_s"] = round(time.time() - t_start, 1)
    write_text_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / "report.md", report_markdown(report, est))
    con.rich.print("", markup=False)
    for r in rows:
        con.rich.print(f"{r['image']}: {r['verdict']}; detections >= {args.score:.2f}: "
                       + (", ".join(f"{x['class']} {x['score']:.2f}" for x in r["detections"])
                          or "none"), markup=False)
    ok = report["bit_exact"]
    cached = [s["step"] for s in con.record if s["cached"]]
    con.rich.print(f"report: {out / 'report.md'}; drawings: {out}/*_detections.png; estimates: "
                   f"{out}/estimates.md/png", markup=False)
    con.rich.print(f"done in {_fmt_s(report['wall_s'])}"
                   + (f" (cached: {', '.join(cached)})" if cached else "")
                   + (": accelerator output BIT-EXACT on every image" if ok else
                      f": {sum(mism):,} output values MISMATCH the golden model"), markup=False)
    return 0 if ok else 1


def _compile(con: Console, cache: ArtifactCache, onnx_path: Path, board, clock: float,
             fps: float, out: Path):
    """Lowered graph (cached) -> folding for ``board`` at ``fps`` -> estimates, with the
    estimate report (:mod:`sw.compiler.report`) written to ``out``."""
    from sw.compiler.autofold import choose_folding
    from sw.compiler.estimate import estimate, totals
    from sw.compiler.folding import apply_folding
    from sw.compiler.report import write_report

    lowered = _lower(con, cache, onnx_path)
    with con.step("fold", expect=f"for {board.name} at {fps:,.0f} fps; estimates") as _:
        folding = choose_folding(lowered, board, target_fps=fps, clock_mhz=clock)
        graph = apply_folding(lowered, folding)
        est = estimate(graph)
        write_report(graph, est, board, clock, out, folding=folding)
    t = totals(est, clock)
    con.line(f"{len(graph.layers)} hardware layers; expected II {t['ii_cycles']:,} cycles "
             f"(bottleneck {t['bottleneck']}), {t['fps']:,.0f} fps at {clock:g} MHz; estimated "
             f"{t['luts']:,} LUT, {t['dsps']} DSP, {t['bram18']} BRAM18 of {board.luts:,} / "
             f"{board.dsps} / {2 * board.bram36}")
    return graph, est, folding


def _rounded(x, digits: int = 3):
    """JSON-ready copy with floats rounded to ``digits`` significant decimals (numpy scalars
    and arrays converted)."""
    if isinstance(x, dict):
        return {str(k): _rounded(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v, digits) for v in x]
    if isinstance(x, np.ndarray):
        return _rounded(x.tolist(), digits)
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if not np.isfinite(x) else round(x, digits)
    if hasattr(x, "__dict__") and not isinstance(x, type):
        return _rounded(vars(x), digits)
    return x


def report_markdown(r: dict, estimates=None) -> str:
    """``report.md`` of :func:`run_demo`'s report dict: verdicts, the accelerator's measured
    and estimated figures (rounded), the steps with their times and cache state, and the
    per-layer estimates with a total row (``estimates``: :func:`sw.compiler.estimate.estimate` of the
    folded graph, optional)."""
    c, m = r["cycles"], r["cycles"]["measured"]
    n = len(r["detections"])
    verdicts = [row["top1"]["correct"] if row.get("top1") else None for row in r["detections"]]
    n_ok = sum(v is True for v in verdicts)
    n_bad = sum(v is False for v in verdicts)
    n_none = sum(1 for row in r["detections"]
                 if row.get("top1") is not None and row["top1"]["correct"] is None)
    exact = sum(1 for x in r["mismatches"] if x == 0)
    lines = [
        f"# deflow demo: {r['config']} detector on the accelerator ({r['backend']} backend)", "",
        f"- checkpoint `{r['checkpoint']}`, {r['input_size']}x{r['input_size']} input; images: "
        f"{r['image_source']}",
        f"- accelerator output: **{'bit-exact' if r['bit_exact'] else 'NOT bit-exact'}** on "
        f"{exact} of {n} images ({r['values_per_frame']:,} int8 values per image compared with "
        "the golden integer model"
        + ("" if r["bit_exact"] else f"; differing values per image: {r['mismatches']}") + ")",
        f"- top-1 detection (correct = same class as a ground-truth box at IoU >= 0.5, the AP50 "
        f"criterion): {n_ok} correct, {n_bad} wrong"
        + (f", {n_none} without ground truth" if n_none else "")
        + (f", {n - n_ok - n_bad - n_none} without any detection" if n - n_ok - n_bad - n_none else ""),
        f"- wall time {_fmt_s(r['wall_s'])}"
        + (f"; cached steps: {', '.join(s['step'] for s in r['steps'] if s['cached'])}"
           if any(s["cached"] for s in r["steps"]) else "; nothing cached"), "",
        f"| image | ground truth | top-1 detection | verdict | detections >= {r['score_threshold']:.2f} "
        "| drawing |", "|---|---|---|---|---|---|"]
    for row in r["detections"]:
        t = row.get("top1")
        verdict = ("no detection" if t is None else "no ground truth" if t["correct"] is None
                   else ("**correct**" if t["correct"] else "wrong")
                   + (f" (IoU {t['iou']:.2f} with {t['gt_class']})" if t.get("gt_class") else ""))
        lines.append(f"| {row['image']} | {row.get('ground_truth') or 'none'} | "
                     + (f"{t['class']} {t['score']:.2f}" if t else "-") + f" | {verdict} | "
                     + (", ".join(f"{d['class']} {d['score']:.2f}" for d in row["detections"])
                        or "none") + f" | [png]({row['image']}_detections.png) |")
    f = r["fps_projected_at_clock"]
    res, cap = r["resources_estimated"], r["capacity"]

    def pct(k):
        return f" of {cap[k]:,} ({100 * res[k] / cap[k]:.0f} %)" if cap.get(k) else ""

    lines += ["", "## Accelerator", "", "| | |", "|---|---|",
              f"| board, clock | {r['board']} at {r['clock_mhz']:g} MHz (folded for "
              f"{r['target_fps']:,.0f} fps) |",
              f"| hardware layers | {r['layers']} |",
              f"| expected II (compiler) | {c['expected_ii']:,} cycles, bottleneck "
              f"{c['bottleneck']} ({c['bottleneck_op']}) |"]
    if m.get("steady_cycles"):
        lines.append(f"| measured steady-state frame interval | {m['steady_cycles']:,} cycles "
                     f"({r['harness']}) |")
    if m.get("first_frame_cycles"):
        lines.append(f"| measured first frame, with the pipeline fill | "
                     f"{m['first_frame_cycles']:,} cycles |")
    lines.append(f"| measured cycles, all {m.get('frames')} frames | {m.get('total_cycles', 0):,} |")
    lines.append(f"| projected frames/s at {r['clock_mhz']:g} MHz | "
                 + (f"{f['from_measured_interval']:,.0f} from the measured interval, "
                    if f.get("from_measured_interval") else "")
                 + f"{f['from_expected_ii']:,.0f} from the expected II (projections, not board "
                   "measurements) |")
    fs = r.get("fifo_sizing")
    if fs:
        lines.append(f"| FIFO depths | sized {fs['method']}"
                     + (f", {fs['fifo_bits']:,} bits" if fs.get("fifo_bits") else "")
                     + (f", modelled frame interval {fs['model_interval']:,} cycles"
                        if fs.get("model_interval") else "") + " |")
    d = r["golden_vs_brevitas"]
    lines += [f"| golden integer model vs Brevitas float | largest difference {d['max_lsb']} LSB, "
              f"mean {d['mean_abs_lsb']:.2f} LSB, {100 * d['share_equal']:.1f} % of "
              f"{d['values']:,} values identical |",
              f"| resources (compiler estimates) | LUT {res['luts']:,}{pct('luts')}, DSP "
              f"{res['dsps']:,}{pct('dsps')}, BRAM18 {res['bram18']:,}{pct('bram18')}"
              + (f", URAM {res['uram']}" if res.get("uram") else "")
              + "; flip-flops not estimated |"]
    if r.get("ap50_on_these_images"):
        ap = r["ap50_on_these_images"]
        v = ap.get("voc6_map50") if isinstance(ap, dict) else None
        if isinstance(v, float) and np.isfinite(v):
            lines.append(f"| VOC6 AP50 on these {n} images only (not the val figure) | "
                         f"{100 * v:.1f} % |")
    lines += ["", "## Steps", "", "| step | time | cached |", "|---|---:|---|"]
    for s in r["steps"]:
        lines.append(f"| {s['step']} | {_fmt_s(s['seconds'])} | {'yes' if s['cached'] else 'no'} |")
    if estimates:
        lines += ["", "## Layers (compiler estimates; the plot: estimates.png)", "",
                  "| # | layer | op | PE | SIMD | cycles | % of II | LUT | DSP | BRAM18 |",
                  "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        ii = max(e.cycles for e in estimates)
        for i, e in enumerate(estimates):
            name = f"**{e.name}** (bottleneck)" if e.name == c["bottleneck"] else e.name
            lines.append(f"| {i} | {name} | {e.op} | {e.folding.get('PE', '-')} | "
                         f"{e.folding.get('SIMD', '-')} | {e.cycles:,} | {100 * e.cycles / ii:.0f} | "
                         f"{e.luts:,} | {e.dsps} | {e.bram18} |")
        lines.append(f"| | **total** ({len(estimates)} layers) | | | | II {ii:,} | | "
                     f"**{sum(e.luts for e in estimates):,}** | **{sum(e.dsps for e in estimates)}** "
                     f"| **{sum(e.bram18 for e in estimates)}** |")
    return "\n".join(lines) + "\n"


def add_demo_parser(sub) -> argparse.ArgumentParser:
    """Register ``deflow demo`` on an argparse subparsers object."""
    d = sub.add_parser(
        "demo", help="the shipped detector on real photographs through the accelerator's RTL "
        "(or a board), checked bit for bit, with drawn detections",
        description="Export the checkpoint, compile it for the board, stream real images "
        "through the accelerator's RTL (native Verilator testbench) or a PYNQ board, check "
        "every output value against the golden model and draw the decoded detections. "
        "Writes into --out: <image>_detections.png, report.md, report.json, estimates.md/"
        "json/png and log.txt (library messages); the export, lowered graph and FIFO depths "
        "are cached in --cache-dir.")
    d.add_argument("--checkpoint", default=None,
                   help="Brevitas W4A8 detector checkpoint (models/train.py; default: the "
                   f"shipped {DEFAULT_CHECKPOINT.relative_to(REPO_ROOT)})")
    d.add_argument("--voc-root", default=None, help="VOC folder (default: $DEFLOW_VOC_ROOT or "
                   "../shared/data/voc2012-subset; photographs bundled with scikit-image and "
                   "matplotlib without one)")
    d.add_argument("--photos", action="store_true",
                   help="the bundled photographs even where a VOC folder exists")
    d.add_argument("--frames", type=int, default=3, help="images streamed through the accelerator")
    d.add_argument("--board", default="ultra96v2", help="board to fold for (pynq-z2, "
                   "ultra96v2, zcu104, kv260)")
    d.add_argument("--clock-mhz", type=float, default=None,
                   help="accelerator clock in MHz (default: the board's)")
    d.add_argument("--fps", type=float, default=DEFAULT_FPS,
                   help="folding target at the clock (lower = smaller design, faster build)")
    d.add_argument("--backend", choices=("sim", "pynq"), default="sim",
                   help="RTL simulation here, or a PYNQ board (needs --bitfile)")
    d.add_argument("--bitfile", default=None, help="bitstream for --backend pynq (from "
                   "deflow bitstream; default: none)")
    d.add_argument("--score", type=float, default=0.3,
                   help="score threshold of the drawn and reported detections")
    d.add_argument("--out", default=None, help="output folder (default: "
                   f"{DEFAULT_OUT})")
    d.add_argument("--fifo-sizing", choices=("analytical", "simulation"), default="analytical",
                   help="FIFO depths from the layers' cycle models (seconds) or by an RTL "
                   "simulation (many minutes)")
    d.add_argument("--cache-dir", default=None, help="where the export, the lowered graph "
                   f"and the FIFO depths are cached (default: "
                   f"{DEFAULT_CACHE})")
    d.add_argument("--no-cache", action="store_true",
                   help="recompute the export, lowering and FIFO depths (the Verilator build "
                   "stays cached by its Verilog hash)")
    d.set_defaults(func=run_demo)
    return d
