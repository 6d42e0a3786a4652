"""sw.flows.bench: a quick benchmark of the slice network (real export, real RTL simulation, no mocks).

The quick run streams two 64x64 VOC val frames through the Verilator-simulated accelerator
(FIFO sizing run + sized run), so the per-layer rows carry real measured MAC-busy cycles; the
computed columns are checked against :mod:`sw.compiler.estimate` exactly.
"""

from __future__ import annotations

import json

import pytest

from sw.flows import bench


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = bench.main(["--quick", "--configs", "slice", "--no-accuracy", "--no-yosys", "--out", str(out),
                     "--onnx-cache", str(out / "onnx")])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


def test_outputs_written(quick):
    out, r = quick
    for f in ("results.json", "results.md", "fps.png", "layers_slice.png"):
        assert (out / f).stat().st_size > 0, f
    assert not list(out.glob("*.tmp*"))
    md = (out / "results.md").read_text()
    assert "26.9" in md and "VOC 2007 test" in md and "projected" in md and "measured" in md


def test_board_row_is_the_compilers_fastest_folding(quick):
    from sw.compiler.autofold import choose_folding
    from sw.compiler.boards import get_board
    from sw.compiler.estimate import estimate, totals
    from sw.compiler.folding import apply_folding
    from sw.compiler.lower import HW_REQUANT, lower_qonnx

    out, r = quick
    assert r["quick"] and r["clock_mhz"] == 200.0 and r["configs"] == ["slice"]
    (row,) = r["boards"]
    assert (row["config"], row["board"]) == ("slice", "ultra96v2")
    graph = lower_qonnx(out / "onnx" / "slice.onnx", requant=HW_REQUANT)
    g = apply_folding(graph, choose_folding(graph, get_board("ultra96v2"), clock_mhz=200.0))
    t = totals(estimate(g), 200.0)
    assert row["ii_cycles"] == t["ii_cycles"] and row["bottleneck"] == t["bottleneck"]
    assert row["fps_projected"] == round(200e6 / t["ii_cycles"], 2)
    assert row["estimated"]["LUT"]["used"] == t["luts"] and row["estimated"]["DSP"]["available"] == 360
    assert row["weight_bits"] == t["weight_bits"]
    assert row["weight_bram18"] + row["buffer_bram18"] == t["bram18"]
    assert row["yosys"] == {"status": "skipped (--no-yosys)"}
    assert r["accuracy"] == {"status": "skipped (--no-accuracy)"}


def test_rtl_layers_match_estimates_and_measurements(quick):
    from sw.compiler.estimate import bottleneck, estimate
    from sw.compiler.folding import apply_folding
    from sw.compiler.lower import HW_REQUANT, lower_qonnx

    out, r = quick
    s = r["rtl"]["slice"]
    g = apply_folding(lower_qonnx(out / "onnx" / "slice.onnx", requant=HW_REQUANT), s["folding"])
    est = estimate(g)
    assert s["expected_ii"] == bottleneck(est).cycles
    m = s["measured"]
    assert m["bit_exact"] and m["mismatches"] == [0, 0, 0] and len(m["cycles_per_frame"]) == 3
    assert m["harness"] == "native" and s["design"] == "simulation"
    assert m["steady_frame"] == 1 and m["frame_interval"] == m["cycles_per_frame"][1] > 0
    # FIFOs sized analytically (sw.compiler.fifo_analytic): the RTL runs at the modelled interval
    assert m["sizing_method"] == "analytical" and m["sizing_fallback"] is None
    assert m["model_interval"] == m["frame_interval"] and m["fifo_bits"] > 0
    # the pipeline cannot beat its slowest layer's stall-free MAC count
    assert m["frame_interval"] >= max(l["ideal_cycles"] or 0 for l in s["layers"])
    assert [l["name"] for l in s["layers"]] == [e.name for e in est]
    compute = 0
    for l, e, layer in zip(s["layers"], est, g.layers):
        assert l["expected_cycles"] == e.cycles and l["macs"] == e.macs
        if e.op in ("MVAU", "VVAU"):
            compute += 1
            lanes = layer.folding.get("PE", 1) * layer.folding.get("SIMD", 1)
            assert l["ideal_cycles"] == e.macs // lanes and e.macs % lanes == 0
            assert l["rtl_busy_cycles"] == m["mac_busy"][e.name]
            assert 0 < l["rtl_busy_cycles"] <= m["frame_interval"]
            assert l["utilisation"] == round(l["rtl_busy_cycles"] / m["frame_interval"], 4)
            # one MAC step per busy cycle: the run's frame intervals are contiguous and hold
            # all the work, so the busy cycles over all frames are exactly frames * MACs/(PE*SIMD)
            assert sum(f[e.name] for f in m["mac_busy_per_frame"]) == 3 * l["ideal_cycles"]
            assert l["rtl_busy_cycles"] == l["ideal_cycles"]  # per frame, averaged over the run
        else:
            assert l["ideal_cycles"] is None and l["rtl_busy_cycles"] is None
    assert compute >= 3
    t = r["tools"]["slice"]
    assert t["rtl_sim_cycles_per_s"] > 0 and t["verilator_build_s"] >= 0


