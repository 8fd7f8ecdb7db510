"""The numpy kernels: each tier's update and the merge algebra on flat blocks.

This is the reference implementation; :mod:`hotpixel_shm.kernels` picks it or
its compiled twin (``_ckernels``) once at import.  Every function works on
flat (1-D, C-contiguous) arrays and validates nothing: the callers
(:class:`hotpixel_shm.welford.Accumulator`, :func:`hotpixel_shm.welford.merge`)
do that.

Update
    :func:`update` folds a batch of ``K`` images into a tier's fields: the
    batch's exact integer sums, then one Chan step (the ``K == 1`` case is
    Welford's update).  The accumulator is read and written once per batch
    and per block of ``block_values`` values.
Merge algebra
    :class:`Partial` is a partial result of any origin (an accumulator's
    fields, or finished statistics); :func:`partial` is the chunk step (a
    block of ``n``, float64 mean and ``M2``), :func:`chan_step` the one
    combine formula, and :func:`reduce_range` the one block loop: partial
    results in, finished mean and variance of a flat range out.

The constants of each update (:func:`update_constants`) are computed here
once and handed to the compiled kernels too, so both paths round alike.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["NAME", "Partial", "update", "update_constants", "partial", "chan_step",
           "reduce_range", "reduce_at", "MAX_BATCH", "FINISHED"]

#: Which implementation this is (``kernels.NAME`` reports the one in use).
NAME = "numpy"
#: Largest batch (images folded per pass) the kernels accept: the float16
#: tier's batch sums stay exact in float32 below this (``K**2 * 255**2 < 2**24``).
MAX_BATCH = 16
#: Pseudo-tier of a :class:`Partial` holding finished mean and variance.
FINISHED = "finished"

# The float16 tier's storage (see hotpixel_shm.welford): a 24-bit fixed-point
# mean in units of 2**-16 level, and var + 1/4 as the top 16 bits of its
# float32 pattern (4 exponent and 12 fraction bits), both rounded
# stochastically with a lattice sequence: value i at the update that brings
# the count to k gets i*G2 + k*G1 (mod 2**32).
MEAN_UNITS = 65536.0
VAR_OFFSET = 0.25
VAR_SHIFT = 11
VAR_BASE = int(np.float32(VAR_OFFSET).view(np.uint32)) >> VAR_SHIFT
G1, G2 = 0x9E3779B9, 0x7F4A7C15


class Partial(NamedTuple):
    """A partial result over the same flat values, whatever made it.

    Attributes
    ----------
    n : int
        Images it holds.
    tier : str
        An accumulator tier (``tiers.TIERS``), or :data:`FINISHED`.
    sample_dtype : numpy.dtype or None
        Of the images (accumulator tiers); None for finished statistics.
    fields : tuple of ndarray
        Flat arrays: the tier's fields (``tiers.fields``), or ``(mean, var)``
        (population variance) for :data:`FINISHED`.
    """

    n: int
    tier: str
    sample_dtype: object
    fields: tuple


# --------------------------------------------------------------------------- update

def update_constants(tier: str, n: int, k_batch: int) -> tuple:
    """The scalar constants of one batch update (shared with the compiled kernels).

    ``n`` images before the batch, ``k_batch`` in it, ``k = n + k_batch`` after.
    """
    k = n + k_batch
    if tier in ("float64", "float32"):
        # increment = W / K + q**2 / (n K k), q = n S_b - K S_a, W = K Q_b - S_b**2
        c_q = 0.0 if n == 0 else 1.0 / (float(n) * k_batch * k)
        return (float(n), float(k_batch), c_q, 1.0 / k_batch)
    if tier == "float16":
        return (np.float32(1.0 / k),                                   # mean step
                np.float32(n / k),                                      # old variance weight
                np.float32(n / (k_batch * k * k * MEAN_UNITS * MEAN_UNITS)),  # d**2 weight
                np.float32(1.0 / (k_batch * k)),                        # batch M2 weight
                np.uint32((k * G1) & 0xFFFFFFFF))                       # dither offset
    return ()


def update(tier: str, fields: Sequence[np.ndarray], images: Sequence[np.ndarray], n: int,
           start: int = 0, block_values: int = 65536, cache: dict = None) -> None:
    """Fold ``K = len(images)`` images into a tier's fields, in place.

    Parameters
    ----------
    tier : str
        One of ``tiers.TIERS``.
    fields : sequence of ndarray
        The tier's flat fields (``tiers.fields`` order), all of one length.
    images : sequence of ndarray
        ``K`` flat sample arrays as long as the fields (uint8 or uint16).
    n : int
        Images held before the batch.
    start : int, optional
        Flat index of ``fields[i][0]`` in the whole frame (the float16 tier's
        dither depends on it, so a band gives the bits of the whole frame).
    block_values : int, optional
        Values per block: the scratch stays in cache and the batch is folded
        while a block of the accumulator is there.
    cache : dict, optional
        Where the scratch blocks are kept between calls.
    """
    size = fields[0].size
    K = len(images)
    if cache is None:
        cache = {}
    step = {"exact": _update_exact, "float64": _update_float, "float32": _update_float,
            "float16": _update_half}[tier]
    consts = update_constants(tier, n, K)
    bv = max(1, min(int(block_values), size))
    scratch = _scratch(cache, tier, images[0].dtype, bv, K)
    for s in range(0, size, bv):
        e = min(s + bv, size)
        step(fields, images, s, e, n, start, consts, scratch)


def _scratch(cache, tier, sample_dtype, bv, K):
    key = (tier, np.dtype(sample_dtype), bv, K > 1)
    if cache.get("key") != key:
        cache.clear()
        cache["key"] = key
        if tier == "exact":
            # the sums' own types: 255**2 fits uint32, 65535**2 needs uint64
            sq = np.uint32 if np.dtype(sample_dtype) == np.uint8 else np.uint64
            cache["s"] = [np.empty(bv, sq)]
        elif tier == "float16":
            # M, T (uint32), D (int32), dither (uint32), three float32, the
            # dither's table; a batch adds its sums S, Q (int32)
            tab = (np.arange(bv, dtype=np.uint64) * G2 & 0xFFFFFFFF).astype(np.uint32)
            cache["s"] = ([np.empty(bv, np.uint32), np.empty(bv, np.uint32), np.empty(bv, np.int32),
                           np.empty(bv, np.uint32)] + [np.empty(bv, np.float32) for _ in range(3)]
                          + [tab, np.empty(bv, np.int32), np.empty(bv, np.int32)])
        else:
            # q, r (float64), the float32 increment, a batch's integer sums
            cache["s"] = [np.empty(bv, np.float64), np.empty(bv, np.float64),
                          np.empty(bv, np.float32), np.empty(bv, np.uint64), np.empty(bv, np.uint64)]
    return cache["s"]


def _update_exact(fields, images, s, e, n, start, consts, scratch):
    tot, sq = fields[0][s:e], fields[1][s:e]
    t = scratch[0][:e - s]
    for img in images:
        # widen once, then same-type ufuncs (mixed-type ones are slower)
        np.copyto(t, img[s:e])
        np.add(tot, t, out=tot)
        np.multiply(t, t, out=t)
        np.add(sq, t, out=sq)


def _update_float(fields, images, s, e, n, start, consts, scratch):
    # The mean is sum/k, held exactly.  A batch of K images with integer sums
    # S_b, Q_b joins n images with sum S_a by Chan's formula; its M2 increment
    #     (K Q_b - S_b**2) / K  +  q**2 / (n K k),   q = n S_b - K S_a,
    # has an exact integer numerator in each term (float64 holds them exactly
    # below 2**53), so nothing cancels however large the values and however
    # small the noise: only the squaring, the scalings, one sum and the
    # addition into the stored M2 round.  For K == 1 the first term is 0 and
    # this is Welford's update.  Casts are explicit np.copyto calls: numpy
    # runs them faster than mixed-type ufuncs.
    L = e - s
    tot, m2 = fields[0][s:e], fields[1][s:e]
    q, r, inc32, si, qi = (a[:L] for a in scratch)
    fn, fk, c_q, inv_k = consts
    K = len(images)
    if K == 1:
        x = images[0][s:e]
        np.add(tot, x, out=tot)
        if n == 0:
            return  # the first image's increment is 0 and M2 is still all zeros
        np.copyto(q, x)
        np.multiply(q, float(n + 1), out=q)
        np.copyto(r, tot)
        np.subtract(q, r, out=q)                     # q = k x - S_k = n x - S_a
    else:
        si.fill(0)
        qi.fill(0)
        for img in images:
            np.copyto(r.view(np.uint64), img[s:e])
            np.add(si, r.view(np.uint64), out=si)
            np.multiply(r.view(np.uint64), r.view(np.uint64), out=r.view(np.uint64))
            np.add(qi, r.view(np.uint64), out=qi)
        np.copyto(q, si)
        np.copyto(r, tot)
        np.add(tot, si, out=tot, casting="unsafe")   # exact: within the tier's capacity
        np.multiply(r, fk, out=r)                    # K S_a
        np.multiply(q, fn, out=q)                    # n S_b
        np.subtract(q, r, out=q)
        np.copyto(r, si)                             # S_b
        np.multiply(r, r, out=r)
        np.copyto(si.view(np.float64), qi)
        qf = si.view(np.float64)
        np.multiply(qf, fk, out=qf)                  # K Q_b
        np.subtract(qf, r, out=r)                    # W = K Q_b - S_b**2, exact
        np.multiply(r, inv_k, out=r)
    np.multiply(q, q, out=q)
    np.multiply(q, c_q, out=q)
    if K > 1:
        np.add(r, q, out=q)
    if m2.dtype == q.dtype:
        np.add(m2, q, out=m2)
    else:
        np.copyto(inc32, q, casting="same_kind")
        np.add(m2, inc32, out=m2)


def _update_half(fields, images, s, e, n, start, consts, scratch):
    # Integer and float32 arithmetic; every mixed-type step is an explicit
    # np.copyto cast, which numpy runs several times faster than a
    # mixed-type ufunc.  The mean code and D = 65536 * (S_b - K mean) are
    # exact integers (D < 2**27); D and the batch's M2 numerator are exact in
    # float32 for K = 1 and round once (2**-24 relative) for larger batches,
    # far below the storage units.
    L = e - s
    lo, hi, vc = fields[0][s:e], fields[1][s:e], fields[2][s:e]
    K = len(images)
    if n == 0 and K == 1:
        # exact, and the general step's D / k + U would round in float32
        np.copyto(hi, images[0][s:e])
        lo.fill(0)
        vc.fill(0)
        return
    c_mean, c_old, c_d, c_w, k_off = consts
    M, T, D, w, df, f, g, tab, S, Q = (a[:L] for a in scratch)
    Mi, Ti = M.view(np.int32), T.view(np.int32)
    np.copyto(M, lo)
    np.copyto(T, hi)
    np.left_shift(T, 16, out=T)
    np.bitwise_or(M, T, out=M)                        # mean code
    if K == 1:
        np.copyto(D, images[0][s:e])
        np.left_shift(D, 16, out=D)
        np.subtract(D, Mi, out=D)                     # D = 65536 * (x - mean)
    else:
        S.fill(0)
        Q.fill(0)
        for img in images:
            np.copyto(D, img[s:e])
            np.add(S, D, out=S)
            np.multiply(D, D, out=D)
            np.add(Q, D, out=Q)
        np.copyto(D, S)
        np.left_shift(D, 16, out=D)
        np.multiply(Mi, np.int32(K), out=Ti)
        np.subtract(D, Ti, out=D)                     # D = 65536 * (S_b - K mean)
        np.multiply(Q, np.int32(K), out=Q)
        np.multiply(S, S, out=S)
        np.subtract(Q, S, out=Q)                      # W = K Q_b - S_b**2
    np.copyto(df, D)
    # mean code += D / k, rounded stochastically: floor(D / k + U[0, 1))
    np.add(tab, np.uint32((((start + s) * G2) + int(k_off)) & 0xFFFFFFFF), out=w)
    np.right_shift(w, 8, out=T)
    np.copyto(g, T)
    np.multiply(g, np.float32(2.0 ** -24), out=g)
    np.multiply(df, c_mean, out=f)
    np.add(f, g, out=f)
    np.floor(f, out=f)
    np.copyto(Ti, f, casting="unsafe")                # integral, |.| < 2**24
    np.add(Mi, Ti, out=Mi)                            # stays within the batch's range
    np.copyto(lo, M, casting="unsafe")                # low 16 bits
    np.right_shift(M, 16, out=M)
    np.copyto(hi, M, casting="unsafe")
    # variance: var_k = n/k var_n + n/(K k**2) d**2 + W / (K k), with
    # d = D / 65536; the stored quantity is var + 1/4, and adding 1/4 to a
    # non-negative float32 gives at least 1/4: the code cannot underflow
    np.copyto(T, vc)
    y = _decode_var(T, T)
    np.subtract(y, np.float32(VAR_OFFSET), out=g)     # exact
    np.multiply(g, c_old, out=g)
    np.multiply(df, c_d, out=f)
    np.multiply(f, df, out=f)
    np.add(g, f, out=g)
    if K > 1:
        np.copyto(f, Q)
        np.multiply(f, c_w, out=f)
        np.add(g, f, out=g)
    np.add(g, np.float32(VAR_OFFSET), out=g)
    # stochastic rounding to 12 fraction bits: add U[0, 1) units of the
    # dropped bits, then truncate
    gb = g.view(np.uint32)
    np.bitwise_and(w, np.uint32((1 << VAR_SHIFT) - 1), out=w)
    np.add(gb, w, out=gb)
    np.right_shift(gb, VAR_SHIFT, out=gb)
    np.subtract(gb, np.uint32(VAR_BASE), out=gb)
    np.copyto(vc, gb, casting="unsafe")               # < 2**16 since var < 2**14


def _decode_var(code, out_bits):
    """var + 0.25 as float32 (a view of uint32 ``out_bits``) from the codes."""
    np.add(code, np.uint32(VAR_BASE), out=out_bits, dtype=np.uint32)
    np.left_shift(out_bits, VAR_SHIFT, out=out_bits)
    return out_bits.view(np.float32)


# --------------------------------------------------------------------------- merge algebra

def partial(p: Partial, s: int, e: int, mean: np.ndarray, m2: np.ndarray, tmp: np.ndarray) -> None:
    """The chunk step: float64 mean and ``M2`` of values ``[s, e)`` of ``p``.

    ``mean``, ``m2`` and ``tmp`` are float64 blocks of length ``e - s``.
    Casts are explicit np.copyto calls (faster in numpy than mixed-type ufuncs).
    """
    n = p.n
    if n == 0:
        mean.fill(0.0)
        m2.fill(0.0)
        return
    f = [a[s:e] for a in p.fields]
    if p.tier == FINISHED:
        np.copyto(mean, f[0])
        np.multiply(f[1], float(n), out=m2, dtype=np.float64)
    elif p.tier == "exact":
        # M2 = (n*sumsq - sum**2) / n from an exact numerator: no cancellation.
        if p.sample_dtype == np.uint8:
            # sum**2 and n*sumsq < 2**49 within the tier's capacity: float64
            # holds every product exactly
            np.copyto(mean, f[0])
            np.copyto(m2, f[1])
            np.multiply(m2, float(n), out=m2)
            np.multiply(mean, mean, out=tmp)
            np.subtract(m2, tmp, out=m2)
        else:
            # 16-bit: up to 2**64, exact in uint64 (the float64 buffers double
            # as uint64 scratch)
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
    elif p.tier == "float16":
        y = _decode_var(f[2], tmp.view(np.uint32)[:e - s])   # var + 1/4, float32
        np.copyto(m2, y)
        np.subtract(m2, VAR_OFFSET, out=m2)
        np.multiply(m2, float(n), out=m2)
        np.copyto(mean, f[1])
        np.multiply(mean, MEAN_UNITS, out=mean)
        np.copyto(tmp, f[0])
        np.add(mean, tmp, out=mean)
        np.multiply(mean, 1.0 / MEAN_UNITS, out=mean)       # exact: a power of 2
    else:
        np.copyto(mean, f[0])
        np.divide(mean, float(n), out=mean)
        np.copyto(m2, f[1])


def chan_step(n_a, mean_a, m2_a, n_b, mean_b, m2_b, tmp) -> None:
    """The combine formula of Chan, Golub and LeVeque, in place on float64 blocks.

    ``(mean_a, m2_a)`` absorb side b::

        n = n_a + n_b;  d = mean_b - mean_a
        mean_a += d * (n_b / n)
        m2_a   += m2_b + d**2 * (n_a * (n_b / n))

    ``mean_b`` is overwritten (it holds ``d**2`` afterwards); ``tmp`` is a
    scratch block.  The counts are positive scalars, or arrays (broadcast with
    the blocks) whose sums are all positive.  Every term of ``M2`` is
    non-negative, so nothing cancels.
    """
    frac_b = n_b / (n_a + n_b)
    cross = n_a * frac_b
    d = np.subtract(mean_b, mean_a, out=mean_b)
    np.multiply(d, frac_b, out=tmp)
    np.add(mean_a, tmp, out=mean_a)
    np.add(m2_a, m2_b, out=m2_a)
    np.square(d, out=d)
    np.multiply(d, cross, out=d)
    np.add(m2_a, d, out=m2_a)


def _integer_merge(parts, total):
    """Whether the exact tier's integer sums can be added and finished
    exactly (``n*sumsq - sum**2`` must fit uint64)."""
    if not all(p.tier == "exact" for p in parts):
        return False
    peak = 255 if parts[0].sample_dtype == np.uint8 else 65535
    return (peak * total) ** 2 < 2 ** 64


def reduce_range(parts: Sequence[Partial], start: int, stop: int, out_mean: np.ndarray,
                 out_var: np.ndarray, block_values: int = 65536) -> int:
    """The one block loop: merge ``parts`` over flat ``[start, stop)`` and finish.

    Parameters
    ----------
    parts : sequence of Partial
        Over the same flat values; empty ones (``n == 0``) are ignored; at
        least one must hold an image.
    start, stop : int
        The flat range.
    out_mean, out_var : ndarray
        Flat, of length ``stop - start`` (float32 or float64): the mean and
        the population variance.  They may share memory with the first
        part's first two fields at the same positions (an in-place merge):
        each block is read completely before it is written.
    block_values : int, optional
        Values per block; the temporaries are 5 float64 blocks.

    Returns
    -------
    int
        The total image count.

    Notes
    -----
    Exact accumulators alone are merged by adding their integer sums and
    finishing once from exact integers, so any split of the images gives the
    serial result bit for bit.  Anything else is folded part by part with
    :func:`chan_step` in float64.  A single part of finished statistics is
    copied unchanged.
    """
    live = [p for p in parts if p.n > 0]
    total = sum(p.n for p in live)
    bv = max(1, min(int(block_values), stop - start))
    if len(live) == 1 and live[0].tier == FINISHED:
        np.copyto(out_mean, live[0].fields[0][start:stop], casting="same_kind")
        np.copyto(out_var, live[0].fields[1][start:stop], casting="same_kind")
        return total
    if _integer_merge(live, total):
        _integer_range(live, total, start, stop, out_mean, out_var, bv)
        return total
    M, Q, pm, pq, tmp = (np.empty(bv, np.float64) for _ in range(5))
    for s in range(start, stop, bv):
        e = min(s + bv, stop)
        L = e - s
        Mb, Qb, pmb, pqb, tb = M[:L], Q[:L], pm[:L], pq[:L], tmp[:L]
        na = 0
        for p in live:
            if na == 0:
                partial(p, s, e, Mb, Qb, tb)
            else:
                partial(p, s, e, pmb, pqb, tb)
                chan_step(float(na), Mb, Qb, float(p.n), pmb, pqb, tb)
            na += p.n
        np.multiply(Qb, 1.0 / total, out=Qb)
        np.copyto(out_mean[s - start:e - start], Mb, casting="same_kind")
        np.copyto(out_var[s - start:e - start], Qb, casting="same_kind")
    return total


def reduce_at(parts: Sequence[Partial], index: np.ndarray, out_mean: np.ndarray,
              out_var: np.ndarray, block_values: int = 65536) -> int:
    """:func:`reduce_range` for the values at flat indices ``index`` (int64),
    in their order, into ``out_mean``/``out_var`` of ``len(index)`` values.

    Each block of indices is gathered from every part's fields, then merged
    and finished as :func:`reduce_range` does: each value gets the bits it
    gets there.
    """
    live = [p for p in parts if p.n > 0]
    total = sum(p.n for p in live)
    bv = max(1, int(block_values))
    for s in range(0, index.size, bv):
        e = min(s + bv, index.size)
        at = index[s:e]
        picked = [p._replace(fields=tuple(f[at] for f in p.fields)) for p in live]
        reduce_range(picked, 0, e - s, out_mean[s:e], out_var[s:e], bv)
    return total


def _integer_range(live, total, start, stop, out_mean, out_var, bv):
    S, Q, t = (np.empty(bv, np.uint64) for _ in range(3))
    f = np.empty(bv, np.float64)
    for s in range(start, stop, bv):
        e = min(s + bv, stop)
        L = e - s
        Sb, Qb, tb, fb = S[:L], Q[:L], t[:L], f[:L]
        Sb.fill(0)
        Qb.fill(0)
        for p in live:
            np.copyto(tb, p.fields[0][s:e])
            np.add(Sb, tb, out=Sb)
            np.copyto(tb, p.fields[1][s:e])
            np.add(Qb, tb, out=Qb)
        np.copyto(fb, Sb)
        np.divide(fb, float(total), out=fb)
        np.copyto(out_mean[s - start:e - start], fb, casting="same_kind")
        np.multiply(Qb, np.uint64(total), out=Qb)
        np.multiply(Sb, Sb, out=Sb)
        np.subtract(Qb, Sb, out=Qb)
        np.copyto(fb, Qb, casting="same_kind")
        np.divide(fb, float(total) * float(total), out=fb)
        np.copyto(out_var[s - start:e - start], fb, casting="same_kind")
