"""Find the photos, read their headers, decode one frame, say why a file is skipped.

Pixels are used exactly as stored: the EXIF orientation tag is never applied,
so coordinates are those of the sensor readout.
"""
from __future__ import annotations

import collections
import glob
import os
import stat
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from .camera import UNKNOWN, Camera, Shot, from_pillow
from .errors import HotPixelError, SkipFile

try:  # libjpeg-turbo straight into a reused buffer: about 2x Pillow for JPEG
    import simplejpeg
except ImportError:  # pragma: no cover - optional fast path
    simplejpeg = None

__all__ = [
    "IMAGE_EXTENSIONS", "Header", "expand_paths", "probe", "probe_all",
    "reference_shape", "match_loaded", "decode", "describe_key", "DEFAULT_MAX_PIXELS",
]

#: Extensions looked for inside directories (files named explicitly are always tried).
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp",
})
#: Pillow's own default decompression-bomb limit.
DEFAULT_MAX_PIXELS = 89_478_485

_GLOB_CHARS = set("*?[")

# Pillow mode -> (channels, sample dtype, how to turn the array into (h, w, c))
_MODES = {
    "RGB": (3, np.uint8),
    "RGBA": (3, np.uint8),   # alpha dropped
    "RGBX": (3, np.uint8),
    "L": (1, np.uint8),
    "LA": (1, np.uint8),     # alpha dropped
    "I;16": (1, np.uint16),
    "I;16L": (1, np.uint16),
    "I;16B": (1, np.uint16),
    "I;16N": (1, np.uint16),
}


def _raw_module():
    """The raw reader, or None when this build has no raw support module."""
    try:
        from . import rawio
    except ImportError:  # pragma: no cover
        return None
    return rawio


def _is_raw(path: str) -> bool:
    rawio = _raw_module()
    return rawio is not None and rawio.is_raw_path(path)


def _wanted_in_dir(name: str) -> bool:
    ext = os.path.splitext(name)[1].lower()
    return ext in IMAGE_EXTENSIONS or _is_raw(name)


def expand_paths(args, recursive: bool = False) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Turn command-line paths into a sorted list of files.

    Parameters
    ----------
    args : iterable of str
        Files, directories (their image files; all levels with ``recursive``)
        and glob patterns, expanded here so that quoted patterns work.
    recursive : bool
        Descend into sub-directories (symbolic links to directories are
        followed once; a loop is reported, not followed).

    Returns
    -------
    files : list of str
        Sorted, each file once (duplicates by real path removed).
    skipped : list of (str, str)
        Arguments that gave nothing, with the reason.
    """
    files: List[str] = []
    skipped: List[Tuple[str, str]] = []
    for arg in args:
        arg = os.fspath(arg)
        if os.path.isdir(arg):
            found, loops = _scan_dir(arg, recursive)
            skipped.extend(loops)
            if not found and not loops:
                skipped.append((arg, "directory holds no image files"
                                + ("" if recursive else " (use --recursive to descend)")))
            files.extend(found)
        elif os.path.lexists(arg):
            files.append(arg)
        elif _GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(arg, recursive=recursive))
            found = [m for m in matches if not os.path.isdir(m)]
            if not found:
                skipped.append((arg, "no file matches this pattern"))
            files.extend(found)
        else:
            skipped.append((arg, "no such file or directory"))
    seen = set()
    unique = []
    for f in sorted(files):
        key = os.path.realpath(f)
        if key in seen:
            continue
        seen.add(key)
        unique.append(f)
    return unique, skipped


def _scan_dir(top: str, recursive: bool):
    found, loops = [], []
    visited = set()

    def walk(d):
        try:
            st = os.stat(d)
        except OSError as exc:
            loops.append((d, f"cannot read directory: {exc.strerror or exc}"))
            return
        key = (st.st_dev, st.st_ino)
        if key in visited:
            loops.append((d, "symbolic link loop (directory already visited); not followed"))
            return
        visited.add(key)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            loops.append((d, f"cannot read directory: {exc.strerror or exc}"))
            return
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                if recursive:
                    walk(e.path)
            elif _wanted_in_dir(e.name):
                found.append(e.path)

    walk(top)
    return found, loops


@dataclass
class Header:
    """What is known about one input without decoding its pixels."""

    path: str
    shape: Tuple[int, int, int]
    dtype: str                 # "uint8" or "uint16"
    format: str                # "JPEG", "PNG", "RAW", ...
    mode: str                  # Pillow mode, or "raw"
    file_bytes: int
    make: Optional[str] = None
    model: Optional[str] = None
    #: for raw files, what LibRaw said at open time (``rawio.RawInfo``)
    raw_info: Optional[object] = field(default=None, repr=False, compare=False)
    #: the body that took it (``camera.UNKNOWN`` when not recorded)
    camera: Camera = UNKNOWN
    #: when and how it was taken
    shot: Shot = field(default_factory=Shot)
    #: why the camera metadata could not be read, if it could not
    metadata_problem: Optional[str] = None

    @property
    def key(self):
        return (self.shape, self.dtype)

    def mosaic(self, unpack: bool = True):
        """The raw file's colour filter array (``model.Mosaic``), None for photos
        (and, with ``unpack`` False, when it needs an unpack to be known)."""
        return None if self.raw_info is None else self.raw_info.mosaic(unpack)


def _file_problem(path: str) -> Optional[str]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file (or a broken symbolic link)"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    if not os.access(path, os.R_OK):
        return "cannot read: permission denied"
    return None


def probe(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Read one file's header (no pixel decoding).

    Raises
    ------
    SkipFile
        With the reason the file cannot be used.
    """
    problem = _file_problem(path)
    if problem:
        raise SkipFile(problem)
    size = os.path.getsize(path)
    if _is_raw(path):
        rawio = _raw_module()
        info = rawio.probe_raw(path)
        cam = Camera(info.make, info.model, info.serial) if (info.make or info.model) else UNKNOWN
        shot = Shot(info.taken, info.iso, info.exposure)
        return Header(path, tuple(info.shape), "uint16", "RAW", "raw", size, cam.make, cam.model,
                      raw_info=info, camera=cam, shot=shot)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise SkipFile(f"cannot read: {exc.strerror or exc}") from None
    with fh, _pillow(max_pixels), warnings.catch_warnings(record=True) as caught:
        # Pillow reads a JPEG's EXIF block while opening it and warns when it is
        # damaged: that is a reason for the camera being unknown, not noise
        warnings.simplefilter("always", UserWarning)
        with Image.open(fh) as im:
            w, h = im.size
            fmt = im.format or "?"
            # EXIF sits in the header of these; elsewhere (PNG) reading it may decode the pixels
            cam, shot, problem = (from_pillow(im) if fmt in ("JPEG", "MPO", "TIFF", "WEBP")
                                  else (UNKNOWN, Shot(), None))
            mode, c, dt = _resolve_mode(im)
    damaged = [w for w in caught if issubclass(w.category, UserWarning)]
    if damaged and problem is None:
        problem = f"damaged EXIF block ({str(damaged[0].message).strip()})"
    return Header(path, (h, w, c), dt.name, fmt, mode, size, cam.make, cam.model,
                  camera=cam, shot=shot, metadata_problem=problem)


