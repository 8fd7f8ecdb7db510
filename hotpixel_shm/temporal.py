"""Hot, dead and noisy photosites from temporal residual statistics.

``hotpixel_shm.residual`` accumulates, per element of a residual plane, the
mean ``r`` and variance ``v`` over ``n`` frames of the element's residual
against its same-colour neighbours in the same frame.  Under the null (no
defect, scenes that differ from frame to frame) the residual mean is zero,
so

    z = r * sqrt(n / (1 + b**2 n)) / max(s, S)

is a t-like statistic: ``s`` is the element's own sample standard deviation
(``n - 1`` degrees of freedom) and ``S`` the median of its eight
same-colour neighbours' ``s``, a pooled scale.  Taking the larger keeps the
statistic honest where the element's own scale is too small by chance (few
frames) and where it is inflated by a rare large residual (an edge that
crossed it once).  ``b`` = 0.1 is a systematic error of the residual mean
in units of the scale: structure that repeats in every frame (a horizon,
JPEG's artefacts in a sky of the same colour) biases it a little, and
without ``b`` that bias would become significant as ``n`` grows.  A warm or
dead photosite has ``|z|`` many standard errors from zero; a noisy one a variance ratio ``F = s**2 / S**2`` far
above one.

Fixed structure is not a defect: something the same in every frame (a
date stamp, the black border of the frame, a horizon) also has a steady
residual.  Such structure is a line or an edge at the resolution of the
same-colour grid, so -- as in ``hotpixel_shm.detect`` -- an element must
also stand out against each line, ray and corner quadrant of its 5x5
same-colour window (the statistic of the element minus the median of that
group, the one closest to zero kept), and nothing is judged next to a static
overlay (see ``DetectOptions.static_ratio``).

RGB photos also carry level statistics (``hotpixel_shm.residual``): per
chroma element the wide residual ``r`` and its colour's level ``L`` in
each frame.  A dead red or blue photosite's residual is ``-a L``: it
follows the scene, so its mean over the frames stays near zero in units of
its spread, but the slope of the regression of ``r`` on ``L`` through the
origin is many standard errors from zero.  That slope's t statistic goes
through the same tests as ``z`` (pooled scale, directional rule, ring,
overlay, same threshold), and so does the wide residual's own mean (the
8x8 footprint holds all of a hot red or blue photosite's blob, which the
4x4 one shares with its neighbours, whose lines the directional rule then
finds as high as the element); a flagged element is placed at the pixel
of its 8x8 footprint whose channel plus luma mean is most off.

Thresholds are calibrated (see ``thresholds``).  This module is numerics
only (numpy).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np

from .model import KIND_CODES
from .residual import Residuals

__all__ = ["thresholds", "FALSE_ALARMS_PER_FRAME", "temporal_records", "temporal_memory_bytes",
           "Cancelled"]

#: Expected false alarms per 24 MP frame that the default thresholds aim at.
FALSE_ALARMS_PER_FRAME = 0.05
_REFERENCE_ELEMENTS = 36e6     # residual elements of a 24 MP RGB photo (Y + Cb/4 + Cr/4)
# Empirical corrections, measured on the simulated cameras (see
# scripts/detection_table.py): the neighbours' scales are themselves
# estimates, residuals of demosaiced, JPEG-compressed texture are
# heavier-tailed than a normal distribution, and the directional test takes
# the smallest of several differences.
_T_CORRECTION = 1.0
_F_CORRECTION = 1.5
# A flagged element stands out from its window's outer ring by at least this
# many times the ring's robust spread (as in hotpixel_shm.detect).
_CONTRAST = 2.0
_MAD_TO_SIGMA = 1.4826
# The scale is at least this fraction of the plane's median residual std.
_FLOOR_FRACTION = 0.15
# Systematic part of the residual mean's error, as a fraction of the scale:
# structure that repeats in every frame (a horizon, JPEG's artefacts in a
# sky of the same colour) biases the residual mean a little, and without
# this term that bias would become significant as n grows.
_SYSTEMATIC = 0.1
# Rows of the cheap candidate pass at once.
_BAND = 64
# Candidates judged at once.
_CHUNK = 8192
# Candidates need this fraction of the threshold against their own scale
# and a floor (the directional statistic is never larger than the plain one
# by more than the neighbours' noise).
_CANDIDATE_FRACTION = 0.7
# Noisy rather than hot while |z| <= this times sqrt(n) (see _plane_records).
_TELEGRAPH_Z = 1.5
_TELEGRAPH_F = 4.0
# Numbers of the kinds in the flagged-record arrays (shared with detect).
_HOT, _DEAD, _NOISY = (KIND_CODES[k] for k in ("hot", "dead", "noisy"))


def thresholds(n: int, false_alarms: float = FALSE_ALARMS_PER_FRAME,
               elements: float = _REFERENCE_ELEMENTS):
    """Default thresholds of the residual tests for ``n`` frames.

    Parameters
    ----------
    n : int
        Frames (at least 3).
    false_alarms : float
        Expected false alarms per frame of ``elements`` residual elements.
    elements : float
        Residual elements per frame (default: a 24 MP RGB photo).

    Returns
    -------
    t : float
        ``|z|`` threshold of the hot/dead test.
    f : float
        Variance-ratio threshold of the noisy test.

    Notes
    -----
    With ``p = false_alarms / (2 * elements)`` (two-sided for ``z``, the
    hot and the dead tail):

        t = c_t * T_{nu}^{-1}(1 - p),   nu = 4 (n - 1)
        f = c_f * chi2_{n-1}^{-1}(1 - 2p) / (n - 1)

    ``T_nu`` is Student's t: ``z`` divides by the larger of the element's
    own and the pooled scale, which makes it lighter-tailed than Student's t
    with ``n - 1`` degrees of freedom and heavier than a normal; the median
    of eight neighbours' scales carries about four times the degrees of
    freedom of one.  ``chi2_{n-1} / (n - 1)`` is the distribution of a
    normal sample's variance over its true variance.  ``c_t`` and ``c_f``
    are the empirical corrections (module constants) measured on the
    simulated cameras.
    """
    n = int(n)
    if n < 3:
        return math.inf, math.inf
    p = false_alarms / (2.0 * elements)
    # computed here: importing scipy.stats for two numbers was 0.6-0.9 s of
    # a run's fixed costs, scipy.special 0.15-0.25 s (issue 10)
    from .quantiles import chi2_isf, t_isf
    t = _T_CORRECTION * t_isf(p, 4 * (n - 1))
    f = _F_CORRECTION * chi2_isf(2 * p, n - 1) / (n - 1)
    return t, f


def _offsets(reach):
    """Same-colour 5x5 window offsets (without the centre) and its groups."""
    from .detect import _geometry

    dy, dx, quads, lines, ring = _geometry(5)
    return dy * reach, dx * reach, quads, lines, ring


def _gather(plane, ys, xs, dy, dx, reach):
    """``plane`` at ``(ys + dy, xs + dx)``, reflected by ``reach`` at the edges."""
    from .residual import _reflect

    h, w = plane.shape
    ny = _reflect(ys[:, None] + dy[None, :], h, reach)
    nx = _reflect(xs[:, None] + dx[None, :], w, reach)
    # a 5x5 window may reach twice as far as one reflection covers
    ny = np.clip(np.abs(ny), 0, h - 1)
    nx = np.clip(np.abs(nx), 0, w - 1)
    return np.asarray(plane[ny, nx], dtype=np.float32)


def _scale_floor(var, n):
    """The least scale of a layout's residuals, from its first plane (luma, or the mosaic).

    The input is quantised to whole units (std 0.29), and where a region
    looks the same in every frame (a clipped or plain sky) JPEG repeats the
    same sub-unit artefacts in every frame, which a scale of a fraction of a
    unit would call significant; the chroma of mostly grey scenes varies by
    less than that, so the floor comes from the luma plane.
    """
    h, w = var.shape
    sd = np.sqrt(np.maximum(var[::max(1, h // 64), ::max(1, w // 64)], 0) * (n / (n - 1.0)))
    return max(_FLOOR_FRACTION * float(np.median(sd)), 0.3)


class Cancelled(Exception):
    """Raised by :func:`temporal_records` when its ``cancel`` callable says so."""


def _plane_records(mean, var, n, reach, t_thr, f_thr, floor, cancel=None):
    """Flagged elements of one residual plane: ``(ys, xs, code, score, z)``;
    ``cancel()`` is asked before each band of rows."""
    from .detect import _directional, _median_rows

    h, w = mean.shape
    # the standard error of the residual mean, with a systematic part
    root_n = math.sqrt(n / (1.0 + _SYSTEMATIC ** 2 * n))
    corr = n / (n - 1.0)
    found = []
    dy, dx, quads, lines, ring = _offsets(reach)
    near = np.array([i for i in range(dy.size)
                     if max(abs(dy[i]), abs(dx[i])) == reach])       # the 8 nearest
    for y0 in range(0, h, _BAND):
        if cancel is not None and cancel():
            raise Cancelled("the residual test was cancelled")
        y1 = min(h, y0 + _BAND)
        m = np.asarray(mean[y0:y1], dtype=np.float32)
        # cheap: the own scale only (the pooled one is only ever larger for
        # z, smaller for F: both cases are checked exactly below); in place,
        # the same float32 operations as written out (issue 10)
        s = np.maximum(np.asarray(var[y0:y1], dtype=np.float32), 0)
        s *= np.float32(corr)
        np.sqrt(s, out=s)
        # an infinite F threshold (the test off) passes nothing
        cand = s > np.float32(floor * math.sqrt(f_thr)) if f_thr < math.inf else None
        np.maximum(s, np.float32(floor), out=s)
        s *= np.float32(_CANDIDATE_FRACTION * t_thr)
        lhs = np.abs(m)
        lhs *= np.float32(root_n)
        if cand is None:
            cand = lhs >= s
        else:
            cand |= lhs >= s
        # flatnonzero is many times faster than nonzero on a 2-D mask
        ys, xs = np.divmod(np.flatnonzero(cand), w)
        if ys.size == 0:
            continue
        # candidates a chunk at a time: the working memory stays bounded
        # (temporal_memory_bytes) however many a band has
        every_y, every_x = ys + y0, xs
        for i in range(0, every_y.size, _CHUNK):
            ys, xs = every_y[i:i + _CHUNK], every_x[i:i + _CHUNK]
            nb_s = _gather_sd(var, ys, xs, dy[near], dx[near], reach, corr)
            pooled = np.maximum(_median_rows(nb_s), np.float32(floor))
            s_c = np.sqrt(np.maximum(np.asarray(var[ys, xs], np.float32), 0) * np.float32(corr))
            m_c = np.asarray(mean[ys, xs], np.float32)
            denom = np.maximum(s_c, pooled)
            z = m_c * np.float32(root_n) / denom
            ratio = (s_c / pooled) ** 2
            live = (np.abs(z) >= t_thr) | (ratio >= f_thr)
            if not live.any():
                continue
            ys, xs, z, ratio, denom, pooled, s_c = (a[live] for a in (ys, xs, z, ratio, denom,
                                                                       pooled, s_c))
            # the same statistic at the window's elements, on the candidate's scale
            nb_m = _gather(mean, ys, xs, dy, dx, reach)
            nb_z = nb_m * np.float32(root_n) / denom[:, None]
            zd = _directional(z, nb_z, _median_rows(nb_z), quads, lines)
            # ... and stand out from the window's outer ring by more than that
            # ring's own spread: a curved edge that is in every frame (a horizon)
            # leaves steady residuals of both signs around it, noise does not
            ring_z = nb_z[:, ring]
            spread = _MAD_TO_SIGMA * _median_rows(np.abs(ring_z - _median_rows(ring_z)[:, None]))
            zd = np.where(np.abs(zd) >= _CONTRAST * spread, zd, 0).astype(np.float32)
            nb_sd = _gather_sd(var, ys, xs, dy, dx, reach, corr)
            sd_ratio = (nb_sd / pooled[:, None]) ** 2
            rd = _directional(ratio, sd_ratio, _median_rows(sd_ratio), quads, lines)
            code = np.zeros(ys.size, dtype=np.int8)
            score = np.zeros(ys.size, dtype=np.float32)
            # a random telegraph raises the mean by at most about its std
            # (|z| <= sqrt(n)) and the variance far above the neighbours'; a hot
            # photosite's mean rises far more than its own shot noise.  Such an
            # element gets no hot/dead verdict here (the mean/variance tests
            # judge it), and "noisy" when its variance stands out on every side.
            telegraph = (ratio >= _TELEGRAPH_F) & (np.abs(z) <= _TELEGRAPH_Z * root_n)
            noisy = telegraph & (rd >= f_thr - 1.0) & (ratio >= f_thr)
            hot = ~telegraph & (zd >= t_thr)
            dead = ~telegraph & (zd <= -t_thr)
            code[hot], score[hot] = _HOT, zd[hot]
            code[dead], score[dead] = _DEAD, -zd[dead]
            code[noisy], score[noisy] = _NOISY, np.sqrt(ratio[noisy])
            keep = code > 0
            if keep.any():
                found.append((ys[keep], xs[keep], code[keep], score[keep], z[keep]))
    if not found:
        e = np.empty(0, np.int64)
        return e, e, np.empty(0, np.int8), np.empty(0, np.float32), np.empty(0, np.float32)
    return tuple(np.concatenate([f[i] for f in found]) for i in range(5))


def _gather_sd(var, ys, xs, dy, dx, reach, corr):
    v = _gather(var, ys, xs, dy, dx, reach)
    np.maximum(v, 0, out=v)
    v *= np.float32(corr)
    return np.sqrt(v, out=v)


def _channel_position(mean, ys, xs, c, sign, scale):
    """Within each chroma element's 4x4 footprint, the pixel whose channel ``c``
    mean is most off its same-colour neighbours' (2 px away) in the direction
    ``sign`` (``scale`` 1: the element is the pixel)."""
    if scale == 1:
        return ys, xs
    from .residual import _FOOTPRINT

    h, w = mean.shape[:2]
    best_y, best_x = ys * scale, xs * scale
    best = np.full(ys.size, -np.inf, dtype=np.float32)
    for oy in _FOOTPRINT:
        for ox in _FOOTPRINT:
            yy = np.clip(ys * scale + oy, 0, h - 1)
            xx = np.clip(xs * scale + ox, 0, w - 1)
            centre = mean[yy, xx, c].astype(np.float32)
            nb = np.stack([mean[np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1), c]
                           for dy, dx in ((-2, 0), (2, 0), (0, -2), (0, 2))], axis=1)
            off = (centre - np.median(nb.astype(np.float32), axis=1)) * sign
            better = off > best
            best = np.where(better, off, best)
            best_y = np.where(better, yy, best_y)
            best_x = np.where(better, xx, best_x)
    return best_y, best_x


# Residual plane of an RGB photo -> the RGB channel it mostly speaks for.
_YCC_CHANNEL = (1, 2, 0)
# Luma weights (JPEG's) for the position of a level-test defect.
_LUMA = (0.299, 0.587, 0.114)


class _Slope:
    """The level test's plane as the mean/variance of a residual plane, lazily.

    From the per-frame means ``P`` of ``r * L``, ``W`` of ``L * L`` and
    ``Q`` of ``r * r`` (``residual.LEVEL_SUMS``), the regression through
    the origin ``r = a L`` has ``a = P / W`` and residual sum of squares
    ``n (Q - P**2 / W)``; with ``mean = P / sqrt(W)`` and ``var = Q - P**2
    / W`` as a residual plane's mean and variance, ``_plane_records``' ``z``
    is the t statistic of ``a`` (``n - 1`` degrees of freedom, as the
    mean's).  Elements of indexing are computed on demand (no plane-sized
    array): ``which`` is ``"mean"`` or ``"var"``.
    """

    def __init__(self, P, W, Q, which):
        self.P, self.W, self.Q, self.which = P, W, Q, which
        self.shape = P.shape

    def __getitem__(self, key):
        # float64 copies, worked on in place: where W > 0, P / sqrt(W) and
        # max(Q - P * P / W, 0); elsewhere 0 and max(Q, 0) (issue 10: the
        # same values with a third of the temporaries)
        p = np.array(self.P[key], dtype=np.float64)
        w = np.array(self.W[key], dtype=np.float64)
        live = w > 0
        if self.which == "mean":
            np.sqrt(w, out=w, where=live)
            np.divide(p, w, out=p, where=live)
            p[~live] = 0.0
            return p.astype(np.float32)
        q = np.array(self.Q[key], dtype=np.float64)
        np.multiply(p, p, out=p)
        np.divide(p, w, out=p, where=live)
        np.subtract(q, p, out=q, where=live)
        return np.maximum(q, 0.0, out=q).astype(np.float32)


class _Wide:
    """The wide residual's plane as a residual plane's mean and variance,
    lazily: ``mean = S`` (the per-frame mean of ``r``, clipped frames
    counted as 0) and ``var = Q - S**2``."""

    def __init__(self, S, Q, which):
        self.S, self.Q, self.which = S, Q, which
        self.shape = S.shape

    def __getitem__(self, key):
        if self.which == "mean":
            return np.asarray(self.S[key], dtype=np.float32)
        m = np.array(self.S[key], dtype=np.float64)
        q = np.array(self.Q[key], dtype=np.float64)
        m *= m
        q -= m
        return np.maximum(q, 0.0, out=q).astype(np.float32)


def _level_position(mean, ys, xs, c, sign):
    """Within each level element's 8x8 footprint, the pixel whose channel
    ``c`` plus luma mean is most off the same at its neighbours 2 px away,
    in the direction ``sign``.  (Channel ``c`` alone, after 4:2:0, puts a
    dead blue photosite's blob up to a chroma sample off; the luma, at full
    resolution, carries a little of every colour.)"""
    from .residual import _WIDE

    h, w = mean.shape[:2]

    def value(yy, xx):
        v = np.asarray(mean[yy, xx, c], dtype=np.float32)
        for k, weight in enumerate(_LUMA):
            v = v + np.float32(weight) * np.asarray(mean[yy, xx, k], dtype=np.float32)
        return v

    best_y, best_x = ys * 2, xs * 2
    best = np.full(ys.size, -np.inf, dtype=np.float32)
    for oy in _WIDE:
        for ox in _WIDE:
            yy = np.clip(ys * 2 + oy, 0, h - 1)
            xx = np.clip(xs * 2 + ox, 0, w - 1)
            nb = np.stack([value(np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1))
                           for dy, dx in ((-2, 0), (2, 0), (0, -2), (0, 2))], axis=1)
            off = (value(yy, xx) - np.median(nb, axis=1)) * sign
            better = off > best
            best = np.where(better, off, best)
            best_y = np.where(better, yy, best_y)
            best_x = np.where(better, xx, best_x)
    return best_y, best_x


def temporal_records(res: Residuals, mean, var, *, t_thr: Optional[float] = None,
                     f_thr: Optional[float] = None, overlay=None,
                     cancel=None) -> Dict[str, np.ndarray]:
    """Flagged subpixels from residual statistics, as ``hotpixel_shm.detect`` records.

    Parameters
    ----------
    res : Residuals
        Residual statistics of the same frames as ``mean``/``var``.
    mean, var : numpy.ndarray
        ``(height, width, channels)`` per-subpixel mean and variance (for the
        reported values and the overlay rule).
    t_thr : float, optional
        ``|z|`` threshold (default: ``thresholds(res.n)[0]``).
    f_thr : float, optional
        Variance-ratio threshold of the noisy test (default: off; the
        chi-square value of ``thresholds`` is the least that makes sense).
    overlay : callable, optional
        ``overlay(ys, xs) -> bool array``: subpixels next to a static
        overlay, which get no verdict.
    cancel : callable, optional
        Asked before each band of rows; when it returns true the test
        stops with :class:`Cancelled` (detection interrupted while this
        runs on another thread).

    Returns
    -------
    dict of numpy.ndarray
        Equal-length arrays ``y``, ``x``, ``c``, ``code``, ``score``, ``m``,
        ``s``, ``med``, ``zm`` (``zm`` is ``z``) and ``t`` (``|z|``).
    """
    from .detect import _concat

    dt, _ = thresholds(res.n)
    t_thr = dt if t_thr is None else float(t_thr)
    # The variance-ratio test is off unless asked for: on the simulated
    # cameras, defect-free texture reached ratios of 40 (raw) to 140 (JPEG
    # block edges) -- far beyond the chi-square tail, and above the ratio of
    # some planted telegraphs -- so "noisy" stays with the mean/variance test.
    f_thr = math.inf if f_thr is None else float(f_thr)
    lay = res.layout
    parts: List[dict] = []
    floor = _scale_floor(res.var[0], res.n)
    for k in range(len(lay.planes)):
        reach = lay.plane_reach(k)
        ys, xs, code, score, z = _plane_records(res.mean[k], res.var[k], res.n, reach,
                                                t_thr, f_thr, floor, cancel)
        if ys.size == 0:
            continue
        c = _YCC_CHANNEL[k] if lay.mode == "ycc" else k
        sign = np.where(code == _DEAD, -1.0, 1.0).astype(np.float32)
        ys, xs = _channel_position(mean, ys, xs, c, sign, lay.plane_scale(k))
        _add_part(parts, mean, var, overlay, ys, xs, c, code, score, z,
                  reach * lay.plane_scale(k), lay.plane_scale(k))
    if res.levels is not None and lay.mode == "ycc":
        from .residual import _WIDE_REACH, LEVEL_SUMS

        # the level test (see hotpixel_shm.residual): the slope of each
        # chroma plane's wide residual against its colour's level
        per = len(LEVEL_SUMS)
        for k in (1, 2):
            P, W, Q, S = res.levels[per * (k - 1):per * k]
            for m, v in ((_Slope(P, W, Q, "mean"), _Slope(P, W, Q, "var")),
                         (_Wide(S, Q, "mean"), _Wide(S, Q, "var"))):
                ys, xs, code, score, z = _plane_records(m, v, res.n, _WIDE_REACH, t_thr,
                                                        math.inf, floor, cancel)
                if ys.size == 0:
                    continue
                c = _YCC_CHANNEL[k]
                sign = np.where(code == _DEAD, -1.0, 1.0).astype(np.float32)
                ys, xs = _level_position(mean, ys, xs, c, sign)
                _add_part(parts, mean, var, overlay, ys, xs, c, code, score, z, 2, 2)
    return _concat(parts)


def temporal_memory_bytes(shape) -> int:
    """The most working memory :func:`temporal_records` allocates for
    statistics of ``shape`` (``(height, width[, channels])``).

    Bytes: a band of rows of the widest residual plane (its std and
    ``|mean|`` as float32, the mask, the candidates' indices at worst),
    the level planes' float64 band, a chunk of candidates' windows, a
    chunk of the overlay check (a 4:2:0 chroma block's reach), and 1 MiB
    for the records.  The planner counts it beside detection's bands
    (``hotpixel_shm.budget``): it runs on the line test's thread once the
    line test is done.  Measured 8.7 MiB (tracemalloc) for 6000 x 4000 RGB
    statistics of 12 photos, 18 MiB with thresholds lowered to 4.5 and the
    variance-ratio test on (10798 records); this bound: 34 MiB.
    """
    from .detect import _OVERLAY_CHUNK, _RING_RADIUS
    w = int(shape[1])
    band = _BAND * w * (4 + 4 + 1 + 3 * 8)
    level = _BAND * ((w + 1) // 2) * (3 * 8 + 1 + 4)
    window = 24                                 # a 5x5 window without its centre
    chunk = min(_CHUNK, _BAND * w) * window * 48
    reach = 2 * (2 * _RING_RADIUS) + 1         # subsampled chroma: twice a luma block
    overlay = _OVERLAY_CHUNK * reach * reach * 24
    return int(band + level + chunk + overlay + (1 << 20))


def _add_part(parts, mean, var, overlay, ys, xs, c, code, score, z, reach, scale):
    """Flagged subpixels ``(ys, xs)`` of channel ``c`` as detection records,
    appended to ``parts``: those next to a static overlay dropped (its ring
    of ``scale`` times a luma block), the values of ``mean``/``var`` there
    and the median of the same channel ``reach`` pixels away."""
    if overlay is not None:
        # subsampled chroma rings over its 16x16 block
        drop = overlay(ys, xs, scale) & (code != _NOISY)
        if drop.any():
            keep = ~drop
            ys, xs, code, score, z = ys[keep], xs[keep], code[keep], score[keep], z[keep]
    if ys.size == 0:
        return
    cc = np.full(ys.size, c, dtype=np.int16)
    hgt, wid = mean.shape[:2]
    nbm = np.stack([mean[np.clip(ys + dy, 0, hgt - 1), np.clip(xs + dx, 0, wid - 1), c]
                    for dy, dx in ((-reach, 0), (reach, 0), (0, -reach), (0, reach))],
                   axis=1).astype(np.float32)
    parts.append({"y": ys.astype(np.int32), "x": xs.astype(np.int32), "c": cc,
                  "code": code, "score": score.astype(np.float32),
                  "m": mean[ys, xs, c].astype(np.float32),
                  "s": np.sqrt(np.maximum(var[ys, xs, c], 0)).astype(np.float32),
                  "med": np.median(nbm, axis=1).astype(np.float32),
                  "zm": z.astype(np.float32), "t": np.abs(z).astype(np.float32)})
