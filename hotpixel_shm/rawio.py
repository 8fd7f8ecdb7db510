"""Read camera raw files (via the optional rawpy/LibRaw) as one-channel mosaics.

A raw file is read as LibRaw's *visible* raw area, ``raw_image_visible``: one
value per photosite, shape ``(height, width, 1)`` uint16, no demosaic, no
black subtraction, no white balance, no orientation. Coordinates are column
``x`` and row ``y``, 0-based, in that array -- LibRaw's frame, counted from
its left and top margins. dcraw and RawTherapee may count from other margins
(``frames.py`` works out each program's frame from these margins and the
file's own metadata).

rawpy is an optional extra (``pip install 'hotpixel_shm[raw]'``). Without it
this module still imports; every read raises ``SkipFile`` with the install
hint, so a run over a mixed folder skips the raw files and goes on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .errors import SkipFile

__all__ = [
    "RAW_EXTENSIONS", "INSTALL_HINT", "RawInfo", "have_rawpy", "is_raw_path",
    "probe_raw", "read_raw", "colour_name",
]

#: File name extensions (lower case) of the raw formats LibRaw reads.
RAW_EXTENSIONS = frozenset({
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2",
    ".raf", ".orf", ".rw2", ".rwl", ".pef", ".ptx", ".srw", ".3fr", ".fff",
    ".iiq", ".mef", ".mos", ".mrw", ".x3f", ".erf", ".kdc", ".dcr", ".raw",
    ".gpr",
})

#: The skip reason when rawpy is missing.
INSTALL_HINT = "raw file support needs rawpy: pip install 'hotpixel_shm[raw]'"


def _rawpy():
    """The rawpy module, or ``SkipFile`` with the install hint."""
    try:
        import rawpy
    except ImportError:
        raise SkipFile(INSTALL_HINT) from None
    return rawpy


def have_rawpy() -> bool:
    """Whether raw files can be read here (rawpy imports).

    Returns
    -------
    bool
    """
    try:
        _rawpy()
    except SkipFile:
        return False
    return True


def is_raw_path(path) -> bool:
    """Whether ``path`` names a raw file, judged by its extension only.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    bool
    """
    return os.path.splitext(os.fspath(path))[1].lower() in RAW_EXTENSIONS


@dataclass
class RawInfo:
    """What a raw file is, read from its header.

    ``shape``, ``make``, ``model`` and ``colour_desc`` come from LibRaw's
    header parse (no pixel data read), and so do the CFA tile and white
    level behind :meth:`mosaic` where rawpy gives them at open time. The full
    ``cfa`` map, ``pattern`` and ``black_level`` are read with an unpack on
    first use -- one decode of this file -- and kept.

    Attributes
    ----------
    path : str
        The file.
    shape : tuple
        ``(height, width, 1)`` of the visible raw area.
    dtype : str
        Always ``"uint16"``.
    make, model : str or None
        Camera make and model from the file's TIFF/CR3/RAF header, None if
        not found.
    colour_desc : str
        LibRaw's colour letters, indexed by CFA colour index (e.g. ``"RGBG"``:
        0 red, 1 green, 2 blue, 3 second green).
    cfa : numpy.ndarray
        ``(height, width)`` uint8 colour index of every visible photosite
        (LibRaw's ``raw_colors_visible``).
    pattern : numpy.ndarray
        The smallest repeating tile of colour indices (2x2 Bayer, 6x6
        X-Trans), anchored at the raw image's top-left photosite
        (``raw_pattern``); ``cfa`` is the one to index with ``(y, x)``.
    black_level : list of int
        Black level per colour index (``black_level_per_channel``).
    white_level : int
        Saturation level (``white_level``).
    top_margin, left_margin : int
        Where the visible area starts in the full raw mosaic (LibRaw's
        ``sizes.top_margin`` / ``left_margin``, after its own rounding of odd
        margins).
    iso, exposure, taken : float, float, str or None
        ISO, exposure time (s) and capture time (ISO 8601, the camera's
        clock) from the header's Exif IFD, else from LibRaw.
    serial : str or None
        The body's serial (EXIF BodySerialNumber, else DNG CameraSerialNumber).
    """

    path: str
    shape: Tuple[int, int, int]
    dtype: str
    make: Optional[str]
    model: Optional[str]
    colour_desc: str
    top_margin: int = 0
    left_margin: int = 0
    _detail: Optional[dict] = field(default=None, repr=False, compare=False)
    #: the CFA tile at the visible area's top-left and the white level, when
    #: LibRaw gave them at open time (no unpack); else from the lazy detail
    _tile: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    _white: Optional[int] = field(default=None, repr=False, compare=False)
    #: what LibRaw read of the shot: ISO, exposure time (s), capture time
    #: (ISO 8601, local clock); None where the file holds none
    iso: Optional[float] = None
    exposure: Optional[float] = None
    taken: Optional[str] = None
    #: the body's serial number (EXIF BodySerialNumber or DNG CameraSerialNumber)
    serial: Optional[str] = None

    def _load(self) -> dict:
        if self._detail is None:
            self._detail = _read_detail(self.path, self.shape)
        return self._detail

    @property
    def cfa(self) -> np.ndarray:
        return self._load()["cfa"]

    @property
    def pattern(self) -> np.ndarray:
        return self._load()["pattern"]

    @property
    def black_level(self) -> List[int]:
        return self._load()["black_level"]

    @property
    def white_level(self) -> int:
        if self._white is not None and self._detail is None:
            return self._white
        return self._load()["white_level"]

    def mosaic(self, unpack: bool = True):
        """The colour filter array as statistics keep it (a ``model.Mosaic``).

        Read at probe time where LibRaw gives the layout without unpacking
        (rawpy 0.28 does); else from one unpack of the file, or None when
        ``unpack`` is False.
        """
        from .model import Mosaic
        tile = self._tile
        if tile is None:
            if not unpack and self._detail is None:
                return None
            tile = _tile_of(self.cfa, self.pattern.shape[0])
        return Mosaic(tile=tile, colour_desc=self.colour_desc or "RGBG",
                      white_level=self.white_level)


def _libraw_reason(exc, rawpy, stage: str, path: str) -> str:
    """A one-line, human reason for a LibRaw failure."""
    msg = exc.args[0] if exc.args else ""
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    if isinstance(exc, rawpy.LibRawFileUnsupportedError):
        return "not a raw file LibRaw can read (unsupported format, or not a raw file)"
    if isinstance(exc, rawpy.LibRawIOError):
        if stage == "open":
            if not os.path.exists(path):
                return "no such file"
            try:
                if os.path.getsize(path) == 0:
                    return "empty file"
            except OSError:
                pass
            return "cannot read the raw file (missing, unreadable or truncated header)"
        return "truncated or corrupt raw data (LibRaw: input/output error while decoding)"
    if isinstance(exc, rawpy.LibRawDataError):
        return "corrupt raw data (LibRaw reported data errors)"
    if isinstance(exc, (rawpy.LibRawTooBigError, rawpy.LibRawUnsufficientMemoryError)):
        return "raw image too big to decode in memory"
    return f"LibRaw cannot decode it: {msg or type(exc).__name__}"


def _open(path: str, unpack: bool):
    """An open rawpy.RawPy (caller closes it), or ``SkipFile``."""
    rawpy = _rawpy()
    raw = rawpy.RawPy()
    stage = "open"
    try:
        raw.open_file(path)
        if unpack:
            stage = "unpack"
            raw.unpack()
    except rawpy.LibRawError as exc:
        raw.close()
        raise SkipFile(_libraw_reason(exc, rawpy, stage, path)) from None
    except OSError as exc:  # rawpy turns positive LibRaw codes (errno) into OSError
        raw.close()
        raise SkipFile(f"cannot read the raw file: {exc.strerror or exc}") from None
    return raw


def _flat_or_skip(raw, rawpy) -> None:
    """Raise ``SkipFile`` for raws with no one-value-per-photosite mosaic."""
    if raw.raw_type != rawpy.RawType.Flat:
        raise SkipFile("not a mosaic raw (Foveon, sRAW/mRAW or linear DNG): "
                       "photosite defects need the undemosaiced sensor data")


def probe_raw(path) -> RawInfo:
    """Read a raw file's header: size, make, model, colours.

    Parameters
    ----------
    path : str or os.PathLike
        The raw file.

    Returns
    -------
    RawInfo
        ``cfa``, ``pattern``, ``black_level`` and ``white_level`` are read
        lazily (they need one decode of the file).

    Raises
    ------
    SkipFile
        rawpy missing (the reason says how to install it), or the file is not
        a raw file LibRaw reads, or is corrupt.

    Notes
    -----
    LibRaw's ``open_file`` parses the metadata without decoding pixels; that
    is all this function asks of it. Make and model are read from the file's
    own header because rawpy does not expose LibRaw's.
    """
    path = os.fspath(path)
    raw = _open(path, unpack=False)
    try:
        s = raw.sizes
        desc = raw.color_desc
        shape = (int(s.height), int(s.width), 1)
        tile, white = _layout_at_open(raw, s)
        margins = (int(s.top_margin), int(s.left_margin))
        iso, exposure, taken = _shot_at_open(raw)
    finally:
        raw.close()
    if shape[0] == 0 or shape[1] == 0:
        raise SkipFile("LibRaw found no image in this raw file")
    cam, shot = _header_camera(path)
    desc = desc.decode("ascii", "replace") if isinstance(desc, bytes) else str(desc)
    if not _valid_tile(tile, desc.rstrip("\0")):
        tile = _dng_tile(path, *margins)
    return RawInfo(path=path, shape=shape, dtype="uint16", make=cam.make, model=cam.model,
                   colour_desc=desc.rstrip("\0"), _tile=tile, _white=white,
                   top_margin=margins[0], left_margin=margins[1],
                   iso=shot.iso or iso, exposure=shot.exposure or exposure,
                   taken=shot.taken or taken, serial=cam.serial)


def _shot_at_open(raw):
    """(ISO, exposure seconds, capture time) LibRaw parsed, each None if absent."""
    try:
        other = raw.other
    except Exception:  # noqa: BLE001 - older rawpy without ``other``
        return None, None, None
    iso = float(other.iso_speed) if other.iso_speed and other.iso_speed > 0 else None
    exposure = (float(other.shutter_speed) if other.shutter_speed and other.shutter_speed > 0
                else None)
    stamp = other.timestamp
    taken = stamp.isoformat(timespec="seconds") if stamp and stamp.year > 1970 else None
    return iso, exposure, taken


def _layout_at_open(raw, sizes):
    """(CFA tile at the visible top-left, white level) from an opened file, or
    (None, None) where this rawpy needs an unpack for them.

    ``raw_pattern`` is anchored at the top-left of the full raw area; the
    visible area starts ``top_margin`` rows and ``left_margin`` columns in.
    """
    try:
        pattern = raw.raw_pattern
        white = int(raw.white_level)
    except Exception:  # noqa: BLE001 - older rawpy: read after an unpack instead
        return None, None
    if pattern is None or np.ndim(pattern) != 2 or white <= 0:
        return None, None
    pattern = np.asarray(pattern, dtype=np.uint8)
    tile = np.roll(pattern, (-int(sizes.top_margin), -int(sizes.left_margin)), axis=(0, 1))
    return np.ascontiguousarray(tile), white


def _dng_tile(path: str, top: int, left: int) -> Optional[np.ndarray]:
    """The CFA tile at the visible top-left from a DNG's own CFAPattern
    (LibRaw's indices: 0 red, 1 green, 2 blue), or None.

    rawpy's ``raw_pattern``/``raw_colors`` hold indices beyond the colour
    description for X-Trans DNGs of makers other than Fujifilm (seen with
    LibRaw 0.22); the file's own pattern is the one every developer reads.
    """
    from .frames import active_area
    from .tiffmeta import dng_cfa_letters
    letters = dng_cfa_letters(path)
    area = active_area(path)
    if letters is None or area is None:
        return None
    period = int(round(len(letters) ** 0.5))
    tile = np.array(["RGB".index(c) for c in letters], dtype=np.uint8).reshape(period, period)
    return np.ascontiguousarray(np.roll(tile, (area[0] - top, area[1] - left), axis=(0, 1)))


def _valid_tile(tile, desc: str) -> bool:
    """False when LibRaw's colour indices go beyond its colour description."""
    return tile is None or int(np.max(tile)) < max(len(desc), 3)


def _tile_of(cfa: np.ndarray, period: int) -> np.ndarray:
    """The top-left ``period`` x ``period`` tile of a full CFA map."""
    return np.ascontiguousarray(cfa[:period, :period], dtype=np.uint8)


def _read_detail(path: str, shape) -> dict:
    """CFA, pattern and levels of a raw file (one unpack)."""
    rawpy = _rawpy()
    raw = _open(path, unpack=True)
    try:
        _flat_or_skip(raw, rawpy)
        try:
            cfa = np.array(raw.raw_colors_visible, dtype=np.uint8)
            pattern = np.array(raw.raw_pattern, dtype=np.uint8)
        except NotImplementedError:
            raise SkipFile("unsupported colour filter layout (LibRaw filters code)") from None
        black = [int(v) for v in raw.black_level_per_channel]
        white = int(raw.white_level)
        desc = raw.color_desc
        top, left = int(raw.sizes.top_margin), int(raw.sizes.left_margin)
    finally:
        raw.close()
    desc = (desc.decode("ascii", "replace") if isinstance(desc, bytes) else str(desc)).rstrip("\0")
    if cfa.size and not _valid_tile(cfa, desc):
        tile = _dng_tile(path, top, left)
        if tile is not None:
            p = tile.shape[0]
            reps = (-(-cfa.shape[0] // p), -(-cfa.shape[1] // p))
            cfa = np.tile(tile, reps)[:cfa.shape[0], :cfa.shape[1]].copy()
            pattern = np.ascontiguousarray(np.roll(tile, (top % p, left % p), axis=(0, 1)))
    if tuple(cfa.shape) != tuple(shape[:2]):
        raise SkipFile(f"CFA size {cfa.shape} differs from the image size {tuple(shape[:2])}")
    return {"cfa": cfa, "pattern": pattern, "black_level": black, "white_level": white}


def read_raw(path, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Decode a raw file's visible photosites, one value each.

    Parameters
    ----------
    path : str or os.PathLike
        The raw file.
    out : numpy.ndarray, optional
        Preallocated ``(height, width, 1)`` uint16 array to fill (and return).

    Returns
    -------
    numpy.ndarray
        ``(height, width, 1)`` uint16: LibRaw's ``raw_image_visible``, values
        as stored (black level not subtracted).

    Raises
    ------
    SkipFile
        rawpy missing, unreadable/corrupt file, a non-mosaic raw, or a size
        that differs from ``out``'s.
    """
    path = os.fspath(path)
    if out is not None and (out.ndim != 3 or out.shape[2] != 1 or out.dtype != np.uint16):
        raise ValueError(f"out must be a (height, width, 1) uint16 array, got {out.dtype} {out.shape}")
    rawpy = _rawpy()
    raw = _open(path, unpack=True)
    try:
        _flat_or_skip(raw, rawpy)
        visible = raw.raw_image_visible
        if visible.ndim != 2:
            raise SkipFile("not a mosaic raw: LibRaw returned more than one value per photosite")
        h, w = visible.shape
        if out is None:
            # copy now: the view dies with the LibRaw handle closed below
            out = np.empty((h, w, 1), dtype=np.uint16)
        elif tuple(out.shape[:2]) != (h, w):
            raise SkipFile(f"raw size {w}x{h} differs from the other files' "
                           f"{out.shape[1]}x{out.shape[0]}")
        np.copyto(out[:, :, 0], visible)
    finally:
        raw.close()
    return out


def colour_name(info: RawInfo, x: int, y: int) -> str:
    """The filter colour over photosite ``(x, y)``: ``"R"``, ``"G"``, ``"B"``...

    Parameters
    ----------
    info : RawInfo
        From ``probe_raw``.
    x, y : int
        Column and row in the visible raw area.

    Returns
    -------
    str
        The ``colour_desc`` letter of the photosite's colour index (LibRaw's
        second green, index 3 in ``"RGBG"``, is ``"G"``).
    """
    index = int(info.cfa[y, x])
    desc = info.colour_desc or "RGBG"
    return desc[index] if index < len(desc) else "?"


# ----------------------------------------------------------------------------
# The camera from the file header (rawpy does not expose LibRaw's make, model
# or serial); the TIFF/CR3 parser is camera.from_tiff_file
# ----------------------------------------------------------------------------


def _header_camera(path: str):
    """(camera.Camera, camera.Shot) from a raw file's own header."""
    from .camera import UNKNOWN, Camera, Shot, from_tiff_file
    try:
        with open(path, "rb") as f:
            head = f.read(60)
    except OSError:
        return UNKNOWN, Shot()
    if head.startswith(b"FUJIFILMCCD-RAW"):
        # RAF: fixed header, 32-byte model string at offset 28
        model = head[28:60].split(b"\0", 1)[0].decode("latin-1").strip()
        return Camera("FUJIFILM", model or None), Shot()
    return from_tiff_file(path)


def _header_make_model(path: str) -> Tuple[Optional[str], Optional[str]]:
    """Camera make and model from a raw file's header, or ``(None, None)``."""
    cam, _ = _header_camera(path)
    return cam.make, cam.model
