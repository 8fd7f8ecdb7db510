"""Measure the JPEG repair: how much decoded pixels outside the repaired MCUs move.

For simulated JPEG sets (each chroma subsampling, two qualities) the photos
are analysed, repaired with ``--repair-into``'s code, and for every photo the
mean and largest absolute change (in levels) of the decoded pixels outside
the re-encoded MCUs is measured; the table gives the worst photo of each set.

    python scripts/jpeg_repair.py [--photos N]
"""
import argparse
import contextlib
import io
import json
import os
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=24, help="photos per set (default 24)")
    args = ap.parse_args()
    from hotpixel_shm.cli import main as run
    from hotpixel_shm.repairfiles import repair_photos
    from hotpixel_shm.synth import write_sample_set
    print("set                 defects  MCUs re-encoded  outside: worst mean  worst max  photos max>8")
    for sub in ("4:2:0", "4:2:2", "4:4:4"):
        for quality in (92, 75):
            with tempfile.TemporaryDirectory() as d:
                photos = os.path.join(d, "photos")
                sample = write_sample_set(photos, n=args.photos, subsampling=sub,
                                          quality=quality, seed=9)
                with contextlib.redirect_stdout(io.StringIO()):
                    run([photos, "-q", "--workers", "1", "--json", os.path.join(d, "r.json")])
                with open(os.path.join(d, "r.json")) as f:
                    defects = json.load(f)["defects"]
                res = repair_photos(sample.paths, defects, os.path.join(d, "fixed"))
                m = [r.measures for r in res]
                print(f"{sub} q{quality:<3d} x{len(res):<4d} {len(defects):7d}  "
                      f"{m[0]['mcus']:5d} of {m[0]['mcus_total']:<6d}  "
                      f"{max(x['outside_mean'] for x in m):19.4f}  "
                      f"{max(x['outside_max'] for x in m):9d}  "
                      f"{sum(x['outside_max'] > 8 for x in m):12d}")


if __name__ == "__main__":
    main()
