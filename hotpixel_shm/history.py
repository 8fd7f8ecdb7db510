"""Defect history: compare a new defect list with an earlier report of the
same body (``--compare OLD.json``): which defects are new, which persist,
which are gone.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import replace
from typing import List, Optional, Tuple

from .camera import Camera, capture_unix
from .errors import HotPixelError
from .model import Defect

__all__ = ["load_report", "report_date", "check_same_body", "compare", "compare_lines", "today"]


def load_report(path) -> dict:
    """Read an earlier JSON report.

    Raises
    ------
    HotPixelError
        Unreadable, not JSON, or not a hotpixel_shm report.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except FileNotFoundError:
        raise HotPixelError(f"{os.fsdecode(path)}: no such file") from None
    except (OSError, ValueError) as exc:
        raise HotPixelError(f"{os.fsdecode(path)}: cannot read the report: {exc}") from None
    if (not isinstance(report, dict) or not isinstance(report.get("defects"), list)
            or not isinstance(report.get("shape"), list)):
        raise HotPixelError(f"{os.fsdecode(path)}: not a hotpixel_shm JSON report")
    return report


def report_date(report: dict) -> Optional[str]:
    """The date (``YYYY-MM-DD``) a report describes: its newest photo's
    capture date, else the day it was made; None if it says neither."""
    captured = (report.get("conditions") or {}).get("captured") or {}
    for text in (captured.get("last"), report.get("created")):
        if isinstance(text, str) and len(text) >= 10:
            return text[:10]
    return None


def _last_seen_good(report: dict) -> int:
    """Unix time of the report's newest photo (0 when it does not say)."""
    captured = (report.get("conditions") or {}).get("captured") or {}
    value = captured.get("last_unix")
    if isinstance(value, int) and value > 0:
        return value
    return capture_unix(captured.get("last")) or 0


def check_same_body(old: dict, camera: Optional[Camera], shape, path) -> None:
    """Refuse (HotPixelError) a report of another body or frame shape."""
    name = os.fsdecode(path)
    old_shape = [int(v) for v in old["shape"]]
    if old_shape != [int(v) for v in shape]:
        raise HotPixelError(f"{name} is a report of a {old_shape[1]}x{old_shape[0]}x{old_shape[2]} "
                            f"frame, this run's is {shape[1]}x{shape[0]}x{shape[2]}: a history "
                            "compares one camera body with itself")
    old_cam = Camera.from_dict(old.get("camera"))
    if camera is not None and camera.known and old_cam.known and old_cam != camera:
        raise HotPixelError(f"{name} is a report of {old_cam.label}, this run analyses "
                            f"{camera.label}: a history compares one camera body with itself")


