"""The parent's work after the workers, checkouts side by side.

Loads one statistics file (``--save-stats`` of a run) and times, in a fresh
process per checkout and stage, the stages the parent runs once the workers
are done: detection with its residual test (``pipeline.detect_defects`` on
one thread, the residual test inline), the residual test alone
(``temporal.temporal_records``) and the line test (``pipeline.detect_lines``).
Each ``LABEL=DIR`` names a checkout (its package is imported from DIR, with
its own built extension); ``LABEL=DIR:VAR=VALUE`` sets an environment
variable for it too (``now-numpy=.:HOTPIXEL_SHM_KERNELS=numpy``).  Rounds alternate the checkouts' order, so the
machine's load falls on all of them alike; the figure is the median CPU time
of the stage (``time.process_time`` of its process: steadier than wall time
on a shared machine).  Every checkout must find the same defects and lines.

The statistics are loaded whole and read through a band reader over the
arrays (``bands.as_reader``), band by band as a live run reads them
(``--source arrays``: as whole arrays); a live run's reader also finishes
each band from the accumulators, which this leaves out
(``scripts/kernels_ab.py --reduce`` times that).

Example::

    python -m hotpixel_shm --auto-workers --save-stats stats.npz <photos>
    git worktree add ../before <commit before>   # and build it in place
    python scripts/parent_ab.py stats.npz before=../before now=.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

STAGES = ("detect", "residual", "lines")

_CHILD = r"""
import json, sys, time
from hotpixel_shm import pipeline, statsio, temporal
from hotpixel_shm.detect import DetectOptions
stats, _ = statsio.load_stats(sys.argv[1])
stage = sys.argv[2]
if sys.argv[3] == "bands":
    # read band by band through a reader, as a live run's statistics are
    from hotpixel_shm.bands import BandArray, as_reader
    reader = as_reader(stats.mean, stats.var)
    stats.mean, stats.var = BandArray(reader, "mean"), BandArray(reader, "var")
opts = DetectOptions()
t0 = time.process_time()
if stage == "detect":
    found = sorted((d.x, d.y, d.kind) for d in pipeline.detect_defects(stats, opts))
elif stage == "residual":
    rec = temporal.temporal_records(stats.residuals, stats.mean, stats.var,
                                    t_thr=opts.t_sigma, f_thr=opts.noisy_f)
    found = sorted(zip(rec["x"].tolist(), rec["y"].tolist()))
else:
    found = sorted((ln.kind, ln.index, ln.start, ln.stop) for ln in pipeline.detect_lines(stats))
cpu = time.process_time() - t0
print(json.dumps({"cpu": cpu, "found": found}))
"""


def _run(path, stage, checkout, source):
    checkout, *assigns = checkout.split(":")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
    env.update(a.split("=", 1) for a in assigns)
    proc = subprocess.run([sys.executable, "-c", _CHILD, path, stage, source], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{checkout}: {stage} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stats", help="a statistics file (.npz) saved by --save-stats")
    p.add_argument("checkouts", nargs="+", metavar="LABEL=DIR")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help="comma-separated stages of %s (default all)" % ",".join(STAGES))
    p.add_argument("--source", choices=("bands", "arrays"), default="bands",
                   help="read the statistics through a band reader, as a live run does "
                        "(default), or as whole arrays")
    args = p.parse_args(argv)
    pairs = [c.split("=", 1) for c in args.checkouts]
    if any(len(pair) != 2 for pair in pairs):
        p.error("each checkout is LABEL=DIR")
    stages = [s for s in args.stages.split(",") if s]
    if not set(stages) <= set(STAGES):
        p.error(f"stages are {', '.join(STAGES)}")
    cpu = {(label, s): [] for label, _ in pairs for s in stages}
    found = {}
    for r in range(args.rounds):
        order = pairs if r % 2 == 0 else pairs[::-1]
        for s in stages:
            for label, checkout in order:
                out = _run(args.stats, s, checkout, args.source)
                cpu[(label, s)].append(out["cpu"])
                found.setdefault(s, {})[label] = out["found"]
    print(f"CPU seconds per stage, median of {args.rounds} alternating round(s):")
    print("stage     " + "".join(f"{label:>12}" for label, _ in pairs) + "  same results")
    for s in stages:
        same = len({json.dumps(v) for v in found[s].values()}) == 1
        print(f"{s:<10}" + "".join(f"{statistics.median(cpu[(label, s)]):12.3f}"
                                   for label, _ in pairs) + f"  {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
