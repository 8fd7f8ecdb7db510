"""Bad columns and rows: a line of photosites offset in every frame.

A column (or row) whose photosites all read a little high or low -- a bad
column amplifier, a hot column in long exposures -- is a line in the mean
image over many photos, however different the scenes: the scenes' texture
averages out along a column of thousands of rows, the offset does not.

For every column ``x`` of a plane (one channel of a photo, one CFA sub-grid
of a raw mosaic) and every band of ``_BAND`` rows, the band's median of

    d = mean[y, x] - mean[y, x -/+ s]     (the one of the two closer to zero,
                                            0 when their signs differ)

is the column's offset in that band against its same-colour neighbours
``s`` columns away on *both* sides (an edge that is the same in every photo
-- the frame's border, a fixed structure -- agrees with one side and is
not a line).  The column's offset is the median over its bands, judged
against the robust spread (MAD) of all columns' offsets of the same 2x2
phase; a line defect's ``from``/``to`` are the first and last row of the
bands whose own offset is at least half the column's.  Rows: the same on
the transposed plane.  Working memory: one band of rows, and one value per
band and column.

This module is numerics only (numpy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

__all__ = ["LineDefect", "find_lines", "LINE_SIGMA"]

#: A column's (row's) offset must be this many robust sigmas of all
#: columns' offsets.  About 30 000 lines (columns and rows, all channels)
#: per 24 MP photo; a normal tail beyond 6 sigma would be 2e-9 per line, but
#: on the simulated cameras (JPEG q85 4:2:0, a horizon in every photo) the
#: defect-free sets reached 7.1, while planted lines of 3 to 8 units scored
#: 18 to 100.
LINE_SIGMA = 9.0
# Rows per band (a line shorter than this is not reported).
_BAND = 32
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
    """

    kind: str
    index: int
    start: int
    stop: int
    channels: List[int] = field(default_factory=list)
    offset: float = 0.0
    score: float = 0.0
    colour: Optional[str] = None

    def to_dict(self) -> dict:
        """The JSON report's entry: ``{"kind", "x" or "y", "from", "to", ...}``."""
        d = {"kind": self.kind, ("x" if self.kind == "column" else "y"): int(self.index),
             "from": int(self.start), "to": int(self.stop), "channels": list(self.channels),
             "offset": float(self.offset), "score": float(self.score)}
        if self.colour is not None:
            d["colour"] = self.colour
        return d

    def pixels(self):
        """The ``(x, y)`` of every photosite of the line, in order."""
        for v in range(self.start, self.stop + 1):
            yield (self.index, v) if self.kind == "column" else (v, self.index)


