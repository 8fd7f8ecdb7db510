"""The compiled kernels' front: the numpy kernels' functions, run by ``_ckernels``.

Importing this module fails (ImportError) when the optional C extension was
not built; :mod:`hotpixel_shm.kernels` then uses the numpy kernels.  The
constants of each update come from :func:`kernels_numpy.update_constants`,
so both paths round alike; what the C code does not cover (statistics loaded
from a file, an exact-tier merge too large for its integer sums) goes to the
numpy kernels.
"""
from __future__ import annotations

import numpy as np

from . import _ckernels, kernels_numpy
from .kernels_numpy import FINISHED, MAX_BATCH, Partial, _integer_merge

__all__ = ["NAME", "LOOPS", "MAX_BATCH", "update", "reduce_range", "reduce_at", "residual_update",
           "detect_candidates"]

NAME = "compiled"
#: The hot loops' build that runs on this CPU: ``"AVX-512"``, ``"AVX2"`` or ``"baseline"``.
LOOPS = _ckernels.LOOPS
_TIER = {"exact": 0, "float64": 1, "float32": 2, "float16": 3}
assert _ckernels.MAX_BATCH >= MAX_BATCH


def update(tier, fields, images, n, start=0, block_values=65536, cache=None):
    """Fold a batch of images into a tier's fields (see ``kernels_numpy.update``)."""
    consts = tuple(float(c) for c in kernels_numpy.update_constants(tier, n, len(images)))
    _ckernels.update(_TIER[tier], images[0].dtype.itemsize, tuple(fields), tuple(images),
                     int(n), int(start), consts)


def reduce_range(parts, start, stop, out_mean, out_var, block_values=65536):
    """Merge and finish a flat range in one pass (see ``kernels_numpy.reduce_range``)."""
    return _reduce(parts, start, stop, out_mean, out_var, block_values, None)


def reduce_at(parts, index, out_mean, out_var, block_values=65536):
    """Merge and finish the values at flat indices, read in place (see
    ``kernels_numpy.reduce_at``)."""
    return _reduce(parts, 0, index.size, out_mean, out_var, block_values, index)


def _reduce(parts, start, stop, out_mean, out_var, block_values, index):
    live = [p for p in parts if p.n > 0]
    total = sum(p.n for p in live)
    tier = live[0].tier
    if any(p.tier == FINISHED for p in live) or (tier == "exact" and not _integer_merge(live, total)):
        if index is None:
            return kernels_numpy.reduce_range(parts, start, stop, out_mean, out_var, block_values)
        return kernels_numpy.reduce_at(parts, index, out_mean, out_var, block_values)
    # chan_step's constants for each part folded into the ones before it
    counts, fracs, crosses, na = [], [], [], 0
    for p in live:
        nb = float(p.n)
        frac = nb / (na + nb) if na else 0.0
        counts.append(nb)
        fracs.append(frac)
        crosses.append(na * frac)
        na += p.n
    args = (_TIER[tier], np.dtype(live[0].sample_dtype).itemsize,
            tuple(tuple(p.fields) for p in live), tuple(counts), tuple(fracs), tuple(crosses),
            int(start), int(stop), out_mean, out_var, int(total))
    if index is not None:
        args += (np.ascontiguousarray(index, dtype=np.int64),)
    return _ckernels.reduce(*args)


def residual_update(images, sums, ycc, reach, consts):
    """Add frames' temporal residuals, up to ``MAX_BATCH`` per pass (see
    ``kernels.residual_update``); False for samples other than 8- or 16-bit
    unsigned integers."""
    dtype = images[0].dtype
    if dtype not in (np.uint8, np.uint16) or any(f.dtype != dtype or f.ndim != 3 for f in images):
        return False
    consts = tuple(float(c) for c in consts)
    for i in range(0, len(images), _ckernels.MAX_BATCH):
        _ckernels.residual(tuple(images[i:i + _ckernels.MAX_BATCH]), dtype.itemsize, sums,
                           bool(ycc), int(reach), consts)
    return True


#: Most source arrays of one plane's band that ``_ckernels.candidates`` takes.
_CAND_SOURCES = 64
_CAND_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# a build of the extension older than the candidate pass (a checkout whose
# extension was not rebuilt) leaves detection to numpy instead of failing
_candidates = getattr(_ckernels, "candidates", None)


def detect_candidates(mean_rows, var_rows, top, h, buffers, thresholds):
    """Detection's cheap pass over one band, compiled (see
    ``kernels.detect_candidates``); False when the rows are not float32 or
    float64, or the extension was built before this kernel (the caller then
    runs the numpy reference)."""
    if not (0 < len(mean_rows) <= _CAND_SOURCES and 0 < len(var_rows) <= _CAND_SOURCES):
        return False
    if _candidates is None:
        return False
    if any(np.dtype(a.dtype) not in _CAND_DTYPES for a in (*mean_rows, *var_rows)):
        return False
    am = buffers[3]
    rows, width = am.shape
    _candidates(tuple(mean_rows), tuple(var_rows), int(top), int(h), rows, width,
                tuple(buffers), tuple(float(t) for t in thresholds))
    return True
