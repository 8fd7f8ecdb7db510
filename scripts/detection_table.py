"""Recall and false alarms of the detector on simulated cameras: README's detection table.

Every row is a kind of photo set made by the simulated cameras of
``hotpixel_shm.synth`` (JPEG/PNG photos, dark frames) and
``hotpixel_shm.dng`` (raw mosaics of varied scenes), ``--seeds`` sets per
row.  The statistics are computed in-process in float64 (mean, variance and
the temporal residual statistics of ``hotpixel_shm.residual``), so the table
measures detection, not the engine.

A planted defect is found when a reported defect lies at its photosite
(raw mosaics) or within 1 px of it (photos: JPEG may move the strongest
pixel); a reported defect farther than 2 px from every planted one is a
false alarm.  "strong" is hot, stuck and dead; "warm" the weak hot ones.
Bad columns and rows (``hotpixel_shm.lines.find_lines``) are looked for in
every set: in the rows that plant one column and one row (random index,
offset of random sign and size) a planted line is found when a line of its
kind is reported at its index (raw) or within 2 px (photos), and a partial
one (the "partial" rows: over a quarter to 4/9 of the frame) only with its
first and last photosite within 4 (raw) or 8 (photos) of the planted ones;
every other reported line is a false alarm ("false lines / set").  The
"poles" rows add a column and a row over part of the frame to 3 photos only
(a thin structure seen in a few photos at the same place), which must not
be reported.

Usage::

    python scripts/detection_table.py [--seeds 16] [--rows raw,jpeg420,...] [--no-temporal]
"""
from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
from PIL import Image

from hotpixel_shm.detect import DetectOptions, detect
from hotpixel_shm.dng import cfa_array, simulate_raw_frames
from hotpixel_shm.lines import find_lines
from hotpixel_shm.rawdetect import detect_raw
from hotpixel_shm.residual import ResidualAccumulator, residual_layout
from hotpixel_shm.synth import simulate_frames

# name -> (description, frame counts, kind, parameters)
ROWS = {
    "raw": ("raw photos of varied scenes, 12-bit, warm +100..+300 DN", (16, 24, 60), "raw", {}),
    "jpeg422": ("JPEG 4:2:2 q92", (24, 60), "jpeg", {"quality": 92, "subsampling": "4:2:2"}),
    "jpeg420": ("JPEG 4:2:0 q85, vignetting, date stamp, dead R/G/B", (16, 24, 60), "jpeg",
                {"quality": 85, "subsampling": "4:2:0", "dead_any_colour": True}),
    "clean420": ("defect-free JPEG 4:2:0 q85 (sky, border, stamp, texture)", (16, 24, 60),
                 "jpeg", {"quality": 85, "subsampling": "4:2:0", "clean": True}),
    "cleanraw": ("defect-free raw photos (clipped lamp, texture)", (16, 24), "raw",
                 {"clean": True}),
    "darks": ("dark frames, 16-bit", (16, 24), "darks", {}),
    "rawlines": ("raw photos, a bad column and row of 15..40 DN", (8, 16, 24), "raw",
                 {"clean": True, "lines": (15.0, 40.0)}),
    "jpeglines": ("JPEG 4:2:0 q85, a bad column and row of 3..8 of 255", (16, 24), "jpeg",
                  {"quality": 85, "subsampling": "4:2:0", "clean": True, "lines": (3.0, 8.0)}),
    "rawpartial": ("raw photos, partial column and row (< half), 15..40 DN", (16, 24), "raw",
                   {"clean": True, "lines": (15.0, 40.0), "partial": True}),
    "jpegpartial": ("JPEG 4:2:0 q85, partial column and row (< half), 3..8", (16, 24), "jpeg",
                    {"quality": 85, "subsampling": "4:2:0", "clean": True, "lines": (3.0, 8.0),
                     "partial": True}),
    "rawpoles": ("raw photos, a pole and a beam in 3 photos, 100..300 DN", (16, 24), "raw",
                 {"clean": True, "poles": (100.0, 300.0)}),
    "jpegpoles": ("JPEG 4:2:0 q85, a pole and a beam in 3 photos, 20..60", (16, 24), "jpeg",
                  {"quality": 85, "subsampling": "4:2:0", "clean": True, "poles": (20.0, 60.0)}),
}
_PHOTO = (320, 480)
# A found partial line's from/to may be this far from the planted one's:
# raw, two same-colour photosites; photos, one 8x8 JPEG block.
_EXTENT_TOL = {"raw": 4, "jpeg": 8, "darks": 8}
_RAW = (256, 384)


