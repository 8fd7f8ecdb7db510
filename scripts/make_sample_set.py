#!/usr/bin/env python3
"""Write a simulated photo (or dark-frame) set with planted sensor defects.

Example::

    python scripts/make_sample_set.py samples/ -n 40 --format jpeg --subsampling 4:2:2
    python scripts/make_sample_set.py darks/ -n 30 --darks --format tiff16 --truth darks.json

Prints the files written and the planted defects (column x, row y, 0-based;
kind; photosite colour), or writes the planted list as JSON with ``--truth``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from hotpixel_shm.errors import HotPixelError
from hotpixel_shm.synth import write_sample_set

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    p = argparse.ArgumentParser(
        prog="make_sample_set.py",
        description="Write simulated photos or dark frames with planted hot, stuck, dead "
                    "and noisy photosites.")
    p.add_argument("outdir", help="directory for the frames (created if missing)")
    p.add_argument("-n", type=int, default=24, help="number of frames (default 24)")
    p.add_argument("--width", type=int, default=480, help="frame width (default 480)")
    p.add_argument("--height", type=int, default=320, help="frame height (default 320)")
    p.add_argument("--format", dest="fmt", choices=("jpeg", "png", "tiff16"), default=None,
                   help="file format (default: jpeg for photos, tiff16 for dark frames)")
    p.add_argument("--quality", type=int, default=92, help="JPEG quality (default 92)")
    p.add_argument("--subsampling", choices=("4:4:4", "4:2:2", "4:2:0"), default="4:2:0",
                   help="JPEG chroma subsampling (default 4:2:0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--darks", action="store_true",
                   help="16-bit dark frames (lens cap on) instead of photos")
    p.add_argument("--truth", metavar="FILE.json",
                   help="write the planted defects as JSON here instead of printing them")
    return p


def main(argv=None) -> int:
    """Run the command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("-n must be at least 1")
    fmt = args.fmt or ("tiff16" if args.darks else "jpeg")
    try:
        sample = write_sample_set(args.outdir, n=args.n, width=args.width, height=args.height,
                                  fmt=fmt, quality=args.quality, subsampling=args.subsampling,
                                  seed=args.seed, darks=args.darks)
    except HotPixelError as exc:
        parser.error(str(exc))
    for path in sample.paths:
        print(path)
    records = [dataclasses.asdict(t) for t in sample.truth]
    if args.truth:
        with open(args.truth, "w", encoding="utf-8") as fh:
            json.dump({"shape": list(sample.shape), "kind": sample.kind, "planted": records},
                      fh, indent=1)
        print(f"{len(records)} planted defects written to {args.truth}")
    else:
        print(f"{len(records)} planted defects (x y kind colour level):")
        for t in sample.truth:
            label = t.kind + (" (weak)" if t.weak else "")
            print(f"  {t.x:5d} {t.y:5d}  {label:12s} {t.colour}  {t.level:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
