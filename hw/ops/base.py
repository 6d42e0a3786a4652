"""The base class of the hardware ops: everything the compiler asks of one op in one place.

As FINN's ``HWCustomOp`` subclasses hold ``get_exp_cycles``, ``bram_estimation`` and
``execute_node`` for their op, an :class:`HWOp` subclass holds for one ``HWLayer.op``:

* folding rules: :meth:`HWOp.set_folding` (legal ``PE``/``SIMD`` and FINN's attributes from a
  folding-config entry), :meth:`HWOp.candidates` (the foldings :mod:`sw.compiler.autofold` searches),
  :meth:`HWOp.in_lanes` / :meth:`HWOp.out_lanes` (stream lanes per port);
* cycle models: :meth:`HWOp.analytic_cycles` (FINN's formulas, no fill latency) and
  :meth:`HWOp.expected_cycles` (the component's own model);
* resources: :meth:`HWOp.resources` (LUT, DSP, BRAM18, URAM, LUTRAM per layer);
* golden execution: :meth:`HWOp.execute` (numpy, bit-exact, :mod:`hw.golden`);
* the Amaranth build: :meth:`HWOp.build`, :meth:`HWOp.ports`, and the token schedule of the
  built component (:meth:`HWOp.token_schedule`, :mod:`hw.schedule`).

An op object wraps one layer of one graph (``OPS[layer.op](graph, layer)``, see
:func:`hw.ops.op_for`); it reads the layer's attributes and folding live, so a caller may
change ``layer.folding`` and ask again.
"""

from __future__ import annotations

import numpy as np

from hw.graph import HWGraph, HWLayer
from hw.memory_style import RAM_STYLES
from hw.ops.memory import empty_resources


class FoldingRuleError(ValueError):
    """A folding-config entry breaks one of the op's folding rules (the message states the
    rule and the values; :mod:`sw.compiler.folding` adds the layer's name)."""


