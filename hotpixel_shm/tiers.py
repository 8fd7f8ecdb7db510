"""The accumulator tiers: their memory layout, result dtype and the image
counts for which their documented accuracy holds.

This module is the single source of truth the planner (``budget``) and the
numerics (``welford``) both read; it imports nothing but numpy.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "TIERS", "ACCURACY_ORDER", "fields", "bytes_per_value", "result_dtype",
    "max_images", "supports", "HEADER_BYTES", "SEGMENT_ALIGN", "layout", "segment_nbytes",
    "finishes_in_place",
]

#: Every tier, most accurate first.
TIERS = ("exact", "float64", "float32", "float16")
ACCURACY_ORDER = TIERS

#: Bytes at the start of each accumulator buffer (holds the image count).
HEADER_BYTES = 64

#: Every array of an accumulator segment starts on a 64-byte boundary (a cache line).
SEGMENT_ALIGN = 64


def _sample(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ValueError(f"unsupported sample dtype {dt}; expected uint8 or uint16")
    return dt


def fields(tier: str, sample_dtype) -> tuple:
    """The arrays of one accumulator, as ``((name, dtype), ...)``, each of image size."""
    dt = _sample(sample_dtype)
    if tier == "exact":
        if dt == np.uint8:
            return (("sum", np.dtype(np.uint32)), ("sumsq", np.dtype(np.uint32)))
        return (("sum", np.dtype(np.uint32)), ("sumsq", np.dtype(np.uint64)))
    # The float tiers keep the mean exactly, as an integer sum, in the same
    # bytes a float mean would take: a float32 mean near 65000 has a 0.004
    # ulp and its rounding at every update drifts by more than 0.01 level
    # within a few dozen 16-bit images.  The result (mean, var) is written
    # over these two fields by an in-place merge (same itemsizes).
    if tier == "float64":
        return (("sum", np.dtype(np.uint64)), ("m2", np.dtype(np.float64)))
    if tier == "float32":
        return (("sum", np.dtype(np.uint32)), ("m2", np.dtype(np.float32)))
    if tier == "float16":
        # 16-bit storage (not IEEE half: see hotpixel_shm.welford): the mean as
        # 24-bit fixed point (units of 2**-16 level) split in two fields, and
        # the variance (not M2, which would need a wider range) as an unsigned
        # 16-bit float, both updated with stochastic rounding.
        return (("mean_lo", np.dtype(np.uint16)), ("mean_hi", np.dtype(np.uint8)),
                ("var", np.dtype(np.uint16)))
    raise ValueError(f"unknown tier {tier!r}; expected one of {TIERS}")


def _align(nbytes):
    return -(-int(nbytes) // SEGMENT_ALIGN) * SEGMENT_ALIGN


def layout(tier: str, sample_dtype, values: int) -> tuple:
    """Where each field of an accumulator of ``values`` subpixels lives in its buffer.

    Parameters
    ----------
    tier : str
        One of ``TIERS``.
    sample_dtype : dtype-like
        ``uint8`` or ``uint16``.
    values : int
        Subpixels per image (height * width * channels).

    Returns
    -------
    tuple of (name, dtype, offset, nbytes)
        One entry per field of :func:`fields`, in order: the first starts
        after ``HEADER_BYTES`` and each next one at the following multiple of
        ``SEGMENT_ALIGN``.
    """
    out = []
    offset = HEADER_BYTES
    for name, dt in fields(tier, sample_dtype):
        nb = int(values) * dt.itemsize
        out.append((name, dt, offset, nb))
        offset += _align(nb)
    return tuple(out)


def segment_nbytes(tier: str, sample_dtype, values: int) -> int:
    """Bytes of one accumulator buffer (a worker's shared-memory segment).

    The one size both the planner and :class:`hotpixel_shm.welford.Accumulator`
    use: ``HEADER_BYTES`` plus every field of :func:`layout` rounded up to
    ``SEGMENT_ALIGN`` bytes.
    """
    return HEADER_BYTES + sum(_align(nb) for _, _, _, nb in layout(tier, sample_dtype, values))


def bytes_per_value(tier: str, sample_dtype) -> int:
    """Accumulator bytes per subpixel."""
    return sum(d.itemsize for _, d in fields(tier, sample_dtype))


def result_dtype(tier: str):
    """dtype of the finished mean and variance arrays."""
    if tier in ("exact", "float64"):
        return np.dtype(np.float64)
    if tier in ("float32", "float16"):
        return np.dtype(np.float32)
    raise ValueError(f"unknown tier {tier!r}")


def finishes_in_place(tier: str) -> bool:
    """Whether a run's merged result overwrites its accumulator (float64 and
    float32: the result's itemsizes are the fields').  The other tiers'
    results are finished band by band from the accumulators as they are read
    (:mod:`hotpixel_shm.bands`), never as whole-frame arrays."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}")
    return tier in ("float64", "float32")


def supports(tier: str, sample_dtype) -> bool:
    """Whether the tier is offered for this sample dtype at all."""
    dt = _sample(sample_dtype)
    if tier == "float16":
        # its 24-bit fixed-point mean has 8 integer bits: 8-bit samples only.
        return dt == np.uint8
    return tier in TIERS


def max_images(tier: str, sample_dtype) -> int:
    """Largest number of images *per worker* for which the tier's documented
    accuracy bound holds (0 when the tier is not offered for this dtype)."""
    dt = _sample(sample_dtype)
    if not supports(tier, dt):
        return 0
    if tier == "exact":
        # uint32 sum of squares of 8-bit values: 2**32-1 // 255**2 = 66052.
        # 16-bit: uint32 sum (65537) and n*sumsq must fit uint64 -> 65535.
        return 66052 if dt == np.uint8 else 65535
    # Where welford.accuracy_bound still meets each tier's contract:
    # float64: variance within 1e-9 relative (worst case (n+1) * 2**-53, plus
    # merging 16-bit means);
    if tier == "float64":
        return 8_990_000 if dt == np.uint8 else 6_900_000
    # float32: mean within 0.01 level, variance within 1e-4 relative (worst
    # case (n+1) * 2**-24: the rounding of M2 at each update all of one sign;
    # on photo-like data the error is ~100 times smaller);
    if tier == "float32":
        return 1675
    # float16: mean within 0.01 level, variance within 5 % (5 sigma of its
    # unbiased stochastic rounding; measured errors stay below 2 sigma).
    if tier == "float16":
        return 4900
    raise ValueError(f"unknown tier {tier!r}")
