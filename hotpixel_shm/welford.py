"""Partial statistics: accumulators updated in place, merged with Chan/Pébay.

An :class:`Accumulator` holds the per-subpixel running statistics of one
worker in a flat buffer (typically POSIX shared memory): a small header with
the image count ``n`` followed by the arrays of the tier (see
:mod:`hotpixel_shm.tiers`).  It validates and calls the kernels
(:mod:`hotpixel_shm.kernels`: compiled, or the numpy reference
:mod:`hotpixel_shm.kernels_numpy`).  :meth:`Accumulator.update` adds one image
in place (:meth:`~Accumulator.update_batch` several in one pass), block by
block, so its temporaries stay at a few MB whatever the image size.

The merge algebra works on partial results of any origin (accumulators,
finished :class:`~hotpixel_shm.model.Stats`, a
:class:`~hotpixel_shm.kernels_numpy.Partial`): :func:`finalise_range` merges
them and finishes the mean and variance of one flat range into the caller's
buffers (band by band, no image-sized float64 copy); :func:`merge` does the
whole frame, :func:`merge_stats` two finished results, :func:`combine` two
arrays.  All use the parallel formula of Chan, Golub and LeVeque (multi-way
form of Pébay 2008)::

    n = na + nb;  d = mean_b - mean_a
    mean = mean_a + d * nb / n
    M2   = M2_a + M2_b + d*d * na * nb / n        (variance = M2 / n)

The tiers (bytes per subpixel value in brackets):

``exact`` (8 for 8-bit input, 12 for 16-bit)
    integer sum and sum of squares; the variance is finished from the exact
    integers ``n * sumsq - sum**2`` without cancellation.
``float64`` (16) and ``float32`` (8)
    the mean is kept *exactly* as an integer sum (uint64 / uint32) and the sum
    of squared deviations ``M2`` as a float, updated with Welford's increment
    ``(x - mean_old) * (x - mean_new)`` computed exactly from the integers; only
    the addition into the stored ``M2`` rounds.
``float16`` (5, 8-bit input only)
    16-bit storage, though not IEEE half floats: the mean as 24-bit fixed point
    (units of 2**-16 level) and the variance itself (not M2, whose range is too
    wide) as an unsigned 16-bit float with 12 fraction bits; both are updated
    with stochastic rounding, so their rounding errors average out instead of
    drifting.  The arithmetic is block-local, in integers and float32.

This module imports only numpy, the kernels and the package's own tables: it is tested
without starting processes.
"""
from __future__ import annotations

import math

import numpy as np

from . import kernels, kernels_numpy, tiers
from .errors import HotPixelError
from .kernels_numpy import MEAN_UNITS as _MEAN_UNITS, Partial, chan_step
from .bands import BandArray, BandReader, map_ordered
from .model import Stats, merged_metadata

__all__ = ["Accumulator", "Partial", "merge", "finalise_range", "finalise_rows", "finalise_at",
           "combine",
           "merge_stats", "fold_exact", "accuracy_bound", "DEFAULT_BLOCK_VALUES"]

#: Values per block in :meth:`Accumulator.update` and :func:`merge`: 32K-64K
#: measured fastest for 24 MP images (the blocks stay in a 2 MB L2 cache);
#: 256K and 1M were 10-40 % slower.
DEFAULT_BLOCK_VALUES = 65536

_U32 = 2.0 ** -24   # unit roundoff of float32
_U64 = 2.0 ** -53   # unit roundoff of float64
_CONSUMED = -1      # header value after an in-place merge overwrote the buffer


def _check_tier(tier, sample_dtype):
    if tier not in tiers.TIERS:
        raise HotPixelError(f"unknown accumulator tier {tier!r}; expected one of {', '.join(tiers.TIERS)}")
    try:
        dt = np.dtype(sample_dtype)
        ok = tiers.supports(tier, dt)
    except (TypeError, ValueError) as exc:
        raise HotPixelError(f"unsupported sample dtype {sample_dtype!r}: expected uint8 or uint16") from exc
    if not ok:
        raise HotPixelError(f"the {tier} tier is not offered for {dt} samples")
    return dt


def _check_shape(shape):
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as exc:
        raise HotPixelError(f"shape must be (height, width, channels), got {shape!r}") from exc
    if len(shape) != 3 or min(shape) < 1:
        raise HotPixelError(f"shape must be (height, width, channels) of positive sizes, got {shape!r}")
    return shape


