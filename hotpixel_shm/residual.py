"""Temporal residual statistics: each frame against its own same-colour neighbours.

The mean image over photos of different scenes keeps their texture, and a
warm photosite (a constant offset in every frame) hides in it.  Within one
frame, though, that photosite stands above its same-colour neighbours every
time, while a texture residual changes sign from scene to scene.  So for
every frame, and every element of a residual plane, this module takes the
residual

    r = value - median(up, down, left, right)

against the four nearest elements of the same colour (``reach`` apart), and
accumulates its sum and sum of squares over the frames.  A warm or dead
photosite then has a residual mean many standard errors from zero
(``hotpixel_shm.detect`` tests it), a noisy one a residual variance far above
its neighbours'.

Residual planes
---------------
* one-channel frames (raw mosaics, dark frames, grey photos): the frame
  itself, ``reach`` = the CFA period (2 for Bayer, 6 for X-Trans, 1 for a
  monochrome sensor);
* RGB photos: a decorrelated colour space, as a JPEG stores it -- luma
  ``Y`` at full resolution with ``reach`` 2 (the nearest pixels where the
  same Bayer colour was measured: a bilinear demosaic spreads a bad
  photosite over the 3x3 around it), and the chroma differences ``Cb`` and
  ``Cr`` at half resolution, one element per 2x2 block (the 4:2:0
  subsampling block) holding the mean over the 4x4 pixels around it (the
  block and one pixel on each side: a red or blue photosite of the block
  with its demosaic smear), with ``reach`` 2 blocks (so the neighbours'
  footprints do not overlap it).  A lone red or blue photosite is, after
  demosaicing and 4:2:0 JPEG, a chroma blob that is faint in each RGB
  channel but plain in ``Cr`` or ``Cb``;
* other channel counts: each channel, ``reach`` 2.

Edges are reflected by ``reach`` (the element beyond the edge is the one
``reach`` inside it, so a CFA's phase is kept).

Level statistics (RGB photos)
-----------------------------
A dead red or blue photosite's residual is proportional to the scene's
level there: it changes from scene to scene, and its mean over the frames
stays within a few standard errors of zero.  After 4:2:0 JPEG it is also
spread over more than the 4x4 footprint.  So for each chroma plane an RGB
photo also keeps, per 2x2 block, a wide residual ``r`` -- the mean of the
chroma over the 8x8 pixels around the block (``_WIDE``: the block and three
pixels on each side, which hold the whole blob) minus the median of the
same at its four neighbours 4 blocks away -- and the local level ``L`` of
the plane's colour (blue for Cb, red for Cr: the median over the same four
neighbours of the 8x8 mean of that colour), and accumulates ``r * L``,
``L * L``, ``r * r`` and ``r``.  A dead photosite has ``r = -a L`` in every
frame: ``hotpixel_shm.temporal`` tests the slope ``a`` of that regression
through the origin, and the mean of ``r`` as it tests a residual plane's
(the wide footprint holds the whole blob of a hot red or blue photosite
too, which the 4x4 one shares with its neighbours).  A frame in which the
block or a neighbour is near clipping (a level at ``_CLIP`` of the
samples' full scale or more: a blown sky's edge is the same in every such
frame) adds nothing to ``r * L``, ``L * L`` and ``r``.

The accumulator is one flat float32 buffer (it may live in shared memory):
the element count ``n`` (as float64 in its first 8 bytes), then the sums of
every plane, then the sums of squares, then (RGB photos) the level sums:
``r * L``, ``L * L``, ``r * r``, ``r`` for Cb, then the same for Cr.  Frames are processed in bands of
``_BAND`` rows: the working memory is a few band-sized float32 arrays,
never image-sized.  Partial accumulators combine by adding (``add_into``).

This module is numerics only (numpy); its loop is the reference, and
``kernels.residual_update`` runs the compiled twin (same bits) when the
compiled kernels are in use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .bands import map_ordered
from .errors import HotPixelError

__all__ = ["ResidualLayout", "residual_layout", "ResidualAccumulator", "Residuals",
           "residual_nbytes", "residuals_of_frames", "merge_residuals", "sum_residuals",
           "LEVEL_SUMS", "scratch_bytes"]

# Output rows per band (even: a band holds whole 2x2 chroma blocks).
_BAND = 64
#: Values per band of rows :func:`sum_residuals` adds and finishes at once (1 MiB of float32).
_FOLD_VALUES = 1 << 18
# JPEG's (JFIF, ITU-R BT.601 full range) colour transform.
_YCC = np.array([[0.299, 0.587, 0.114],
                 [-0.168736, -0.331264, 0.5],
                 [0.5, -0.418688, -0.081312]], dtype=np.float32)
# Cb = (B - Y) / (2 (1 - 0.114)), Cr = (R - Y) / (2 (1 - 0.299)): the rows
# of _YCC, written as scaled differences.
_CB = np.float32(0.5 / 0.886)
_CR = np.float32(0.5 / 0.701)
# Offsets of a chroma element's 4x4 footprint from its 2x2 block's first
# row/column: every red or blue photosite of the block (RGGB or any other
# 2x2 layout), with its bilinear-demosaic smear of one pixel, lies inside.
_FOOTPRINT = (-1, 0, 1, 2)
#: Names of the residual planes of an RGB photo.
YCC_NAMES = ("Y", "Cb", "Cr")
_HEADER = 8   # bytes: the frame count, float64
# Offsets of a wide chroma element's 8x8 footprint (level statistics) from
# its 2x2 block's first row/column, and the neighbour distance in blocks
# (footprints of neighbours do not overlap).
_WIDE = tuple(range(-3, 5))
_WIDE_REACH = 4
# A frame's level counts only below this fraction of the samples' full scale.
_CLIP = 0.8
# The colour's level from the pooled Y and chroma: B = Y + Cb / _CB, R = Y + Cr / _CR.
_INV_CB = np.float32(1.0 / _CB)
_INV_CR = np.float32(1.0 / _CR)
#: Level sums per chroma plane, in the buffer's order.
LEVEL_SUMS = ("rL", "LL", "rr", "r")
# The compiled kernel's constants: Y's weights, the Cb and Cr scales, their
# inverses (the level statistics); the clipping level follows per dtype.
_KERNEL_CONSTS = tuple(float(c) for c in (*_YCC[0], _CB, _CR, _INV_CB, _INV_CR))


def _clip_level(dtype) -> np.float32:
    """The level at which a frame of ``dtype`` samples counts as clipped there."""
    dt = np.dtype(dtype)
    top = float(np.iinfo(dt).max) if dt.kind in "ui" else 1.0
    return np.float32(_CLIP * top)


@dataclass(frozen=True)
class ResidualLayout:
    """Where the residual planes of frames of ``shape`` come from.

    Attributes
    ----------
    shape : tuple of int
        ``(height, width, channels)`` of the frames.
    mode : str
        ``"ycc"`` (RGB photos: Y full size, Cb/Cr over 2x2 blocks) or
        ``"channels"`` (each channel a plane of its own).
    reach : int
        Distance to the same-colour neighbours, in pixels of the frame (for
        ``"ycc"``: of the luma plane; chroma uses 1 block).
    planes : tuple of (int, int)
        Shape of each residual plane.
    """

    shape: Tuple[int, int, int]
    mode: str
    reach: int
    planes: Tuple[Tuple[int, int], ...]

    @property
    def values(self) -> int:
        """Elements in all planes together."""
        return int(sum(h * w for h, w in self.planes))

    @property
    def level_values(self) -> int:
        """Values of the level sums (``"ycc"``: four per element of each
        chroma plane; 0 otherwise)."""
        if self.mode != "ycc":
            return 0
        return int(len(LEVEL_SUMS) * sum(h * w for h, w in self.planes[1:]))

    def plane_reach(self, k: int) -> int:
        """Neighbour distance in plane ``k``'s own elements."""
        return 2 if (self.mode == "ycc" and k > 0) else self.reach

    def plane_scale(self, k: int) -> int:
        """Frame pixels per element of plane ``k`` along each axis (2 for pooled chroma)."""
        return 2 if (self.mode == "ycc" and k > 0) else 1


