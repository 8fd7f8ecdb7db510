"""Repair defects in pixel arrays: each listed site rebuilt from its neighbours.

Numerics only (no files): ``repairfiles`` reads and writes the photos.

* A raw mosaic: each listed photosite becomes the median of the photosites of
  the same colour filter colour within 2 photosites (growing to 6 if needed)
  that are not themselves listed, so clusters of defects are rebuilt from
  healthy photosites only.
* A developed image (JPEG, TIFF, PNG): each defect's footprint (the pixel and,
  for a defect that covers several pixels, a square around it) is rebuilt in
  each of the defect's channels from the mean of the ring of pixels just
  outside it, other defects' footprints left out.

Every other value is returned unchanged (the input is copied, never
modified). Coordinates are column ``x``, row ``y``, 0-based.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Sequence, Tuple

import numpy as np

from .export import defect_field, defect_xy

__all__ = ["repair_mosaic", "repair_image", "footprint_radius", "pixel_defects",
           "LINE_KINDS"]

#: Kinds of line defects (a whole column or row); these are not repaired here.
LINE_KINDS = ("column", "row")

_MOSAIC_REACH = (2, 4, 6)


def pixel_defects(defects) -> Tuple[list, list]:
    """Split defects into point defects and the ones this module does not repair.

    Returns
    -------
    points : list
        Defects with an ``(x, y)`` of one pixel/photosite.
    other : list of (defect, reason)
        Line defects (``kind`` column or row) and anything without a point.
    """
    points, other = [], []
    for d in defects:
        kind = defect_field(d, "kind")
        if kind in LINE_KINDS:
            other.append((d, f"{kind} defects are not repaired (only single pixels and clusters)"))
            continue
        points.append(d)
    return points, other


def repair_mosaic(mosaic: np.ndarray, cfa: np.ndarray, sites: Iterable[Tuple[int, int]]
                  ) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
    """A copy of a raw mosaic with each listed photosite rebuilt.

    Parameters
    ----------
    mosaic : numpy.ndarray
        ``(height, width)`` raw values (any integer or float type).
    cfa : numpy.ndarray
        ``(height, width)`` colour index of every photosite (LibRaw's
        ``raw_colors_visible``; the two greens of a Bayer tile may share an
        index or not: photosites are matched on equal index).
    sites : iterable of (x, y)
        The photosites to rebuild.

    Returns
    -------
    repaired : numpy.ndarray
        Same shape and dtype; only the listed photosites differ.
    unrepaired : list of (x, y)
        Listed photosites with no healthy same-colour photosite within 6
        (left as they were) or outside the mosaic.

    Notes
    -----
    The estimate is the median of the healthy same-colour photosites within
    2 photosites (a Bayer photosite has 4-8 of them, an X-Trans one 2-8);
    the median keeps an edge sharp and ignores a weak defect that was not
    listed. The window grows to 4, then 6, when a cluster leaves none.
    """
    mosaic = np.asarray(mosaic)
    cfa = np.asarray(cfa)
    if mosaic.ndim != 2 or cfa.shape != mosaic.shape:
        raise ValueError(f"mosaic {mosaic.shape} and cfa {cfa.shape} must be the same 2-D shape")
    h, w = mosaic.shape
    sites = sorted({(int(x), int(y)) for x, y in sites})
    listed = np.zeros((h, w), dtype=bool)
    inside, unrepaired = [], []
    for x, y in sites:
        if 0 <= x < w and 0 <= y < h:
            listed[y, x] = True
            inside.append((x, y))
        else:
            unrepaired.append((x, y))
    out = mosaic.copy()
    info = np.iinfo(mosaic.dtype) if mosaic.dtype.kind in "iu" else None
    for x, y in inside:
        for reach in _MOSAIC_REACH:
            ya, yb, xa, xb = max(0, y - reach), min(h, y + reach + 1), max(0, x - reach), min(w, x + reach + 1)
            ok = (cfa[ya:yb, xa:xb] == cfa[y, x]) & ~listed[ya:yb, xa:xb]
            if ok.any():
                value = float(np.median(mosaic[ya:yb, xa:xb][ok]))
                if info is not None:
                    value = min(max(round(value), info.min), info.max)
                out[y, x] = value
                break
        else:
            unrepaired.append((x, y))
    return out, unrepaired


def footprint_radius(defect) -> int:
    """Half the side of the square a defect is rebuilt over (0: the pixel alone).

    A defect of ``size`` pixels (a JPEG or demosaicing smear merged into one
    defect) gets the smallest centred square that can hold them, up to 7x7.
    """
    size = defect_field(defect, "size") or 1
    return int(min(3, max(0, math.ceil((math.sqrt(int(size)) - 1) / 2))))


def repair_image(image: np.ndarray, defects: Sequence, *, radius=None, grow=0,
                 all_channels=False) -> Tuple[np.ndarray, np.ndarray, list]:
    """A copy of an image with each defect's footprint rebuilt, channel by channel.

    Parameters
    ----------
    image : numpy.ndarray
        ``(height, width, channels)`` (or ``(height, width)``) pixels.
    defects : sequence of Defect or mapping
        Point defects (``x``, ``y``, ``channels``, ``size``); an empty
        ``channels`` means all channels.
    radius : int, optional
        Footprint half-side for every defect, instead of
        :func:`footprint_radius`.
    grow : int
        Added to each footprint's half-side (a lossy JPEG spreads a defect
        over its neighbours).
    all_channels : bool
        Rebuild every channel, not only the defect's (a JPEG's colour
        conversion spreads one channel's defect into the others).

    Returns
    -------
    repaired : numpy.ndarray
        Same shape and dtype; only pixels of the footprints differ.
    changed : numpy.ndarray
        ``(height, width)`` bool, True where the footprints were rebuilt.
    unrepaired : list of (x, y)
        Defects outside the image or with no healthy pixel around them.
    """
    img = np.asarray(image)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[:, :, None]
    h, w, c = img.shape
    out = img.copy()
    info = np.iinfo(img.dtype) if img.dtype.kind in "iu" else None
    boxes = []
    covered = np.zeros((h, w), dtype=bool)
    for d in defects:
        x, y = defect_xy(d)
        r = (footprint_radius(d) if radius is None else int(radius)) + int(grow)
        chans = [] if all_channels else [int(ch) for ch in (defect_field(d, "channels") or [])]
        chans = [ch for ch in chans if 0 <= ch < c] or list(range(c))
        boxes.append((x, y, r, chans))
        if 0 <= x < w and 0 <= y < h:
            covered[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = True
    changed = np.zeros((h, w), dtype=bool)
    unrepaired = []
    for x, y, r, chans in boxes:
        if not (0 <= x < w and 0 <= y < h):
            unrepaired.append((x, y))
            continue
        done = False
        for ring in (2, 4, 8):
            ya, yb = max(0, y - r - ring), min(h, y + r + ring + 1)
            xa, xb = max(0, x - r - ring), min(w, x + r + ring + 1)
            ok = ~covered[ya:yb, xa:xb]
            if ok.sum() < 3:
                continue
            fy = slice(max(0, y - r), min(h, y + r + 1))
            fx = slice(max(0, x - r), min(w, x + r + 1))
            # distance-weighted mean of the ring: nearer pixels count more
            yy, xx = np.mgrid[ya:yb, xa:xb]
            for ch in chans:
                vals = img[ya:yb, xa:xb, ch].astype(np.float64)
                fill = _inverse_distance(vals, ok, yy, xx, fy, fx)
                if info is not None:
                    fill = np.clip(np.rint(fill), info.min, info.max)
                out[fy, fx, ch] = fill.astype(img.dtype)
            changed[fy, fx] = True
            done = True
            break
        if not done:
            unrepaired.append((x, y))
    if squeeze:
        out = out[:, :, 0]
    return out, changed, unrepaired


def _inverse_distance(vals, ok, yy, xx, fy, fx):
    """Each footprint pixel as the inverse-squared-distance mean of the healthy ring."""
    src_y, src_x, src_v = yy[ok], xx[ok], vals[ok]
    ty, tx = np.mgrid[fy, fx]
    d2 = (ty[..., None] - src_y) ** 2 + (tx[..., None] - src_x) ** 2
    wgt = 1.0 / np.maximum(d2, 1)
    return (wgt * src_v).sum(axis=-1) / wgt.sum(axis=-1)
