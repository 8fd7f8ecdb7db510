"""Which camera body took a photo, and when and how: read from the file's
metadata without decoding pixels, and photos grouped body by body.

A body is (make, model, serial): EXIF ``Make`` (0x010F), ``Model`` (0x0110)
and ``BodySerialNumber`` (0xA431, in the Exif IFD), falling back to the DNG
``CameraSerialNumber`` (0xC62F); without a serial, (make, model).  Photos
without camera metadata form their own group, "unknown camera".  The
conditions of each shot are ``DateTimeOriginal`` (0x9003), ISO
(``PhotographicSensitivity``, 0x8827) and ``ExposureTime`` (0x829A); for raw
files LibRaw's values fill what the header does not hold.
"""
from __future__ import annotations

import collections
import datetime as _dt
import re
import struct
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

__all__ = ["Camera", "Shot", "UNKNOWN", "from_pillow", "from_tiff_file", "group_by_camera",
           "conditions", "capture_unix", "exif_bytes"]

# tags
_MAKE, _MODEL, _EXIF_IFD, _DNG_SERIAL = 0x010F, 0x0110, 0x8769, 0xC62F
_BODY_SERIAL, _TAKEN, _ISO, _EXPOSURE = 0xA431, 0x9003, 0x8827, 0x829A


@dataclass(frozen=True)
class Camera:
    """One camera body (or model, without a serial), as its photos name it.

    Attributes
    ----------
    make, model, serial : str or None
        EXIF ``Make``, ``Model`` and body serial number, stripped.
    """

    make: Optional[str] = None
    model: Optional[str] = None
    serial: Optional[str] = None

    @property
    def known(self) -> bool:
        """Whether the photos named their camera at all."""
        return bool(self.make or self.model)

    @property
    def name(self) -> str:
        """Make, model and serial joined with spaces (what ``--camera`` searches)."""
        return " ".join(p for p in (self.make, self.model, self.serial) if p) or "unknown camera"

    @property
    def label(self) -> str:
        """For people: ``'NIKON D750 #3012345'`` (the make left out where the
        model already starts with it, as Nikon's and Canon's do)."""
        if not self.known:
            return "unknown camera"
        text = self._make_model()
        return f"{text} #{self.serial}" if self.serial else text

    @property
    def file_tag(self) -> str:
        """The label made safe for file names: ``'NIKON_D750_3012345'``."""
        text = self._make_model() + (f" {self.serial}" if self.serial else "") if self.known \
            else "unknown camera"
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("._") or "camera"

    def _make_model(self) -> str:
        make, model = self.make or "", self.model or ""
        first = make.split()[0].lower() if make.split() else ""
        if model and first and model.lower().startswith(first):
            return model
        return " ".join(p for p in (make, model) if p)

    def matches(self, text: str) -> bool:
        """Whether ``text`` occurs in :attr:`name`, ignoring case."""
        return text.lower() in self.name.lower()

    def to_dict(self) -> dict:
        return {"make": self.make, "model": self.model, "serial": self.serial}

    @classmethod
    def from_dict(cls, d) -> "Camera":
        d = d or {}
        return cls(_clean(d.get("make")), _clean(d.get("model")), _clean(d.get("serial")))


#: The group of photos that name no camera.
UNKNOWN = Camera()


@dataclass(frozen=True)
class Shot:
    """When and how one photo was taken (each None when not recorded).

    Attributes
    ----------
    taken : str or None
        ``DateTimeOriginal`` as ISO 8601 without time zone
        (``'2026-05-02T10:11:12'``; EXIF records the camera's clock, no zone).
    iso : float or None
    exposure : float or None
        Exposure time in seconds.
    """

    taken: Optional[str] = None
    iso: Optional[float] = None
    exposure: Optional[float] = None


def _clean(value) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.split(b"\0", 1)[0].decode("latin-1", "replace")
    value = " ".join(str(value).replace("\x00", " ").split())
    return value or None


def _number(value) -> Optional[float]:
    """A positive float from an EXIF number or (numerator, denominator)."""
    try:
        if isinstance(value, (tuple, list)):
            if len(value) == 2:
                num, den = float(value[0]), float(value[1])
                value = num / den if den else None
            elif len(value) >= 1:
                value = float(value[0])
        value = float(value)
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    return value if value > 0 and value == value and value != float("inf") else None