def compare(defects: List[Defect], old: dict, *, camera: Optional[Camera], shape, raw: bool,
            date: str, path="OLD.json") -> Tuple[List[Defect], dict]:
    """Classify ``defects`` against the earlier report ``old``.

    Parameters
    ----------
    defects : list of Defect
        This run's defects.
    old : dict
        The earlier report (:func:`load_report`).
    camera : Camera or None
        This run's body; a report of another body is refused.
    shape : sequence of int
        This run's ``(height, width, channels)``; a report of another shape is refused.
    raw : bool
        Raw photosites: a defect is the same only at the same photosite;
        photos: within 1 pixel (demosaicing and JPEG move the peak).
    date : str
        This run's date (``YYYY-MM-DD``): ``first_seen`` of new defects.
    path : str
        The report's file name, for messages.

    Returns
    -------
    defects : list of Defect
        With ``status`` ``"new"`` or ``"persisting"`` and ``first_seen``
        (carried over from ``old`` for persisting ones); new ones get
        ``bad_since``, the capture time of ``old``'s newest photo (Unix
        seconds; 0 when ``old`` does not say), persisting ones 0.
    history : dict
        ``compared_with``, ``since`` (``old``'s date), counts of ``new``,
        ``persisting`` and ``gone``, and ``gone``: the defects of ``old``
        not found now.

    Raises
    ------
    HotPixelError
        ``old`` is a report of another body or frame shape.
    """
    check_same_body(old, camera, shape, path)
    since = report_date(old)
    radius = 0 if raw else 1
    old_defects = [d for d in old["defects"] if isinstance(d, dict) and "x" in d and "y" in d]
    by_place = {}
    for d in old_defects:
        by_place.setdefault((int(d["x"]), int(d["y"])), []).append(d)
    matched = set()
    out = []
    seen_good = _last_seen_good(old)
    for d in defects:
        hits = [(x, y) for x in range(d.x - radius, d.x + radius + 1)
                for y in range(d.y - radius, d.y + radius + 1) if (x, y) in by_place]
        if hits:
            matched.update(hits)
            firsts = [o.get("first_seen") or since for h in hits for o in by_place[h]]
            firsts = [f for f in firsts if f]
            out.append(replace(d, status="persisting", first_seen=min(firsts) if firsts else None,
                               bad_since=0))
        else:
            out.append(replace(d, status="new", first_seen=date, bad_since=seen_good))
    gone = [o for o in old_defects if (int(o["x"]), int(o["y"])) not in matched]
    history = {
        "compared_with": os.fsdecode(path),
        "since": since,
        "new": sum(1 for d in out if d.status == "new"),
        "persisting": sum(1 for d in out if d.status == "persisting"),
        "gone": [{k: o[k] for k in ("x", "y", "kind", "channels", "colour", "first_seen", "score")
                  if k in o} for o in gone],
    }
    return out, history


def compare_lines(lines, old: dict, *, raw: bool, date: str) -> Tuple[list, dict]:
    """Classify bad columns and rows against the earlier report ``old``.

    Parameters
    ----------
    lines : list of LineDefect
        This run's line defects (``lines.find_lines``).
    old : dict
        The earlier report; its ``lines`` (absent in reports of older
        versions: then every line is new).
    raw : bool
        Raw mosaics: the same line is the same column (row); photos: within
        2 pixels (a demosaic spreads a bad sensor column over its neighbours).
    date : str
        This run's date: ``first_seen`` of new lines.

    Returns
    -------
    lines : list of LineDefect
        Copies with ``status`` ``"new"`` or ``"persisting"`` and
        ``first_seen`` (carried over for persisting ones).  A line persists
        when the old report has a line of the same kind near the same
        index whose ``from``..``to`` overlaps its own.
    summary : dict
        Counts of ``new`` and ``persisting``, and ``gone``: the old report's
        lines not found now.
    """
    from .export import line_fields
    since = report_date(old)
    reach = 0 if raw else 2
    olds = []
    for entry in old.get("lines") or ():
        try:
            olds.append((entry, line_fields(entry)))
        except HotPixelError:
            continue                      # a malformed entry of an edited report
    matched = set()
    out = []
    for line in lines:
        hits = [i for i, (_, (kind, index, start, stop, _o, _s)) in enumerate(olds)
                if kind == line.kind and abs(index - line.index) <= reach
                and start <= line.stop and line.start <= stop]
        if hits:
            matched.update(hits)
            firsts = [olds[i][0].get("first_seen") or since for i in hits]
            firsts = [f for f in firsts if f]
            out.append(replace(line, status="persisting",
                               first_seen=min(firsts) if firsts else None))
        else:
            out.append(replace(line, status="new", first_seen=date))
    gone = [entry for i, (entry, _) in enumerate(olds) if i not in matched]
    summary = {"new": sum(1 for d in out if d.status == "new"),
               "persisting": sum(1 for d in out if d.status == "persisting"),
               "gone": [{k: e[k] for k in ("kind", "x", "y", "from", "to", "channels", "colour",
                                           "first_seen", "score") if k in e} for e in gone]}
    return out, summary


def today() -> str:
    """Today's date in UTC, ``YYYY-MM-DD``."""
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()
