"""The result of one body's analysis: statistics, defects, the report, and
writing the outputs (each once, atomically).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import List, Optional

from . import __version__
from .camera import Camera
from .model import Defect, Stats

__all__ = ["Analysis", "OUTPUT_OPTIONS", "output_for"]

#: The outputs :meth:`Analysis.write` knows, in the order they are written.
OUTPUT_OPTIONS = ("json", "csv", "dcraw", "libraw", "rawtherapee", "siril", "mask", "picture")


@dataclass
class Analysis:
    """One finished analysis of one camera body: statistics, defects and how
    they were made.

    Attributes
    ----------
    camera : camera.Camera
        The body (``camera.UNKNOWN`` for photos that name none).
    plan : budget.Plan
        The plan the run followed.
    stats : Stats
        The finished statistics (with their metadata).
    defects : list of Defect
        Worst first.
    lines : list of lines.LineDefect
        Bad columns and rows, strongest first.
    skipped : list of (path, reason)
        Every input left out, with the reason.
    workers : int
        Worker processes that ran.
    seconds : float
        Wall time from the first input step to the end of detection.
    shots : list of camera.Shot
        When and how each photo read in this run was taken.
    history : dict or None
        Set by :meth:`compare`.
    frames : dict
        ``{program: frames.Frame}``: where each program's bad-pixel list
        counts from (``frames.frames_for_inputs``).
    """

    camera: Camera
    plan: object
    stats: Stats
    defects: List[Defect]
    skipped: list
    workers: int
    seconds: float
    shots: list = field(default_factory=list)
    history: Optional[dict] = None
    frames: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def date(self) -> str:
        """The date this analysis describes (``YYYY-MM-DD``): its newest
        photo's capture date, else the day it was made."""
        taken = sorted(s.taken for s in self.shots if s.taken)
        return taken[-1][:10] if taken else self.created[:10]

    def counts(self) -> dict:
        """Defects by kind, and by CFA colour (raw) or by channel (photos)."""
        from .model import KINDS
        by_kind = {k: sum(1 for d in self.defects if d.kind == k) for k in KINDS}
        if self.stats.mosaic is not None:
            colours = sorted({d.colour for d in self.defects if d.colour})
            return {"kind": by_kind,
                    "colour": {c: sum(1 for d in self.defects if d.colour == c) for c in colours}}
        channels = range(self.stats.shape[2])
        return {"kind": by_kind,
                "channel": {str(c): sum(1 for d in self.defects if c in d.channels) for c in channels}}

    def report(self) -> dict:
        """The JSON report (``export.build_report``'s stable schema, plus
        ``camera``, ``conditions``, ``counts``, ``created`` and, after
        :meth:`compare`, ``history``).

        ``engine.dtype`` and ``engine.tier`` both hold the accumulator tier
        (``tier`` is the clearer name; ``dtype`` stays for readers of older
        reports).
        """
        from .camera import conditions
        from .export import build_report
        extra = {"camera": self.camera.to_dict(), "conditions": conditions(self.shots),
                 "counts": self.counts(), "created": self.created}
        if self.history is not None:
            extra["history"] = self.history
        return build_report(
            version=__version__, shape=list(self.stats.shape),
            used=self.stats.n, skipped=self.skipped,
            engine={"workers": self.workers, "dtype": self.stats.tier,
                    "budget_bytes": int(self.plan.budget_bytes),
                    "planned_bytes": int(self.plan.total_bytes),
                    "seconds": round(float(self.seconds), 3), "tier": self.stats.tier,
                    "batch": int(getattr(self.plan, "batch", 1)),
                    "bands": int(getattr(self.plan, "bands", 1)), "kernels": _kernels_name()},
            defects=self.defects, extra=extra, lines=self.lines)

    def compare(self, old, path=None) -> dict:
        """Classify the defects against an earlier report of the same body.

        Parameters
        ----------
        old : path-like or dict
            The earlier JSON report (or its contents).
        path : str, optional
            The report's file name, for messages and ``history.compared_with``.

        Returns
        -------
        dict
            The ``history`` (also kept in :attr:`history` and the report);
            every defect gets ``status`` and ``first_seen``, new ones
            ``bad_since`` (see ``history.compare``); so does every line
            defect, and ``history["lines"]`` counts ``new`` and
            ``persisting`` lines and lists the ``gone`` ones
            (``history.compare_lines``).

        Raises
        ------
        HotPixelError
            ``old`` cannot be read, or is a report of another body or shape.
        """
        from . import history
        if not isinstance(old, dict):
            path, old = os.fsdecode(old), history.load_report(old)
        path = path or "the earlier report"
        raw = self.stats.mosaic is not None
        self.defects, self.history = history.compare(
            self.defects, old, camera=self.camera, shape=self.stats.shape,
            raw=raw, date=self.date, path=path)
        self.lines, self.history["lines"] = history.compare_lines(self.lines, old, raw=raw,
                                                                  date=self.date)
        return self.history

    def write(self, *, json=None, csv=None, dcraw=None, libraw=None, rawtherapee=None,
              siril=None, mask=None, picture=None) -> List[str]:
        """Write the outputs asked for, each once and atomically.

        Parameters
        ----------
        json, csv, dcraw, libraw, siril, mask, picture : path-like, optional
            See ``export`` and ``picture``; the bad-pixel lists are written
            in their programs' frames (``frames``).
        rawtherapee : path-like, optional
            A file, or a directory in which the file gets RawTherapee's name
            for the camera (per body, ``<Make> <Model> <serial>.badpixels``,
            when the serial is known).

        Returns
        -------
        list of str
            The files written, in the order of ``OUTPUT_OPTIONS``.
        """
        from . import export
        wanted = {"json": json, "csv": csv, "dcraw": dcraw, "libraw": libraw,
                  "rawtherapee": rawtherapee,
                  "siril": siril, "mask": mask, "picture": picture}
        written = []
        for option in OUTPUT_OPTIONS:
            path = wanted[option]
            if path:
                written.append(self._write_one(export, option, path))
        return written

    def _write_one(self, export, option, path) -> str:
        d, lines = self.defects, self.lines
        if option == "json":
            export.write_json(path, self.report())
        elif option == "csv":
            export.write_csv(path, d, lines)
        elif option == "dcraw":
            export.write_dcraw(path, d, self.frames.get("dcraw"), lines=lines)
        elif option == "libraw":
            export.write_libraw(path, d, self.frames.get("libraw"), lines=lines)
        elif option == "rawtherapee":
            cam = self.camera
            return export.write_rawtherapee(path, d, make=cam.make, model=cam.model,
                                            serial=cam.serial, frame=self.frames.get("rawtherapee"),
                                            lines=lines)
        elif option == "siril":
            export.write_siril(path, d, self.frames.get("siril"), lines=lines)
        elif option == "mask":
            export.write_mask(path, d, self.stats.shape, lines=lines)
        elif option == "picture":
            from .picture import write_picture
            write_picture(path, self.stats.mean, d, title=self._picture_title(), lines=lines)
        return os.fsdecode(path)

    def _picture_title(self):
        if not self.camera.known:
            return None
        return f"{self.camera.label}: {len(self.defects)} defect(s) found"



def output_for(path, camera: Camera, option: str = None):
    """``path`` with the camera's name inserted before its extension
    (``defects.json`` -> ``defects.NIKON_D750_3012345.json``), for runs over
    several bodies.  A ``--rawtherapee`` directory stays as it is (the file
    in it is named per body)."""
    if path is None:
        return None
    if option == "rawtherapee" and os.path.isdir(path):
        return path
    text = os.fsdecode(path)
    head, name = os.path.split(text)
    stem, ext = os.path.splitext(name)
    if not stem:  # ".json": the extension is the whole name
        stem, ext = name, ""
    return os.path.join(head, f"{stem}.{camera.file_tag}{ext}")


def _kernels_name():
    from .kernels import NAME
    return NAME
