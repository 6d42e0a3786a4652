# amaranth: UnusedElaboratable=no
"""hw/ops: one class per hardware op holds its folding rules, cycle models, resources, golden
execution and Amaranth build; the compiler dispatches through it, and hw/ imports nothing from
the compiler."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from hw.graph import HWGraph, HWLayer, TensorInfo
from hw.ops import OPS, UnknownOpError, op_for
from hw.ops.base import HWOp
from sw.compiler.estimate import analytic_cycles, estimate
from sw.compiler.execute import run_graph
from sw.compiler.folding import apply_folding
from sw.compiler.lower import CompileError

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
ROOT = Path(__file__).resolve().parents[1]


def _runtime_imports(tree: ast.AST) -> list[ast.AST]:
    """Import statements of a module, leaving out those under ``if TYPE_CHECKING:``."""
    found = []

    def visit(node):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_hw_package_imports_nothing_from_the_compiler():
    bad = []
    for path in sorted((ROOT / "hw").rglob("*.py")):
        for node in _runtime_imports(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                    if n == "sw" or n.startswith("sw.")]
    assert bad == []


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_class_holds_every_model(name):
    cls = OPS[name]
    assert cls.op == name and cls.finn_op
    for method in ("execute", "build", "token_schedule"):
        assert getattr(cls, method) is not getattr(HWOp, method), f"{name} lacks {method}"


def _pool_graph(signed: bool) -> HWGraph:
    """SlidingWindow (3x3, pad 1, depthwise) -> MaxPool on a 4x4x2 frame."""
    t = {"x": TensorInfo("x", (4, 4, 2), 8, signed),
         "w": TensorInfo("w", (4, 4, 18), 8, signed, kind="dwwindow"),
         "y": TensorInfo("y", (4, 4, 2), 8, signed)}
    layers = [HWLayer("swg", "SlidingWindow", ["x"], ["w"],
                      dict(ifm_dim=(4, 4), channels=2, kernel=3, stride=1, pad=1, dilation=1,
                           depthwise=True)),
              HWLayer("pool", "MaxPool", ["w"], ["y"], dict(kernel=3, channels=2, pixels=16))]
    return HWGraph(layers, t, "x", "y")


def test_op_classes_give_the_pool_graph_its_models():
    g = apply_folding(_pool_graph(signed=False), {"pool": {"PE": 2}})
    swg, pool = (op_for(g, l) for l in g.layers)
    assert (swg.window_producer, pool.depthwise_window_reader, pool.folding_knob) == (True, True, True)
    assert g.tensors["w"].lanes == 2 and g.tensors["y"].lanes == 2
    # FINN's Pool formula: pixels * K*K * C/PE
    assert analytic_cycles(g, g.layers[1]) == 16 * 9 * 2 // 2
    assert [e.cycles for e in estimate(g)] == [swg.expected_cycles(), 16 * 9 + 1]
    x = np.arange(32).reshape(4, 4, 2) % 7
    y = run_graph(g, x)["y"]
    ref = np.zeros((4, 4, 2), dtype=np.int64)
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    for i in range(4):
        for j in range(4):
            ref[i, j] = xp[i:i + 3, j:j + 3].reshape(9, 2).max(axis=0)
    assert np.array_equal(y, ref)


def test_a_cycle_model_error_is_raised_not_replaced():
    """A component that refuses its layer (a MaxPool on signed input) makes the estimate fail
    with its message, where a fallback formula used to hide it."""
    g = apply_folding(_pool_graph(signed=True), {})
    with pytest.raises(ValueError, match="pool: MaxPool needs an unsigned"):
        estimate(g)


def test_an_op_without_a_class_is_refused_in_one_line():
    g = _pool_graph(signed=False)
    g.layers[1].op = "Mystery"
    with pytest.raises(UnknownOpError, match="layer pool: no hardware for op Mystery"):
        op_for(g, g.layers[1])
    with pytest.raises(CompileError, match=r"layer 'pool' \(Mystery\): no hardware for op Mystery"):
        apply_folding(g, {})


def test_folding_rules_come_from_the_op_class():
    g = _pool_graph(signed=False)
    with pytest.raises(CompileError, match=r"layer 'pool' \(MaxPool\): C % PE == 0 is broken: "
                                           r"C=2, PE=3"):
        apply_folding(g, {"pool": {"PE": 3}})
    with pytest.raises(CompileError, match="window_buffer must be one of"):
        apply_folding(g, {"swg": {"window_buffer": "huge"}})
    assert [f["PE"] for f in op_for(g, g.layers[1]).candidates()] == [1, 2]