class _Moments:
    """Float64 sums of one set (in-process reference statistics)."""

    def __init__(self, shape, period):
        self.s1 = np.zeros(shape, np.float64)
        self.s2 = np.zeros(shape, np.float64)
        self.n = 0
        self.res = ResidualAccumulator(residual_layout(shape, period))

    def add(self, frame):
        f = frame.reshape(self.s1.shape).astype(np.float64)
        self.s1 += f
        self.s2 += f * f
        self.n += 1
        self.res.update(frame)

    def finish(self):
        mean = self.s1 / self.n
        var = np.maximum(self.s2 / self.n - mean * mean, 0)
        return mean, var, self.res.finish()


def _jpeg(frame, quality, subsampling):
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=quality, subsampling=subsampling)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _planted_lines(seed, params, height, width, key="lines"):
    """One column and one row, away from the frame's edges, or None.  With
    ``params["partial"]``, each over a random quarter to 4/9 of the frame's
    height (width): ``(kind, index, offset, first, last)``."""
    if key not in params:
        return None
    lo, hi = params[key]
    rng = np.random.default_rng(10_000 + seed)
    sign = rng.choice([-1.0, 1.0], 2)
    out = [("column", int(rng.integers(16, width - 16)), float(sign[0] * rng.uniform(lo, hi))),
           ("row", int(rng.integers(16, height - 16)), float(sign[1] * rng.uniform(lo, hi)))]
    if params.get("partial") or key == "poles":
        for i, size in ((0, height), (1, width)):
            length = int(rng.integers(size // 4, 4 * size // 9))
            first = int(rng.integers(0, size - length))
            out[i] = out[i] + (first, first + length - 1)
    return out


def _add_poles(frames, seed, poles, n):
    """``poles`` (lines as ``_planted_lines`` gives them) added to 3 of the
    ``n`` frames only: thin structures seen in a few photos at the same
    place, which offset the mean image as a partial bad line would."""
    from hotpixel_shm.synth import apply_lines
    hit = set(np.random.default_rng(20_000 + seed).choice(n, 3, replace=False).tolist())
    for i, f in enumerate(frames):
        if poles and i in hit:
            f = f.astype(np.float64)
            apply_lines(f, poles)
            f = np.clip(np.rint(f), 0, 4095 if f.ndim == 2 or f.shape[-1] == 1 else 255)
        yield f


def _extent_ok(line, found, tol):
    """A planted partial line's first and last photosite within ``tol`` of a found one's."""
    return len(line) < 5 or (abs(found.start - line[3]) <= tol and abs(found.stop - line[4]) <= tol)


def _one_set(kind, n, seed, params, temporal):
    """Planted truth ``[(x, y, group)]``, reported defects, the distance a
    defect may be off, planted and reported lines of one simulated set."""
    clean = params.get("clean", False)
    opts = DetectOptions(temporal=temporal)
    if kind == "raw":
        h, w = _RAW
        counts = dict(n_hot=0, n_weak_hot=0, n_stuck=0, n_dead=0, n_noisy=0) if clean else \
            dict(n_hot=3, n_weak_hot=8, n_stuck=2, n_dead=3, n_noisy=2)
        lines = _planted_lines(seed, params, h, w)
        frames, truth = simulate_raw_frames(n, width=w, height=h, seed=seed,
                                            weak_range=(100.0, 300.0), lines=lines, **counts)
        acc = _Moments((h, w, 1), 2)
        for f in _add_poles(frames, seed, _planted_lines(seed, params, h, w, "poles"), n):
            acc.add(np.asarray(f).astype(np.uint16))
        mean, var, res = acc.finish()
        cfa = cfa_array("RGGB", h, w)
        found = detect_raw(mean, var, n, cfa, opts, white=4095,
                           residuals=res if temporal else None)
        planted = [(t["x"], t["y"], _group(t["kind"], t["label"] == "weak_hot", t["value"]))
                   for t in truth]
        return planted, found, 0, lines or [], find_lines(mean, var, cfa=cfa,
                                                residuals=res if temporal else None)
    darks = kind == "darks"
    h, w = _PHOTO
    defects = {k: 0 for k in ("hot", "weak_hot", "stuck", "dead", "noisy")} if clean else None
    lines = _planted_lines(seed, params, h, w)
    frames, truth = simulate_frames(n, h, w, seed=seed, darks=darks, defects=defects,
                                    dead_any_colour=params.get("dead_any_colour", False),
                                    lines=lines)
    shape = (h, w, 1) if darks else (h, w, 3)
    acc = _Moments(shape, 2)
    poles = None if darks else _planted_lines(seed, params, h, w, "poles")
    for f in _add_poles(frames, seed, poles, n):
        f = np.asarray(f).astype(np.uint16 if darks else np.uint8)
        if kind == "jpeg":
            f = _jpeg(f, params["quality"], params["subsampling"])
        acc.add(f)
    mean, var, res = acc.finish()
    if darks:
        opts = DetectOptions(darks=True, cluster=False, temporal=temporal)
    found = detect(mean, var, n, opts, residuals=res if temporal else None)
    planted = [(p.x, p.y, _group(p.kind, p.weak, p.level)) for p in truth]
    return planted, found, 1, lines or [], find_lines(mean, var,
                                                residuals=res if temporal else None)


def _group(kind, weak, level):
    if kind == "noisy":
        return "noisy"
    if kind == "hot" and weak:
        return "warm"
    return "strong"


def _score(planted, found, radius):
    hit = {"strong": [0, 0], "warm": [0, 0], "noisy": [0, 0]}
    for x, y, g in planted:
        hit[g][1] += 1
        if any(abs(d.x - x) <= radius and abs(d.y - y) <= radius for d in found):
            hit[g][0] += 1
    false = sum(1 for d in found
                if not any(abs(d.x - x) <= 2 and abs(d.y - y) <= 2 for x, y, _ in planted))
    return hit, false


def _score_lines(planted, found, reach, tol):
    """(planted lines found, planted lines, reported lines that match none).
    A partial line counts as found only with its first and last photosite
    within ``tol``."""
    hit = sum(1 for line in planted
              if any(d.kind == line[0] and abs(d.index - line[1]) <= reach
                     and _extent_ok(line, d, tol) for d in found))
    false = sum(1 for d in found
                if not any(d.kind == line[0] and abs(d.index - line[1]) <= reach
                           for line in planted))
    return hit, len(planted), false


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16, help="sets per row (default 16)")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows: "
                    + ", ".join(ROWS))
    ap.add_argument("--frames", default=None, help="comma-separated frame counts (default: "
                    "each row's own)")
    ap.add_argument("--no-temporal", action="store_true",
                    help="mean/variance tests only (no residual statistics)")
    args = ap.parse_args(argv)
    print(f"{'set':58s} {'n':>3s} {'strong':>9s} {'warm':>9s} {'noisy':>7s} "
          f"{'false/set':>9s} {'lines':>7s} {'false lines/set':>15s} {'sets':>4s} {'s':>5s}")
    for name in args.rows.split(","):
        desc, counts, kind, params = ROWS[name]
        if args.frames:
            counts = tuple(int(v) for v in args.frames.split(","))
        for n in counts:
            t0 = time.perf_counter()
            tot = {"strong": [0, 0], "warm": [0, 0], "noisy": [0, 0]}
            false = []
            lines = [0, 0, 0]
            for seed in range(args.seeds):
                planted, found, radius, planted_lines, found_lines = _one_set(
                    kind, n, seed, params, not args.no_temporal)
                for i, v in enumerate(_score_lines(planted_lines, found_lines, 2 * radius,
                                                          _EXTENT_TOL[kind])):
                    lines[i] += v
                hit, fa = _score(planted, found, radius)
                for g in tot:
                    tot[g][0] += hit[g][0]
                    tot[g][1] += hit[g][1]
                false.append(fa)

            def cell(g):
                k, m = tot[g]
                return f"{k}/{m}" if m else "-"
            line_cell = f"{lines[0]}/{lines[1]}" if lines[1] else "-"
            print(f"{desc:58s} {n:3d} {cell('strong'):>9s} {cell('warm'):>9s} "
                  f"{cell('noisy'):>7s} {np.mean(false):9.2f} {line_cell:>7s} "
                  f"{lines[2] / args.seeds:15.2f} {args.seeds:4d} "
                  f"{time.perf_counter() - t0:5.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