def _capacity(tier, dt):
    """Images after which an integer field would overflow (a hard limit, unlike
    ``tiers.max_images`` which is where the accuracy bound stops holding)."""
    top = int(np.iinfo(dt).max)
    if tier == "exact":
        return tiers.max_images("exact", dt)
    if tier == "float64":
        # the uint64 sum is converted to float64, exact below 2**53
        return 2 ** 53 // top
    if tier == "float32":
        return (2 ** 32 - 1) // top
    return 2 ** 62  # float16: nothing overflows, accuracy just degrades


class Accumulator:
    """Running per-subpixel statistics of one worker, in a flat buffer.

    Parameters
    ----------
    tier : str
        One of ``tiers.TIERS``.
    shape : tuple of int
        ``(height, width, channels)`` of every image.
    sample_dtype : dtype
        ``uint8`` or ``uint16``.
    buffer : writable buffer, optional
        At least :meth:`nbytes` bytes (``mmap``, ``memoryview``, ``bytearray``,
        ``SharedMemory.buf``).  All-zero bytes mean an empty accumulator, so a
        fresh shared-memory block needs no initialisation.  ``None`` allocates
        zeroed private memory.
    block_values : int, optional
        Values per block in :meth:`update`; the scratch memory is a few times
        this many bytes.

    Attributes
    ----------
    tier, shape, sample_dtype
        As given (``sample_dtype`` as a numpy dtype).
    arrays : dict of str to ndarray
        The tier's fields (``tiers.fields``), each a view of image shape into
        the buffer.
    size : int
        Values per image (height * width * channels).
    capacity : int
        Images after which an integer field would overflow; :meth:`update`
        refuses more.  ``tiers.max_images`` (where the accuracy bound stops
        holding) is never above it.

    Notes
    -----
    Layout: ``tiers.HEADER_BYTES`` of header (``n`` as int64 at offset 0), then
    each field of ``tiers.fields(tier, sample_dtype)`` in order, each starting
    at a 64-byte aligned offset.

    The views keep the buffer exported: call :meth:`close` (or drop the
    object) before closing a ``SharedMemory`` it was built on.
    """

    def __init__(self, tier: str, shape: tuple, sample_dtype, buffer=None, *,
                 block_values: int = DEFAULT_BLOCK_VALUES):
        dt = _check_tier(tier, sample_dtype)
        shape = _check_shape(shape)
        block_values = int(block_values)
        if block_values < 1:
            raise HotPixelError(f"block_values must be positive, got {block_values}")
        self.tier = tier
        self.shape = shape
        self.sample_dtype = dt
        self.size = math.prod(shape)
        self.block_values = block_values
        self.capacity = _capacity(tier, dt)
        total = self.nbytes(tier, shape, dt)
        if buffer is None:
            raw = np.zeros(total, np.uint8)  # calloc: pages appear as they are touched
        else:
            with memoryview(buffer) as mv:
                have = mv.nbytes
            if have < total:
                raise HotPixelError(f"accumulator buffer has {have} bytes; the {tier} tier needs "
                                    f"{total} for shape {shape} {dt}")
            raw = np.frombuffer(buffer, dtype=np.uint8, count=total)
            if not raw.flags.writeable:
                raise HotPixelError("accumulator buffer is read-only")
        self._raw = raw
        self._header = raw[:8].view(np.int64)
        self.arrays = {}
        self._flat = []
        for name, fdt, offset, nb in tiers.layout(tier, dt, self.size):
            flat = raw[offset:offset + nb].view(fdt)
            self._flat.append(flat)
            self.arrays[name] = flat.reshape(shape)
        self._cache = {}  # the numpy kernels' scratch blocks

    # ------------------------------------------------------------------ layout
    @staticmethod
    def nbytes(tier, shape, sample_dtype) -> int:
        """Bytes of buffer an accumulator needs.

        Parameters
        ----------
        tier : str
        shape : tuple of int
            ``(height, width, channels)``.
        sample_dtype : dtype

        Returns
        -------
        int
            ``tiers.segment_nbytes``: the header plus each field rounded up
            to ``tiers.SEGMENT_ALIGN`` bytes.
        """
        dt = _check_tier(tier, sample_dtype)
        return tiers.segment_nbytes(tier, dt, math.prod(_check_shape(shape)))

    @property
    def n(self) -> int:
        """Images accumulated (stored in the buffer's header); -1 after an
        in-place :func:`merge` reused the buffer for its results."""
        if self._header is None:
            raise HotPixelError("accumulator is closed")
        return int(self._header[0])

    @n.setter
    def n(self, value):
        self._header[0] = int(value)

    def reset(self) -> None:
        """Zero the whole buffer: back to an empty accumulator."""
        self._raw.fill(0)

    def close(self) -> None:
        """Drop every view of the buffer so the caller can close it.

        The accumulator is unusable afterwards.
        """
        self.arrays = {}
        self._flat = []
        self._header = None
        self._raw = None
        self._cache = {}

    def __repr__(self):
        n = self.n if self._header is not None else "closed"
        return f"Accumulator({self.tier!r}, {self.shape}, {self.sample_dtype}, n={n})"

    def _usable(self):
        if self._raw is None:
            raise HotPixelError("accumulator is closed")
        if self.n == _CONSUMED:
            raise HotPixelError("accumulator holds merged results (in-place merge); reset() it first")
        if self.n < 0:
            raise HotPixelError(f"accumulator header is corrupt (n = {self.n})")

    # ------------------------------------------------------------------ update
    def update(self, image: np.ndarray) -> None:
        """Add one image, in place.

        Parameters
        ----------
        image : ndarray
            Of shape ``self.shape`` and dtype ``self.sample_dtype``.  A
            non-contiguous image is copied once.

        Raises
        ------
        HotPixelError
            Wrong shape or dtype, or the accumulator is full (an integer field
            would overflow).

        Notes
        -----
        ``n`` is incremented only after every value has been written, so a
        reader that sees ``n`` sees all of that many images.  An update
        interrupted midway leaves the fields inconsistent with ``n``: discard
        the accumulator.
        """
        self.update_batch((image,))

    def update_batch(self, images) -> None:
        """Add several images in one pass over the accumulator, in place.

        Parameters
        ----------
        images : sequence of ndarray
            ``1 <= K <= kernels_numpy.MAX_BATCH`` images, each as for
            :meth:`update`.

        Notes
        -----
        The batch's exact integer sums join the accumulator in one Chan step
        (see :mod:`hotpixel_shm.kernels_numpy`).  The ``exact`` tier's result
        does not depend on how the images are batched; the float tiers' stays
        within the same accuracy bound (:func:`accuracy_bound`), each batch
        rounding once where single images would round once each.
        """
        self._usable()
        images = list(images)
        if not 1 <= len(images) <= kernels_numpy.MAX_BATCH:
            raise HotPixelError(f"a batch holds 1 to {kernels_numpy.MAX_BATCH} images, "
                                f"got {len(images)}")
        flats = [self._flat_image(im) for im in images]
        n = self.n
        if n + len(flats) > self.capacity:
            raise HotPixelError(f"the {self.tier} accumulator is full: {n} images of {self.sample_dtype} "
                                f"is the most it can hold without overflow")
        kernels.update(self.tier, self._flat, flats, n, 0, self.block_values, self._cache)
        self.n = n + len(flats)

    def _flat_image(self, image):
        image = np.asarray(image)
        if image.dtype != self.sample_dtype:
            raise HotPixelError(f"image dtype {image.dtype} does not match the accumulator's "
                                f"{self.sample_dtype}")
        if image.shape != self.shape:
            raise HotPixelError(f"image shape {image.shape} does not match the accumulator's {self.shape}")
        return np.ascontiguousarray(image).reshape(-1)

    # ----------------------------------------------------------------- partial
    def as_partial(self, n: int = None) -> Partial:
        """This accumulator as a :class:`~hotpixel_shm.kernels_numpy.Partial`
        (a view of its fields, for :func:`finalise_range` and the kernels).

        ``n`` overrides the header's count (an in-place merge marks the
        header before it reads the last blocks)."""
        self._usable()
        return Partial(self.n if n is None else int(n), self.tier, self.sample_dtype,
                       tuple(self._flat))

    def partial(self, start: int, stop: int) -> tuple:
        """The partial statistics of flat values ``[start, stop)``.

        Parameters
        ----------
        start, stop : int
            Range of flat (C-order) value indices.

        Returns
        -------
        n : int
        mean, m2 : ndarray
            float64, 1-D of length ``stop - start``; ``m2`` is the sum of
            squared deviations from the mean (``var = m2 / n``).
        """
        self._usable()
        start, stop, _ = slice(start, stop).indices(self.size)
        stop = max(stop, start)
        mean = np.empty(stop - start, np.float64)
        m2 = np.empty(stop - start, np.float64)
        p = self.as_partial()
        kernels_numpy.partial(p, start, stop, mean, m2, np.empty(stop - start, np.float64))
        return p.n, mean, m2