def residual_layout(shape, period: Optional[int] = None) -> ResidualLayout:
    """The residual planes for frames of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width[, channels])``.
    period : int, optional
        CFA period of a one-channel raw mosaic (the neighbour distance);
        default 2 (a Bayer mosaic or the pixels of a demosaiced photo).

    Returns
    -------
    ResidualLayout
    """
    shape = tuple(int(v) for v in shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or min(shape) < 1:
        raise HotPixelError(f"frames must have shape (height, width, channels), got {shape}")
    h, w, c = shape
    reach = int(period) if period is not None else 2
    if reach < 1:
        raise HotPixelError(f"the neighbour distance must be at least 1, got {reach}")
    if c == 3:
        half = ((h + 1) // 2, (w + 1) // 2)
        return ResidualLayout(shape, "ycc", reach, ((h, w), half, half))
    return ResidualLayout(shape, "channels", reach, tuple((h, w) for _ in range(c)))


def residual_nbytes(layout: ResidualLayout) -> int:
    """Bytes of a residual accumulator (sums, sums of squares and level sums, float32)."""
    return _HEADER + 4 * (2 * layout.values + layout.level_values)


# The numpy reference's temporaries, per column of the frame (its _BAND
# rows of a few float32 planes at once), measured with tracemalloc on frames
# of 3000 and 6000 columns (one update, 8- and 16-bit): 5455 bytes for an
# RGB photo, 1823 + 8 per pixel of reach for one channel (its resident
# high-water mark, at 200000 columns: 1992 + 8 per reach); and at most 1.7
# MiB whatever the width (2000 x 20 frames).  Rounded up.
_NUMPY_COLUMN_BYTES_YCC = 5600
_NUMPY_COLUMN_BYTES = 2000
_NUMPY_COLUMN_BYTES_PER_REACH = 9
_NUMPY_FIXED_BYTES = 2 << 20
# The compiled kernel's rings (``_ckernels.c``, residual_frames), per frame
# of a pass: pixel rows in use at once (RGB: 12 + max(reach, 2); one
# channel: 2 reach + 1), and for RGB 5 pooled chroma rows and 9 wide rows
# (see scratch_bytes); and its residual rows, per frame: one step's (a row
# of every plane) for one-channel frames, for RGB photos a band's, of
# _COMPILED_BAND chroma rows (its RES_BAND), 2 w + 8 w/2 floats each (two Y
# rows, the Cb and Cr rows, three rows of level values per chroma plane),
# but one step's for the last frame of the batch.
_COMPILED_BAND = 32


def scratch_bytes(layout: ResidualLayout, batch: int = 1, compiled: bool = True) -> int:
    """Most bytes one :meth:`ResidualAccumulator.update_batch` of ``batch``
    frames allocates besides the accumulator (the memory planner counts it
    per worker).

    Parameters
    ----------
    layout : ResidualLayout
    batch : int
        Frames per call (K).
    compiled : bool
        The compiled kernel's rings (a few rows per frame of the pass) and,
        for RGB photos, its band scratch (32 chroma rows per frame but the
        last, and one step's rows), or
        the numpy reference's band temporaries (independent of K: it takes
        the frames one at a time).

    Returns
    -------
    int
    """
    h, w, c = layout.shape
    ycc = layout.mode == "ycc"
    if not compiled:
        per_column = _NUMPY_COLUMN_BYTES_YCC if ycc else (
            c * (_NUMPY_COLUMN_BYTES + _NUMPY_COLUMN_BYTES_PER_REACH * layout.reach))
        return int(per_column * w + _NUMPY_FIXED_BYTES)
    k = max(1, int(batch))
    wp = (w + 1) // 2
    reach = layout.reach
    slots = 12 + max(reach, 2) if ycc else 2 * reach + 1
    per_frame = slots * ((3 if ycc else c) * w * 4 + 8)
    if ycc:
        per_frame += 5 * (2 * wp * 4 + 8) + 9 * (4 * wp * 4 + 8)
    residual_rows = ((k - 1) * _COMPILED_BAND + 1) * (2 * w + 8 * wp) if ycc else k * c * w
    # and a little for the allocator's rounding and the kernel's own pages
    return int(k * per_frame + residual_rows * 4 + (3 * w + wp) * 4 + (256 << 10))


def _reflect(idx, size, reach):
    """Indices beyond an edge -> ``reach`` inside it (keeps the CFA phase)."""
    idx = np.where(idx < 0, idx + 2 * reach, idx)
    idx = np.where(idx >= size, idx - 2 * reach, idx)
    return np.clip(idx, 0, size - 1)


def _median4(a, b, c, d, out):
    """Elementwise median of four arrays (the mean of the middle two), into ``out``."""
    lo = np.minimum(a, b)
    hi = np.maximum(a, b)
    lo2 = np.minimum(c, d)
    np.maximum(c, d, out=out)
    np.minimum(hi, out, out=hi)         # min of the two maxima
    np.maximum(lo, lo2, out=lo)         # max of the two minima
    np.add(lo, hi, out=out)
    out *= 0.5
    return out


def _residual_band(plane_rows, y0, y1, reach, out):
    """Residuals of rows ``[y0, y1)`` of a plane, into ``out`` (``(y1 - y0, width)``).

    ``plane_rows(idx)`` returns the float32 rows ``idx`` (an index array)
    of the whole plane; the band and its ``reach`` rows above and below are
    made once.
    """
    rows = y1 - y0
    ext = plane_rows(_reflect(np.arange(y0 - reach, y1 + reach), plane_rows.height, reach))
    up, down, left, right, centre = _neighbours(ext, rows, reach)
    _median4(up, down, left, right, out)
    np.subtract(centre, out, out=out)
    return out


def _neighbours(ext, rows, reach):
    """The four same-colour neighbours of the ``rows`` centre rows of ``ext``
    (the band with ``reach`` rows above and below), and the centre rows."""
    centre = ext[reach:reach + rows]
    width = ext.shape[1]
    if width > reach:
        left = np.empty_like(centre)
        right = np.empty_like(centre)
        left[:, reach:] = centre[:, :-reach]
        right[:, :-reach] = centre[:, reach:]
        # beyond an edge: the element reach inside it
        edge = min(reach, width - reach)
        left[:, :edge] = centre[:, reach:reach + edge]
        right[:, width - edge:] = centre[:, width - reach - edge:width - reach]
        if edge < reach:             # narrower than 2 * reach: clamp
            left[:, edge:reach] = centre[:, edge:reach]
            right[:, width - reach:width - edge] = centre[:, width - reach:width - edge]
    else:
        left = right = centre
    return ext[:rows], ext[2 * reach:2 * reach + rows], left, right, centre


def _wide_rows(source, idx, h, w, hw):
    """Wide chroma rows ``idx`` of an RGB frame: ``(Cb, Cr, B, R)``, float32.

    Element ``(i, j)`` of Cb and Cr is the mean over the 8x8 pixels of rows
    ``2i-3 .. 2i+4`` and columns ``2j-3 .. 2j+4`` (clamped at the edges);
    B and R are the levels of blue and red there, ``Y + Cb / _CB`` and
    ``Y + Cr / _CR`` of the same means.
    """
    lo = max(0, 2 * int(idx.min()) + _WIDE[0])
    hi = min(h, 2 * int(idx.max()) + _WIDE[-1] + 1)
    pad = np.empty((idx.size, 2 * hw + 2 * len(_WIDE)), dtype=np.float32)
    first = -_WIDE[0]             # pad column of pixel column 0
    means = []
    for k in range(3):
        block = source.ycc(lo, hi, k)
        rows = np.zeros((idx.size, w), dtype=np.float32)
        for dy in _WIDE:
            rows += block[np.clip(2 * idx + dy, 0, h - 1) - lo]
        pad[:, first:first + w] = rows
        pad[:, :first] = rows[:, :1]
        pad[:, first + w:] = rows[:, w - 1:w]
        out = pad[:, 0:2 * hw:2].copy()
        for dx in range(1, len(_WIDE)):
            out += pad[:, dx:dx + 2 * hw:2]
        out *= np.float32(1.0 / len(_WIDE) ** 2)
        means.append(out)
    y, cb, cr = means
    b = cb * _INV_CB
    b += y
    r = cr * _INV_CR
    r += y
    return cb, cr, b, r


def _level_band(wide, i0, i1, hp, clip, sums):
    """Add one frame's level sums of element rows ``[i0, i1)`` to ``sums``
    (the six level planes, ``LEVEL_SUMS`` for Cb then Cr).

    ``wide(idx)`` gives ``_wide_rows`` of the element rows ``idx``.
    """
    rows = i1 - i0
    reach = _WIDE_REACH
    ext = wide(_reflect(np.arange(i0 - reach, i1 + reach), hp, reach))
    for p in range(2):
        chroma, level = ext[p], ext[2 + p]
        r = np.empty((rows, chroma.shape[1]), dtype=np.float32)
        up, down, left, right, centre = _neighbours(chroma, rows, reach)
        _median4(up, down, left, right, r)
        np.subtract(centre, r, out=r)
        lam = np.empty_like(r)
        up, down, left, right, centre = _neighbours(level, rows, reach)
        _median4(up, down, left, right, lam)
        top = np.maximum(centre, up)
        np.maximum(top, down, out=top)
        np.maximum(top, left, out=top)
        np.maximum(top, right, out=top)
        np.maximum(lam, np.float32(0), out=lam)
        clipped = top >= clip
        lam[clipped] = 0
        rl, ll, rr, rs = sums[4 * p:4 * p + 4]
        rl[i0:i1] += r * lam
        lam *= lam
        ll[i0:i1] += lam
        rs[i0:i1] += np.where(clipped, np.float32(0), r)
        r *= r
        rr[i0:i1] += r


class _Source:
    """The frame's pixel rows in the YCC space, converted a block at a time.

    A band of luma rows and the chroma elements of the same rows need
    overlapping pixel rows; converting each block once (and a band ahead)
    keeps the cost near one pass over the frame.
    """

    def __init__(self, image):
        self.image = image
        self.lo = self.hi = 0
        self.block = None

    def ycc(self, lo, hi, k):
        """Pixel rows ``[lo, hi)`` of plane ``k`` (Y, Cb, Cr), float32."""
        if self.block is None or lo < self.lo or hi > self.hi:
            h = self.image.shape[0]
            self.lo, self.hi = max(0, lo), min(h, max(hi, lo + 2 * _BAND + 8))
            px = self.image[self.lo:self.hi]
            # one strided read per colour into a contiguous float32 plane
            r, g, b = (px[:, :, c].astype(np.float32) for c in range(3))
            # separate planes and scalar multiply-adds: several times faster
            # than a matrix product over a last axis of 3
            y = r * _YCC[0, 0]
            y += g * _YCC[0, 1]
            y += b * _YCC[0, 2]
            cb = b - y
            cb *= _CB
            cr = r - y
            cr *= _CR
            self.block = (y, cb, cr)
        return self.block[k][lo - self.lo:hi - self.lo]


class _Rows:
    """Rows of one residual plane, computed from the frame on demand (float32)."""

    def __init__(self, image, layout, k, source=None):
        self.image = image
        self.layout = layout
        self.k = k
        self.height = layout.planes[k][0]
        self.source = source

    def __call__(self, idx):
        img, lay, k = self.image, self.layout, self.k
        if lay.mode == "channels":
            return img[idx, :, k].astype(np.float32)
        h, w = lay.shape[:2]
        if k == 0:
            lo, hi = int(idx.min()), int(idx.max()) + 1
            block = self.source.ycc(lo, hi, 0)
            # consecutive rows (the usual case): the block itself, no gather
            return block if np.all(np.diff(idx) == 1) else block[idx - lo]
        # chroma of element (i, j): the mean over the 4x4 pixels of rows
        # 2i-1 .. 2i+2 and columns 2j-1 .. 2j+2 (clamped at the edges)
        lo = max(0, 2 * int(idx.min()) + _FOOTPRINT[0])
        hi = min(h, 2 * int(idx.max()) + _FOOTPRINT[-1] + 1)
        block = self.source.ycc(lo, hi, k)
        rows = np.zeros((idx.size, w), dtype=np.float32)
        for dy in _FOOTPRINT:
            src = np.clip(2 * idx + dy, 0, h - 1) - lo
            step = src[1:] - src[:-1]
            if src.size > 1 and np.all(step == 2):        # the usual case: a strided slice
                rows += block[src[0]:src[-1] + 1:2]
            else:
                rows += block[src]
        hw = lay.planes[k][1]
        # columns 2j-1 .. 2j+2 by four strided slices of an edge-padded copy
        pad = np.empty((idx.size, 2 * hw + 4), dtype=np.float32)
        pad[:, 1:w + 1] = rows
        pad[:, 0] = rows[:, 0]
        pad[:, w + 1:] = rows[:, w - 1:w]
        out = pad[:, 0:2 * hw:2].copy()
        for dx in (1, 2, 3):
            out += pad[:, dx:dx + 2 * hw:2]
        out *= np.float32(1.0 / len(_FOOTPRINT) ** 2)
        return out


class ResidualAccumulator:
    """Sums and sums of squares of per-frame residuals, in one flat buffer.

    Parameters
    ----------
    layout : ResidualLayout
    buffer : writable buffer, optional
        At least ``residual_nbytes(layout)`` bytes (e.g. a shared-memory
        segment), zeroed by the caller for a fresh start; default: a new
        zeroed array.
    """

    def __init__(self, layout: ResidualLayout, buffer=None):
        self.layout = layout
        nbytes = residual_nbytes(layout)
        if buffer is None:
            buffer = bytearray(nbytes)
        mem = memoryview(buffer).cast("B")
        if mem.nbytes < nbytes:
            raise HotPixelError(f"residual buffer of {mem.nbytes} bytes is smaller than "
                                f"the {nbytes} needed")
        self._count = np.frombuffer(mem, dtype=np.float64, count=1)
        flat = np.frombuffer(mem, dtype=np.float32, count=2 * layout.values + layout.level_values,
                             offset=_HEADER)
        self._flat = flat
        self.sums: List[np.ndarray] = []
        self.squares: List[np.ndarray] = []
        off = 0
        for h, w in layout.planes:
            self.sums.append(flat[off:off + h * w].reshape(h, w))
            off += h * w
        for h, w in layout.planes:
            self.squares.append(flat[off:off + h * w].reshape(h, w))
            off += h * w
        #: the level sums (``"ycc"``): ``LEVEL_SUMS`` of Cb, then of Cr
        self.levels: List[np.ndarray] = []
        for h, w in layout.planes[1:] if layout.mode == "ycc" else ():
            for _ in LEVEL_SUMS:
                self.levels.append(flat[off:off + h * w].reshape(h, w))
                off += h * w

    @property
    def n(self) -> int:
        """Frames accumulated."""
        return int(self._count[0])

    def reset(self) -> None:
        """Back to no frames."""
        self._count[0] = 0
        self._flat[:] = 0

    def update(self, image: np.ndarray) -> None:
        """Add one frame's residuals (``image`` of ``layout.shape``, or 2-D for one channel)."""
        self.update_batch([image])

    def update_batch(self, images) -> None:
        """Add several frames' residuals (each as for :meth:`update`).

        The compiled kernels fold them in one pass over the sums; the bits
        are those of one :meth:`update` per frame.
        """
        lay = self.layout
        frames = []
        for image in images:
            img = np.asarray(image)
            if img.ndim == 2:
                img = img[:, :, None]
            if img.shape != lay.shape:
                raise HotPixelError(f"frame of shape {img.shape}, expected {lay.shape}")
            frames.append(img)
        if not frames:
            return
        from . import kernels   # here: a plan-only run imports this module, not the kernels
        consts = _KERNEL_CONSTS + (float(_clip_level(frames[0].dtype)),)
        if not kernels.residual_update(frames, self._flat, lay.mode == "ycc", lay.reach,
                                       consts):
            for img in frames:
                self._update_numpy(img)
        self._count[0] += len(frames)

    def _update_numpy(self, img) -> None:
        """The reference loop: band by band, in numpy."""
        lay = self.layout
        source = _Source(img) if lay.mode == "ycc" else None
        planes = [(_Rows(img, lay, k, source), lay.plane_reach(k), lay.plane_scale(k))
                  for k in range(len(lay.planes))]
        bufs = [np.empty((max(1, _BAND // scale), w), dtype=np.float32)
                for (_, w), (_, _, scale) in zip(lay.planes, planes)]
        # band by band over the frame, every plane's rows of the band in
        # turn (the chroma elements of a luma band share its pixel rows)
        for y in range(0, lay.shape[0], _BAND):
            if self.levels:
                # the level sums of the band's chroma element rows (first:
                # they reach furthest back, and the source's rows converted
                # for them then serve the band's other planes too)
                hp, wp = lay.planes[1]
                i0, i1 = y // 2, min(hp, -(-(y + _BAND) // 2))
                if i0 < i1:
                    _level_band(lambda idx: _wide_rows(source, idx, lay.shape[0], lay.shape[1],
                                                       wp),
                                i0, i1, hp, _clip_level(img.dtype), self.levels)
            for k, (rows, reach, scale) in enumerate(planes):
                y0, y1 = y // scale, min(rows.height, -(-(y + _BAND) // scale))
                if y0 >= y1:
                    continue
                r = _residual_band(rows, y0, y1, reach, bufs[k][:y1 - y0])
                self.sums[k][y0:y1] += r
                r *= r
                self.squares[k][y0:y1] += r

    def add_into(self, other: "ResidualAccumulator") -> None:
        """Add ``other``'s frames to this accumulator (partials combine by adding)."""
        if other.layout != self.layout:
            raise HotPixelError("residual accumulators of different layouts")
        self._flat += other._flat
        self._count[0] += other._count[0]

    def finish(self, in_place: bool = False) -> "Residuals":
        """Residual mean and population variance per plane (float32).

        ``in_place``: overwrite the sums with the means and the sums of
        squares with the variances (no new memory; the accumulator is spent).
        """
        n = self.n
        if n < 1:
            raise HotPixelError("no frames in the residual accumulator")
        means, variances = [], []
        inv = np.float32(1.0 / n)
        for s, q in zip(self.sums, self.squares):
            m = s if in_place else s.copy()
            v = q if in_place else q.copy()
            for y0 in range(0, m.shape[0], _BAND):      # no image-sized temporary
                _finish_rows(m[y0:y0 + _BAND], v[y0:y0 + _BAND], inv)
            means.append(m)
            variances.append(v)
        # the level sums as means over the frames (they merge as means do)
        levels = [np.multiply(a, inv, out=a if in_place else None) for a in self.levels]
        return Residuals(n=n, layout=self.layout, mean=means, var=variances,
                         levels=levels or None)


def _finish_rows(m, v, inv):
    """Rows of a plane's sums ``m`` and sums of squares ``v``, in place, as
    the mean and the population variance: ``m * inv`` and ``v * inv - m *
    m``, at least 0 (``inv``: one over the frames, float32)."""
    np.multiply(m, inv, out=m)
    np.multiply(v, inv, out=v)
    v -= m * m
    np.maximum(v, 0, out=v)


@dataclass
class Residuals:
    """Finished residual statistics: per plane, the mean and population variance.

    Attributes
    ----------
    n : int
        Frames.
    layout : ResidualLayout
    mean, var : list of numpy.ndarray
        One float32 array per plane of ``layout``.
    levels : list of numpy.ndarray or None
        RGB photos: the level statistics, per frame means of ``LEVEL_SUMS``
        (``r * L``, ``L * L``, ``r * r``, ``r``) for Cb, then for Cr (float32, of
        the chroma planes' shape); None when not kept (statistics files
        written before them).
    """

    n: int
    layout: ResidualLayout
    mean: List[np.ndarray]
    var: List[np.ndarray]
    levels: Optional[List[np.ndarray]] = None

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.mean) + sum(a.nbytes for a in self.var)
                   + sum(a.nbytes for a in self.levels or ()))


def sum_residuals(accs, threads: int = 1) -> Optional[Residuals]:
    """Finish the sum of several partial accumulators, in the first one's memory.

    Parameters
    ----------
    accs : list of ResidualAccumulator
        Partials of the same layout (e.g. views of the workers' segments);
        the first is overwritten.
    threads : int, optional
        Add and finish bands of rows on this many threads (numpy releases
        the GIL): the bits of :meth:`ResidualAccumulator.add_into` for each
        partial in turn, then :meth:`ResidualAccumulator.finish` in place.

    Returns
    -------
    Residuals or None
        None when no accumulator holds a frame.
    """
    live = [a for a in accs if a.n]
    if not live:
        return None
    first, others = live[0], live[1:]
    lay = first.layout
    if any(o.layout != lay for o in others):
        raise HotPixelError("residual accumulators of different layouts")
    n = sum(a.n for a in live)
    inv = np.float32(1.0 / n)
    # (arrays of each accumulator, rows): a plane's sums with its squares,
    # or one level sum; rows of about _FOLD_VALUES values
    items = []
    for k, (h, w) in enumerate(lay.planes):
        step = max(1, _FOLD_VALUES // max(1, w))
        items += [(("sums", "squares"), k, y0, min(h, y0 + step)) for y0 in range(0, h, step)]
    for j, a in enumerate(first.levels):
        step = max(1, _FOLD_VALUES // max(1, a.shape[1]))
        items += [(("levels",), j, y0, min(a.shape[0], y0 + step))
                  for y0 in range(0, a.shape[0], step)]

    def fold(item, slot):
        names, k, y0, y1 = item
        own = [getattr(first, name)[k][y0:y1] for name in names]
        for o in others:
            for dst, name in zip(own, names):
                dst += getattr(o, name)[k][y0:y1]
        if len(own) == 2:
            _finish_rows(own[0], own[1], inv)
        else:
            np.multiply(own[0], inv, out=own[0])

    for _ in map_ordered(fold, items, threads):
        pass
    first._count[0] = n
    return Residuals(n=n, layout=lay, mean=list(first.sums), var=list(first.squares),
                     levels=list(first.levels) or None)


def merge_residuals(a: Residuals, b: Residuals) -> Residuals:
    """Residual statistics over the frames of ``a`` and ``b`` (Chan et al.'s formula).

    The level statistics survive only when both sides have them.

    Raises
    ------
    HotPixelError
        On different layouts.
    """
    if a.layout != b.layout:
        raise HotPixelError("cannot merge residual statistics of different layouts")
    n = a.n + b.n
    means, variances = [], []
    for ma, va, mb, vb in zip(a.mean, a.var, b.mean, b.var):
        d = (mb - ma).astype(np.float32)
        m = ma + d * np.float32(b.n / n)
        v = (va * np.float32(a.n) + vb * np.float32(b.n) + d * d * np.float32(a.n * b.n / n))
        v *= np.float32(1.0 / n)
        means.append(m.astype(np.float32))
        variances.append(v.astype(np.float32))
    levels = None
    if a.levels is not None and b.levels is not None:
        # means over the frames: weighted by the frame counts
        levels = [((la.astype(np.float64) * a.n + lb.astype(np.float64) * b.n) / n)
                  .astype(np.float32) for la, lb in zip(a.levels, b.levels)]
    return Residuals(n=n, layout=a.layout, mean=means, var=variances, levels=levels)


def residuals_of_frames(frames, shape, period: Optional[int] = None) -> Residuals:
    """Residual statistics of an iterable of frames, in-process.

    Parameters
    ----------
    frames : iterable of numpy.ndarray
        Frames of ``shape``.
    shape : tuple of int
        ``(height, width[, channels])``.
    period : int, optional
        See ``residual_layout``.

    Returns
    -------
    Residuals
    """
    acc = ResidualAccumulator(residual_layout(shape, period))
    for f in frames:
        acc.update(f)
    return acc.finish()
