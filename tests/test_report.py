"""sw/compiler/report.py's files on the small hand-built graph of tests/test_estimate.py: the layer
table ends in a total row, flip-flops are "not estimated" (null) rather than 0, and the plot
is one page of fixed size whatever the number of layers."""

from __future__ import annotations

import json

from PIL import Image

from sw.compiler.boards import get_board
from sw.compiler.estimate import estimate, totals
from sw.compiler.report import write_report
from test_estimate import small_graph  # the same 3-layer graph
from sw.compiler.folding import apply_folding


def test_total_row_no_flip_flop_zero_and_a_one_page_plot(tmp_path):
    g = apply_folding(small_graph(), {"MVAU_0": {"PE": 4, "SIMD": 4}, "Defaults": {}})
    est = estimate(g)
    t = totals(est, 100.0)
    write_report(g, est, get_board("pynq-z2"), 100.0, tmp_path)
    md = (tmp_path / "estimates.md").read_text()
    assert (f"| **total** (3 layers) | | | II {t['ii_cycles']:,} | {t['macs']:,} | | {t['bram18']} "
            f"| {t['lutram_luts']:,} | {t['uram']} | {t['luts']:,} | {t['dsps']} | | | 0 |") in md
    j = json.loads((tmp_path / "estimates.json").read_text())
    assert j["totals"]["ffs"] is None
    # 12 x 9 inches at 110 dpi, as for a 166-layer detector
    assert Image.open(tmp_path / "estimates.png").size == (1320, 990)
