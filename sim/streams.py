"""cocotb drivers for Amaranth ``lib.stream`` ports (valid/ready/payload).

Amaranth flattens a stream port ``i`` into the Verilog signals ``i__valid``, ``i__ready`` and
``i__payload``. A payload of ``lanes`` values of ``width`` bits each is one flat vector with
lane 0 in the least significant bits (Amaranth ``data.ArrayLayout`` order).
"""

from __future__ import annotations

import random
from typing import Iterable, Sequence

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge


def pack_lanes(values: Sequence[int], width: int) -> int:
    """Pack lane values (lane 0 first; negative values in two's complement) into one int."""
    mask = (1 << width) - 1
    word = 0
    for lane, v in enumerate(values):
        word |= (int(v) & mask) << (lane * width)
    return word


def unpack_lanes(word: int, width: int, lanes: int, signed: bool) -> list[int]:
    """Inverse of :func:`pack_lanes`."""
    mask = (1 << width) - 1
    out = []
    for lane in range(lanes):
        v = (word >> (lane * width)) & mask
        if signed and v >> (width - 1):
            v -= 1 << width
        out.append(v)
    return out


class StreamSource:
    """Drives ``<name>__valid``/``__payload`` with beats, honouring ``__ready``.

    ``stall_prob`` is the chance, each cycle, that valid is held low (random input stalls).
    """

    def __init__(self, dut, name: str, clk, *, stall_prob: float = 0.0, seed: int = 0):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk = clk
        self.stall_prob = stall_prob
        self.rng = random.Random(seed)
        self.valid.value = 0

    async def send(self, words: Iterable[int]) -> None:
        for word in words:
            while self.stall_prob and self.rng.random() < self.stall_prob:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = int(word)
            while True:
                await RisingEdge(self.clk)
                if self.ready.value == 1:
                    break
        self.valid.value = 0


class StreamSink:
    """Takes beats from ``<name>__valid``/``__payload``, driving ``__ready``.

    ``backpressure_prob`` is the chance, each cycle, that ready is held low.
    Records every accepted word in :attr:`words` and the cycle of the last one in
    :attr:`last_cycle` (cycles counted from the sink's start).
    """

    def __init__(self, dut, name: str, clk, *, backpressure_prob: float = 0.0, seed: int = 1):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk = clk
        self.prob = backpressure_prob
        self.rng = random.Random(seed)
        self.words: list[int] = []
        self.first_cycle: int | None = None
        self.last_cycle: int | None = None
        self.ready.value = 0

    async def receive(self, count: int) -> list[int]:
        cycle = 0
        while len(self.words) < count:
            ready = 0 if (self.prob and self.rng.random() < self.prob) else 1
            self.ready.value = ready
            await RisingEdge(self.clk)
            cycle += 1
            if ready and self.valid.value == 1:
                self.words.append(int(self.payload.value))
                if self.first_cycle is None:
                    self.first_cycle = cycle
                self.last_cycle = cycle
        self.ready.value = 0
        return self.words
