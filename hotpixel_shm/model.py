"""Plain data types shared by the engine, detection and exports.

Coordinates are column ``x`` and row ``y``, 0-based, in the stored pixel array
(sensor orientation; the EXIF orientation tag is never applied).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional

import numpy as np

__all__ = ["Defect", "Stats", "KINDS"]

#: The defect kinds, in the JSON report's spelling.
KINDS = ("hot", "stuck", "dead", "noisy")


@dataclass
class Defect:
    """One defective pixel (a cluster of flagged subpixels reported at its strongest one).

    Attributes
    ----------
    x, y : int
        Column and row, 0-based, in the stored pixel array.
    channels : list of int
        The channels flagged at ``(x, y)`` or anywhere in the cluster.
    kind : str
        One of ``KINDS``.
    mean, std : float
        Mean and standard deviation over all images at the strongest subpixel.
    neighbour_mean : float
        Median of the same-channel neighbours' means.
    score : float
        Severity in units of the robust scale; larger is worse.
    size : int
        Number of flagged subpixels merged into this defect.
    colour : str or None
        CFA colour of the photosite for raw mosaics (``"R"``, ``"G"``, ``"B"``), else None.
    """

    x: int
    y: int
    channels: List[int]
    kind: str
    mean: float
    std: float
    neighbour_mean: float
    score: float
    size: int = 1
    colour: Optional[str] = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["colour"] is None:
            del d["colour"]
        return d


@dataclass
class Stats:
    """Finished per-subpixel statistics over ``n`` images.

    ``mean`` and ``var`` have shape (height, width, channels); ``var`` is the
    population variance (ddof=0).  Their dtype is float64 for the ``exact`` and
    ``float64`` tiers and float32 for ``float32`` and ``float16``.
    """

    n: int
    mean: np.ndarray
    var: np.ndarray
    tier: str
    files: List[str] = field(default_factory=list)
    #: keeps the memory behind ``mean``/``var`` alive (e.g. a shared-memory mapping)
    owner: Any = field(default=None, repr=False, compare=False)

    @property
    def shape(self):
        return tuple(self.mean.shape)

    def variance_range(self):
        """(min, max, mean) of the variance, as Python floats."""
        v = self.var
        return float(v.min()), float(v.max()), float(v.mean(dtype=np.float64))

    def lowest_variance(self, k=10):
        """The k subpixels of lowest variance as (x, y, channel, variance),
        lowest first (ties: in storage order)."""
        _, w, c = self.var.shape
        flat = self.var.reshape(-1)
        out = []
        for i in _lowest(flat, k):
            y, rem = divmod(int(i), w * c)
            x, ch = divmod(rem, c)
            out.append((x, y, ch, float(flat[i])))
        return out


def _lowest(flat, k, chunk=1 << 22):
    """Indices of the k smallest values (ties: lowest index first), in one
    pass of chunks instead of a partition of the whole image."""
    best_idx = np.zeros(0, np.int64)
    best_val = np.zeros(0, flat.dtype)
    for s in range(0, flat.size, chunk):
        c = flat[s:s + chunk]
        if best_val.size >= k:
            cand = np.flatnonzero(c < best_val.max())
        else:
            cand = np.arange(c.size)
        if cand.size > k:
            vals = c[cand]
            kth = np.partition(vals, k - 1)[k - 1]
            below = cand[vals < kth]
            ties = cand[vals == kth][: k - below.size]  # index order: lowest first
            cand = np.concatenate([below, ties])
        best_idx = np.concatenate([best_idx, cand + s])
        best_val = np.concatenate([best_val, c[cand]])
        order = np.lexsort((best_idx, best_val))[:k]
        best_idx, best_val = best_idx[order], best_val[order]
    return best_idx