def _resolve_mode(im):
    """(mode, channels, sample dtype) of an open Pillow image, or SkipFile."""
    mode = im.mode
    if mode == "I" and im.format in ("PNG", "TIFF"):
        # Pillow may open 16-bit grayscale as 32-bit "I"; the values still fit uint16
        mode = "I;16"
    if mode not in _MODES:
        raise SkipFile(f"unsupported colour mode {mode} ({_mode_hint(mode)})")
    c, dt = _MODES[mode]
    return mode, c, np.dtype(dt)


def _mode_hint(mode):
    return {
        "CMYK": "CMYK print files are not camera photos",
        "P": "palette images hold no sensor values",
        "1": "bilevel images hold no sensor values",
        "F": "floating-point images are not supported",
        "I": "32-bit integer images are not supported",
        "YCbCr": "convert to RGB first",
    }.get(mode, "supported: RGB, RGBA, L, 16-bit grayscale")


def _bomb_reason(exc, max_pixels):
    return (f"image too large: over {max_pixels:,} pixels, refused as a possible "
            f"decompression bomb (raise --max-pixels to allow it)")


class _pillow:
    """Open/decode with Pillow under our pixel limit (its bomb warning made an
    error) and turn every Pillow failure into a SkipFile with a reason."""

    def __init__(self, max_pixels):
        self.max_pixels = max_pixels

    def __enter__(self):
        self._old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = self.max_pixels
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return self

    def __exit__(self, etype, exc, tb):
        self._w.__exit__(etype, exc, tb)
        Image.MAX_IMAGE_PIXELS = self._old
        if exc is None or isinstance(exc, (SkipFile, MemoryError)) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            reason = _bomb_reason(exc, self.max_pixels)
        elif isinstance(exc, Image.UnidentifiedImageError):
            reason = "not an image file Pillow can read"
        elif isinstance(exc, OSError) and "truncated" in str(exc).lower():
            reason = f"truncated image file: {exc}"
        elif isinstance(exc, OSError):
            reason = f"cannot decode: {exc}"
        elif isinstance(exc, (ValueError, SyntaxError, EOFError)):
            reason = f"corrupt image data: {exc}"
        else:  # any other decoder bug is one skipped file
            reason = f"decoder error: {type(exc).__name__}: {exc}"
        raise SkipFile(reason) from None


