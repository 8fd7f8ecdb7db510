"""Partial statistics: accumulators updated in place, merged with Chan/Pébay.

An :class:`Accumulator` holds the per-subpixel running statistics of one
worker in a flat buffer (typically POSIX shared memory): a small header with
the image count ``n`` followed by the arrays of the tier (see
:mod:`hotpixel_shm.tiers`).  :meth:`Accumulator.update` adds one image in place,
block by block, so its temporaries stay at a few MB whatever the image size.
:func:`merge` combines the accumulators of several workers with the parallel
formula of Chan, Golub and LeVeque (multi-way form of Pébay 2008)::

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

This module imports only numpy and the package's own tables: it is tested
without starting processes.
"""
from __future__ import annotations

import math

import numpy as np

from . import tiers
from .errors import HotPixelError
from .model import Stats, merged_metadata

__all__ = ["Accumulator", "merge", "combine", "merge_stats", "accuracy_bound",
           "DEFAULT_BLOCK_VALUES"]

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


# The float16 tier's 16-bit formats (IEEE float16 would be too coarse for the
# mean, and numpy converts it in software, ~3 ns a value each way):
#   mean: 24-bit fixed point, units of 2**-16 level, split into mean_lo
#         (uint16) and mean_hi (uint8);
#   var:  an unsigned 16-bit float of var + 0.25, 4 exponent bits (2**-2 up to
#         2**14) and 12 fraction bits: the top bits of its float32 pattern, so
#         encoding and decoding are integer shifts.  The 0.25 offset makes an
#         all-zero field mean var = 0 and gives constant pixels (var < 0.25) an
#         absolute resolution of 2**-14.
_MEAN_UNITS = 65536.0
_VAR_OFFSET = 0.25
_VAR_SHIFT = 11                                               # 23 - 12 fraction bits
_VAR_BASE = int(np.float32(_VAR_OFFSET).view(np.uint32)) >> _VAR_SHIFT
# Stochastic rounding makes both roundings unbiased: plain rounding to nearest
# drops every update below half a unit, so after a few hundred images a running
# mean or variance follows only the large updates of one sign and drifts
# (measured with IEEE float16 fields: low-noise means off by 0.17 level and
# variances by +20 % after 5000 images).  The uniform numbers are a
# lattice sequence: value i at update k gets i*G2 + k*G1 (mod 2**32), a Weyl
# sequence in k for every i (golden-ratio step: equidistributed, independent of
# the data and of the block size); its top 24 bits dither the mean, its low 11
# bits (a Weyl sequence mod 2**11) the variance.
_G1, _G2 = 0x9E3779B9, 0x7F4A7C15


