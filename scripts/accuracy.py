"""Measure each accumulator tier against numpy float64 on the same data.

For every tier and a range of image counts, accumulate seeded photo-like
frames with one Accumulator (one worker: the bounds are per worker), and
print the largest mean error (levels) and variance error (relative, over
subpixels with std >= 0.5 level) against numpy's float64 ``mean``/``var``
(ddof=0), beside the tier's documented bound.

    python scripts/accuracy.py                # 8-bit photo-like and low-noise data
    python scripts/accuracy.py --sixteen      # also 16-bit values near 65000
"""
import argparse
import sys

import numpy as np

from hotpixel_shm import tiers
from hotpixel_shm.welford import Accumulator, accuracy_bound, merge


def frames(n, shape, dtype, kind, seed):
    """Seeded frames: ``photo`` std 20-60 levels, ``low`` std 0.5-2,
    ``high`` 16-bit near 65000 with std 0.5-3."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    if kind == "photo":
        mu, sig = rng.uniform(20, 235, shape), rng.uniform(20, 60, shape)
    elif kind == "low":
        mu, sig = rng.uniform(0, 255, shape), rng.uniform(0.5, 2, shape)
    else:
        mu, sig = rng.uniform(64980, 65020, shape), rng.uniform(0.5, 3, shape)
    for _ in range(n):
        yield np.clip(np.rint(mu + sig * rng.standard_normal(shape)), 0, top).astype(dtype)


def measure(tier, dtype, kind, n, shape):
    acc = Accumulator(tier, shape, dtype)
    s = np.zeros(shape, np.int64)
    q = np.zeros(shape, np.int64)
    for f in frames(n, shape, dtype, kind, seed=n):
        acc.update(f)
        x = f.astype(np.int64)
        s += x
        q += x * x
    _, mean, var = merge([acc])
    # the exact reference: integer sums, n*q - s*s < 2**63 for these counts
    ref_mean = s / n
    ref_var = (n * q - s * s) / float(n * n)
    keep = np.sqrt(ref_var) >= 0.5
    err_mean = float(np.max(np.abs(mean - ref_mean)))
    err_var = float(np.max(np.abs(var[keep] - ref_var[keep]) / ref_var[keep]))
    return err_mean, err_var


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="10,100,1000,4900",
                   help="images per worker (default 10,100,1000,4900)")
    p.add_argument("--size", type=int, default=64, help="frame side (default 64: 12,288 subpixels)")
    p.add_argument("--sixteen", action="store_true", help="also 16-bit data near 65000")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    shape = (args.size, args.size, 3)
    cases = [(np.uint8, "photo"), (np.uint8, "low")]
    if args.sixteen:
        cases.append((np.uint16, "high"))
    print("| tier | data | images | max mean error (levels) | bound | max var error (rel.) | bound |")
    print("|---|---|---|---|---|---|---|")
    for tier in tiers.TIERS:
        for dtype, kind in cases:
            if not tiers.supports(tier, dtype):
                continue
            for n in counts:
                if n > tiers.max_images(tier, dtype):
                    continue
                em, ev = measure(tier, np.dtype(dtype), kind, n, shape)
                b = accuracy_bound(tier, dtype, n)
                print(f"| {tier} | {np.dtype(dtype).name} {kind} | {n} | {em:.2g} | "
                      f"{b['mean_abs']:.2g} | {ev:.2g} | {b['var_rel']:.2g} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
