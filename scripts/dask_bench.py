"""The cost of distribution on one machine: a local run against ``--dask local``.

On the same photo-like JPEGs (``bench.py``'s generated set, cached in
``bench-out/``, or ``--images DIR``) run, alternating over ``--rounds``
rounds so that machine drift cancels, each as a separate process whose whole
process tree's peak memory is sampled:

* ``local``: ``python -m hotpixel_shm FILES --auto-workers --dtype D -q --json out``
* ``dask-local``: the same with ``--dask local`` (a LocalCluster of one worker
  process per usable CPU, started and stopped inside the timed command)

and print the median wall time, CPU time and peak of each, and their ratio.
Both runs' statistics files are compared (the exact tier: bit for bit).

Example::

    python scripts/dask_bench.py --count 20 --rounds 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import bench  # noqa: E402  (scripts/bench.py: the image set and the measurement)


def _commands(files, tier, out):
    base = [sys.executable, "-m", "hotpixel_shm"] + files + ["--dtype", tier, "-q"]
    return {
        "local": base + ["--auto-workers", "--json", os.path.join(out, "local.json"),
                         "--save-stats", os.path.join(out, "local.npz")],
        "dask-local": base + ["--dask", "local", "--json", os.path.join(out, "dask.json"),
                              "--save-stats", os.path.join(out, "dask.npz")],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", metavar="DIR", help="use the images in DIR instead of a generated set")
    p.add_argument("--count", type=int, default=20, help="images in the generated set (default 20)")
    p.add_argument("--width", type=int, default=6000)
    p.add_argument("--height", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dtype", default="exact")
    p.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "bench-out"))
    args = p.parse_args(argv)
    if args.images:
        files = bench._find_images(args.images)
    else:
        name = f"set-{args.width}x{args.height}-q90-n{args.count}"
        files = bench.make_image_set(os.path.join(args.out, name), args.count, args.width,
                                     args.height, 90)
    out = os.path.join(args.out, "dask")
    os.makedirs(out, exist_ok=True)
    cmds = _commands(files, args.dtype, out)
    runs = {k: [] for k in cmds}
    for r in range(args.rounds):
        for name, argv_ in cmds.items():
            res = bench.measure(argv_, os.path.join(out, f"{name}-{r}.log"))
            if res["returncode"] != 0:
                print(f"{name} failed (exit {res['returncode']}); see {out}/{name}-{r}.log")
                return 1
            runs[name].append(res)
            print(f"round {r + 1} {name:<11s} {res['seconds']:7.2f} s  "
                  f"CPU {res['cpu_seconds'] or 0:7.1f} s  peak {res['peak_bytes'] / 2**20:7.0f} MiB",
                  flush=True)
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    cpu = {k: statistics.median(x["cpu_seconds"] or 0 for x in v) for k, v in runs.items()}
    peak = {k: max(x["peak_bytes"] for x in v) for k, v in runs.items()}
    print(f"\n{len(files)} files, --dtype {args.dtype}, {args.rounds} alternating round(s)")
    print(f"{'command':<12s} {'median s':>9s} {'CPU s':>7s} {'peak MiB':>9s}")
    for k in cmds:
        print(f"{k:<12s} {med[k]:9.2f} {cpu[k]:7.1f} {peak[k] / 2**20:9.0f}")
    print(f"dask-local / local: {med['dask-local'] / med['local']:.2f} x wall time")
    with open(os.path.join(out, "local.npz"), "rb") as a, open(os.path.join(out, "dask.npz"), "rb") as b:
        same = a.read() == b.read()
    print(f"statistics files identical: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