def _band_offsets(plane, step):
    """Per band and column: medians of the differences to the left and right neighbour."""
    h, w = plane.shape
    nb = -(-h // _BAND)
    left = np.zeros((nb, w), dtype=np.float32)
    right = np.zeros((nb, w), dtype=np.float32)
    if w <= 2 * step:
        return left, right
    for b in range(nb):
        rows = np.asarray(plane[b * _BAND:(b + 1) * _BAND], dtype=np.float32)
        diff = rows[:, step:] - rows[:, :-step]
        left[b, step:] = np.median(diff, axis=0)
        right[b, :-step] = -left[b, step:]
    return left, right


def _lines_of_plane(plane, step, sigma, edge):
    """``(index, start_row, stop_row, offset, score)`` of the bad columns of ``plane``."""
    h, w = plane.shape
    left, right = _band_offsets(plane, step)
    pl, pr = np.median(left, axis=0), np.median(right, axis=0)
    prof = 0.5 * (pl + pr)
    # an edge that is the same in every photo agrees with one side
    two_sided = (np.sign(pl) == np.sign(pr)) & (np.minimum(np.abs(pl), np.abs(pr))
                                                >= 0.5 * np.abs(prof))
    found = []
    inner = np.arange(max(step, edge), w - max(step, edge))
    for phase in range(2):
        cols = inner[inner % 2 == phase]
        if cols.size < 8:
            continue
        p = prof[cols]
        centre = float(np.median(p))
        scale = max(_MAD_TO_SIGMA * float(np.median(np.abs(p - centre))), 1e-6)
        z = (p - centre) / scale
        hit = (np.abs(z) >= sigma) & (np.abs(p - centre) >= _MIN_OFFSET) & two_sided[cols]
        for i in np.nonzero(hit)[0]:
            x = int(cols[i])
            off = float(p[i] - centre)
            band = 0.5 * (left[:, x] + right[:, x]) - centre
            strong = np.nonzero(np.sign(off) * band >= 0.5 * abs(off))[0]
            if strong.size == 0:
                continue
            start = int(strong[0]) * _BAND
            stop = min(h, (int(strong[-1]) + 1) * _BAND) - 1
            found.append((x, start, stop, off, float(z[i])))
    return found


def find_lines(mean, var, *, cfa=None, colour_desc="RGBG", sigma: float = LINE_SIGMA,
               step: Optional[int] = None) -> List[LineDefect]:
    """Bad columns and rows in per-subpixel statistics.

    Parameters
    ----------
    mean, var : numpy.ndarray
        ``(height, width, channels)`` mean and variance (or a reader with
        that shape that slices like an array).
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

    Returns
    -------
    list of LineDefect
        Strongest first.  Not judged: lines in the outermost 8 columns and
        rows of a photo (JPEG ringing of a black border), the outermost
        same-colour line of a raw mosaic, lines shorter than 32 rows.  In a photo, a bad sensor column shows in the
        demosaiced columns beside it too: of flagged columns within
        ``step`` of each other only the strongest is reported, with the
        channels of all.
    """
    from .detect import cfa_period

    mean = np.asarray(mean) if not hasattr(mean, "shape") else mean
    h, w = mean.shape[:2]
    c = mean.shape[2] if len(mean.shape) == 3 else 1
    out: List[LineDefect] = []
    if cfa is not None:
        p = cfa_period(cfa)
        m2 = np.asarray(mean).reshape(h, w)
        for dy in range(p):
            for dx in range(p):
                sm = m2[dy::p, dx::p]
                if sm.size == 0:
                    continue
                for kind, plane in (("column", sm), ("row", sm.T)):
                    for i, a, b, off, z in _lines_of_plane(plane, 1, sigma, 1):
                        if kind == "column":
                            index, start, stop = i * p + dx, a * p + dy, min(h - 1, b * p + dy)
                        else:
                            index, start, stop = i * p + dy, a * p + dx, min(w - 1, b * p + dx)
                        out.append(LineDefect(kind, index, start, stop, [0], off, abs(z)))
        out = _merge_phases(out, cfa, colour_desc)
    else:
        s = 2 if step is None else int(step)
        raw = []
        for ch in range(c):
            sm = np.asarray(mean[:, :, ch] if len(mean.shape) == 3 else mean)
            for kind, plane in (("column", sm), ("row", sm.T)):
                for i, a, b, off, z in _lines_of_plane(plane, s, sigma, _EDGE):
                    raw.append(LineDefect(kind, i, a, b, [ch], off, abs(z)))
        out = _merge_neighbours(raw, max(s, _ECHO))
    out.sort(key=lambda d: (-d.score, d.kind, d.index))
    return out


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


def cfa_period_of(cfa):
    from .detect import cfa_period
    return cfa_period(cfa)


def _merge_phases(lines, cfa, letters):
    """A raw column found in both of its sub-grids is one line (of both colours)."""
    out: List[LineDefect] = []
    for d in sorted(lines, key=lambda d: -d.score):
        host = next((o for o in out if o.kind == d.kind and o.index == d.index), None)
        if host is None:
            host = LineDefect(d.kind, d.index, d.start, d.stop, [0], d.offset, d.score)
            out.append(host)
        else:
            host.start, host.stop = min(host.start, d.start), max(host.stop, d.stop)
    p = cfa_period_of(cfa)
    for d in out:
        idx = sorted({int(cfa[v, d.index]) for v in range(p)} if d.kind == "column"
                     else {int(cfa[d.index, v]) for v in range(p)})
        d.colour = "".join(letters[i] if i < len(letters) else str(i) for i in idx)
    return out
