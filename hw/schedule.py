"""Token schedules of the hardware components: in which clock cycle each beat is consumed and
produced, for any input arrival times, over a stream of frames.

Each function here is the same model as the component's ``expected_cycles()`` (the cycle
model the compiler's estimate and II come from), written for arbitrary arrival times instead of
an always-valid input: with every input beat available at cycle 0 and one frame, the last
output handshake plus one is exactly ``expected_cycles()`` (``tests/test_fifo_analytic.py``
checks that for every op). The analytical FIFO sizer (:mod:`sw.compiler.fifo_analytic`) runs them layer
after layer.

Conventions (all times are int64 numpy arrays of clock cycles, one entry per beat, frames back
to back, beats in stream order):

* ``arrivals``: the first cycle in which an input beat could be taken (its ``valid``); the
  component takes it at the earliest cycle >= its arrival that its own flow control allows
  (one beat per cycle per port).
* returned ``consume``: the cycle of each input handshake; ``produce``: the cycle of each
  output handshake, assuming the output is always ready (an infinitely deep FIFO behind it:
  that is the schedule whose FIFO levels the sizer measures).
* An inter-layer ``SyncFIFOBuffered`` shows a word written in cycle ``t`` at its read side in
  cycle ``t + 2`` (:data:`FIFO_LATENCY`), and its ``level`` counts it from ``t + 1`` until the
  cycle after it is read (:func:`fifo_peak_level`).

Every schedule is causal and monotone: later arrivals never make any beat earlier.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FIFO_LATENCY", "paced", "fifo_peak_level", "credited_schedule", "mvau_schedule",
           "vvau_schedule", "requant_schedule", "maxpool_schedule", "concat_schedule",
           "split_schedule", "duplicate_schedule", "add_schedule", "width_converter_schedule",
           "channel_shuffle_schedule", "upsample_schedule", "line_buffer_schedule",
           "minimal_window_schedule"]

#: write-to-read latency of ``amaranth.lib.fifo.SyncFIFOBuffered`` (cycles): the inner FIFO
#: counts the word one cycle after the write, its output register shows it one cycle later
FIFO_LATENCY = 2

_NEG = np.int64(-(1 << 50))


def _i64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.int64)


def paced(arrivals: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Cycles of a port that takes one beat per cycle, each at the earliest cycle >= its
    arrival (and >= ``start`` where given, per beat): ``t[i] = max(t[i-1] + 1, a[i])``, in
    closed form ``i + cummax(a[i] - i)``."""
    a = _i64(arrivals)
    if start is not None:
        a = np.maximum(a, start)
    if a.size == 0:
        return a.copy()
    i = np.arange(a.size, dtype=np.int64)
    return i + np.maximum.accumulate(a - i)


def fifo_peak_level(writes: np.ndarray, reads: np.ndarray) -> int:
    """Highest ``level`` of a ``SyncFIFOBuffered`` written at cycles ``writes`` and read at
    cycles ``reads`` (same beats, same order): ``level(c) = #{writes < c} - #{reads < c}``,
    largest in the cycle after a write. Raises ``ValueError`` if the beat counts differ."""
    w, r = _i64(writes), _i64(reads)
    if w.size != r.size:
        raise ValueError(f"FIFO with {w.size} writes but {r.size} reads")
    if w.size == 0:
        return 0
    read_by = np.searchsorted(r, w, side="right")  # reads in cycles <= the write's cycle
    return int(np.max(np.arange(1, w.size + 1) - read_by))


# ---- accumulate-and-emit layers behind hw.mvau.CreditedOutput --------------------------------