def _taken(value) -> Optional[str]:
    text = _clean(value)
    if not text:
        return None
    try:
        return _dt.datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _from_tags(ifd0: dict, exif: dict) -> Tuple[Camera, Shot]:
    serial = _clean(exif.get(_BODY_SERIAL)) or _clean(ifd0.get(_DNG_SERIAL))
    cam = Camera(_clean(ifd0.get(_MAKE)), _clean(ifd0.get(_MODEL)), serial)
    if not cam.known:
        cam = UNKNOWN  # a serial alone names no camera
    shot = Shot(_taken(exif.get(_TAKEN)), _number(exif.get(_ISO)), _number(exif.get(_EXPOSURE)))
    return cam, shot


def from_pillow(im) -> Tuple[Camera, Shot, Optional[str]]:
    """Camera and shot of an open Pillow image, from its EXIF block.

    Returns
    -------
    camera : Camera
        ``UNKNOWN`` without EXIF.
    shot : Shot
    problem : str or None
        Why the EXIF block could not be read (the photo is still usable; it
        counts as taken by an unknown camera).
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # Pillow warns about corrupt blocks: a reason here
            exif = im.getexif()
            ifd0 = dict(exif)
            sub = dict(exif.get_ifd(_EXIF_IFD)) if _EXIF_IFD in ifd0 else {}
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block must not skip the photo
        return UNKNOWN, Shot(), f"unreadable EXIF block ({type(exc).__name__}: {exc})"
    camera, shot = _from_tags(ifd0, sub)
    problem = None
    if caught:
        problem = f"damaged EXIF block ({str(caught[0].message).strip()})"
    return camera, shot, problem


def exif_bytes(camera: Camera, shot: Shot = None) -> bytes:
    """An EXIF block naming ``camera`` and ``shot``, for Pillow's ``save(exif=...)``
    (simulated photos: the demo and the tests).

    Examples
    --------
    >>> from PIL import Image
    >>> block = exif_bytes(Camera("NIKON CORPORATION", "NIKON D750", "3012345"),
    ...                    Shot("2026-05-02T10:11:12", 400, 1 / 125))
    >>> Image.new("RGB", (8, 8)).save("/tmp/x.jpg", exif=block)  # doctest: +SKIP
    """
    from fractions import Fraction

    from PIL import Image
    exif = Image.Exif()
    if camera.make:
        exif[_MAKE] = camera.make
    if camera.model:
        exif[_MODEL] = camera.model
    sub = exif.get_ifd(_EXIF_IFD)
    if camera.serial:
        sub[_BODY_SERIAL] = camera.serial
    shot = shot or Shot()
    if shot.taken:
        sub[_TAKEN] = _dt.datetime.fromisoformat(shot.taken).strftime("%Y:%m:%d %H:%M:%S")
    if shot.iso:
        sub[_ISO] = int(shot.iso)
    if shot.exposure:
        f = Fraction(shot.exposure).limit_denominator(1 << 16)
        sub[_EXPOSURE] = (f.numerator, f.denominator)
    return exif.tobytes()


# ---------------------------------------------------------------- TIFF-structured raw headers

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8}
_WANTED = {_MAKE, _MODEL, _EXIF_IFD, _DNG_SERIAL, _BODY_SERIAL, _TAKEN, _ISO, _EXPOSURE}


def _read_ifd(f, base, offset, order, size) -> dict:
    """The wanted tags of the IFD at ``offset`` (relative to ``base``)."""
    out = {}
    if offset <= 0 or base + offset + 2 > size:
        return out
    f.seek(base + offset)
    (count,) = struct.unpack(order + "H", f.read(2))
    entries = f.read(12 * min(count, 1024))
    for i in range(len(entries) // 12):
        tag, typ, n = struct.unpack_from(order + "HHI", entries, 12 * i)
        if tag not in _WANTED or typ not in _TYPE_SIZES or n == 0 or n > 1 << 16:
            continue
        nbytes = _TYPE_SIZES[typ] * n
        raw = entries[12 * i + 8:12 * i + 8 + nbytes] if nbytes <= 4 else None
        if raw is None:
            (off,) = struct.unpack_from(order + "I", entries, 12 * i + 8)
            if base + off + nbytes > size:
                continue
            here = f.tell()
            f.seek(base + off)
            raw = f.read(nbytes)
            f.seek(here)
        out[tag] = _value(raw, typ, n, order)
    return out


def _value(raw, typ, n, order):
    if typ in (2, 1, 7):
        return raw if typ != 1 or n > 1 else raw[0]
    fmt = {3: "H", 4: "I", 9: "i"}.get(typ)
    if fmt:
        vals = struct.unpack(order + fmt * n, raw)
        return vals[0] if n == 1 else vals
    vals = struct.unpack(order + ("II" if typ == 5 else "ii") * n, raw)
    return (vals[0], vals[1])


def _tiff_at(f, base, size) -> Tuple[dict, dict]:
    f.seek(base)
    head = f.read(8)
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        return {}, {}
    order = "<" if head[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", head[4:8])
    ifd0 = _read_ifd(f, base, ifd, order, size)
    sub = ifd0.get(_EXIF_IFD)
    exif = _read_ifd(f, base, sub, order, size) if isinstance(sub, int) else {}
    return ifd0, exif


def from_tiff_file(path) -> Tuple[Camera, Shot]:
    """Camera and shot from a raw file's own header, without LibRaw.

    Reads TIFF-structured headers (DNG, CR2, NEF, ARW, PEF, ORF, RW2, ...:
    IFD0 and its Exif IFD) and CR3's CMT1/CMT2 boxes; anything else, or a
    header that cannot be parsed, gives ``UNKNOWN`` and an empty ``Shot``.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(0)
            head = f.read(1 << 16)
            if head[4:8] == b"ftyp":
                ifd0 = exif = {}
                at1, at2 = head.find(b"CMT1"), head.find(b"CMT2")
                if at1 >= 4:
                    ifd0 = _tiff_at(f, at1 + 4, size)[0]
                if at2 >= 4:  # CMT2 holds the Exif IFD as a TIFF's first IFD
                    exif = _tiff_at(f, at2 + 4, size)[0]
            else:
                ifd0, exif = _tiff_at(f, 0, size)
    except (OSError, struct.error, ValueError):
        return UNKNOWN, Shot()
    return _from_tags(ifd0, exif)


