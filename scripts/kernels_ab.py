"""Two or more builds of the compiled kernels, side by side in one process.

Each ``LABEL=PATH`` names a built ``_ckernels`` extension (for instance the
``.so`` of another checkout, copied aside before a rebuild).  The script
loads every build, makes one photo-like frame (``--size``), and for each
tier of ``--tiers`` and batch size of ``--batch`` times the update
(``Accumulator.update_batch``) with each build in turn, repetition after
repetition, so that the machine's load falls on all of them alike; then the
temporal residual statistics (``ResidualAccumulator.update_batch``) unless
``--no-residual``.  It prints the median CPU time of this process per photo
(``time.process_time``: steadier than wall time on a shared machine) and
whether every build left the same bits in its accumulator.  With
``--reduce PARTS`` it also times the merge and finish of the whole frame
(``reduce_range``: the parts' statistics to mean and variance, float64 and
float32 outputs) for each part count, band by band into one band's outputs
as the band reader finishes them (``bands.DEFAULT_BAND_VALUES``): a frame's
CPU time per build, and whether every build gave the same bits.

Example::

    cp hotpixel_shm/_ckernels*.so /tmp/before.so    # then change, rebuild
    python scripts/kernels_ab.py before=/tmp/before.so \\
        after=hotpixel_shm/_ckernels.cpython-311-x86_64-linux-gnu.so
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time

import numpy as np

from hotpixel_shm import _kernels_c
from hotpixel_shm.bands import DEFAULT_BAND_VALUES
from hotpixel_shm.residual import ResidualAccumulator, residual_layout
from hotpixel_shm.synth import make_photo_like
from hotpixel_shm.welford import Accumulator

__all__ = ["load_build", "compare", "compare_reduce", "main"]


def load_build(path: str):
    """The ``_ckernels`` extension module built at ``path``."""
    spec = importlib.util.spec_from_file_location("hotpixel_shm._ckernels", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cpu(fn):
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def compare(builds: dict, frames: list, make, update, k: int, reps: int) -> tuple:
    """Median CPU s per photo of each build, and whether all gave the same bits.

    ``make()`` returns a fresh accumulator; ``update(acc, frames)`` folds a
    batch into it; its ``_flat`` (one array or a tuple of arrays) is compared.
    """
    accs, times = {}, {label: [] for label in builds}
    saved = _kernels_c._ckernels
    try:
        for label, mod in builds.items():
            _kernels_c._ckernels = mod
            acc = make()
            update(acc, frames[:k])   # pages touched, past the first-image shortcut
            accs[label] = acc
        for _ in range(reps):
            for label, mod in builds.items():
                _kernels_c._ckernels = mod
                times[label].append(_cpu(lambda: update(accs[label], frames[:k])) / k)
    finally:
        _kernels_c._ckernels = saved

    def bits(acc):
        flat = acc._flat
        return [np.asarray(f).view(np.uint8) for f in (flat if isinstance(flat, (tuple, list)) else (flat,))]

    first = bits(next(iter(accs.values())))
    same = all(all(np.array_equal(a, b) for a, b in zip(first, bits(acc))) for acc in accs.values())
    return {label: statistics.median(t) for label, t in times.items()}, same


def compare_reduce(builds: dict, parts: list, out_dtype, reps: int,
                   band: int = DEFAULT_BAND_VALUES) -> tuple:
    """Median CPU s of each build to merge and finish ``parts`` (Partial
    objects over the same values) band by band into one band's
    ``out_dtype`` outputs, and whether all gave the same bits (every band's)."""
    size = parts[0].fields[0].size
    band = max(1, min(int(band), size))
    outs = {label: (np.empty(band, out_dtype), np.empty(band, out_dtype)) for label in builds}
    digests = {label: [] for label in builds}
    times = {label: [] for label in builds}

    def frame(label, keep=False):
        m, v = outs[label]
        for s in range(0, size, band):
            e = min(s + band, size)
            _kernels_c.reduce_range(parts, s, e, m[:e - s], v[:e - s])
            if keep:
                digests[label].append((m[:e - s].tobytes(), v[:e - s].tobytes()))

    saved = _kernels_c._ckernels
    try:
        for label, mod in builds.items():      # bits kept, outputs' pages touched
            _kernels_c._ckernels = mod
            frame(label, keep=True)
        for _ in range(reps):
            for label, mod in builds.items():
                _kernels_c._ckernels = mod
                times[label].append(_cpu(lambda: frame(label)))
    finally:
        _kernels_c._ckernels = saved
    first = next(iter(digests.values()))
    same = all(d == first for d in digests.values())
    return {label: statistics.median(t) for label, t in times.items()}, same


def _reduce_rows(builds, tiers, frames, counts, reps):
    """One line per tier, part count and output dtype of the merge-and-finish timing."""
    for tier in tiers:
        for count in counts:
            accs = [Accumulator(tier, frames[0].shape, frames[0].dtype) for _ in range(count)]
            for j, frame in enumerate(frames):
                accs[j % count].update(frame)
            parts = [a.as_partial() for a in accs]
            for out_dtype in (np.float64, np.float32):
                med, same = compare_reduce(builds, parts, out_dtype, reps)
                name = f"{tier} reduce"
                print(f"{name:14s} parts={count:<2d} {np.dtype(out_dtype).name:7s} "
                      + "  ".join(f"{label} {s * 1e3:7.1f} ms" for label, s in med.items())
                      + ("  same bits" if same else "  BITS DIFFER"), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("builds", nargs="+", metavar="LABEL=PATH")
    p.add_argument("--tiers", default="exact", help="comma-separated tiers (default exact)")
    p.add_argument("--batch", default="1,2,4", help="comma-separated K (default 1,2,4)")
    p.add_argument("--size", default="6000x4000", help="frame WIDTHxHEIGHT (default 6000x4000)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--no-residual", action="store_true")
    p.add_argument("--reduce", default="", metavar="PARTS",
                   help="also time the merge and finish of the frame for these comma-separated "
                        "part counts (e.g. 1,2), per frame")
    args = p.parse_args(argv)
    builds = {}
    for item in args.builds:
        label, sep, path = item.partition("=")
        if not sep:
            p.error(f"{item!r}: expected LABEL=PATH")
        builds[label] = load_build(path)
    w, h = (int(v) for v in args.size.lower().split("x"))
    frame = make_photo_like(h, w, 7)
    ks = [int(v) for v in args.batch.split(",")]
    frames = [frame] + [np.roll(frame, j, axis=1) for j in range(1, max(ks))]
    rows = [(tier, lambda t=tier: Accumulator(t, frame.shape, frame.dtype),
             lambda acc, fs: acc.update_batch(fs))
            for tier in filter(None, args.tiers.split(","))]
    if not args.no_residual:
        rows.append(("residual", lambda: ResidualAccumulator(residual_layout(frame.shape)),
                     lambda acc, fs: acc.update_batch(fs)))
    for name, make, update in rows:
        for k in ks:
            med, same = compare(builds, frames, make, update, k, args.reps)
            print(f"{name:9s} K={k:<2d} " + "  ".join(f"{label} {s * 1e3:7.1f} ms"
                                                      for label, s in med.items())
                  + ("  same bits" if same else "  BITS DIFFER"), flush=True)
    counts = [int(v) for v in args.reduce.split(",") if v.strip()]
    if counts:
        _reduce_rows(builds, list(filter(None, args.tiers.split(","))), frames, counts, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
