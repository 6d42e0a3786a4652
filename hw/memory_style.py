"""FINN's ``ram_style`` on the memories of the hardware generators, as Verilog attributes.

The compiler (:mod:`sw.compiler.autofold`) chooses a memory style per layer, FINN's ``ram_style``
attribute: ``auto`` (synthesis decides), ``block`` (BRAM), ``distributed`` (LUTRAM) or
``ultra`` (URAM). Amaranth 0.5's ``amaranth.lib.memory.Memory(..., attrs=...)`` carries
attributes to the memory it infers, and the Verilog backend writes them on the memory array
(``(* ram_style = "distributed" *) reg [7:0] mem [..];``), which Vivado (UG901 RAM_STYLE /
ROM_STYLE) and Yosys ``synth_xilinx`` (``memory_libmap``) honour. A memory with a write
port (line buffers) gets ``ram_style``; a read-only one (weights, requantiser parameters)
gets ``rom_style`` too, the attribute Vivado reads for inferred ROMs. ``auto`` adds none.
"""

from __future__ import annotations

__all__ = ["RAM_STYLES", "check_ram_style", "memory_attrs"]

#: FINN's ``ram_style`` values (the folding validator :mod:`sw.compiler.folding` imports this list)
RAM_STYLES = ("auto", "block", "distributed", "ultra")


def check_ram_style(component: str, ram_style: str) -> str:
    """Return ``ram_style`` if it is one of :data:`RAM_STYLES`.

    Raises:
        ValueError: any other value, naming ``component`` and the allowed values.
    """
    if ram_style not in RAM_STYLES:
        raise ValueError(f"{component}: ram_style must be one of {RAM_STYLES}, got {ram_style!r}")
    return ram_style


def memory_attrs(ram_style: str, read_only: bool) -> dict[str, str]:
    """Verilog attributes for an ``amaranth.lib.memory.Memory`` of style ``ram_style``.

    Args:
        ram_style: one of :data:`RAM_STYLES`.
        read_only: the memory has no write port (a ROM): ``rom_style`` is added.

    Returns:
        ``{}`` for ``auto``; else ``{"ram_style": ram_style}`` plus ``"rom_style"`` for a ROM.

    Raises:
        ValueError: ``ram_style`` not in :data:`RAM_STYLES`.
    """
    check_ram_style("memory", ram_style)
    if ram_style == "auto":
        return {}
    attrs = {"ram_style": ram_style}
    if read_only:
        attrs["rom_style"] = ram_style
    return attrs
