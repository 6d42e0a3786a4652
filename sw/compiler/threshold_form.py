"""Thresholding or requantiser: the cheaper exact hardware form of one FINN threshold set.

A ``Thresholding`` layer computes ``y = b + #{i : x >= T[c, i]}`` with ``N = 2**bits - 1``
thresholds per channel (FINN's MultiThreshold); its ROMs grow with ``2**bits``. When the
thresholds are (after rounding) uniformly spaced, as an activation quantiser behind a
per-channel affine gives them, the requantiser ``y = clamp((x*M[c] + B[c]) >> S, b, b + N)``
(:class:`hw.requant.Requantizer`) gives the same answer with one multiplier and two constants
per channel.

Exactness is checked outright, on every accumulator value the layer can receive: both forms are
non-decreasing step functions of ``x``, so they are equal on ``[lo, hi]`` exactly when each
output level is first reached at the same ``x``: ``T[c, k-1]`` for the thresholds,
``ceil(((b+k) * 2**S - B) / M)`` for the requantiser (both clipped to ``[lo, hi + 1]``).
"""

from __future__ import annotations

import numpy as np

from hw.graph import HWGraph

__all__ = ["fit_requant", "choose_threshold_forms", "REQUANT_MODES", "MULTIPLIER_BITS",
           "MAX_SHIFT"]

MULTIPLIER_BITS = 24  # the requantiser's unsigned multiplier (a 27x18 DSP48E2 pair at most)
MAX_SHIFT = 40


