"""Golden integer model: the single definition of the bits of every hardware layer.

Every function here takes and returns integer numpy arrays (int64) and is exact. The RTL of
each layer in ``hw/`` must reproduce these values bit for bit, in the stream order stated
here. Layout contract (docs/contracts.md): NHWC, pixels in raster order, channels innermost; a stream
of ``C`` channels with ``L`` lanes carries one pixel as ``C/L`` beats, lane ``j`` of beat ``b``
holding channel ``b*L + j``.

Window streams (sliding window generator and deformable sampler) have two orders, as in
FINN's ConvolutionInputGenerator:

* standard (feeds an MVAU): per output pixel, ``K*K*C`` values in order ``(ky, kx, c)``;
  beats of ``SIMD`` channels.
* depthwise (feeds a VVAU): per output pixel, ``(C/PE, K*K, PE)``: for each channel fold,
  every kernel position in raster order, each a beat of ``PE`` channels.

The golden functions return window streams with the last axes in stream order; flattening
the array gives the exact sequence of values on the wire.
"""

from __future__ import annotations

import numpy as np


class GoldenModelError(ValueError):
    """A golden-model layer was given an input that breaks its contract."""


def _check_int(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise GoldenModelError(f"{name}: expected integer values, got dtype {a.dtype}")
    return a.astype(np.int64)


def conv_output_dim(in_dim: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output size (pixels) of a convolution window along one axis (PyTorch's formula)."""
    return (in_dim + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def sliding_window(
    x: np.ndarray,
    kernel: int,
    stride: int = 1,
    pad: int = 0,
    dilation: int = 1,
    depthwise: bool = False,
    lanes: int = 1,
) -> np.ndarray:
    """Sliding window generator (im2col on a stream).

    Args:
        x: input feature map, shape ``[H, W, C]`` (NHWC without N), integers.
        kernel: K (square kernel).
        stride, pad, dilation: in pixels; padding reads as 0 (zero point is 0).
        depthwise: choose the depthwise stream order (see module docstring).
        lanes: PE of the consuming VVAU (depthwise order only; ``C % lanes == 0``).

    Returns:
        standard: ``[OH, OW, K*K*C]`` with the last axis in order ``(ky, kx, c)``;
        depthwise: ``[OH, OW, C/lanes, K*K, lanes]``.

    Raises:
        GoldenModelError: on shape or folding errors.
    """
    x = _check_int("sliding_window input", x)
    if x.ndim != 3:
        raise GoldenModelError(f"sliding_window expects [H, W, C], got shape {x.shape}")
    h, w, c = x.shape
    oh = conv_output_dim(h, kernel, stride, pad, dilation)
    ow = conv_output_dim(w, kernel, stride, pad, dilation)
    if oh <= 0 or ow <= 0:
        raise GoldenModelError(f"sliding_window: kernel {kernel} does not fit input {h}x{w}")
    xp = np.zeros((h + 2 * pad, w + 2 * pad, c), dtype=np.int64)
    xp[pad : pad + h, pad : pad + w] = x
    win = np.empty((oh, ow, kernel, kernel, c), dtype=np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            ys = ky * dilation
            xs = kx * dilation
            win[:, :, ky, kx, :] = xp[ys : ys + stride * (oh - 1) + 1 : stride,
                                      xs : xs + stride * (ow - 1) + 1 : stride, :]
    if not depthwise:
        return win.reshape(oh, ow, kernel * kernel * c)
    if c % lanes:
        raise GoldenModelError(f"sliding_window: channels {c} not divisible by lanes {lanes}")
    win = win.reshape(oh, ow, kernel * kernel, c // lanes, lanes)
    return win.transpose(0, 1, 3, 2, 4).copy()


def deformable_sample(x: np.ndarray, offsets: np.ndarray, max_offset: int, lanes: int = 1) -> np.ndarray:
    """Hardware-friendly deformable sampling (docs/contracts.md default form, CoDeNet FPGA'21).

    For output pixel ``(y, x)`` with integer offset ``d = offsets[y, x]`` in ``[0, N]``, the
    3x3 taps are ``(y + (ky-1)*d, x + (kx-1)*d)`` for ``ky, kx`` in 0..2; taps outside the
    image read 0. ``d = 0`` samples the centre nine times, ``d = 1`` is a plain 3x3.

    Args:
        x: feature map ``[H, W, C]``.
        offsets: ``[H, W]`` integers in ``[0, max_offset]``.
        max_offset: N (7 in CoDeNet); the hardware line buffer holds ``2N+2`` rows.
        lanes: PE of the consuming VVAU.

    Returns:
        ``[H, W, C/lanes, 9, lanes]`` in depthwise window order.

    Raises:
        GoldenModelError: offsets out of range or shapes that do not agree.
    """
    x = _check_int("deformable_sample input", x)
    offsets = _check_int("deformable_sample offsets", offsets)
    if x.ndim != 3 or offsets.shape != x.shape[:2]:
        raise GoldenModelError(
            f"deformable_sample: features {x.shape} and offsets {offsets.shape} disagree"
        )
    if offsets.min() < 0 or offsets.max() > max_offset:
        raise GoldenModelError(
            f"deformable_sample: offsets must lie in [0, {max_offset}], got "
            f"[{offsets.min()}, {offsets.max()}]"
        )
    h, w, c = x.shape
    if c % lanes:
        raise GoldenModelError(f"deformable_sample: channels {c} not divisible by lanes {lanes}")
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    win = np.zeros((h, w, 9, c), dtype=np.int64)
    for ky in range(3):
        for kx in range(3):
            ty = ys + (ky - 1) * offsets
            tx = xs + (kx - 1) * offsets
            inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
            vals = x[np.clip(ty, 0, h - 1), np.clip(tx, 0, w - 1)]
            win[:, :, ky * 3 + kx] = np.where(inside[..., None], vals, 0)
    win = win.reshape(h, w, 9, c // lanes, lanes)
    return win.transpose(0, 1, 3, 2, 4).copy()


def mvau(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Matrix-vector activation unit without activation: integer accumulators.

    Args:
        x: ``[..., MW]`` input vectors (for a convolution, the standard window order
            ``(ky, kx, c)``).
        weights: ``[MH, MW]`` signed integers (for a convolution, torch's ``[oc, ic, ky, kx]``
            transposed to ``[oc, ky, kx, ic]`` and flattened).

    Returns:
        ``[..., MH]`` accumulators (int64; the hardware width is the compiler's
        ``accumulator_bits``).
    """
    x = _check_int("mvau input", x)
    weights = _check_int("mvau weights", weights)
    if weights.ndim != 2 or x.shape[-1] != weights.shape[1]:
        raise GoldenModelError(f"mvau: input {x.shape} does not match weights {weights.shape}")
    return x @ weights.T


def vvau(windows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Vector-vector activation unit (depthwise convolution) without activation.

    Args:
        windows: ``[..., C/PE, K*K, PE]`` depthwise window stream.
        weights: ``[C, K*K]`` signed integers (torch's ``[C, 1, ky, kx]`` flattened).

    Returns:
        ``[..., C]`` accumulators, channel ``f*PE + j`` from fold ``f`` lane ``j``.
    """
    windows = _check_int("vvau input", windows)
    weights = _check_int("vvau weights", weights)
    folds, kk, pe = windows.shape[-3:]
    if weights.shape != (folds * pe, kk):
        raise GoldenModelError(
            f"vvau: windows (C/PE={folds}, K*K={kk}, PE={pe}) do not match weights {weights.shape}"
        )
    w = weights.reshape(folds, pe, kk).transpose(0, 2, 1)  # [C/PE, K*K, PE]
    acc = (windows * w).sum(axis=-2)  # [..., C/PE, PE]
    return acc.reshape(*acc.shape[:-2], folds * pe)


def requantize(acc: np.ndarray, multiplier: np.ndarray, bias: np.ndarray, shift: int,
               out_min: int, out_max: int) -> np.ndarray:
    """Per-channel integer requantisation: ``clamp((acc * M[c] + B[c]) >> shift, lo, hi)``.

    ``>>`` is an arithmetic shift (floor division by ``2**shift``); rounding to nearest is
    folded into ``B`` (it holds ``2**(shift-1)``). This is how batch norm, bias, the
    per-channel weight scale and the activation scale of one layer reach the hardware.

    Args:
        acc: ``[..., C]`` accumulators.
        multiplier: ``[C]`` non-negative integers M.
        bias: ``[C]`` integers B (already scaled by M).
        shift: S, bits.
        out_min, out_max: output range, e.g. 0..255 for uint8, -128..127 for int8,
            0..N for deformable offsets.

    Returns:
        ``[..., C]`` integers in ``[out_min, out_max]``.
    """
    acc = _check_int("requantize input", acc)
    multiplier = _check_int("requantize multiplier", multiplier)
    bias = _check_int("requantize bias", bias)
    if multiplier.shape != (acc.shape[-1],) or bias.shape != (acc.shape[-1],):
        raise GoldenModelError(
            f"requantize: {acc.shape[-1]} channels but multiplier {multiplier.shape}, "
            f"bias {bias.shape}"
        )
    # int64 is exact while |acc*M + B| < 2**63; the compiler bounds acc_bits + mul_bits.
    y = (acc * multiplier + bias) >> shift
    return np.clip(y, out_min, out_max)


def thresholding(x: np.ndarray, thresholds: np.ndarray, out_bias: int = 0) -> np.ndarray:
    """FINN's MultiThreshold / Thresholding: ``y[..., c] = out_bias + #{i : x[..., c] >= T[c, i]}``.

    Exactly qonnx's ``multithreshold(x, T, out_bias=out_bias, channels_last=True)``
    (``qonnx.custom_op.general.multithreshold``: ``>=``, not ``>``; a threshold equal to the
    input counts), on integers. The rows need not be sorted here (counting does not care);
    the hardware (:class:`hw.thresholding.Thresholding`) needs them sorted.

    Args:
        x: ``[..., C]`` integers (accumulators or features, channels last).
        thresholds: ``[C, N]`` integers (one row per channel) or ``[1, N]`` (one set shared by
            every channel).
        out_bias: FINN's ``ActVal`` / ``out_bias``: 0 for unsigned outputs, ``-2**(b-1)`` for
            a signed ``b``-bit output.

    Returns:
        ``[..., C]`` integers in ``[out_bias, out_bias + N]``.

    Raises:
        GoldenModelError: non-integer values, thresholds not 2-D, or a row count that is
            neither ``C`` nor 1.
    """
    x = _check_int("thresholding input", x)
    t = _check_int("thresholding thresholds", thresholds)
    if t.ndim != 2 or t.shape[0] not in (1, x.shape[-1]):
        raise GoldenModelError(f"thresholding: thresholds must be [C, N] or [1, N] with "
                               f"C={x.shape[-1]}, got shape {t.shape}")
    return int(out_bias) + np.count_nonzero(x[..., None] >= t, axis=-1).astype(np.int64)


# ------------------------------------------------------------------------------------------
# detector layers beyond the slice (docs/detector_contract.md section 2)
# ------------------------------------------------------------------------------------------

def _check_frame(name: str, x: np.ndarray) -> np.ndarray:
    x = _check_int(name, x)
    if x.ndim != 3:
        raise GoldenModelError(f"{name}: expected a frame [H, W, C], got shape {x.shape}")
    return x


def maxpool(windows: np.ndarray) -> np.ndarray:
    """Max pooling on the depthwise window stream of :func:`sliding_window`.

    The pooling geometry (kernel, stride, pad) is that of the sliding window that produced
    ``windows``; padding taps read 0, so the pooled input must be unsigned (post-ReLU), where
    a 0 never wins over a real value and the result equals ``nn.MaxPool2d`` (which pads with
    -inf).

    Args:
        windows: ``[OH, OW, C/L, K*K, L]`` (``sliding_window(x, K, S, P, depthwise=True,
            lanes=L)``).

    Returns:
        ``[OH, OW, C]``: channel ``f*L + j`` is the max over the ``K*K`` taps of fold ``f``,
        lane ``j``.

    Raises:
        GoldenModelError: ``windows`` is not 5-D.
    """
    windows = _check_int("maxpool input", windows)
    if windows.ndim != 5:
        raise GoldenModelError(
            f"maxpool expects depthwise windows [OH, OW, C/L, K*K, L], got shape {windows.shape}")
    oh, ow, folds, _, lanes = windows.shape
    return windows.max(axis=3).reshape(oh, ow, folds * lanes)


def upsample_nearest(x: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upsampling by an integer factor (``nn.Upsample(mode="nearest")``).

    Args:
        x: ``[H, W, C]``.
        factor: f >= 1.

    Returns:
        ``[H*f, W*f, C]`` with ``out[y, x] = in[y // f, x // f]``.

    Raises:
        GoldenModelError: factor < 1 or not a frame.
    """
    x = _check_frame("upsample_nearest input", x)
    if int(factor) != factor or factor < 1:
        raise GoldenModelError(f"upsample_nearest: factor must be an integer >= 1, got {factor}")
    return np.repeat(np.repeat(x, factor, axis=0), factor, axis=1)


def concat(xs) -> np.ndarray:
    """Channel concatenation (``torch.cat(xs, 1)`` in NCHW = last axis in NHWC).

    Args:
        xs: frames ``[H, W, C_k]`` with equal ``H, W``.

    Returns:
        ``[H, W, sum(C_k)]``.

    Raises:
        GoldenModelError: fewer than two inputs or spatial shapes that differ.
    """
    xs = [_check_frame("concat input", x) for x in xs]
    if len(xs) < 2:
        raise GoldenModelError(f"concat needs at least 2 inputs, got {len(xs)}")
    if len({x.shape[:2] for x in xs}) != 1:
        raise GoldenModelError(f"concat: spatial shapes differ: {[x.shape for x in xs]}")
    return np.concatenate(xs, axis=-1)


def channel_split(x: np.ndarray, sizes) -> list[np.ndarray]:
    """Split along channels (``torch.split(x, sizes, 1)``; ``x.chunk(2, 1)`` for equal halves).

    Args:
        x: ``[H, W, C]``.
        sizes: channel counts ``s_k > 0`` with ``sum(sizes) == C``.

    Returns:
        ``[x[..., :s0], x[..., s0:s0+s1], ...]``.

    Raises:
        GoldenModelError: sizes that do not add up to ``C`` or are not positive.
    """
    x = _check_frame("channel_split input", x)
    sizes = [int(s) for s in sizes]
    if any(s <= 0 for s in sizes) or sum(sizes) != x.shape[-1]:
        raise GoldenModelError(
            f"channel_split: sizes {sizes} must be positive and add up to C={x.shape[-1]}")
    bounds = np.cumsum([0] + sizes)
    return [x[..., a:b].copy() for a, b in zip(bounds[:-1], bounds[1:])]


def channel_shuffle(x: np.ndarray, groups: int) -> np.ndarray:
    """ShuffleNet channel shuffle: ``out[..., k*g + j] = in[..., j*(C/g) + k]``.

    Equals torch's ``x.view(n, g, C/g, h, w).transpose(1, 2).reshape(n, C, h, w)`` in NHWC.

    Args:
        x: ``[H, W, C]``.
        groups: g; ``C % g == 0``.

    Returns:
        ``[H, W, C]``.

    Raises:
        GoldenModelError: ``C`` not divisible by ``groups``.
    """
    x = _check_frame("channel_shuffle input", x)
    h, w, c = x.shape
    if groups < 1 or c % groups:
        raise GoldenModelError(f"channel_shuffle: channels {c} not divisible by groups {groups}")
    return x.reshape(h, w, groups, c // groups).transpose(0, 1, 3, 2).reshape(h, w, c).copy()


def add(a: np.ndarray, b: np.ndarray, out_bits: int, signed: bool) -> np.ndarray:
    """Element-wise saturating add: ``clip(a + b, lo, hi)`` of an ``out_bits`` integer type.

    Both inputs carry the same scale (the contract requires one shared quantizer), so the
    integer sum is the sum of the real values.

    Args:
        a, b: same shape, e.g. ``[H, W, C]``.
        out_bits: output width in bits.
        signed: output two's complement (``[-2**(n-1), 2**(n-1)-1]``) or unsigned
            (``[0, 2**n - 1]``).

    Returns:
        same shape as ``a``.

    Raises:
        GoldenModelError: shapes differ or ``out_bits < 1``.
    """
    a = _check_int("add input a", a)
    b = _check_int("add input b", b)
    if a.shape != b.shape:
        raise GoldenModelError(f"add: input shapes differ: {a.shape} vs {b.shape}")
    if out_bits < 1:
        raise GoldenModelError(f"add: out_bits must be >= 1, got {out_bits}")
    lo, hi = (-(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1) if signed else (0, (1 << out_bits) - 1)
    return np.clip(a + b, lo, hi)