class HWOp:
    """One hardware layer of a :class:`~hw.graph.HWGraph` and the models of its op.

    Class attributes (the op's properties the compiler dispatches on):
        op: ``HWLayer.op`` it implements. finn_op: FINN's op type for it.
        folding_knob: :mod:`sw.compiler.autofold` searches its ``PE`` (and ``SIMD``).
        has_mac_array: an MVAU/VVAU-like multiply-accumulate array (products on LUTs or
            DSPs, ``resType``; a ``mac_active`` signal for utilisation probes).
        has_memory: FINN's ``ram_style`` applies to a memory it builds.
        external_weights: FINN's ``mem_mode "external"`` applies (weights from DRAM).
        window_producer: it writes a window stream whose lanes its consumer decides.
        depthwise_window_reader: it reads depthwise window streams ``(C/PE, K*K, PE)``.
        regroups_lanes: it only regroups lanes (a width converter): window lanes pass through.
        window_buffers: the ``window_buffer`` values its folding accepts (empty: none).
        lanes_attr: the folding attribute its input lanes are called in rule messages.
    """

    op = ""
    finn_op = ""
    folding_knob = False
    has_mac_array = False
    has_memory = False
    external_weights = False
    window_producer = False
    depthwise_window_reader = False
    regroups_lanes = False
    window_buffers: tuple[str, ...] = ()
    lanes_attr = "PE"

    def __init__(self, graph: HWGraph, layer: HWLayer):
        self.graph, self.layer = graph, layer

    # -- shorthands ----------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        return self.layer.attrs

    @property
    def folding(self) -> dict:
        return self.layer.folding

    @property
    def t_in(self):
        """TensorInfo of the first input."""
        return self.graph.tensors[self.layer.inputs[0]]

    @property
    def t_out(self):
        """TensorInfo of the first output."""
        return self.graph.tensors[self.layer.outputs[0]]

    @property
    def pe(self) -> int:
        return int(self.folding.get("PE", 1))

    @property
    def ram_style(self) -> str:
        return self.folding.get("ram_style", "auto")

    # -- folding -------------------------------------------------------------------------------
    def set_folding(self, entry: dict) -> None:
        """Set ``layer.folding`` from a FINN folding-config entry (``PE``, ``SIMD``, ``resType``,
        ``ram_style``, ``mem_mode``, ``window_buffer``), checking the op's rules. Ops without
        a folding of their own keep theirs; ``ram_style`` reaches ops with a memory.

        Raises:
            FoldingRuleError: a value that breaks a rule (the message names rule and values).
        """
        self._fold(entry)
        if self.has_memory and "ram_style" in entry:
            if entry["ram_style"] not in RAM_STYLES:
                raise FoldingRuleError(f"ram_style must be one of {RAM_STYLES}, got "
                                       f"{entry['ram_style']!r}")
            self.layer.folding = {**self.layer.folding, "ram_style": entry["ram_style"]}

    @classmethod
    def folding_from_finn(cls, entry: dict) -> dict:
        """The part of a FINN ``folding_config.json`` entry this op takes: ``resType`` and
        ``ram_style`` always, ``PE`` / ``SIMD`` for a MAC array (FINN's MVAU/VVAU knobs)."""
        keep = {k: v for k, v in entry.items() if k in ("resType", "ram_style")}
        if cls.has_mac_array:
            keep |= {k: entry[k] for k in ("PE", "SIMD") if k in entry}
        return keep

    def _fold(self, entry: dict) -> None:
        """Op-specific part of :meth:`set_folding` (default: the layer keeps its folding)."""

    def candidates(self) -> list[dict]:
        """Foldings :mod:`sw.compiler.autofold` tries, by increasing parallelism (empty: not a knob)."""
        return []

    def pe_channel_counts(self) -> list[int]:
        """Channel counts that ``PE`` must divide."""
        return [self.attrs["channels"]]

    def _check_pe(self, entry: dict) -> int:
        pe = int(entry.get("PE", 1))
        for c in self.pe_channel_counts():
            if pe < 1 or c % pe:
                raise FoldingRuleError(f"C % PE == 0 is broken: C={c}, PE={pe} (every input and "
                                       "output channel count must be a multiple of PE)")
        return pe

    def in_lanes(self, port: int) -> int:
        """Lanes the layer reads on input ``port`` (default: those of its output, a
        pass-through layer)."""
        return self.t_out.lanes

    def out_lanes(self) -> int | None:
        """Lanes of its outputs once folded; ``None`` where another rule sets them (window
        producers take their consumer's, width converters are made with theirs)."""
        return None

    # -- cycles --------------------------------------------------------------------------------
    def analytic_cycles(self) -> int:
        """Cycles per frame from FINN's formulas, no fill latency (default: one input beat
        per cycle)."""
        return self.t_in.beats_per_frame

    def expected_cycles(self, comp=None) -> int:
        """Cycles per frame of the built component (its ``expected_cycles``, fill latency
        included). ``comp``: the component if already built (else built, never elaborated).

        Raises:
            ValueError: a layer the component refuses.
        """
        if comp is None:
            comp = self.build()
            comp._MustUse__silence = True  # only asked for its cycle model, never elaborated
        return int(self._component_cycles(comp))

    def _component_cycles(self, comp) -> int:
        return comp.expected_cycles()

    def _out_pixels(self) -> int:
        """Pixels of the (first) output frame ``[H, W, C]``."""
        return int(np.prod(self.t_out.shape[:-1]))

    def macs(self) -> int:
        """Multiply-accumulates per frame."""
        return 0

    # -- resources -----------------------------------------------------------------------------
    def resources(self, mult_style: str = "lut", mem_style: str = "auto") -> dict:
        """Resources of the folded layer: ``{"bram18", "uram", "lutram_luts", "luts", "dsps",
        "weight_bits", "dram_bytes_per_frame", "buffer_bits", "ffs"}`` (models in
        :mod:`sw.compiler.estimate`'s docstring). Default: a stream layer of registers and muxes,
        ``50 + 2 * lanes * bits`` LUTs.

        Args:
            mult_style: ``lut`` or ``dsp`` for the products of a MAC array.
            mem_style: ``auto``, ``bram``, ``lutram`` or ``uram`` for the layer's memory.
        """
        r = empty_resources()
        lanes = max(self.t_in.lanes, self.t_out.lanes)
        r["luts"] = 50 + 2 * lanes * self.t_in.bits
        return r

    def buffer_memory(self) -> tuple[int, int] | None:
        """``(depth, word_bits)`` of the pixel-buffer memory the component builds; ``None``
        where it builds none."""
        return None

    def buffer_read_ports(self) -> list[int] | None:
        """Read ports of each bank of a banked pixel buffer; ``None``: one memory, one port."""
        return None

    def read_crossbar(self) -> dict[str, list[int]] | None:
        """Multiplexer sizes of a banked buffer's read side; ``None`` where there is none."""
        return None

    def threshold_memories(self) -> dict:
        """Threshold ROMs of a Thresholding layer.

        Raises:
            ValueError: the layer has no threshold ROMs.
        """
        raise ValueError(f"layer {self.layer.name}: threshold_memories of a {self.layer.op}")

    # -- golden execution ----------------------------------------------------------------------
    def execute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Bit-exact outputs (``layer.outputs`` order) for one frame of ``inputs``
        (``layer.inputs`` order), in the stream layouts of :mod:`hw.golden`.

        Raises:
            hw.golden.GoldenModelError: inputs that break the op's contract.
        """
        raise NotImplementedError(f"{type(self).__name__}.execute")

    # -- Amaranth build ------------------------------------------------------------------------
    def build(self):
        """The Amaranth component of the folded layer.

        Raises:
            ValueError: a folding or layer the component refuses.
        """
        raise NotImplementedError(f"{type(self).__name__}.build")

    def ports(self, comp) -> tuple[list, list]:
        """(input stream ports in ``layer.inputs`` order, output ports in ``layer.outputs``
        order) of the built component."""
        return [comp.i], [comp.o]

    def default_fifo_depths(self) -> dict[str, int]:
        """``{tensor: depth}`` its input FIFOs need to be deadlock-free (default: none)."""
        return {}

    def token_schedule(self, comp, arrivals: list[np.ndarray], frames: int
                       ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Token schedule of the built component (:mod:`hw.schedule`): for each input's beat
        arrival cycles (``layer.inputs`` order, ``frames`` frames back to back), the cycles it
        consumes each input beat and produces each output beat."""
        raise NotImplementedError(f"{type(self).__name__}.token_schedule")

    def _payload_layout(self, t):
        from amaranth import signed, unsigned
        from amaranth.lib import data

        return data.ArrayLayout(signed(t.bits) if t.signed else unsigned(t.bits), t.lanes)
