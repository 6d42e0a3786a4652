"""Resource models of memories and multiplexers, shared by the op classes' ``resources``.

Sources: FINN's ``bram_estimation`` / ``uram_estimation`` / ``lut_estimation``
(``finn.custom_op.fpgadataflow.matrixvectoractivation``): a memory of ``depth`` words of
``width`` bits uses BRAM18s by the width/depth aspect ratios 16Kx1, 8Kx2, 4Kx4, 2Kx9, 1Kx18,
512x36, URAMs of 4K x 72, or ``width * ceil(depth/64)`` LUTs as LUTRAM; multiplexers from the
CLB structure of Xilinx UG474 / UG574.
"""

from __future__ import annotations

import math

#: FINN's MVAU/VVAU control-logic constant (LUTs) and LUTRAM depth threshold (words)
C0_LUTS = 300
LUTRAM_MAX_DEPTH = 128

#: memory styles of the resource models and FINN's ``ram_style`` attribute for each
MEM_STYLES = {"auto": "auto", "bram": "block", "lutram": "distributed", "uram": "ultra"}


def bram18_for(depth: int, width: int) -> int:
    """BRAM18 count of a ``depth`` x ``width``-bit memory (FINN's bram_estimation)."""
    if depth <= 0 or width <= 0:
        return 0
    if width == 1:
        return math.ceil(depth / 16384)
    if width == 2:
        return math.ceil(depth / 8192)
    if width <= 4:
        return math.ceil(depth / 4096) * math.ceil(width / 4)
    if width <= 9:
        return math.ceil(depth / 2048) * math.ceil(width / 9)
    if width <= 18 or depth > 512:
        return math.ceil(depth / 1024) * math.ceil(width / 18)
    return math.ceil(depth / 512) * math.ceil(width / 36)


def uram_for(depth: int, width: int) -> int:
    """URAM count (4K x 72 each; FINN's uram_estimation)."""
    return math.ceil(depth / 4096) * math.ceil(width / 72)


def mem_style_of(ram_style: str | None) -> str:
    """Memory style (``auto|bram|lutram|uram``) of a FINN ``ram_style`` (``auto|block|
    distributed|ultra``; ``None``: auto).

    Raises:
        ValueError: a ``ram_style`` outside FINN's four values.
    """
    if ram_style is None:
        return "auto"
    for style, finn in MEM_STYLES.items():
        if finn == ram_style:
            return style
    raise ValueError(f"ram_style must be one of {sorted(MEM_STYLES.values())}, got {ram_style!r}")


def lutram_luts_for(depth: int, width: int) -> int:
    """LUTs of a ``depth`` x ``width``-bit distributed RAM: ``width * ceil(depth/64)`` (FINN's
    ``lut_estimation`` memory term ``c2``: one 64x1 LUTRAM per bit and 64 words)."""
    return width * math.ceil(depth / 64) if depth > 0 and width > 0 else 0


def memory_cost(depth: int, width: int, style: str) -> tuple[int, int, int]:
    """(bram18, uram, lutram_luts) of one ``depth`` x ``width``-bit memory in ``style``
    auto|bram|lutram|uram (auto: LUTRAM when ``depth <= LUTRAM_MAX_DEPTH``, else BRAM, as FINN
    estimates ``auto``).

    Raises:
        ValueError: an unknown style.
    """
    if style not in MEM_STYLES:
        raise ValueError(f"memory style must be one of {list(MEM_STYLES)}, got {style!r}")
    if style == "uram":
        return 0, uram_for(depth, width), 0
    if style == "lutram" or (style == "auto" and depth <= LUTRAM_MAX_DEPTH):
        return 0, 0, lutram_luts_for(depth, width)
    return bram18_for(depth, width), 0, 0


def mux_luts(inputs: int) -> int:
    """LUTs of a one-bit ``inputs``-to-1 multiplexer on a 7-series / UltraScale fabric:
    ``ceil(n/4)`` LUT6s (a LUT6 is a 4:1 mux) whose outputs the slice's MUXF7/MUXF8 combine up
    to 16:1 without LUTs (Xilinx UG474, CLB multiplexers); above 16 inputs a further
    ``ceil(n/16)``-to-1 level, recursively. 0 for ``inputs <= 1``."""
    if inputs <= 1:
        return 0
    return math.ceil(inputs / 4) + (mux_luts(math.ceil(inputs / 16)) if inputs > 16 else 0)


def empty_resources() -> dict:
    """The resource dict of a layer with nothing in it (keys of :meth:`hw.ops.base.HWOp.resources`)."""
    return dict(bram18=0, uram=0, lutram_luts=0, luts=0, dsps=0, weight_bits=0,
                dram_bytes_per_frame=0, buffer_bits=0, ffs=0)


def pixel_buffer_resources(depth: int, width: int, mem_style: str) -> dict:
    """Resources of a pixel buffer of ``depth`` words of ``width`` bits (a line buffer or a
    ping-pong row buffer) in ``mem_style``, plus ``200 + 2*width`` LUTs of address and control
    logic; ``buffer_bits`` is its size."""
    r = empty_resources()
    r["buffer_bits"] = depth * width
    r["bram18"], r["uram"], r["lutram_luts"] = memory_cost(depth, width, mem_style)
    r["luts"] = 200 + 2 * width + r["lutram_luts"]
    return r
