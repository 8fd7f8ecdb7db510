"""Bad columns and rows: a line of photosites offset in every frame.

A column (or row) whose photosites all read a little high or low -- a bad
column amplifier, a hot column in long exposures -- is a line in the mean
image over many photos, however different the scenes: the scenes' texture
averages out along a column of thousands of rows, the offset does not.

For every column ``x`` of a plane (one channel of a photo, one CFA sub-grid
of a raw mosaic) and every band of ``_BAND`` rows, the band's medians of

    mean[y, x] - mean[y, x - s]   and   mean[y, x] - mean[y, x + s]

are the column's offsets in that band against its same-colour neighbours
``s`` columns away on either side; over the bands their medians must agree
in sign (an edge that is the same in every photo -- the frame's border, a
fixed structure -- agrees with one side and is not a line); the medians
are those more than half the bands reach (of an even count's middle two,
the one nearer zero).  The column's offset, the mean of the two sides', is
judged against the robust spread (MAD) of all columns' offsets of the same
2x2 phase; a line defect's ``from``/``to`` are found to the photosite by a
change-point search (CUSUM) in the bands where the offset begins and ends
(see ``_refine``).  Rows: the same with the rows ``s`` above and below, per band of
``_BAND`` columns.  The plane is read one band of rows at a time (an array
or a band reader), so the working memory is a band and one value per band
and line.

With the temporal residual statistics (``hotpixel_shm.residual``), a line
must also be steady -- offset in every frame, not in a few, which the mean
alone cannot tell from a thin structure seen in two or three photos at the
same place (``_Steady``) -- and lines along part of the frame are found too,
as runs of bands (``_partial_lines``), their ``from``/``to`` by the CUSUM
over the line's residual mean.

This module is numerics only (numpy).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .bands import map_ordered

__all__ = ["LineDefect", "find_lines", "lines_memory_bytes", "Cancelled", "LINE_SIGMA", "RUN_SIGMA"]

#: A column's (row's) offset must be this many robust sigmas of all
#: columns' offsets.  Calibrated on simulated defect-free sets (464 sets of
#: 8 to 60 raw mosaics of varied scenes, 384 x 256, and of 16 to 24 JPEG
#: photos, q85 4:2:0, 480 x 320; see README's detection table): the highest
#: line score of a set exceeded 9 in 11 % of them, 12 in 3.4 %, 14 in 1.5 %,
#: 20 in 0.4 %, whatever the frame count.  Those tails are scenes, not
#: noise: a thin structure seen in two or three photos at the same column
#: (a pole) offsets the mean as a bad column would, and the mean alone
#: cannot tell them apart.  Of planted raw lines of 25 to 40 DN (12-bit),
#: 67 of 68 scored 14 or more with 16 or 24 frames, 56 of 68 with 8.
LINE_SIGMA = 14.0
# Rows per band (a line shorter than this is not reported).
_BAND = 32
#: With temporal residual statistics, a partial line is reported too: a
#: run of consecutive bands, each offset the same way by ``_RUN_BAND_SIGMA``
#: robust sigmas of all lines' offsets in that band and showing in the
#: residual, whose combined score (the bands' scores' sum over the square
#: root of their count) reaches ``RUN_SIGMA``, and steady in every frame
#: over its length (see ``_partial_lines`` and ``_Steady``).
RUN_SIGMA = 9.0
_RUN_BAND_SIGMA = 3.0
# The residual variance's excess on a line, relative to its neighbours',
# may pass its squared residual mean (something in a fraction q of the
# frames adds (1 - q) / q times that: q >= 1/2 passes) by this many robust
# sigmas of the same excess on nearby lines.
_STEADY_NOISE = 3.0
# A band's residual mean must show the offset by this many robust sigmas
# of nearby lines'.
_RESIDUAL_SIGMA = 4.0
# A line whose pixels' std over the frames is at most this fraction of its
# surroundings' is a static overlay, not a defect (as detect's static_ratio).
_STATIC_RATIO = 0.4
_STATIC_EXCESS = 0.25
# A partial line's band within _RING lines (photos; 4 same-colour lines in a
# raw mosaic) of a one-sided difference this many times its offset is the
# ringing of an edge in every frame.
_EDGE_RATIO = 3.0
# ... and one photosite's difference this many times (a clipped lamp's side,
# too short to move a band's median; the texture of a mean image reaches a
# few times a weak line's offset photosite by photosite).
_EDGE_PIXEL_RATIO = 8.0
_RING = 8
# Standard error of a median of normal values, in units of the mean's.
_MEDIAN_SE = 1.2533
# Offsets below this (in units of the input) are below its quantisation.
_MIN_OFFSET = 0.25
_MAD_TO_SIGMA = 1.4826
# In photos, lines this close to the frame's edge are not judged: a black
# border in every photo leaves JPEG ringing that is the same in every frame
# within one 8x8 block of it.
_EDGE = 8
# JPEG rings a line over its 8x8 blocks: a weaker line (of either sign)
# within this many pixels of a stronger one is its echo.
_ECHO = 4


@dataclass
class LineDefect:
    """A column or row of photosites offset in every frame.

    Attributes
    ----------
    kind : str
        ``"column"`` or ``"row"``.
    index : int
        The column ``x`` (for ``"column"``) or row ``y`` (for ``"row"``).
    start, stop : int
        First and last row (column, for a row) of the offset part, inclusive.
    channels : list of int
        Channels in which the line was found.
    offset : float
        Median offset against the same-colour neighbours on both sides.
    score : float
        ``offset`` in units of the robust spread of all lines' offsets.
    colour : str or None
        CFA colour of a raw mosaic's line (a Bayer column has two colours:
        its letters, e.g. ``"GB"``), else None.
    status, first_seen : str or None
        Set by ``--compare`` (``history.compare_lines``): ``"new"`` or
        ``"persisting"``, and the date the line was first reported.
    """

    kind: str
    index: int
    start: int
    stop: int
    channels: List[int] = field(default_factory=list)
    offset: float = 0.0
    score: float = 0.0
    colour: Optional[str] = None
    status: Optional[str] = None
    first_seen: Optional[str] = None

    def to_dict(self) -> dict:
        """The JSON report's entry: ``{"kind", "x" or "y", "from", "to", ...}``."""
        d = {"kind": self.kind, ("x" if self.kind == "column" else "y"): int(self.index),
             "from": int(self.start), "to": int(self.stop), "channels": list(self.channels),
             "offset": float(self.offset), "score": float(self.score)}
        if self.colour is not None:
            d["colour"] = self.colour
        for key in ("status", "first_seen"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    def pixels(self):
        """The ``(x, y)`` of every photosite of the line, in order."""
        for v in range(self.start, self.stop + 1):
            yield (self.index, v) if self.kind == "column" else (v, self.index)


class _Plane:
    """Rows of one plane of the statistics, fetched a band at a time.

    The plane is channel ``ch`` of ``mean`` (photos), or the CFA sub-grid
    ``[dy::p, dx::p]`` of a one-channel mosaic; ``mean`` may be an array
    or a band reader's ``BandArray`` (only contiguous row ranges are read).
    """

    def __init__(self, mean, ch=0, dy=0, dx=0, p=1):
        self.mean, self.ch, self.dy, self.dx, self.p = mean, ch, dy, dx, p
        h, w = mean.shape[:2]
        self.height = len(range(dy, h, p))
        self.width = len(range(dx, w, p))

    def rows(self, y0, y1, x0=0, x1=None):
        """Rows ``y0 <= y < y1`` of the plane, columns ``x0 <= x < x1`` (all
        by default), float32.  Only those values are read: a few columns of
        a band reader's one channel are finished value by value (issue 10:
        a candidate line's checks read a window of 15 columns)."""
        m, p, dy, dx = self.mean, self.p, self.dy, self.dx
        x1 = self.width if x1 is None else x1
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0)), np.float32)
        key = (slice(y0 * p + dy, (y1 - 1) * p + dy + 1, p),
               slice(x0 * p + dx, (x1 - 1) * p + dx + 1, p))
        if len(m.shape) == 3:
            key += (self.ch,)
        return np.asarray(m[key], dtype=np.float32)


