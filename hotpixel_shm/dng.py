"""Write small, uncompressed DNG files with planted sensor defects.

The files are for tests, samples and the comparison with LibRaw's own
finder: a plain TIFF writer (one IFD, one strip, little-endian) with the DNG
tags LibRaw needs to read a colour filter array mosaic back exactly. Nothing
here needs a third-party TIFF library; rawpy is needed only to *read* the
files back.

Coordinates are column ``x`` and row ``y``, 0-based, in the written mosaic;
LibRaw's ``raw_image_visible`` of these files is that mosaic unchanged (no
margins, no crop, no orientation).
"""
from __future__ import annotations

import os
import struct
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from .synth import apply_lines

__all__ = ["BAYER_PATTERNS", "XTRANS_PATTERN", "cfa_array", "write_dng", "write_raw_set",
           "simulate_raw_frames"]

#: CFA colour letters used in ``pattern`` strings and in ``truth`` records.
_COLOUR_CODES = {"R": 0, "G": 1, "B": 2}

#: The four 2x2 Bayer layouts, as strings read row by row.
BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")

#: A 6x6 X-Trans layout (the one of Fujifilm's X-Trans sensors), row by row.
XTRANS_PATTERN = (
    "GGRGGB"
    "GGBGGR"
    "BRGRBG"
    "GGBGGR"
    "GGRGGB"
    "RBGBRG"
)

#: Photosites kept free of planted defects around the synthetic lamp: the
#: reach of a 5x5 same-colour window in an X-Trans mosaic (6 * 2) plus 2.
_LAMP_CLEARANCE = 14

# TIFF field types
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10
_TYPE_FORMAT = {_BYTE: "B", _ASCII: "s", _SHORT: "H", _LONG: "I", _RATIONAL: "II", _SRATIONAL: "ii"}
_TYPE_SIZE = {_BYTE: 1, _ASCII: 1, _SHORT: 2, _LONG: 4, _RATIONAL: 8, _SRATIONAL: 8}


def _pattern_letters(pattern) -> Tuple[int, str]:
    """``(period, letters)`` of a pattern given as a string or a square array of letters."""
    if isinstance(pattern, str):
        letters = pattern.upper()
    else:
        arr = np.asarray(pattern)
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
            raise ValueError("a CFA pattern array must be square")
        letters = "".join(str(v) for v in arr.ravel()).upper()
    period = int(round(len(letters) ** 0.5))
    if period * period != len(letters) or period not in (2, 6):
        raise ValueError(f"CFA pattern {pattern!r}: expected 4 (2x2) or 36 (6x6) letters")
    bad = set(letters) - set(_COLOUR_CODES)
    if bad:
        raise ValueError(f"CFA pattern {pattern!r}: unknown colour letters {sorted(bad)}")
    return period, letters


