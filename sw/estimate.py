"""Per-layer cycle estimates of a folded hardware graph (FINN's formulas via each component's
``expected_cycles``) and the frame-level figures that follow from them."""

from __future__ import annotations

from dataclasses import dataclass

from sw.hwgraph import HWGraph


@dataclass
class LayerEstimate:
    name: str
    op: str
    folding: dict
    cycles: int  # expected cycles per frame, stall-free, including fill latency
    macs: int  # multiply-accumulates per frame


def layer_macs(graph: HWGraph, layer) -> int:
    a = layer.attrs
    if layer.op == "MVAU":
        return a["mh"] * a["mw"] * a["pixels"]
    if layer.op == "VVAU":
        return a["channels"] * a["kernel_elems"] * a["pixels"]
    return 0


def estimate(graph: HWGraph) -> list[LayerEstimate]:
    """Expected cycles and MACs of every layer of a folded graph."""
    from hw.registry import expected_layer_cycles

    return [LayerEstimate(l.name, l.op, dict(l.folding), expected_layer_cycles(graph, l),
                          layer_macs(graph, l)) for l in graph.layers]


def bottleneck(estimates: list[LayerEstimate]) -> LayerEstimate:
    """The layer that sets the pipeline's initiation interval (most cycles per frame)."""
    return max(estimates, key=lambda e: e.cycles)


def format_table(estimates: list[LayerEstimate]) -> str:
    """Plain-text table of the estimates (one row per layer)."""
    rows = [f"{'layer':<34}{'op':<18}{'folding':<18}{'cycles':>10}{'MACs':>12}"]
    for e in estimates:
        fold = ",".join(f"{k}={v}" for k, v in e.folding.items()) or "-"
        rows.append(f"{e.name:<34}{e.op:<18}{fold:<18}{e.cycles:>10}{e.macs:>12}")
    return "\n".join(rows)
