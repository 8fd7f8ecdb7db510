"""Defects of a raw mosaic: each photosite judged against same-colour photosites.

In a raw file every photosite has one colour filter, so its neighbours for
the robust median/MAD test are the photosites of the *same CFA position*: the
mosaic is split into its ``P x P`` regular sub-grids (``P`` = 2 for Bayer,
6 for X-Trans), ``mean[dy::P, dx::P]``, each judged by
``hotpixel_shm.detect.detect(..., cfa=cfa)`` with clustering off, and the
flagged sites are mapped back to photosite coordinates ``x = P*xs + dx``,
``y = P*ys + dy``. Every defect is one photosite (there is no demosaic smear
to merge), named by the letters of the file's own colour description. This
module adds the clipped-highlight guard below, and ``top`` over the whole
mosaic.

A site clipped at the saturation level is a defect only when it stands
alone: a highlight clipped in every frame (a lamp in a fixed scene) has
clipped photosites all around it, and nothing is reported at or beside it,
where the median test would flag its edge.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import numpy as np

from .bands import DEFAULT_BAND_VALUES
from .detect import DetectOptions, cfa_period, check_stats, detect
from .errors import HotPixelError
from .model import Defect

__all__ = ["detect_raw", "SATURATION_RADIUS"]

#: A clipped site with another clipped photosite (any colour) within this many
#: photosites is part of a clipped highlight, not a defect. 2 covers all 8
#: nearest same-colour sites of a Bayer site and every adjacent photosite.
SATURATION_RADIUS = 2

# A site clipped in every frame reads the same value every time; allow the
# variance of one frame in a thousand being a unit off.
_CLIPPED_MAX_VAR = 1.0


def _saturated(mean2d, var2d, period: int, white: Optional[float]) -> np.ndarray:
    """Photosites clipped in every frame: mean at a clipping level, no variance.

    The clipping level is ``white`` when given, and also each CFA position's
    highest mean (cameras clip some channels below the nominal white level).
    Requiring (almost) no variance keeps ordinary sites out when nothing is
    clipped and a position's highest mean is just noise.

    ``mean2d`` and ``var2d`` are read a band of rows at a time (two passes:
    the highest means, then the sites at them), so statistics finished band
    by band (``hotpixel_shm.bands.BandArray``) are never made whole-frame
    arrays; only the boolean result is frame-sized.
    """
    hgt, wid = mean2d.shape
    step = max(1, DEFAULT_BAND_VALUES // max(1, wid))
    step = -(-step // period) * period           # bands start on the CFA tile
    tops = np.full((period, period), -np.inf)
    for y0 in range(0, hgt, step):
        m = np.asarray(mean2d[y0:y0 + step])
        for dy in range(period):
            for dx in range(period):
                plane = m[dy::period, dx::period]
                if plane.size:
                    tops[dy, dx] = max(tops[dy, dx], float(np.max(plane)))
    sat = np.zeros((hgt, wid), dtype=bool)
    for y0 in range(0, hgt, step):
        m = np.asarray(mean2d[y0:y0 + step])
        v = np.asarray(var2d[y0:y0 + step])
        for dy in range(period):
            for dx in range(period):
                plane = m[dy::period, dx::period]
                if plane.size == 0:
                    continue
                level = float(tops[dy, dx])
                hit = plane >= level - max(1.0, 2e-3 * abs(level))
                if white is not None:
                    hit |= plane >= float(white) - max(1.0, 2e-3 * float(white))
                hit &= v[dy::period, dx::period] <= _CLIPPED_MAX_VAR
                sat[y0 + dy:y0 + m.shape[0]:period, dx::period] = hit
    return sat


def _highlight_zone(sat: np.ndarray, reach: int):
    """Photosites whose verdict a clipped highlight would decide.

    A highlight is a saturated photosite with another saturated photosite
    within ``SATURATION_RADIUS``; the zone is every photosite within
    ``reach`` of one (there the neighbour median is clipped, or the site is
    the highlight's edge). An isolated saturated site is not a highlight.

    Returns ``None`` (no highlight) or ``(zone, y0, x0)``: a boolean array
    covering only the highlights' bounding box grown by ``reach``, and where
    that box starts, so that a 24 MP frame with a few stuck sites costs
    nothing and one with a small lamp costs a small array.
    """
    hgt, wid = sat.shape
    ys, xs = np.nonzero(sat)
    if ys.size == 0:
        return None
    r = SATURATION_RADIUS
    crowded = np.zeros(ys.size, dtype=bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            ny, nx = ys + dy, xs + dx
            inside = (ny >= 0) & (ny < hgt) & (nx >= 0) & (nx < wid)
            hit = np.zeros(ys.size, dtype=bool)
            hit[inside] = sat[ny[inside], nx[inside]]
            crowded |= hit
    if not crowded.any():
        return None
    hy, hx = ys[crowded], xs[crowded]
    y0, y1 = max(0, int(hy.min()) - reach), min(hgt, int(hy.max()) + reach + 1)
    x0, x1 = max(0, int(hx.min()) - reach), min(wid, int(hx.max()) + reach + 1)
    highlight = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    highlight[hy - y0, hx - x0] = True
    return _dilate(highlight, reach), y0, x0


def _dilate(mask, reach):
    """Every element within ``reach`` (a square, Chebyshev distance) of a
    True one: ``scipy.ndimage.maximum_filter(mask, size=2 * reach + 1,
    mode="constant")`` of a boolean array, in numpy (a raw run imported
    scipy.ndimage for this alone, 0.25 s: issue 10)."""
    out = mask.copy()
    for axis in (1, 0):
        src = out.copy()
        n = out.shape[axis]
        for k in range(1, min(int(reach), n - 1) + 1):
            if axis == 1:
                out[:, k:] |= src[:, :-k]
                out[:, :-k] |= src[:, k:]
            else:
                out[k:] |= src[:-k]
                out[:-k] |= src[k:]
    return out


def _in_zone(zone, x: int, y: int) -> bool:
    if zone is None:
        return False
    z, y0, x0 = zone
    yy, xx = y - y0, x - x0
    return 0 <= yy < z.shape[0] and 0 <= xx < z.shape[1] and bool(z[yy, xx])


def detect_raw(mean, var, n, cfa, options=None, *, colour_desc: str = "RGBG",
               white: Optional[float] = None, residuals=None, threads: int = 1) -> List[Defect]:
    """Hot, stuck, dead and noisy photosites of a raw mosaic.

    Parameters
    ----------
    mean, var : numpy.ndarray
        ``(height, width, 1)`` (or ``(height, width)``) per-photosite mean and
        population variance over ``n`` raw frames.
    n : int
        Number of frames.
    cfa : numpy.ndarray
        ``(height, width)`` colour index per photosite (``RawInfo.cfa``).
    options : hotpixel_shm.detect.DetectOptions, optional
        Thresholds; ``cluster`` is ignored (each defect is one photosite) and
        ``top`` applies to the whole mosaic.
    colour_desc : str, default "RGBG"
        Letter of each colour index (``RawInfo.colour_desc``).
    white : float, optional
        Saturation level (``RawInfo.white_level``); with or without it, each
        CFA position's highest mean also counts as its clipping level.
    residuals : hotpixel_shm.residual.Residuals, optional
        Temporal residual statistics of the same frames (neighbour distance
        the CFA period): their test runs beside the mean/variance tests.
    threads : int, default 1
        Threads detection spreads its bands over (``detect.detect``); the
        defects are the same for any count.

    Returns
    -------
    list of Defect
        Worst first (by ``score``); ``x``, ``y`` in photosites of the visible
        raw area, ``channels == [0]``, ``colour`` the filter letter
        (``"R"``, ``"G"``, ``"B"``), ``size == 1``.

    Notes
    -----
    The neighbours of a photosite are the photosites at the same position of
    the CFA tile, ``P`` photosites apart (``P`` = 2 for Bayer: the nearest
    sites of the same colour, with the two greens judged apart as their
    sensitivities may differ; 6 for X-Trans: the same colour at the same
    place of the tile, which keeps every sub-grid regular).

    Clipped highlights: a highlight clipped in the same place in every frame
    has mean equal to the clipping level and no variance, exactly like a
    stuck site; only its surroundings tell them apart. A saturated site with
    another saturated photosite within ``SATURATION_RADIUS`` photosites is
    part of a highlight, and no verdict is given within ``P * (window // 2)``
    photosites of a highlight (the reach of the neighbour window, where the
    median of the neighbours is itself clipped). An isolated saturated site
    is a stuck defect. So two clipped defects that close together, or a
    defect right beside a permanently clipped highlight, are missed.
    """
    if options is None:
        options = DetectOptions()
    if cfa is None:
        raise HotPixelError("a raw mosaic needs its colour filter array (cfa)")
    mean, var, cfa = check_stats(mean, var, n, options, cfa)
    period = cfa_period(cfa)
    top = getattr(options, "top", None)
    # top is applied here, after the highlight guard has had its say
    sub_options = dataclasses.replace(options, cluster=False, top=None)
    window = int(getattr(options, "window", 5) or 5)
    zone = _highlight_zone(_saturated(mean[:, :, 0], var[:, :, 0], period, white),
                           period * (window // 2))

    found: List[Defect] = []
    for d in detect(mean, var, n, sub_options, cfa=cfa, colour_desc=colour_desc,
                    residuals=residuals, threads=threads):
        if not _in_zone(zone, d.x, d.y):
            found.append(d)
    found.sort(key=lambda d: (-d.score, d.y, d.x))
    if top is not None:
        found = found[:int(top)]
    return found
