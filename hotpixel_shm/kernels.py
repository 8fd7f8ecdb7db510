"""The kernels in use: the compiled ones (``_ckernels``) when built, else numpy.

The choice is made once, at import: the optional C extension
``hotpixel_shm._ckernels`` when it was built and imports, otherwise the numpy
reference :mod:`hotpixel_shm.kernels_numpy`.  The environment variable
``HOTPIXEL_SHM_KERNELS=numpy`` forces the numpy kernels (worker processes
inherit it); ``HOTPIXEL_SHM_KERNELS=compiled`` makes a missing extension an
error instead of a quiet fallback.

Both implementations have the same functions, with the same arguments:
``update(tier, fields, images, n, start, block_values, cache)`` and
``reduce_range(parts, start, stop, out_mean, out_var, block_values)`` and
``reduce_at(parts, index, out_mean, out_var, block_values)`` (see
:mod:`hotpixel_shm.kernels_numpy`).  The compiled update rounds exactly as
the numpy one does, so both give the same bits.

The temporal residual (:mod:`hotpixel_shm.residual`) keeps its numpy loop as
the reference; :func:`residual_update` runs its compiled twin when the
compiled kernels are in use and cover the frames, and says whether it did.
So does detection's cheap candidate pass (:mod:`hotpixel_shm.detect`) with
:func:`detect_candidates`.
"""
from __future__ import annotations

import contextlib
import os

from . import kernels_numpy
from .errors import HotPixelError

__all__ = ["NAME", "DESCRIPTION", "ENV", "update", "reduce_range",
           "reduce_at", "residual_update", "detect_candidates", "available", "get", "use",
           "describe"]

#: The environment variable that picks the kernels.
ENV = "HOTPIXEL_SHM_KERNELS"
_CHOICES = ("auto", "numpy", "compiled")


def _load_compiled():
    """The compiled kernels' Python front, or the reason they are missing."""
    try:
        from . import _kernels_c
    except ImportError as exc:
        return None, f"the compiled kernels are not built ({exc})"
    return _kernels_c, None


def available() -> dict:
    """The implementations that can run here, by name, and why others cannot.

    Returns
    -------
    dict
        ``{"numpy": module, "compiled": module or reason (str)}``.
    """
    mod, why = _load_compiled()
    return {"numpy": kernels_numpy, "compiled": mod if mod is not None else why}


def get(name: str):
    """The kernel module called ``name`` (``"numpy"`` or ``"compiled"``).

    Raises
    ------
    HotPixelError
        ``"compiled"`` when the extension is not built.
    """
    if name == "numpy":
        return kernels_numpy
    if name == "compiled":
        mod, why = _load_compiled()
        if mod is None:
            raise HotPixelError(why)
        return mod
    raise HotPixelError(f"unknown kernels {name!r}; expected numpy or compiled")


def _pick():
    want = (os.environ.get(ENV) or "auto").strip().lower()
    if want not in _CHOICES:
        raise HotPixelError(f"{ENV}={want!r}: expected one of {', '.join(_CHOICES)}")
    if want == "numpy":
        return kernels_numpy, f"numpy (forced by {ENV}=numpy)"
    mod, why = _load_compiled()
    if mod is not None:
        return mod, f"compiled (C99 extension, {mod.LOOPS} loops)"
    if want == "compiled":
        raise HotPixelError(f"{ENV}=compiled: {why}")
    return kernels_numpy, "numpy (the compiled kernels are not built)"


_impl, DESCRIPTION = _pick()
#: ``"compiled"`` or ``"numpy"``: the kernels in use.
NAME = _impl.NAME


def describe() -> str:
    """One line saying which kernels are in use (for ``--version`` and ``--plan -v``)."""
    return f"kernels: {DESCRIPTION}"


def update(tier, fields, images, n, start=0, block_values=65536, cache=None):
    """Fold a batch of images into a tier's fields (see ``kernels_numpy.update``)."""
    return _impl.update(tier, fields, images, n, start, block_values, cache)


def reduce_range(parts, start, stop, out_mean, out_var, block_values=65536):
    """Merge partial results over a flat range and finish (see ``kernels_numpy.reduce_range``)."""
    return _impl.reduce_range(parts, start, stop, out_mean, out_var, block_values)


def reduce_at(parts, index, out_mean, out_var, block_values=65536):
    """Merge and finish the values at flat indices (see ``kernels_numpy.reduce_at``)."""
    return _impl.reduce_at(parts, index, out_mean, out_var, block_values)


def residual_update(images, sums, ycc, reach, consts) -> bool:
    """Add frames' temporal residuals with the compiled kernel, if it applies.

    The compiled kernel folds the frames in one pass over the sums, adding
    each frame's residuals in turn (the bits of one call per frame).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Frames of one shape ``(height, width, channels)`` and dtype, any
        strides.
    sums : numpy.ndarray
        The accumulator's flat float32 sums then sums of squares
        (``residual.ResidualAccumulator``), C-contiguous, updated in place.
    ycc : bool
        RGB photo: luma and pooled chroma planes; else one plane per channel.
    reach : int
        Neighbour distance of the full-resolution planes.
    consts : tuple of float
        Y's three weights, then the Cb and Cr scales (float32 values).

    Returns
    -------
    bool
        False when nothing was done: the numpy kernels are in use, or the
        samples are not 8- or 16-bit unsigned integers; the caller then runs
        the numpy reference.
    """
    fn = getattr(_impl, "residual_update", None)
    return fn is not None and bool(fn(images, sums, ycc, reach, consts))


def detect_candidates(mean_rows, var_rows, top, h, buffers, thresholds) -> bool:
    """Detection's cheap pass over one band of one channel with the compiled
    kernel, if it applies.

    The twin of ``detect._fill_band`` (mean and std), ``detect._box_residuals``
    (both) and ``detect._above`` (the two masks or-ed), the same float32
    bits, in one call that releases the GIL.

    Parameters
    ----------
    mean_rows, var_rows : sequence of numpy.ndarray
        2-D float32 or float64 arrays, any strides, one band's rows of the
        plane's mean and variance, with its halo, from top to bottom (the
        band reader's views, uncopied; each list may split the rows
        differently).
    top : int
        Row of the padded buffers where the first of these rows goes (the
        rows above repeat it, those below the last row).
    h : int
        Half the window: the padding either side.
    buffers : tuple of numpy.ndarray
        C-contiguous ``(bm, bs, hsum, am, as_, mask)``: the padded
        ``(rows + 2h, width + 2h)`` float32 mean and std, the float32
        ``(rows + 2h, width)`` scratch, the ``(rows, width)`` float32 box
        residuals and the ``(rows, width)`` bool candidate mask, all written.
    thresholds : sequence of 8 float
        The mean's then the std's threshold per 2x2 phase (float32 values).

    Returns
    -------
    bool
        False when nothing was done: the numpy kernels are in use, or the
        rows are not float32 or float64; the caller then runs the numpy
        reference.
    """
    fn = getattr(_impl, "detect_candidates", None)
    return fn is not None and bool(fn(mean_rows, var_rows, top, h, buffers, thresholds))


@contextlib.contextmanager
def use(name: str):
    """Run this process's kernels with implementation ``name`` for a while
    (tests and benchmarks; worker processes follow ``HOTPIXEL_SHM_KERNELS``)."""
    global _impl, NAME, DESCRIPTION
    old = (_impl, NAME, DESCRIPTION)
    _impl = get(name)
    NAME, DESCRIPTION = _impl.NAME, f"{_impl.NAME} (selected)"
    try:
        yield _impl
    finally:
        _impl, NAME, DESCRIPTION = old
