"""Plain data types shared by the engine, detection and exports.

Coordinates are column ``x`` and row ``y``, 0-based, in the stored pixel array
(sensor orientation; the EXIF orientation tag is never applied).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional

import numpy as np

from .bands import keep_lowest
from .errors import HotPixelError

__all__ = ["Defect", "Mosaic", "Stats", "KINDS", "KIND_CODES", "merged_metadata"]

#: The defect kinds, in the JSON report's spelling.
KINDS = ("hot", "stuck", "dead", "noisy")
#: The number of each kind in detection's flagged-record arrays (0: none),
#: shared by the mean/variance tests (``detect``) and the residual test
#: (``temporal``).
KIND_CODES = {kind: i + 1 for i, kind in enumerate(KINDS)}


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
    status : str or None
        With a comparison to an earlier report: ``"new"`` or ``"persisting"``.
    first_seen : str or None
        With a comparison: the date (``YYYY-MM-DD``) it was first reported.
    bad_since : int or None
        With a comparison, for new defects: Unix time of the earlier run's
        newest photo (dcraw's time column).
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
    status: Optional[str] = None
    first_seen: Optional[str] = None
    bad_since: Optional[int] = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("colour", "status", "first_seen", "bad_since"):
            if d[key] is None:
                del d[key]
        return d


@dataclass(frozen=True)
class Mosaic:
    """The colour filter array of a raw mosaic, as statistics need it.

    Attributes
    ----------
    tile : numpy.ndarray
        ``(P, P)`` uint8 colour indices of the smallest repeating tile (2x2
        Bayer, 6x6 X-Trans), anchored at photosite ``(0, 0)`` of the visible
        raw area: photosite ``(x, y)`` has colour index ``tile[y % P, x % P]``.
    colour_desc : str
        The letter of each colour index (LibRaw's ``color_desc``, e.g.
        ``"RGBG"``: index 3 is the second green).
    white_level : int or None
        The saturation level, if known.
    """

    tile: np.ndarray
    colour_desc: str = "RGBG"
    white_level: Optional[int] = None

    def cfa(self, shape) -> np.ndarray:
        """The ``(height, width)`` colour index of every photosite of ``shape``."""
        h, w = int(shape[0]), int(shape[1])
        p, q = self.tile.shape
        return np.tile(self.tile, (-(-h // p), -(-w // q)))[:h, :w]

    def same_as(self, other: "Mosaic") -> bool:
        """Whether ``other`` describes the same filter layout and colours."""
        return (other is not None and self.tile.shape == other.tile.shape
                and bool(np.all(self.tile == other.tile))
                and self.colour_desc == other.colour_desc)

    def describe(self) -> str:
        """E.g. ``'2x2 CFA RGGB'`` (the tile's letters, row by row)."""
        d = self.colour_desc or "RGBG"
        letters = "".join(d[i] if i < len(d) else "?" for i in self.tile.reshape(-1))
        p, q = self.tile.shape
        return f"{q}x{p} CFA {letters}"


@dataclass
class Stats:
    """Finished per-subpixel statistics over ``n`` images, and what they are of.

    ``mean`` and ``var`` have shape (height, width, channels); ``var`` is the
    population variance (ddof=0).  Their dtype is float64 for the ``exact`` and
    ``float64`` tiers and float32 for ``float32`` and ``float16``.

    ``sample_dtype`` is the input samples' type (``"uint8"``/``"uint16"``),
    ``tier`` the accumulator tier, and ``mosaic`` the colour filter array for
    raw mosaics (None for photos): detection is chosen from these, so
    statistics loaded from a file are judged as the run that made them.
    ``camera`` is the body that took the photos (None when not known).
    """

    n: int
    mean: np.ndarray
    var: np.ndarray
    tier: str
    files: List[str] = field(default_factory=list)
    #: keeps the memory behind ``mean``/``var`` alive (e.g. a shared-memory mapping)
    owner: Any = field(default=None, repr=False, compare=False)
    sample_dtype: Optional[str] = None
    mosaic: Optional[Mosaic] = field(default=None, compare=False)
    #: temporal residual statistics of the same frames
    #: (:class:`hotpixel_shm.residual.Residuals`), or None when not kept
    residuals: Any = field(default=None, repr=False, compare=False)
    #: the camera body (``camera.Camera``) whose photos these are, if known
    camera: Any = None
    #: (k, result of ``_variance_pass(k)``) once computed
    _variance_summary: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_raw(self) -> bool:
        """Whether these are statistics of a raw mosaic (a known CFA)."""
        return self.mosaic is not None

    @property
    def shape(self):
        return tuple(self.mean.shape)

    def reader(self):
        """The statistics as a :class:`hotpixel_shm.bands.BandReader`: rows
        finished on demand when ``mean``/``var`` are band views of a run's
        accumulators, plain slices of the arrays otherwise."""
        from .bands import as_reader
        return as_reader(self.mean, self.var)

    def bands(self, band_rows=None):
        """Yield ``(y0, y1, mean_rows, var_rows)`` over the frame, band by band."""
        from .bands import iter_bands
        return iter_bands(self.reader(), band_rows)

    def variance_range(self):
        """(min, max, mean) of the variance, as Python floats, read band by band."""
        return self._variance_pass(_SUMMARY_LOWEST)[0]

    def lowest_variance(self, k=10):
        """The k subpixels of lowest variance as (x, y, channel, variance),
        lowest first (ties: in storage order), read band by band."""
        return self._variance_pass(k)[1][:k]

    def _variance_pass(self, k):
        """``((min, max, mean), lowest k)`` of the variance in one pass over
        the bands, kept: the summary asks for both, and each pass over
        statistics finished band by band finishes every band again."""
        done = self._variance_summary
        if done is not None and done[0] >= k:
            return done[1]
        _, w, c = self.shape
        noted = getattr(self.reader(), "variance_summary", None)
        fast = noted(k) if noted is not None else None
        if fast is not None:
            # noted by the reader as detection read each band (issue 10)
            span, pairs = fast
        else:
            low, high, total, count = np.inf, -np.inf, 0.0, 0
            best_idx = np.zeros(0, np.int64)
            best_val = np.zeros(0, np.float64)
            for y0, _, _, v in self.bands():
                low = min(low, float(v.min()))
                high = max(high, float(v.max()))
                total += float(v.sum(dtype=np.float64))
                count += v.size
                flat = v.reshape(-1)
                for s in range(0, flat.size, _LOWEST_CHUNK):
                    best_idx, best_val = keep_lowest(best_idx, best_val,
                                                     flat[s:s + _LOWEST_CHUNK], y0 * w * c + s, k)
            span, pairs = (low, high, total / count), zip(best_idx, best_val)
        lowest = []
        for i, val in pairs:     # storage index -> (x, y, channel)
            y, rem = divmod(int(i), w * c)
            x, ch = divmod(rem, c)
            lowest.append((x, y, ch, float(val)))
        result = (span, lowest)
        self._variance_summary = (k, result)
        return result


def merged_metadata(a: Stats, b: Stats) -> dict:
    """``sample_dtype``, ``mosaic``, ``camera`` and ``residuals`` of the merge of ``a`` and ``b``.

    A side that does not know (statistics files written before these were
    saved) takes the other's; two that disagree cannot be merged.  The
    residual statistics are merged when both sides have them (of the same
    layout), and left out otherwise: detection then uses the mean/variance
    tests alone.

    Raises
    ------
    HotPixelError
        Different sample types, colour filter arrays or camera bodies.
    """
    if a.sample_dtype and b.sample_dtype and a.sample_dtype != b.sample_dtype:
        raise HotPixelError(f"cannot merge statistics of {a.sample_dtype} samples with "
                            f"{b.sample_dtype} ones")
    if a.mosaic is not None and b.mosaic is not None and not a.mosaic.same_as(b.mosaic):
        raise HotPixelError(f"cannot merge statistics of a {a.mosaic.describe()} mosaic with "
                            f"a {b.mosaic.describe()} one")
    mosaic = a.mosaic if a.mosaic is not None else b.mosaic
    if (a.mosaic is not None and b.mosaic is not None and a.mosaic.white_level is None):
        mosaic = b.mosaic
    known = [c for c in (a.camera, b.camera) if c is not None and c.known]
    if len(known) == 2 and known[0] != known[1]:
        raise HotPixelError(f"cannot merge statistics of {known[0].label} with statistics "
                            f"of {known[1].label}")
    camera = known[0] if known else (a.camera or b.camera)
    out = {"sample_dtype": a.sample_dtype or b.sample_dtype, "mosaic": mosaic, "camera": camera}
    # residual statistics survive a merge only when both sides have them
    ra, rb = a.residuals, b.residuals
    if ra is not None and rb is not None and ra.layout == rb.layout:
        from .residual import merge_residuals
        out["residuals"] = merge_residuals(ra, rb)
    return out


#: Lowest-variance subpixels the summary lists (``variance_range`` finds
#: them in the same pass).
_SUMMARY_LOWEST = 10


# Values of a band searched for the lowest at once (one pass of chunks, not
# a partition of the whole band).
_LOWEST_CHUNK = 1 << 22