class _SharedRows:
    """Rows of every channel of a photo's mean, float32, ``(rows, width,
    channels)``, read once for all channels (one read per thread: threads
    read different bands).

    A whole-frame ``BandArray`` is read past its reader's cache
    (``BandReader.rows_through``) into float32 buffers of this thread's own:
    the line test reads each band once, beside detection, which reads the
    same reader through its cache (issue 10).  The rows a read shares with
    the thread's previous read are kept, not finished again.
    """

    def __init__(self, mean):
        from .bands import frame_reader
        self.mean = mean
        self.reader = frame_reader(mean)
        self.channels = mean.shape[2] if len(mean.shape) == 3 else 1
        self._local = threading.local()

    def block(self, y0, y1):
        """Rows ``y0 <= y < y1``: valid until this thread's next read."""
        local = self._local
        last = getattr(local, "last", None)
        if last is not None and last[0] == (y0, y1):
            return last[1]
        if self.reader is None:
            block = np.asarray(self.mean[y0:y1], dtype=np.float32)
            block = block if block.ndim == 3 else block[:, :, None]
        else:
            block = self._through(y0, y1, last)
        local.last = ((y0, y1), block)
        return block

    def _through(self, y0, y1, last):
        _, w, c = self.reader.shape
        local = self._local
        n = (y1 - y0) * w * c
        bufs = getattr(local, "bufs", None)
        if bufs is None or bufs[0].size < n:
            last = None
            bufs = local.bufs = (np.empty(n, np.float32), np.empty(n, np.float32))
        mean = bufs[0][:n].reshape(y1 - y0, w, c)
        var = bufs[1][:n].reshape(y1 - y0, w, c)
        y = y0
        if last is not None and last[0][0] < y0 < last[0][1] <= y1:
            # the rows the previous band read ends with (its halo)
            (p0, p1), prev = last
            mean[:p1 - y0] = prev[y0 - p0:].copy()
            y = p1
        self.reader.rows_through(y, y1, mean[y - y0:], var[y - y0:])
        return mean