def probe_all(files, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Probe every file; returns (headers, skipped) with skip reasons."""
    headers, skipped = [], []
    for f in files:
        try:
            headers.append(probe(f, max_pixels))
        except SkipFile as exc:
            skipped.append((f, str(exc)))
    return headers, skipped


def reference_shape(headers):
    """The most common (shape, dtype) among the headers; ties go to the one
    seen first in sorted path order.  Returns (shape, dtype, used, skipped)."""
    if not headers:
        return None, None, [], []
    counts = collections.Counter(h.key for h in headers)
    best = max(counts.values())
    for h in headers:
        if counts[h.key] == best:
            key = h.key
            break
    shape, dtype = key
    used = [h for h in headers if h.key == key]
    skipped = []
    for h in headers:
        if h.key != key:
            skipped.append((h.path, f"size {describe_key(h.key)} differs from the reference "
                                    f"{describe_key(key)} of {best} other file(s)"))
    return shape, dtype, used, skipped


def match_loaded(headers, shape, dtype):
    """The headers that can be merged with loaded statistics of ``shape`` and
    sample ``dtype``: (used, skipped), the others skipped with the reason.

    Raises
    ------
    HotPixelError
        There are photos, and none of them can be merged.
    """
    key = (tuple(shape), str(dtype))
    want = describe_key(key)
    used = [h for h in headers if h.key == key]
    skipped = [(h.path, f"size {describe_key(h.key)} differs from the loaded statistics ({want})")
               for h in headers if h.key != key]
    if headers and not used:
        raise HotPixelError(f"the photos ({describe_key(headers[0].key)}) cannot be "
                            f"merged with the loaded statistics ({want})")
    return used, skipped


def describe_key(key):
    """'6000x4000 8-bit RGB' for a ((h, w, c), dtype) key."""
    (h, w, c), dt = key
    kind = {1: "gray", 3: "RGB"}.get(c, f"{c}ch")
    bits = "16-bit" if dt == "uint16" else "8-bit"
    return f"{w}x{h} {bits} {kind}"


def decode(path: str, shape, dtype, out: np.ndarray = None,
           max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode one image into ``out`` (shape ``shape``, ``dtype``) and return it.

    JPEGs go through simplejpeg straight into ``out`` when possible; all other
    formats, and JPEGs simplejpeg refuses, through Pillow.  Both use the
    accurate integer DCT and smooth chroma upsampling, so they give the same
    pixels.

    Raises
    ------
    SkipFile
        Unreadable, truncated, or not of the reference shape/dtype.
    """
    shape = tuple(shape)
    dt = np.dtype(dtype)
    if out is None:
        out = np.empty(shape, dt)
    problem = _file_problem(path)
    if problem:
        raise SkipFile(problem)
    if _is_raw(path):
        rawio = _raw_module()
        if shape[2] != 1 or dt != np.uint16:
            raise SkipFile(f"a raw mosaic (16-bit, one channel) differs from the reference "
                           f"{describe_key((shape, dt.name))}")
        return rawio.read_raw(path, out=out)  # raises SkipFile on another size
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise SkipFile(f"cannot read: {exc.strerror or exc}") from None
    if simplejpeg is not None and data[:3] == b"\xff\xd8\xff" and dt == np.uint8:
        got = _decode_simplejpeg(data, shape, out)
        if got is not None:
            return got
    return _decode_pillow(path, data, shape, dt, out, max_pixels)


def _decode_simplejpeg(data, shape, out):
    try:
        h, w, cs, _sub = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # let Pillow give the reason
    c = shape[2]
    if cs not in ("Gray", "YCbCr", "RGB") or (h, w) != shape[:2]:
        return None
    if (c == 1) != (cs == "Gray"):
        return None  # a colour mismatch: Pillow reports it
    colorspace = "GRAY" if c == 1 else "RGB"
    try:
        simplejpeg.decode_jpeg(data, colorspace=colorspace, fastdct=False,
                               fastupsample=False, buffer=out, strict=True)
    except ValueError as exc:
        msg = str(exc)
        if "buffer" in msg.lower() or "not supported" in msg.lower():
            return None
        raise SkipFile(f"corrupt or truncated JPEG: {msg}") from None
    return out


def _decode_pillow(path, data, shape, dt, out, max_pixels):
    import io
    with _pillow(max_pixels), warnings.catch_warnings():
        # a damaged EXIF block was reported by the probe; the pixels are fine
        warnings.simplefilter("ignore", UserWarning)
        im = Image.open(io.BytesIO(data))
    with _pillow(max_pixels), im:
        mode, c, mdt = _resolve_mode(im)
        w, h = im.size
        _check_shape((h, w, c), mdt, shape, dt)
        im.load()
        arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.shape[2] > shape[2]:
        arr = arr[:, :, :shape[2]]  # drop alpha / padding
    if mode == "I;16" and arr.dtype != np.uint16:
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise SkipFile("32-bit values outside the 16-bit range")
    np.copyto(out, arr, casting="unsafe")
    return out


def _check_shape(got_shape, got_dtype, shape, dt):
    if tuple(got_shape) != tuple(shape) or np.dtype(got_dtype) != np.dtype(dt):
        raise SkipFile(f"size {describe_key((tuple(got_shape), np.dtype(got_dtype).name))} differs "
                       f"from the reference {describe_key((tuple(shape), np.dtype(dt).name))}")