def _first_reach(levels: np.ndarray, m: int, b: int, s: int) -> np.ndarray:
    """``ceil((levels * 2**s - b) / m)``: the first ``x`` whose requantised value reaches each
    level (int64 is exact here: levels below 2**16, s <= 40, |b| below 2**62)."""
    num = levels.astype(np.int64) * (1 << s) - b
    return -((-num) // m)


def fit_requant(thresholds: np.ndarray, out_bias: int, lo: int, hi: int):
    """The requantiser closest to a threshold set: ``(M [C], B [C], S, thresholds' [C, N],
    moved)`` or ``None``.

    ``thresholds'`` are the requantiser's own (the first ``x`` reaching each level, clipped to
    ``[lo, hi + 1]``); ``moved`` counts the accumulator values whose output differs from the
    given thresholds' answer, each by one level (0: exact). Only fits whose every level moves
    by at most one input step are returned, with the smallest shift that reaches the fewest
    moves found (FINN's float32 thresholds of a ``round(x * scale + bias)`` quantiser are
    linear to within that rounding, so an exact fit is common only for short ranges).

    Args:
        thresholds: ``[C, N]`` integers, rows non-decreasing.
        out_bias: FINN's ``ActVal``.
        lo, hi: the input's value range.
    """
    t = np.clip(np.asarray(thresholds, dtype=np.int64), lo, hi + 1)
    n = t.shape[1]
    levels = out_bias + np.arange(1, n + 1)
    inners = []
    for row in t:
        inner = np.nonzero((row > lo) & (row <= hi))[0]
        if len(inner) < 2:
            return None  # a step with one interior threshold: no slope to fit
        inners.append((inner[0], inner[-1]))
    best = None
    for s in range(MAX_SHIFT + 1):
        ms, bs, reaches, moved = [], [], [], 0
        for row, (k0, k1) in zip(t, inners):
            slope = (k1 - k0) / (row[k1] - row[k0])  # levels per input step
            m0 = int(round(slope * (1 << s)))
            found = None
            for m in (m0, m0 - 1, m0 + 1):
                if m <= 0 or m >= 1 << MULTIPLIER_BITS:
                    continue
                # B within one input step of reaching the first and last interior levels at
                # their thresholds
                lo_b = max(int(levels[k]) * (1 << s) - int(row[k]) * m for k in (k0, k1))
                hi_b = min(int(levels[k]) * (1 << s) - (int(row[k]) - 1) * m for k in (k0, k1))
                for b in ((lo_b + hi_b - 1) // 2,) if lo_b < hi_b else (lo_b, hi_b):
                    reach = np.clip(_first_reach(levels, m, b, s), lo, hi + 1)
                    err = np.abs(reach - row)
                    if err.max() > 1:
                        continue
                    if found is None or err.sum() < found[3]:
                        found = (m, b, reach, int(err.sum()))
            if found is None:
                break
            ms.append(found[0])
            bs.append(found[1])
            reaches.append(found[2])
            moved += found[3]
        else:
            fit = (np.asarray(ms, dtype=np.int64), np.asarray(bs, dtype=np.int64), s,
                   np.stack(reaches), moved)
            if best is None or moved < best[4]:
                best = fit
            if moved == 0:
                break
        if best is not None and s >= best[2] + 4:
            break  # four more bits of shift found nothing closer
    return best


def _memory_bits_thresholds(t: np.ndarray, channels: int, in_bits: int) -> int:
    n = t.shape[1]
    return channels * n * (in_bits + 1)


def _memory_bits_requant(m: np.ndarray, b: np.ndarray, channels: int) -> int:
    mb = int(max(int(v) for v in m)).bit_length()
    bb = max(int(abs(int(v))).bit_length() for v in b) + 1
    return channels * (mb + bb)


REQUANT_MODES = ("exact", "within1", "never")


def choose_threshold_forms(graph: HWGraph, finn_model=None, mode: str = "exact"
                           ) -> dict[str, dict]:
    """Turn each ``Thresholding`` layer of ``graph`` into a ``Requant`` where that is cheaper,
    in place: ``mode`` ``"exact"`` only where the requantiser gives the thresholds' answer on
    every accumulator value, ``"within1"`` also where it moves some values by one output LSB,
    ``"never"`` keeps every threshold set.

    The cost compared is parameter memory: ``C * N * (in_bits + 1)`` threshold bits against
    ``C * (multiplier bits + bias bits)``; a requantiser also needs a multiplier per lane, so
    it is taken only where it saves at least half the memory. A requantiser that is not exact
    moves some accumulator values to the next level (by one output LSB); that cost is reported
    per layer, and the thresholds of the FINN node the layer came from (``finn_model``) are
    replaced by the requantiser's own, so that FINN's execution stays the integer truth the
    golden model and the RTL equal.

    Returns:
        ``{layer name: {"form": "requant" | "thresholding", "why": ..., "moved_values":
        accumulator values whose output moved by one LSB, "input_values": size of the input
        range}}``.
    """
    if mode not in REQUANT_MODES:
        raise ValueError(f"requantiser mode must be one of {REQUANT_MODES}, got {mode!r}")
    report = {}
    for layer in graph.layers:
        if layer.op != "Thresholding" or mode == "never":
            continue
        t_in = graph.tensors[layer.inputs[0]]
        lo, hi = ((-(1 << (t_in.bits - 1)), (1 << (t_in.bits - 1)) - 1) if t_in.signed
                  else (0, (1 << t_in.bits) - 1))
        t = layer.params["thresholds"]
        c = layer.attrs["channels"]
        rows = np.broadcast_to(t, (c, t.shape[1])) if t.shape[0] == 1 else t
        bias = int(layer.attrs["out_bias"])
        entry = {"form": "thresholding", "input_values": (hi - lo + 1) * c}
        report[layer.name] = entry
        fit = fit_requant(rows, bias, lo, hi)
        if fit is None:
            entry["why"] = "no requantiser within one input step of every threshold"
            continue
        m, b, s, reach, moved = fit
        if moved and mode == "exact":
            entry["why"] = (f"the closest requantiser moves {moved} accumulator values by one LSB "
                            "(--requant within1 takes it)")
            continue
        if 2 * _memory_bits_requant(m, b, c) > _memory_bits_thresholds(t, c, t_in.bits):
            entry["why"] = "thresholds hold fewer bits"
            continue
        layer.op = "Requant"
        layer.attrs = dict(channels=c, pixels=layer.attrs["pixels"], shift=int(s),
                           out_min=bias, out_max=bias + int(t.shape[1]), acc_bits=t_in.bits,
                           in_signed=t_in.signed)
        layer.params = dict(multiplier=m, bias=b)
        entry.update(form="requant", moved_values=int(moved), shift=int(s),
                     why="exact" if moved == 0 else "fewer bits; within one LSB")
        if moved and finn_model is not None:
            _replace_finn_thresholds(finn_model, layer.source_node, reach)
    return report


def _replace_finn_thresholds(model, node_name: str, thresholds: np.ndarray) -> None:
    node = next(n for n in model.graph.node if n.name == node_name)
    idx = 2 if len(node.input) > 2 else 1  # MVAU/VVAU (input, weights, thresholds) or Thresholding
    model.set_initializer(node.input[idx], thresholds.astype(np.float32))