def _median(a, axis, overwrite=False):
    """``np.median(a, axis)``, bit for bit (for arrays without NaN), by a sort:
    numpy sorts short float runs with SIMD sorting networks, about ten times
    faster than the partition ``np.median`` does, and the medians of 32 values
    were most of a 24 MP photo's detection time; runs of thousands (the
    medians over the lines of each band) sort about four times faster than
    ``np.median`` partitions them too.  ``overwrite``: sort ``a`` itself (a
    scratch array), not a copy."""
    if overwrite:
        a.sort(axis=axis)
        s = a
    else:
        s = np.sort(a, axis=axis)
    n = s.shape[axis]
    at = (slice(None),) * (axis % s.ndim)
    hi = s[at + (n // 2,)]
    if n % 2:
        return np.array(hi, copy=True) if isinstance(hi, np.ndarray) else hi
    return (s[at + (n // 2 - 1,)] + hi) / 2


def _column_offsets(plane, step):
    """Per band of rows and column: medians of the differences to the column
    ``step`` to the left and to the right."""
    return _offsets(plane.height, plane.width, step, _plane_rows([plane.rows]), 1)[0]["column"]


def _row_offsets(plane, step):
    """Per row and band of columns: medians of the differences to the row
    ``step`` above and below (transposed like ``_column_offsets``'s result:
    one row per band of columns)."""
    return _offsets(plane.height, plane.width, step, _plane_rows([plane.rows]), 1)[0]["row"]


class Cancelled(Exception):
    """Raised by :func:`find_lines` when its ``cancel`` callable says so."""


def _check(cancel):
    if cancel is not None and cancel():
        raise Cancelled("the line test was cancelled")


def _offsets(h, w, step, read, planes, threads=1, cancel=None):
    """``_column_offsets`` and ``_row_offsets`` of ``planes`` planes of ``h``
    x ``w``, ``{"column": (left, right), "row": (up, down)}`` for each;
    ``read(y0, y1)`` gives their rows ``y0 <= y < y1``, ``(rows, w,
    planes)`` float32.  One pass over the rows for both, each band of rows
    read once for all planes (issue 10).  The bands are spread over
    ``threads`` threads; each writes its own slots of the results, so the
    figures do not depend on the count."""
    nbc, nbr = -(-h // _BAND), -(-w // _BAND)
    out = []
    for _ in range(planes):
        out.append({"column": (np.zeros((nbc, w), dtype=np.float32),
                               np.zeros((nbc, w), dtype=np.float32)),
                    "row": (np.zeros((nbr, h), dtype=np.float32),
                            np.zeros((nbr, h), dtype=np.float32))})
    cols, rows_ = w > 2 * step, h > 2 * step

    def one_band(b, _slot):
        _check(cancel)
        # column band b: rows [b * _BAND, (b + 1) * _BAND); row band b:
        # row y against row y - step for y in [y0, y1) (every y >= step),
        # rows [y0 - step, y1) with y0 = step + b * _BAND
        c0, c1 = b * _BAND, min(h, (b + 1) * _BAND)
        y0, y1 = step + b * _BAND, min(h, step + (b + 1) * _BAND)
        lo, hi = c0, max(c1, y1) if rows_ and y0 < h else c1
        rows = read(lo, hi)
        if cols:
            # every plane at once: plane k's column x is element x * planes + k;
            # the differences written transposed, each column's run of rows
            # contiguous (numpy sorts a contiguous axis faster than a strided
            # one), and sorted in place
            flat = rows[c0 - lo:c1 - lo].reshape(c1 - c0, w * planes)
            d = np.empty(((w - step) * planes, c1 - c0), np.float32)
            np.subtract(flat[:, step * planes:].T, flat[:, :-step * planes].T, out=d)
            med = _median(d, 1, overwrite=True).reshape(w - step, planes)
            for k, o in enumerate(out):
                left, right = o["column"]
                left[b, step:] = med[:, k]
                right[b, :-step] = -left[b, step:]
        if rows_ and y0 < h:
            for k, o in enumerate(out):
                o["row"][0][:, y0:y1] = _band_medians(rows[y0 - lo:y1 - lo, :, k],
                                                      rows[y0 - step - lo:y1 - step - lo, :, k])

    if cols or rows_:
        for _ in map_ordered(one_band, range(nbc), threads):
            pass
    if rows_:
        for o in out:
            up, down = o["row"]
            # row y against row y + step is minus that of row y + step
            down[:, step:h - step] = -up[:, 2 * step:]
            up[:, h - step:] = 0
    return out


def _plane_rows(planes):
    """``read(y0, y1)`` for :func:`_offsets` of planes of one size
    (``rows(y0, y1)`` of each, 2-D)."""
    if len(planes) == 1:
        return lambda y0, y1: planes[0](y0, y1)[:, :, None]
    return lambda y0, y1: np.stack([p(y0, y1) for p in planes], axis=2)


def _mosaic_rows(shared, p):
    """``read(y0, y1)`` for :func:`_offsets` of the ``p * p`` CFA sub-grids of
    a mosaic whose sides are multiples of ``p`` (plane ``dy * p + dx`` is
    the sub-grid ``[dy::p, dx::p]``): their rows ``y0 <= y < y1`` from one
    read of the frame's rows (a ``_SharedRows``)."""
    def read(y0, y1):
        block = shared.block(y0 * p, y1 * p)[:, :, 0]
        r, w = y1 - y0, block.shape[1] // p
        return block.reshape(r, p, w, p).transpose(0, 2, 1, 3).reshape(r, w, p * p)
    return read


def _band_medians(a, b):
    """``(bands, rows)``: the median of each row of ``a - b`` over each band
    of ``_BAND`` columns (the last band may be narrower), all full bands at
    once (the differences written into one scratch array and sorted there)."""
    r, w = a.shape
    full = w // _BAND
    out = np.empty((-(-w // _BAND), r), dtype=np.float32)
    if full:
        n = full * _BAND
        d = np.empty((r, full, _BAND), np.float32)
        np.subtract(a[:, :n].reshape(r, full, _BAND), b[:, :n].reshape(r, full, _BAND), out=d)
        out[:full] = _median(d, 2, overwrite=True).T
    if w > full * _BAND:
        out[full] = _median(a[:, full * _BAND:] - b[:, full * _BAND:], 1, overwrite=True)
    return out


def _majority(bands):
    """Per line (column of ``bands``): the offset that more than half of its
    bands reach -- the median, or of an even count's two middle values the
    one nearer zero.  Something seen in a few photos only covers part of the
    frame; with the mean of the middle two, half the bands sufficed."""
    s = np.sort(bands, axis=0)
    n = s.shape[0]
    if n % 2:
        return s[n // 2]
    a, b = s[n // 2 - 1], s[n // 2]
    return np.where(np.abs(a) < np.abs(b), a, b)


def _max_filter_rows(a, reach):
    """The largest value within ``reach`` along each row (axis 1), the window
    cut at the ends: ``scipy.ndimage.maximum_filter1d(a, 2 * reach + 1,
    axis=1, mode="nearest")`` for finite values, without the 0.25 s import
    of scipy.ndimage (issue 10)."""
    out = np.array(a, copy=True)
    for k in range(1, min(int(reach), a.shape[1] - 1) + 1):
        np.maximum(out[:, k:], a[:, :-k], out=out[:, k:])
        np.maximum(out[:, :-k], a[:, k:], out=out[:, :-k])
    return out


def _two_sided(first, second, offset):
    """Whether the differences to both sides agree in sign and each is at
    least half of their mean ``offset`` (an edge that is the same in every
    photo agrees with one side only)."""
    return (np.sign(first) == np.sign(second)) & (np.minimum(np.abs(first), np.abs(second))
                                                  >= 0.5 * np.abs(offset))


def _judge_lines(first, second, length, step, sigma, edge, steady=None):
    """``(index, start, stop, offset, score, centre)`` of the bad lines, from
    per-band medians against both sides (``(bands, lines)`` arrays); ``start``
    and ``stop`` at the resolution of a band, ``centre`` the offset of a
    normal line.  With ``steady`` (a ``_Steady``), a line must also be
    steady over its offset bands (``_Steady.steady``)."""
    pl, pr = _majority(first), _majority(second)
    prof = 0.5 * (pl + pr)
    two_sided = _two_sided(pl, pr, prof)
    n = prof.size
    found = []
    inner = np.arange(max(step, edge), n - max(step, edge))
    for phase in range(2):
        idx = inner[inner % 2 == phase]
        if idx.size < 8:
            continue
        p = prof[idx]
        centre = float(_median(p, 0))
        scale = max(_MAD_TO_SIGMA * float(_median(np.abs(p - centre), 0, overwrite=True)), 1e-6)
        z = (p - centre) / scale
        hit = (np.abs(z) >= sigma) & (np.abs(p - centre) >= _MIN_OFFSET) & two_sided[idx]
        for i in np.nonzero(hit)[0]:
            x = int(idx[i])
            off = float(p[i] - centre)
            band = 0.5 * (first[:, x] + second[:, x]) - centre
            strong = np.nonzero(np.sign(off) * band >= 0.5 * abs(off))[0]
            if strong.size == 0:
                continue
            start = int(strong[0]) * _BAND
            stop = min(length, (int(strong[-1]) + 1) * _BAND) - 1
            if steady is not None and not steady.steady(x, start, stop + 1, off):
                continue
            found.append((x, start, stop, off, float(z[i]), centre))
    return found


def _partial_lines(first, second, length, step, edge, steady, taken, reach, echo,
                   near_edge=None):
    """Like ``_judge_lines``, for lines offset along part of the frame only:
    runs of consecutive bands, each two-sided, offset the same way by
    ``_RUN_BAND_SIGMA`` robust sigmas of all lines' offsets in that band and
    showing in the residual (``steady.shows``); a run's score is its bands'
    scores' sum over the square root of their count, and the best run of a
    line is reported when its score reaches ``RUN_SIGMA`` and it is steady
    over its whole length (``steady.steady``), extended by the bands beside
    it that reach half its offset (as ``_judge_lines``'s extent).

    Not judged: a band within ``reach`` lines of a one-sided difference
    ``_EDGE_RATIO`` times its offset (the ringing of an edge in every
    frame); a line within ``echo`` lines of one in ``taken`` (the whole
    lines found) or of one that stands out more on both sides over its run
    (``_echo``: a line offsets its neighbours the other way, and in a photo
    the demosaic and JPEG ring it, whether it is a defect or something seen
    in a few photos); a run where ``near_edge(x, v0, v1, offset)`` says an
    edge covering part of each band is that close (``_near_edge``).  Of
    partial lines within ``echo`` of each other whose extents overlap, only
    the strongest is kept."""
    band_off = 0.5 * (first + second)
    two_sided = _two_sided(first, second, band_off)
    nb, n = band_off.shape
    found = []
    inner = np.arange(max(step, edge), n - max(step, edge))
    # next to an edge that is in every frame (a horizon, a clipped lamp),
    # the demosaic and JPEG ring: a band is not judged where a line within
    # ``reach`` has a one-sided difference of _EDGE_RATIO times its offset
    centre_all = _median(band_off, 1)
    steep = np.maximum(np.abs(first), np.abs(second))
    steep = _max_filter_rows(steep, reach)
    edgy = steep > _EDGE_RATIO * np.abs(band_off - centre_all[:, None])

    def span(b0, b1):
        return b0 * _BAND, min(length, b1 * _BAND)

    def off_of(run):
        return float(np.median(band_off[run, x] - centre_all[run]))

    for phase in range(2):
        idx = inner[inner % 2 == phase]
        if idx.size < 8:
            continue
        p = band_off[:, idx]
        centre = _median(p, 1)[:, None]
        scale = np.maximum(_MAD_TO_SIGMA * _median(np.abs(p - centre), 1, overwrite=True)[:, None],
                           1e-6)
        z = (p - centre) / scale
        hit = (np.abs(z) >= _RUN_BAND_SIGMA) & (np.abs(p - centre) >= _MIN_OFFSET) \
            & two_sided[:, idx] & ~edgy[:, idx]
        # a run's score is at most the sum of its hit bands' |z| over sqrt(count)
        za = np.where(hit, np.abs(z), 0.0)
        cand = np.nonzero(za.sum(axis=0) / np.sqrt(np.maximum(hit.sum(axis=0), 1))
                          >= RUN_SIGMA)[0]
        for i in cand:
            x = int(idx[i])
            if any(abs(j - x) <= echo for j in taken):
                continue
            ok = [bool(hit[b, i]) and steady.shows(x, *span(b, b + 1), float(z[b, i]))
                  for b in range(nb)]
            best, run = None, []
            for b in range(nb + 1):
                if b < nb and ok[b] and (not run or np.sign(z[b, i]) == np.sign(z[run[0], i])):
                    run.append(b)
                    continue
                if run:
                    score = float(np.sum(np.abs(z[run, i]))) / np.sqrt(len(run))
                    if score >= RUN_SIGMA and (best is None or score > best[1]):
                        best = (run, score)
                run = [b] if b < nb and ok[b] else []
            if best is None:
                continue
            run, score = best
            sign = float(np.sign(z[run[0], i]))
            if _echo(first, second, run, x, echo):
                continue
            if near_edge is not None and near_edge(x, *span(run[0], run[-1] + 1), off_of(run)):
                continue
            if not steady.steady(x, *span(run[0], run[-1] + 1), sign):
                continue
            c = float(np.mean(centre[run, 0]))
            off = float(np.median(p[run, i])) - c
            # the bands beside the run that reach half its offset (a band
            # the line only partly covers, or where the residual is weak)
            rel = sign * (p[:, i] - centre[:, 0])
            b0, b1 = run[0], run[-1]
            while b0 > 0 and rel[b0 - 1] >= 0.5 * abs(off):
                b0 -= 1
            while b1 < nb - 1 and rel[b1 + 1] >= 0.5 * abs(off):
                b1 += 1
            start, stop = span(b0, b1 + 1)
            found.append((x, start, stop - 1, off, score, c))
    # of partial lines within ``echo`` of each other, the strongest
    out = []
    for f in sorted(found, key=lambda f: -f[4]):
        if not any(abs(o[0] - f[0]) <= echo and o[1] <= f[2] and f[1] <= o[2] for o in out):
            out.append(f)
    return out


def _echo(first, second, run, x, reach):
    """Whether a line within ``reach`` of ``x`` stands out more on both
    sides over the bands ``run``: its median, over them, of the smaller of
    its two differences (zero where they differ in sign) is larger.  A line
    offsets its neighbour lines the other way, one-sided; the scene's
    texture can make that two-sided in some bands, but less than the line."""
    lo, hi = max(0, x - reach), min(first.shape[1], x + reach + 1)
    a, b = first[run, lo:hi], second[run, lo:hi]
    both = np.where(np.sign(a) == np.sign(b), np.minimum(np.abs(a), np.abs(b)), 0.0)
    med = np.median(both, axis=0)
    return bool(np.any(np.delete(med, x - lo) > med[x - lo]))


class _Steady:
    """Is a line's offset in every frame?  From the temporal residual
    statistics of the plane (``mean`` and ``var``: per element, over the
    frames, of its residual against its same-colour neighbours), aligned
    with the plane's lines as columns (a row plane is passed transposed).

    Along a bad line the residual is half the offset in every frame (the
    median of four neighbours of which two lie on the line) plus the
    scene's residual, so its variance over the frames is the neighbour
    lines'.  Something in a fraction ``q`` of the frames (a pole) adds
    ``(1 - q) / q`` times its squared residual mean to the variance.  Each
    quantity is judged against the same quantity on the lines 2 to 6 steps
    away (their median and robust spread): see ``shows`` and ``steady``.
    """

    def __init__(self, mean, var, step, n, pixel_var=(), overlay=None):
        self.mean, self.var, self.step, self.n = mean, var, step, max(int(n), 2)
        # overlay(x, v0, v1): whether line x over v0 <= v < v1 lies mostly
        # within a JPEG block of a static overlay (photos), or None
        self.overlay = overlay
        # per channel, f(x0, x1, v0, v1): the pixels' own variance over the
        # frames, lines x0 <= x < x1 as columns
        self.pixel_var = list(pixel_var)

    def quiet(self, x, v0, v1) -> bool:
        """Line ``x`` over ``v0 <= v < v1`` runs along a static overlay (a
        date stamp burnt in): the fraction of its pixels whose std over the
        frames is at most ``_STATIC_RATIO`` of the median std of the lines
        7 steps around it (the rule of ``detect.DetectOptions.static_ratio``)
        exceeds the median fraction on those lines by ``_STATIC_EXCESS``, in
        any channel (an overlay's colour is fixed in one channel at least,
        while JPEG's chroma smears it in another)."""
        s = self.step
        lo, hi = max(0, x - 7 * s), min(self.var.shape[1], x + 7 * s + 1)
        for pixel_var in self.pixel_var:
            v = pixel_var(lo, hi, v0, v1)[:, (x - lo) % s::s]
            ref = float(np.median(v))
            if ref <= 0:
                continue
            frac = (v <= _STATIC_RATIO ** 2 * ref).mean(axis=0)
            at = (x - lo) // s
            if float(frac[at]) - float(np.median(np.delete(frac, at))) >= _STATIC_EXCESS:
                return True
        return False

    def _window(self, x, v0, v1, sign):
        """Per line of the window around ``x`` (6 steps each way), over
        ``v0 <= v < v1``: the median residual mean (of the offset's sign);
        the index of ``x``; which lines are nearby (2 steps or more from
        ``x``); the residual variance of the window's lines and, per row,
        the nearby lines' median of it; the standard error of a median
        residual mean.  None when the window is too narrow."""
        s, n = self.step, self.var.shape[1]
        lo, hi = max(0, x - 7 * s), min(n, x + 7 * s + 1)
        if x - s < lo or x + s >= hi:
            return None
        m = np.asarray(self.mean[v0:v1, lo:hi], dtype=np.float32)
        v = np.asarray(self.var[v0:v1, lo:hi], dtype=np.float64)
        js = np.arange(s, hi - lo - s)
        med_m = np.median(m[:, js], axis=0) * (1.0 if sign > 0 else -1.0)
        near = np.abs(js + lo - x) >= 2 * s
        if near.sum() < 4:
            return None
        at = int(np.nonzero(js == x - lo)[0][0])
        # each element's variance against the median of the nearby lines'
        # in its row (not the two neighbours': something on the line itself
        # raises the residual variance of the lines beside it too)
        ref = np.median(v[:, js[near]], axis=1)
        floor = max(float(np.median(ref)) * 1e-3, 1e-12)
        ref = np.maximum(ref, floor)
        # the standard error of a median over the span of a residual mean
        # (spread sqrt(ref / n))
        se_m = _MEDIAN_SE / np.sqrt(v1 - v0) * float(np.sqrt(np.median(ref) / self.n))
        return med_m, at, near, v[:, js], ref, se_m

    @staticmethod
    def _spread(a):
        mid = float(np.median(a))
        return mid, _MAD_TO_SIGMA * float(np.median(np.abs(a - mid)))

    def _shown(self, x, v0, v1, sign):
        """``(window, r)``: ``_window`` and line ``x``'s median residual mean
        above the nearby lines' when ``shows``, else None."""
        w = self._window(x, v0, v1, sign)
        if w is None or self.quiet(x, v0, v1):
            return None
        med_m, at, near, _, _, se_m = w
        mid, noise = self._spread(med_m[near])
        r = float(med_m[at]) - mid
        return (w, r) if r >= _RESIDUAL_SIGMA * max(noise, se_m, 1e-6) else None

    def shows(self, x, v0, v1, sign) -> bool:
        """Line ``x``'s median residual mean over ``v0 <= v < v1``, of the
        offset's sign, stands ``_RESIDUAL_SIGMA`` robust sigmas above the
        nearby lines' (an edge of the scene at the same place in several
        photos offsets the mean image, not the residual: the median of the
        four neighbours takes the edge's side), and it is not ``quiet``."""
        return self._shown(x, v0, v1, sign) is not None

    def steady(self, x, v0, v1, sign) -> bool:
        """``shows``, not beside an overlay, and line ``x``'s median ratio of
        residual variance to the nearby lines' (per row) exceeds theirs by
        at most its squared residual mean over their variance (``q >= 1/2``)
        plus ``_STEADY_NOISE`` robust sigmas of the nearby lines' ratios (or
        the standard error of a median ratio, about ``sqrt(3 / (n - 1))``
        over the span), nor falls that many below."""
        shown = self._shown(x, v0, v1, sign)
        if shown is None or (self.overlay is not None and self.overlay(x, v0, v1)):
            return False
        (_, at, near, v, ref, _), r = shown
        ratio = np.median(v / ref[:, None], axis=0)
        mid, noise = self._spread(ratio[near])
        noise = max(noise, _MEDIAN_SE / np.sqrt(v1 - v0) * float(np.sqrt(3.0 / (self.n - 1))))
        # a static overlay (a date stamp burnt in) is steady too, but its
        # residual varies less than its neighbours' (half of its neighbours
        # are on it): the ratio must not fall below the nearby lines' either
        excess = float(ratio[at]) - mid
        return -_STEADY_NOISE * noise <= excess <= (r * r / max(float(np.median(ref)), 1e-12)
                                                    + _STEADY_NOISE * noise)


def _lines_of_plane(plane, step, sigma, edge, res=None, var_planes=(), var=None, reach=4,
                    echo=1, offsets=None):
    """``(kind, index, start, stop, offset, score)`` in plane coordinates.
    ``res``: the plane's residual mean and variance (2-D, aligned with it)
    and their frame count, or None; ``var_planes``: the variance's planes
    (``_Plane``), every channel of a photo's; ``var``: a photo's variance,
    for the static-overlay rule (``_near_overlay``), or None; ``reach``: a
    JPEG block or its equivalent, in lines, and ``echo`` the reach of a
    line's echo (see ``_partial_lines``); ``offsets``: the plane's
    ``_offsets``, when already taken."""
    out = []
    if offsets is None:
        offsets = _offsets(plane.height, plane.width, step, _plane_rows([plane.rows]), 1)[0]
    for kind, length in (("column", plane.height), ("row", plane.width)):
        first, second = offsets[kind]
        steady = None
        if res is not None:
            m, v, n = res if kind == "column" else (res[0].T, res[1].T, res[2])
            steady = _Steady(m, v, step, n, [_pixel_var(vp, kind) for vp in var_planes],
                             None if var is None else _near_overlay(var, kind))
        found = _judge_lines(first, second, length, step, sigma, edge, steady)
        if steady is not None:
            found += _partial_lines(first, second, length, step, edge, steady,
                                    {f[0] for f in found}, reach, echo,
                                    _near_edge(plane, kind, step, reach))
        for i, a, b, off, z, centre in found:
            a, b = _refine(plane, kind, i, a, b, off, centre, step, length,
                           None if steady is None else steady.mean)
            out.append((kind, i, a, b, off, z))
    return out


def _near_overlay(var, kind):
    """``f(x, v0, v1)``: whether a quarter or more of the line's pixels (every
    4th of ``v0 <= v < v1``) lie within a JPEG block of a static overlay
    (``detect``'s rule for pixel defects: 8 quiet pixels within 8 px)."""
    from .detect import DetectOptions, _near_overlay as near

    def overlay(x, v0, v1):
        vs = np.arange(v0, v1, 4)
        xs = np.full(vs.size, x)
        ys, xs = (vs, xs) if kind == "column" else (xs, vs)
        return bool(near(var, ys, xs, DetectOptions.static_ratio).mean() >= 0.25)
    return overlay


def _near_edge(plane, kind, step, reach):
    """``f(x, v0, v1, off)``: whether, over ``v0 <= v < v1``, a quarter or
    more of the photosites have, within ``reach`` lines of line ``x``, a
    difference between same-colour lines ``step`` apart of more than
    ``_EDGE_PIXEL_RATIO`` times ``|off|`` -- an edge too short to move a band's
    median (a clipped lamp's side beside the line)."""
    def near(x, v0, v1, off):
        lo = max(0, x - reach - step)
        if kind == "column":
            hi = min(plane.width, x + reach + step + 1)
            a = plane.rows(v0, v1, lo, hi)
        else:
            hi = min(plane.height, x + reach + step + 1)
            a = plane.rows(lo, hi, v0, v1).T
        if a.shape[1] <= step:
            return False
        d = np.abs(a[:, step:] - a[:, :-step]).max(axis=1)
        return bool((d > _EDGE_PIXEL_RATIO * abs(off)).mean() >= 0.25)
    return near


def _pixel_var(plane, kind):
    """``f(x0, x1, v0, v1)``: lines ``x0 <= x < x1`` of ``plane`` over
    ``v0 <= v < v1``, as columns (rows of a row plane transposed)."""
    if kind == "column":
        return lambda x0, x1, v0, v1: plane.rows(v0, v1, x0, x1)
    return lambda x0, x1, v0, v1: plane.rows(x0, x1, v0, v1).T


def _line_profile(plane, kind, index, v0, v1, step):
    """A line's offset at each of its photosites ``v0 <= v < v1``: its mean
    minus the mean of its two same-colour neighbour lines."""
    if kind == "column":
        rows = plane.rows(v0, v1, index - step, index + step + 1)
        return rows[:, step] - 0.5 * (rows[:, 0] + rows[:, 2 * step])
    rows = plane.rows(index - step, index + step + 1, v0, v1)
    return rows[step] - 0.5 * (rows[0] + rows[2 * step])


def _refine(plane, kind, index, start, stop, off, centre, step, length, residual=None):
    """``start`` and ``stop`` to the photosite: in the band where the offset
    begins (ends) and the band before (after) it, the change point that
    maximises the sum of ``offset - |off| / 2`` over the part taken (a
    CUSUM, each photosite's offset clipped to ``2 |off|`` so that one edge of
    the scene does not decide it), or the outermost one within ``|off| / 2``
    of that maximum.  With ``residual`` (the plane's residual mean, lines as
    columns) the offset at each photosite is twice its residual mean, and
    ``off`` twice the line's median residual mean over ``start..stop``:
    scene edges in the mean image do not move the change point then."""
    sign = 1.0 if off > 0 else -1.0
    if residual is not None:
        size = 2.0 * sign * float(np.median(residual[start:stop + 1, index]))

        def gains(v0, v1):
            d = 2.0 * sign * np.asarray(residual[v0:v1, index], dtype=np.float32)
            return np.clip(d, -2 * size, 2 * size) - 0.5 * size
        if size > 0:
            return _change_points(gains, start, stop, size, length)
    size = abs(off)

    def gains(v0, v1):
        d = (_line_profile(plane, kind, index, v0, v1, step) - np.float32(centre)) * sign
        return np.clip(d, -2 * size, 2 * size) - 0.5 * size

    return _change_points(gains, start, stop, size, length)


def _change_points(gains, start, stop, size, length):
    """``_refine``'s CUSUM over the per-photosite ``gains(v0, v1)``."""
    v0, v1 = max(0, start - _BAND), min(length, start + _BAND)
    tail = np.cumsum(gains(v0, v1)[::-1])[::-1]
    # the first change point within half an offset of the best: a line that
    # reaches the frame's edge is not cut short by one photosite's noise
    new_start = v0 + int(np.argmax(tail >= tail.max() - 0.5 * size))
    v0, v1 = max(0, stop + 1 - _BAND), min(length, stop + 1 + _BAND)
    head = np.cumsum(gains(v0, v1))
    new_stop = v1 - 1 - int(np.argmax((head >= head.max() - 0.5 * size)[::-1]))
    if new_stop < new_start:           # a line shorter than a band: keep the bands
        return start, stop
    return new_start, new_stop


def find_lines(mean, var=None, *, cfa=None, colour_desc="RGBG", sigma: float = LINE_SIGMA,
               step: Optional[int] = None, residuals=None, threads: int = 1,
               cancel=None) -> List[LineDefect]:
    """Bad columns and rows in per-subpixel statistics.

    Parameters
    ----------
    mean : numpy.ndarray or BandArray
        ``(height, width, channels)`` (or ``(height, width)``) mean; read
        one band of rows at a time.
    var : numpy.ndarray or BandArray, optional
        The variance, of ``mean``'s shape.  With ``residuals``, a line over
        pixels that hardly vary from frame to frame (a date stamp burnt in)
        is not a defect; the mean-only test does not use it.
    cfa : numpy.ndarray, optional
        Colour index per photosite of a one-channel raw mosaic: the lines
        are looked for in each CFA sub-grid, and reported in photosites.
    colour_desc : str
        Letters of the CFA colour indices.
    sigma : float
        Threshold in robust sigmas (``LINE_SIGMA``).
    step : int, optional
        Distance to the same-colour neighbour columns in a photo (default
        2: a demosaic spreads a bad sensor column over the columns beside
        it).
    residuals : hotpixel_shm.residual.Residuals, optional
        Temporal residual statistics of the same frames.  With them a line
        must be steady -- offset in every frame, not in a few (a pole) --
        over its offset bands, and partial lines (runs of bands whose
        combined score reaches ``RUN_SIGMA``) are reported too.  Without
        them (loaded statistics that lack them, dark frames,
        ``--no-residuals``), or when their planes do not match the lines'
        (another neighbour distance), only lines offset in more than half
        of the bands, on the mean alone.
    threads : int, default 1
        Threads the pass over the rows is spread over; the lines are the
        same for any count.
    cancel : callable, optional
        Asked between bands and planes; when it returns True the search
        stops with :class:`Cancelled` (the command line's Ctrl-C while the
        test runs on a thread beside detection: issue 13, within a second).

    Returns
    -------
    list of LineDefect
        Strongest first.  In a photo, a bad sensor column shows in the
        demosaiced columns beside it too, and JPEG rings it: of flagged
        columns within 4 px of each other only the strongest is reported,
        with the channels of all.  Not judged: lines in the outermost 8
        columns and rows of a photo (JPEG ringing of a black border), the
        outermost same-colour line of a raw mosaic; without ``residuals``,
        lines along half the frame or less (the offset must show in more
        than half of the bands).
    """
    from .detect import cfa_period

    if not hasattr(mean, "shape"):
        mean = np.asarray(mean)
    if var is not None and not hasattr(var, "shape"):
        var = np.asarray(var)
    h, w = mean.shape[:2]
    c = mean.shape[2] if len(mean.shape) == 3 else 1
    out: List[LineDefect] = []
    if cfa is not None:
        p = cfa_period(cfa)
        full = _residual_planes(residuals, (h, w), p, 0)
        grids = [(dy, dx, _Plane(mean, 0, dy, dx, p)) for dy in range(p) for dx in range(p)]
        grids = [g for g in grids if g[2].height and g[2].width]
        # the CFA positions' offsets in one pass over the rows, those of one
        # size together (issue 10: each band read once, from the reader's
        # cache; when the frame's sides are multiples of the period, once
        # for all positions, past the cache, as a photo's channels)
        offsets = {}
        if h % p == 0 and w % p == 0:
            every = _offsets(h // p, w // p, 1, _mosaic_rows(_SharedRows(mean), p), p * p,
                             threads, cancel)
            offsets = {g[:2]: o for g, o in zip(grids, every)}
        for size in {(g[2].height, g[2].width) for g in grids if g[:2] not in offsets}:
            same = [g for g in grids if (g[2].height, g[2].width) == size]
            for g, o in zip(same, _offsets(size[0], size[1], 1,
                                           _plane_rows([g[2].rows for g in same]), len(same),
                                           threads, cancel)):
                offsets[g[:2]] = o
        for dy, dx, plane in grids:
            _check(cancel)
            res = None if full is None else (full[0][dy::p, dx::p], full[1][dy::p, dx::p],
                                             full[2])
            vp = [] if var is None else [_Plane(var, 0, dy, dx, p)]
            for kind, i, a, b, off, z in _lines_of_plane(plane, 1, sigma, 1, res, vp,
                                                         offsets=offsets[(dy, dx)]):
                if kind == "column":
                    index, start, stop = i * p + dx, a * p + dy, min(h - 1, b * p + dy)
                else:
                    index, start, stop = i * p + dy, a * p + dx, min(w - 1, b * p + dx)
                out.append(LineDefect(kind, index, start, stop, [0], off, abs(z)))
        out = _merge_phases(out, cfa, p, colour_desc)
    else:
        s = 2 if step is None else int(step)
        raw = []
        vp = [] if var is None else [_Plane(var, k) for k in range(c)]
        planes = [_Plane(mean, ch) for ch in range(c)]
        shared = _SharedRows(mean)
        every = _offsets(h, w, s, shared.block, c, threads, cancel)
        shared = None
        for ch in range(c):
            _check(cancel)
            res = _residual_planes(residuals, (h, w), s, 0 if c == 3 else ch)
            for kind, i, a, b, off, z in _lines_of_plane(
                    planes[ch], s, sigma, _EDGE, res, vp,
                    None if var is None or len(var.shape) != 3 else var, _RING, _ECHO,
                    every[ch]):
                raw.append(LineDefect(kind, i, a, b, [ch], off, abs(z)))
        out = _merge_neighbours(raw, max(s, _ECHO))
    out.sort(key=lambda d: (-d.score, d.kind, d.index))
    return out


def lines_memory_bytes(shape) -> int:
    """The most working memory ``find_lines`` allocates for statistics of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width[, channels])``.

    Returns
    -------
    int
        Bytes: the offsets of every band and line against both sides
        (float32, four arrays per channel), a band of rows of every channel
        read at once (its mean and variance, float32, past the reader's
        cache) with the differences sorted over it, and 1 MiB for the
        lines' own arrays.  The planner counts it when the line test runs
        beside detection (``hotpixel_shm.budget.finish_threads``).
        Measured 50 MiB (tracemalloc) for 6000 x 4000 RGB statistics with
        residual statistics, 12 photos (this bound: 81 MiB).
    """
    h, w = int(shape[0]), int(shape[1])
    c = int(shape[2]) if len(shape) > 2 else 1
    nbc, nbr = -(-h // _BAND), -(-w // _BAND)
    offsets = 16 * c * (nbc * w + nbr * h)
    band = 2 * (_BAND + 8) * w * c * 8
    return int(offsets + band + (1 << 20))


def _residual_planes(residuals, size, reach, k):
    """``(mean, var, n)`` of residual plane ``k`` when it is at full resolution
    (``size``) with neighbours ``reach`` apart, else None.  An RGB photo's
    lines in every channel are judged by the luma plane (``k`` = 0)."""
    if residuals is None:
        return None
    lay = residuals.layout
    if k >= len(lay.planes) or tuple(lay.planes[k]) != tuple(size) \
            or lay.plane_reach(k) != reach or lay.plane_scale(k) != 1:
        return None
    return residuals.mean[k], residuals.var[k], residuals.n


def _merge_neighbours(lines, reach):
    """One defect per group of same-kind lines within ``reach`` of each other (any channel)."""
    out: List[LineDefect] = []
    for d in sorted(lines, key=lambda d: -d.score):
        host = next((o for o in out if o.kind == d.kind and abs(o.index - d.index) <= reach), None)
        if host is None:
            out.append(LineDefect(d.kind, d.index, d.start, d.stop, list(d.channels),
                                  d.offset, d.score))
        else:
            host.channels = sorted(set(host.channels) | set(d.channels))
            host.start, host.stop = min(host.start, d.start), max(host.stop, d.stop)
    return out


def _merge_phases(lines, cfa, p, letters):
    """A raw column found in both of its sub-grids is one line (of both
    colours); ``p`` is the CFA's period (``detect.cfa_period``)."""
    out: List[LineDefect] = []
    for d in sorted(lines, key=lambda d: -d.score):
        host = next((o for o in out if o.kind == d.kind and o.index == d.index), None)
        if host is None:
            host = LineDefect(d.kind, d.index, d.start, d.stop, [0], d.offset, d.score)
            out.append(host)
        else:
            host.start, host.stop = min(host.start, d.start), max(host.stop, d.stop)
    for d in out:
        idx = sorted({int(cfa[v, d.index]) for v in range(p)} if d.kind == "column"
                     else {int(cfa[d.index, v]) for v in range(p)})
        d.colour = "".join(letters[i] if i < len(letters) else str(i) for i in idx)
    return out