# ---------------------------------------------------------------- groups and conditions

def group_by_camera(headers) -> Dict[Camera, list]:
    """Headers by camera body, the body with most photos first (ties: the one
    whose first photo comes first); unknown cameras last among equals."""
    groups: Dict[Camera, list] = collections.OrderedDict()
    for h in headers:
        groups.setdefault(h.camera or UNKNOWN, []).append(h)
    order = sorted(groups, key=lambda c: (-len(groups[c]), not c.known))
    return collections.OrderedDict((c, groups[c]) for c in order)


def _spread(values) -> Optional[dict]:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    n = len(values)
    median = values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])
    return {"min": values[0], "median": median, "max": values[-1]}


def capture_unix(taken: Optional[str]) -> Optional[int]:
    """Unix seconds of an EXIF capture time, read in this machine's time zone
    as dcraw and LibRaw read it (``mktime``), or None."""
    if not taken:
        return None
    try:
        return int(time.mktime(_dt.datetime.fromisoformat(taken).timetuple()))
    except (ValueError, OverflowError):
        return None


def conditions(shots: List[Shot]) -> dict:
    """ISO and exposure time (min, median, max) and the first and last
    capture times of ``shots``; a part nothing recorded is None.

    ``captured.last_unix`` is the last capture time as Unix seconds
    (:func:`capture_unix`), the time column of dcraw's bad-pixel lists.
    """
    taken = sorted(s.taken for s in shots if s.taken)
    captured = None
    if taken:
        captured = {"first": taken[0], "last": taken[-1], "last_unix": capture_unix(taken[-1])}
    return {
        "photos": len(shots),
        "iso": _spread(s.iso for s in shots),
        "exposure_time": _spread(s.exposure for s in shots),
        "captured": captured,
    }