# --------------------------------------------------------------------------- merge algebra

def combine(n_a, mean_a, m2_a, n_b, mean_b, m2_b) -> tuple:
    """Combine two partial results with the formula of Chan, Golub and LeVeque.

    Parameters
    ----------
    n_a, n_b : int or array_like
        Counts (scalars, or arrays broadcastable with the means).
    mean_a, m2_a, mean_b, m2_b : array_like
        Means and sums of squared deviations (``M2``), as float64.

    Returns
    -------
    n, mean, m2
        The statistics of the union; ``n`` keeps the inputs' type.

    Notes
    -----
    The formula is :func:`hotpixel_shm.kernels_numpy.chan_step`, the one every
    merge uses.  ``M2 = M2_a + M2_b + d**2 * n_a * n_b / n`` with ``d = mean_b
    - mean_a``: every term is non-negative, so nothing cancels.  A side with
    ``n == 0`` contributes nothing (its mean is ignored).
    """
    n = n_a + n_b
    na = np.asarray(n_a, np.float64)
    nb = np.asarray(n_b, np.float64)
    # an empty side takes the other side's values, so that d == 0 and nothing
    # of its own (possibly garbage) mean and M2 enters the arithmetic; where
    # both are empty a count of 1 keeps the arithmetic finite
    mean_a = np.where(na == 0, mean_b, mean_a).astype(np.float64)
    mean_b = np.where(nb == 0, mean_a, mean_b).astype(np.float64)
    m2_a = np.where(na == 0, 0.0, m2_a).astype(np.float64)
    m2_b = np.where(nb == 0, 0.0, m2_b).astype(np.float64)
    na = np.where(na + nb > 0, na, 1.0)
    mean_a, m2_a, mean_b, m2_b = (np.array(a) for a in np.broadcast_arrays(mean_a, m2_a, mean_b, m2_b))
    chan_step(na, mean_a, m2_a, nb, mean_b, m2_b, np.empty_like(mean_a))
    return n, mean_a, m2_a


