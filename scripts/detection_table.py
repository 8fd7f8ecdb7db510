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
kind is reported at its index (raw) or within 2 px (photos); every other
reported line is a false alarm ("false lines / set").

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
}
_PHOTO = (320, 480)
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


def _planted_lines(seed, params, height, width):
    """One column and one row, away from the frame's edges, or None."""
    if "lines" not in params:
        return None
    lo, hi = params["lines"]
    rng = np.random.default_rng(10_000 + seed)
    sign = rng.choice([-1.0, 1.0], 2)
    return [("column", int(rng.integers(16, width - 16)), float(sign[0] * rng.uniform(lo, hi))),
            ("row", int(rng.integers(16, height - 16)), float(sign[1] * rng.uniform(lo, hi)))]


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
        for f in frames:
            acc.add(f)
        mean, var, res = acc.finish()
        cfa = cfa_array("RGGB", h, w)
        found = detect_raw(mean, var, n, cfa, opts, white=4095,
                           residuals=res if temporal else None)
        planted = [(t["x"], t["y"], _group(t["kind"], t["label"] == "weak_hot", t["value"]))
                   for t in truth]
        return planted, found, 0, lines or [], find_lines(mean, cfa=cfa, residuals=res if temporal else None)
    darks = kind == "darks"
    h, w = _PHOTO
    defects = {k: 0 for k in ("hot", "weak_hot", "stuck", "dead", "noisy")} if clean else None
    lines = _planted_lines(seed, params, h, w)
    frames, truth = simulate_frames(n, h, w, seed=seed, darks=darks, defects=defects,
                                    dead_any_colour=params.get("dead_any_colour", False),
                                    lines=lines)
    shape = (h, w, 1) if darks else (h, w, 3)
    acc = _Moments(shape, 2)
    for f in frames:
        if kind == "jpeg":
            f = _jpeg(f, params["quality"], params["subsampling"])
        acc.add(f)
    mean, var, res = acc.finish()
    if darks:
        opts = DetectOptions(darks=True, cluster=False, temporal=temporal)
    found = detect(mean, var, n, opts, residuals=res if temporal else None)
    planted = [(p.x, p.y, _group(p.kind, p.weak, p.level)) for p in truth]
    return planted, found, 1, lines or [], find_lines(mean, residuals=res if temporal else None)


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


def _score_lines(planted, found, reach):
    """(planted lines found, planted lines, reported lines that match none)."""
    hit = sum(1 for kind, index, _ in planted
              if any(d.kind == kind and abs(d.index - index) <= reach for d in found))
    false = sum(1 for d in found
                if not any(d.kind == kind and abs(d.index - index) <= reach
                           for kind, index, _ in planted))
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
                for i, v in enumerate(_score_lines(planted_lines, found_lines, 2 * radius)):
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
