"""The compiler's entry point: a QONNX export of a Brevitas model to the hardware-layer graph
(:class:`hw.graph.HWGraph`), through FINN's front end (:mod:`sw.compiler.frontend`).

The chain, the rewrites deflow adds for what FINN lacks and the contract of the result are in
``docs/frontend.md``.
"""

from __future__ import annotations

from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from hw.graph import HWGraph

__all__ = ["CompileError", "lower_qonnx", "HW_REQUANT"]

# the threshold form of the designs deflow builds and measures (demo, bitstream, bench,
# estimate_all): a requantiser wherever it is at most one output LSB from the thresholds, since
# exact thresholds of the ShuffleNetV2 detectors do not fit the boards' BRAM (codenet256 on
# ZCU104: 1,524 BRAM18 of 561 even at the slowest folding); sw.compiler.threshold_form.REQUANT_MODES
HW_REQUANT = "within1"


class CompileError(ValueError):
    """The compiler refuses the model: the message names the node, its op type and the rule
    broken (or the file, for an unreadable one)."""


def lower_qonnx(model: ModelWrapper | str | Path, requant: str = "exact") -> HWGraph:
    """Lower a QONNX model (batch 1, fixed NCHW shape) to a :class:`HWGraph` through FINN's
    front end (:func:`sw.compiler.frontend.lower_model`, ``requant`` as there).

    Raises:
        CompileError: naming the node and the rule broken, for anything unsupported.
    """
    from sw.compiler.frontend import lower_model

    return lower_model(model, requant=requant).graph