def credited_schedule(arrivals: np.ndarray, *, group: int, latency: int,
                      fifo_latency: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A stall-free pipeline that takes one input beat per cycle and emits one output beat per
    ``group`` input beats, ``latency + fifo_latency`` cycles after the group's last beat
    (:class:`hw.vvau.VVAU`: group ``K*K``, latency 3; :class:`hw.requant.Requantizer`: group 1,
    latency 3; the 2 is :attr:`hw.mvau.CreditedOutput.FIFO_LATENCY`). Returns ``(consume,
    produce)``."""
    c = paced(arrivals)
    return c, c[group - 1::group] + latency + fifo_latency


def vvau_schedule(arrivals, *, kernel_elems: int, latency: int = 3):
    """:class:`hw.vvau.VVAU`: ``(C/PE)*K*K*pixels + latency + 2`` cycles per frame."""
    return credited_schedule(arrivals, group=kernel_elems, latency=latency)


def requant_schedule(arrivals, *, latency: int = 3):
    """:class:`hw.requant.Requantizer` (latency 3) and :class:`hw.thresholding.Thresholding`
    (latency = its search stages): one beat per cycle, ``latency + 2`` cycles through."""
    return credited_schedule(arrivals, group=1, latency=latency)


def mvau_schedule(arrivals: np.ndarray, *, nf: int, sf: int, latency: int,
                  fifo_latency: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """:class:`hw.mvau.MVAU`: one issue per cycle, ``NF*SF`` issues per input vector; the
    ``SF`` input beats are taken by the issues of neuron fold 0, the later folds re-read the
    input buffer. Output beat ``n`` of a vector leaves ``latency + 2`` cycles after the issue
    of its last synapse fold. ``arrivals``: ``SF`` beats per vector."""
    a = _i64(arrivals)
    k = np.arange(a.size, dtype=np.int64)
    p, s = np.divmod(k, sf)
    virt = p * (nf * sf) + s  # issue index of input beat (p, s)
    c = virt + np.maximum.accumulate(a - virt) if a.size else a.copy()
    last = c[sf - 1::sf]  # issue of (p, fold 0, synapse fold SF-1)
    n = np.arange(nf, dtype=np.int64) * sf
    produce = (last[:, None] + n[None, :]).reshape(-1) + latency + fifo_latency
    return c, produce


# ---- stream plumbing ---------------------------------------------------------------------

def maxpool_schedule(arrivals, *, taps: int):
    """:class:`hw.pool.MaxPool`: one input beat per cycle, the output register is written on
    the last tap (output the next cycle)."""
    c = paced(arrivals)
    return c, c[taps - 1::taps] + 1


def split_schedule(arrivals, *, beats: list[int]):
    """:class:`hw.channel_ops.ChannelSplit`: combinational routing, per pixel ``beats[k]``
    input beats to output ``k`` in the same cycle. Returns ``(consume, [produce_k])``."""
    c = paced(arrivals)
    per = sum(beats)
    pix = c.reshape(-1, per)
    outs, o = [], 0
    for b in beats:
        outs.append(pix[:, o:o + b].reshape(-1).copy())
        o += b
    return c, outs


def duplicate_schedule(arrivals):
    """:class:`hw.stream_utils.StreamDuplicator`: both outputs in the input's cycle (with both
    outputs ready). Returns ``(consume, [produce0, produce1])``."""
    c = paced(arrivals)
    return c, [c, c.copy()]


def concat_schedule(arrivals: list[np.ndarray], *, beats: list[int]):
    """:class:`hw.channel_ops.Concat`: per pixel ``beats[0]`` beats from input 0, then
    ``beats[1]`` from input 1, ...; the output beat leaves in its input's cycle. Returns
    ``([consume_k], produce)``."""
    pixels = _i64(arrivals[0]).size // beats[0]
    merged = np.concatenate([_i64(a).reshape(pixels, b) for a, b in zip(arrivals, beats)], axis=1)
    out = paced(merged.reshape(-1))
    pix = out.reshape(pixels, -1)
    cons, o = [], 0
    for b in beats:
        cons.append(pix[:, o:o + b].reshape(-1).copy())
        o += b
    return cons, out


def add_schedule(arrivals: list[np.ndarray], *, latency: int = 2):
    """:class:`hw.channel_ops.Add`: one holding register per input; the join (both full) is in
    cycle ``J[n] = max(c0[n], c1[n]) + 1``, an input takes its next beat no earlier than the
    join that empties its register, and the sum leaves one cycle after the join. Returns
    ``([consume0, consume1], produce)``."""
    a0, a1 = _i64(arrivals[0]), _i64(arrivals[1])
    n = np.arange(a0.size, dtype=np.int64)
    # J[n] = max(a0[n], a1[n], J[n-1]) + 1
    join = n + np.maximum.accumulate(np.maximum(a0, a1) + 1 - n)
    prev = np.concatenate([[_NEG], join[:-1]])
    return [np.maximum(a0, prev), np.maximum(a1, prev)], join + (latency - 1)


def width_converter_schedule(arrivals, *, in_lanes: int, out_lanes: int):
    """:class:`hw.stream_utils.StreamWidthConverter`: a wire for equal lanes; down by ``k``:
    the ``k`` parts leave in the ``k`` cycles after the input is taken, the next input in the
    cycle the last part leaves; up by ``k``: the ``k``-th input beat completes the output
    register (output the next cycle)."""
    a = _i64(arrivals)
    if in_lanes == out_lanes:
        c = paced(a)
        return c, c
    if in_lanes > out_lanes:
        k = in_lanes // out_lanes
        n = np.arange(a.size, dtype=np.int64) * k
        c = n + np.maximum.accumulate(a - n)
        return c, (c[:, None] + 1 + np.arange(k, dtype=np.int64)[None, :]).reshape(-1)
    k = out_lanes // in_lanes
    c = paced(a)
    return c, c[k - 1::k] + 1


def channel_shuffle_schedule(arrivals, *, folds: int, max_iter: int = 200):
    """:class:`hw.channel_ops.ChannelShuffle`: two pixel slots. The writer fills slot
    ``p % 2`` one beat per cycle and starts pixel ``p`` only after pixel ``p - 2``'s last read
    (the slot's ``full`` clears the cycle after); the reader starts pixel ``p`` in the cycle
    of its last write or later, ``F`` reads back to back, output one cycle after each read.

    Solved as the least fixpoint of the writer/reader recurrences (vectorised iterations; a
    pixel-by-pixel loop if they do not settle in ``max_iter``)."""
    a = _i64(arrivals)
    F = folds
    P = a.size // F
    firsts = np.arange(P, dtype=np.int64) * F
    pF = firsts

    def reader(c):
        wlast = c[F - 1::F]
        rstart = pF + np.maximum.accumulate(wlast - pF)
        return rstart

    req = a.copy()
    c = paced(req)
    for _ in range(max_iter):
        rstart = reader(c)
        req = a.copy()
        if P > 2:
            req[firsts[2:]] = np.maximum(a[firsts[2:]], rstart[:-2] + F)  # rlast + 1
        c2 = paced(req)
        if np.array_equal(c2, c):
            break
        c = c2
    else:  # pixel by pixel
        c = np.empty_like(a)
        rstart = np.empty(P, dtype=np.int64)
        t = _NEG
        for p in range(P):
            lo = p * F
            t0 = t + 1
            if p >= 2:
                t0 = max(t0, rstart[p - 2] + F)
            seg = paced(a[lo:lo + F], np.full(F, t0, dtype=np.int64))
            c[lo:lo + F] = seg
            t = seg[-1]
            rstart[p] = max(seg[-1], rstart[p - 1] + F) if p else seg[-1]
    produce = (rstart[:, None] + 1 + np.arange(F, dtype=np.int64)[None, :]).reshape(-1)
    return c, produce


# ---- row buffers ---------------------------------------------------------------------------

def _row_bounds(a: np.ndarray, row_beats: int) -> np.ndarray:
    """Per row, ``max_b(a[b] - b)``: a row started at ``s`` has its last beat written at
    ``max(s, bound) + row_beats - 1``."""
    return (a.reshape(-1, row_beats) - np.arange(row_beats, dtype=np.int64)[None, :]).max(axis=1)


def upsample_schedule(arrivals, *, height: int, row_beats: int, factor: int):
    """:class:`hw.upsample.Upsample`: a ping-pong buffer of two input rows. The writer starts
    row ``q`` only after row ``q - 2`` was freed (the reader's last beat of it, seen a cycle
    later); the reader sends row ``q`` ``f*f`` times as many beats, starting in the cycle after
    the last one of row ``q - 1`` if row ``q`` is complete by then, else two cycles after it
    completes (``active`` register, read register). Output one cycle after each read."""
    a = _i64(arrivals)
    rows = a.size // row_beats
    bound = _row_bounds(a, row_beats)
    out_per_row = row_beats * factor * factor
    done = np.empty(rows, dtype=np.int64)
    start_w = np.full(rows, _NEG, dtype=np.int64)
    rstart = np.empty(rows, dtype=np.int64)
    last = None
    for q in range(rows):
        s = done[q - 1] + 1 if q else _NEG
        if q >= 2:
            s = max(s, rstart[q - 2] + out_per_row)  # freed at the last read, +1
            start_w[q] = s
        done[q] = max(s, bound[q]) + row_beats - 1
        if last is None:
            rstart[q] = done[q] + 1
        elif done[q] <= last:
            rstart[q] = last + 1
        else:
            rstart[q] = max(last + 1, done[q]) + 1
        last = rstart[q] + out_per_row - 1
    start = np.full(a.size, _NEG, dtype=np.int64)
    start[::row_beats] = start_w
    consume = paced(a, start)
    produce = (rstart[:, None] + 1 + np.arange(out_per_row, dtype=np.int64)[None, :]).reshape(-1)
    return consume, produce


def window_row_issue(last: int | None, first_idle: int, ready_all: int,
                     free_after: int | None) -> tuple[int, int | None]:
    """When a line-buffer window engine starts an output row (cycles), and when it frees the
    input rows the row no longer needs.

    Args:
        last: cycle of the previous output row's last beat (``None`` before the first row).
        first_idle: the first cycle the engine is idle (``last + 1``, or the stream's start).
        ready_all: first cycle in which every input row the output row reads is complete.
        free_after: for a row change that frees input rows, the cycle the last of them was
            completed (``None`` when no row is freed).

    Returns:
        ``(start, free)``: the first beat's cycle and the cycle the freed rows' slots are
        released (``None`` when no row is freed). A row change whose inputs are complete costs
        no bubble; otherwise freeing takes a cycle and the first beat waits for the inputs.
        Shared by :meth:`hw.window.SlidingWindow.expected_cycles` and
        :func:`line_buffer_schedule`, so the two agree by construction.
    """
    if last is not None and ready_all <= last:
        return last + 1, last
    if free_after is not None:
        free = max(first_idle, free_after)
        return (free + 1 if ready_all <= free else max(free + 1, ready_all) + 1), free
    return max(first_idle, ready_all) + 1, None


def line_buffer_schedule(arrivals, *, height: int, row_beats: int, rows: int,
                         out_rows: int, row_lo_hi, beats_per_out_row: int,
                         offsets: np.ndarray | None = None, pixel_beats: int = 0):
    """The row-slot line buffer of :class:`hw.window.SlidingWindowGenerator` and
    :class:`hw.window.DeformableSampler` (``_LineBufferWindow``), over a stream of frames:
    the row-level event model of ``expected_cycles()`` with input arrival times.

    Writer: one beat per cycle, a new row only into a free slot (row ``q`` after row
    ``q - rows`` is freed, seen a cycle later). Reader: output row ``oy`` needs input rows
    ``row_lo_hi(oy)``; at the end of a row it goes straight on if the next row's rows are
    complete, else it frees what it can and waits (``active`` register); reads back to back,
    output one cycle after each read (read register). Rows below the next output row's
    ``lo`` are freed at the end of each output row (at a frame's end, the rest of the frame).

    Deformable sampler (``offsets`` given: arrival times of one offset per output pixel,
    ``pixel_beats = 9*C/lanes``): the walker takes the buffered offset on a pixel's first beat
    and the offset port refills one cycle later, so a pixel starts no earlier than one cycle
    after its offset arrived; the offset is consumed at ``max(arrival, previous pixel's first
    beat + 1)``.

    Returns ``(consume, produce)`` or, with offsets, ``([consume, consume_offsets], produce)``.
    """
    a = _i64(arrivals)
    n_in_rows = a.size // row_beats
    frames = n_in_rows // height
    bound = _row_bounds(a, row_beats)
    done: list[int] = []
    freed_at: dict[int, int] = {}
    start_w = np.full(n_in_rows, _NEG, dtype=np.int64)

    def complete(r: int) -> int:
        while len(done) <= r:
            q = len(done)
            s = done[q - 1] + 1 if q else _NEG
            if q >= rows:
                # a row freed by the output row change being modelled now (or by the stream's
                # last output row): no next row's inputs are complete yet, so the reader frees
                # it in the cycle after its last beat
                s = max(s, freed_at.get(q - rows, last_issue + 1) + 1)
                start_w[q] = s
            done.append(int(max(s, bound[q]) + row_beats - 1))
        return done[r]

    off = None if offsets is None else _i64(offsets)
    per_row_pix = beats_per_out_row // pixel_beats if pixel_beats else 0
    pix_start = np.empty(0 if off is None else off.size, dtype=np.int64)
    row_start = np.empty(frames * out_rows, dtype=np.int64)
    last = None
    last_issue = 0
    prev_lo = 0
    j = 0
    for fr in range(frames):
        base = fr * height
        for oy in range(out_rows):
            lo, hi = row_lo_hi(oy)
            lo, hi = lo + base, hi + base
            pend = lo - prev_lo
            ready_all = complete(hi)
            start, free = window_row_issue(last, _NEG if last is None else last + 1, ready_all,
                                           complete(lo - 1) if pend else None)
            for r in range(prev_lo, lo):
                freed_at[r] = free
            prev_lo = lo
            if off is None:
                row_start[j] = start
                last = start + beats_per_out_row - 1
            else:
                k0 = j * per_row_pix
                req = off[k0:k0 + per_row_pix] + 1
                req[0] = max(req[0], start)
                v = np.arange(per_row_pix, dtype=np.int64) * pixel_beats
                pix_start[k0:k0 + per_row_pix] = v + np.maximum.accumulate(req - v)
                last = int(pix_start[k0 + per_row_pix - 1]) + pixel_beats - 1
            last_issue = last
            j += 1
    complete(n_in_rows - 1)  # rows no window uses (the tail of the last frame)
    start = np.full(a.size, _NEG, dtype=np.int64)
    start[::row_beats] = start_w
    consume = paced(a, start)
    if off is None:
        produce = (row_start[:, None] + 1
                   + np.arange(beats_per_out_row, dtype=np.int64)[None, :]).reshape(-1)
        return consume, produce
    produce = (pix_start[:, None] + 1 + np.arange(pixel_beats, dtype=np.int64)[None, :]).reshape(-1)
    prev_first = np.concatenate([[_NEG], pix_start[:-1] + 1])
    return [consume, np.maximum(off, prev_first)], produce


def minimal_window_schedule(arrivals, *, ifm_dim: tuple[int, int], folds: int, kernel: int,
                            stride: int, pad: int, dilation: int, frames: int):
    """:class:`hw.window.MinimalSlidingWindowGenerator` over a stream of frames: the event
    model of :func:`hw.window.minimal_window_events` with input arrival times. The writer
    starts a pixel only while fewer than ``pixels`` are held from the oldest one still needed
    (the count drops the cycle after a window's last beat); a window's first beat issues the
    cycle after its newest pixel's last beat is written, ``K*K*folds`` beats back to back,
    output one cycle after each read. Pixel indices run on across frames (the hardware knows
    no frames)."""
    from hw.window import minimal_window_spans

    a = _i64(arrivals)
    H, W = ifm_dim
    F = folds
    kkf = kernel * kernel * F
    n_pix, oldest1, newest1 = minimal_window_spans(ifm_dim, kernel, stride, pad, dilation, F)
    oldest = (np.asarray(oldest1)[None, :] + H * W * np.arange(frames)[:, None]).reshape(-1).tolist()
    newest = (np.asarray(newest1)[None, :] + H * W * np.arange(frames)[:, None]).reshape(-1).tolist()
    bound = _row_bounds(a, F).tolist()
    n_total = len(bound)
    done: list[int] = []
    pix_start = [int(_NEG)] * n_total
    starts: list[int] = []
    ends: list[int] = []
    free_win = 0
    nw = len(oldest)

    def complete(p: int) -> int:
        nonlocal free_win
        while len(done) <= p:
            q = len(done)
            s = done[q - 1] + 1 if q else int(_NEG)
            while free_win < nw and oldest[free_win] <= q - n_pix:
                free_win += 1
            if free_win > 0:
                s = max(s, ends[free_win - 1] + 1)
                pix_start[q] = s
            done.append(max(s, bound[q]) + F - 1)
        return done[p]

    for j in range(nw):
        ready = complete(newest[j]) + 1
        b = ready if j == 0 else max(ends[j - 1] + 1, ready)
        starts.append(b)
        ends.append(b + kkf - 1)
    if len(done) < n_total:  # pixels no window uses (the tail of the last frame)
        free_win = nw
        complete(n_total - 1)
    start = np.full(a.size, _NEG, dtype=np.int64)
    start[::F] = np.asarray(pix_start, dtype=np.int64)
    consume = paced(a, start)
    produce = (np.asarray(starts, dtype=np.int64)[:, None] + 1
               + np.arange(kkf, dtype=np.int64)[None, :]).reshape(-1)
    return consume, produce