def cfa_array(pattern: str, height: int, width: int, origin=(0, 0)) -> np.ndarray:
    """The colour (0 red, 1 green, 2 blue) of every photosite of a mosaic.

    Parameters
    ----------
    pattern : str
        Row-major letters of the repeating tile, e.g. ``"RGGB"`` or
        ``XTRANS_PATTERN``.
    height, width : int
        Mosaic size.
    origin : (int, int)
        ``(row, column)`` of the photosite where the tile starts (a DNG's
        ActiveArea top-left: the DNG CFA pattern is anchored there).

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` uint8 colour codes. Note that LibRaw numbers the
        second green of a Bayer tile 3; this array uses 1 for every green.
    """
    period, letters = _pattern_letters(pattern)
    tile = np.array([_COLOUR_CODES[c] for c in letters], dtype=np.uint8).reshape(period, period)
    tile = np.roll(tile, (origin[0] % period, origin[1] % period), axis=(0, 1))
    reps = (-(-height // period), -(-width // period))
    return np.tile(tile, reps)[:height, :width].copy()


def _entry(tag: int, typ: int, values) -> Tuple[int, int, int, bytes]:
    """One IFD entry as ``(tag, type, count, packed value bytes)``."""
    if typ == _ASCII:
        data = values.encode("ascii", "replace") + b"\0"
        return tag, typ, len(data), data
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if typ in (_RATIONAL, _SRATIONAL):
        flat: List[int] = []
        for num, den in values:
            flat += [int(num), int(den)]
        data = struct.pack("<" + _TYPE_FORMAT[typ][0] * len(flat), *flat)
        return tag, typ, len(values), data
    data = struct.pack("<" + _TYPE_FORMAT[typ] * len(values), *[int(v) for v in values])
    return tag, typ, len(values), data


def _rational(value: float) -> Tuple[int, int]:
    """A positive float as a TIFF rational (1/250 s stays 1/250)."""
    if value <= 0:
        return 0, 1
    if value < 1:
        inv = 1.0 / value
        if abs(inv - round(inv)) < 1e-6 * inv:
            return 1, int(round(inv))
    den = 1000000
    return int(round(value * den)), den


def _write_tiff(path, entries, pixels: bytes) -> None:
    """Write a one-IFD little-endian TIFF; ``entries`` excludes the strip offset tag."""
    entries = sorted(entries, key=lambda e: e[0])
    n_entries = len(entries) + 1           # + StripOffsets (273)
    ifd_offset = 8
    ifd_size = 2 + 12 * n_entries + 4
    extra_offset = ifd_offset + ifd_size
    # Values longer than 4 bytes live after the IFD, word-aligned as TIFF asks.
    extra = bytearray()
    placed = []
    for tag, typ, count, data in entries:
        if len(data) > 4:
            if len(extra) % 2:
                extra += b"\0"
            placed.append((tag, typ, count, data, extra_offset + len(extra)))
            extra += data
        else:
            placed.append((tag, typ, count, data, None))
    if len(extra) % 2:
        extra += b"\0"
    strip_offset = extra_offset + len(extra)
    placed.append((273, _LONG, 1, struct.pack("<I", strip_offset), None))
    placed.sort(key=lambda e: e[0])

    out = bytearray(b"II*\0" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", n_entries)
    for tag, typ, count, data, offset in placed:
        out += struct.pack("<HHI", tag, typ, count)
        out += struct.pack("<I", offset) if offset is not None else data.ljust(4, b"\0")
    out += struct.pack("<I", 0)            # no next IFD
    out += extra
    assert len(out) == strip_offset
    with open(path, "wb") as f:
        f.write(out)
        f.write(pixels)


def write_dng(path, mosaic: np.ndarray, *, pattern="RGGB", black=0, white=4095,
              make="Hotpixel", model="Simulated", margins=None, serial=None, colour_matrix=None,
              as_shot_neutral=None, orientation=1, datetime=None, exposure_time=None,
              f_number=None, iso=None, unique_model=None) -> None:
    """Write a CFA mosaic as an uncompressed 16-bit DNG.

    Parameters
    ----------
    path : str or os.PathLike
        File to write (overwritten).
    mosaic : numpy.ndarray
        ``(height, width)`` uint16 raw values, one per photosite.
    pattern : str, default "RGGB"
        Colour filter layout, row-major: a 2x2 Bayer layout (``BAYER_PATTERNS``)
        or a 6x6 one (``XTRANS_PATTERN``).
    black : int or sequence of int
        Black level: one value, or one per photosite of the CFA tile
        (row-major, 4 for Bayer, 36 for X-Trans; DNG BlackLevelRepeatDim).
    white : int
        White (saturation) level recorded in the file.
    make, model : str
        Camera make and model (TIFF Make/Model, DNG UniqueCameraModel).
    serial : str, optional
        The body's serial number (DNG CameraSerialNumber).
    margins : tuple of int, optional
        ``(top, left, bottom, right)`` photosites of ``mosaic`` outside the
        sensor's active area (DNG ActiveArea), like the masked borders of a
        real sensor; LibRaw then reports them as ``top_margin`` and
        ``left_margin`` and leaves them out of ``raw_image_visible``
        (rounding odd margins up to even ones for Bayer patterns).
        ``pattern`` is anchored at the active area's top-left photosite, as
        the DNG specification says and LibRaw and dcraw read it
        (``cfa_array(pattern, h, w, origin=(top, left))`` gives the colours).
    colour_matrix : 3x3 array-like of float, optional
        XYZ (D65) to camera matrix (DNG ColorMatrix1); default identity.
    as_shot_neutral : 3 floats, optional
        The white balance as the camera's neutral (DNG AsShotNeutral);
        default (1, 1, 1).
    orientation : int
        TIFF/EXIF Orientation (1 = as stored).
    datetime : str, optional
        Capture time ``"YYYY:MM:DD HH:MM:SS"`` (DateTime and DateTimeOriginal).
    exposure_time, f_number : float, optional
        Exposure in seconds and aperture (TIFF/EP ExposureTime, FNumber).
    iso : int, optional
        ISO speed (TIFF/EP ISOSpeedRatings).
    unique_model : str, optional
        DNG UniqueCameraModel; default ``"<make> <model>"``.

    Notes
    -----
    LibRaw (rawpy) reads these files back with ``raw_image_visible`` equal to
    ``mosaic`` (inside the margins), ``raw_pattern`` equal to ``pattern``
    (second Bayer green numbered 3) and ``white_level`` /
    ``black_level_per_channel`` as written. No DefaultCrop tags are written.
    """
    mosaic = np.asarray(mosaic)
    if mosaic.ndim != 2:
        raise ValueError(f"mosaic must be 2-D (height, width), got shape {mosaic.shape}")
    if mosaic.dtype != np.uint16:
        if mosaic.size and (mosaic.min() < 0 or mosaic.max() > 65535):
            raise ValueError("mosaic values must fit uint16")
        mosaic = mosaic.astype(np.uint16)
    height, width = mosaic.shape
    period, letters = _pattern_letters(pattern)
    blacks = [int(b) for b in np.atleast_1d(black)]
    if len(blacks) not in (1, period * period):
        raise ValueError(f"black must be one value or {period * period} (one per CFA tile photosite)")
    if not (0 <= min(blacks) and max(blacks) < white <= 65535):
        raise ValueError(f"need 0 <= black < white <= 65535, got black={black}, white={white}")
    cfa_codes = [_COLOUR_CODES[c] for c in letters]
    pixels = np.ascontiguousarray(mosaic, dtype="<u2").tobytes()
    # XYZ->camera; the identity by default (enough for LibRaw's colour set-up)
    matrix = np.eye(3) if colour_matrix is None else np.asarray(colour_matrix, dtype=float)
    colour_matrix = [(int(round(v * 10000)), 10000) for v in matrix.ravel()[:9]]
    neutral = (1.0, 1.0, 1.0) if as_shot_neutral is None else tuple(float(v) for v in as_shot_neutral)
    black_dim = (1, 1) if len(blacks) == 1 else (period, period)
    entries = [
        _entry(254, _LONG, 0),                      # NewSubfileType: main image
        _entry(256, _LONG, width),
        _entry(257, _LONG, height),
        _entry(258, _SHORT, 16),                    # BitsPerSample
        _entry(259, _SHORT, 1),                     # Compression: none
        _entry(262, _SHORT, 32803),                 # PhotometricInterpretation: CFA
        _entry(271, _ASCII, make),
        _entry(272, _ASCII, model),
        _entry(274, _SHORT, int(orientation)),      # Orientation
        _entry(277, _SHORT, 1),                     # SamplesPerPixel
        _entry(278, _LONG, height),                 # RowsPerStrip: one strip
        _entry(279, _LONG, len(pixels)),            # StripByteCounts
        _entry(284, _SHORT, 1),                     # PlanarConfiguration: chunky
        _entry(305, _ASCII, "hotpixel_shm"),        # Software
        _entry(33421, _SHORT, (period, period)),    # CFARepeatPatternDim
        _entry(33422, _BYTE, cfa_codes),            # CFAPattern
        _entry(50706, _BYTE, (1, 4, 0, 0)),         # DNGVersion
        _entry(50707, _BYTE, (1, 1, 0, 0)),         # DNGBackwardVersion
        _entry(50708, _ASCII, unique_model or f"{make} {model}"),  # UniqueCameraModel
        _entry(50710, _BYTE, (0, 1, 2)),            # CFAPlaneColor: R, G, B
        _entry(50711, _SHORT, 1),                   # CFALayout: rectangular
        _entry(50713, _SHORT, black_dim),           # BlackLevelRepeatDim
        _entry(50714, _LONG, blacks),               # BlackLevel
        _entry(50717, _LONG, int(white)),           # WhiteLevel
        _entry(50721, _SRATIONAL, colour_matrix),   # ColorMatrix1
        _entry(50728, _RATIONAL, [(int(round(v * 1000000)), 1000000) for v in neutral]),  # AsShotNeutral
        _entry(50778, _SHORT, 21),                  # CalibrationIlluminant1: D65
    ]
    if serial:
        entries.append(_entry(50735, _ASCII, str(serial)))  # CameraSerialNumber
    if datetime:
        entries.append(_entry(306, _ASCII, str(datetime)))        # DateTime
        entries.append(_entry(36867, _ASCII, str(datetime)))      # DateTimeOriginal (TIFF/EP)
    if exposure_time:
        num, den = _rational(float(exposure_time))
        entries.append(_entry(33434, _RATIONAL, [(num, den)]))    # ExposureTime
    if f_number:
        entries.append(_entry(33437, _RATIONAL, [_rational(float(f_number))]))  # FNumber
    if iso:
        entries.append(_entry(34855, _SHORT, int(iso)))           # ISOSpeedRatings
    if margins is not None:
        top, left, bottom, right = (int(v) for v in margins)
        if min(top, left, bottom, right) < 0 or top + bottom >= height or left + right >= width:
            raise ValueError(f"margins {margins} leave no active area in a {width}x{height} mosaic")
        # ActiveArea: top, left, bottom, right of the active area
        entries.append(_entry(50829, _LONG, (top, left, height - bottom, width - right)))
    _write_tiff(os.fspath(path), entries, pixels)


# ----------------------------------------------------------------------------
# Synthetic raw sets
# ----------------------------------------------------------------------------

def _smooth_noise(rng, height, width, scale):
    """A smooth random field in [0, 1]: coarse noise upsampled bilinearly."""
    gh, gw = max(2, height // scale + 2), max(2, width // scale + 2)
    coarse = rng.random((gh, gw), dtype=np.float32)
    field = ndimage.zoom(coarse, (height / gh, width / gw), order=1, mode="nearest",
                         grid_mode=True)
    return np.clip(field[:height, :width], 0.0, 1.0)


def _scene(rng, height, width):
    """One random RGB scene, linear, values in [0, 1]: gradients, blobs, edges, texture."""
    base = _smooth_noise(rng, height, width, max(8, min(height, width) // 4))
    tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    rgb = base[None] * tint[:, None, None]
    # a few flat rectangles and discs: sharp edges that move between photos
    for _ in range(rng.integers(3, 8)):
        colour = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        if rng.random() < 0.5:
            y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
            h, w = int(rng.integers(4, max(5, height // 2))), int(rng.integers(4, max(5, width // 2)))
            rgb[:, y0:y0 + h, x0:x0 + w] = colour[:, None, None]
        else:
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            r = rng.uniform(3, max(4, min(height, width) / 4))
            ya, yb = max(0, int(cy - r)), min(height, int(cy + r) + 1)
            xa, xb = max(0, int(cx - r)), min(width, int(cx + r) + 1)
            yy, xx = np.ogrid[ya:yb, xa:xb]
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            rgb[:, ya:yb, xa:xb][:, disc] = colour[:, None]
    # fine texture (foliage, fabric)
    texture = rng.random((height, width), dtype=np.float32) * np.float32(rng.uniform(0.0, 0.3))
    rgb *= (1.0 - texture)[None]
    # The lens: no optical image has independent detail from one photosite to
    # the next, and without this blur a lone bright photosite would be as
    # common in the scene as in the sensor.
    for c in range(3):
        ndimage.gaussian_filter(rgb[c], sigma=1.0, mode="nearest", output=rgb[c], truncate=3.0)
    rgb *= np.float32(rng.uniform(0.3, 1.2))
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def _pick_sites(rng, height, width, count, taken, margin=4):
    """``count`` distinct photosites, at least 3 photosites from each other and
    from ``taken`` (so that planted defects are never each other's neighbours)."""
    sites = []
    tries = 0
    while len(sites) < count:
        tries += 1
        if tries > 100000:
            raise ValueError("image too small for that many planted defects")
        y = int(rng.integers(margin, height - margin))
        x = int(rng.integers(margin, width - margin))
        if taken[max(0, y - 3):y + 4, max(0, x - 3):x + 4].any():
            continue
        taken[y, x] = True
        sites.append((y, x))
    return sites


def simulate_raw_frames(n=12, *, width=256, height=192, seed=0, n_hot=6, n_weak_hot=4,
                        n_stuck=3, n_dead=3, n_noisy=2, weak_range=(40.0, 80.0), white=4095,
                        black=64, clipped=True, darks=False, pattern="RGGB", margins=None,
                        lines=None):
    """The raw mosaics of ``write_raw_set``, as arrays (made lazily), and the truth.

    Parameters are those of ``write_raw_set``, and ``lines``: line defects
    in raw units (see ``hotpixel_shm.synth.apply_lines``).

    Returns
    -------
    frames : iterator of numpy.ndarray
        ``n`` (height, width) uint16 mosaics.
    truth : list of dict
        As ``write_raw_set``.
    """
    rng = np.random.default_rng(seed)
    if n < 1:
        raise ValueError("n must be at least 1")
    if height < 16 or width < 16:
        raise ValueError("the mosaic must be at least 16x16")
    top, left, bottom, right = (int(v) for v in (margins or (0, 0, 0, 0)))
    cfa = cfa_array(pattern, height, width, origin=(top, left))
    letters = "RGB"
    span = white - black

    taken = np.zeros((height, width), dtype=bool)
    if margins is not None:
        # keep defects off the margins and off the photosites LibRaw drops
        # when it rounds odd margins up
        taken[:top + 2] = taken[height - bottom - 1:] = True
        taken[:, :left + 2] = taken[:, width - right - 1:] = True
    lamp = np.zeros((height, width), dtype=bool)
    if clipped and not darks:
        # A lamp in the upper left quarter: a disc plus a square-cornered
        # block, so the clipped edge has straight runs and corners.
        yy, xx = np.ogrid[0:height, 0:width]
        cy, cx, r = height // 4, width // 4, max(4, min(height, width) // 12)
        lamp = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
        lamp |= (yy >= cy) & (yy < cy + r + 4) & (xx >= cx) & (xx < cx + r + 4)
        # keep planted defects well away from the lamp, so "nothing reported
        # at the lamp" and "every planted defect found" are both exact
        taken |= ndimage.maximum_filter(lamp, size=2 * _LAMP_CLEARANCE + 1)

    kinds = ([("hot", "hot")] * n_hot + [("hot", "weak_hot")] * n_weak_hot
             + [("stuck", "stuck_white" if i == 0 else "stuck") for i in range(n_stuck)]
             + [("dead", "dead")] * n_dead + [("noisy", "noisy")] * n_noisy)
    sites = _pick_sites(rng, height, width, len(kinds), taken)
    truth: List[Dict] = []
    for (y, x), (kind, label) in zip(sites, kinds):
        if label == "hot":
            value = float(rng.uniform(600, 1500))
        elif label == "weak_hot":
            value = float(rng.uniform(*weak_range))
        elif label == "stuck_white":
            value = float(white)
        elif label == "stuck":
            value = float(rng.integers(black + span // 3, black + 3 * span // 4))
        elif label == "dead":
            value = float(black)
        else:  # noisy: random telegraph between the scene and scene + a jump
            value = float(rng.uniform(400, 900))
        truth.append({"x": x, "y": y, "kind": kind, "colour": letters[cfa[y, x]],
                      "label": label, "value": value})

    def frames():
        cfa_index = cfa[None].astype(np.intp)
        gain = 4.0        # electrons per raw unit: shot-noise variance = signal / gain
        read_noise = 3.0  # raw units
        for i in range(n):
            exposure = rng.uniform(0.5, 1.5)
            if darks:
                signal = np.zeros((height, width), dtype=np.float32)
            else:
                rgb = _scene(rng, height, width)
                signal = np.take_along_axis(rgb, cfa_index, axis=0)[0] * np.float32(span)
            for t in truth:
                if t["kind"] == "hot":
                    signal[t["y"], t["x"]] += t["value"] * exposure
            sigma = np.sqrt(signal / np.float32(gain) + np.float32(read_noise ** 2))
            raw = signal + rng.standard_normal(signal.shape, dtype=np.float32) * sigma
            raw += np.float32(black)
            apply_lines(raw, lines)
            if lamp.any():
                raw[lamp] = white
            for t in truth:
                y, x = t["y"], t["x"]
                if t["kind"] == "stuck":
                    raw[y, x] = t["value"] if t["label"] == "stuck_white" else t["value"] + rng.normal(0, 0.5)
                elif t["kind"] == "dead":
                    raw[y, x] = black
                elif t["kind"] == "noisy" and rng.random() < 0.5:
                    raw[y, x] += t["value"]
            yield np.clip(np.rint(raw), 0, white).astype(np.uint16)

    return frames(), truth


def write_raw_set(outdir, n=12, *, width=256, height=192, seed=0, n_hot=6, n_weak_hot=4,
                  n_stuck=3, n_dead=3, n_noisy=2, weak_range=(40.0, 80.0), white=4095, black=64,
                  clipped=True,
                  darks=False, pattern="RGGB", make="Hotpixel", model="Simulated", margins=None):
    """Write ``n`` DNG photos of varied scenes with planted photosite defects.

    Parameters
    ----------
    outdir : str or os.PathLike
        Directory to write ``raw_000.dng`` ... into (created if missing).
    n : int
        Number of photos.
    width, height : int
        Mosaic size in photosites (even numbers keep the Bayer tile whole).
    seed : int
        Seed of the random generator: the same arguments give the same files.
    n_hot, n_weak_hot, n_stuck, n_dead, n_noisy : int
        Planted defects of each kind. Hot sites add a large dark-current
        offset; weak (warm) hot sites a small one, below what one photo shows
        against texture; stuck sites read a fixed value whatever the scene
        (the first one *at the white level*); dead sites read the black level;
        noisy sites jump between two levels at random. Dead sites cannot be
        told from dark frames (everything reads black there).
    weak_range : (float, float)
        Offsets of the weak hot sites, in raw units, drawn uniformly.
    white, black : int
        White (saturation) and black levels written into the files.
    clipped : bool
        Add a bright lamp, clipped to ``white`` in every photo at the same
        place, whose photosites are all saturated (must not be reported).
        Never in dark frames.
    darks : bool
        Dark frames (lens cap on, long exposure) instead of scenes: black level,
        read noise and the defects only.
    pattern : str
        CFA layout (see ``write_dng``).
    make, model : str
        Camera make and model written into every file.
    margins : tuple of int, optional
        ``(top, left, bottom, right)``: masked borders outside the DNG
        ActiveArea (see ``write_dng``); ``width`` and ``height`` are then the
        full mosaic's, the CFA pattern starts at the active area and no
        defect is planted within 2 photosites of the margins.

    Returns
    -------
    paths : list of str
        The written files, in order.
    truth : list of dict
        One record per planted defect: ``x``, ``y`` (photosite column/row of
        the full mosaic, margins included),
        ``kind`` (``"hot"``, ``"stuck"``, ``"dead"``, ``"noisy"``), ``colour``
        (``"R"``, ``"G"``, ``"B"``), ``label`` (``"hot"``, ``"weak_hot"``,
        ``"stuck"``, ``"stuck_white"``, ``"dead"``, ``"noisy"``) and ``value``
        (the planted offset or level, in raw units).

    Notes
    -----
    Noise model: shot noise with a gain of 4 electrons per raw unit plus a
    read noise of 3 raw units, then rounding and clipping to
    ``[0, white]``. A hot site's offset scales with a per-photo exposure
    factor in [0.5, 1.5] like dark current does; strong hot offsets are
    600-1500 raw units, weak ones 40-80 by default (1-2% of the range: a
    few shot-noise sigmas in one photo, so a per-photo test against the
    neighbours sees them in some photos and not in others).
    """
    os.makedirs(outdir, exist_ok=True)
    frames, truth = simulate_raw_frames(
        n, width=width, height=height, seed=seed, n_hot=n_hot, n_weak_hot=n_weak_hot,
        n_stuck=n_stuck, n_dead=n_dead, n_noisy=n_noisy, weak_range=weak_range, white=white,
        black=black, clipped=clipped, darks=darks, pattern=pattern, margins=margins)
    paths = []
    for i, mosaic in enumerate(frames):
        path = os.path.join(os.fspath(outdir), f"raw_{i:03d}.dng")
        write_dng(path, mosaic, pattern=pattern, black=black, white=white, make=make, model=model,
                  margins=margins)
        paths.append(path)
    return paths, truth
