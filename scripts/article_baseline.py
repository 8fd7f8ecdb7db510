"""The baseline: the naive program of the article "Hot pixel detection with
multiprocessing", reimplemented as faithfully as we can, to measure its cost.

What it does, as the article did:

* ``multiprocessing.Pool(processes=W)`` and a static split of the file list
  into ``W`` contiguous chunks, one ``pool.apply_async(worker, (chunk,))`` per
  chunk;
* each worker reads every file of its chunk with
  ``np.asarray(Image.open(f), dtype=np.float64)`` and runs Welford's update in
  float64 with whole-array temporaries, then returns ``(count, mean, M2)``:
  the *full* image-sized arrays are pickled back to the parent;
* the parent **sums** the workers' M2 arrays and averages their means, then
  prints the minimum, maximum and mean variance and the ten subpixels of
  lowest variance.

.. warning::

   Summing the workers' M2 arrays is **wrong**: it leaves out the
   ``d*d * na * nb / n`` term of the parallel formula (Chan, Golub and LeVeque),
   so every subpixel whose mean differs between the chunks gets too small a
   variance.  The bug is kept on purpose, and so is the unweighted average of
   the means: this script exists only to reproduce the baseline's cost (time
   and memory) in ``scripts/bench.py``.  Do not use its numbers.

Usage::

    python scripts/article_baseline.py --processes 2 photos/*.jpg
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys

import numpy as np
from PIL import Image

__all__ = ["worker", "split", "main"]


def worker(files):
    """Welford's running mean and M2 over ``files``, in float64, the naive way.

    Parameters
    ----------
    files : list of str
        The images of this worker's chunk (all of the same shape).

    Returns
    -------
    count : int
    mean, M2 : numpy.ndarray or None
        float64 arrays of image shape (None for an empty chunk); pickled
        whole back to the parent, as the article did.
    """
    count = 0
    mean = None
    m2 = None
    for f in files:
        img = np.asarray(Image.open(f), dtype=np.float64)
        if mean is None:
            mean = np.zeros_like(img)
            m2 = np.zeros_like(img)
        count += 1
        delta = img - mean
        mean += delta / count
        m2 += delta * (img - mean)
    return count, mean, m2


def split(files, parts):
    """The article's static split: ``parts`` contiguous chunks of near-equal length.

    Parameters
    ----------
    files : list
    parts : int

    Returns
    -------
    list of list
        ``parts`` chunks (some empty when there are fewer files than parts).
    """
    size, extra = divmod(len(files), parts)
    chunks, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        chunks.append(files[start:stop])
        start = stop
    return chunks


def main(argv=None) -> int:
    """Command line: ``article_baseline.py --processes W FILES...``; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="The article's naive multiprocessing hot-pixel statistics (the baseline; "
                    "its M2 sum is wrong on purpose).")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")

    with multiprocessing.Pool(processes=args.processes) as pool:
        pending = [pool.apply_async(worker, (chunk,)) for chunk in split(args.files, args.processes)]
        results = [p.get() for p in pending]

    results = [r for r in results if r[0] > 0]
    total = sum(r[0] for r in results)
    # The article's combination: means averaged, M2 summed (wrong, kept on purpose).
    mean = sum(r[1] for r in results) / len(results)
    m2 = sum(r[2] for r in results)
    var = m2 / total

    print(f"images: {total}; mean of means {float(mean.mean()):.4g}")
    print(f"variance: min {float(var.min()):.4g}, max {float(var.max()):.4g}, "
          f"mean {float(var.mean()):.4g}")
    flat = var.reshape(-1)
    # argpartition, not a full argsort of ~72 M values: gives the baseline the
    # benefit of the doubt, so its measured cost is not inflated by the report.
    k = min(10, flat.size)
    lowest = np.argpartition(flat, k - 1)[:k] if flat.size > k else np.arange(flat.size)
    lowest = lowest[np.argsort(flat[lowest], kind="stable")]
    h, w = var.shape[:2]
    c = var.shape[2] if var.ndim == 3 else 1
    print("lowest-variance subpixels (x, y, channel, variance):")
    for i in lowest:
        y, rem = divmod(int(i), w * c)
        x, ch = divmod(rem, c)
        print(f"  {x:6d} {y:6d} {ch:2d}  {float(flat[i]):.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
