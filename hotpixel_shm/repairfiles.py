"""Repaired copies of photos: raw files as DNGs, TIFF, PNG and JPEG as themselves.

``repair_photos`` writes one repaired copy of each photo into a directory,
each atomically (a temporary file renamed into place), never over an input.

* Raw files (any format LibRaw reads) become a DNG holding LibRaw's visible
  area of the raw mosaic, each listed photosite rebuilt from its healthy
  same-colour neighbours (``repair.repair_mosaic``) and every other
  photosite bit-identical, with what a raw developer needs to render it as
  the original: CFA pattern, black and white levels, colour matrix, as-shot
  neutral, orientation, make, model, capture time, exposure. The file keeps
  its name; a raw file of another format gets the extension ``.dng``.
* TIFF and PNG: the defect footprints rebuilt channel by channel
  (``repair.repair_image``), every other pixel bit-identical, the metadata
  kept (an uncompressed TIFF is copied byte for byte and only the repaired
  pixels' bytes are rewritten).
* JPEG: only the MCUs (minimum coded units) that hold a defect are
  re-encoded; every other block keeps its DCT coefficients bit for bit, with
  the original quantisation tables, chroma subsampling and markers (EXIF,
  ICC). Needs the optional ``jpeglib`` (``pip install 'hotpixel_shm[repair]'``).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import HotPixelError, SkipFile
from .export import atomic_write, defect_xy, printable
from .repair import pixel_defects, repair_image, repair_mosaic

__all__ = ["RepairResult", "repair_photos", "repair_photo", "output_name", "load_report",
           "check_repair_targets", "check_apply", "REPAIR_HINT"]

#: The skip reason when jpeglib is missing.
REPAIR_HINT = "repairing JPEGs needs jpeglib: pip install 'hotpixel_shm[repair]'"


@dataclass
class RepairResult:
    """What happened to one photo.

    Attributes
    ----------
    source, target : str
        The photo and its repaired copy (None when skipped).
    repaired : int
        Defects rebuilt.
    unrepaired : list
        ``(x, y, reason)`` of defects left as they were.
    skipped : str or None
        Why no copy was written.
    measures : dict
        Format-specific figures (JPEG: blocks re-encoded and the largest and
        mean change of decoded pixels outside them).
    """

    source: str
    target: Optional[str] = None
    repaired: int = 0
    unrepaired: list = field(default_factory=list)
    skipped: Optional[str] = None
    measures: dict = field(default_factory=dict)


def _is_raw(path) -> bool:
    from .rawio import is_raw_path
    return is_raw_path(path)


def output_name(path) -> str:
    """The file name of a photo's repaired copy (raw files other than DNG get ``.dng``)."""
    name = os.path.basename(os.fspath(path))
    stem, ext = os.path.splitext(name)
    if _is_raw(path) and ext.lower() != ".dng":
        return stem + ".dng"
    return name


def check_repair_targets(paths: Sequence[str], out_dir) -> Dict[str, str]:
    """``{photo: its repaired copy's path}``, refusing any copy that would land on an input.

    Raises
    ------
    HotPixelError
        ``out_dir`` exists and is not a directory, a copy would overwrite an
        input photo, or two photos would get the same copy name.
    """
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise HotPixelError(f"--repair-into {printable(out_dir)}: exists and is not a directory")
    inputs = {os.path.realpath(p) for p in paths}
    targets, seen = {}, {}
    for p in paths:
        target = os.path.join(out_dir, output_name(p))
        real = os.path.realpath(target)
        if real in inputs:
            raise HotPixelError(f"--repair-into {printable(out_dir)}: the repaired copy of "
                                f"{printable(p)} would overwrite an input photo; choose another "
                                f"directory")
        if real in seen:
            raise HotPixelError(f"--repair-into: {printable(p)} and {printable(seen[real])} "
                                f"would both be written as {printable(target)}")
        seen[real] = p
        targets[p] = target
    return targets


