"""Hot, stuck, dead and noisy pixels from finished per-subpixel statistics.

Every subpixel (row, column, channel) is judged against its same-channel
neighbours in a small window (5x5 by default, the centre excluded): the
median of the neighbours' means and of their standard deviations is what
the subpixel "should" read, and a robust scale (MAD) says how far off is far.

A defect differs from its neighbours on every side.  The edge, corner or
thin line of a structure that is the same in every photo (a blown sky, a
black border, a date stamp) agrees with its neighbours on at least one
side, so in photos a subpixel must also stand out against each corner
quadrant of its window, each line and each ray through its centre, and
from the spread of the window's outer ring.  Something burnt into every
photo (a date stamp) barely varies from photo to photo while the area
around it does; near such an overlay (within one JPEG block) nothing is
judged by its mean.

The work is done per channel in bands one tile (32 rows) high, in two
passes: a cheap pass (window sums) picks candidates, and the exact robust
statistics are computed at the candidates only.  Flagged subpixels that
touch (8-connected, any channel) are merged into one defect: demosaicing
and JPEG spread one bad photosite over about 3x3 pixels in every channel;
a much weaker defect in the same 16x16 JPEG block as a strong one is its
ringing echo and is merged into it.

This module is numerics only (numpy and scipy).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from . import kernels
from .bands import BandArray, frame_reader, map_ordered
from .errors import HotPixelError
from .model import KIND_CODES, KINDS, Defect

__all__ = ["DetectOptions", "detect", "detect_memory_bytes", "check_stats", "cfa_period",
           "mosaic_period"]

log = logging.getLogger(__name__)

#: MAD of a normal distribution times this is its standard deviation.
_MAD_TO_SIGMA = 1.4826
# Side of the square tiles of the local robust scale (pixels; even, so a
# tile holds whole 2x2 cells).  A band of the cheap pass is one tile high.
_TILE = 32
# Near an overlay (date stamp) when at least this many quiet pixels lie
# within _RING_RADIUS; one or two bad photosites make at most a few.
_STATIC_PIXELS = 8
# A hot or dead subpixel differs from the outer ring of its window by at
# least this many times the ring's robust spread (edges and texture have a
# large spread, a lone defect -- even one smeared by 4:2:0 JPEG -- a small one).
_CONTRAST = 2.0
# Candidates processed at once in the exact pass.
_CHUNK = 8192
# Records of the residual test checked for an overlay at once.
_OVERLAY_CHUNK = 256
# Subpixels sampled per channel to estimate the global robust scales.
_SAMPLES = 10000
# A cheap-pass candidate needs this fraction of the smallest threshold: the
# box residual of a demosaic/JPEG-smeared defect is at least about 0.6 of
# its residual against the median.
_CANDIDATE_FRACTION = 0.5
# Flagged subpixels kept at most (the strongest); beyond it the data is not
# a camera with a few defects, and memory must stay bounded.
_MAX_FLAGGED = 200_000
# Both the mean and the std are high: noisy rather than hot when the std
# rose by at least this fraction of the mean's rise.  A random telegraph
# raises its mean by about its std (or not at all when symmetric); a hot
# pixel raises its mean far more than its std (shot noise is a square root).
_TELEGRAPH = 0.5
# JPEG rings: a strong defect leaves weaker flagged specks elsewhere in its
# 8x8 (luma) or 16x16 (subsampled chroma) block.  A defect in the same
# _JPEG_BLOCK x _JPEG_BLOCK block (aligned at the image origin, as JPEG's
# are) as one at least _RING_RATIO times as strong is taken to be such an
# echo and merged into it.
_JPEG_BLOCK = 16
_RING_RATIO = 2.5
# JPEG ringing around an overlay reaches this far (pixels): one 8x8 block.
_RING_RADIUS = 8
# Numbers of the kinds in the flagged-record arrays (model.KIND_CODES).
_HOT, _STUCK, _DEAD, _NOISY = (KIND_CODES[k] for k in ("hot", "stuck", "dead", "noisy"))
_KIND_NAMES = {KIND_CODES[k]: k for k in KINDS}
# A colour filter array's index -> letter, unless the caller knows better.
_COLOUR_LETTERS = "RGBG"
# Longest CFA period looked for (X-Trans is 6).
_MAX_PERIOD = 16


@dataclass
class DetectOptions:
    """Thresholds and switches of ``detect``.

    Attributes
    ----------
    darks : bool
        The statistics come from dark frames (flat, no scene): residuals
        against the whole window only (no edges to guard against: full
        sensitivity for warm pixels, and a bad column is reported pixel by
        pixel), and no overlay rule.
    hot_sigma : float
        Hot: mean at least this many robust sigmas above the neighbours'.
    stuck_sigma : float
        Stuck: std at least this many robust sigmas below the neighbours'
        and below ``stuck_ratio`` times their median, while the mean differs
        from theirs by at least ``stuck_mean_sigma``.
    dead_sigma : float
        Dead: mean at least this many robust sigmas below the neighbours'
        and below ``dead_fraction`` times their median.
    noisy_sigma : float
        Noisy: std at least this many robust sigmas above the neighbours'
        and at least ``noisy_ratio`` times their median, with a normal mean
        (or a mean raised by no more than twice the rise of the std: a
        random telegraph).
    stuck_mean_sigma : float
        See ``stuck_sigma``.
    stuck_ratio : float
        See ``stuck_sigma``.
    dead_fraction : float
        See ``dead_sigma``.
    noisy_ratio : float
        See ``noisy_sigma``.
    static_ratio : float
        A pixel is "quiet" when its std is at most this fraction of the
        typical std of its 32x32 tile.  With 8 or more quiet pixels within
        8 px, a subpixel is next to an overlay (a date stamp) and gets no
        hot, stuck or dead verdict.  0 turns the rule off.
    window : int
        Neighbourhood size (odd, >= 3); the centre is excluded.
    top : int or None
        Keep only the ``top`` worst defects.
    cluster : bool
        Merge flagged subpixels that touch (8-connected, any channel) into
        one defect, and JPEG echoes into their defect; False: every flagged
        subpixel is its own defect (raw mosaics and dark frames, which have
        no demosaic smear).
    temporal : bool
        Also test the temporal residual statistics when ``detect`` is given
        them (``residuals=``); see ``hotpixel_shm.temporal``.
    t_sigma : float or None
        Hot/dead threshold of the residual test on ``|z|``; None: calibrated
        for ``n`` frames (``hotpixel_shm.temporal.thresholds``: about 0.05
        false alarms per 24 MP frame).
    noisy_f : float or None
        Noisy threshold of the residual test on the variance ratio (own
        over the neighbours'); None: that test is off, "noisy" is judged by
        the mean/variance test (scene texture gives the ratio heavy tails).

    Notes
    -----
    The sigma thresholds are in units of a robust scale: 1.4826 times the
    MAD of the residuals (subpixel minus the median of its neighbours),
    estimated per channel and per position in the 2x2 cell (a demosaiced
    photo is noisier at the photosites of a colour than where that colour
    was interpolated), or the same statistic over the subpixel's 32x32
    tile where that is larger (texture).

    The defaults come from the simulated camera of ``hotpixel_shm.synth``
    (JPEG 4:2:0 and 4:2:2 at quality 92, PNG, 16-bit dark frames; 24 to
    40 frames of 480x320): on defect-free sets with a blown sky, a black
    border, vignetting and a date stamp, the highest score of anything that
    is not a defect stayed below 7.2 (80 sets), while the planted hot,
    stuck and dead photosites scored 10 to several hundred.  A Gaussian
    tail beyond 8 sigma is about 1e-15 per subpixel, which leaves room for
    the heavier tails of real photos.  ``stuck_ratio`` 0.55 separates stuck
    photosites (std 0 in PNG, 0.15-0.5 of the neighbours' in JPEG) from hot
    ones that clip in bright photos (0.55 and up for offsets up to 150 of
    255); ``dead_fraction`` 0.8 accepts a dead photosite that JPEG filled in
    with its neighbours' colour, not a merely dim pixel; ``noisy_ratio``
    1.25 keeps the bimodal pixels along a moving edge out.
    """

    darks: bool = False
    hot_sigma: float = 8.0
    stuck_sigma: float = 8.0
    dead_sigma: float = 8.0
    noisy_sigma: float = 8.0
    stuck_mean_sigma: float = 4.0
    stuck_ratio: float = 0.55
    dead_fraction: float = 0.8
    noisy_ratio: float = 1.25
    static_ratio: float = 0.4
    window: int = 5
    top: Optional[int] = None
    cluster: bool = True
    temporal: bool = True
    t_sigma: Optional[float] = None
    noisy_f: Optional[float] = None


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def _clamp(idx, size):
    """Out-of-range indices -> the nearest edge (the image is extended by its edge values).

    Outside the image there is no evidence: repeating the edge makes the
    outward parts of a window agree with the edge, so an image edge is never
    taken for a defect (a defect in the outermost rows and columns is
    therefore harder to see).
    """
    return np.clip(idx, 0, size - 1)


def _geometry(window):
    """Offsets of the window without its centre, its corner quadrants and its lines.

    Returns ``dy``, ``dx`` (each ``window**2 - 1`` long), ``quads``, a
    ``(4, (h+1)**2 - 1)`` array of indices into them (the four corner
    squares that contain the centre), ``lines``, a list of index arrays (the
    row, the column and the two diagonals through the centre; for windows
    of 5 and more also their two points two pixels out; the eight rays out
    from the centre), and ``ring``, the indices of the window's outermost
    ring.
    """
    h = window // 2
    dy, dx = np.mgrid[-h:h + 1, -h:h + 1]
    keep = (dy != 0) | (dx != 0)
    dy, dx = dy[keep], dx[keep]
    quads = [np.nonzero((dy * sy >= 0) & (dx * sx >= 0))[0] for sy in (-1, 1) for sx in (-1, 1)]
    lines = [np.nonzero(dy == 0)[0], np.nonzero(dx == 0)[0],
             np.nonzero(dy == dx)[0], np.nonzero(dy == -dx)[0]]
    if h >= 2:
        # the same lines, only the points two pixels out: the same position
        # in the 2x2 cell, which demosaicing's zipper along an edge spares
        far = np.maximum(np.abs(dy), np.abs(dx)) == 2
        lines += [np.nonzero(far & (dy == 0))[0], np.nonzero(far & (dx == 0))[0],
                  np.nonzero(far & (dy == dx))[0], np.nonzero(far & (dy == -dx))[0]]
    # rays: the points out from the centre in one of eight directions, which
    # the end of a line or a step of a staircase edge agree with
    for sy in (-1, 0, 1):
        for sx in (-1, 0, 1):
            if sy or sx:
                lines.append(np.nonzero((dy * sx == dx * sy) & (dy * sy >= 0) & (dx * sx >= 0))[0])
    ring = np.nonzero(np.maximum(np.abs(dy), np.abs(dx)) == h)[0]
    return dy, dx, np.array(quads), [np.array(g) for g in lines], ring


def _batcher_pairs(n):
    """Comparators of Batcher's odd-even merge sort for ``n`` (a power of two) items."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


_NETWORK8 = _batcher_pairs(8)


def _median_small(v):
    """Median along the last axis of length 4 or 8, by a sorting network.

    numpy sorts short rows one at a time; a network of elementwise
    minimum/maximum over the columns is several times faster.
    """
    k = v.shape[-1]
    cols = [v[..., i] for i in range(k)]
    if k == 4:
        a, b, c, d = cols
        return 0.5 * (np.maximum(np.minimum(a, b), np.minimum(c, d))
                      + np.minimum(np.maximum(a, b), np.maximum(c, d)))
    if k != 8:
        return _median_rows(v)
    cols = [c.copy() for c in cols]
    for i, j in _NETWORK8:
        lo = np.minimum(cols[i], cols[j])
        np.maximum(cols[i], cols[j], out=cols[j])
        cols[i] = lo
    return 0.5 * (cols[3] + cols[4])


def _median_rows(v):
    """Median along the last axis (numpy's vectorised sort beats partition on short rows)."""
    k = v.shape[-1]
    srt = np.sort(v, axis=-1)
    if k % 2:
        return srt[..., k // 2]
    return 0.5 * (srt[..., k // 2 - 1] + srt[..., k // 2])


def _band_rows(height):
    """Rows per band: one tile high (small bands keep the few band buffers in cache)."""
    return int(min(_TILE, height))


def _phase(ys, xs):
    """Position in the 2x2 cell: 0..3."""
    return (ys % 2) * 2 + (xs % 2)


# ---------------------------------------------------------------------------
# Global scales from a sample of subpixels
# ---------------------------------------------------------------------------

def _mad_by_phase(r, phase, floor):
    """1.4826 x MAD of ``r`` for each 2x2 phase (all phases pooled where a phase is thin)."""
    pooled = _MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r)))) if r.size else 0.0
    out = np.empty(4)
    for p in range(4):
        rp = r[phase == p]
        out[p] = (_MAD_TO_SIGMA * float(np.median(np.abs(rp - np.median(rp))))
                  if rp.size >= 64 else pooled)
    return np.maximum(out, floor)


def _global_scales(pm, pv, window, rng):
    """Robust scales of one channel's residuals, per 2x2 phase, from a sample.

    Returns ``(g_mean, g_std, g_mean_box, g_std_box)``, each of shape (4,):
    1.4826 x MAD of the residuals against the neighbours' median (the exact
    test) and against the neighbours' average (the cheap candidate pass).
    """
    hgt, wid = pm.shape
    k = min(_SAMPLES, hgt * wid)
    flat = rng.choice(hgt * wid, size=k, replace=False) if k < hgt * wid else np.arange(k)
    ys, xs = np.divmod(flat, wid)
    dy, dx = _geometry(window)[:2]
    ny = _clamp(ys[:, None] + dy[None, :], hgt)
    nx = _clamp(xs[:, None] + dx[None, :], wid)
    phase = _phase(ys, xs)
    out = []
    for plane, is_var in ((pm, False), (pv, True)):
        nb = np.asarray(plane[ny, nx], dtype=np.float64)
        centre = np.asarray(plane[ys, xs], dtype=np.float64)
        if is_var:
            nb = np.sqrt(np.maximum(nb, 0))
            centre = np.sqrt(np.maximum(centre, 0))
        # A zero scale would make any difference infinite.
        floor = max(1e-6 * float(np.max(np.abs(centre))), 1e-12)
        # Neighbourhoods that are constant (clipped sky, black border) carry
        # no information about the noise and would pull the MAD to zero.
        lively = (nb.max(axis=1) > nb.min(axis=1)) | (nb[:, 0] != centre)
        nb, centre, ph = nb[lively], centre[lively], phase[lively]
        out.append(_mad_by_phase(centre - _median_rows(nb), ph, floor))
        out.append(_mad_by_phase(centre - nb.mean(axis=1), ph, floor))
    g_mean, g_mean_box, g_std, g_std_box = out
    return g_mean, g_std, g_mean_box, g_std_box


# ---------------------------------------------------------------------------
# One band of one channel
# ---------------------------------------------------------------------------

def _halo_rows(hgt, y0, y1, h):
    """``(lo, hi, top)``: the rows ``[lo, hi)`` of a plane of ``hgt`` rows that
    rows ``[y0 - h, y1 + h)`` of a band and its halo hold, and the row of the
    padded band buffer where ``lo`` goes."""
    lo, hi = max(0, y0 - h), min(hgt, y1 + h)
    return lo, hi, lo - (y0 - h)


def _row_sources(plane, lo, hi):
    """Rows ``[lo, hi)`` of a plane as a list of 2-D arrays, top to bottom:
    the band reader's cached bands themselves where the plane is one
    channel of a whole frame read band by band (no copy), else one array."""
    if isinstance(plane, _ChannelRows):
        return plane.row_views(lo, hi)
    if isinstance(plane, np.ndarray):
        return [plane[lo:hi]]
    return [np.asarray(plane[lo:hi])]


def _fill_band(buf, plane, y0, y1, h, is_var):
    """Copy rows ``[y0-h, y1+h)`` of ``plane`` into ``buf`` (float32), edge values repeated.

    ``buf`` has shape ``(y1 - y0 + 2h, width + 2h)``; for a variance plane
    the square root (the std) is stored.
    """
    hgt, wid = plane.shape
    rows = y1 - y0 + 2 * h
    lo, hi, top = _halo_rows(hgt, y0, y1, h)
    dst = buf[top:top + (hi - lo), h:h + wid]
    if isinstance(plane, _ChannelRows):
        plane.copy_rows(dst, lo, hi)        # straight from the reader's bands
    else:
        np.copyto(dst, plane[lo:hi], casting="unsafe")
    if is_var:
        np.maximum(dst, 0, out=dst)    # rounding can leave tiny negative variances
        np.sqrt(dst, out=dst)
    for r in list(range(0, top)) + list(range(top + (hi - lo), rows)):
        src = int(_clamp(y0 - h + r, hgt)) - (y0 - h)
        buf[r, h:h + wid] = buf[src, h:h + wid]
    if h:
        buf[:, :h] = buf[:, h:h + 1]
        buf[:, h + wid:] = buf[:, h + wid - 1:h + wid]


def _box_residuals(buf, hsum, out, h):
    """``|value - mean of its window neighbours|`` for the band's own pixels, into ``out``.

    The window sums are shifted adds in float32 (exact enough for a
    candidate test, and cache-friendly on a band of a few rows); ``hsum`` is
    scratch of shape ``(buf rows, width)``.
    """
    rows, cols = out.shape
    w = 2 * h + 1
    np.copyto(hsum, buf[:, 0:cols])
    for k in range(1, w):
        hsum += buf[:, k:k + cols]
    np.copyto(out, hsum[0:rows])
    for k in range(1, w):
        out += hsum[k:k + rows]
    # (w*w*c - S) / (w*w - 1) = c - mean of the neighbours
    np.multiply(buf[h:h + rows, h:h + cols], -float(w * w), out=hsum[:rows])
    out += hsum[:rows]
    np.abs(out, out=out)
    out *= 1.0 / (w * w - 1)
    return out


def _phase_thresholds(thr, width):
    """Per-phase thresholds laid out as two rows: ``out[py, x] = thr[2*py + x % 2]``."""
    out = np.empty((2, width), dtype=np.float32)
    for py in range(2):
        out[py, 0::2] = thr[2 * py]
        out[py, 1::2] = thr[2 * py + 1]
    return out


def _above(absres, thr2, out):
    """``out = absres > the threshold of each pixel's 2x2 phase`` (from ``_phase_thresholds``)."""
    rows, cols = absres.shape
    even = rows - rows % 2
    # one broadcast comparison over row pairs instead of four strided ones
    np.greater(absres[:even].reshape(even // 2, 2, cols), thr2[None],
               out=out[:even].reshape(even // 2, 2, cols))
    if rows % 2:
        np.greater(absres[-1], thr2[0], out=out[-1])
    return out


def _tile_medians(arrays, xs):
    """Median of each array over the band-high tile of each candidate column.

    Tiles are ``_TILE`` x ``_TILE`` pixels (the band is one tile high),
    sampled every other row and column: large enough that one defect's
    smear (a few pixels) does not move the median, small enough to follow
    the texture of the image.  The last tile of a row is completed with the
    edge values.  Returns one array of medians per input, per candidate.
    """
    cols = arrays[0].shape[1]
    tiles, inverse = np.unique(xs // _TILE, return_inverse=True)
    ox = np.minimum(tiles[:, None] * _TILE + np.arange(0, _TILE, 2)[None, :], cols - 1)
    out = []
    for arr in arrays:
        vals = arr[::2][:, ox]                       # (rows/2, tiles, TILE/2)
        vals = vals.transpose(1, 0, 2).reshape(tiles.size, -1)
        out.append(_median_rows(vals)[inverse])
    return out


def _directional(c, nb, med, quads, lines):
    """The residual against the window, its corner quadrants and its lines, closest to zero.

    A defect stands out on every side; the edge or corner of a structure
    agrees with at least one quadrant, a thin line with at least one line,
    the end of a line or a step of a staircase edge with at least one ray,
    and the zipper that demosaicing leaves along an edge with the points of
    the same 2x2 position.
    """
    sub = [_median_small(nb[:, quads])]
    by_size = {}
    for g in lines:
        by_size.setdefault(g.size, []).append(g)
    for size, groups in by_size.items():
        sets = nb[:, np.array(groups)]
        sub.append(sets.mean(axis=-1) if size == 2 else _median_small(sets))
    sub = np.concatenate(sub, axis=1)
    r = c - med
    rq = c[:, None] - sub
    r_hi = np.minimum(r, rq.min(axis=1))
    r_lo = np.maximum(r, rq.max(axis=1))
    return np.where(r_hi > 0, r_hi, np.where(r_lo < 0, r_lo, 0.0))


def _drop_near_overlay(res, pv, ys, xs, ref_s, ratio):
    """Clear hot, stuck and dead verdicts within a JPEG block of a static overlay.

    Something burnt into every photo (a date stamp, a logo) barely varies
    from photo to photo while the area around it does, and JPEG gives it a
    fixed ringing pattern -- the same in every photo, so it looks like hot
    and dead pixels -- up to a block (8 px) away.  A pixel is quiet when its
    std is at most ``ratio`` times the typical std of its tile; a window of
    +-``_RING_RADIUS`` px with at least ``_STATIC_PIXELS`` quiet pixels is
    near an overlay.  One bad photosite is one or two quiet pixels.  Where
    the whole tile is quiet (a region clipped in every photo) there is no
    overlay to speak of, and the rule does not apply.
    """
    code = res["code"]
    sel = np.nonzero((code == _HOT) | (code == _STUCK) | (code == _DEAD))[0]
    if sel.size == 0:
        return
    hgt, wid = pv.shape
    r = _RING_RADIUS
    off = np.arange(-r, r + 1)
    for i in range(0, sel.size, 1024):
        part = sel[i:i + 1024]
        ny = _clamp(ys[part, None] + off[None, :], hgt)
        nx = _clamp(xs[part, None] + off[None, :], wid)
        var = np.asarray(pv[ny[:, :, None], nx[:, None, :]], dtype=np.float32)
        quiet_var = (ratio * ref_s[part]) ** 2
        count = (var <= quiet_var[:, None, None]).sum(axis=(1, 2))
        near = (count >= _STATIC_PIXELS) & (ref_s[part] > 0)
        code[part[near]] = 0
        res["score"][part[near]] = 0


def _judge(bm, bs, ys, xs, h, geo, scale_m, scale_s, opts):
    """Exact robust statistics and the verdict at candidate subpixels of one band.

    ``ys``, ``xs`` are band coordinates of the candidates (the buffers are
    padded by ``h``); ``scale_m``, ``scale_s`` the robust scales of the mean
    and std residuals at each candidate.  Returns a dict of per-candidate
    arrays: ``code`` (0 = fine), ``score``, ``m``, ``s``, ``med`` (the
    neighbours' median mean), ``zm``, ``zs``.
    """
    wp = bm.shape[1]
    centre = (ys + h) * wp + (xs + h)
    idx = centre[:, None] + (geo[0] * wp + geo[1])[None, :]
    nb_m = bm.reshape(-1)[idx]
    nb_s = bs.reshape(-1)[idx]
    m = bm.reshape(-1)[centre]
    s = bs.reshape(-1)[centre]
    med_m = _median_rows(nb_m)
    med_s = _median_rows(nb_s)
    # The residual against the whole window bounds the directional one, so
    # a candidate that fails every test on it is done (most are).
    zm = (m - med_m) / scale_m
    zs = (s - med_s) / scale_s
    live = ((zm >= opts.hot_sigma) | (zm <= -opts.dead_sigma) | (zs >= opts.noisy_sigma)
            | ((zs <= -opts.stuck_sigma) & (np.abs(zm) >= opts.stuck_mean_sigma)))
    code = np.zeros(m.shape, dtype=np.int8)
    score = np.zeros(m.shape, dtype=np.float32)
    i = np.nonzero(live)[0]
    if i.size:
        c, sc, zm_i = _verdict(m[i], nb_m[i], med_m[i], s[i], nb_s[i], med_s[i],
                               scale_m[i], scale_s[i], geo, opts)
        code[i], score[i], zm[i] = c, sc, zm_i
    return {"code": code, "score": score, "m": m, "s": s, "med": med_m, "zm": zm, "zs": zs}


def _verdict(m, nb_m, med_m, s, nb_s, med_s, scale_m, scale_s, geo, opts):
    """Kind (code) and score of subpixels that may be defects; also their ``z_m``."""
    _, _, quads, lines, ring = geo
    if opts.darks:
        # flat frames: nothing to take for structure, full sensitivity, and
        # a bad column is reported pixel by pixel
        rm, rs = m - med_m, s - med_s
    else:
        rm = _directional(m, nb_m, med_m, quads, lines)
        rs = _directional(s, nb_s, med_s, quads, lines)
    zm = rm / scale_m
    # A defect stands out from the ring around it by more than that ring's
    # own spread; JPEG's overshoot along a fixed edge (a horizon) does not.
    ring_m = nb_m[:, ring]
    spread_m = _MAD_TO_SIGMA * _median_rows(np.abs(ring_m - _median_rows(ring_m)[:, None]))
    contrast = np.abs(rm) >= _CONTRAST * spread_m
    # A std estimate is itself noisy where the photos differ a lot (a
    # horizon that moves, an edge under camera shake): for "noisy" the scale
    # is also the spread of the neighbours' stds, and the std must stand out
    # from the ring like the mean of a hot pixel does.
    spread_s = _MAD_TO_SIGMA * _median_rows(np.abs(nb_s - med_s[:, None]))
    zs_noisy = rs / np.maximum(scale_s, spread_s)
    ring_s = nb_s[:, ring]
    spread_rs = _MAD_TO_SIGMA * _median_rows(np.abs(ring_s - _median_rows(ring_s)[:, None]))
    contrast_s = np.abs(rs) >= _CONTRAST * spread_rs
    dead = contrast & (zm <= -opts.dead_sigma) & (m <= opts.dead_fraction * med_m)
    # Stuck is judged on the std against the whole window: the smear of a
    # stuck photosite lowers its neighbours' std too, which the quadrants
    # would take for an edge.  The mean must be off on every side, though.
    zs_plain = (s - med_s) / scale_s
    stuck = (~dead & contrast & (zs_plain <= -opts.stuck_sigma)
             & (s <= opts.stuck_ratio * med_s) & (np.abs(zm) >= opts.stuck_mean_sigma))
    hot = ~dead & ~stuck & contrast & (zm >= opts.hot_sigma)
    noisy = (~dead & ~stuck & contrast_s & (zs_noisy >= opts.noisy_sigma)
             & (s >= opts.noisy_ratio * med_s))
    noisy &= ~hot | ((s - med_s) >= _TELEGRAPH * (m - med_m))
    hot &= ~noisy

    code = np.zeros(m.shape, dtype=np.int8)
    score = np.zeros(m.shape, dtype=np.float32)
    code[hot], score[hot] = _HOT, zm[hot]
    code[stuck], score[stuck] = _STUCK, np.maximum(-zs_plain[stuck], np.abs(zm[stuck]))
    code[dead], score[dead] = _DEAD, -zm[dead]
    code[noisy], score[noisy] = _NOISY, zs_noisy[noisy]
    return code, score, zm


_FIELDS = (("y", np.int32), ("x", np.int32), ("c", np.int16), ("code", np.int8),
           ("score", np.float32), ("m", np.float32), ("s", np.float32), ("med", np.float32),
           ("zm", np.float32), ("t", np.float32))


def _concat(parts):
    if not parts:
        return {k: np.empty(0, dtype=t) for k, t in _FIELDS}
    return {k: np.concatenate([p[k] for p in parts]) for k, _ in _FIELDS}


def _strongest(rec, k):
    order = np.argsort(-rec["score"], kind="stable")[:k]
    return {key: v[order] for key, v in rec.items()}


def _detect_plane(pm, pv, opts, channel, rng):
    """Flagged subpixels of one channel: a dict of equal-length arrays."""
    return _take_turns([(pm, pv)], [channel], opts, rng)[0]


def _band_buffers(hgt, wid, h):
    """The band buffers of ``_PlaneJob.band``: ``(bm, bs, hsum, abs_m, abs_s, mask, mask_s)``."""
    band = _band_rows(hgt)
    bm = np.empty((band + 2 * h, wid + 2 * h), dtype=np.float32)
    hsum = np.empty((band + 2 * h, wid), dtype=np.float32)
    abs_m = np.empty((band, wid), dtype=np.float32)
    mask = np.empty((band, wid), dtype=bool)
    return bm, np.empty_like(bm), hsum, abs_m, np.empty_like(abs_m), mask, np.empty_like(mask)


def _detect_planes(mean, var, opts, rng, threads=1):
    """``_detect_plane`` of every channel, band by band: the channels take
    turns on each band, so that statistics read band by band
    (``BandArray``) finish each band of rows once for every channel, and the
    channels share one set of band buffers (per thread) (issue 10).  The
    same records as channel after channel: each channel's arithmetic is its
    own, and the global-scale samples are drawn in channel order before any
    band."""
    c = mean.shape[2]
    if isinstance(mean, BandArray) or isinstance(var, BandArray):
        rows_m, rows_v = _SharedRows(mean), _SharedRows(var)
        planes = [(_ChannelRows(rows_m, k), _ChannelRows(rows_v, k)) for k in range(c)]
    else:
        planes = [(mean[:, :, k], var[:, :, k]) for k in range(c)]
    return _take_turns(planes, list(range(c)), opts, rng, threads)


def _take_turns(planes, channels, opts, rng, threads=1):
    """The flagged records of each ``(pm, pv)`` of ``planes`` (with its
    channel number), the planes taking turns band by band.

    The bands are spread over ``threads`` threads (``bands.map_ordered``),
    each with its own band buffers (planes of one size share a set), and
    their records are collected in band order: the records, the cap on
    them and so the defects are the same for any thread count (issue 10).
    """
    h = opts.window // 2
    jobs = [_PlaneJob(pm, pv, opts, ch, rng) for (pm, pv), ch in zip(planes, channels)]
    if not jobs:
        return []
    buffers = {}            # slot -> {dims -> band buffers}: one set per thread

    def one_band(k, slot):
        mine = buffers.setdefault(slot, {})
        out = []
        for job in jobs:
            y0 = k * job.band
            if y0 >= job.hgt:
                out.append([])
                continue
            if job.dims not in mine:
                mine[job.dims] = _band_buffers(job.hgt, job.wid, h)
            out.append(job.band_records(y0, mine[job.dims]))
        return out

    kept = [_Flagged(job.channel) for job in jobs]
    count = max(-(-job.hgt // job.band) for job in jobs)
    for parts in map_ordered(one_band, range(count), threads):
        for flagged, recs in zip(kept, parts):
            flagged.add(recs)
    return [flagged.records() for flagged in kept]


class _Flagged:
    """One plane's flagged records, band after band, at most ``_MAX_FLAGGED``
    (the strongest), cut as soon as they pass it."""

    def __init__(self, channel):
        self.channel = channel
        self.found = []
        self.kept = 0

    def add(self, recs):
        for rec in recs:
            self.found.append(rec)
            self.kept += rec["y"].size
            if self.kept > _MAX_FLAGGED:
                self.found = [_strongest(_concat(self.found), _MAX_FLAGGED)]
                self.kept = _MAX_FLAGGED
                log.warning("more than %d flagged subpixels in channel %d: keeping the "
                            "strongest", _MAX_FLAGGED, self.channel)

    def records(self):
        return _concat(self.found)


class _SharedRows:
    """The last band of rows read from a band-read plane, every channel:
    read once, sliced by each channel's ``_ChannelRows`` (one per thread:
    threads read different bands)."""

    def __init__(self, source):
        self.source = source
        self._local = threading.local()

    def get(self, lo, hi):
        last = getattr(self._local, "last", None)
        if last is None or last[0] != (lo, hi):
            self._local.last = None
            last = self._local.last = ((lo, hi), np.asarray(self.source[lo:hi]))
        return last[1]


class _ChannelRows:
    """One channel of a :class:`_SharedRows`: ``shape``; a slice of rows
    (from the shared band); anything else from the plane's own view."""

    def __init__(self, shared, channel):
        self._shared = shared
        self._channel = channel
        self._view = shared.source[:, :, channel]
        self.shape = self._view.shape

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            lo, hi, _ = key.indices(self.shape[0])
            return self._shared.get(lo, hi)[:, :, self._channel]
        return self._view[key]

    def row_views(self, lo, hi):
        """Rows ``[lo, hi)`` as a list of 2-D arrays, top to bottom: this
        channel of the reader's cached bands when the plane is a whole
        frame's (no copy of the band), else ``[self[lo:hi]]``."""
        src = self._shared.source
        reader = frame_reader(src)
        if reader is None:
            return [self[lo:hi]]
        return [(m if src.which == "mean" else v)[:, :, self._channel]
                for _, _, m, v in reader._views(lo, hi)]

    def copy_rows(self, dst, lo, hi):
        """``np.copyto(dst, self[lo:hi], casting="unsafe")``, from
        :meth:`row_views` (no copy of the band in between)."""
        r = 0
        for rows in self.row_views(lo, hi):
            np.copyto(dst[r:r + rows.shape[0]], rows, casting="unsafe")
            r += rows.shape[0]


class _PlaneJob:
    """One plane's detection: its global scales and candidate thresholds
    (drawn from ``rng`` when made), then :meth:`band_records` of any band."""

    def __init__(self, pm, pv, opts, channel, rng):
        self.pm, self.pv, self.opts, self.channel = pm, pv, opts, channel
        self.hgt, self.wid = pm.shape
        self.dims = (self.hgt, self.wid)
        self.band = _band_rows(self.hgt)
        self.geo = _geometry(opts.window)
        self.gm, self.gs, gmb, gsb = _global_scales(pm, pv, opts.window, rng)
        self.lowest = min(opts.hot_sigma, opts.dead_sigma, opts.stuck_sigma, opts.noisy_sigma)
        thr_m = (_CANDIDATE_FRACTION * self.lowest * gmb).astype(np.float32)
        thr_s = (_CANDIDATE_FRACTION * self.lowest * gsb).astype(np.float32)
        self.thr_m = _phase_thresholds(thr_m, self.wid)
        self.thr_s = _phase_thresholds(thr_s, self.wid)
        # the compiled pass's: the mean's then the std's, per 2x2 phase
        self.thr = tuple(float(t) for t in np.concatenate([thr_m, thr_s]))

    def band_records(self, y0, buffers):
        """The flagged records of rows ``[y0, y0 + band)``: a list of dicts
        (one per chunk of candidates with a hit), using ``buffers``
        (``_band_buffers``) as scratch."""
        pm, pv, opts, wid, lowest = self.pm, self.pv, self.opts, self.wid, self.lowest
        h = opts.window // 2
        bm, bs, hsum, abs_m, abs_s, mask, mask_s = buffers
        y1 = min(self.hgt, y0 + self.band)
        rows = y1 - y0
        vm, vs = bm[:rows + 2 * h], bs[:rows + 2 * h]
        am, as_ = abs_m[:rows], abs_s[:rows]
        mk = mask[:rows]
        lo, hi, top = _halo_rows(self.hgt, y0, y1, h)
        # the compiled twin of the four steps below, straight from the
        # reader's bands, the same bits (issue 10); else numpy
        if kernels.NAME == "numpy" or not kernels.detect_candidates(
                _row_sources(pm, lo, hi), _row_sources(pv, lo, hi), top, h,
                (vm, vs, hsum[:rows + 2 * h], am, as_, mk), self.thr):
            _fill_band(vm, pm, y0, y1, h, False)
            _fill_band(vs, pv, y0, y1, h, True)
            _box_residuals(vm, hsum[:rows + 2 * h], am, h)
            _box_residuals(vs, hsum[:rows + 2 * h], as_, h)
            _above(am, self.thr_m, mk)
            mk |= _above(as_, self.thr_s, mask_s[:rows])
        # flatnonzero is many times faster than nonzero on a 2-D mask
        ys, xs = np.divmod(np.flatnonzero(mk), wid)
        found = []
        if ys.size == 0:
            return found
        tm, ts, ref_s = _tile_medians((am, as_, vs[h:h + rows, h:h + wid]), xs)
        ph = _phase(ys + y0, xs)
        scale_m = np.maximum(tm * _MAD_TO_SIGMA, self.gm[ph])
        scale_s = np.maximum(ts * _MAD_TO_SIGMA, self.gs[ph])
        # in texture the tile's scale is the larger: fewer candidates
        keep = ((am[ys, xs] > _CANDIDATE_FRACTION * lowest * scale_m)
                | (as_[ys, xs] > _CANDIDATE_FRACTION * lowest * scale_s))
        if not keep.all():
            ys, xs = ys[keep], xs[keep]
            scale_m, scale_s, ref_s = scale_m[keep], scale_s[keep], ref_s[keep]
        for i in range(0, ys.size, _CHUNK):
            part = slice(i, i + _CHUNK)
            cy, cx = ys[part], xs[part]
            res = _judge(vm, vs, cy, cx, h, self.geo, scale_m[part], scale_s[part], opts)
            if not opts.darks and opts.static_ratio > 0:
                _drop_near_overlay(res, pv, cy + y0, cx, ref_s[part], opts.static_ratio)
            hit = res["code"] > 0
            if not hit.any():
                continue
            found.append({"y": (cy[hit] + y0).astype(np.int32), "x": cx[hit].astype(np.int32),
                          "c": np.full(int(hit.sum()), self.channel, dtype=np.int16),
                          "code": res["code"][hit], "score": res["score"][hit],
                          "m": res["m"][hit], "s": res["s"][hit], "med": res["med"][hit],
                          "zm": res["zm"][hit].astype(np.float32),
                          "t": np.zeros(int(hit.sum()), dtype=np.float32)})
        return found


# ---------------------------------------------------------------------------
# Flagged subpixels -> defects
# ---------------------------------------------------------------------------

def _clusters(rec, width):
    """Label of each flagged record: records whose pixels touch (8-connected) share it."""
    keys = rec["y"].astype(np.int64) * width + rec["x"]
    pix, inverse = np.unique(keys, return_inverse=True)
    px = pix % width
    src, dst = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):     # half the 8 neighbours suffice
        want = pix + dy * width + dx
        pos = np.minimum(np.searchsorted(pix, want), pix.size - 1)
        hit = (px + dx >= 0) & (px + dx < width) & (pix[pos] == want)
        src.append(np.nonzero(hit)[0])
        dst.append(pos[hit])
    src, dst = np.concatenate(src), np.concatenate(dst)
    return _components(pix.size, src, dst)[inverse]


def _components(n, src, dst):
    """A label per node of the undirected graph of ``n`` nodes with edges
    ``src[i] -- dst[i]``: equal for the nodes of one connected component
    (the smallest node of it), different otherwise.

    In numpy: scipy.sparse.csgraph's ``connected_components`` gives the same
    partition, but its import was 0.15 s of a run's fixed costs (issue 10).
    Each node points to a smaller or equal one; every round hooks the roots
    of both ends of each edge to the smaller and halves the paths by pointer
    jumping, until every edge joins nodes of one root.
    """
    parent = np.arange(n)
    src = np.asarray(src, dtype=np.intp)
    dst = np.asarray(dst, dtype=np.intp)
    while True:
        a, b = parent[src], parent[dst]
        differ = a != b
        if not differ.any():
            return parent
        a, b = a[differ], b[differ]
        low = np.minimum(a, b)
        np.minimum.at(parent, a, low)
        np.minimum.at(parent, b, low)
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up


def _to_defects(rec, width, cluster, colour=None, strengths=None):
    """One Defect per cluster (or per record), at its strongest subpixel.

    ``strengths``, a list, receives each defect's largest ``|z|`` of the
    residual test (0 when only the mean/variance tests flagged it).
    """
    if rec["y"].size == 0:
        return []
    # strongest first; ties broken by position so the result is reproducible
    order = np.lexsort((rec["c"], rec["x"], rec["y"], -rec["score"]))
    rec = {k: v[order] for k, v in rec.items()}
    labels = _clusters(rec, width) if cluster else np.arange(rec["y"].size)
    out = []
    members = {}
    for i, lab in enumerate(labels.tolist()):
        members.setdefault(lab, []).append(i)
    for idx in members.values():
        idx = np.array(idx)
        codes = rec["code"][idx]
        # The photosite itself is where the mean is most off (the smear is
        # weaker); a cluster of only noisy subpixels goes by its score.
        judged = idx[codes != _NOISY]
        best = int(judged[np.argmax(np.abs(rec["zm"][judged]))]) if judged.size else int(idx[0])
        # Low variance is the specific sign of a stuck photosite and shows
        # in its own colour only, while JPEG makes the other channels of the
        # pixel look hot: a hot cluster with a stuck subpixel is stuck.
        if rec["code"][best] == _HOT and np.any(codes == _STUCK):
            best = int(idx[codes == _STUCK][0])
        out.append(Defect(
            x=int(rec["x"][best]), y=int(rec["y"][best]),
            channels=sorted({int(c) for c in rec["c"][idx]}),
            kind=_KIND_NAMES[int(rec["code"][best])], mean=float(rec["m"][best]),
            std=float(rec["s"][best]), neighbour_mean=float(rec["med"][best]),
            score=float(rec["score"][best]), size=int(idx.size), colour=colour))
        if strengths is not None:
            strengths.append(float(rec["t"][idx].max()))
    return out


def _absorb_echoes(defects, strengths=None):
    """Merge each defect into a much stronger one of its JPEG block (a ringing echo).

    Strongest first: a defect whose ``_JPEG_BLOCK`` block already holds a
    reported defect at least ``_RING_RATIO`` times as strong adds its
    channels and size to that one instead of being reported.  Strength is
    the score, or -- between defects the residual test flagged, whose scores
    may come from different tests -- the residual test's ``|z|``
    (``strengths``, from ``_to_defects``).
    """
    tz = {id(d): t for d, t in zip(defects, strengths or [0.0] * len(defects))}
    kept = []
    host = {}
    for d in sorted(defects, key=lambda d: (-d.score, d.y, d.x)):
        block = (d.y // _JPEG_BLOCK, d.x // _JPEG_BLOCK)
        h = host.get(block)
        echo = h is not None and (h.score >= _RING_RATIO * d.score
                                  or 0 < _RING_RATIO * tz[id(d)] <= tz[id(h)])
        if echo:
            h.channels = sorted(set(h.channels) | set(d.channels))
            h.size += d.size
            continue
        if h is None:
            host[block] = d
        kept.append(d)
    return _absorb_lobes(kept, tz)


def _absorb_lobes(defects, tz):
    """Drop the opposite lobes of a residual-test defect.

    JPEG blurs a strong chroma blob over its 16x16 block, so the elements
    around it -- whose same-colour neighbours now include the blob -- have a
    steady residual of the *opposite* sign: a hot blue photosite shows as a
    ring of "dead" ones.  A hot or dead defect of the residual test less
    than ``_JPEG_BLOCK`` pixels (a 4:2:0 block) from one of the other of
    these two kinds with a larger ``|z|`` is such a lobe and is merged into
    it, unless its own score is above both its ``|z|`` and the other
    defect's score (the mean/variance test judged it, and more strongly
    than the other): a lobe is weaker than its host by every test.  (The
    lobes looked at lay 5 px from their hosts; a dead green photosite of a
    4:2:2 set, scored 28 by the mean/variance test and ``|z|`` 9.5, was
    dropped as the lobe of a warm one 16 px away, score 18 and ``|z|`` 18,
    and a dead red photosite 16 px from a stuck one likewise.)
    """
    opposite = {"hot": "dead", "dead": "hot"}
    grid = {}
    for d in defects:
        grid.setdefault((d.y // _JPEG_BLOCK, d.x // _JPEG_BLOCK), []).append(d)
    kept = []
    for d in defects:
        t = tz[id(d)]
        host = None
        if t > 0 and d.kind in opposite:
            by, bx = d.y // _JPEG_BLOCK, d.x // _JPEG_BLOCK
            for gy in (by - 1, by, by + 1):
                for gx in (bx - 1, bx, bx + 1):
                    for h in grid.get((gy, gx), ()):
                        if (h.kind == opposite[d.kind] and tz[id(h)] > t
                                and not (d.score > max(t, h.score))
                                and max(abs(h.x - d.x), abs(h.y - d.y)) < _JPEG_BLOCK):
                            host = h
        if host is None:
            kept.append(d)
        else:
            host.channels = sorted(set(host.channels) | set(d.channels))
            host.size += d.size
    return kept


def _sort_and_cut(defects, top):
    defects.sort(key=lambda d: (-d.score, d.y, d.x))
    if top is not None:
        defects = defects[:max(0, int(top))]
    return defects


def cfa_period(cfa) -> int:
    """The smallest ``P`` such that the CFA repeats every ``P`` rows and columns.

    Parameters
    ----------
    cfa : numpy.ndarray
        ``(height, width)`` colour index of every photosite.

    Returns
    -------
    int
        2 for Bayer, 6 for X-Trans, 1 for a monochrome sensor.

    Raises
    ------
    HotPixelError
        If ``cfa`` is not 2-D, or no period up to 16 fits (not a regular
        colour filter array).
    """
    cfa = np.asarray(cfa)
    if cfa.ndim != 2:
        raise HotPixelError(f"cfa must be 2-D (height, width), got shape {cfa.shape}")
    for p in range(1, _MAX_PERIOD + 1):
        if p > min(cfa.shape):
            break
        if np.array_equal(cfa[p:], cfa[:-p]) and np.array_equal(cfa[:, p:], cfa[:, :-p]):
            return p
    raise HotPixelError("the colour filter array does not repeat with a period up to "
                        f"{_MAX_PERIOD} photosites")


def mosaic_period(mosaic, shape) -> int:
    """:func:`cfa_period` of ``mosaic.cfa(shape)``, from a corner of it.

    A tile-repeated pattern that repeats every ``P`` photosites over one
    tile plus ``P`` does everywhere, so a corner of the tile's size plus the
    largest period tried gives the whole frame's answer without making its
    frame-sized colour index.
    """
    p, q = mosaic.tile.shape
    h, w = int(shape[0]), int(shape[1])
    return cfa_period(mosaic.cfa((min(h, p + _MAX_PERIOD), min(w, q + _MAX_PERIOD))))


def _planes(a):
    """``a`` as (height, width, channels): a 3-D band view as it is, else an array."""
    if isinstance(a, BandArray) and a.ndim == 3:
        return a
    a = np.asarray(a)
    return a[:, :, None] if a.ndim == 2 else a


def check_stats(mean, var, n, opts, cfa=None):
    """Validate the inputs of ``detect``; returns ``mean``, ``var`` as 3-D arrays and ``cfa``.

    Shared by the raw-mosaic detector (``hotpixel_shm.rawdetect``).

    Raises
    ------
    HotPixelError
        On bad shapes or dtypes, ``n < 2``, a bad window, or a ``cfa`` that
        does not fit a one-channel mosaic.
    """
    # statistics finished band by band (hotpixel_shm.bands) are read as bands,
    # never copied whole (issue 9)
    mean = _planes(mean)
    var = _planes(var)
    if mean.ndim != 3 or 0 in mean.shape:
        raise HotPixelError(f"mean must have shape (height, width, channels), got {mean.shape}")
    if var.shape != mean.shape:
        raise HotPixelError(f"var shape {var.shape} differs from mean shape {mean.shape}")
    for name, a in (("mean", mean), ("var", var)):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise HotPixelError(f"{name} must be a numeric array, got {a.dtype}")
    if int(n) < 2:
        raise HotPixelError(f"need statistics over at least 2 images, got n={n}")
    if opts.window < 3 or opts.window % 2 == 0:
        raise HotPixelError(f"window must be odd and >= 3, got {opts.window}")
    if cfa is not None:
        cfa = np.asarray(cfa)
        if mean.shape[2] != 1:
            raise HotPixelError(f"a raw mosaic has one channel: mean must be (height, width[, 1]), "
                                f"got shape {mean.shape}")
        if cfa.shape != mean.shape[:2]:
            raise HotPixelError(f"cfa shape {cfa.shape} differs from the mosaic's {mean.shape[:2]}")
    return mean, var, cfa


def detect(mean, var, n, options=None, *, cfa=None, colour_desc=_COLOUR_LETTERS,
           residuals=None, threads=1, beside=None) -> List[Defect]:
    """Find hot, stuck, dead and noisy pixels in per-subpixel statistics.

    Parameters
    ----------
    mean, var : numpy.ndarray
        ``(height, width, channels)`` (or ``(height, width)``) mean and
        population variance over ``n`` images, float32 or float64.
    n : int
        Number of images (at least 2).
    options : DetectOptions, optional
        Thresholds and switches (defaults: ``DetectOptions()``).
    cfa : numpy.ndarray, optional
        ``(height, width)`` colour index of each photosite of a one-channel
        raw mosaic: each photosite is then judged against photosites at the
        same position of the CFA tile (a regular sub-grid), every flagged
        photosite is its own defect, and ``colour`` is set from
        ``colour_desc``.
    colour_desc : str, default "RGBG"
        Letter of each CFA colour index (a raw file's own colour
        description); an index beyond it is written as its number.
    residuals : hotpixel_shm.residual.Residuals, optional
        Temporal residual statistics of the same frames: their t-like test
        (``hotpixel_shm.temporal``) runs beside the mean/variance tests, and
        a subpixel flagged by either is reported once.  Without them (e.g.
        statistics files that lack them) only the mean/variance tests run.
    threads : int, default 1
        Threads the bands of rows are spread over (numpy releases the GIL
        in its loops).  The defects are the same for any count; each
        thread has its own band buffers (``detect_memory_bytes``).
    beside : concurrent.futures.Executor, optional
        Runs the residual test (``residuals``) there, beside the bands,
        instead of after them -- e.g. on the line test's thread, once the
        line test is done, so that it takes no more threads than the plan's
        (``detect_memory_bytes``' ``beside``).  The same defects.  Photos
        only (a ``cfa`` mosaic runs it in this thread).  If detection fails
        or is interrupted, the residual test is cancelled (it stops at its
        next band of rows).

    Returns
    -------
    list of hotpixel_shm.model.Defect
        Sorted by ``score``, worst first (at most ``options.top``).

    Raises
    ------
    HotPixelError
        On bad shapes, ``n < 2`` or a bad window.

    Notes
    -----
    For each subpixel with mean ``m`` and std ``s``, and the medians ``M``
    and ``S`` of its neighbours' means and stds:

    * the residuals are ``m - M`` and ``s - S``; for photos (not
      ``darks``) they are also taken against each corner quadrant of the
      window, each line and each ray through its centre and the points of
      the same 2x2 position, and the one closest to zero is kept;
    * the scale is the larger of the channel's global robust scale (per
      2x2 phase, from a 10000-subpixel sample, constant neighbourhoods
      left out) and that of the subpixel's 32x32 tile; for "noisy" also
      the spread of the neighbours' stds;
    * ``z_m``, ``z_s`` are the residuals in units of the scale.  Dead:
      ``z_m <= -dead_sigma`` and ``m <= dead_fraction * M``; stuck:
      ``(s - S) <= -stuck_sigma`` scales, ``s <= stuck_ratio * S`` and
      ``|z_m| >= stuck_mean_sigma``; hot: ``z_m >= hot_sigma``; noisy:
      ``z_s >= noisy_sigma`` and ``s >= noisy_ratio * S`` with a normal
      mean, or a mean raised by no more than twice the rise of the std (a
      random telegraph).  Hot, dead and stuck also need the mean residual
      to exceed twice the spread of the window's outer ring (noisy: the
      std residual, that of the stds), which the overshoot of JPEG along a
      fixed edge does not.  No hot, stuck or dead verdict next to a static
      overlay (see ``DetectOptions.static_ratio``).

    The score is ``z_m`` (hot), ``-z_m`` (dead), ``z_s`` (noisy) or the
    larger of ``-z_s`` and ``|z_m|`` (stuck).  A cluster is reported at the
    subpixel whose mean is most off (the photosite itself), with that
    subpixel's kind -- stuck if any of its subpixels is stuck, since JPEG
    makes the other channels of a stuck photosite look hot.

    Candidates come from a cheap pass at half the smallest threshold (the
    window-sum residual of a smeared defect is at least about 0.6 of its
    median residual); the exact statistics are computed only there.  The
    whole run allocates a few band buffers of one channel, see
    ``detect_memory_bytes``.

    Measured limits (simulated camera, 40 frames, quality 92): in a 4:2:0
    JPEG a lone blue photosite needs an offset of about +130 of 255 to be
    seen, a red one +60, a green one +45 (4:2:2: blue +80, red +60; PNG:
    all +45 and less); a stuck red or blue photosite may be reported as hot
    in 4:2:0.  Defects in the outermost two rows and columns, within 8 px
    of a date stamp, or in a region clipped in every photo are not seen; a
    bad column one pixel wide is taken for structure in photos (it is
    reported in dark frames).
    """
    opts = options if options is not None else DetectOptions()
    mean, var, cfa = check_stats(mean, var, n, opts, cfa)
    # Dark frames have no scene for a warm photosite to hide in: the mean
    # test is already at full sensitivity there, and the residual test would
    # only add the sensor's own fixed offset pattern.
    use_t = (residuals is not None and opts.temporal and not opts.darks
             and residuals.n >= 3)
    if use_t and residuals.layout.shape != mean.shape:
        raise HotPixelError(f"residual statistics of shape {residuals.layout.shape} do not "
                            f"match statistics of shape {mean.shape}")
    if cfa is not None:
        return _detect_cfa(mean, var, opts, cfa, colour_desc, residuals if use_t else None,
                           threads)
    wid = mean.shape[1]
    rng = np.random.default_rng(0)        # the global-scale sample: reproducible
    stop = threading.Event()
    found = beside.submit(_temporal, residuals, mean, var, opts, stop.is_set) \
        if use_t and beside is not None else None
    try:
        recs = _detect_planes(mean, var, opts, rng, threads)
        if use_t:
            # after the bands' records, in this order wherever it ran
            recs.append(found.result() if found is not None
                        else _temporal(residuals, mean, var, opts))
    except BaseException:
        # an error or Ctrl-C: the residual test beside stops at its next
        # band (or never starts) instead of running to its end
        stop.set()
        if found is not None:
            found.cancel()
        raise
    strengths = []
    defects = _to_defects(_concat(recs), wid, opts.cluster, strengths=strengths)
    if opts.cluster:
        defects = _absorb_echoes(defects, strengths)
    return _sort_and_cut(defects, opts.top)


def _temporal(residuals, mean, var, opts, cancel=None):
    """The records of the residual test (``hotpixel_shm.temporal``), with
    the overlay rule of photos."""
    from .temporal import temporal_records
    overlay = None
    if not opts.darks and opts.static_ratio > 0:
        def overlay(ys, xs, scale):
            return _near_overlay(var, ys, xs, opts.static_ratio, _RING_RADIUS * scale)
    return temporal_records(residuals, mean, var, t_thr=opts.t_sigma, f_thr=opts.noisy_f,
                            overlay=overlay, cancel=cancel)


def _detect_cfa(mean, var, opts, cfa, letters, residuals=None, threads=1):
    p = cfa_period(cfa)
    out = []
    if residuals is not None:
        from .temporal import temporal_records
        rec = temporal_records(residuals, mean, var, t_thr=opts.t_sigma, f_thr=opts.noisy_f)
        for d in _to_defects(rec, mean.shape[1], False):
            v = int(cfa[d.y, d.x])
            d.colour = letters[v] if 0 <= v < len(letters) else str(v)
            out.append(d)
    rng = np.random.default_rng(0)
    # the CFA positions take turns band by band (issue 10): statistics read
    # band by band finish each band of rows once for all of them (the
    # reader's cache holds the rows of one band of every position)
    grids = [(dy, dx) for dy in range(p) for dx in range(p)
             if mean[dy::p, dx::p, 0].size]
    planes = [(mean[dy::p, dx::p, 0], var[dy::p, dx::p, 0]) for dy, dx in grids]
    for (dy, dx), rec in zip(grids, _take_turns(planes, [0] * len(grids), opts, rng, threads)):
        v = int(cfa[dy, dx])
        colour = letters[v] if 0 <= v < len(letters) else str(v)
        rec["x"] = rec["x"] * p + dx
        rec["y"] = rec["y"] * p + dy
        out.extend(_to_defects(rec, mean.shape[1], False, colour))
    if residuals is not None:
        # a photosite flagged by both tests is reported once, by the stronger
        best = {}
        for d in out:
            if (d.y, d.x) not in best or d.score > best[(d.y, d.x)].score:
                best[(d.y, d.x)] = d
        out = list(best.values())
    return _sort_and_cut(out, opts.top)


def _near_overlay(var, ys, xs, ratio, radius=_RING_RADIUS):
    """Subpixels ``(ys, xs)`` within a JPEG block of a static overlay (any channel).

    The rule of ``_drop_near_overlay`` for records of the residual test:
    the reference std is the median std of the pixel's 32x32 tile, and
    the reach ``radius`` (a JPEG block: 8 px for luma, 16 for 4:2:0 chroma).
    """
    hgt, wid = var.shape[:2]
    near = np.zeros(ys.size, dtype=bool)
    off = np.arange(0, _TILE, 2) - _TILE // 2
    ring = np.arange(-radius, radius + 1)
    # a chunk of subpixels at a time: the gathers of (2 radius + 1)**2
    # values each stay bounded however many there are (issue 10)
    for i in range(0, ys.size, _OVERLAY_CHUNK):
        cy, cx = ys[i:i + _OVERLAY_CHUNK], xs[i:i + _OVERLAY_CHUNK]
        ty = _clamp(cy[:, None] + off[None, :], hgt)
        tx = _clamp(cx[:, None] + off[None, :], wid)
        ny = _clamp(cy[:, None] + ring[None, :], hgt)
        nx = _clamp(cx[:, None] + ring[None, :], wid)
        for c in range(var.shape[2]):
            tile = np.asarray(var[ty[:, :, None], tx[:, None, :], c], dtype=np.float32)
            ref_s = np.sqrt(np.maximum(_median_rows(tile.reshape(cy.size, -1)), 0))
            v = np.asarray(var[ny[:, :, None], nx[:, None, :], c], dtype=np.float32)
            count = (v <= ((ratio * ref_s) ** 2)[:, None, None]).sum(axis=(1, 2))
            near[i:i + _OVERLAY_CHUNK] |= (count >= _STATIC_PIXELS) & (ref_s > 0)
    return near


def detect_memory_bytes(shape, threads=1) -> int:
    """The most working memory ``detect`` allocates for statistics of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width[, channels])`` of the mean/var arrays.
    threads : int, default 1
        ``detect``'s ``threads``: each works on its own band with its own
        buffers.

    Returns
    -------
    int
        Bytes: the band buffers of one channel (a tile high), the exact pass
        over one chunk of candidates, the global-scale sample, and the
        flagged records at their cap, for the default window.  It grows
        with the width only (the channels take turns on one set of bands),
        plus, for statistics read band by band, one band of every channel's
        mean and variance (float64) read once for all channels; the band
        buffers, the exact pass over a chunk, a band's records and the band
        read once for every thread.
    """
    wid = int(shape[1])
    chans = int(shape[2]) if len(shape) > 2 else 1
    h = DetectOptions.window // 2
    k = DetectOptions.window ** 2 - 1
    band = _TILE
    padded = (band + 2 * h) * (wid + 2 * h)
    # bm, bs, hsum (float32); abs_m, abs_s (float32); two masks; the
    # candidate indices of a band (two int64 per pixel at worst) and their
    # per-candidate scales.
    band_bytes = padded * 4 * 3 + band * wid * (4 * 2 + 2 + 16 + 8 * 5)
    # neighbour indices (int64), two gathers and their sorted copies, the
    # deviations, the quadrant and line subsets (float32), the overlay check.
    overlay_bytes = 1024 * (2 * _RING_RADIUS + 1) ** 2 * 9
    chunk_bytes = _CHUNK * (k * (8 + 4 * 8) + 12 * 4 * 4 + 64) + overlay_bytes
    sample_bytes = _SAMPLES * (k * (16 + 8 * 5) + 64)
    flagged_bytes = 2 * _MAX_FLAGGED * 31
    shared_bytes = 2 * (band + 2 * h) * wid * chans * 8
    # a band's records (31 bytes each, _FIELDS) wait for the bands before
    # it (bands.map_ordered): at most one per subpixel of the band
    records_bytes = band * wid * chans * 31
    per_thread = band_bytes + shared_bytes + chunk_bytes + records_bytes
    return int(max(1, int(threads)) * per_thread + sample_bytes + flagged_bytes + (1 << 20))
