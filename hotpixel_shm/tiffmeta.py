"""Read the tags of TIFF-structured files (DNG and most raw formats) without decoding pixels.

Only what the frames and the repaired DNGs need: every IFD reachable from the
header (IFD chain, SubIFDs, the EXIF IFD), each as a ``{tag: values}`` dict.
Values are tuples of numbers (rationals as floats) or a str for ASCII tags.
A file that is not TIFF-structured, or is truncated, gives an empty list: the
callers then say that the information could not be read.
"""
from __future__ import annotations

import struct
from typing import Dict, List, Optional

__all__ = ["read_ifds", "raw_ifd", "dng_raw_tags", "dng_cfa_letters", "TAG"]

#: Tag numbers used elsewhere in the package, by name.
TAG = {
    "NewSubfileType": 254, "ImageWidth": 256, "ImageLength": 257, "Photometric": 262,
    "Make": 271, "Model": 272, "Orientation": 274, "DateTime": 306, "SubIFDs": 330,
    "ExposureTime": 33434, "FNumber": 33437, "ExifIFD": 34665, "ISO": 34855,
    "DateTimeOriginal": 36867, "FocalLength": 37386,
    "CFARepeatPatternDim": 33421, "CFAPattern": 33422,
    "ColorMatrix1": 50721, "ColorMatrix2": 50722, "AsShotNeutral": 50728,
    "CalibrationIlluminant1": 50778, "CalibrationIlluminant2": 50779,
    "ActiveArea": 50829, "DefaultCropOrigin": 50719, "DefaultCropSize": 50720,
    "BlackLevel": 50714, "WhiteLevel": 50717, "DNGVersion": 50706,
}

_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
          16: 8, 17: 8, 18: 8}
_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 11: "f", 12: "d", 13: "I",
            16: "Q", 17: "q", 18: "Q"}
_MAX_IFDS = 64


def _entries(buf: bytes, e: str, pos: int) -> Optional[Dict[int, object]]:
    if pos <= 0 or pos + 2 > len(buf):
        return None
    count = struct.unpack_from(e + "H", buf, pos)[0]
    tags: Dict[int, object] = {}
    for i in range(min(count, 1024)):
        at = pos + 2 + 12 * i
        if at + 12 > len(buf):
            break
        tag, typ, n = struct.unpack_from(e + "HHI", buf, at)
        size = _SIZES.get(typ)
        if size is None or n > (1 << 24):
            continue
        nbytes = size * n
        off = at + 8 if nbytes <= 4 else struct.unpack_from(e + "I", buf, at + 8)[0]
        if off + nbytes > len(buf):
            continue
        raw = buf[off:off + nbytes]
        if typ == 2:
            tags[tag] = raw.split(b"\0", 1)[0].decode("latin-1").strip()
        elif typ in (5, 10):
            fmt = "I" if typ == 5 else "i"
            nums = struct.unpack(e + fmt * (2 * n), raw)
            tags[tag] = tuple(nums[k] / nums[k + 1] if nums[k + 1] else 0.0
                              for k in range(0, 2 * n, 2))
        else:
            tags[tag] = struct.unpack(e + _FORMATS[typ] * n, raw)
    tags["_next"] = struct.unpack_from(e + "I", buf, pos + 2 + 12 * count)[0] \
        if pos + 6 + 12 * count <= len(buf) else 0
    return tags


def read_ifds(path, max_bytes: int = 1 << 26) -> List[Dict[int, object]]:
    """Every IFD of a TIFF-structured file, IFD0 first.

    Parameters
    ----------
    path : str or os.PathLike
        The file (DNG, CR2, NEF, ARW, PEF, ... or TIFF).
    max_bytes : int
        Read at most this many bytes (tags live near the start of raw files;
        the pixel data is not needed).

    Returns
    -------
    list of dict
        ``{tag number: value}`` per IFD, in the order found (IFD chain, then
        SubIFDs and the EXIF IFD of each). Empty if the file is not TIFF.
    """
    try:
        with open(path, "rb") as f:
            buf = f.read(max_bytes)
    except OSError:
        return []
    if buf[:2] == b"II":
        e = "<"
    elif buf[:2] == b"MM":
        e = ">"
    else:
        return []
    try:
        todo = [struct.unpack_from(e + "I", buf, 4)[0]]
        seen, out = set(), []
        while todo and len(out) < _MAX_IFDS:
            pos = todo.pop(0)
            if pos in seen:
                continue
            seen.add(pos)
            tags = _entries(buf, e, pos)
            if tags is None:
                continue
            nxt = tags.pop("_next")
            out.append(tags)
            for key in (TAG["SubIFDs"], TAG["ExifIFD"]):
                if key in tags and not isinstance(tags[key], str):
                    todo.extend(int(v) for v in tags[key])
            if nxt:
                todo.append(nxt)
        return out
    except struct.error:
        return []


def raw_ifd(ifds: List[Dict[int, object]]) -> Optional[Dict[int, object]]:
    """The IFD holding a DNG's raw mosaic (full-resolution CFA image), or None.

    Parameters
    ----------
    ifds : list of dict
        From :func:`read_ifds`.

    Returns
    -------
    dict or None
        The first IFD whose NewSubfileType is 0 (main image) and whose
        PhotometricInterpretation is CFA (32803) or LinearRaw (34892).
    """
    for tags in ifds:
        sub = tags.get(TAG["NewSubfileType"], (0,))
        photometric = tags.get(TAG["Photometric"], (0,))
        if sub[0] == 0 and photometric[0] in (32803, 34892):
            return tags
    return None


def dng_raw_tags(path) -> Optional[Dict[int, object]]:
    """The tags of a DNG's raw IFD, or None for a file that is not a DNG
    or has no raw IFD.

    Parameters
    ----------
    path : str or os.PathLike
    """
    ifds = read_ifds(path)
    if not ifds or TAG["DNGVersion"] not in ifds[0]:
        return None
    return raw_ifd(ifds)


def dng_cfa_letters(path) -> Optional[str]:
    """A DNG's CFA tile as letters, row-major (``"RGGB"``, 36 for X-Trans), or None.

    The tile is anchored at the DNG's ActiveArea top-left (DNG specification).
    None for files that are not DNGs or whose raw IFD has no usable
    CFARepeatPatternDim/CFAPattern.
    """
    tags = dng_raw_tags(path)
    if tags is None:
        return None
    dim, codes = tags.get(TAG["CFARepeatPatternDim"]), tags.get(TAG["CFAPattern"])
    if not dim or not codes or isinstance(codes, str) or isinstance(dim, str) \
            or len(dim) != 2 or dim[0] != dim[1] or dim[0] not in (2, 6) \
            or len(codes) != dim[0] * dim[1]:
        return None
    plane = tags.get(50710, (0, 1, 2))         # CFAPlaneColor
    try:
        return "".join("RGB"[plane[c]] for c in codes)
    except (IndexError, TypeError):
        return None
