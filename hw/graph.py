"""The lowered hardware-layer graph: what the compiler produces, the golden model executes
and the Amaranth top level is built from.

A :class:`HWGraph` is a list of :class:`HWLayer` in topological order, connected by named
:class:`TensorInfo` streams. Feature tensors are NHWC without the batch axis; every value on
a stream is an integer of ``bits`` bits (``signed`` or not) whose real value is
``scale * integer`` (zero point 0).

Layer ops and their attributes (parameters are numpy integer arrays in ``params``):

===================  ==========================================================================
op                   attrs / params
===================  ==========================================================================
SlidingWindow        ifm_dim (H, W), channels, kernel, stride, pad, dilation, depthwise
MVAU                 mh, mw, pixels; params ``weights`` [MH, MW], weight_bits
VVAU                 channels, kernel_elems, pixels; params ``weights`` [C, K*K], weight_bits
Requant              channels, pixels, shift, out_min, out_max; params ``multiplier``, ``bias`` [C]
Thresholding         channels, pixels, out_bias (FINN's ActVal); params ``thresholds`` [C, N] or
                     [1, N] (shared), rows ascending; ``y = out_bias + #{i: x >= T[c, i]}``
DeformableSampler    ifm_dim, channels, max_offset, offset_bits (inputs: features, offsets)
MaxPool              kernel, channels, pixels (input: a depthwise SlidingWindow stream)
Upsample             factor, ifm_dim, channels (nearest neighbour)
Concat               channels [C_0, C_1, ...], pixels (one input per entry)
ChannelSplit         sizes [S_0, S_1, ...], channels, pixels (one output per entry)
ChannelShuffle       groups, channels, pixels
Add                  channels, pixels, out_bits, signed (two inputs of one scale, saturating)
Duplicate            (fan-out of one stream to two consumers)
WidthConverter       in_lanes, out_lanes (inserted by folding where lane counts differ)
===================  ==========================================================================

Folding (``folding`` dict of a layer) uses FINN's names: ``PE`` (output lanes of MVAU/VVAU),
``SIMD`` (input lanes of MVAU). Stream lane counts of the other layers follow from their
neighbours (the compiler's ``sw.compiler.folding.apply_folding``).

Each op's folding rules, cycle models, resources, golden execution and Amaranth build are held
by its class in :mod:`hw.ops` (:data:`hw.ops.OPS`).
"""

from __future__ import annotations

from contextlib import contextmanager

import json
import os
import tempfile
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class TensorInfo:
    """A stream between layers.

    Attributes:
        name: unique tensor name (from the QONNX graph where it came from there).
        shape: per frame; ``(H, W, C)`` for features, ``(H, W, C)`` of the accumulators for
            ``acc`` tensors, ``(OH, OW, K*K*C)`` for windows.
        bits: width of one value in bits.
        signed: two's complement if true.
        scale: real value of one LSB: a float, or a list of ``C`` floats for a per-channel
            quantised tensor (``None`` for window/accumulator streams).
        kind: ``feature`` | ``acc`` | ``window`` | ``dwwindow``.
        lanes: values per beat once folded (1 before folding).
    """

    name: str
    shape: tuple[int, ...]
    bits: int
    signed: bool
    scale: float | list[float] | None = None
    kind: str = "feature"
    lanes: int = 1

    @property
    def values_per_frame(self) -> int:
        return int(np.prod(self.shape))

    @property
    def beats_per_frame(self) -> int:
        return self.values_per_frame // self.lanes


@dataclass
class HWLayer:
    """One hardware layer: an op of the table in the module docstring."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    folding: dict = field(default_factory=dict)
    source_node: str = ""  # the QONNX node it was lowered from, for error messages


@dataclass
class HWGraph:
    """Hardware-layer graph of one accelerator (a single input and a single output stream)."""

    layers: list[HWLayer]
    tensors: dict[str, TensorInfo]
    input: str
    output: str

    def layer(self, name: str) -> HWLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}")

    def producer(self, tensor: str) -> HWLayer | None:
        for layer in self.layers:
            if tensor in layer.outputs:
                return layer
        return None

    def consumers(self, tensor: str) -> list[HWLayer]:
        return [layer for layer in self.layers if tensor in layer.inputs]

    # -- serialisation ---------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "input": self.input,
            "output": self.output,
            "tensors": {k: vars(v) | {"shape": list(v.shape)} for k, v in self.tensors.items()},
            "layers": [
                {
                    "name": l.name,
                    "op": l.op,
                    "inputs": l.inputs,
                    "outputs": l.outputs,
                    "attrs": _jsonable(l.attrs),
                    "params": {k: v.astype(np.int64).tolist() for k, v in l.params.items()},
                    "folding": l.folding,
                    "source_node": l.source_node,
                }
                for l in self.layers
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> "HWGraph":
        tensors = {
            k: TensorInfo(**(v | {"shape": tuple(v["shape"])})) for k, v in data["tensors"].items()
        }
        layers = [
            HWLayer(
                name=l["name"],
                op=l["op"],
                inputs=list(l["inputs"]),
                outputs=list(l["outputs"]),
                attrs={k: tuple(v) if isinstance(v, list) else v for k, v in l["attrs"].items()},
                params={k: np.asarray(v, dtype=np.int64) for k, v in l["params"].items()},
                folding=dict(l["folding"]),
                source_node=l.get("source_node", ""),
            )
            for l in data["layers"]
        ]
        return cls(layers=layers, tensors=tensors, input=data["input"], output=data["output"])

    def save(self, path: Path) -> None:
        """Write the graph as JSON, atomically."""
        write_text_atomic(Path(path), json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "HWGraph":
        return cls.from_json(json.loads(Path(path).read_text()))


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, np.integer):
            v = int(v)
        elif isinstance(v, np.floating):
            v = float(v)
        out[k] = v
    return out


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: whole or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def atomic_dir(out: Path):
    """Write a whole output folder at once: yields a temporary sibling folder; when the block
    ends without error it replaces ``out`` (the previous ``out`` is renamed aside first and
    removed after), on any error it is removed and ``out`` keeps what it held."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".partial.", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.with_name(f"{out.name}.old.{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- FIFO depths (fifo_depths.json of a compiled folder) --------------------------------------

def save_depths(depths: dict[str, int], path: Path) -> None:
    """Write ``{tensor: depth}`` as JSON (atomically)."""
    write_text_atomic(Path(path), json.dumps(dict(sorted(depths.items())), indent=1) + "\n")


def load_depths(path: Path) -> dict[str, int]:
    """Read depths written by :func:`save_depths`.

    Raises:
        ValueError: the file is not a JSON object of positive integers.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read FIFO depths: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, int) and v > 0 for v in data.values()):
        raise ValueError(f"{path}: FIFO depths must be a JSON object of positive integers")
    return data