def test_target_check_names_the_limiting_layer():
    row = {"config": "codenet256", "board": "ultra96v2", "fits": True, "fps_projected": 100.0,
           "ii_cycles": 2_000_000, "bottleneck": "MVAU_7", "yosys": {"status": "timed out after 900 s"}}
    t = bench.target_check({"boards": [row], "target_compiler": "refused: DRAM"})
    assert t["compiler_at_target"] == "refused: DRAM"
    assert t["status"].startswith("not met: 100.0 fps projected < 135; limited by layer MVAU_7")
    assert "estimates" in t["fits_by"]
    row |= {"fps_projected": 150.0, "yosys": {"status": "ok", "utilisation": {
        "LUT": {"used": 80_000, "available": 70_560}, "DSP": {"used": 1, "available": 360},
        "BRAM36": {"used": 1, "available": 216}}}}
    t = bench.target_check({"boards": [row]})
    assert t["status"].endswith("does not fit") and t["fits_by"] == "by Yosys"
    assert bench.target_check({"boards": []})["status"].startswith("not evaluated")


def test_yosys_result_is_reused_only_for_the_same_verilog_and_board(tmp_path, monkeypatch):
    import sw.compiler.resources
    from sw.compiler.folding import apply_folding
    from test_estimate import small_graph

    g = apply_folding(small_graph(), {"MVAU_0": {"PE": 1, "SIMD": 1}})
    first = bench.run_yosys(g, "ultra96v2", tmp_path, 600)
    assert first["status"] == "ok" and first["cached"] is False and first["counts"]["LUT"] > 0

    def no_yosys(*args, **kwargs):
        raise sw.compiler.resources.SynthesisError("yosys must not run again")

    monkeypatch.setattr(sw.compiler.resources, "report", no_yosys)
    again = bench.run_yosys(g, "ultra96v2", tmp_path, 600)
    assert again["cached"] is True and again["counts"] == first["counts"]
    assert bench.run_yosys(g, "zcu104", tmp_path, 600)["status"].startswith("failed: yosys must")
    other = apply_folding(small_graph(), {"MVAU_0": {"PE": 2, "SIMD": 1}})
    assert bench.run_yosys(other, "ultra96v2", tmp_path, 600)["status"].startswith("failed")


def test_target_check_prefers_the_target_design():
    fastest = {"config": "codenet256", "board": "ultra96v2", "fits": True, "fps_projected": 230.0,
               "ii_cycles": 869_565, "bottleneck": "MVAU_3", "yosys": {"status": "not run"}}
    target = dict(fastest, fps_projected=140.3, ii_cycles=1_425_414, bottleneck="MVAU_1",
                  yosys={"status": "ok", "utilisation": {
                      "LUT": {"used": 60_000, "available": 70_560}, "DSP": {"used": 227, "available": 360},
                      "BRAM36": {"used": 200, "available": 216}}})
    t = bench.target_check({"boards": [fastest], "target_design": target})
    assert t["design"] == "target folding" and t["status"] == "met" and t["fits_by"] == "by Yosys"
    assert t["fps_projected"] == 140.3 and t["limiting_layer"] == "MVAU_1"
    target["yosys"]["utilisation"]["BRAM36"]["used"] = 217
    assert bench.target_check({"boards": [fastest], "target_design": target})["status"].endswith(
        "does not fit")


