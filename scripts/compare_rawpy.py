#!/usr/bin/env python
"""Compare hotpixel_shm with rawpy's own bad-pixel finder on the same raw set.

Makes a set of DNG files with planted defects (``hotpixel_shm.dng.
write_raw_set``; or takes existing files and their ``truth.json``), runs
``rawpy.enhance.find_bad_pixels`` (LibRaw's decoder, rawpy's per-photo 3x3
same-colour median test confirmed in 90% of the photos) and hotpixel_shm on
them, and prints recall per planted kind, false alarms and wall time side by
side as a Markdown table (``--json`` writes the same numbers).

hotpixel_shm runs as its command line, ``python -m hotpixel_shm --workers N
--json OUT FILES...``, when that reads raw files; otherwise (or with
``--in-process``) the statistics are computed here with numpy in one process
and handed to ``detect_raw``, and the table says so.

rawpy.enhance needs OpenCV or scikit-image besides rawpy
(``pip install opencv-python-headless``); hotpixel_shm needs neither.

Examples
--------
    python scripts/compare_rawpy.py --n 60 --width 1200 --height 800
    python scripts/compare_rawpy.py --keep sets/a --json cmp.json
    python scripts/compare_rawpy.py --truth sets/a/truth.json sets/a/*.dng
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from hotpixel_shm import rawio
from hotpixel_shm.dng import write_raw_set
from hotpixel_shm.rawdetect import detect_raw

LABELS = ("hot", "weak_hot", "stuck", "stuck_white", "dead", "noisy")


def run_rawpy(paths):
    """rawpy.enhance.find_bad_pixels with its defaults -> (set of (x, y), seconds)."""
    with warnings.catch_warnings():
        # rawpy.enhance warns at import about whichever of OpenCV/scikit-image is missing
        warnings.simplefilter("ignore")
        import rawpy.enhance
    t0 = time.perf_counter()
    coords = rawpy.enhance.find_bad_pixels(list(paths))
    seconds = time.perf_counter() - t0
    return {(int(x), int(y)) for y, x in np.asarray(coords).reshape(-1, 2)}, seconds


def _stats_in_process(paths):
    """Per-photosite mean and variance over the files (float64, one pass)."""
    first = rawio.read_raw(paths[0])
    total = np.zeros(first.shape, dtype=np.float64)
    total_sq = np.zeros(first.shape, dtype=np.float64)
    frame = np.empty(first.shape, dtype=np.uint16)
    # shifted sums (about the first frame) keep the variance accurate
    ref = first.astype(np.float64)
    for p in paths:
        rawio.read_raw(p, out=frame)
        d = frame - ref
        total += d
        total_sq += d * d
    n = len(paths)
    mean = total / n
    var = np.maximum(total_sq / n - mean * mean, 0.0)
    return mean + ref, var


def run_ours_in_process(paths, darks):
    """numpy statistics here + detect_raw -> (dict (x, y) -> kind, seconds)."""
    from hotpixel_shm.detect import DetectOptions
    t0 = time.perf_counter()
    info = rawio.probe_raw(paths[0])
    mean, var = _stats_in_process(paths)
    defects = detect_raw(mean, var, len(paths), info.cfa, DetectOptions(darks=darks),
                         colour_desc=info.colour_desc, white=info.white_level)
    seconds = time.perf_counter() - t0
    return {(d.x, d.y): d.kind for d in defects}, seconds


def run_ours_cli(paths, workers, darks, workdir):
    """The command line in a subprocess.

    Returns ``((found, seconds), mode)``, or ``(None, why)`` when the command
    line does not read the files as raw mosaics. ``found`` maps (x, y) to the
    kind. When the command line reads raw files but does not judge them per
    CFA colour (no ``colour`` in its defects), its saved statistics are
    judged here by ``detect_raw`` and that time is added.
    """
    out = os.path.join(workdir, "hotpixel_shm.json")
    stats = os.path.join(workdir, "stats.npz")
    cmd = [sys.executable, "-m", "hotpixel_shm", "--workers", str(workers), "-q",
           "--json", out, "--save-stats", stats]
    if darks:
        cmd.append("--darks")
    cmd += list(paths)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not os.path.exists(out):
        return None, (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    with open(out) as f:
        report = json.load(f)
    used = report.get("images", {}).get("used", 0)
    if used != len(paths) or list(report.get("shape", []))[2:] != [1]:
        return None, (f"the command line did not read the files as raw mosaics "
                      f"(used {used}, shape {report.get('shape')})")
    mode = f"`python -m hotpixel_shm --workers {workers}` (subprocess, interpreter start included)"
    defects = report["defects"]
    if defects and all("colour" in d for d in defects):
        return ({(int(d["x"]), int(d["y"])): d["kind"] for d in defects}, seconds), mode
    # raw read, but judged as a grey image: judge its statistics per CFA colour here
    from hotpixel_shm.detect import DetectOptions
    t0 = time.perf_counter()
    with np.load(stats, allow_pickle=False) as z:
        n, mean, var = int(z["n"]), z["mean"], z["var"]
    info = rawio.probe_raw(paths[0])
    found = detect_raw(mean, var, n, info.cfa, DetectOptions(darks=darks),
                       colour_desc=info.colour_desc, white=info.white_level)
    seconds += time.perf_counter() - t0
    mode += (" for the statistics (--save-stats), then detect_raw here (time added): "
             "the command line does not yet judge raw files per CFA colour")
    return ({(d.x, d.y): d.kind for d in found}, seconds), mode


def score(found, truth):
    """Recall per label, kind agreement and false alarms of a set of found sites."""
    at = {(t["x"], t["y"]): t for t in truth}
    rows = {}
    for label in LABELS:
        planted = [t for t in truth if t["label"] == label]
        hit = [t for t in planted if (t["x"], t["y"]) in found]
        rows[label] = {"planted": len(planted), "found": len(hit)}
    false = sorted(xy for xy in found if xy not in at)
    kinds_right, kind_mismatches = None, []
    if isinstance(found, dict):
        matched = sorted(xy for xy in found if xy in at)
        kinds_right = sum(found[xy] == at[xy]["kind"] for xy in matched)
        kind_mismatches = [{"x": x, "y": y, "label": at[(x, y)]["label"], "reported": found[(x, y)]}
                           for x, y in matched if found[(x, y)] != at[(x, y)]["kind"]]
    return {"labels": rows, "found_total": len(found), "false_alarms": len(false),
            "false_alarm_sites": [list(xy) for xy in false[:50]], "kinds_right": kinds_right,
            "kind_mismatches": kind_mismatches}


def markdown(result):
    peer, ours = result["rawpy"], result["hotpixel_shm"]
    lines = [
        f"Raw set: {result['images']} DNG photos of {result['width']}x{result['height']} "
        f"photosites{' (dark frames)' if result['darks'] else ''}, {result['planted']} planted defects.",
        f"hotpixel_shm ran as: {result['ours_mode']}.",
        f"Wall times: fastest of {result['repeat']} run(s) each, {result['cpus']} CPUs, "
        f"load average {result['load_average_at_end'][0]:.1f} at the end.",
        "",
        "| | rawpy.enhance.find_bad_pixels | hotpixel_shm |",
        "|---|---:|---:|",
    ]
    for label in LABELS:
        p, o = peer["labels"][label], ours["labels"][label]
        if p["planted"]:
            lines.append(f"| {label} found | {p['found']}/{p['planted']} | {o['found']}/{o['planted']} |")
    lines.append(f"| false alarms | {peer['false_alarms']} | {ours['false_alarms']} |")
    if ours["kinds_right"] is not None:
        matched = sum(v["found"] for v in ours["labels"].values())
        lines.append(f"| kind right (of found) | - | {ours['kinds_right']}/{matched} |")
    lines.append(f"| wall time (s) | {peer['seconds']:.2f} | {ours['seconds']:.2f} |")
    lines.append(f"| speed-up | 1.0x | {peer['seconds'] / max(ours['seconds'], 1e-9):.1f}x |")
    missed_by_us = result["found_by_rawpy_not_us"]
    lines.append("")
    lines.append(f"Planted defects rawpy found and hotpixel_shm missed: {missed_by_us or 'none'}.")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="raw files to use (default: make a set)")
    ap.add_argument("--truth", help="truth.json of the given files (as written by --keep)")
    ap.add_argument("--n", type=int, default=40, help="photos to make (default 40)")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--darks", action="store_true", help="make/treat the set as dark frames")
    ap.add_argument("--weak", nargs=2, type=float, metavar=("LO", "HI"), default=(40.0, 80.0),
                    help="offsets of the planted weak hot sites in raw units (default 40 80)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each finder this many times and report the fastest wall time "
                         "(the machine may be busy with other work)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--in-process", action="store_true",
                    help="skip the command line; numpy statistics + detect_raw here")
    ap.add_argument("--keep", metavar="DIR", help="write the made set (and truth.json) here")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.files:
            if not args.truth:
                ap.error("--truth is needed with explicit files")
            paths = list(args.files)
            with open(args.truth) as f:
                truth = json.load(f)
        else:
            outdir = args.keep or os.path.join(tmp, "set")
            paths, truth = write_raw_set(outdir, n=args.n, width=args.width, height=args.height,
                                         seed=args.seed, darks=args.darks,
                                         weak_range=tuple(args.weak))
            with open(os.path.join(outdir, "truth.json"), "w") as f:
                json.dump(truth, f, indent=1)
        h, w, _ = rawio.probe_raw(paths[0]).shape

        peer_runs, our_runs = [], []
        for _ in range(max(1, args.repeat)):
            # alternate the two, so that a burst of other load hits both alike
            peer_runs.append(run_rawpy(paths))
            ours, mode = None, "--in-process"
            if not args.in_process:
                ours, mode = run_ours_cli(paths, args.workers, args.darks, tmp)
            if ours is None:
                ours = run_ours_in_process(paths, args.darks)
                mode = ("in-process numpy statistics + detect_raw, one process "
                        f"(command line not used: {mode})")
            our_runs.append(ours)
        peer_found, peer_s = peer_runs[0][0], min(r[1] for r in peer_runs)
        our_found, our_s = our_runs[0][0], min(r[1] for r in our_runs)

        peer = score(peer_found, truth)
        peer["seconds"] = peer_s
        mine = score(our_found, truth)
        mine["seconds"] = our_s
        at = {(t["x"], t["y"]): t for t in truth}
        result = {
            "images": len(paths), "width": w, "height": h, "darks": args.darks,
            "repeat": max(1, args.repeat), "cpus": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
            "planted": len(truth), "ours_mode": mode, "rawpy": peer, "hotpixel_shm": mine,
            "found_by_rawpy_not_us": [at[xy] for xy in sorted(peer_found) if xy in at and xy not in our_found],
        }
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
