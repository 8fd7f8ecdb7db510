"""A simulated camera: photo sets and dark-frame sets with planted defects.

The demo (``python -m hotpixel_shm --demo``), the test suite and the
benchmark need photos whose defects are known.  This module makes them the
way a camera does, so that detection meets the same difficulties as on real
files:

1. a scene, different in every frame (gradients, soft blobs, textures,
   hard-edged objects, a sky that is blown out in most frames), darkened by
   vignetting, with a thin black border;
2. the scene sampled through an RGGB Bayer mosaic, with shot and read noise;
3. photosite defects applied *in sensor space*: hot (+120..150 of 255, so it
   clips in bright photos), weak hot (+45..70), stuck (a constant 220..250
   whatever the scene), dead (reads black), noisy (a random telegraph,
   +-50..80, symmetric about the true value); then clipping to the sensor's
   range.  Weak hot and dead photosites are green ones: a weak red or blue
   photosite does not survive JPEG's chroma subsampling, and a set must
   only claim defects its files can show;
4. bilinear demosaicing, which spreads a bad photosite over its 3x3
   neighbourhood in its own colour;
5. a date stamp burnt in (identical pixels in every frame, lower right);
6. JPEG compression (when the set is written as JPEG), which spreads the
   defect into every channel.

Dark frames (``darks=True``) are 16-bit monochrome mosaics: a bias with a
faint amplifier glow, a fixed per-photosite offset pattern, read noise, hot
pixels strong and weak (5 to 10 sigma of the read noise) and noisy pixels.

Everything is deterministic given ``seed``.  Coordinates are column ``x``
and row ``y``, 0-based, in the stored pixel array (for photos the demosaiced
image has the size of the mosaic, so a planted photosite's ``(x, y)`` is
also its pixel).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from .errors import HotPixelError

__all__ = [
    "Planted", "SampleSet", "simulate_frames", "write_sample_set", "make_photo_like",
    "cfa_colour", "apply_lines", "DARK_BIAS", "DARK_READ_NOISE",
]

#: Bias (black level) of the simulated dark frames, in ADU.
DARK_BIAS = 256.0
#: Read noise of the simulated dark frames, in ADU (one sigma).
DARK_READ_NOISE = 6.0
# The dark frames' ADC is 14-bit, stored in 16-bit containers.
_DARK_WHITE = 16383

_RGGB = ("R", "G", "G", "B")
_CHANNEL = {"R": 0, "G": 1, "B": 2}
_KINDS = ("hot", "stuck", "dead", "noisy")
# Minimum spacing of planted defects (Chebyshev distance, pixels) and from
# the image border (and its black frame): a JPEG-smeared defect covers about
# 3x3 pixels and rings within its 8x8 (16x16 for subsampled chroma) block;
# 16 px never puts two planted defects in one 16x16 block.
_SPACING = 16
_BORDER = 12
# Width of the black border every photo has (a lens hood / masked edge).
_BLACK_BORDER = 2
# Read noise and shot-noise gain of the photo sensor, in 8-bit units:
# noise variance = _READ**2 + _SHOT * signal.
_READ = 1.0
_SHOT = 0.03
# Fraction of frames in which the sky is blown out (clipped).
_SKY_CLIPPED = 0.65


@dataclass
class Planted:
    """One planted photosite defect (the ground truth of a simulated set).

    Attributes
    ----------
    x, y : int
        Column and row of the photosite, 0-based (sensor = pixel coordinates).
    kind : str
        ``"hot"``, ``"stuck"``, ``"dead"`` or ``"noisy"``.
    colour : str
        The photosite's colour in the RGGB mosaic: ``"R"``, ``"G"`` or ``"B"``.
    weak : bool
        A weak (warm) hot pixel: a moderate offset rather than a large one.
    level : float or None
        The planted offset (hot), value (stuck, dead) or telegraph amplitude
        (noisy), in the units of the sensor (8-bit for photos, ADU for dark
        frames); None in a request means "draw one".
    """

    x: int
    y: int
    kind: str
    colour: str
    weak: bool = False
    level: Optional[float] = None


@dataclass
class SampleSet:
    """A written sample set.

    Attributes
    ----------
    paths : list of str
        The files, in frame order.
    truth : list of Planted
        The planted defects.
    shape : tuple of int
        ``(height, width, channels)`` of the decoded frames.
    kind : str
        ``"photos"`` or ``"darks"``.
    fmt : str
        The file format (``"jpeg"``, ``"png"`` or ``"tiff16"``).
    """

    paths: List[str]
    truth: List[Planted]
    shape: Tuple[int, int, int]
    kind: str
    fmt: str = "jpeg"


def cfa_colour(x: int, y: int) -> str:
    """Colour of photosite ``(x, y)`` in the RGGB mosaic (``"R"``, ``"G"`` or ``"B"``)."""
    return _RGGB[(y % 2) * 2 + (x % 2)]


# ---------------------------------------------------------------------------
# The fixed parts of a camera: layout of sky, stamp, vignetting, defects
# ---------------------------------------------------------------------------

# Seven-segment digits: which of the segments (a..g) are lit.
_SEGMENTS = {
    "0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg",
    "5": "acdfg", "6": "acdefg", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}


def _stamp_mask(height, width, text="26 04 11"):
    """A seven-segment date imprint in the lower right corner, as a boolean mask."""
    mask = np.zeros((height, width), dtype=bool)
    dh = max(11, height // 18)                   # digit height
    dw = max(6, (dh * 6) // 11)                  # digit width
    t = max(2, dh // 7)                          # stroke width: >= 2 px, as real imprints
    gap = max(2, dw // 3)
    total = len(text) * (dw + gap) - gap
    x0 = width - total - max(8, width // 40)
    y0 = height - dh - max(8, height // 30)
    if x0 < _BORDER + 1 or y0 < _BORDER + 1:
        return mask                              # image too small for a stamp
    mid = y0 + (dh - t) // 2
    for i, ch in enumerate(text):
        if ch not in _SEGMENTS:
            continue
        left = x0 + i * (dw + gap)
        right = left + dw
        boxes = {
            "a": (y0, y0 + t, left, right), "g": (mid, mid + t, left, right),
            "d": (y0 + dh - t, y0 + dh, left, right),
            "f": (y0, mid + t, left, left + t), "b": (y0, mid + t, right - t, right),
            "e": (mid, y0 + dh, left, left + t), "c": (mid, y0 + dh, right - t, right),
        }
        for seg in _SEGMENTS[ch]:
            r0, r1, c0, c1 = boxes[seg]
            mask[r0:r1, c0:c1] = True
    return mask


class _Layout:
    """Everything that is the same in every frame of one simulated camera."""

    def __init__(self, rng, height, width, *, stamp, clipped, darks):
        self.height, self.width = height, width
        self.y = np.arange(height, dtype=np.float32)[:, None]
        self.x = np.arange(width, dtype=np.float32)[None, :]
        if darks:
            # amplifier glow: a faint smooth ramp from the right edge
            d = (width - 1 - self.x) / max(width, 1)
            glow = 12.0 * np.exp(-d / 0.15) * np.exp(-((self.y / height - 0.5) ** 2) / 0.1)
            self.glow = glow.astype(np.float32)
            # fixed per-photosite offsets (dark signal non-uniformity)
            self.dsnu = rng.normal(0.0, 0.25 * DARK_READ_NOISE, (height, width)).astype(np.float32)
            self.stamp = np.zeros((height, width), dtype=bool)
            self.sky = None
            self.visible = np.ones((height, width), dtype=bool)
            return
        cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
        r = np.sqrt(((self.y - cy) / cy) ** 2 + ((self.x - cx) / cx) ** 2) / np.sqrt(2.0)
        vignette = (1.0 + (1.3 * r) ** 2) ** -2          # cos^4-like fall-off, ~0.14 in the corners
        b = _BLACK_BORDER
        vignette[:b, :] = 0.0
        vignette[-b:, :] = 0.0
        vignette[:, :b] = 0.0
        vignette[:, -b:] = 0.0
        self.vignette = vignette.astype(np.float32)
        self.stamp = _stamp_mask(height, width) if stamp else np.zeros((height, width), bool)
        self.stamp_colour = np.array([255.0, 168.0, 40.0], dtype=np.float32)
        if clipped:
            phase = rng.uniform(0, 2 * np.pi)
            horizon = height * (0.2 + 0.04 * np.sin(2 * np.pi * 1.5 * self.x[0] / width + phase))
            self.sky = horizon.astype(np.float32)        # sky above this row, per column
        else:
            self.sky = None
        # Where planted defects go: visible at all (not under the blown sky,
        # the stamp, deep vignetting or the border).
        ok = self.vignette >= 0.4
        if self.sky is not None:
            ok &= self.y > (self.sky[None, :] + 6)
        if self.stamp.any():
            ok &= ~ndimage.binary_dilation(self.stamp, iterations=_SPACING + 2)
        self.visible = ok


def _default_counts(darks, height, width):
    area = height * width / (480.0 * 320.0)
    k = max(1, int(round(area ** 0.5)))
    if darks:
        return {"hot": 3 * k, "weak_hot": 4 * k, "stuck": 0, "dead": 0, "noisy": 3 * k}
    return {"hot": 3 * k, "weak_hot": 3 * k, "stuck": 2 * k, "dead": 2 * k, "noisy": 0}


def _draw_level(rng, kind, weak, darks):
    """A defect's strength, in sensor units."""
    if darks:
        s = DARK_READ_NOISE
        if kind == "hot":
            return float(s * (rng.uniform(5, 10) if weak else rng.uniform(40, 300)))
        if kind == "noisy":
            return float(s * rng.uniform(6, 12))
        if kind == "stuck":
            return float(rng.uniform(2000, _DARK_WHITE))
        return 0.0
    if kind == "hot":
        return float(rng.uniform(45, 70) if weak else rng.uniform(120, 150))
    if kind == "stuck":
        return float(rng.uniform(220, 250))   # stuck photosites usually read bright
    if kind == "noisy":
        return float(rng.uniform(50, 80))
    return 0.0                                 # dead


