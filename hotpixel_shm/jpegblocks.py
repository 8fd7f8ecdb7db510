"""Repair a JPEG by re-encoding only the MCUs that hold a defect.

The photo is decoded, the defect footprints are rebuilt in pixels
(``repair.repair_image``), and the repaired picture is encoded once with the
photo's own quantisation tables and chroma subsampling. From that encoding
only the blocks of the MCUs (minimum coded units) that contain a rebuilt pixel
are copied into the photo's own DCT coefficients; every other block keeps its
coefficients bit for bit, and the photo's markers (EXIF, ICC profile,
comments) are written back as they were. Decoded pixels outside the repaired
MCUs can still move by a level or so where the decoder's smooth chroma
upsampling reads across an MCU border.

The coefficients are read and written with ``jpeglib`` (libjpeg in a Python
package), an optional dependency: ``pip install 'hotpixel_shm[repair]'``.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from .errors import SkipFile
from .repair import repair_image

__all__ = ["repair_jpeg_blocks", "mcu_mask", "decode_rgb"]


def _jpeglib():
    try:
        import jpeglib
    except ImportError:
        from .repairfiles import REPAIR_HINT
        raise SkipFile(REPAIR_HINT) from None
    return jpeglib


def decode_rgb(path) -> np.ndarray:
    """The JPEG's pixels as the analysis decodes them (libjpeg, accurate DCT,
    smooth upsampling): ``(h, w, 3)`` or ``(h, w, 1)`` uint8."""
    from PIL import Image
    with Image.open(path) as im:
        if im.mode not in ("L", "RGB"):
            raise SkipFile(f"JPEG colour mode {im.mode} is not repaired (only gray and YCbCr)")
        arr = np.asarray(im)
    return arr[:, :, None] if arr.ndim == 2 else arr


def mcu_mask(changed: np.ndarray, mcu: tuple) -> np.ndarray:
    """``(rows, cols)`` bool of the MCUs holding a changed pixel.

    Parameters
    ----------
    changed : numpy.ndarray
        ``(height, width)`` bool.
    mcu : (int, int)
        MCU height and width in pixels (8 * the largest sampling factors).
    """
    mh, mw = mcu
    h, w = changed.shape
    rows, cols = -(-h // mh), -(-w // mw)
    pad = np.zeros((rows * mh, cols * mw), dtype=bool)
    pad[:h, :w] = changed
    return pad.reshape(rows, mh, cols, mw).any(axis=(1, 3))


def repair_jpeg_blocks(path, target, defects):
    """Write ``target``: the JPEG ``path`` with only its defective MCUs re-encoded.

    Returns
    -------
    repairfiles.RepairResult
        ``measures`` holds ``mcus`` (re-encoded MCUs), ``mcus_total``,
        ``outside_mean``/``outside_max`` (mean and largest absolute change,
        in levels, of decoded pixels outside the re-encoded MCUs) and
        ``inside_max``.

    Raises
    ------
    SkipFile
        jpeglib missing, or a JPEG it cannot rewrite (CMYK, lossless...).
    """
    from .repairfiles import RepairResult, _fsync_replace, _unrepaired
    jpeglib = _jpeglib()
    pixels = decode_rgb(path)
    # a JPEG smears a defect over a pixel or two and, through YCbCr, into
    # every channel: rebuild a wider footprint in all channels
    fixed, changed, left = repair_image(pixels, defects, grow=1, all_channels=True)
    try:
        original = jpeglib.read_dct(os.fspath(path))
        original.load()
    except Exception as exc:  # noqa: BLE001 - libjpeg's messages vary
        raise SkipFile(f"cannot read the JPEG's coefficients: {exc}") from None
    samp = np.asarray(original.samp_factor).reshape(-1, 2)   # (vertical, horizontal)
    vmax, hmax = int(samp[:, 0].max()), int(samp[:, 1].max())
    mcus = mcu_mask(changed, (8 * vmax, 8 * hmax))
    directory = os.path.dirname(os.path.abspath(os.fspath(target)))
    fd, tmp_enc = tempfile.mkstemp(prefix=".hotpixel-", suffix=".jpg", dir=directory)
    os.close(fd)
    fd, tmp_out = tempfile.mkstemp(prefix=".hotpixel-", suffix=".jpg", dir=directory)
    os.close(fd)
    try:
        if mcus.any():
            spatial = fixed if fixed.shape[2] == 3 else fixed[:, :, :1]
            enc = jpeglib.from_spatial(np.ascontiguousarray(spatial))
            enc.samp_factor = original.samp_factor
            enc.write_spatial(tmp_enc, qt=original.qt, quant_tbl_no=original.quant_tbl_no)
            fresh = jpeglib.read_dct(tmp_enc)
            fresh.load()
            comps = [("Y", "Y"), ("Cb", "Cb"), ("Cr", "Cr")][:len(samp)]
            for i, (name, _) in enumerate(comps):
                dst, src = getattr(original, name), getattr(fresh, name)
                if dst is None or src is None or dst.shape != src.shape:
                    raise SkipFile("the re-encoded JPEG's block layout differs from the photo's")
                v, hh = int(samp[i, 0]), int(samp[i, 1])
                for my, mx in zip(*np.nonzero(mcus)):
                    ys, xs = slice(my * v, (my + 1) * v), slice(mx * hh, (mx + 1) * hh)
                    dst[ys, xs] = src[ys, xs]
                setattr(original, name, dst)
        # libjpeg writes its own JFIF header: keep every other marker as it was
        original.markers = [m for m in original.markers
                            if not (str(m.type).endswith("APP0") and bytes(m.content[:5]) == b"JFIF\0")]
        original.write_dct(tmp_out)
        _fsync_replace(tmp_out, target)
    except SkipFile:
        raise
    except Exception as exc:  # noqa: BLE001
        raise SkipFile(f"cannot rewrite the JPEG's coefficients: {exc}") from None
    finally:
        for tmp in (tmp_enc, tmp_out):
            if os.path.exists(tmp):
                os.unlink(tmp)
    after = decode_rgb(target)
    mh, mw = 8 * vmax, 8 * hmax
    inside = np.repeat(np.repeat(mcus, mh, axis=0), mw, axis=1)[:pixels.shape[0], :pixels.shape[1]]
    diff = np.abs(after.astype(np.int16) - pixels.astype(np.int16))
    out_diff = diff[~inside]
    measures = {
        "mcus": int(mcus.sum()), "mcus_total": int(mcus.size),
        "outside_mean": float(out_diff.mean()) if out_diff.size else 0.0,
        "outside_max": int(out_diff.max()) if out_diff.size else 0,
        "inside_max": int(diff[inside].max()) if inside.any() else 0,
    }
    return RepairResult(source=os.fspath(path), target=os.fsdecode(target),
                        repaired=len(defects) - len(left),
                        unrepaired=_unrepaired(left, "outside the image"), measures=measures)