def load_report(path) -> Tuple[Tuple[int, int, int], list, dict]:
    """``(shape, defects, report)`` of an earlier JSON report (``--apply``).

    Raises
    ------
    HotPixelError
        Unreadable file, not JSON, or no ``shape``/``defects``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except OSError as exc:
        raise HotPixelError(f"--apply {printable(path)}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise HotPixelError(f"--apply {printable(path)}: not a JSON report ({exc})") from None
    try:
        shape = tuple(int(v) for v in report["shape"])
        defects = list(report["defects"])
        if len(shape) == 2:
            shape = shape + (1,)
        if len(shape) != 3:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise HotPixelError(f"--apply {printable(path)}: not a hotpixel_shm report "
                            f"(needs 'shape' [height, width, channels] and 'defects')") from None
    for d in defects:
        defect_xy(d)
    return shape, defects, report


def check_apply(report_path, shape, report, headers, skipped) -> None:
    """Refuse ``--apply`` unless every photo can take the report's defects.

    Every photo must be readable and of the report's shape; when the report
    names the camera body (its ``camera`` entry), the photos must come from
    that body (same make, model and serial number).

    Raises
    ------
    HotPixelError
        Listing the photos that do not match; nothing is written then.
    """
    want = "x".join(str(v) for v in (shape[1], shape[0], shape[2]))
    problems = [f"{printable(p)}: {why}" for p, why in skipped]
    for h in headers:
        if tuple(h.shape) != tuple(shape):
            got = "x".join(str(v) for v in (h.shape[1], h.shape[0], h.shape[2]))
            problems.append(f"{printable(h.path)}: {got} differs from the report's {want}")
    camera = report.get("camera") if isinstance(report, dict) else None
    if isinstance(camera, dict):
        from .camera import Camera
        body = Camera.from_dict(camera)
        if body.known:
            for h in headers:
                got = getattr(h, "camera", None)
                if got is not None and got != body:
                    problems.append(f"{printable(h.path)}: taken with {got.label}, the report "
                                    f"is of {body.label}")
    if not headers and not problems:
        problems.append("no photos given")
    if problems:
        raise HotPixelError(f"--apply {printable(report_path)}: nothing written; "
                            + "; ".join(problems[:5])
                            + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))


def repair_photos(paths: Sequence[str], defects: Sequence, out_dir, *, log=None
                  ) -> List[RepairResult]:
    """Write a repaired copy of each photo into ``out_dir`` (created if missing).

    Parameters
    ----------
    paths : sequence of str
        The analysed photos (all of the report's shape).
    defects : sequence of Defect or mapping
        The defects, in the photos' stored pixel frame (raw files: LibRaw's
        visible area).
    out_dir : path-like
        Directory for the copies; a copy never replaces an input.
    log : object, optional
        With ``info(text)`` and ``skip(path, reason)``.

    Returns
    -------
    list of RepairResult
        One per photo, in order.
    """
    targets = check_repair_targets(paths, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    points, other = pixel_defects(defects)
    results = []
    for p in paths:
        try:
            res = repair_photo(p, targets[p], points)
        except SkipFile as exc:
            res = RepairResult(source=p, skipped=str(exc))
        res.unrepaired.extend((*defect_xy(d), why) for d, why in other)
        results.append(res)
        if log is not None:
            if res.skipped:
                log.skip(p, f"not repaired: {res.skipped}")
            else:
                log.info(f"repaired {res.repaired} defect(s): {printable(res.target)}")
    return results


def repair_photo(path, target, defects) -> RepairResult:
    """Repair one photo into ``target`` (see the module's description).

    Raises
    ------
    SkipFile
        The photo cannot be read or its format cannot be repaired here.
    """
    path = os.fspath(path)
    if _is_raw(path):
        return _repair_raw(path, target, defects)
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:3] == b"\xff\xd8\xff":
        return _repair_jpeg(path, target, defects)
    if head[:4] in (b"II*\0", b"MM\0*"):
        return _repair_tiff(path, target, defects)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return _repair_png(path, target, defects)
    raise SkipFile("repaired copies are made of raw files, JPEG, TIFF and PNG only")


def _unrepaired(sites, why):
    return [(x, y, why) for x, y in sites]


# --------------------------------------------------------------------------- raw -> DNG

_FLIP_TO_ORIENTATION = {0: 1, 3: 3, 5: 8, 6: 6}


def _raw_metadata(path, raw) -> dict:
    """What the repaired DNG needs, from LibRaw and the file's own tags."""
    from .rawio import _header_make_model
    from .tiffmeta import TAG, read_ifds
    meta = {}
    ifds = read_ifds(path)
    tags: Dict[int, object] = {}
    for ifd in ifds:            # later IFDs (EXIF) do not override IFD0's values
        for k, v in ifd.items():
            tags.setdefault(k, v)
    make, model = _header_make_model(path)
    meta["make"], meta["model"] = make or "Unknown", model or "Unknown"
    # colour: the file's own DNG matrix first, else LibRaw's table for the camera
    matrix = tags.get(TAG["ColorMatrix1"])
    if matrix and len(matrix) >= 9:
        meta["colour_matrix"] = np.array(matrix[:9], dtype=float).reshape(3, 3)
    else:
        cam_xyz = np.array(raw.rgb_xyz_matrix, dtype=float)[:3]
        if cam_xyz.any():
            meta["colour_matrix"] = cam_xyz
    neutral = tags.get(TAG["AsShotNeutral"])
    if neutral and len(neutral) >= 3 and all(neutral[:3]):
        meta["as_shot_neutral"] = tuple(float(v) for v in neutral[:3])
    else:
        mul = [float(v) for v in raw.camera_whitebalance[:3]]
        if all(mul):
            meta["as_shot_neutral"] = tuple(mul[1] / m for m in mul)
    meta["orientation"] = _FLIP_TO_ORIENTATION.get(int(raw.sizes.flip), 1)
    when = tags.get(TAG["DateTimeOriginal"]) or tags.get(TAG["DateTime"])
    if isinstance(when, str) and when:
        meta["datetime"] = when
    for key, tag in (("exposure_time", "ExposureTime"), ("f_number", "FNumber")):
        v = tags.get(TAG[tag])
        if v and not isinstance(v, str) and v[0]:
            meta[key] = float(v[0])
    iso = tags.get(TAG["ISO"])
    if iso and not isinstance(iso, str):
        meta["iso"] = int(iso[0])
    ucm = ifds[0].get(50708) if ifds else None
    if isinstance(ucm, str) and ucm:
        meta["unique_model"] = ucm
    return meta


def _repair_raw(path, target, defects) -> RepairResult:
    from .dng import write_dng
    from .frames import active_area
    from .rawio import _flat_or_skip, _open, _rawpy
    from .tiffmeta import dng_cfa_letters
    rawpy = _rawpy()
    raw = _open(path, unpack=True)
    try:
        _flat_or_skip(raw, rawpy)
        full = np.array(raw.raw_image, dtype=np.uint16)
        colours = np.array(raw.raw_colors, dtype=np.uint8)
        top, left = int(raw.sizes.top_margin), int(raw.sizes.left_margin)
        h, w = int(raw.sizes.height), int(raw.sizes.width)
        desc = raw.color_desc
        desc = (desc.decode("ascii", "replace") if isinstance(desc, bytes) else str(desc)).rstrip("\0")
        black = [int(v) for v in raw.black_level_per_channel]
        white = int(raw.white_level)
        meta = _raw_metadata(path, raw)
    finally:
        raw.close()
    if full.shape != colours.shape:
        raise SkipFile("raw mosaic and colour filter sizes differ: not repaired")
    # the repaired DNG keeps the whole mosaic and the original's active area, so
    # every developer frames it as it framed the original (a DNG's own
    # ActiveArea; else LibRaw's margins)
    area = active_area(path) or (top, left, top + h, left + w)
    a_top, a_left, a_bottom, a_right = (int(v) for v in area)
    letters = dng_cfa_letters(path)
    if letters is not None:
        # a DNG's own CFAPattern (anchored at its ActiveArea); LibRaw's
        # raw_colors are not reliable for X-Trans DNGs of other makers
        from .dng import cfa_array
        colours = cfa_array(letters, full.shape[0], full.shape[1], origin=(a_top, a_left))
        tile_black = _dng_black(path, len(letters)) or \
            [black[min(i, len(black) - 1)] for i in _libraw_index(letters)]
    else:
        period = _period(colours[a_top:a_bottom, a_left:a_right])
        if period == 0:
            raise SkipFile("unsupported colour filter layout for a repaired DNG")
        tile = colours[a_top:a_top + period, a_left:a_left + period]
        try:
            letters = "".join(desc[int(i)] for i in tile.ravel())
        except IndexError:
            raise SkipFile("unsupported colour filter layout for a repaired DNG") from None
        tile_black = [black[int(i)] if int(i) < len(black) else black[0] for i in tile.ravel()]
    if set(letters) - set("RGB"):
        raise SkipFile(f"colour filters {desc!r}: a repaired DNG is written for RGB sensors only")
    sites = sorted({defect_xy(d) for d in defects})
    inside = [(x, y) for x, y in sites if 0 <= x < w and 0 <= y < h]
    outside = [(x, y) for x, y in sites if not (0 <= x < w and 0 <= y < h)]
    repaired, left_over = repair_mosaic(full, colours, [(x + left, y + top) for x, y in inside])
    fd, tmp = tempfile.mkstemp(prefix=".hotpixel-", suffix=".dng",
                               dir=os.path.dirname(os.path.abspath(target)))
    os.close(fd)
    margins = (a_top, a_left, full.shape[0] - a_bottom, full.shape[1] - a_right)
    try:
        write_dng(tmp, repaired, pattern=letters,
                  black=tile_black if len(set(tile_black)) > 1 else tile_black[0], white=white,
                  margins=margins if any(margins) else None, **meta)
        _fsync_replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    left_over = [(x - left, y - top) for x, y in left_over]
    return RepairResult(source=path, target=os.fsdecode(target),
                        repaired=len(inside) - len(left_over),
                        unrepaired=_unrepaired(outside, "outside the visible area")
                        + _unrepaired(left_over, "no healthy same-colour photosite within 6"))


def _dng_black(path, tile_size):
    """A DNG's BlackLevel per CFA tile photosite (or one value), when its
    repeat pattern fits the tile; else None."""
    from .tiffmeta import TAG, dng_raw_tags
    tags = dng_raw_tags(path) or {}
    levels, dim = tags.get(TAG["BlackLevel"]), tags.get(50713, (1, 1))
    if not levels or isinstance(levels, str) or any(v != int(v) for v in levels):
        return None
    if len(levels) == 1 and tuple(dim) == (1, 1):
        return [int(levels[0])]
    if len(levels) == tile_size and dim[0] * dim[1] == tile_size:
        return [int(v) for v in levels]
    return None


def _libraw_index(letters):
    """LibRaw's black-level index (R 0, G 1, B 2) of each tile photosite."""
    return ["RGB".index(c) for c in letters]


def _period(colours) -> int:
    """2 for a Bayer tile, 6 for X-Trans (the smallest period that repeats)."""
    for p in (2, 6):
        h, w = colours.shape
        if h >= 2 * p and w >= 2 * p and (colours[p:2 * p, :p] == colours[:p, :p]).all() \
                and (colours[:p, p:2 * p] == colours[:p, :p]).all():
            return p
    return 0


def _fsync_replace(tmp, target):
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


# --------------------------------------------------------------------------- PNG

def _repair_png(path, target, defects) -> RepairResult:
    from PIL import Image, PngImagePlugin
    with Image.open(path) as im:
        im.load()
        info = dict(im.info)
        mode = im.mode
        text = dict(getattr(im, "text", {}) or {})
        arr = np.array(im)
        palette = im.getpalette() if mode == "P" else None
    if mode in ("P", "1"):
        raise SkipFile(f"PNG mode {mode} (palette or bilevel) is not repaired")
    fixed, changed, left = repair_image(arr, defects)
    out = Image.fromarray(fixed, mode=mode if mode != "I;16" else None)
    if mode == "I;16" and out.mode != "I;16":
        out = Image.fromarray(fixed.astype(np.uint16), mode="I;16")
    pnginfo = PngImagePlugin.PngInfo()
    for k, v in text.items():
        pnginfo.add_text(k, v)
    kw = {"pnginfo": pnginfo}
    for key in ("icc_profile", "exif", "dpi", "gamma", "transparency"):
        if key in info:
            kw[key] = info[key]
    del palette
    atomic_write(target, lambda f: out.save(f, format="PNG", **kw), mode="wb")
    return RepairResult(source=path, target=os.fsdecode(target),
                        repaired=len(defects) - len(left),
                        unrepaired=_unrepaired(left, "outside the image"))


# --------------------------------------------------------------------------- TIFF

def _repair_tiff(path, target, defects) -> RepairResult:
    try:
        import tifffile
    except ImportError:
        raise SkipFile("repairing TIFFs needs tifffile: pip install 'hotpixel_shm[repair]'") from None
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        arr = page.asarray()
        compression = int(page.compression)
        planar = int(page.planarconfig)
        offsets, counts = page.dataoffsets, page.databytecounts
        tiled = page.is_tiled
        dtype = page.dtype
        byteorder = tif.byteorder
    shape3 = arr.shape if arr.ndim == 3 else arr.shape + (1,)
    if planar == 2 and arr.ndim == 3:     # tifffile gives (samples, h, w) for planar data
        arr = np.moveaxis(arr, 0, -1)
    fixed, changed, left = repair_image(arr, defects)
    result = RepairResult(source=path, target=os.fsdecode(target),
                          repaired=len(defects) - len(left),
                          unrepaired=_unrepaired(left, "outside the image"))
    if compression == 1 and not tiled and planar == 1 and len(offsets) >= 1:
        # uncompressed strips: the file copied byte for byte, only the
        # repaired pixels' bytes rewritten -- every tag stays as it was
        with open(path, "rb") as f:
            data = bytearray(f.read())
        h, w = arr.shape[:2]
        c = shape3[2] if arr.ndim == 3 else 1
        row_bytes = w * c * dtype.itemsize
        rows_per_strip = max(1, counts[0] // row_bytes) if counts[0] else h
        fixed3 = fixed.reshape(h, w, c).astype(dtype.newbyteorder(byteorder))
        for y in np.unique(np.nonzero(changed)[0]):
            strip, r = divmod(int(y), rows_per_strip)
            start = offsets[strip] + r * row_bytes
            data[start:start + row_bytes] = fixed3[y].tobytes()
        atomic_write(target, lambda f: f.write(bytes(data)), mode="wb")
        result.measures["method"] = "uncompressed TIFF patched in place"
        return result
    # compressed, tiled or planar: re-encoded with the same compression and
    # the descriptive tags tifffile can carry over
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        extratags = []
        for tag in page.tags.values():
            if tag.code in (270, 271, 272, 274, 305, 306, 315, 33432, 34675):
                if tag.code == 270:
                    continue
                dt = tag.dtype if isinstance(tag.dtype, int) else int(tag.dtype)
                extratags.append((tag.code, dt, tag.count, tag.value, True))
        description = page.description or None
        photometric = page.photometric
    out = np.moveaxis(fixed, -1, 0) if (planar == 2 and fixed.ndim == 3) else fixed
    buf = io.BytesIO()
    tifffile.imwrite(buf, out, photometric=photometric, compression=compression if compression != 1 else None,
                     planarconfig="separate" if planar == 2 else None, description=description,
                     extratags=extratags, metadata=None)
    atomic_write(target, lambda f: f.write(buf.getvalue()), mode="wb")
    result.measures["method"] = "TIFF re-encoded (EXIF sub-IFD not copied)"
    return result


# --------------------------------------------------------------------------- JPEG

def _repair_jpeg(path, target, defects) -> RepairResult:
    from .jpegblocks import repair_jpeg_blocks
    return repair_jpeg_blocks(path, target, defects)