def _pick_sites(rng, allowed, green_only):
    """Random (y, x) sites in ``allowed``, >= _SPACING apart and from the border.

    One site per entry of ``green_only``; where it is True the site is a
    green photosite of the RGGB mosaic.
    """
    allowed = allowed.copy()
    allowed[:_BORDER, :] = False
    allowed[-_BORDER:, :] = False
    allowed[:, :_BORDER] = False
    allowed[:, -_BORDER:] = False
    yy, xx = np.indices(allowed.shape)
    green = (yy + xx) % 2 == 1
    sites = []
    for g in green_only:
        ys, xs = np.nonzero(allowed & green) if g else np.nonzero(allowed)
        if ys.size == 0:
            raise HotPixelError(f"image too small to plant {len(green_only)} defects "
                                f"{_SPACING} px apart")
        i = int(rng.integers(ys.size))
        y, x = int(ys[i]), int(xs[i])
        sites.append((y, x))
        y0, x0 = max(0, y - _SPACING + 1), max(0, x - _SPACING + 1)
        allowed[y0:y + _SPACING, x0:x + _SPACING] = False
    return sites


def _plant(rng, layout, defects, darks, dead_any_colour=False):
    """The truth list: explicit ``Planted`` records, or counts to place at random."""
    if defects is not None and not isinstance(defects, dict):
        out = []
        for p in defects:
            if p.kind not in _KINDS:
                raise HotPixelError(f"unknown defect kind {p.kind!r}; expected one of {_KINDS}")
            if not (0 <= p.x < layout.width and 0 <= p.y < layout.height):
                raise HotPixelError(f"planted defect at x={p.x} y={p.y} is outside the image")
            level = p.level if p.level is not None else _draw_level(rng, p.kind, p.weak, darks)
            out.append(Planted(int(p.x), int(p.y), p.kind, cfa_colour(p.x, p.y), p.weak, level))
        return out
    counts = _default_counts(darks, layout.height, layout.width)
    if defects is not None:
        unknown = set(defects) - set(counts)
        if unknown:
            raise HotPixelError(f"unknown defect counts {sorted(unknown)}; "
                                f"expected {sorted(counts)}")
        counts.update({k: int(v) for k, v in defects.items() if v is not None})
    order = ([("hot", False)] * counts["hot"] + [("hot", True)] * counts["weak_hot"]
             + [("stuck", False)] * counts["stuck"] + [("dead", False)] * counts["dead"]
             + [("noisy", False)] * counts["noisy"])
    # In photos, the weak defects (warm pixels; dead ones, whose contrast is
    # only the scene's brightness) sit on green photosites: green carries
    # most of the luma, while a weak red or blue photosite does not survive
    # the chroma subsampling and quantisation of a JPEG (see
    # hotpixel_shm.detect for the measured limits).
    weak_kind = [not darks and (weak or (kind == "dead" and not dead_any_colour))
                 for kind, weak in order]
    sites = _pick_sites(rng, layout.visible, weak_kind)
    return [Planted(x, y, kind, cfa_colour(x, y), weak, _draw_level(rng, kind, weak, darks))
            for (y, x), (kind, weak) in zip(sites, order)]


