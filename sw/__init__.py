"""deflow's software, one folder per stage:

* ``sw.compiler``: a QONNX export through FINN's front end to the hardware-layer graph, folding,
  estimates, FIFO depths, the golden model;
* ``sw.qonnx_ops``: deflow's own ONNX ops (domain ``sw.qonnx_ops``, the name exported models
  carry, so the folder keeps it);
* ``sw.runtime``: the driver of a built accelerator (PYNQ on the board, RTL simulation here);
* ``sw.flows``: what the ``deflow`` command runs (compile, demo, bitstream, bench, ...), with
  ``sw/configs`` (the slice network's folding).

RTL simulation orchestration lives beside the testbenches in ``sim/``; the hardware in ``hw/``
imports nothing from here."""

import os
from pathlib import Path


def _build_root() -> Path:
    """Where generated files go: ``$DEFLOW_BUILD_DIR``; else ``build/`` of the checkout deflow
    runs from; else (an installed wheel) ``deflow-build/`` in the working directory, never
    inside site-packages."""
    if os.environ.get("DEFLOW_BUILD_DIR"):
        return Path(os.environ["DEFLOW_BUILD_DIR"])
    repo = Path(__file__).resolve().parents[1]
    return repo / "build" if (repo / "pyproject.toml").exists() else Path.cwd() / "deflow-build"


BUILD_ROOT = _build_root()
