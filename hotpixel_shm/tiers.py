"""The accumulator tiers: their memory layout, result dtype and the image
counts for which their documented accuracy holds.

This module is the single source of truth the planner (``budget``) and the
numerics (``welford``) both read; it imports nothing but numpy.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "TIERS", "ACCURACY_ORDER", "fields", "bytes_per_value", "result_dtype",
    "max_images", "supports", "HEADER_BYTES",
]

#: Every tier, most accurate first.
TIERS = ("exact", "float64", "float32", "float16")
ACCURACY_ORDER = TIERS

#: Bytes at the start of each accumulator buffer (holds the image count).
HEADER_BYTES = 64


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
    if tier == "float64":
        return (("mean", np.dtype(np.float64)), ("m2", np.dtype(np.float64)))
    if tier == "float32":
        return (("mean", np.dtype(np.float32)), ("m2", np.dtype(np.float32)))
    if tier == "float16":
        # mean = ref + resid with |resid| <= 0.5 (recentred at every update),
        # variance (not M2, which would overflow 65504) stored directly.
        return (("ref", dt), ("resid", np.dtype(np.float16)), ("var", np.dtype(np.float16)))
    raise ValueError(f"unknown tier {tier!r}; expected one of {TIERS}")


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


def supports(tier: str, sample_dtype) -> bool:
    """Whether the tier is offered for this sample dtype at all."""
    dt = _sample(sample_dtype)
    if tier == "float16":
        # float16 has an 11-bit significand: it cannot even hold 16-bit samples.
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
    if tier == "float64":
        return 10 ** 9
    if tier == "float32":
        return 100_000 if dt == np.uint8 else 100_000
    if tier == "float16":
        return 2000
    raise ValueError(f"unknown tier {tier!r}")