# ---------------------------------------------------------------------------
# One frame
# ---------------------------------------------------------------------------

def _scene(rng, lay):
    """A random scene, (H, W, 3) float32 in 8-bit units (may exceed 255: it clips later)."""
    h, w = lay.height, lay.width
    x, y = lay.x / w, lay.y / h
    level = rng.uniform(30, 190)
    tint = rng.uniform(0.6, 1.25, 3).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(-0.8, 0.8)
    grey = level * (1 + slope * ((x - 0.5) * np.cos(theta) + (y - 0.5) * np.sin(theta)))
    img = np.empty((h, w, 3), dtype=np.float32)
    img[...] = grey[..., None] * tint
    for _ in range(int(rng.integers(1, 5))):                     # soft blobs
        cx, cy = rng.uniform(0, 1, 2)
        sx, sy = rng.uniform(0.05, 0.3, 2)
        blob = np.exp(-0.5 * ((x - cx) / sx) ** 2) * np.exp(-0.5 * ((y - cy) / sy) ** 2)
        img += blob[..., None] * (rng.uniform(-0.6, 0.8) * level * rng.uniform(0.5, 1.3, 3))
    if rng.random() < 0.6:                                      # a grating (fine texture)
        f = rng.uniform(0.02, 0.3)
        phi = rng.uniform(0, np.pi)
        along = lay.x * np.cos(phi) + lay.y * np.sin(phi)
        wave = np.sin(2 * np.pi * f * along + rng.uniform(0, 6.3))
        img += wave[..., None] * (rng.uniform(5, 35) * rng.uniform(0.5, 1.3, 3))
    if rng.random() < 0.5:                                      # random texture (foliage, gravel)
        tex = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32),
                                      rng.uniform(0.7, 3.0))
        tex /= max(float(tex.std()), 1e-6)
        img += tex[..., None] * (rng.uniform(5, 25) * rng.uniform(0.6, 1.2, 3))
    for _ in range(int(rng.integers(0, 4))):                    # hard-edged objects
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        y1 = min(h, y0 + int(rng.integers(h // 10 + 1, h // 2 + 2)))
        x1 = min(w, x0 + int(rng.integers(w // 10 + 1, w // 2 + 2)))
        img[y0:y1, x0:x1] = rng.uniform(0, 250) * rng.uniform(0.5, 1.2, 3)
    if lay.sky is not None:                                     # sky, blown out in most frames
        horizon = lay.sky + float(rng.integers(-2, 3))
        sky = lay.y < horizon[None, :]
        # blown: far above the clipping level, even in the vignetted corners
        bright = 900.0 if rng.random() < _SKY_CLIPPED else rng.uniform(150, 235)
        img[sky] = bright * np.array([0.9, 0.97, 1.1], dtype=np.float32)
    img *= lay.vignette[..., None]
    return img


def _mosaic(rgb):
    """Sample an (H, W, 3) image through an RGGB colour filter array -> (H, W)."""
    raw = np.empty(rgb.shape[:2], dtype=np.float32)
    raw[0::2, 0::2] = rgb[0::2, 0::2, 0]
    raw[0::2, 1::2] = rgb[0::2, 1::2, 1]
    raw[1::2, 0::2] = rgb[1::2, 0::2, 1]
    raw[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return raw


_K_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 4
_K_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float32) / 4


def _demosaic(raw):
    """Bilinear demosaicing of an RGGB mosaic: (H, W) -> (H, W, 3)."""
    h, w = raw.shape
    out = np.empty((h, w, 3), dtype=np.float32)
    for c, kernel in ((0, _K_RB), (1, _K_G), (2, _K_RB)):
        plane = np.zeros_like(raw)
        if c == 0:
            plane[0::2, 0::2] = raw[0::2, 0::2]
        elif c == 2:
            plane[1::2, 1::2] = raw[1::2, 1::2]
        else:
            plane[0::2, 1::2] = raw[0::2, 1::2]
            plane[1::2, 0::2] = raw[1::2, 0::2]
        # mirror at the edges keeps the CFA phase (the row beyond the edge is
        # the row before it, which has the same colours as the one beyond).
        out[..., c] = ndimage.convolve(plane, kernel, mode="mirror")
    return out


def _apply_defects(raw, truth, rng, sensor_max, bayer):
    """Bad photosites, in sensor space (before clipping and demosaicing)."""
    for p in truth:
        idx = (p.y, p.x) if bayer or raw.ndim == 2 else (p.y, p.x, _CHANNEL[p.colour])
        if p.kind == "hot":
            # a hot photosite's extra charge has its own shot noise
            raw[idx] += p.level + rng.normal() * np.sqrt(p.level * _SHOT * 4)
        elif p.kind == "stuck":
            raw[idx] = p.level
        elif p.kind == "dead":
            raw[idx] = abs(rng.normal()) * 0.3 * (sensor_max / 255.0)
        else:  # noisy: a random telegraph, symmetric about the true value
            raw[idx] += p.level if rng.random() < 0.5 else -p.level


def apply_lines(raw, lines):
    """Add line defects to a sensor frame in place.

    Parameters
    ----------
    raw : numpy.ndarray
        ``(height, width[, ...])`` float frame.
    lines : sequence of tuple
        ``(kind, index, offset)`` or ``(kind, index, offset, start, stop)``:
        ``"column"`` or ``"row"``, its x or y, the offset, and optionally
        the first and last row (column) of the offset part.
    """
    for line in lines or ():
        kind, index, offset = line[:3]
        start, stop = (line[3], line[4] + 1) if len(line) > 3 else (0, None)
        if kind == "column":
            raw[start:stop, index] += offset
        else:
            raw[index, start:stop] += offset


def _photo(rng, lay, truth, bayer, bit_depth, lines=None):
    scene = _scene(rng, lay)
    raw = _mosaic(scene) if bayer else scene
    raw += rng.standard_normal(raw.shape, dtype=np.float32) * np.sqrt(
        _READ ** 2 + _SHOT * np.maximum(raw, 0))
    _apply_defects(raw, truth, rng, 255.0, bayer)
    apply_lines(raw, lines)
    np.clip(raw, 0, 255, out=raw)                    # the sensor saturates
    rgb = _demosaic(raw) if bayer else raw
    if lay.stamp.any():
        rgb[lay.stamp] = lay.stamp_colour            # burnt in after processing
    if bit_depth == 16:
        return np.clip(np.rint(rgb * 257.0), 0, 65535).astype(np.uint16)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _dark(rng, lay, truth, lines=None):
    h, w = lay.height, lay.width
    raw = DARK_BIAS + lay.glow + lay.dsnu
    raw = raw + rng.standard_normal((h, w), dtype=np.float32) * DARK_READ_NOISE
    apply_lines(raw, lines)
    for p in truth:
        if p.kind == "hot":
            # dark current: its own shot noise (gain 1 e-/ADU)
            raw[p.y, p.x] += p.level + rng.normal() * np.sqrt(p.level)
        elif p.kind == "stuck":
            raw[p.y, p.x] = p.level
        elif p.kind == "dead":
            raw[p.y, p.x] = 0.0
        else:
            raw[p.y, p.x] += p.level if rng.random() < 0.5 else -p.level
    return np.clip(np.rint(raw), 0, _DARK_WHITE).astype(np.uint16)


def simulate_frames(n, height, width, *, seed=0, defects=None, darks=False, stamp=True,
                    clipped=True, bayer=True, bit_depth=8, dead_any_colour=False, lines=None):
    """Simulated camera frames with planted photosite defects.

    Parameters
    ----------
    n : int
        Number of frames.
    height, width : int
        Frame size in pixels (at least 32x32).
    seed : int
        Seed: the same arguments give the same frames and the same truth.
    defects : dict or sequence of Planted, optional
        Counts per kind, keys ``"hot"``, ``"weak_hot"``, ``"stuck"``,
        ``"dead"``, ``"noisy"`` (missing keys take the defaults), placed at
        random; or explicit ``Planted`` records (their ``level`` may be None
        to draw one).  Default for photos: 3 hot, 3 weak hot, 2 stuck, 2 dead
        per 480x320 area; for dark frames: 3 hot, 4 weak hot, 3 noisy.
    darks : bool
        Dark frames (lens cap on) instead of photos.
    stamp : bool
        Burn a date stamp into the lower right corner of every photo.
    clipped : bool
        Add a sky that is blown out (clipped) in most photos.
    bayer : bool
        Photos through an RGGB mosaic and bilinear demosaicing (a defect
        spreads over 3x3 pixels); False: one value per channel per pixel,
        a defect hits one subpixel.
    bit_depth : int
        8 (uint8 photos) or 16 (uint16 photos, 8-bit values times 257).
        Dark frames are always uint16 (a 14-bit ADC).
    dead_any_colour : bool
        Dead photosites of any colour (default: green ones only, which JPEG
        shows best); red and blue ones are the hard case of 4:2:0 JPEG.
    lines : sequence of (str, int, float), optional
        Line defects ``(kind, index, offset[, start, stop])`` (see
        ``apply_lines``), added in sensor space to every frame (8-bit units
        for photos, ADU for dark frames).

    Returns
    -------
    frames : iterator of numpy.ndarray
        ``n`` frames, made lazily: (H, W, 3) uint8/uint16 RGB photos, or
        (H, W) uint16 dark frames.
    truth : list of Planted
        The planted defects.

    Raises
    ------
    HotPixelError
        On bad arguments, or when the defects do not fit.
    """
    if n < 1:
        raise HotPixelError(f"n must be at least 1, got {n}")
    if height < 32 or width < 32:
        raise HotPixelError(f"frames must be at least 32x32, got {width}x{height}")
    if bit_depth not in (8, 16):
        raise HotPixelError(f"bit_depth must be 8 or 16, got {bit_depth}")
    seeds = np.random.SeedSequence(seed).spawn(n + 1)
    rng = np.random.default_rng(seeds[0])
    lay = _Layout(rng, height, width, stamp=stamp, clipped=clipped, darks=darks)
    truth = _plant(rng, lay, defects, darks, dead_any_colour)

    def frames() -> Iterator[np.ndarray]:
        for i in range(n):
            frame_rng = np.random.default_rng(seeds[i + 1])
            if darks:
                yield _dark(frame_rng, lay, truth, lines)
            else:
                yield _photo(frame_rng, lay, truth, bayer, bit_depth, lines)

    return frames(), truth


_EXT = {"jpeg": ".jpg", "png": ".png", "tiff16": ".tif"}


def write_sample_set(outdir, n=24, *, width=480, height=320, fmt="jpeg", quality=92,
                     subsampling="4:2:0", seed=0, darks=False, n_hot=None, n_stuck=None,
                     n_dead=None, n_weak_hot=None, n_noisy=None, stamp=True,
                     clipped=True, exif=None, prefix="frame") -> SampleSet:
    """Write a simulated photo or dark-frame set to ``outdir``.

    Parameters
    ----------
    outdir : str or os.PathLike
        Directory for ``frame_0000.<ext>`` ... (created if missing).
    n : int
        Number of frames.
    width, height : int
        Frame size.
    fmt : {"jpeg", "png", "tiff16"}
        ``"jpeg"``: 8-bit RGB JPEG (``quality``, ``subsampling``); ``"png"``:
        8-bit RGB PNG, or 16-bit greyscale PNG for dark frames;
        ``"tiff16"``: 16-bit greyscale TIFF (dark frames only).
    quality : int
        JPEG quality (1-95).
    subsampling : {"4:4:4", "4:2:2", "4:2:0"}
        JPEG chroma subsampling.
    seed : int
        Seed of the simulation.
    darks : bool
        Dark frames instead of photos.
    n_hot, n_stuck, n_dead, n_weak_hot, n_noisy : int, optional
        Planted defects of each kind (None: the default of
        ``simulate_frames``).
    stamp, clipped : bool
        Date stamp and blown sky (photos only).
    exif : bytes or callable, optional
        An EXIF block for every JPEG (``camera.exif_bytes``), or
        ``exif(i)`` giving frame ``i``'s.
    prefix : str
        File names are ``<prefix>_0000.<ext>`` ...

    Returns
    -------
    SampleSet
        The paths, the planted truth, the decoded shape and ``kind``
        (``"photos"`` or ``"darks"``).

    Raises
    ------
    HotPixelError
        On a bad format/subsampling, or a format that cannot hold the frames.
    """
    if fmt not in _EXT:
        raise HotPixelError(f"unknown format {fmt!r}; expected one of {sorted(_EXT)}")
    if subsampling not in ("4:4:4", "4:2:2", "4:2:0"):
        raise HotPixelError(f"unknown subsampling {subsampling!r}; expected 4:4:4, 4:2:2 or 4:2:0")
    if darks and fmt == "jpeg":
        raise HotPixelError("dark frames are 16-bit: write them as 'tiff16' or 'png'")
    if fmt == "tiff16" and not darks:
        raise HotPixelError("'tiff16' holds 16-bit dark frames: use darks=True")
    counts = {"hot": n_hot, "weak_hot": n_weak_hot, "stuck": n_stuck, "dead": n_dead,
              "noisy": n_noisy}
    frames, truth = simulate_frames(
        n, height, width, seed=seed, defects={k: v for k, v in counts.items() if v is not None},
        darks=darks, stamp=stamp, clipped=clipped)
    os.makedirs(outdir, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        path = os.path.join(os.fspath(outdir), f"{prefix}_{i:04d}{_EXT[fmt]}")
        im = Image.fromarray(frame)
        if fmt == "jpeg":
            block = exif(i) if callable(exif) else exif
            im.save(path, "JPEG", quality=int(quality), subsampling=subsampling,
                    **({"exif": block} if block else {}))
        elif fmt == "png":
            im.save(path, "PNG")
        else:
            im.save(path, "TIFF")
        paths.append(path)
    shape = (height, width, 1 if darks else 3)
    return SampleSet(paths, truth, shape, "darks" if darks else "photos", fmt)


def make_photo_like(height, width, seed) -> np.ndarray:
    """One photo-like uint8 RGB frame, fast enough for 24 MP benchmarks.

    Smooth gradients and blobs, a fine texture and mild noise: JPEG encodes
    and decodes it at about the speed of a real photo (a flat or pure-noise
    frame would be unrealistically fast or slow).  No defects.

    Parameters
    ----------
    height, width : int
        Frame size.
    seed : int
        Seed (the same seed gives the same frame).

    Returns
    -------
    numpy.ndarray
        (height, width, 3) uint8.
    """
    rng = np.random.default_rng(seed)
    # Build at 1/8 resolution, where the scene's large structure lives, then
    # upsample; the full-size work is a few uint8/int16 passes.
    sh, sw = max(2, -(-height // 8)), max(2, -(-width // 8))
    yy = np.linspace(0, 1, sh, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, sw, dtype=np.float32)[None, :]
    small = np.empty((sh, sw, 3), dtype=np.float32)
    level = rng.uniform(60, 170)
    for c in range(3):
        small[..., c] = level * rng.uniform(0.7, 1.2) * (1 + rng.uniform(-0.5, 0.5) * (xx - 0.5)
                                                         + rng.uniform(-0.5, 0.5) * (yy - 0.5))
    for _ in range(6):
        cx, cy, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        small += blob[..., None] * rng.uniform(-60, 60, 3).astype(np.float32)
    small += rng.normal(0, 12, small.shape).astype(np.float32)   # coarse texture
    small = np.clip(small, 0, 255).astype(np.uint8)
    big = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)[:height, :width]
    # soften the 8x8 blocks a little and add fine-grain noise
    noise = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    out = big.astype(np.int16)
    out[1:] += out[:-1]
    out[1:] >>= 1
    out += noise
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)
