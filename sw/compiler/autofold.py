"""Automatic folding (FINN's SetFolding idea) under a board's resources.

:func:`choose_folding` picks PE/SIMD for every MVAU/VVAU and PE for every stream layer so
that each layer's cycles per frame (:func:`sw.compiler.estimate.analytic_cycles`, FINN's formulas)
stay within the target ``clock / fps``: like FINN's ``SetFolding``, each layer takes the
smallest parallelism that meets the target, over divisors only (``MW % SIMD == 0``,
``MH % PE == 0``, a sliding window's ``C % SIMD == 0``, ``C % PE == 0``). An MVAU's
candidates are all such ``(PE, SIMD)`` pairs ordered by ``PE*SIMD`` (its cycles are
``MH*MW*pixels/(PE*SIMD)``), ties to the larger SIMD (FINN raises SIMD first): e.g. MH = MW =
58 takes PE=2, SIMD=2 rather than jumping from SIMD=2 to SIMD=29, so no layer gets more
products, DSPs or weight-word width than its target needs. Without a target it searches
(bisection on the target cycles) for the fastest such balanced folding that fits the board.

Fitting a board (capacities from :mod:`sw.compiler.boards`, used up to ``UTILISATION``):

0. only where no folding fits otherwise (``window_buffers="auto"``): sliding window
   generators take the minimal pixel buffer (``"window_buffer": "minimal"``, ``(K-1)`` rows
   plus ``K + stride`` pixels instead of ``K + stride`` rows, FINN's RTL SWG sizing), each
   whose cycles stay within the folding's II;
1. products go to DSP48s (two per DSP in an MVAU, one in a VVAU, see :mod:`sw.compiler.estimate`) in
   the layers with the most products first, while DSPs remain after the requantisers' one DSP
   per lane; the rest in LUTs;
2. if LUTs are short, shallow memories (``auto`` -> LUTRAM) go to BRAM (``ram_style
   "block"``), most LUTs saved per BRAM18 first, while BRAM remains;
3. weight memories go to URAM (largest first) where the board has URAM and BRAM is short;
4. if BRAM is short, memories of any layer (weights, Requant parameters, line and ping-pong
   buffers) go to LUTRAM (``ram_style "distributed"``), fewest LUTs per BRAM18 released
   first (a BRAM18 holding a few hundred bits goes first), while LUTs remain (FINN-R's
   per-layer memory choice, FINN's ``ram_style`` attribute);
5. if BRAM is still short, MVAUs switch to FINN's external weights (``"mem_mode":
   "external"``), least DRAM traffic per BRAM18 released first: no on-chip weight memory,
   but ``MH*MW*W/8 * pixels`` bytes per frame, which must stay within ``board.dram_gbps``.

The result is FINN's folding JSON: ``{layer: {"PE", "SIMD", ["mem_mode"], "resType",
"ram_style"}, "Defaults": {}}`` (plus ``"window_buffer"`` on sliding windows given step 0) (``resType`` lut|dsp and ``ram_style`` auto|block|distributed|
ultra are FINN's attribute names too); other layers with a memory get an entry
``{"ram_style": ...}`` only where it is not ``auto``.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from hw.graph import HWGraph, HWLayer, write_text_atomic
from hw.ops import op_for
from hw.ops.memory import MEM_STYLES
from hw.window import WINDOW_BUFFERS
from sw.compiler.boards import Board
from sw.compiler.estimate import analytic_cycles, layer_resources
from sw.compiler.folding import apply_folding
from sw.compiler.lower import CompileError

#: share of each board resource the folding may use (routing and the DMA/PS glue need the rest)
UTILISATION = 0.9


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _candidates(graph: HWGraph, layer: HWLayer) -> list[dict]:
    """Foldings of one layer by increasing parallelism (its op class's
    :meth:`~hw.ops.base.HWOp.candidates`; empty for a layer without a folding knob)."""
    return op_for(graph, layer).candidates()


def _knobs(graph: HWGraph) -> list[HWLayer]:
    return [l for l in graph.layers if op_for(graph, l).folding_knob]


def _cycles_with(graph: HWGraph, layer: HWLayer, fold: dict) -> int:
    saved = layer.folding
    layer.folding = fold
    try:
        return analytic_cycles(graph, layer)
    finally:
        layer.folding = saved


def fold_for_target(graph: HWGraph, target_cycles: float) -> dict:
    """Smallest folding per layer meeting ``target_cycles`` per frame (FINN SetFolding).

    Raises:
        CompileError: naming the first layer that cannot meet the target even fully parallel.
    """
    cfg: dict = {"Defaults": {}}
    for layer in _knobs(graph):
        cands = _candidates(graph, layer)
        for fold in cands:
            if _cycles_with(graph, layer, fold) <= target_cycles:
                cfg[layer.name] = dict(fold)
                break
        else:
            best = _cycles_with(graph, layer, cands[-1])
            raise CompileError(
                f"layer {layer.name!r} ({layer.op}, from QONNX node {layer.source_node!r}) is the "
                f"bottleneck: {best} cycles per frame at its full parallelism {cands[-1]} > target "
                f"{target_cycles:.0f} cycles; rule: every layer's cycles <= clock / fps")
    return repair_lanes(graph, cfg)


def _in_lanes_of(graph: HWGraph, layer: HWLayer, fold: dict) -> int:
    return fold.get(op_for(graph, layer).lanes_attr, 1)


def _compatible(a: int, b: int) -> bool:
    return max(a, b) % min(a, b) == 0


def repair_lanes(graph: HWGraph, cfg: dict, max_steps: int = 1000) -> dict:
    """Raise foldings until neighbouring lane counts divide one another (the width
    converter rule of :func:`sw.compiler.folding.apply_folding`). Only raises parallelism, so a
    target met before is still met.

    Raises:
        CompileError: when no compatible raise exists (names the layer and the rule).
    """
    cfg = copy.deepcopy(cfg)
    for _ in range(max_steps):
        try:
            apply_folding(graph, cfg)
            return cfg
        except CompileError as err:
            conflict = getattr(err, "lane_conflict", None)
            if conflict is None:
                raise
            name, tensor, have, want = conflict
            layer = graph.layer(name)
            if op_for(graph, layer).window_producer:
                layer = graph.consumers(layer.outputs[0])[0]
            if layer.name in cfg and _raise_to(graph, cfg, layer, lambda f: _compatible(_in_lanes_of(graph, layer, f), have)):
                continue
            prod = graph.producer(tensor)
            while prod is not None and prod.name not in cfg:  # Requant/Duplicate pass lanes through
                prod = graph.producer(prod.inputs[0])
            if prod is None or not _raise_to(graph, cfg, prod, lambda f: _compatible(f.get("PE", 1), want)):
                raise
    raise CompileError("lane repair did not converge")


def _raise_to(graph: HWGraph, cfg: dict, layer: HWLayer, ok) -> bool:
    cands = _candidates(graph, layer)
    cur = _cycles_with(graph, layer, cfg[layer.name])
    for f in cands:
        if _cycles_with(graph, layer, f) <= cur and f != cfg[layer.name] and ok(f) and (
                f.get("PE", 1) >= cfg[layer.name].get("PE", 1)):
            cfg[layer.name] = dict(f)
            return True
    return False


def _rebalance(per: dict, layers: list[HWLayer], new_res, lim: dict, spend: str, free: str,
               cost_key=None) -> list[str]:
    """Greedy exchange of one resource for another (FINN-R's per-layer memory choice).

    While the total of ``free`` is over ``lim[free]``, move layers to their alternative
    resources (``new_res(layer)``) in order of the least ``spend`` paid per unit of ``free``
    released, as long as the total of ``spend`` stays within ``lim[spend]``. Updates ``per``.

    Returns:
        names of the layers moved, in order.
    """
    def total(k):
        return sum(r[k] for r in per.values())

    offers = []
    for l in layers:
        trial = new_res(l)
        freed = per[l.name][free] - trial[free]
        if freed > 0:
            offers.append(((trial[spend] - per[l.name][spend]) / freed, l.name, trial))
    moved = []
    for _, name, trial in sorted(offers, key=lambda o: o[0]):  # stable: graph order on ties
        if total(free) <= lim[free]:
            break
        if total(spend) - per[name][spend] + trial[spend] <= lim[spend]:
            per[name] = trial
            moved.append(name)
    return moved


def _fps_of(graph: HWGraph, cfg: dict, clock_mhz: float) -> float:
    """Frames per second of ``graph`` folded by ``cfg``: ``clock / II``, II the slowest
    layer's cycles. A folding chosen for a target runs at least that fast, often faster (PE
    and SIMD are divisors), and external weights stream once per frame it actually runs."""
    g = apply_folding(graph, cfg)
    return clock_mhz * 1e6 / max(analytic_cycles(g, l) for l in g.layers)


def _fit(graph: HWGraph, cfg: dict, board: Board, fps: float, external_weights: bool = True,
         minimal_windows: bool = False) -> tuple[bool, str, dict]:
    """Assign resType / ram_style / mem_mode so that ``cfg`` fits ``board`` (module docstring).
    ``fps``: the frame rate the folding runs at (:func:`_fps_of`), for the DRAM bandwidth of
    external weights; ``external_weights=False`` skips step 5 (every weight on chip);
    ``minimal_windows=True`` first gives every sliding window generator whose cycles stay
    within the folding's II the minimal buffer (``"window_buffer": "minimal"``).

    Returns:
        (fits, reason if not, the completed config).
    """
    cfg = copy.deepcopy(cfg)
    g = apply_folding(graph, cfg)
    if minimal_windows:
        ii = max(analytic_cycles(g, l) for l in g.layers)
        for l in g.layers:
            if "minimal" in op_for(g, l).window_buffers and l.folding.get("window_buffer") != "minimal":
                l.folding["window_buffer"] = "minimal"
                if analytic_cycles(g, l) <= ii:
                    cfg.setdefault(l.name, {})["window_buffer"] = "minimal"
                else:  # the row-slot engine keeps this layer off the critical path
                    del l.folding["window_buffer"]
    lim = {k: int(getattr(board, k) * UTILISATION) for k in ("luts", "dsps", "bram18", "uram")}
    compute = [l for l in g.layers if op_for(g, l).has_mac_array]
    memories = [l for l in g.layers if op_for(g, l).has_memory]
    mult = {l.name: "lut" for l in compute}
    mem = {l.name: "auto" for l in memories}

    def res(l, mult_style=None, mem_style=None):
        return layer_resources(g, l, mult_style or mult.get(l.name, "lut"),
                               mem_style or mem.get(l.name, "auto"))

    per = {l.name: res(l) for l in g.layers}
    dsp_left = lim["dsps"] - sum(r["dsps"] for r in per.values())
    for l in sorted(compute, key=lambda l: -l.folding["PE"] * l.folding["SIMD"]):
        need = layer_resources(g, l, "dsp")["dsps"]
        if need <= dsp_left:
            mult[l.name] = "dsp"
            dsp_left -= need
            per[l.name] = res(l)

    def total(k):
        return sum(r[k] for r in per.values())

    # LUTs short: shallow (auto -> LUTRAM) memories go to BRAM, most LUTs saved per BRAM18 first
    for name in _rebalance(per, [l for l in memories if per[l.name]["lutram_luts"]],
                           lambda l: res(l, mem_style="bram"), lim, "bram18", "luts"):
        mem[name] = "bram"
    by_weights = sorted(compute, key=lambda l: -per[l.name]["weight_bits"])
    if total("bram18") > lim["bram18"] and lim["uram"] > 0:
        for l in by_weights:
            if total("bram18") <= lim["bram18"]:
                break
            trial = res(l, mem_style="uram")
            if per[l.name]["bram18"] and total("uram") + trial["uram"] <= lim["uram"]:
                mem[l.name] = "uram"
                per[l.name] = trial
    # BRAM short: memories go to LUTRAM, fewest LUTs per BRAM18 released first (a BRAM18
    # holding a few hundred bits, e.g. a one-pixel buffer or a narrow Requant table, first)
    for name in _rebalance(per, [l for l in memories if mem[l.name] != "uram"],
                           lambda l: res(l, mem_style="lutram"), lim, "luts", "bram18"):
        mem[name] = "lutram"
    # still short: external weights, least DRAM traffic per BRAM18 released first (DRAM
    # bandwidth is the resource spent: MH*MW*W/8 bytes per pixel)
    def external(l):
        l.folding["mem_mode"] = "external"
        try:
            return res(l)
        finally:
            del l.folding["mem_mode"]

    ext = [l for l in compute
           if op_for(g, l).external_weights and per[l.name]["bram18"] and external_weights]
    for l in sorted(ext, key=lambda l: external(l)["dram_bytes_per_frame"] / per[l.name]["bram18"]):
        if total("bram18") <= lim["bram18"]:
            break
        l.folding["mem_mode"] = "external"
        cfg[l.name]["mem_mode"] = "external"
        per[l.name] = res(l)
    for l in compute:
        cfg[l.name]["resType"] = mult[l.name]
    for l in memories:
        if l.name in cfg or mem[l.name] != "auto":
            cfg.setdefault(l.name, {})["ram_style"] = MEM_STYLES[mem[l.name]]
    dram = total("dram_bytes_per_frame") * fps / 1e9
    over = [k for k in ("bram18", "uram", "dsps", "luts") if total(k) > lim[k]]
    if over:
        return False, _refusal(g, per, lim, board, over, mult, mem, cfg, dram, minimal_windows), cfg
    if dram > board.dram_gbps:
        top = max(per, key=lambda n: per[n]["dram_bytes_per_frame"])
        return False, (f"external weights need {dram:.2f} GB/s of DRAM > {board.dram_gbps} GB/s on "
                       f"{board.name}; largest stream: layer {top!r}"), cfg
    return True, "", cfg


def memory_lut_floor(graph: HWGraph, bram18_limit: int, uram_layers=(),
                     minimal_windows: bool = False) -> dict:
    """Fewest LUTs that any memory placement of the folded ``graph`` can need while its
    memories use at most ``bram18_limit`` BRAM18s (a lower bound, for refusal messages).

    Relaxation (each step can only lower the LUT count, so the result is a true lower bound
    for this folding): every MVAU/VVAU's products on DSP48s (DSP count ignored), every MVAU's
    weights external (FINN's ``mem_mode external``; DRAM bandwidth ignored), the layers in
    ``uram_layers`` keep URAM, every other memory starts in BRAM (``ram_style "block"``, no
    LUTs) and memories move to LUTRAM (``"distributed"``, 64 bits per LUT, see
    :func:`hw.ops.memory.lutram_luts_for`) in order of the fewest LUTs per BRAM18 released, the
    last one fractionally, until the BRAM18 total is within the limit: the optimum of the
    linear relaxation of the 0/1 BRAM-or-LUTRAM choice. With ``minimal_windows``, every
    sliding window generator has the minimal buffer (its cycles ignored).

    Args:
        graph: folded graph (:func:`sw.compiler.folding.apply_folding`).
        bram18_limit: BRAM18s the memories may use.
        uram_layers: names of layers whose memory stays in URAM.
        minimal_windows: the fitter may use ``window_buffer "minimal"``.

    Returns:
        ``{"luts": the bound in LUTs (rounded up), "bram18": BRAM18s with every memory in
        BRAM, "bram18_to_move": BRAM18s that must go to LUTRAM (0 if none), "lutram_luts":
        LUTs those take, "memories": [(layer, BRAM18 in BRAM, LUTs in LUTRAM), ...] of the
        memories in BRAM, largest first]}``.
    """
    luts, bram, offers = 0, 0, []
    for l in graph.layers:
        saved = dict(l.folding)
        op = op_for(graph, l)
        if op.external_weights:
            l.folding["mem_mode"] = "external"
        if "minimal" in op.window_buffers and minimal_windows:
            l.folding["window_buffer"] = "minimal"
        try:
            mult = "dsp" if op.has_mac_array else "lut"
            if not op.has_memory or l.name in uram_layers:
                style = "uram" if l.name in uram_layers else "auto"
                luts += layer_resources(graph, l, mult, style)["luts"]
                continue
            blk = layer_resources(graph, l, mult, "bram")
            dist = layer_resources(graph, l, mult, "lutram")
        finally:
            l.folding = saved
        luts += blk["luts"]
        bram += blk["bram18"]
        if blk["bram18"]:
            offers.append((l.name, blk["bram18"], dist["luts"] - blk["luts"]))
    need = max(0, bram - bram18_limit)
    left, extra = need, 0.0
    for _, b18, dl in sorted(offers, key=lambda o: o[2] / o[1]):  # stable: graph order on ties
        if left <= 0:
            break
        take = min(left, b18)
        extra += dl * take / b18
        left -= take
    return {"luts": luts + math.ceil(extra - 1e-9), "bram18": bram, "bram18_to_move": need,
            "lutram_luts": math.ceil(extra - 1e-9),
            "memories": sorted(offers, key=lambda o: -o[1])}


def _refusal(g: HWGraph, per: dict, lim: dict, board: Board, over: list[str], mult: dict,
             mem: dict, cfg: dict, dram_gbps: float, minimal_windows: bool = False) -> str:
    """Why ``cfg`` does not fit ``board``: each resource over its limit and by how much, what
    :func:`_fit` tried, and the LUT lower bound of :func:`memory_lut_floor`."""
    def total(k):
        return sum(r[k] for r in per.values())

    names = {"bram18": "BRAM18", "uram": "URAM", "dsps": "DSP", "luts": "LUT"}
    parts = []
    for k in over:
        top = max(per, key=lambda n: per[n][k])
        parts.append(f"{k.upper()} {total(k)} > {lim[k]} ({UTILISATION:.0%} of {board.name}; short "
                     f"by {total(k) - lim[k]:,}); largest user: layer {top!r} ({per[top][k]})")
    compute = [n for n in mult]
    mvaus = [l.name for l in g.layers if op_for(g, l).external_weights]
    ext = [n for n in mvaus if cfg.get(n, {}).get("mem_mode") == "external"]
    styles = {s: sum(1 for v in mem.values() if v == s) for s in ("lutram", "bram", "uram")}
    used = ", ".join(f"{names[k]} {total(k):,} of {lim[k]:,}" for k in names
                     if k not in over and (lim[k] or total(k)))
    tried = (f"Tried: products on DSP48s in {sum(v == 'dsp' for v in mult.values())} of "
             f"{len(compute)} MVAU/VVAUs; of {len(mem)} memories, {styles['lutram']} set to "
             f"ram_style distributed (LUTRAM), {styles['bram']} to block, {styles['uram']} to "
             f"ultra, the rest auto; weights external in {len(ext)} of {len(mvaus)} MVAUs "
             f"({dram_gbps:.2f} GB/s of DRAM, {board.dram_gbps:g} GB/s available)")
    swgs = [l.name for l in g.layers if "minimal" in op_for(g, l).window_buffers]
    if minimal_windows:
        n_min = sum(cfg.get(n, {}).get("window_buffer") == "minimal" for n in swgs)
        tried += f"; minimal buffers in {n_min} of {len(swgs)} sliding windows"
    tried += f"; {used}"
    msg = "; ".join(parts) + ". " + tried
    if "bram18" in over or "luts" in over:
        uram = [n for n, s in mem.items() if s == "uram"]
        fl = memory_lut_floor(g, lim["bram18"], uram, minimal_windows)
        big = ", ".join(f"{n!r} {b:,} BRAM18 = {d:,} LUTs" for n, b, d in fl["memories"][:3])
        head = (f". Lower bound for this folding: even with every product on a DSP48"
                f"{', every sliding window minimal' if minimal_windows else ''} and every "
                f"MVAU's weights external, the memories take {fl['bram18']:,} BRAM18 all in BRAM; "
                f"keeping BRAM18 within {lim['bram18']:,} puts at least {fl['bram18_to_move']:,} "
                f"BRAM18 of them in LUTRAM, cheapest first ({fl['lutram_luts']:,} LUTs at 64 bits "
                f"per LUT), {fl['luts']:,} LUTs in all")
        if fl["luts"] > lim["luts"]:
            msg += (f"{head} > {lim['luts']:,}: LUTs short by {fl['luts'] - lim['luts']:,} "
                    f"(largest memories: {big})")
        else:
            msg += f"{head}, within {lim['luts']:,}: a placement better than this greedy one may exist"
    return msg


def choose_folding(graph: HWGraph, board: Board, target_fps: float | None = None,
                   clock_mhz: float | None = None, external_weights: bool = True,
                   window_buffers: str = "auto") -> dict:
    """FINN-format folding of ``graph`` for ``board`` (see module docstring).

    Args:
        graph: lowered (unfolded or folded) graph.
        board: target board (:func:`sw.compiler.boards.get_board`).
        target_fps: frames per second to reach; ``None``: the fastest fitting folding.
        clock_mhz: accelerator clock; default ``board.fabric_mhz``.
        external_weights: allow FINN's external weights (``mem_mode "external"``) where BRAM
            is short. ``False`` keeps every weight on chip, as ``hw.top.Accelerator`` builds
            them (the RTL has no DRAM weight stream), e.g. for a Yosys count of the design.
        window_buffers: ``"rows"``: every sliding window generator on row-slot line buffers
            (:class:`hw.window.SlidingWindowGenerator`); ``"minimal"``: each whose cycles stay
            within the II on the minimal pixel buffer
            (:class:`hw.window.MinimalSlidingWindowGenerator`, step 0 of the module
            docstring); ``"auto"`` (default): ``"rows"``, and ``"minimal"`` only when no
            folding fits (or meets the target) with rows, so every folding that fits with rows
            stays as it was.

    Returns:
        ``{layer: {"PE", "SIMD", "resType", "ram_style", ["mem_mode"]}, "Defaults": {}}``.

    Raises:
        CompileError: no folding meets ``target_fps`` (naming the bottleneck layer and the
            rule) or fits the board: the message names each resource over its limit, by how
            much and its largest user, what the fitter tried (DSP products, ram_style per
            memory, external weights and their DRAM GB/s) and, where BRAM or LUTs are short,
            the LUT lower bound of :func:`memory_lut_floor` for that folding.
    """
    if window_buffers == "auto":
        try:
            return choose_folding(graph, board, target_fps, clock_mhz, external_weights, "rows")
        except CompileError:  # refused with row buffers: the minimal buffers' refusal if any
            return choose_folding(graph, board, target_fps, clock_mhz, external_weights, "minimal")
    if window_buffers not in WINDOW_BUFFERS:
        raise CompileError(f"window_buffers must be 'auto' or one of {WINDOW_BUFFERS}, got "
                           f"{window_buffers!r}")
    minimal = window_buffers == "minimal"
    clock = float(clock_mhz or board.fabric_mhz)
    base = apply_folding(graph, {})
    if target_fps is not None:
        if target_fps <= 0:
            raise CompileError(f"target fps must be positive, got {target_fps}")
        cfg = fold_for_target(base, clock * 1e6 / target_fps)
        ok, why, cfg = _fit(base, cfg, board, _fps_of(base, cfg, clock), external_weights, minimal)
        if not ok:
            raise CompileError(f"no folding reaches {target_fps:g} fps at {clock:g} MHz on "
                               f"{board.name}: {why}")
        return cfg
    hi = max(analytic_cycles(base, l) for l in base.layers)  # everything folded to 1
    lo = max(min(_cycles_with(base, l, c) for c in _candidates(base, l)) for l in _knobs(base))
    best = None
    cfg = fold_for_target(base, hi)
    ok, why, cfg = _fit(base, cfg, board, _fps_of(base, cfg, clock), external_weights, minimal)
    if not ok:
        raise CompileError(f"even the smallest folding (II {hi:,} cycles, {clock * 1e6 / hi:.2f} "
                           f"fps at {clock:g} MHz) does not fit {board.name}: {why}")
    best = cfg
    for _ in range(40):  # bisection on log(target cycles)
        if hi / lo < 1.01:
            break
        mid = math.sqrt(lo * hi)
        cfg = fold_for_target(base, mid)
        ok, _, cfg = _fit(base, cfg, board, _fps_of(base, cfg, clock), external_weights, minimal)
        if ok:
            hi, best = mid, cfg
        else:
            lo = mid
    return best


def save_folding(cfg: dict, path: str | Path) -> None:
    """Write a FINN folding config as JSON, atomically."""
    write_text_atomic(Path(path), json.dumps(cfg, indent=1))
