"""Thresholding or requantiser (sw/compiler/threshold_form.py): the fit is checked on every input value,
an exact one is taken by default, one that moves values by one LSB only when asked, and FINN's
thresholds then follow the requantiser so that FINN's execution stays the golden model's truth."""

from __future__ import annotations

import numpy as np
import pytest

from hw.golden import requantize, thresholding
from sw.compiler.threshold_form import choose_threshold_forms, fit_requant


def _levels_first_reached(scale: float, offset: float, n: int, lo: int, hi: int) -> np.ndarray:
    """Thresholds of y = clamp(floor(x * scale + offset)) on integers: exact, by enumeration."""
    xs = np.arange(lo, hi + 1)
    ys = np.floor(xs * scale + offset).astype(np.int64)
    return np.array([xs[np.argmax(ys >= k)] if (ys >= k).any() else hi + 1
                     for k in range(1, n + 1)])


def test_exact_requantiser_found_for_a_power_of_two_scale():
    lo, hi = -512, 511
    t = np.stack([_levels_first_reached(1 / 8, 3.5, 15, lo, hi),
                  _levels_first_reached(1 / 4, -2.0, 15, lo, hi)])
    m, b, s, reach, moved = fit_requant(t, 0, lo, hi)
    assert moved == 0
    xs = np.arange(lo, hi + 1)
    got = requantize(np.stack([xs, xs], axis=-1), m, b, s, 0, 15)
    want = thresholding(np.stack([xs, xs], axis=-1), t, 0)
    np.testing.assert_array_equal(got, want)


def test_noisy_thresholds_fit_within_one_step_and_the_moves_are_counted():
    lo, hi = -(1 << 14), (1 << 14) - 1
    t = _levels_first_reached(1 / 97.3, 11.2, 255, lo, hi)[None]
    t[0, 40] += 1  # a float32 rounding in FINN's threshold computation
    m, b, s, reach, moved = fit_requant(t, 0, lo, hi)
    assert moved >= 1 and np.abs(reach - t).max() == 1
    xs = np.arange(lo, hi + 1)[:, None]
    diff = requantize(xs, m, b, s, 0, 255) - thresholding(xs, t, 0)
    assert np.count_nonzero(diff) == moved and np.abs(diff).max() == 1
    np.testing.assert_array_equal(requantize(xs, m, b, s, 0, 255), thresholding(xs, reach, 0))


def test_one_interior_threshold_has_no_requantiser():
    assert fit_requant(np.array([[5]]), 0, 0, 255) is None


@pytest.mark.parametrize("mode,expect", [("exact", "thresholding"), ("within1", "requant"),
                                         ("never", None)])
def test_modes_on_a_graph(mode, expect):
    from hw.graph import HWGraph, HWLayer, TensorInfo

    lo, hi = -(1 << 14), (1 << 14) - 1
    t = _levels_first_reached(1 / 97.3, 11.2, 255, lo, hi)[None]
    t[0, 40] += 1
    tensors = {"a": TensorInfo("a", (2, 2, 1), 15, True, None, "acc"),
               "y": TensorInfo("y", (2, 2, 1), 8, False, 1.0)}
    g = HWGraph([HWLayer("T", "Thresholding", ["a"], ["y"], dict(channels=1, pixels=4, out_bias=0),
                         dict(thresholds=t))], tensors, "a", "y")
    report = choose_threshold_forms(g, None, mode)
    if expect is None:
        assert report == {} and g.layers[0].op == "Thresholding"
        return
    assert report["T"]["form"] == expect
    assert g.layers[0].op == ("Requant" if expect == "requant" else "Thresholding")
    if expect == "requant":
        assert report["T"]["moved_values"] >= 1


def test_unknown_mode_is_refused():
    from hw.graph import HWGraph

    with pytest.raises(ValueError, match="requantiser mode"):
        choose_threshold_forms(HWGraph([], {}, "a", "a"), None, "sometimes")
