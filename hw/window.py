"""Window generators on a circular line buffer: FINN's ConvolutionInputGenerator and CoDeNet's
hardware-friendly deformable sampler.

Both components share one engine (:class:`_LineBufferWindow`):

* **Buffer.** One ``amaranth.lib.memory.Memory`` of ``R`` row slots x ``W`` pixels x
  ``F = C/lanes`` folds; a word is one input beat (``lanes*bits`` bits). Address of
  (slot, x, f) is ``(slot*W + x)*F + f``. ``R`` is the number of input rows one output row's
  taps can span, plus the rows the writer fills ahead while that output row is read (the
  stride), so that with the reader as the bottleneck it never waits for the writer after the
  initial fill.
* **Writer.** Accepts input beats (NHWC, raster order, ``F`` beats per pixel) into slot after
  slot. It starts a new row only when a slot is free (``filled < R``); it knows nothing about
  frames, so frames follow each other with no gap.
* **Row control.** ``filled`` counts complete rows held, starting at the slot ``head``, which
  holds the lowest row the current output row still needs (``lo``). Before output row ``oy``
  starts, rows up to ``hi`` (its highest tap row inside the image) must be complete; when the
  row ends, the rows below the next output row's ``lo`` are freed (at the end of a frame: the
  rest of the frame, including rows no window uses). Waiting at row granularity keeps the
  address logic to one add/compare per beat.
* **Reader.** Walks (output pixel, taps, folds) in stream order and issues one memory read per
  cycle; a tap outside the image is a padding beat and reads as 0. The synchronous read port
  is the output register: its ``en`` is low while the output is stalled, so the data holds,
  and a ``valid`` flag follows it.

Latency (reader-bound layers): the first window is read in the cycle after the last beat of
its rows is written (the ``active`` flag is set in that cycle) and is on the output one cycle
later (memory read register). ``expected_cycles()`` gives the exact count for a stall-free
frame.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.memory_style import check_ram_style, memory_attrs
from hw.mvau import lut_multiplier
from hw.golden import conv_output_dim
from hw.schedule import window_row_issue

__all__ = ["SlidingWindowGenerator", "MinimalSlidingWindowGenerator", "DeformableSampler",
           "minimal_window_events", "minimal_window_steady_cycles",
           "line_buffer_memory", "pixel_buffer_memory", "sliding_window_class", "WINDOW_BUFFERS"]


def _max(a, b):
    return Mux(a > b, a, b)


def _min(a, b):
    return Mux(a < b, a, b)


def _lane_layout(bits: int, is_signed: bool, lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(signed(bits) if is_signed else unsigned(bits), lanes)


def line_buffer_memory(*, width: int, channels: int, lanes: int, bits: int, row_span: int,
                       row_stride: int) -> tuple[int, int, int]:
    """Geometry of the line buffer of :class:`_LineBufferWindow` (module docstring, "Buffer").

    The component builds its ``Memory`` from these numbers, and the compiler's estimate
    (:func:`hw.registry.buffer_memory`, :func:`sw.compiler.estimate.layer_resources`) reads them here, so
    the two cannot drift apart.

    Args:
        width: W, input pixels per row. channels: C. lanes: values per beat (``C % lanes == 0``).
        bits: bits per value. row_span: input rows one output row's taps span, minus 1
            (``(K-1)*dilation``; ``2N`` for the deformable sampler). row_stride: input rows
            between consecutive output rows (the stride; 1 for the sampler).

    Returns:
        ``(rows, depth, word_bits)``: ``rows = row_span + 1 + row_stride`` row slots (the taps'
        rows plus the ``row_stride`` rows the writer fills ahead while they are read), ``depth =
        rows * W * C/lanes`` words of ``word_bits = lanes * bits`` bits.
    """
    rows = row_span + 1 + row_stride
    return rows, rows * width * (channels // lanes), lanes * bits


class _LineBufferWindow(wiring.Component):
    """Shared engine: circular line buffer, writer, row control and read pipeline.

    Subclasses describe the output-row geometry (``row_stride``, ``row_pad``, ``row_span``,
    ``out_rows``: output row ``oy`` needs input rows ``oy*row_stride - row_pad`` ...
    ``+ row_span``, clipped to the image) and implement :meth:`_walker`, which yields, for the
    beat to issue now, its tap position and whether it is the last beat of the output row.
    """

    def __init__(self, signature_members: dict, *, height: int, width: int, channels: int,
                 lanes: int, bits: int, is_signed: bool, row_stride: int, row_pad: int,
                 row_span: int, out_rows: int, beats_per_out_row: int, ram_style: str = "auto"):
        self.ram_style = check_ram_style(type(self).__name__, ram_style)
        if lanes < 1 or channels % lanes:
            raise ValueError(f"{type(self).__name__}: channels {channels} not divisible by "
                             f"lanes {lanes}")
        if bits < 1:
            raise ValueError(f"{type(self).__name__}: bits must be >= 1, got {bits}")
        self.height, self.width, self.channels = height, width, channels
        self.lanes, self.bits, self.is_signed = lanes, bits, is_signed
        self.folds = channels // lanes
        self.row_stride, self.row_pad, self.row_span = row_stride, row_pad, row_span
        self.out_rows = out_rows
        self.beats_per_out_row = beats_per_out_row
        #: row slots in the line buffer, its size in words and the word width in bits
        #: (:func:`line_buffer_memory`)
        self.rows, self.buffer_words, self.word_bits = line_buffer_memory(
            width=width, channels=channels, lanes=lanes, bits=bits, row_span=row_span,
            row_stride=row_stride)
        self.frame_in_beats = height * width * self.folds
        self.frame_out_beats = out_rows * beats_per_out_row
        self.payload_layout = _lane_layout(bits, is_signed, lanes)
        # a signed width for every row/column coordinate that appears (taps reach beyond the
        # image by at most row_span + row_pad + row_stride on either side)
        reach = max(height, width) + 2 * (row_span + row_pad + row_stride) + 4
        self._coord_shape = signed(reach.bit_length() + 1)
        super().__init__(signature_members)

    # ---- row geometry, shared by the RTL and the cycle model ---------------------------------

    def _row_lo_hi(self, oy: int) -> tuple[int, int]:
        r0 = oy * self.row_stride - self.row_pad
        return max(0, r0), min(self.height - 1, r0 + self.row_span)

    def expected_cycles(self) -> int:
        """Cycles for one frame without stalls, first input beat to last output beat (inclusive).

        Exact for the RTL with a freshly reset buffer: a row-level event model of the writer
        (one beat per cycle, a new row only into a free slot) and the reader (one beat per cycle
        once its rows are complete). When the reader is the bottleneck (every layer with
        ``K*K*OW >= stride*W``) this reduces to the closed form

            ``need0 * W * C/lanes + 1 + frame_out_beats``

        where ``need0`` is the number of input rows the first output row needs (fill latency)
        and 1 is the cycle between the last of those rows and the first read (``active``
        register); the read register adds the last beat's cycle.
        """
        wf = self.width * self.folds
        done: list[int] = []  # cycle in which the last beat of input row r is written
        freed_at: dict[int, int] = {}  # input row -> cycle in which the reader frees it

        def complete(r: int) -> int:
            while len(done) <= r:
                q = len(done)
                start = done[q - 1] + 1 if q else 0
                if q >= self.rows:  # slot of row q - R must have been freed (seen a cycle later)
                    start = max(start, freed_at[q - self.rows] + 1)
                done.append(start + wf - 1)
            return done[r]

        last = None  # cycle of the last issued beat of the previous output row
        prev_lo = 0
        for oy in range(self.out_rows):
            lo, hi = self._row_lo_hi(oy)
            pend = lo - prev_lo  # rows to free before this output row
            ready_all = complete(hi)  # first cycle in which rows up to hi count as complete
            start, free = window_row_issue(last, 0 if last is None else last + 1, ready_all,
                                           complete(lo - 1) if pend else None)
            if pend:
                for r in range(prev_lo, lo):
                    freed_at[r] = free
            prev_lo = lo
            last = start + self.beats_per_out_row - 1
        # first input beat at cycle 0, last output beat leaves one cycle after its issue
        return last + 1 + 1

    # ---- RTL ---------------------------------------------------------------------------------

    def _walker(self, m: Module, row0, issue):
        """Build the tap walker; return ``(ok, iy, ix, f, row_last)`` for the beat to issue.

        ``row0`` is ``oy*row_stride - row_pad`` of the current output row; ``issue`` is high in
        cycles where the beat is taken. ``ok`` gates issuing (the sampler waits for an offset).
        """
        raise NotImplementedError

    def _buffer_ports(self, m: Module):
        """The buffer ``Memory`` (``buffer_words`` x ``word_bits``, ``ram_style``): its write
        port and its synchronous read port."""
        m.submodules.mem = mem = Memory(shape=unsigned(self.word_bits), depth=self.buffer_words,
                                        init=[], attrs=memory_attrs(self.ram_style, read_only=False))
        return mem.write_port(), mem.read_port(domain="sync")

    def _output_register(self, m: Module, rp, addr, iy, ix, take, advance, o_valid) -> None:
        """The read port as output register: read ``addr`` while ``advance``; a tap ``(iy, ix)``
        outside the image reads 0; ``o_valid`` follows ``take`` (a beat issued this cycle)."""
        pad = (iy < 0) | (iy >= self.height) | (ix < 0) | (ix >= self.width)
        pad_r = Signal()
        m.d.comb += [rp.en.eq(advance), rp.addr.eq(Mux(pad, 0, addr))]
        with m.If(advance):
            m.d.sync += [o_valid.eq(take), pad_r.eq(pad)]
        m.d.comb += [self.o.valid.eq(o_valid),
                     self.o.payload.as_value().eq(Mux(pad_r, 0, rp.data))]

    def elaborate(self, platform):
        m = Module()
        H, W, F, R = self.height, self.width, self.folds, self.rows
        WF = W * F
        S, P, SPAN, OH = self.row_stride, self.row_pad, self.row_span, self.out_rows
        cs = self._coord_shape

        wp, rp = self._buffer_ports(m)

        filled = Signal(range(R + 1))  # complete rows held, from slot `head`
        head = Signal(range(R))
        free = Signal(range(R + 1))  # rows released this cycle

        # ---- writer: slot after slot, a new row only into a free slot -------------------------
        w_addr = Signal(range(self.buffer_words))
        w_col = Signal(range(WF))  # beat within the row being written
        w_row_done = Signal()
        m.d.comb += self.i.ready.eq((w_col != 0) | (filled < R))
        w_fire = self.i.valid & self.i.ready
        m.d.comb += [
            wp.addr.eq(w_addr),
            wp.data.eq(self.i.payload.as_value()),
            wp.en.eq(w_fire),
            w_row_done.eq(w_fire & (w_col == WF - 1)),
        ]
        with m.If(w_fire):
            m.d.sync += [
                w_addr.eq(Mux(w_addr == self.buffer_words - 1, 0, w_addr + 1)),
                w_col.eq(Mux(w_col == WF - 1, 0, w_col + 1)),
            ]

        # ---- row control -------------------------------------------------------------------
        oy = Signal(range(OH))
        row0 = Signal(cs, init=-P)  # oy*S - P: top tap row of the current output row
        active = Signal()  # issuing the current output row
        pend = Signal(range(R + 1))  # rows still to free before the current output row

        last_row = oy == OH - 1
        lo = _max(row0, 0)
        hi = _min(row0 + SPAN, H - 1)
        need = hi - lo + 1
        row0_n = Mux(last_row, -P, row0 + S)
        lo_n = _max(row0_n, 0)
        need_n = _min(row0_n + SPAN, H - 1) - lo_n + 1
        k = Mux(last_row, H - lo, lo_n - lo)  # rows freed when this output row ends

        o_valid = Signal()
        advance = ~o_valid | self.o.ready  # output register free or emptied this cycle
        ok = Signal()
        issue = Signal()
        walker_ok, iy, ix, f, row_last = self._walker(m, row0, issue)
        m.d.comb += [
            ok.eq(walker_ok),
            issue.eq(active & ok & advance),
        ]

        # rows complete by the end of this cycle: a row whose last beat is written now can be
        # read from the next cycle on, so a reader keeping pace with the writer (K=1) never
        # waits a cycle for `filled`
        have = filled + w_row_done
        with m.If(issue & row_last):
            m.d.sync += [oy.eq(Mux(last_row, 0, oy + 1)), row0.eq(row0_n)]
            # start the next output row at once when its rows are there; else free now what
            # can be freed and wait (freeing alone never waits for rows beyond the buffer)
            with m.If(have >= k + need_n):
                m.d.comb += free.eq(k)
            with m.Else():
                m.d.sync += [active.eq(0), pend.eq(k)]
        with m.Elif(~active):
            with m.If(have >= pend + need):
                m.d.comb += free.eq(pend)
                m.d.sync += [active.eq(1), pend.eq(0)]
            with m.Elif(have >= pend):
                m.d.comb += free.eq(pend)
                m.d.sync += pend.eq(0)

        m.d.sync += filled.eq(filled + w_row_done - free)
        head_sum = head + free
        m.d.sync += head.eq(Mux(head_sum >= R, head_sum - R, head_sum))

        # ---- address and read pipeline -------------------------------------------------------
        slot_sum = head + (iy - lo)  # iy - lo is in [0, SPAN] for every tap inside the image
        slot = Mux(slot_sum >= R, slot_sum - R, slot_sum)
        # constant multiplies of the address in LUTs: Yosys put 17 of them on DSP48s in the
        # codenet256 target design, DSPs the compiler's estimate leaves to the MVAU/VVAUs
        row_base = lut_multiplier(m, slot * W, range(R * W), "row_base")
        addr_bits = max(1, (self.buffer_words - 1).bit_length())
        # a padding tap's negative pixel index wraps here; its address is masked below
        addr = lut_multiplier(m, (row_base + ix) * F, signed(addr_bits + 1), "pixel_addr") + f
        self._output_register(m, rp, addr, iy, ix, active & ok, advance, o_valid)
        return m


class SlidingWindowGenerator(_LineBufferWindow):
    """FINN's ConvolutionInputGenerator (sliding window / im2col on a stream).

    Parameters
    ----------
    ifm_dim: ``(H, W)`` input size in pixels.
    channels: C. kernel: K (square). stride, pad, dilation: pixels; padding reads 0.
        ``pad <= (kernel-1)*dilation`` (every output row has a tap row inside the image).
    lanes: values per beat, on input and output (SIMD of the consuming MVAU in standard order,
        PE of the consuming VVAU in depthwise order); ``C % lanes == 0``.
    depthwise: stream order, see below. bits, signed: type of each value.
    ram_style: FINN's ``ram_style`` of the line buffer (``"auto"``, ``"block"``,
        ``"distributed"``, ``"ultra"``), a Verilog ``ram_style`` attribute on it
        (:mod:`hw.memory_style`); ``"auto"`` (default) adds none. Another value raises
        ``ValueError``.

    Ports
    -----
    ``i``: ``In(stream.Signature(ArrayLayout(unsigned(bits) | signed(bits), lanes)))``: the
        ``[H, W, C]`` feature map, NHWC raster order, ``C/lanes`` beats per pixel.
    ``o``: ``Out(...)``, same payload: per output pixel (``OH x OW`` in raster order) the window,
        standard order ``(ky, kx, C/lanes)`` or depthwise order ``(C/lanes, ky, kx)``, each beat
        ``lanes`` consecutive channels; exactly ``hw.golden.sliding_window(x, kernel, stride,
        pad, dilation, depthwise, lanes)`` flattened. Frames follow back to back.

    Resources: one memory of ``rows = (K-1)*dilation + 1 + stride`` row slots x W x C/lanes
    words of ``lanes*bits`` bits (:attr:`buffer_words`).

    Cycles per frame (:meth:`expected_cycles`, no stalls): ``OH*OW*K*K*C/lanes`` output beats
    plus the fill ``need0*W*C/lanes + 1`` (``need0 = min(H-1, (K-1)*dilation - pad) + 1`` rows
    before the first window); layers where the input is the bottleneck
    (``stride*W > K*K*OW``, e.g. 1x1 stride 2) take longer, and the model covers that exactly.
    """

    @staticmethod
    def buffer_memory(*, ifm_dim: tuple[int, int], channels: int, kernel: int, stride: int,
                      dilation: int = 1, lanes: int, bits: int = 8) -> tuple[int, int]:
        """``(depth, word_bits)`` of the line-buffer ``Memory`` this component builds for these
        constructor arguments: ``((K-1)*dilation + 1 + stride) * W * C/lanes`` words of
        ``lanes*bits`` bits (:func:`line_buffer_memory`). No validation (the constructor's)."""
        _, depth, word_bits = line_buffer_memory(
            width=int(ifm_dim[1]), channels=channels, lanes=lanes, bits=bits,
            row_span=(kernel - 1) * dilation, row_stride=stride)
        return depth, word_bits

    def __init__(self, *, ifm_dim: tuple[int, int], channels: int, kernel: int, stride: int,
                 pad: int, dilation: int = 1, lanes: int, depthwise: bool, bits: int = 8,
                 signed: bool = False, ram_style: str = "auto"):
        h, w = (int(v) for v in ifm_dim)
        if kernel < 1 or stride < 1 or dilation < 1 or pad < 0:
            raise ValueError(f"SlidingWindowGenerator: bad geometry kernel={kernel} "
                             f"stride={stride} pad={pad} dilation={dilation}")
        span = (kernel - 1) * dilation
        if pad > span:
            raise ValueError(f"SlidingWindowGenerator: pad {pad} > (kernel-1)*dilation {span}: "
                             f"windows entirely in padding are not supported")
        oh = conv_output_dim(h, kernel, stride, pad, dilation)
        ow = conv_output_dim(w, kernel, stride, pad, dilation)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"SlidingWindowGenerator: kernel {kernel} (dilation {dilation}) "
                             f"does not fit input {h}x{w} with pad {pad}")
        self.kernel, self.stride, self.pad, self.dilation = kernel, stride, pad, dilation
        self.depthwise = depthwise
        self.ofm_dim = (oh, ow)
        lay = _lane_layout(bits, signed, lanes)
        super().__init__(
            {"i": In(stream.Signature(lay)), "o": Out(stream.Signature(lay))},
            height=h, width=w, channels=channels, lanes=lanes, bits=bits, is_signed=signed,
            row_stride=stride, row_pad=pad, row_span=span, out_rows=oh,
            beats_per_out_row=ow * kernel * kernel * (channels // lanes), ram_style=ram_style)

    def _walker(self, m, row0, issue):
        K, D, S, P, F = self.kernel, self.dilation, self.stride, self.pad, self.folds
        OW = self.ofm_dim[1]
        cs = self._coord_shape
        ox = Signal(range(OW))
        col0 = Signal(cs, init=-P)  # ox*S - P
        ky = Signal(range(K))
        kx = Signal(range(K))
        dy = Signal(range((K - 1) * D + 1))  # ky*D, kept as a counter
        dx = Signal(range((K - 1) * D + 1))
        f = Signal(range(F))

        ky_last, kx_last, f_last = ky == K - 1, kx == K - 1, f == F - 1
        tap_last = ky_last & kx_last & f_last

        def step_kx():
            m.d.sync += [kx.eq(Mux(kx_last, 0, kx + 1)), dx.eq(Mux(kx_last, 0, dx + D))]

        def step_ky():
            m.d.sync += [ky.eq(Mux(ky_last, 0, ky + 1)), dy.eq(Mux(ky_last, 0, dy + D))]

        with m.If(issue):
            if self.depthwise:  # (f, ky, kx): kx fastest
                step_kx()
                with m.If(kx_last):
                    step_ky()
                    with m.If(ky_last):
                        m.d.sync += f.eq(Mux(f_last, 0, f + 1))
            else:  # (ky, kx, f): f fastest
                m.d.sync += f.eq(Mux(f_last, 0, f + 1))
                with m.If(f_last):
                    step_kx()
                    with m.If(kx_last):
                        step_ky()
            with m.If(tap_last):
                m.d.sync += [
                    ox.eq(Mux(ox == OW - 1, 0, ox + 1)),
                    col0.eq(Mux(ox == OW - 1, -P, col0 + S)),
                ]
        # for MinimalSlidingWindowGenerator, whose addresses and flow control follow the taps
        self._walk = {"ox": ox, "col0": col0, "dy": dy, "dx": dx, "f": f, "tap_last": tap_last}
        return 1, row0 + dy, col0 + dx, f, tap_last & (ox == OW - 1)


#: FINN-style ``window_buffer`` folding choices of a SlidingWindow layer: ``"rows"``
#: (:class:`SlidingWindowGenerator`, row slots, the default) and ``"minimal"``
#: (:class:`MinimalSlidingWindowGenerator`, pixel-granular, less memory)
WINDOW_BUFFERS = ("rows", "minimal")


def sliding_window_class(window_buffer: str = "rows") -> type:
    """The SlidingWindow component for a ``window_buffer`` choice (:data:`WINDOW_BUFFERS`).

    Raises:
        ValueError: another value.
    """
    if window_buffer not in WINDOW_BUFFERS:
        raise ValueError(f"window_buffer must be one of {WINDOW_BUFFERS}, got {window_buffer!r}")
    return MinimalSlidingWindowGenerator if window_buffer == "minimal" else SlidingWindowGenerator


def pixel_buffer_memory(*, width: int, channels: int, lanes: int, bits: int, span: int,
                        stride: int) -> tuple[int, int, int]:
    """Geometry of the pixel buffer of :class:`MinimalSlidingWindowGenerator`.

    Args:
        width: W, input pixels per row. channels: C. lanes: values per beat. bits: per value.
        span: ``(K-1)*dilation``. stride: S.

    Returns:
        ``(pixels, depth, word_bits)``: ``pixels = span*W + span + 1 + S`` (a window's taps
        span ``span*W + span + 1`` pixels in raster order; the writer fills the ``S`` pixels
        the next window in the row needs while the current one is read), ``depth = pixels *
        C/lanes`` words of ``word_bits = lanes * bits`` bits. FINN's RTL
        ConvolutionInputGenerator ("default" style) sizes its buffer the same way, the
        ``(K-1)`` rows plus ``K`` pixels below the ``K + stride`` rows of the row-slot engine.
    """
    pixels = span * width + span + 1 + stride
    return pixels, pixels * (channels // lanes), lanes * bits


def _minimal_window_geometry(*, ifm_dim, kernel, stride, pad, dilation):
    """Per output row ``oy``: ``(lo, hi)``; ``keep`` per row; per output column: ``(cl, ch)``.

    ``lo``/``hi``: lowest/highest tap row inside the image; ``cl``/``ch``: same for columns;
    ``keep``: the next output row starts at the same ``lo`` (top padding), so the oldest pixel
    still needed is the row's first, not the window's."""
    H, W = ifm_dim
    span = (kernel - 1) * dilation
    OH, OW = conv_output_dim(H, kernel, stride, pad, dilation), conv_output_dim(W, kernel, stride, pad, dilation)
    rows = [(max(0, oy * stride - pad), min(H - 1, oy * stride - pad + span)) for oy in range(OH)]
    keep = [oy + 1 < OH and rows[oy + 1][0] == rows[oy][0] for oy in range(OH)]
    cols = [(max(0, ox * stride - pad), min(W - 1, ox * stride - pad + span)) for ox in range(OW)]
    return rows, keep, cols


def minimal_window_spans(ifm_dim, kernel: int, stride: int, pad: int, dilation: int,
                         folds: int) -> tuple[int, list[int], list[int]]:
    """``(buffer pixels, oldest, newest)`` of the minimal window engine: how many pixels its
    buffer holds, and for each output window (raster order) the index of the oldest pixel it
    still needs and of the newest one it reads (pixels in raster order within the frame)."""
    W = ifm_dim[1]
    n_pix = pixel_buffer_memory(width=W, channels=folds, lanes=1, bits=1,
                                span=(kernel - 1) * dilation, stride=stride)[0]
    rows, keep, cols = _minimal_window_geometry(ifm_dim=ifm_dim, kernel=kernel, stride=stride,
                                                pad=pad, dilation=dilation)
    oldest, newest = [], []
    for oy, (lo, hi) in enumerate(rows):
        for cl, ch in cols:
            oldest.append(lo * W + (0 if keep[oy] else cl))
            newest.append(hi * W + ch)
    return n_pix, oldest, newest


def minimal_window_events(*, ifm_dim: tuple[int, int], folds: int, kernel: int, stride: int,
                          pad: int, dilation: int = 1) -> tuple[list[int], list[int]]:
    """Stall-free event model of one frame of :class:`MinimalSlidingWindowGenerator` from reset.

    The writer takes one beat per cycle (``folds`` beats per pixel) and starts a pixel only
    while fewer than ``pixels`` (:func:`pixel_buffer_memory`) are held from the oldest one still
    needed; that count drops the cycle after a window's last beat issues. A window's first beat
    issues the cycle after its newest pixel's last beat is written, and ``K*K*folds`` beats
    follow back to back.

    Returns:
        ``(starts, ends)``: cycle of each window's first and last issued beat (raster order),
        the first input beat in cycle 0.
    """
    H, W = ifm_dim
    F = folds
    kkf = kernel * kernel * F
    n_pix, oldest, newest = minimal_window_spans(ifm_dim, kernel, stride, pad, dilation, F)
    done: list[int] = []  # cycle in which pixel p's last beat is written
    starts: list[int] = []
    ends: list[int] = []
    free_win = 0  # first window whose oldest pixel is above p - n_pix

    def complete(p: int) -> int:
        nonlocal free_win
        while len(done) <= p:
            q = len(done)
            start = done[q - 1] + 1 if q else 0
            while free_win < len(oldest) and oldest[free_win] <= q - n_pix:
                free_win += 1
            if free_win > 0:  # the count drops the cycle after window free_win-1 ends
                start = max(start, ends[free_win - 1] + 1)
            done.append(start + F - 1)
        return done[p]

    for j in range(len(oldest)):
        ready = complete(newest[j]) + 1
        b = ready if j == 0 else max(ends[j - 1] + 1, ready)
        starts.append(b)
        ends.append(b + kkf - 1)
    return starts, ends


def minimal_window_steady_cycles(*, ifm_dim: tuple[int, int], folds: int, kernel: int,
                                 stride: int, pad: int, dilation: int = 1) -> int:
    """Cycles per frame of :class:`MinimalSlidingWindowGenerator` in a stream of frames,
    without the first frame's fill: the output beats plus every cycle the reader waits for the
    writer after the first window (:func:`minimal_window_events`), or the input beats
    (``H*W*folds``) if more. The compiler's :func:`sw.compiler.estimate.analytic_cycles` for it."""
    starts, ends = minimal_window_events(ifm_dim=ifm_dim, folds=folds, kernel=kernel,
                                         stride=stride, pad=pad, dilation=dilation)
    waits = sum(starts[j] - ends[j - 1] - 1 for j in range(1, len(starts)))
    out_beats = len(starts) * kernel * kernel * folds
    return max(out_beats + waits, ifm_dim[0] * ifm_dim[1] * folds)


class MinimalSlidingWindowGenerator(SlidingWindowGenerator):
    """:class:`SlidingWindowGenerator` on a pixel-granular circular buffer of
    ``(K-1)*dilation`` rows plus ``(K-1)*dilation + 1 + stride`` pixels (FINN's ``window_buffer``
    choice ``"minimal"``; :func:`pixel_buffer_memory`) instead of ``(K-1)*dilation + 1 +
    stride`` full rows: 2 rows + 4 pixels instead of 4 rows for a 3x3 stride-1 window,
    2 rows + 5 pixels instead of 5 rows at stride 2. Same parameters, ports and output stream,
    bit for bit.

    Flow control counts pixels, not rows: ``held`` is the number of written pixels from the
    oldest pixel the current window (or a later one) still needs, in raster order. The writer
    starts a pixel only while ``held < pixels``; the reader starts a window once its newest
    pixel is written (``held > newest - oldest``). Addresses are kept modulo the buffer by
    constant increments (per window, per output row, per frame), so no multiplier is built.

    Cost: a stride-S layer's writer can run only ``S`` pixels ahead of the window being read,
    so the ``(S-1)`` input rows between output rows are written while the reader waits:
    ``expected_cycles()`` (exact, :func:`minimal_window_events`) and :meth:`steady_cycles`
    count it. Stride-1 layers lose about nothing.
    """

    @staticmethod
    def buffer_memory(*, ifm_dim: tuple[int, int], channels: int, kernel: int, stride: int,
                      dilation: int = 1, lanes: int, bits: int = 8) -> tuple[int, int]:
        """``(depth, word_bits)`` of the pixel buffer (:func:`pixel_buffer_memory`)."""
        _, depth, word_bits = pixel_buffer_memory(
            width=int(ifm_dim[1]), channels=channels, lanes=lanes, bits=bits,
            span=(kernel - 1) * dilation, stride=stride)
        return depth, word_bits

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        span = (self.kernel - 1) * self.dilation
        #: pixels held, words and word width (:func:`pixel_buffer_memory`); ``rows`` is the
        #: number of input rows the buffer spans (rounded up), for reports
        self.pixels, self.buffer_words, self.word_bits = pixel_buffer_memory(
            width=self.width, channels=self.channels, lanes=self.lanes, bits=self.bits,
            span=span, stride=self.stride)
        self.rows = -(-self.pixels // self.width)

    # ---- geometry and cycle model, shared with the compiler ---------------------------------

    def _geometry_args(self) -> dict:
        return dict(ifm_dim=(self.height, self.width), folds=self.folds, kernel=self.kernel,
                    stride=self.stride, pad=self.pad, dilation=self.dilation)

    def expected_cycles(self) -> int:
        """Cycles for one frame without stalls, first input beat to last output beat
        (inclusive), exact for the RTL from reset (:func:`minimal_window_events`; the read
        register adds the last beat's cycle)."""
        _, ends = minimal_window_events(**self._geometry_args())
        return ends[-1] + 1 + 1

    def steady_cycles(self) -> int:
        """Cycles per frame in a stream of frames (:func:`minimal_window_steady_cycles`)."""
        return minimal_window_steady_cycles(**self._geometry_args())

    # ---- RTL -------------------------------------------------------------------------------

    def elaborate(self, platform):
        from amaranth.hdl import Array

        m = Module()
        H, W, F, S, P = self.height, self.width, self.folds, self.stride, self.pad
        K, D = self.kernel, self.dilation
        span = (K - 1) * D
        OH, OW = self.ofm_dim
        NP, NW = self.pixels, self.buffer_words
        geometry = {k: v for k, v in self._geometry_args().items() if k != "folds"}
        rows, _, cols = _minimal_window_geometry(**geometry)

        wp, rp = self._buffer_ports(m)

        # held: written pixels from the oldest one still needed (negative at a frame's end,
        # while the writer finishes rows no window uses)
        held = Signal(signed((H * W + NP).bit_length() + 1))

        # ---- writer: one beat per cycle, a new pixel only while held < NP ------------------
        w_addr = Signal(range(NW))
        w_f = Signal(range(F))
        m.d.comb += self.i.ready.eq((w_f != 0) | (held < NP))
        w_fire = self.i.valid & self.i.ready
        pix_done = Signal()
        m.d.comb += [
            wp.addr.eq(w_addr), wp.data.eq(self.i.payload.as_value()), wp.en.eq(w_fire),
            pix_done.eq(w_fire & (w_f == F - 1)),
        ]
        with m.If(w_fire):
            m.d.sync += [w_addr.eq(Mux(w_addr == NW - 1, 0, w_addr + 1)),
                         w_f.eq(Mux(w_f == F - 1, 0, w_f + 1))]

        # ---- reader ------------------------------------------------------------------------
        oy = Signal(range(OH))
        row0 = Signal(self._coord_shape, init=-P)
        o_valid = Signal()
        advance = ~o_valid | self.o.ready
        ok = Signal()
        issue = Signal()
        _, iy, ix, f, row_last = self._walker(m, row0, issue)
        wk = self._walk
        col0, dy, dx = wk["col0"], wk["dy"], wk["dx"]
        last_row = oy == OH - 1
        keep = ~last_row & (row0 + S <= 0)
        lo = _max(row0, 0)
        hi = _min(row0 + span, H - 1)
        cl = _max(col0, 0)
        ch = _min(col0 + span, W - 1)
        # (hi - lo) * W and (lo_next - lo) * W from constant tables: no multiplier
        row_words = Array([r * W for r in range(span + 1)])
        step_rows = Array([r * W for r in range(S + 1)])
        newest_rel = Signal(range(NP))
        m.d.comb += newest_rel.eq(row_words[hi - lo] + ch - Mux(keep, 0, cl))
        win_start = (dy == 0) & (dx == 0) & (f == 0)
        m.d.comb += [ok.eq(~win_start | (held > newest_rel)), issue.eq(ok & advance)]

        # oldest pixel still needed moves on when a window's last beat issues
        lo_n = _max(row0 + S, 0)
        lo_last, _ = rows[-1]
        cl_last, _ = cols[-1]
        delta = Signal(range(H * W + 1))
        with m.If(~wk["tap_last"]):
            m.d.comb += delta.eq(0)
        with m.Elif(~row_last):
            m.d.comb += delta.eq(Mux(keep, 0, _max(col0 + S, 0) - cl))
        with m.Elif(~last_row):
            m.d.comb += delta.eq(step_rows[lo_n - lo] - Mux(keep, 0, cl))
        with m.Else():
            m.d.comb += delta.eq(H * W - (lo_last * W + cl_last))
        m.d.sync += held.eq(held + pix_done - Mux(issue, delta, 0))
        with m.If(issue & row_last):
            m.d.sync += [oy.eq(Mux(last_row, 0, oy + 1)), row0.eq(Mux(last_row, -P, row0 + S))]

        # ---- addresses modulo NW, constant increments ----------------------------------------
        def wrap(v):
            return Mux(v >= NW, v - NW, v)

        row_base = Signal(range(NW), init=(-(P * W + P) * F) % NW)  # word of pixel (row0, -P)
        win_base = Signal(range(NW), init=(-(P * W + P) * F) % NW)  # word of pixel (row0, col0)
        row_step, frame_step = (S * W * F) % NW, ((H * W - (OH - 1) * S * W) * F) % NW
        with m.If(issue & wk["tap_last"]):
            with m.If(~row_last):
                m.d.sync += win_base.eq(wrap(win_base + (S * F) % NW))
            with m.Else():
                nxt = wrap(row_base + Mux(last_row, frame_step, row_step))
                m.d.sync += [row_base.eq(nxt), win_base.eq(nxt)]
        tap_words = Array([y * W * F for y in range(span + 1)])
        col_words = Array([x * F for x in range(span + 1)])
        tap = wrap(win_base + tap_words[dy] + col_words[dx])  # tap offset < NW: one wrap
        self._output_register(m, rp, tap + f, iy, ix, ok, advance, o_valid)
        return m


class DeformableSampler(_LineBufferWindow):
    """CoDeNet's hardware-friendly deformable 3x3 sampling (docs/contracts.md default form).

    For output pixel ``(y, x)`` (one per input pixel) with offset ``d`` the nine taps are
    ``(y + (ky-1)*d, x + (kx-1)*d)``; taps outside the image read 0.

    Parameters
    ----------
    ifm_dim: ``(H, W)`` in pixels. channels: C. max_offset: N, offsets lie in ``[0, N]``.
    lanes: PE of the consuming VVAU (``C % lanes == 0``). bits, signed: feature type.
    offset_bits: width of an offset (default: bits to hold N). Offsets above N (possible only
        when ``offset_bits`` is wider than needed) are clamped to N.
    ram_style: FINN's ``ram_style`` of the line buffer, as for
        :class:`SlidingWindowGenerator` (default ``"auto"``: no attribute).

    Ports
    -----
    ``i``: features ``[H, W, C]``, NHWC raster order, ``C/lanes`` beats of ``lanes`` values.
    ``offsets``: ``In(stream.Signature(ArrayLayout(unsigned(offset_bits), 1)))``: one offset per
        output pixel, raster order. It may arrive late or early (one is buffered).
    ``o``: per output pixel, depthwise order ``(C/lanes, 9, lanes)``; exactly
        ``hw.golden.deformable_sample(x, offsets, max_offset, lanes)`` flattened.

    Resources: one memory of ``rows = 2N+2`` row slots x W x C/lanes words of ``lanes*bits``
    bits (:attr:`buffer_words`); rows ``y-N .. y+N`` serve output row ``y`` while row
    ``y+N+1`` is written.

    Cycles per frame (:meth:`expected_cycles`, no stalls, offsets always available):
    ``H*W*9*C/lanes`` output beats plus the fill ``need0*W*C/lanes + 1`` with
    ``need0 = min(H, N+1)`` rows.

    Flow: features are taken up to ``2N+2`` rows ahead of the output, independently of the
    offsets; the first output needs ``N+1`` feature rows and the first offset.
    """

    @staticmethod
    def buffer_memory(*, ifm_dim: tuple[int, int], channels: int, max_offset: int = 7,
                      lanes: int, bits: int = 8) -> tuple[int, int]:
        """``(depth, word_bits)`` of the line-buffer ``Memory`` this component builds for these
        constructor arguments: ``(2N + 2) * W * C/lanes`` words of ``lanes*bits`` bits
        (:func:`line_buffer_memory` with span ``2N``, stride 1). No validation."""
        _, depth, word_bits = line_buffer_memory(
            width=int(ifm_dim[1]), channels=channels, lanes=lanes, bits=bits,
            row_span=2 * max_offset, row_stride=1)
        return depth, word_bits

    def __init__(self, *, ifm_dim: tuple[int, int], channels: int, max_offset: int = 7,
                 lanes: int, bits: int = 8, offset_bits: int | None = None,
                 signed: bool = False, ram_style: str = "auto"):
        h, w = (int(v) for v in ifm_dim)
        if max_offset < 0:
            raise ValueError(f"DeformableSampler: max_offset must be >= 0, got {max_offset}")
        need_bits = max(1, int(max_offset).bit_length())
        if offset_bits is None:
            offset_bits = need_bits
        if offset_bits < need_bits:
            raise ValueError(f"DeformableSampler: offset_bits {offset_bits} cannot hold "
                             f"max_offset {max_offset} (needs {need_bits})")
        self.max_offset = max_offset
        self.offset_bits = offset_bits
        self.offset_layout = data.ArrayLayout(unsigned(offset_bits), 1)
        lay = _lane_layout(bits, signed, lanes)
        super().__init__(
            {"i": In(stream.Signature(lay)),
             "offsets": In(stream.Signature(self.offset_layout)),
             "o": Out(stream.Signature(lay))},
            height=h, width=w, channels=channels, lanes=lanes, bits=bits, is_signed=signed,
            row_stride=1, row_pad=max_offset, row_span=2 * max_offset, out_rows=h,
            beats_per_out_row=w * 9 * (channels // lanes), ram_style=ram_style)
        self.ofm_dim = (h, w)

    def _walker(self, m, row0, issue):
        N, W, F = self.max_offset, self.width, self.folds
        x = Signal(range(W))
        f = Signal(range(F))
        ky = Signal(range(3))
        kx = Signal(range(3))
        d_off = Signal(range(N + 1))  # offset of the pixel being walked
        d_buf = Signal(range(N + 1))  # next offset, taken from the stream ahead of time
        d_buf_valid = Signal()

        # one offset is buffered; the walker takes it on the first beat of a pixel, and the
        # slot refills during the pixel's remaining 9*C/lanes - 1 beats
        off_in = self.offsets.payload[0]
        m.d.comb += self.offsets.ready.eq(~d_buf_valid)
        with m.If(self.offsets.valid & self.offsets.ready):
            m.d.sync += [d_buf.eq(_min(off_in, N)), d_buf_valid.eq(1)]

        first = (f == 0) & (ky == 0) & (kx == 0)
        d = Mux(first, d_buf, d_off)
        ok = ~first | d_buf_valid

        ky_last, kx_last, f_last = ky == 2, kx == 2, f == F - 1
        pix_last = ky_last & kx_last & f_last
        with m.If(issue):
            with m.If(first):
                m.d.sync += [d_off.eq(d_buf), d_buf_valid.eq(0)]
            m.d.sync += kx.eq(Mux(kx_last, 0, kx + 1))
            with m.If(kx_last):
                m.d.sync += ky.eq(Mux(ky_last, 0, ky + 1))
                with m.If(ky_last):
                    m.d.sync += f.eq(Mux(f_last, 0, f + 1))
                    with m.If(f_last):
                        m.d.sync += x.eq(Mux(x == W - 1, 0, x + 1))

        cs = self._coord_shape
        dn = Signal(cs)
        m.d.comb += dn.eq(-d)
        dy = Mux(ky == 0, dn, Mux(ky == 1, 0, d))
        dx = Mux(kx == 0, dn, Mux(kx == 1, 0, d))
        y = row0 + N  # row0 = y - N
        return ok, y + dy, x + dx, f, pix_last & (x == W - 1)
