"""Target boards: the programmable-logic resources and processing-system type of each part.

Capacities are the device datasheet figures (AMD/Xilinx DS190 Zynq-7000 and DS891 Zynq
UltraScale+ MPSoC overview tables); ``fabric_mhz`` is the clock this project builds for by
default. One BRAM36 holds two BRAM18s (36 Kbit = 2 x 18 Kbit); one URAM holds 288 Kbit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Board:
    """One Zynq board.

    Attributes:
        name: the key users type (``--board`` / ``BOARD=``).
        part: Vivado part number of the device on the board.
        board_part: Vivado board-file part (``board_part`` property), "" where none is needed.
        ps: ``zynq7`` (processing_system7) or ``zynqmp`` (zynq_ultra_ps_e).
        luts, ffs, dsps, bram36, uram: programmable-logic capacity (datasheet counts).
        fabric_mhz: default accelerator clock in MHz.
        dram_gbps: usable PS-DDR bandwidth for streamed weights, GB/s (a conservative share
            of the DDR interface: 32-bit DDR3-1066 on the Z-7020, 32-bit LPDDR4-1066 on
            Ultra96-V2, 64-bit DDR4-2400 on ZCU104/KV260, at roughly 50 % efficiency).
    """

    name: str
    part: str
    board_part: str
    ps: str
    luts: int
    ffs: int
    dsps: int
    bram36: int
    uram: int
    fabric_mhz: float
    dram_gbps: float

    @property
    def bram18(self) -> int:
        return 2 * self.bram36


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board("pynq-z2", "xc7z020clg400-1", "tul.com.tw:pynq-z2:part0:1.0", "zynq7",
              luts=53_200, ffs=106_400, dsps=220, bram36=140, uram=0, fabric_mhz=100.0,
              dram_gbps=2.0),
        Board("ultra96v2", "xczu3eg-sbva484-1-i", "avnet.com:ultra96v2:part0:1.2", "zynqmp",
              luts=70_560, ffs=141_120, dsps=360, bram36=216, uram=0, fabric_mhz=200.0,
              dram_gbps=2.0),
        Board("zcu104", "xczu7ev-ffvc1156-2-e", "xilinx.com:zcu104:part0:1.1", "zynqmp",
              luts=230_400, ffs=460_800, dsps=1_728, bram36=312, uram=96, fabric_mhz=200.0,
              dram_gbps=9.0),
        Board("kv260", "xck26-sfvc784-2LV-c", "xilinx.com:kv260_som:part0:1.3", "zynqmp",
              luts=117_120, ffs=234_240, dsps=1_248, bram36=144, uram=64, fabric_mhz=200.0,
              dram_gbps=9.0),
    )
}


class BoardError(ValueError):
    """An unknown board name."""


def get_board(name: str) -> Board:
    """The :class:`Board` called ``name`` (case-insensitive; ``-``/``_`` ignored).

    Raises:
        BoardError: for a name that is not one of :data:`BOARDS`, listing the known ones.
    """
    key = name.lower().replace("_", "").replace("-", "")
    for b in BOARDS.values():
        if b.name.replace("-", "") == key:
            return b
    raise BoardError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
