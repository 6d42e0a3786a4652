"""Golden functions of the detector's extra layers (hw/golden.py) against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hw import golden


def nchw(x):
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def nhwc(t):
    return t[0].permute(1, 2, 0).numpy().astype(np.int64)


@pytest.mark.parametrize("c,groups", [(8, 2), (12, 3), (6, 6), (4, 1)])
def test_channel_shuffle_matches_torch(rng, c, groups):
    x = rng.integers(-128, 128, size=(3, 4, c))
    t = nchw(x)
    n, _, h, w = t.shape
    ref = t.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
    got = golden.channel_shuffle(x, groups)
    np.testing.assert_array_equal(got, nhwc(ref))
    if groups == 2:
        # the contract's index formula
        assert got[0, 0, 1] == x[0, 0, c // 2]


def test_channel_shuffle_refuses():
    with pytest.raises(golden.GoldenModelError, match="divisible"):
        golden.channel_shuffle(np.zeros((2, 2, 6)), 4)


@pytest.mark.parametrize("k,s,p,lanes", [(3, 2, 1, 2), (3, 1, 1, 4), (2, 2, 0, 1)])
def test_maxpool_matches_torch(rng, k, s, p, lanes):
    x = rng.integers(0, 256, size=(9, 8, 4))
    win = golden.sliding_window(x, k, s, p, depthwise=True, lanes=lanes)
    got = golden.maxpool(win)
    ref = torch.nn.functional.max_pool2d(nchw(x).double(), k, s, p)
    np.testing.assert_array_equal(got, nhwc(ref))


def test_upsample_matches_torch(rng):
    x = rng.integers(0, 256, size=(3, 5, 4))
    for f in (1, 2, 3):
        ref = torch.nn.functional.interpolate(nchw(x).double(), scale_factor=f, mode="nearest")
        np.testing.assert_array_equal(golden.upsample_nearest(x, f), nhwc(ref))
    with pytest.raises(golden.GoldenModelError, match="factor"):
        golden.upsample_nearest(x, 0)


def test_concat_and_split_match_torch(rng):
    a = rng.integers(0, 256, size=(3, 4, 2))
    b = rng.integers(0, 256, size=(3, 4, 6))
    cat = golden.concat([a, b])
    np.testing.assert_array_equal(cat, nhwc(torch.cat([nchw(a), nchw(b)], 1)))
    parts = golden.channel_split(cat, [2, 6])
    np.testing.assert_array_equal(parts[0], a)
    np.testing.assert_array_equal(parts[1], b)
    halves = golden.channel_split(cat, [4, 4])
    for got, ref in zip(halves, nchw(cat).chunk(2, dim=1)):
        np.testing.assert_array_equal(got, nhwc(ref))
    with pytest.raises(golden.GoldenModelError, match="add up"):
        golden.channel_split(cat, [3, 4])
    with pytest.raises(golden.GoldenModelError, match="spatial"):
        golden.concat([a, b[:2]])


def test_add_saturates():
    a = np.array([[[200, 100, 0]]])
    b = np.array([[[100, 100, 5]]])
    np.testing.assert_array_equal(golden.add(a, b, 8, False), [[[255, 200, 5]]])
    s = golden.add(np.array([[[-100, 100, 3]]]), np.array([[[-100, 100, -7]]]), 8, True)
    np.testing.assert_array_equal(s, [[[-128, 127, -4]]])
    with pytest.raises(golden.GoldenModelError, match="shapes differ"):
        golden.add(a, b[..., :2], 8, False)
