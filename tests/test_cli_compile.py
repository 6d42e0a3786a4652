"""``deflow compile`` on the slice network: automatic folding per board, a target no folding
meets (refused, nothing written), a folding file with Verilog, whole-or-nothing output."""

from __future__ import annotations

import json

import pytest

from sw.compiler.autofold import choose_folding
from sw.compiler.boards import BOARDS, get_board
from sw.flows.cli import DEFAULT_SLICE_FOLDING, main
from sw.compiler.estimate import estimate, totals
from hw.graph import HWGraph
from sw.compiler.lower import lower_qonnx

REPORT = {"estimates.json", "estimates.md", "estimates.png", "folding.json", "hw_graph.json",
          "frontend.json", "finn_hw.onnx", "host_epilogue.onnx"}


@pytest.fixture(scope="module")
def slice_graph(slice_onnx):
    return lower_qonnx(slice_onnx)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_compile_for_each_board(slice_onnx, slice_graph, board, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", str(slice_onnx), "--board", board, "--no-verilog", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == REPORT
    b = get_board(board)
    cfg = json.loads((out / "folding.json").read_text())
    assert cfg == json.loads(json.dumps(choose_folding(slice_graph, b)))  # fastest fitting, FINN format
    assert "Defaults" in cfg and all({"PE", "SIMD", "resType", "ram_style"} <= set(v)
                                     for k, v in cfg.items() if k.startswith(("MVAU", "VVAU")))
    g = HWGraph.load(out / "hw_graph.json")
    t = totals(estimate(g), b.fabric_mhz)
    rep = json.loads((out / "estimates.json").read_text())
    assert rep["board"] == b.name and rep["clock_mhz"] == b.fabric_mhz and rep["fits"] is True
    assert rep["totals"]["ii_cycles"] == t["ii_cycles"] and rep["totals"]["luts"] == t["luts"]
    assert rep["totals"]["fps"] == pytest.approx(b.fabric_mhz * 1e6 / t["ii_cycles"])
    assert rep["totals"]["macs"] == 1_966_080  # the slice's MACs per frame, folding-independent
    assert "fits: yes" in capsys.readouterr().out


def test_fps_target_and_clock_are_used(slice_onnx, tmp_path):
    out = tmp_path / "o"
    assert main(["compile", str(slice_onnx), "--board", "pynq-z2", "--fps", "2000", "--clock-mhz", "50",
                 "--no-verilog", "--out", str(out)]) == 0
    rep = json.loads((out / "estimates.json").read_text())
    assert rep["clock_mhz"] == 50.0
    # 50 MHz / 2000 fps = 25,000 cycles: every layer's FINN cycles stay below (fill latency aside)
    assert rep["totals"]["fps"] >= 1900
    assert max(x["cycles"] for x in rep["layers"]) < 25_000 * 1.05


def test_unreachable_fps_is_refused_and_nothing_is_written(slice_onnx, tmp_path, capsys):
    out = tmp_path / "never"
    rc = main(["compile", str(slice_onnx), "--board", "zcu104", "--fps", "1e6", "--no-verilog",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "bottleneck" in err and "rule: every layer's cycles <= clock / fps" in err
    assert "layer '" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_out_is_replaced_only_on_success(slice_onnx, tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "marker").write_text("old")
    assert main(["compile", str(slice_onnx), "--board", "kv260", "--fps", "1e7", "--no-verilog",
                 "--out", str(out)]) == 2
    assert (out / "marker").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    assert main(["compile", str(slice_onnx), "--board", "kv260", "--no-verilog", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == REPORT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_folding_file_with_verilog(slice_onnx, tmp_path):
    out = tmp_path / "v"
    assert main(["compile", str(slice_onnx), "--folding", str(DEFAULT_SLICE_FOLDING), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == REPORT | {"deflow_top.v", "fifo_depths.json",
                                                         "fifo_sizing.json"}
    assert "module deflow_top" in (out / "deflow_top.v").read_text()
    # every inter-layer FIFO sized analytically (sw.compiler.fifo_analytic), the offsets FIFO of the
    # deformable sampler's reconvergent path deeper than the default 2
    depths = json.loads((out / "fifo_depths.json").read_text())
    sizing = json.loads((out / "fifo_sizing.json").read_text())
    assert sizing["method"] == "analytical" and sizing["model_interval"] == 9216
    g = HWGraph.load(out / "hw_graph.json")
    offsets = next(x for x in g.layers if x.op == "DeformableSampler").inputs[1]
    assert depths[offsets] == 191 and min(depths.values()) >= 2
    assert set(depths) == {t for x in g.layers for t in x.inputs if t != g.input}
    cfg = json.loads(DEFAULT_SLICE_FOLDING.read_text())
    rep = json.loads((out / "estimates.json").read_text())
    assert rep["board"] == "ultra96v2" and rep["folding_config"] == cfg
    g = HWGraph.load(out / "hw_graph.json")
    for name, f in cfg.items():
        if name != "Defaults":
            assert all(g.layer(name).folding[k] == v for k, v in f.items())


@pytest.mark.parametrize("args, msg", [
    (["--folding", "F", "--fps", "10"], "cannot be combined with --folding"),
    ([], "needs a folding"),
    (["--board", "virtex"], "unknown board 'virtex'"),
])
def test_bad_arguments_are_refused(slice_onnx, tmp_path, capsys, args, msg):
    out = tmp_path / "x"
    assert main(["compile", str(slice_onnx), *args, "--no-verilog", "--out", str(out)]) == 2
    assert msg in capsys.readouterr().err and not out.exists()