def _as_partial(src) -> Partial:
    """An Accumulator, finished Stats or a Partial, as a Partial."""
    if isinstance(src, Partial):
        return src
    if isinstance(src, Accumulator):
        return src.as_partial()
    if isinstance(src, Stats):
        if src.tier not in tiers.TIERS:
            raise HotPixelError(f"unknown tier {src.tier!r} in statistics")
        if np.shape(src.mean) != np.shape(src.var):
            raise HotPixelError(f"statistics with mean {np.shape(src.mean)} and var "
                                f"{np.shape(src.var)} shapes")
        if int(src.n) < 0:
            raise HotPixelError(f"statistics of {src.n} images")
        mean = np.ascontiguousarray(src.mean).reshape(-1)
        var = np.ascontiguousarray(src.var).reshape(-1)
        return Partial(int(src.n), kernels_numpy.FINISHED, None, (mean, var))
    raise HotPixelError(f"cannot merge a {type(src).__name__}: expected Accumulator or Stats")


def _reduce(parts, start, stop, out_mean, out_var, block_values, threads):
    """Run the block loop over ``[start, stop)`` on ``threads`` contiguous
    ranges (numpy and the compiled kernels release the GIL, so threads use
    several cores without copying anything).  Bit-identical for any count:
    each value's arithmetic does not depend on its range."""
    size = stop - start
    bv = max(1, min(int(block_values), size))
    threads = max(1, min(int(threads), size // bv or 1))
    if threads == 1:
        return kernels.reduce_range(parts, start, stop, out_mean, out_var, bv)
    from concurrent.futures import ThreadPoolExecutor
    # ranges on block boundaries; each thread reads a range completely
    # before writing it, so in-place reuse stays safe
    step = -(-size // threads)
    step = -(-step // bv) * bv
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(kernels.reduce_range, parts, a, min(a + step, stop),
                               out_mean[a - start:min(a + step, stop) - start],
                               out_var[a - start:min(a + step, stop) - start], bv)
                   for a in range(start, stop, step)]
        return [f.result() for f in futures][0]


def _check_compatible(accs):
    first = accs[0]
    for a in accs:
        if not isinstance(a, Accumulator):
            raise HotPixelError(f"merge needs Accumulator objects, got {type(a).__name__}")
        a._usable()
        if (a.tier, a.shape, a.sample_dtype) != (first.tier, first.shape, first.sample_dtype):
            raise HotPixelError(
                f"cannot merge a {a.tier} {a.shape} {a.sample_dtype} accumulator with a "
                f"{first.tier} {first.shape} {first.sample_dtype} one")


def _same_size_parts(sources):
    """(partials, values per partial) of the sources, all of one size."""
    parts = [_as_partial(s) for s in sources]
    if not parts:
        raise HotPixelError("nothing to merge: no partial result")
    size = parts[0].fields[0].size
    for p in parts:
        if p.fields[0].size != size:
            raise HotPixelError(f"cannot merge partial results of {p.fields[0].size} and {size} values")
    return parts, size


def _image_count(parts) -> int:
    """The images the partial results hold; an error when there is none."""
    total = sum(p.n for p in parts if p.n > 0)
    if total == 0:
        raise HotPixelError("nothing to merge: no image was accumulated")
    return total


def _flat_out(arr, length, name):
    if not isinstance(arr, np.ndarray) or arr.dtype not in (np.float32, np.float64):
        raise HotPixelError(f"{name} must be a float32 or float64 array")
    if arr.size != length or not arr.flags.c_contiguous or not arr.flags.writeable:
        raise HotPixelError(f"{name} must be a writable C-contiguous array of {length} values, "
                            f"got {arr.shape}")
    return arr.reshape(-1)


def finalise_range(sources, start: int, stop: int, out_mean: np.ndarray, out_var: np.ndarray, *,
                   threads: int = 1, block_values: int = DEFAULT_BLOCK_VALUES) -> int:
    """Merge partial results and finish the mean and variance of one flat range.

    The band-wise finish: the caller provides the output buffers, so no
    image-sized float64 array is ever needed (a band of rows ``y0..y1`` of a
    ``(height, width, channels)`` frame is ``start = y0 * width * channels``,
    ``stop = y1 * width * channels``; see :func:`finalise_rows`).

    Parameters
    ----------
    sources : sequence of Accumulator, Stats or Partial
        Partial results over the same frame, of any origin (the workers'
        accumulators, statistics loaded from a file, a checkpoint); empty
        ones are ignored.  The accumulators are only read.
    start, stop : int
        The flat (C-order) range, ``0 <= start < stop <= size``.
    out_mean, out_var : ndarray
        Writable, C-contiguous, float32 or float64, ``stop - start`` values
        (any shape): the mean and the population variance (ddof=0).
    threads : int, optional
        Split the range over this many threads.
    block_values : int, optional
        Values per block of the numpy kernels (5 float64 temporaries each).

    Returns
    -------
    int
        The total image count.

    Raises
    ------
    HotPixelError
        No source, sources of different sizes, a bad range or buffer, or no
        image at all.

    Notes
    -----
    The result of every value is the one :func:`merge` gives for it: the
    exact tier's integer sums are added exactly when every source is an
    exact accumulator (so any split of the images gives the serial bits),
    anything else is combined with Chan's formula in float64.
    """
    parts, size = _same_size_parts(sources)
    start, stop = int(start), int(stop)
    if not 0 <= start < stop <= size:
        raise HotPixelError(f"range [{start}, {stop}) is not within the {size} values")
    _image_count(parts)
    out_mean = _flat_out(out_mean, stop - start, "out_mean")
    out_var = _flat_out(out_var, stop - start, "out_var")
    return _reduce(parts, start, stop, out_mean, out_var, block_values, threads)


def finalise_rows(sources, y0: int, y1: int, out_mean: np.ndarray, out_var: np.ndarray,
                  **kw) -> int:
    """:func:`finalise_range` for rows ``y0 <= y < y1`` of the frame.

    The sources' frame shape is taken from the first Accumulator or Stats
    among them; ``out_mean`` and ``out_var`` hold ``(y1 - y0) * width *
    channels`` values.
    """
    shape = next((s.shape for s in sources if isinstance(s, (Accumulator, Stats))), None)
    if shape is None:
        raise HotPixelError("finalise_rows needs an Accumulator or Stats to know the frame's shape")
    _, w, c = shape
    return finalise_range(sources, int(y0) * w * c, int(y1) * w * c, out_mean, out_var, **kw)


def finalise_at(sources, index, out_mean: np.ndarray, out_var: np.ndarray, *,
                block_values: int = DEFAULT_BLOCK_VALUES) -> int:
    """:func:`finalise_range` for the values at flat (C-order) indices.

    The compiled kernels read the sources' fields in place at ``index``; the
    numpy ones gather a block at a time.  Each value gets the bits
    :func:`finalise_range` gives it.

    Parameters
    ----------
    sources : sequence of Accumulator, Stats or Partial
        As for :func:`finalise_range`.
    index : array of int
        Flat indices, ``0 <= index < size``, any order, repeats allowed.
    out_mean, out_var : ndarray
        Writable, C-contiguous, float32 or float64, ``len(index)`` values.

    Returns
    -------
    int
        The total image count.

    Raises
    ------
    HotPixelError
        As :func:`finalise_range`, or an index outside the values.
    """
    parts, size = _same_size_parts(sources)
    index = np.ascontiguousarray(index, dtype=np.int64).reshape(-1)
    if index.size and (int(index.min()) < 0 or int(index.max()) >= size):
        raise HotPixelError(f"an index is not within the {size} values")
    total = _image_count(parts)
    out_mean = _flat_out(out_mean, index.size, "out_mean")
    out_var = _flat_out(out_var, index.size, "out_var")
    if not index.size:
        return total
    return kernels.reduce_at(parts, index, out_mean, out_var, block_values)


def merge(accs: list, *, in_place: bool = True, block_values: int = DEFAULT_BLOCK_VALUES,
          threads: int = 1) -> tuple:
    """Merge the accumulators of several workers into finished statistics.

    Parameters
    ----------
    accs : list of Accumulator
        Same tier, shape and sample dtype; empty ones (``n == 0``) are ignored.
    in_place : bool, optional
        For the ``float64`` and ``float32`` tiers, write the mean into the
        memory of ``accs[0]``'s first field and the variance into its second,
        so no image-sized array is allocated; ``accs[0]`` then reads ``n == -1``
        and must be :meth:`~Accumulator.reset` before reuse.  The other tiers
        (and ``in_place=False``) allocate the two result arrays.
    block_values : int, optional
        Values merged per block; the temporaries are 5 float64 blocks (per thread).
    threads : int, optional
        Merge this many contiguous ranges at once.

    Returns
    -------
    n : int
        Total images.
    mean, var : ndarray
        Of image shape and dtype ``tiers.result_dtype(tier)``; ``var`` is the
        population variance (ddof=0).  With ``in_place`` they may be views into
        ``accs[0]``'s buffer: keep that buffer open while they are used.

    Raises
    ------
    HotPixelError
        No accumulator, mixed tiers/shapes/dtypes, or no image at all.

    Notes
    -----
    The whole frame through :func:`finalise_range`'s block loop: the exact
    tier's integer sums added exactly, the other tiers folded one by one with
    Chan's formula in float64.  Summing the M2 arrays would drop the
    between-worker term and be wrong.
    """
    accs = list(accs)
    if not accs:
        raise HotPixelError("nothing to merge: no accumulator")
    _check_compatible(accs)
    first = accs[0]
    parts = [a.as_partial() for a in accs]
    if sum(p.n for p in parts) == 0:
        raise HotPixelError("nothing to merge: no image was accumulated")
    rdt = tiers.result_dtype(first.tier)
    fields = tiers.fields(first.tier, first.sample_dtype)
    if in_place and all(fdt.itemsize == rdt.itemsize for _, fdt in fields[:2]):
        # Same itemsize: the result for a block is written only after every
        # input of that block was read, so the first two fields' bytes can
        # hold it.  Mark the buffer: it stops being an accumulator.
        out_mean = first._flat[0].view(rdt)
        out_var = first._flat[1].view(rdt)
        first.n = _CONSUMED
    else:
        out_mean = np.empty(first.size, rdt)
        out_var = np.empty(first.size, rdt)
    total = _reduce(parts, 0, first.size, out_mean, out_var, block_values, threads)
    return total, out_mean.reshape(first.shape), out_var.reshape(first.shape)


def fold_exact(accs: list, block_values: int = 1 << 20, threads: int = 1) -> list:
    """Add exact accumulators' integer sums into the first one, in place.

    Statistics finished band by band (:mod:`hotpixel_shm.bands`) read every
    partial again at each pass over them; folded, each pass reads one.  The
    sums are integers, so the result is the same bit for bit.

    Parameters
    ----------
    accs : list of Accumulator
        Compatible accumulators whose owners are done with them (the others
        are left unchanged but no longer needed).
    block_values : int, optional
        Values added per step (no temporaries).
    threads : int, optional
        Add the blocks on this many threads (numpy's add releases the GIL):
        the run's workers have exited, so their CPUs are free (issue 10).

    Returns
    -------
    list of Accumulator
        ``[accs[0]]`` holding every image, or ``accs`` unchanged when they
        are not all exact, fewer than two, or their total would overflow
        the first one's fields.
    """
    accs = list(accs)
    if len(accs) < 2 or any(a.tier != "exact" for a in accs):
        return accs
    _check_compatible(accs)
    first = accs[0]
    total = sum(a.n for a in accs)
    if total > first.capacity:
        return accs
    step = max(1, int(block_values))

    def add_block(s, slot):
        # every other accumulator's block in turn, while the block is in cache
        for other in accs[1:]:
            for dst, src in zip(first._flat, other._flat):
                np.add(dst[s:s + step], src[s:s + step], out=dst[s:s + step])

    for _ in map_ordered(add_block, range(0, first.size, step), threads):
        pass
    first.n = total
    return [first]


def merge_stats(a: Stats, b: Stats) -> Stats:
    """Combine two finished statistics (e.g. a saved run and a new one).

    Parameters
    ----------
    a, b : Stats

    Returns
    -------
    Stats
        Over ``a.n + b.n`` images, tier the less accurate of the two (its
        result dtype), ``files`` concatenated.

    Raises
    ------
    HotPixelError
        Different shapes, unknown tier, or no image at all.

    Notes
    -----
    The same block loop and formula as :func:`merge` (:func:`finalise_range`).
    """
    pa, pb = _as_partial(a), _as_partial(b)
    if a.shape != b.shape:
        raise HotPixelError(f"cannot merge statistics of shape {a.shape} with {b.shape}")
    meta = merged_metadata(a, b)
    if pa.n + pb.n == 0:
        raise HotPixelError(f"cannot merge statistics of {pa.n} and {pb.n} images")
    tier = max(a.tier, b.tier, key=tiers.ACCURACY_ORDER.index)
    rdt = tiers.result_dtype(tier)
    if isinstance(a.mean, BandArray) or isinstance(b.mean, BandArray):
        # statistics read band by band stay so: merged band by band as read (issue 9)
        return _merged_bands(a, b, pa.n, pb.n, tier, rdt, meta)
    mean = np.empty(a.shape, rdt)
    var = np.empty(a.shape, rdt)
    n = finalise_range([pa, pb], 0, mean.size, mean, var, block_values=1 << 20)
    return Stats(n=n, mean=mean, var=var, tier=tier, files=list(a.files) + list(b.files),
                 **meta)


def _merged_bands(a, b, na, nb, tier, rdt, meta):
    """:func:`merge_stats` of band-read statistics, itself read band by band."""
    ra, rb = a.reader(), b.reader()

    def finish(y0, y1, out_mean, out_var):
        parts = []
        for reader, n in ((ra, na), (rb, nb)):
            m, v = reader.rows(y0, y1)
            parts.append(Partial(int(n), kernels_numpy.FINISHED, None,
                                 (np.ascontiguousarray(m).reshape(-1), np.ascontiguousarray(v).reshape(-1))))
        finalise_range(parts, 0, out_mean.size, out_mean, out_var)

    reader = BandReader(a.shape, rdt, finish)
    return Stats(n=na + nb, mean=BandArray(reader, "mean"), var=BandArray(reader, "var"), tier=tier,
                 files=list(a.files) + list(b.files), owner=(a, b), **meta)


def accuracy_bound(tier: str, sample_dtype, n_images: int) -> dict:
    """The accuracy of a tier after ``n_images`` images per worker.

    Parameters
    ----------
    tier : str
    sample_dtype : dtype
        ``uint8`` or ``uint16``.
    n_images : int
        Images accumulated by the busiest worker.

    Returns
    -------
    dict
        ``mean_abs``: bound on ``|mean - mean_ref|`` in sample levels;
        ``var_rel``: bound on ``|var - var_ref| / var_ref`` for subpixels whose
        standard deviation is at least 0.5 level; ``basis``: ``"worst case"``
        (a proven rounding-error bound) or ``"5 sigma"`` (float16: five
        standard deviations of its unbiased rounding errors, see Notes).
        The reference is the exact mean and population variance of the same
        images (numpy's float64 ``mean``/``var`` agree with it to ~1e-13).
        ``inf`` where the tier cannot hold that many images.

    Notes
    -----
    ``u`` is the unit roundoff (2**-24 for float32, 2**-53 for float64), ``X``
    the largest sample value; merging is assumed to involve at most 16
    workers (each adds a few float64 roundings, ``32 u X`` in all).

    exact, float64, float32
        The mean is an exact integer sum divided by ``n``: one rounding to the
        result dtype, ``|err| <= u_result * X``.  For ``exact`` the variance
        comes from exact integers and a few float64 roundings.  For the float
        tiers the Welford increments are exact up to float64 rounding and all
        non-negative, so the stored ``M2`` is a recursive sum of positive terms
        with relative error ``<= gamma(n+1) = (n+1) u / (1 - (n+1) u)``
        (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
        section 4.2), plus the final rounding.  The bound is reached only by
        rounding errors of one sign at every update; on photo-like data the
        float32 error is ~100 times smaller (typically ``~u sqrt(n)``), but
        periodic pixels (a value repeating every few images) do drift
        linearly at about a tenth of the bound.
    float16
        Each update adds to the mean and to ``var + 1/4`` an error that is
        unbiased (stochastic rounding) and at most one storage unit: ``q_m =
        2**-16`` level for the mean, ``2**-12`` relative to ``var + 1/4`` (so
        ``2**-11`` relative to a variance >= 1/4).  A stored error is carried
        with weight ``k/n`` into the result, so the error after ``n`` images
        has standard deviation at most ``q/2 * sqrt((n+1)(2n+1) / 6n)``
        (independent errors); the bound is ``min(5 sigma, q (n+1)/2)``, the
        second being the worst case, plus the float32 arithmetic's worst case
        (3 roundings of 2**-24 per update) and ``1e-4`` for the effect of the
        mean's error on the variance.  On photo-like data the largest error
        measured over ~10**4 subpixels is below 2 sigma.

    Batches (:meth:`Accumulator.update_batch`, K photos per pass) stay within
    these bounds.  exact: the integer sums do not depend on K.  float64 and
    float32: a batch adds one increment ``(K Q - S**2) / K + q**2 / (n K k)``
    (``q = n S - K S_a``), both terms from exact integers and non-negative,
    with a few float64 roundings (far below ``u`` of float32; for float64
    relative ``4 * 2**-53`` per increment, inside the ``gamma`` term), so
    ``M2`` is a recursive sum of ``ceil(n / K) <= n`` positive terms.
    float16: one stochastic rounding per batch, carried with weight ``k/n``;
    fewer roundings give a smaller spread, and the float32 rounding of the
    batch's ``65536 (S - K mean)`` (``2**-24`` relative) adds at most
    ``2**-24 * top`` to the mean over the whole run, the ``_U32 * top`` term.
    """
    dt = _check_tier(tier, sample_dtype)
    n = int(n_images)
    if n < 0:
        raise HotPixelError(f"n_images must be >= 0, got {n}")
    top = float(np.iinfo(dt).max)
    if n > _capacity(tier, dt):
        return {"mean_abs": math.inf, "var_rel": math.inf, "basis": "worst case"}
    n = max(n, 1)
    merge_mean = 32 * _U64 * top
    # a worker's mean error d_err changes the between-worker term by at most
    # d_err / (2 std) relative, std >= 0.5
    merge_var = 64 * _U64 + merge_mean
    if tier == "exact":
        return {"mean_abs": _U64 * top + merge_mean, "var_rel": merge_var, "basis": "worst case"}
    if tier in ("float64", "float32"):
        u = _U64 if tier == "float64" else _U32
        m = n + 1
        if m * u >= 0.5:
            return {"mean_abs": math.inf, "var_rel": math.inf, "basis": "worst case"}
        gamma = m * u / (1 - m * u)
        return {"mean_abs": u * top + merge_mean, "var_rel": gamma + u + merge_var, "basis": "worst case"}
    # float16
    spread = math.sqrt((n + 1) * (2 * n + 1) / (6.0 * n))
    q_mean = 1.0 / _MEAN_UNITS
    q_var = 2.0 ** -11   # relative to var >= 1/4
    mean_abs = (min(5 * q_mean / 2 * spread, q_mean * (n + 1) / 2)
                + _U32 * top + 2.0 ** -40 * (top * _MEAN_UNITS + n) + merge_mean)
    var_rel = (min(5 * q_var / 2 * spread, q_var * (n + 1) / 2)
               + 3 * _U32 * (n + 1) / 2 + 1e-4 + _U32 + merge_var)
    return {"mean_abs": mean_abs, "var_rel": var_rel, "basis": "5 sigma"}