def test_slowest_layers_alone_in_rtl_measure_their_expected_cycles(tmp_path):
    # a 1x1 conv (16 -> 16 channels, 8x8 pixels) at PE=2, SIMD=2: 16*16*64/4 = 4,096 MAC steps
    # a frame; the compiler's cycles add the MVAU's 6-cycle latency (hw.mvau expected_cycles).
    # Alone in Verilator on two frames, bit-exact: the first frame takes exactly the expected
    # cycles, the steady-state interval the MAC steps
    import numpy as np

    from sw.compiler.folding import apply_folding
    from test_autofold_memory import pointwise_graph
    from test_estimate import small_graph

    g = apply_folding(pointwise_graph(c=16, hw=8), {"MVAU_0": {"PE": 2, "SIMD": 2}})
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, size=(8, 8, 16)).astype(np.uint8) for _ in range(2)]
    (row,) = bench.simulate_slowest_layers(g, frames, top_k=1, build_root=tmp_path)
    assert row["layer"] == "MVAU_0" and row["expected_cycles"] == 4102
    assert row["mismatches"] == [0, 0] and row["cycles_per_frame"] == [4102, 4096]
    assert row["steady_cycles"] == 4096
    # a layer fed by a sliding window (its golden layout is not [H, W, C]) is skipped, named
    g2 = apply_folding(small_graph(), {"MVAU_0": {"PE": 1, "SIMD": 1}})
    rows = bench.simulate_slowest_layers(g2, [np.zeros((8, 8, 4), np.uint8)] * 2, top_k=1,
                                         build_root=tmp_path)
    assert rows[0]["layer"] == "MVAU_0" and rows[0]["skipped"] == "a window stream"


def test_markdown_lists_the_slowest_layer_runs(quick):
    _, r = quick
    r = dict(r, layer_rtl={"codenet256 target 135 fps, ultra96v2": [
        {"layer": "MVAU_1", "op": "MVAU", "folding": {"PE": 1, "SIMD": 4}, "expected_cycles": 1_425_414,
         "cycles_per_frame": [1_425_414, 1_425_408], "steady_cycles": 1_425_408, "mismatches": [0, 0]},
        {"layer": "DeformableSampler_0", "op": "DeformableSampler", "folding": {}, "expected_cycles": 9,
         "skipped": "2 input / 1 output streams"}]})
    md = bench.format_markdown(r)
    assert ("| codenet256 target 135 fps, ultra96v2 | MVAU_1 | MVAU | PE=1, SIMD=4 | 1,425,414 "
            "| 1,425,414, 1,425,408 | True |") in md
    assert "| DeformableSampler_0 | DeformableSampler |  | 9 | 2 input / 1 output streams | - |" in md


def test_yosys_runs_in_a_worker_beside_the_simulations(tmp_path, monkeypatch):
    # --jobs 2: every Yosys design is queued to one worker thread at the start, and the
    # results files carry what it returned once the run ends
    import threading

    seen = []

    def fake_yosys(graph, board_name, out_dir, timeout_s):
        seen.append((threading.current_thread() is threading.main_thread(), board_name))
        used = {"LUT": 100 * len(graph.layers), "DSP": 1, "BRAM36": 2}
        return {"status": "ok", "counts": used, "utilisation": {
            k: {"used": v, "available": 1000, "percent": v / 10} for k, v in used.items()}}

    monkeypatch.setattr(bench, "run_yosys", fake_yosys)
    out = tmp_path / "b"
    assert bench.main(["--quick", "--configs", "slice", "--no-accuracy", "--sim-configs",
                       "--layer-sim-configs", "--jobs", "2", "--out", str(out),
                       "--onnx-cache", str(tmp_path / "onnx")]) == 0
    (row,) = json.loads((out / "results.json").read_text())["boards"]
    assert seen == [(False, "ultra96v2")]
    assert row["yosys"]["status"] == "ok" and row["yosys"]["counts"]["LUT"] > 1000
    assert f"{row['yosys']['counts']['LUT']:,} (" in (out / "results.md").read_text()


def _row(config, board, lut=None, ii=None):
    """A real board row of a small graph (``ii``: pretend another folding), with Yosys counts."""
    from test_estimate import small_graph

    row, _, _ = bench.board_row(small_graph(), board, 200.0)
    row = {"config": config} | row | ({"ii_cycles": ii} if ii else {})
    if lut is not None:
        util = {k: {"used": lut, "available": 10 * lut, "percent": 10.0} for k in ("LUT", "DSP", "BRAM36")}
        row["yosys"] = {"status": "ok", "counts": {"LUT": lut}, "utilisation": util, "fits": True}
    return row