def _decode_var(code, out_bits):
    """var + 0.25 as float32 (a view of uint32 ``out_bits``) from the codes."""
    np.add(code, np.uint32(_VAR_BASE), out=out_bits, dtype=np.uint32)
    np.left_shift(out_bits, _VAR_SHIFT, out=out_bits)
    return out_bits.view(np.float32)


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
        self._scratch = None

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
        self._scratch = None

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
        self._usable()
        image = np.asarray(image)
        if image.dtype != self.sample_dtype:
            raise HotPixelError(f"image dtype {image.dtype} does not match the accumulator's "
                                f"{self.sample_dtype}")
        if image.shape != self.shape:
            raise HotPixelError(f"image shape {image.shape} does not match the accumulator's {self.shape}")
        n = self.n
        if n >= self.capacity:
            raise HotPixelError(f"the {self.tier} accumulator is full: {n} images of {self.sample_dtype} "
                                f"is the most it can hold without overflow")
        flat = np.ascontiguousarray(image).reshape(-1)
        k = n + 1
        if self._scratch is None:
            self._scratch = self._make_scratch()
        step = {"exact": self._update_exact, "float64": self._update_float,
                "float32": self._update_float, "float16": self._update_half}[self.tier]
        bv = self.block_values
        for s in range(0, self.size, bv):
            step(flat, s, min(s + bv, self.size), k)
        self.n = k

    def _make_scratch(self):
        bv = min(self.block_values, self.size)
        if self.tier == "exact":
            # the sums' own types: 255**2 fits uint32, 65535**2 needs uint64
            sq = np.uint32 if self.sample_dtype == np.uint8 else np.uint64
            return [np.empty(bv, sq)]
        if self.tier == "float16":
            # M, T (uint32), D (int32), dither (uint32), three float32, the
            # dither's table
            tab = (np.arange(bv, dtype=np.uint64) * _G2 & 0xFFFFFFFF).astype(np.uint32)
            return ([np.empty(bv, np.uint32), np.empty(bv, np.uint32), np.empty(bv, np.int32),
                     np.empty(bv, np.uint32)] + [np.empty(bv, np.float32) for _ in range(3)] + [tab])
        scratch = [np.empty(bv, np.float64), np.empty(bv, np.float64)]
        if self.tier == "float32":
            scratch.append(np.empty(bv, np.float32))
        return scratch

    def _update_exact(self, flat, s, e, k):
        x = flat[s:e]
        tot, sq = self._flat[0][s:e], self._flat[1][s:e]
        t = self._scratch[0][:e - s]
        # widen once, then same-type ufuncs (mixed-type ones are slower)
        np.copyto(t, x)
        np.add(tot, t, out=tot)
        np.multiply(t, t, out=t)
        np.add(sq, t, out=sq)

    def _update_float(self, flat, s, e, k):
        # The mean is sum/k, held exactly.  Welford's increment
        # (x - mean_{k-1}) * (x - mean_k) equals q**2 / (k * (k - 1)) with the
        # integer q = k*x - sum_k, which float64 holds exactly (|q| < 2**53), so
        # no cancellation can happen however large the values and however small
        # the noise: only the squaring, the scaling and the addition into the
        # stored M2 round.  Casts are explicit np.copyto calls: numpy runs them
        # faster than mixed-type ufuncs.
        x = flat[s:e]
        L = e - s
        tot, m2 = self._flat[0][s:e], self._flat[1][s:e]
        np.add(tot, x, out=tot)
        if k == 1:
            return  # the first image's increment is 0 and M2 is still all zeros
        q, r = self._scratch[0][:L], self._scratch[1][:L]
        np.copyto(q, x)
        np.multiply(q, float(k), out=q)
        np.copyto(r, tot)
        np.subtract(q, r, out=q)
        np.multiply(q, q, out=q)
        np.multiply(q, 1.0 / (float(k) * (k - 1)), out=q)
        if m2.dtype == q.dtype:
            np.add(m2, q, out=m2)
        else:
            inc = self._scratch[2][:L]
            np.copyto(inc, q, casting="same_kind")
            np.add(m2, inc, out=m2)

    def _update_half(self, flat, s, e, k):
        # Integer and float32 arithmetic; every mixed-type step is an explicit
        # np.copyto cast, which numpy runs several times faster than a
        # mixed-type ufunc.  The mean code and D = 65536 * (x - mean) are exact
        # integers (< 2**24, so exact in float32 too); the other float32
        # roundings (6e-8 relative) are far below the storage units.
        x = flat[s:e]
        L = e - s
        lo, hi, vc = self._flat[0][s:e], self._flat[1][s:e], self._flat[2][s:e]
        if k == 1:
            # exact, and the general step's D / k + U would round in float32
            np.copyto(hi, x)
            lo.fill(0)
            vc.fill(0)
            return
        M, T, D, w, df, f, g, tab = (a[:L] for a in self._scratch)
        Mi, Ti = M.view(np.int32), T.view(np.int32)
        np.copyto(M, lo)
        np.copyto(T, hi)
        np.left_shift(T, 16, out=T)
        np.bitwise_or(M, T, out=M)                        # mean code
        np.copyto(D, x)
        np.left_shift(D, 16, out=D)
        np.subtract(D, Mi, out=D)                         # D = 65536 * (x - mean)
        np.copyto(df, D)
        # mean code += D / k, rounded stochastically: floor(D / k + U[0, 1))
        np.add(tab, np.uint32((s * _G2 + k * _G1) & 0xFFFFFFFF), out=w)
        np.right_shift(w, 8, out=T)
        np.copyto(g, T)
        np.multiply(g, np.float32(2.0 ** -24), out=g)
        np.multiply(df, np.float32(1.0 / k), out=f)
        np.add(f, g, out=f)
        np.floor(f, out=f)
        np.copyto(Ti, f, casting="unsafe")                # integral, |.| < 2**24
        np.add(Mi, Ti, out=Mi)                            # stays within [old mean, x]
        np.copyto(lo, M, casting="unsafe")                # low 16 bits
        np.right_shift(M, 16, out=M)
        np.copyto(hi, M, casting="unsafe")
        # variance: var_k = (k-1)/k * var_{k-1} + (k-1)/k**2 * d**2 with
        # d = D / 65536; the stored quantity is var + 1/4, and adding 1/4 to
        # a non-negative float32 gives at least 1/4: the code cannot underflow
        np.copyto(T, vc)
        y = _decode_var(T, T)
        np.subtract(y, np.float32(_VAR_OFFSET), out=g)    # exact
        np.multiply(g, np.float32((k - 1) / k), out=g)
        np.multiply(df, np.float32((k - 1) / (k * k * _MEAN_UNITS * _MEAN_UNITS)), out=f)
        np.multiply(f, df, out=f)
        np.add(g, f, out=g)
        np.add(g, np.float32(_VAR_OFFSET), out=g)
        # stochastic rounding to 12 fraction bits: add U[0, 1) units of the
        # dropped bits, then truncate
        gb = g.view(np.uint32)
        np.bitwise_and(w, np.uint32((1 << _VAR_SHIFT) - 1), out=w)
        np.add(gb, w, out=gb)
        np.right_shift(gb, _VAR_SHIFT, out=gb)
        np.subtract(gb, np.uint32(_VAR_BASE), out=gb)
        np.copyto(vc, gb, casting="unsafe")               # < 2**16 since var < 2**14

    # ----------------------------------------------------------------- partial
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
        n = self.n
        self._partial_into(start, stop, mean, m2, n, np.empty(stop - start, np.float64))
        return n, mean, m2

    def _partial_into(self, s, e, mean, m2, n, tmp):
        """Write the float64 mean and M2 of ``[s, e)`` into ``mean``, ``m2``.

        ``tmp`` is a float64 scratch block as long.  ``n`` is passed in because
        an in-place merge marks the header of the accumulator it writes into
        before reading its last blocks.  Casts are explicit np.copyto calls
        (faster in numpy than mixed-type ufuncs).
        """
        if n == 0:
            mean.fill(0.0)
            m2.fill(0.0)
            return
        f = [a[s:e] for a in self._flat]
        if self.tier == "exact":
            # M2 = (n*sumsq - sum**2) / n from an exact numerator: no cancellation.
            if self.sample_dtype == np.uint8:
                # sum**2 and n*sumsq < 2**49 within the tier's capacity:
                # float64 holds every product exactly
                np.copyto(mean, f[0])
                np.copyto(m2, f[1])
                np.multiply(m2, float(n), out=m2)
                np.multiply(mean, mean, out=tmp)
                np.subtract(m2, tmp, out=m2)
            else:
                # 16-bit: up to 2**64, exact in uint64 (the float64 buffers
                # double as uint64 scratch)
                s2 = mean.view(np.uint64)
                num = tmp.view(np.uint64)
                np.copyto(s2, f[0])
                np.multiply(s2, s2, out=s2)
                np.copyto(num, f[1])
                np.multiply(num, np.uint64(n), out=num)
                np.subtract(num, s2, out=num)
                np.copyto(m2, num, casting="same_kind")
                np.copyto(mean, f[0])
            np.multiply(m2, 1.0 / n, out=m2)
            np.divide(mean, float(n), out=mean)
        elif self.tier == "float16":
            y = _decode_var(f[2], tmp.view(np.uint32)[:e - s])   # var + 1/4, float32
            np.copyto(m2, y)
            np.subtract(m2, _VAR_OFFSET, out=m2)
            np.multiply(m2, float(n), out=m2)
            np.copyto(mean, f[1])
            np.multiply(mean, _MEAN_UNITS, out=mean)
            np.copyto(tmp, f[0])
            np.add(mean, tmp, out=mean)
            np.multiply(mean, 1.0 / _MEAN_UNITS, out=mean)          # exact: a power of 2
        else:
            np.copyto(mean, f[0])
            np.divide(mean, float(n), out=mean)
            np.copyto(m2, f[1])


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
    ``M2 = M2_a + M2_b + d**2 * n_a * n_b / n`` with ``d = mean_b - mean_a``:
    every term is non-negative, so nothing cancels.  A side with ``n == 0``
    contributes nothing (its mean is ignored).
    """
    n = n_a + n_b
    na = np.asarray(n_a, np.float64)
    nb = np.asarray(n_b, np.float64)
    # an empty side takes the other side's values, so that d == 0 and nothing
    # of its own (possibly garbage) mean and M2 enters the arithmetic
    mean_a = np.where(na == 0, mean_b, mean_a).astype(np.float64)
    mean_b = np.where(nb == 0, mean_a, mean_b).astype(np.float64)
    m2_a = np.where(na == 0, 0.0, m2_a).astype(np.float64)
    m2_b = np.where(nb == 0, 0.0, m2_b).astype(np.float64)
    frac_b = nb / np.where(na + nb > 0, na + nb, 1.0)
    d = mean_b - mean_a
    mean = mean_a + d * frac_b
    m2 = m2_a + m2_b + d * d * (na * frac_b)
    return n, mean, m2


def _fold(n_a, mean_a, m2_a, n_b, mean_b, m2_b, tmp):
    """In-place Chan step on float64 blocks: (mean_a, m2_a) absorb side b.

    ``mean_b`` is overwritten.  Both counts are positive scalars.
    """
    n = n_a + n_b
    d = mean_b
    np.subtract(mean_b, mean_a, out=d)
    np.multiply(d, n_b / n, out=tmp)
    np.add(mean_a, tmp, out=mean_a)
    np.add(m2_a, m2_b, out=m2_a)
    np.square(d, out=d)
    np.multiply(d, float(n_a) * n_b / n, out=d)
    np.add(m2_a, d, out=m2_a)


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
        Merge this many contiguous ranges at once (numpy releases the GIL
        in its loops, so threads use several cores without copying anything).

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
    Multi-way Chan/Pébay: the accumulators are folded one by one with
    :func:`combine`'s formula, in float64, block by block.  Summing the M2
    arrays would drop the between-worker term and be wrong.
    """
    accs = list(accs)
    if not accs:
        raise HotPixelError("nothing to merge: no accumulator")
    first = accs[0]
    for a in accs:
        if not isinstance(a, Accumulator):
            raise HotPixelError(f"merge needs Accumulator objects, got {type(a).__name__}")
        a._usable()
        if (a.tier, a.shape, a.sample_dtype) != (first.tier, first.shape, first.sample_dtype):
            raise HotPixelError(
                f"cannot merge a {a.tier} {a.shape} {a.sample_dtype} accumulator with a "
                f"{first.tier} {first.shape} {first.sample_dtype} one")
    live = [a for a in accs if a.n > 0]
    total = sum(a.n for a in live)
    if total == 0:
        raise HotPixelError("nothing to merge: no image was accumulated")
    rdt = tiers.result_dtype(first.tier)
    fields = tiers.fields(first.tier, first.sample_dtype)
    reuse = in_place and all(fdt.itemsize == rdt.itemsize for _, fdt in fields[:2])
    if reuse:
        # Same itemsize: the result for a block is written only after every
        # input of that block was read, so the first two fields' bytes can
        # hold it.  Mark the buffer before writing: it stops being an
        # accumulator.
        out_mean = first._flat[0].view(rdt)
        out_var = first._flat[1].view(rdt)
    else:
        out_mean = np.empty(first.size, rdt)
        out_var = np.empty(first.size, rdt)
    bv = max(1, min(int(block_values), first.size))
    counts = [a.n for a in live]
    if reuse:
        first.n = _CONSUMED

    # exact tier: add the workers' integer sums and finish once, from exact
    # integers (n*sumsq - sum**2 must fit uint64), so any worker count gives
    # the serial result bit for bit
    peak = 255 if first.sample_dtype == np.uint8 else 65535
    integer = first.tier == "exact" and (peak * total) ** 2 < 2 ** 64

    def merge_integer_range(start, stop):
        S, Q, t = (np.empty(bv, np.uint64) for _ in range(3))
        f = np.empty(bv, np.float64)
        for s in range(start, stop, bv):
            e = min(s + bv, stop)
            L = e - s
            Sb, Qb, tb, fb = S[:L], Q[:L], t[:L], f[:L]
            Sb.fill(0)
            Qb.fill(0)
            for a in live:
                np.copyto(tb, a._flat[0][s:e])
                np.add(Sb, tb, out=Sb)
                np.copyto(tb, a._flat[1][s:e])
                np.add(Qb, tb, out=Qb)
            np.copyto(fb, Sb)
            np.divide(fb, float(total), out=fb)
            np.copyto(out_mean[s:e], fb, casting="same_kind")
            np.multiply(Qb, np.uint64(total), out=Qb)
            np.multiply(Sb, Sb, out=Sb)
            np.subtract(Qb, Sb, out=Qb)
            np.copyto(fb, Qb, casting="same_kind")
            np.divide(fb, float(total) * float(total), out=fb)
            np.copyto(out_var[s:e], fb, casting="same_kind")

    def merge_range(start, stop):
        if integer:
            return merge_integer_range(start, stop)
        M, Q, pm, pq, tmp = (np.empty(bv, np.float64) for _ in range(5))
        for s in range(start, stop, bv):
            e = min(s + bv, stop)
            L = e - s
            Mb, Qb, pmb, pqb, tb = M[:L], Q[:L], pm[:L], pq[:L], tmp[:L]
            na = 0
            for a, nb in zip(live, counts):
                if na == 0:
                    a._partial_into(s, e, Mb, Qb, nb, tb)
                else:
                    a._partial_into(s, e, pmb, pqb, nb, tb)
                    _fold(na, Mb, Qb, nb, pmb, pqb, tb)
                na += nb
            np.multiply(Qb, 1.0 / total, out=Qb)
            np.copyto(out_mean[s:e], Mb, casting="same_kind")
            np.copyto(out_var[s:e], Qb, casting="same_kind")

    threads = max(1, min(int(threads), first.size // bv or 1))
    if threads == 1:
        merge_range(0, first.size)
    else:
        from concurrent.futures import ThreadPoolExecutor
        # contiguous ranges on block boundaries; each thread reads a range
        # completely before writing it, so in-place reuse stays safe
        step = -(-first.size // threads)
        step = -(-step // bv) * bv
        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(merge_range, a, min(a + step, first.size))
                       for a in range(0, first.size, step)]
            for f in futures:
                f.result()
    return total, out_mean.reshape(first.shape), out_var.reshape(first.shape)


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
    """
    for st in (a, b):
        if st.tier not in tiers.TIERS:
            raise HotPixelError(f"unknown tier {st.tier!r} in statistics")
        if np.shape(st.mean) != np.shape(st.var):
            raise HotPixelError(f"statistics with mean {np.shape(st.mean)} and var {np.shape(st.var)} shapes")
    if a.shape != b.shape:
        raise HotPixelError(f"cannot merge statistics of shape {a.shape} with {b.shape}")
    meta = merged_metadata(a, b)
    tier = max(a.tier, b.tier, key=tiers.ACCURACY_ORDER.index)
    rdt = tiers.result_dtype(tier)
    na, nb = int(a.n), int(b.n)
    if na < 0 or nb < 0 or na + nb == 0:
        raise HotPixelError(f"cannot merge statistics of {na} and {nb} images")
    mean = np.empty(a.shape, rdt)
    var = np.empty(a.shape, rdt)
    fm, fv = mean.reshape(-1), var.reshape(-1)
    am, av = np.asarray(a.mean).reshape(-1), np.asarray(a.var).reshape(-1)
    bm, bvv = np.asarray(b.mean).reshape(-1), np.asarray(b.var).reshape(-1)
    size = fm.size
    bv = max(1, min(1 << 20, size))
    M, Q, pm, pq, tmp = (np.empty(bv, np.float64) for _ in range(5))
    n = na + nb
    for s in range(0, size, bv):
        e = min(s + bv, size)
        L = e - s
        Mb, Qb, pmb, pqb, tb = M[:L], Q[:L], pm[:L], pq[:L], tmp[:L]
        if na == 0 or nb == 0:
            src_m, src_v = (am, av) if nb == 0 else (bm, bvv)
            np.copyto(Mb, src_m[s:e])
            np.copyto(Qb, src_v[s:e])
        else:
            np.copyto(Mb, am[s:e])
            np.multiply(av[s:e], float(na), out=Qb, dtype=np.float64)
            np.copyto(pmb, bm[s:e])
            np.multiply(bvv[s:e], float(nb), out=pqb, dtype=np.float64)
            _fold(na, Mb, Qb, nb, pmb, pqb, tb)
            np.divide(Qb, float(n), out=Qb)
        np.copyto(fm[s:e], Mb, casting="same_kind")
        np.copyto(fv[s:e], Qb, casting="same_kind")
    return Stats(n=n, mean=mean, var=var, tier=tier, files=list(a.files) + list(b.files),
                 **meta)


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
