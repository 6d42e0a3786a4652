"""``deflow simulate FOLDER``: a compiled folder's accelerator in RTL simulation (native
Verilator testbench), every output value against the golden model, interval beside the II."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sw.flows.cli import DEFAULT_SLICE_FOLDING, main


@pytest.fixture(scope="module")
def slice_folder(slice_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "slice"
    assert main(["compile", str(slice_onnx), "--folding", str(DEFAULT_SLICE_FOLDING),
                 "--out", str(out)]) == 0
    return out


def test_simulate_json_on_a_compiled_folder(slice_folder, val_images, tmp_path, capsys):
    """The folder ``compile`` wrote (analytical FIFO depths) runs bit-exact at the modelled
    interval, within 1% of the II (about 1.5 minutes: one native Verilator build)."""
    x = tmp_path / "x.npy"
    np.save(x, np.asarray(val_images))
    capsys.readouterr()
    assert main(["simulate", str(slice_folder), "--input", str(x), "--frames", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["bit_exact"] is True and res["mismatches"] == [0, 0, 0]
    assert res["frames"] == 3 and res["ii_cycles"] == 9473
    assert res["interval_cycles"] == 9216 and res["interval_cycles"] <= 1.01 * res["ii_cycles"]
    # projected at the clock the folder was compiled for (ultra96v2's 200 MHz)
    assert res["clock_mhz"] == 200.0 and res["fps_at_clock"] == round(200e6 / 9216, 1)
    # the first frame, fill included, is the analytical model's with always-valid input
    from sw.compiler.fifo_analytic import schedule_graph
    from hw.graph import HWGraph

    _, _, ends = schedule_graph(HWGraph.load(slice_folder / "hw_graph.json"), frames=2, period=0)
    assert res["first_frame_cycles"] == ends[0] + 1
    # the same run as text (the Verilator build is cached by then)
    assert main(["simulate", str(slice_folder), "--input", str(x), "--frames", "2"]) == 0
    text = capsys.readouterr().out
    assert "bit-exact: every output value equals the golden model's" in text
    assert f"steady-state interval 9,216 cycles vs II 9,473 ({res['bottleneck']})" in text
    assert "projected 21,701.4 frames/s at 200 MHz" in text


@pytest.mark.parametrize("make, msg", [
    (lambda d, x: ["simulate", str(d / "nowhere")], "is not a folder"),
    (lambda d, x: ["simulate", str(x.parent)], "no hw_graph.json"),
    (lambda d, x: ["simulate", str(d), "--input", str(x.parent / "missing.npy")], "cannot read"),
    (lambda d, x: ["simulate", str(d), "--input", str(x)], "shape (5, 5), the accelerator takes (64, 64, 3)"),
    (lambda d, x: ["simulate", str(d), "--frames", "0"], "--frames must be >= 1"),
])
def test_bad_input_is_one_clear_line(slice_folder, tmp_path, capsys, make, msg):
    x = tmp_path / "bad.npy"
    np.save(x, np.zeros((5, 5)))
    assert main(make(slice_folder, x)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0] and err[0].startswith("deflow: error:")


def test_out_of_range_input_is_refused(slice_folder, tmp_path, capsys):
    x = tmp_path / "big.npy"
    np.save(x, np.full((64, 64, 3), 300))
    assert main(["simulate", str(slice_folder), "--input", str(x)]) == 2
    assert "outside the input type uint8 [0, 255]" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["residual_odd", "decoder_like", "mobile_like", "w8a8_plain"])
def test_compiled_foreign_models_run_at_their_ii(name, tmp_path, capsys):
    """The front end's test models (tests/foreign_models.py: residual adds, concat, max-pool,
    upsample, thresholds), compiled for the Ultra96-V2 with analytical FIFO depths: bit-exact
    on three random frames, steady interval within 1% of the II (about 2-3 minutes each)."""
    import sys

    sys.path.insert(0, "tests")
    from foreign_models import FOREIGN_MODELS, build_foreign, sample_input
    from models.export import export_qonnx

    onnx = tmp_path / f"{name}.onnx"
    export_qonnx(build_foreign(name), onnx, input_shape=FOREIGN_MODELS[name][1],
                 example_input=sample_input(name, seed=3), dynamo=False)
    out = tmp_path / "out"
    assert main(["compile", str(onnx), "--board", "ultra96v2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["simulate", str(out), "--frames", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["bit_exact"] and res["interval_cycles"] <= 1.01 * res["ii_cycles"]
    assert json.loads((out / "fifo_sizing.json").read_text())["model_interval"] == res["interval_cycles"]