def test_merge_keeps_earlier_measurements_and_replaces_what_this_run_measured():
    earlier = {"configs": ["small", "codenet512"], "boards": [_row("small", "ultra96v2", 111),
               _row("codenet512", "ultra96v2", 222), _row("codenet512", "zcu104", 333)],
               "rtl": {"small": {"measured": {"frame_interval": 98_304}}},
               "tools": {"codenet512": {"lower_s": 50.0, "fold_zcu104_s": 2.0}},
               "accuracy": {"float": {"voc6_map50": 10.01}}, "started": "earlier"}
    # a --merge run of codenet512 alone: same folding on ultra96v2 (no Yosys this time), another
    # folding on zcu104, its first whole-pipeline measurement, accuracy skipped
    run = {"configs": ["codenet512"], "boards": [_row("codenet512", "ultra96v2"),
           _row("codenet512", "zcu104", ii=2_000_000)],
           "rtl": {"codenet512": {"measured": {"frame_interval": 3_801_094}},
                   "small": {"status": "not simulated (not in --configs)"}},
           "tools": {"codenet512": {"lower_s": 53.0, "rtl_sim_s": 4000.0}},
           "accuracy": {"status": "skipped (--no-accuracy)"}, "started": "now", "args": ["--merge"]}
    data = bench.merge_results(earlier, run)
    assert data["configs"] == ["small", "codenet512"]
    assert data["rtl"]["small"]["measured"]["frame_interval"] == 98_304
    assert data["rtl"]["codenet512"]["measured"]["frame_interval"] == 3_801_094
    assert data["tools"]["codenet512"] == {"lower_s": 53.0, "fold_zcu104_s": 2.0, "rtl_sim_s": 4000.0}
    assert data["accuracy"] == {"float": {"voc6_map50": 10.01}}
    rows = {(r["config"], r["board"]): r for r in data["boards"]}
    assert len(data["boards"]) == 3 and rows[("small", "ultra96v2")]["yosys"]["counts"]["LUT"] == 111
    assert rows[("codenet512", "ultra96v2")]["yosys"]["counts"]["LUT"] == 222
    assert rows[("codenet512", "ultra96v2")]["yosys"]["from_earlier_run"] is True
    assert rows[("codenet512", "zcu104")]["ii_cycles"] == 2_000_000  # another folding: no carry
    assert rows[("codenet512", "zcu104")]["yosys"] == {"status": "not run"}
    assert [r["started"] for r in data["runs"]] == ["earlier", "now"]
    # merging the same run again (every write of a long run) adds nothing
    assert bench.merge_results(data, run) == data


def test_merge_runs_update_the_file_on_disk(tmp_path):
    import time

    base = {"quick": False, "clock_mhz": 200.0, "rtl": {}, "tools": {}, "_t0": time.time()}
    bench.write_results(base | {"configs": ["small"], "boards": [_row("small", "ultra96v2", 111)],
                                "started": "earlier"}, tmp_path)
    run = base | {"configs": ["codenet512"], "boards": [_row("codenet512", "ultra96v2")],
                  "started": "now", "args": ["--merge"], "_merge": True}
    data = bench.write_results(run, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(data))
    assert [r["config"] for r in data["boards"]] == ["small", "codenet512"]
    md = (tmp_path / "results.md").read_text()
    assert "Merged (`--merge`) from the runs started earlier" in md and "now (--merge)" in md
    run["_merge"] = False  # without --merge the file is replaced
    assert bench.write_results(run, tmp_path)["configs"] == ["codenet512"]
    (tmp_path / "results.json").write_text("{half")
    with pytest.raises(SystemExit, match="not valid JSON"):
        bench.write_results(run | {"_merge": True}, tmp_path)


def test_simulation_folding_keeps_every_weight_on_chip():
    from sw.compiler.lower import CompileError
    from test_estimate import small_graph

    board, cfg = bench.simulation_folding(small_graph(), 100.0, 200.0)
    assert board == bench.SIM_BOARDS[0]
    assert all(v.get("mem_mode") != "external" for v in cfg.values() if isinstance(v, dict))
    with pytest.raises(CompileError, match="ultra96v2: .*zcu104: .*kv260: "):
        bench.simulation_folding(small_graph(), 1e12, 200.0)
