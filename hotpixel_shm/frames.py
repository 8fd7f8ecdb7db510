"""The frame in which each raw developer applies a bad-pixel list.

hotpixel_shm analyses a raw file as LibRaw's visible area
(``raw_image_visible``): column ``x``, row ``y`` counted from LibRaw's left
and top margins. The programs that read a list count from their own origin:

==============  ==========================================================
program         origin of its list's coordinates
==============  ==========================================================
LibRaw          its visible area (``dcraw_emu -P``, rawpy's
                ``bad_pixels_path``): the analysis frame itself.
                LibRaw rounds odd margins of Bayer sensors up to the next
                even number (and Fujifilm X-Trans margins up to a multiple
                of 6).
Siril           the CFA image it loads, which it gets from LibRaw: the
                analysis frame.
dcraw           its own margins; for a DNG the ActiveArea's top and left,
                not rounded.
RawTherapee     its raw crop, which for a DNG starts at the ActiveArea like
                dcraw's (its dcraw-derived decoder); a ``rawCrop`` of
                ``camconst.json`` for the camera, if any, is not read here.
==============  ==========================================================

So with a DNG whose ActiveArea starts at row 7, column 11, LibRaw counts
from row 8, column 12, and a defect at LibRaw's ``(x, y)`` is dcraw's
``(x + 1, y + 1)``. For other raw formats dcraw's margins come from tables
compiled into dcraw and cannot be read from the file: the lists then keep
LibRaw's frame and say so.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .tiffmeta import TAG, dng_raw_tags

__all__ = ["Frame", "PROGRAMS", "program_frames", "identity_frames", "active_area",
           "frames_for_inputs"]

#: The programs a list is written for, as named by the command-line options.
PROGRAMS = ("dcraw", "libraw", "rawtherapee", "siril")


@dataclass(frozen=True)
class Frame:
    """Where a program's list coordinates start, relative to the analysis frame.

    Attributes
    ----------
    program : str
        One of ``PROGRAMS``.
    dx, dy : int
        Add these to an analysed ``(x, y)`` to get the program's coordinates.
    known : bool
        False when the offset could not be worked out from the file (then
        ``dx = dy = 0`` and ``note`` says why).
    note : str
        One line for the list's header comment.
    """

    program: str
    dx: int = 0
    dy: int = 0
    known: bool = True
    note: str = ""


def identity_frames(note: str = "") -> Dict[str, Frame]:
    """Every program in the analysis frame (photos that are not raw files)."""
    return {p: Frame(p, 0, 0, True, note) for p in PROGRAMS}


def active_area(path) -> Optional[Tuple[int, int, int, int]]:
    """A DNG's ActiveArea ``(top, left, bottom, right)``, or None.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    tuple of int or None
        None when the file is not a DNG with a raw IFD; the whole mosaic
        ``(0, 0, height, width)`` when the raw IFD has no ActiveArea tag.
    """
    tags = dng_raw_tags(path)
    if tags is None:
        return None
    area = tags.get(TAG["ActiveArea"])
    if area and len(area) == 4:
        return tuple(int(v) for v in area)
    h = tags.get(TAG["ImageLength"], (0,))[0]
    w = tags.get(TAG["ImageWidth"], (0,))[0]
    return (0, 0, int(h), int(w))


def program_frames(path, libraw_margins: Tuple[int, int]) -> Dict[str, Frame]:
    """The frame of each program for the raw files like ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        One analysed raw file (all files of a run share a camera and size).
    libraw_margins : (int, int)
        LibRaw's ``(top_margin, left_margin)`` of that file, i.e. where the
        analysis frame starts in the full raw mosaic.

    Returns
    -------
    dict
        ``{program: Frame}`` for every name of ``PROGRAMS``.
    """
    top, left = (int(v) for v in libraw_margins)
    name = os.path.basename(os.fspath(path))
    frames = {
        "libraw": Frame("libraw", 0, 0, True,
                        f"frame: LibRaw's visible area (margins top {top}, left {left})"),
        "siril": Frame("siril", 0, 0, True,
                       f"frame: the CFA image Siril loads through LibRaw "
                       f"(margins top {top}, left {left})"),
    }
    area = active_area(path)
    if area is None:
        for prog, label in (("dcraw", "dcraw"), ("rawtherapee", "RawTherapee")):
            frames[prog] = Frame(prog, 0, 0, False,
                                 f"frame NOT VERIFIED: {label}'s margins for this camera are "
                                 f"compiled into {label} and cannot be read from {name}; "
                                 f"LibRaw's visible area (top {top}, left {left}) is used, "
                                 f"which is {label}'s too unless {label}'s margins are odd")
        return frames
    a_top, a_left = area[0], area[1]
    dx, dy = left - a_left, top - a_top
    frames["dcraw"] = Frame("dcraw", dx, dy, True,
                            f"frame: dcraw's, from the DNG ActiveArea (top {a_top}, left {a_left})")
    frames["rawtherapee"] = Frame(
        "rawtherapee", dx, dy, True,
        f"frame: RawTherapee's raw crop, from the DNG ActiveArea (top {a_top}, left {a_left}); "
        f"a camconst.json rawCrop for this camera, if RawTherapee has one, is not applied")
    return frames


def frames_for_inputs(raw_paths) -> Dict[str, Frame]:
    """Each program's frame for a run's inputs.

    Parameters
    ----------
    raw_paths : sequence of str
        The analysed raw files (empty when the photos were JPEG, TIFF, PNG...).

    Returns
    -------
    dict
        ``{program: Frame}``; the identity for photos that are not raw files
        (dcraw, LibRaw and RawTherapee apply lists to raw files only; Siril
        loads those photos as they are stored).
    """
    if not raw_paths:
        return identity_frames()
    from .rawio import probe_raw
    info = probe_raw(raw_paths[0])
    return program_frames(info.path, (info.top_margin, info.left_margin))
