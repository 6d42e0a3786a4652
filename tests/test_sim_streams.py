# amaranth: UnusedElaboratable=no
"""The testbench base (sim/streams.py): run options, pause generators, and the idle /
back-pressure inserters driving a design with exact cycle counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from amaranth import unsigned
from amaranth.lib import data

from hw.stream_utils import StreamDuplicator
from sim.streams import (pack_lanes, pause_generator, port_spec, stall_free, unpack_lanes,
                         worst_slowdown)
from sim.tb_multistream import run_multistream


def test_random_pauses_are_seeded_per_port():
    a = list(itertools.islice(pause_generator(0.3, "1:idle:i"), 10_000))
    b = list(itertools.islice(pause_generator(0.3, "1:idle:i"), 10_000))
    c = list(itertools.islice(pause_generator(0.3, "1:idle:offsets"), 10_000))
    assert a == b and a != c
    assert 2_800 < sum(a) < 3_200
    assert all(itertools.islice(pause_generator(1.0, "x"), 1000))
    assert pause_generator(0.0, "x") is None


def test_pause_patterns_repeat():
    gen = pause_generator([0, 0, 1], "unused")
    assert list(itertools.islice(gen, 7)) == [False, False, True, False, False, True, False]
    assert pause_generator([0, 0], "x") is None


@pytest.mark.parametrize("spec", [1.5, -0.1, [], [0, 2]])
def test_bad_pause_specs_are_refused(spec):
    with pytest.raises(ValueError, match="pause"):
        pause_generator(spec, "x")


def test_run_options():
    assert stall_free({"stall": 0.0, "backpressure": 0.0, "seed": 3})
    assert stall_free({"stall": {"i": 0.0}, "backpressure": [0, 0]})
    assert not stall_free({"stall": {"offsets": 0.95}})
    assert not stall_free({"backpressure": [0, 1]})
    assert port_spec({"o1": 0.8}, "o0") == 0.0 and port_spec({"o1": 0.8}, "o1") == 0.8
    assert port_spec(0.3, "anything") == 0.3
    assert worst_slowdown({"stall": 0.5, "backpressure": {"o0": 0.75}}) == 4.0
    assert worst_slowdown({"stall": [0, 1]}) == 2.0


def test_lanes_round_trip():
    values = [-8, 7, 0, -1]
    assert unpack_lanes(pack_lanes(values, 4), 4, 4, signed=True) == values
    assert pack_lanes([1, 2], 8) == 0x0201


@pytest.mark.parametrize("run", [
    {"stall": [0, 1]},                       # a beat offered every other cycle
    {"backpressure": {"o1": [1, 0]}},        # one output ready every other cycle
], ids=["idle_pattern", "backpressure_pattern"])
def test_pattern_inserters_give_exact_cycles(tmp_path, run):
    """The duplicator passes a beat per cycle (``expected_cycles(n) == n``); with one port
    paused every other cycle it passes one per two: 2 n - 1 cycles from the first input beat
    to the last output beat, every beat bit-exact on both outputs."""
    beats = 50
    words = [pack_lanes(v, 8) for v in np.random.default_rng(5).integers(0, 256, (beats, 3))]
    dut = StreamDuplicator(data.ArrayLayout(unsigned(8), 3))
    assert dut.expected_cycles(beats) == beats
    (res,) = run_multistream(dut, "dup", {"i": words}, {"o0": words, "o1": words},
                             tmp_path=tmp_path, runs=[dict(run, seed=0)])
    assert res["cycles"] == 2 * beats - 1
    assert res["in_beats"] == beats and res["out_beats"] == 2 * beats
