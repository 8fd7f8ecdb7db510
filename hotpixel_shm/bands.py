"""Statistics read band by band: mean and variance finished on demand.

A run's result need not exist as two image-sized arrays.  A
:class:`BandReader` finishes any band of rows (``rows(y0, y1)``) from
whatever holds the statistics -- the merged accumulators of a run, or two
arrays -- and keeps the few bands last read in a small cache, so that
reading the mean and then the variance of the same rows finishes them once.
:class:`BandArray` puts an ndarray-like face on it: ``shape``, ``dtype``,
basic slicing (returns another view, nothing computed), integer-array
gathers (finishes only the rows they touch) and ``numpy.asarray``
(finishes the view's rows: the whole frame only when the view is the whole
frame).  Detection, the picture, the summary and the statistics file read
their input this way, so the parent never holds a full-frame float64 copy
it does not need.

Numerics only: no processes, no files.
"""
from __future__ import annotations

import collections
import threading

import numpy as np

from .errors import HotPixelError

__all__ = ["band_rows", "BandReader", "ArrayBands", "BandArray", "iter_bands", "as_reader", "default_band_rows",
           "reader_cache_bytes", "cache_bands_for", "map_ordered", "frame_reader", "DEFAULT_BAND_VALUES",
           "DEFAULT_CACHE_BANDS", "SUMMARY_LOWEST"]

#: Values per band read at once (per plane): 2**19 float64 values are 4 MiB.
DEFAULT_BAND_VALUES = 1 << 19
#: Lowest variances a reader notes for the summary (``BandReader.variance_summary``).
SUMMARY_LOWEST = 10
#: Bands a reader keeps: detection reads a band plus the halo of its window
#: (and the overlay check up to 8 rows around it), so three suffice.
DEFAULT_CACHE_BANDS = 3


_Event = threading.Event     # the waits for a band another thread finishes (a test counts them)


def band_rows(height, bands):
    """The ``(y0, y1)`` rows of each band pass: ``bands`` bands of equal height
    (the last may be shorter), top to bottom."""
    step = -(-int(height) // int(bands))
    return [(y0, min(int(height), y0 + step)) for y0 in range(0, int(height), step)]


def default_band_rows(shape) -> int:
    """Rows of a reader's band for a ``(height, width, channels)`` frame."""
    _, w, c = (int(v) for v in shape)
    return max(1, DEFAULT_BAND_VALUES // (w * c))


def cache_bands_for(threads) -> int:
    """Bands a reader keeps for ``threads`` threads that read neighbouring
    bands at once (detection and the line test spread over the usable CPUs,
    ``map_ordered``): two more for each thread after the first -- a
    detection band of 32 rows and its halo reach into two more of a 24 MP
    reader's bands of 29 rows -- so that none evicts a band another still
    reads (which would finish it again)."""
    return DEFAULT_CACHE_BANDS + 2 * (max(1, int(threads)) - 1)


def map_ordered(fn, items, threads=1):
    """Yield ``fn(item, slot)`` for each of ``items``, in their order, on up
    to ``threads`` threads.

    At most ``threads`` calls are in flight at once, each with a ``slot``
    (``0 <= slot < threads``) no other call in flight has: a call may use
    the scratch buffers of its slot.  Calls start in the order of ``items``
    and a call starts only when the oldest one in flight is collected, so
    the threads work on neighbouring items (neighbouring bands of rows stay
    in a reader's cache) and what the caller keeps of the results stays
    bounded.  One thread: plain calls, in this thread.  numpy and the
    compiled kernels release the GIL, so the threads use several cores;
    the results are the same whatever the thread count as long as ``fn``'s
    arithmetic depends on its item only.
    """
    threads = max(1, int(threads))
    if threads == 1:
        for item in items:
            yield fn(item, 0)
        return
    from concurrent.futures import ThreadPoolExecutor
    items = iter(items)
    free = list(range(threads))
    pending = collections.deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="hotpixel-bands") as pool:
        try:
            while True:
                while free:
                    item = next(items, _END)
                    if item is _END:
                        break
                    slot = free.pop()
                    pending.append((slot, pool.submit(fn, item, slot)))
                if not pending:
                    return
                slot, fut = pending.popleft()
                result = fut.result()
                free.append(slot)
                yield result
        finally:
            for _, fut in pending:
                fut.cancel()


_END = object()


def reader_cache_bytes(shape, dtype, cache_bands=DEFAULT_CACHE_BANDS) -> int:
    """Most bytes a :class:`BandReader` of this frame holds (both planes, every cached band).

    The memory planner counts this for statistics that are finished band by band.
    """
    h, w, c = (int(v) for v in shape)
    return 2 * int(cache_bands) * min(h, default_band_rows(shape)) * w * c * np.dtype(dtype).itemsize


class BandReader:
    """Finishes rows of the mean and variance of a ``(height, width, channels)`` frame.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width, channels)``.
    dtype : dtype-like
        Of the finished values (float32 or float64).
    finish : callable
        ``finish(y0, y1, out_mean, out_var)`` writes rows ``y0 <= y < y1`` into
        the two C-contiguous ``(y1 - y0, width, channels)`` arrays (of
        ``dtype``, or float32 for :meth:`rows_through`), any number of rows.
    band_rows : int, optional
        Rows finished at once (the cache's unit); default: about
        ``DEFAULT_BAND_VALUES`` values.
    cache_bands : int, optional
        Bands kept (least recently used goes first).
    gather : callable, optional
        ``gather(flat_index, out_mean, out_var)`` finishes the values at the
        given flat (C-order) indices only; without it :meth:`gather` finishes
        the bands that hold them.

    Notes
    -----
    The cache holds at most ``cache_bands * band_rows * width * channels``
    values of each plane: :meth:`nbytes_cached` says how many bytes.
    """

    def __init__(self, shape, dtype, finish, *, band_rows=None, cache_bands=DEFAULT_CACHE_BANDS,
                 gather=None):
        h, w, c = (int(v) for v in shape)
        if min(h, w, c) < 1:
            raise HotPixelError(f"statistics of shape {shape} have no values")
        self.shape = (h, w, c)
        self.dtype = np.dtype(dtype)
        self._finish = finish
        self._gather = gather
        self.band_rows = int(band_rows) if band_rows else default_band_rows(self.shape)
        self.cache_bands = max(1, int(cache_bands))
        self._cache = collections.OrderedDict()
        self._busy = {}             # band -> Event: being finished by another thread
        self._view_cache = None     # (view, plane, values): the plane gather_view did not return
        self._lock = threading.Lock()
        # the variance's summary, noted as each band is first finished (issue 10):
        # band -> (min, max, sum); the SUMMARY_LOWEST lowest (flat index, value)
        self._noted = {}
        self._low_idx = np.zeros(0, np.int64)
        self._low_val = np.zeros(0, np.float64)

    def nbytes_cached(self) -> int:
        """Most bytes the cache can hold (both planes)."""
        h, w, c = self.shape
        return 2 * self.cache_bands * min(h, self.band_rows) * w * c * self.dtype.itemsize

    def _band(self, k):
        while True:
            with self._lock:
                hit = self._cache.get(k)
                if hit is not None:
                    self._cache.move_to_end(k)
                    return hit
                busy = self._busy.get(k)
                if busy is None:
                    # this thread finishes it; others that want it wait
                    # instead of finishing it a second time
                    busy = self._busy[k] = _Event()
                    break
            busy.wait()
        try:
            h, w, c = self.shape
            y0 = k * self.band_rows
            y1 = min(h, y0 + self.band_rows)
            mean = np.empty((y1 - y0, w, c), self.dtype)
            var = np.empty_like(mean)
            self._finish(y0, y1, mean, var)
            with self._lock:
                if k not in self._noted:
                    self._note(k, var)
                self._cache[k] = (mean, var)
                while len(self._cache) > self.cache_bands:
                    self._cache.popitem(last=False)
        finally:
            with self._lock:
                del self._busy[k]
            busy.set()
        return mean, var

    def _views(self, y0, y1):
        """Yield ``(s, e, mean_rows, var_rows)`` covering rows ``y0 <= y < y1``:
        read-only views of the cached bands (each finished once), no copy."""
        y = int(y0)
        while y < y1:
            k = y // self.band_rows
            m, v = self._band(k)
            b0 = k * self.band_rows
            e = min(int(y1), b0 + m.shape[0])
            yield y, e, m[y - b0:e - b0], v[y - b0:e - b0]
            y = e

    def _note(self, k, var):
        """Band ``k``'s part of :meth:`variance_summary` (its variance ``var``)."""
        flat = var.reshape(-1)
        self._noted[k] = (float(flat.min()), float(flat.max()), float(flat.sum(dtype=np.float64)))
        _, w, c = self.shape
        self._low_idx, self._low_val = keep_lowest(self._low_idx, self._low_val, flat,
                                                   k * self.band_rows * w * c, SUMMARY_LOWEST)

    def variance_summary(self, k=SUMMARY_LOWEST):
        """``((min, max, mean), lowest)`` of the variance, or None when ``k``
        is more than ``SUMMARY_LOWEST`` or the reader's bands are not the
        default ones (:func:`iter_bands`' partition, which the sum follows).

        Noted as each band is first finished, so after a reader of the whole
        frame (detection) it costs nothing more; bands never read are read
        now.  ``lowest``: ``k`` ``(flat index, value)`` pairs, lowest value
        first (ties: in storage order).  Equal to reading :func:`iter_bands`
        and keeping the same, bit for bit.
        """
        if k > SUMMARY_LOWEST or self.band_rows != default_band_rows(self.shape):
            return None
        h = self.shape[0]
        for b in range(-(-h // self.band_rows)):
            if b not in self._noted:
                self._band(b)
        with self._lock:
            parts = [self._noted[b] for b in range(-(-h // self.band_rows))]
            lowest = list(zip(self._low_idx[:k].tolist(), self._low_val[:k].tolist()))
        total = 0.0
        for _, _, t in parts:
            total += t
        low = min(p[0] for p in parts)
        high = max(p[1] for p in parts)
        return (low, high, total / (h * self.shape[1] * self.shape[2])), lowest

    def rows(self, y0, y1, out_mean=None, out_var=None):
        """Mean and variance of rows ``y0 <= y < y1``.

        Parameters
        ----------
        y0, y1 : int
            ``0 <= y0 <= y1 <= height``.
        out_mean, out_var : ndarray, optional
            ``(y1 - y0, width, channels)`` arrays to write into (any float
            dtype); new arrays of :attr:`dtype` when None.

        Returns
        -------
        mean, var : ndarray
        """
        h, w, c = self.shape
        y0, y1 = int(y0), int(y1)
        if not 0 <= y0 <= y1 <= h:
            raise HotPixelError(f"rows [{y0}, {y1}) are not within the {h} rows")
        if out_mean is None:
            out_mean = np.empty((y1 - y0, w, c), self.dtype)
        if out_var is None:
            out_var = np.empty((y1 - y0, w, c), self.dtype)
        if y1 - y0 > self.cache_bands * self.band_rows:
            # a long read goes straight through, band by band, and is not cached
            for s in range(y0, y1, self.band_rows):
                e = min(y1, s + self.band_rows)
                if out_mean.dtype == self.dtype and out_var.dtype == self.dtype \
                        and out_mean.flags.c_contiguous and out_var.flags.c_contiguous:
                    self._finish(s, e, out_mean[s - y0:e - y0], out_var[s - y0:e - y0])
                else:
                    m = np.empty((e - s, w, c), self.dtype)
                    v = np.empty_like(m)
                    self._finish(s, e, m, v)
                    np.copyto(out_mean[s - y0:e - y0], m, casting="unsafe")
                    np.copyto(out_var[s - y0:e - y0], v, casting="unsafe")
            return out_mean, out_var
        y = y0
        while y < y1:
            k = y // self.band_rows
            m, v = self._band(k)
            b0 = k * self.band_rows
            e = min(y1, b0 + m.shape[0])
            np.copyto(out_mean[y - y0:e - y0], m[y - b0:e - b0], casting="unsafe")
            np.copyto(out_var[y - y0:e - y0], v[y - b0:e - b0], casting="unsafe")
            y = e
        return out_mean, out_var

    def rows_through(self, y0, y1, out_mean, out_var):
        """Mean and variance of rows ``y0 <= y < y1`` written into the
        caller's arrays past the cache: rows of a cached band are copied from
        it, the others finished straight into ``out_mean`` and ``out_var``
        and not kept.

        For one pass over the frame beside threads that read it through the
        cache (the line test beside detection, issue 10): it evicts none of
        their bands, and float32 rows are finished as float32 (the same bits
        as the reader's values cast), not finished in float64 to be cast.

        Parameters
        ----------
        y0, y1 : int
            ``0 <= y0 <= y1 <= height``.
        out_mean, out_var : ndarray
            C-contiguous ``(y1 - y0, width, channels)`` arrays, float32 or
            of :attr:`dtype` (``finish`` writes either).
        """
        h, w, c = self.shape
        y0, y1 = int(y0), int(y1)
        if not 0 <= y0 <= y1 <= h:
            raise HotPixelError(f"rows [{y0}, {y1}) are not within the {h} rows")
        y, todo = y0, y0        # rows [todo, y) are not in the cache
        while y < y1:
            k = y // self.band_rows
            b0 = k * self.band_rows
            e = min(y1, b0 + self.band_rows)
            with self._lock:
                hit = self._cache.get(k)
            if hit is not None:
                if todo < y:
                    self._finish(todo, y, out_mean[todo - y0:y - y0], out_var[todo - y0:y - y0])
                np.copyto(out_mean[y - y0:e - y0], hit[0][y - b0:e - b0], casting="unsafe")
                np.copyto(out_var[y - y0:e - y0], hit[1][y - b0:e - b0], casting="unsafe")
                todo = e
            y = e
        if todo < y1:
            # the rows of bands not in the cache, finished at once
            self._finish(todo, y1, out_mean[todo - y0:], out_var[todo - y0:])

    def gather_view(self, which, rows, cols, chan):
        """One plane of a strided one-channel view ``(rows, cols)`` as
        ``(start, step, count)``, finished value by value (both planes at
        once; the other is kept for the next call with the same view)."""
        key = (rows, cols, chan)
        with self._lock:
            hit = self._view_cache
            if hit is not None and hit[0] == key and hit[1] == which:
                self._view_cache = None
                return hit[2]
        ys = np.arange(rows[2]) * rows[1] + rows[0]
        xs = np.arange(cols[2]) * cols[1] + cols[0]
        _, w, c = self.shape
        flat = ((ys[:, None] * w + xs[None, :]) * c + chan).reshape(-1)
        mean = np.empty(flat.size, self.dtype)
        var = np.empty(flat.size, self.dtype)
        self._gather(flat, mean, var)
        shape = (rows[2], cols[2])
        mine, other = (mean, var) if which == "mean" else (var, mean)
        with self._lock:
            self._view_cache = (key, "var" if which == "mean" else "mean", other.reshape(shape))
        return mine.reshape(shape)

    def gather(self, which, ys, xs, cs):
        """Values of one plane at ``(ys, xs, cs)`` (broadcast together).

        Only the bands holding the rows asked for are finished.

        Parameters
        ----------
        which : {"mean", "var"}
        ys, xs, cs : array_like of int
            Row, column and channel indices, in range.

        Returns
        -------
        ndarray
            Of the broadcast shape, dtype :attr:`dtype`.
        """
        plane = 0 if which == "mean" else 1
        ys, xs, cs = np.broadcast_arrays(np.asarray(ys, np.intp), np.asarray(xs, np.intp),
                                         np.asarray(cs, np.intp))
        out = np.empty(ys.shape, self.dtype)
        if self._gather is not None and out.size:
            # a scattered sample: finish those values only, not their bands
            _, w, c = self.shape
            flat = ((ys * w + xs) * c + cs).reshape(-1)
            other = np.empty(flat.size, self.dtype)
            mine = out.reshape(-1)
            self._gather(flat, mine, other) if plane == 0 else self._gather(flat, other, mine)
            return out
        fy, fx, fc, fo = ys.reshape(-1), xs.reshape(-1), cs.reshape(-1), out.reshape(-1)
        band = fy // self.band_rows
        order = np.argsort(band, kind="stable")
        bands, starts = np.unique(band[order], return_index=True)
        ends = np.append(starts[1:], order.size)
        for k, s, e in zip(bands, starts, ends):
            idx = order[s:e]
            arr = self._band(int(k))[plane]
            fo[idx] = arr[fy[idx] - int(k) * self.band_rows, fx[idx], fc[idx]]
        return out


class ArrayBands(BandReader):
    """A :class:`BandReader` over two finished arrays (no copy, no cache)."""

    def __init__(self, mean, var):
        mean = np.asarray(mean)
        var = np.asarray(var)
        if mean.ndim == 2:
            mean, var = mean[:, :, None], var[:, :, None]
        if mean.shape != var.shape or mean.ndim != 3:
            raise HotPixelError(f"mean {mean.shape} and var {var.shape} must have the same "
                                f"(height, width, channels) shape")
        super().__init__(mean.shape, np.result_type(mean.dtype, var.dtype), self._copy)
        self._mean, self._var = mean, var

    def nbytes_cached(self) -> int:
        return 0

    def _copy(self, y0, y1, out_mean, out_var):
        np.copyto(out_mean, self._mean[y0:y1], casting="unsafe")
        np.copyto(out_var, self._var[y0:y1], casting="unsafe")

    def rows(self, y0, y1, out_mean=None, out_var=None):
        if out_mean is None and out_var is None and 0 <= y0 <= y1 <= self.shape[0]:
            return self._mean[y0:y1], self._var[y0:y1]      # views: nothing copied
        return super().rows(y0, y1, out_mean, out_var)

    def _views(self, y0, y1):
        yield int(y0), int(y1), self._mean[y0:y1], self._var[y0:y1]

    def gather(self, which, ys, xs, cs):
        a = self._mean if which == "mean" else self._var
        return a[np.asarray(ys, np.intp), np.asarray(xs, np.intp), np.asarray(cs, np.intp)]


def _range(key, n):
    """A slice applied to ``range(n)``: (start, step, count)."""
    start, stop, step = key.indices(n)
    return start, step, len(range(start, stop, step))


class BandArray:
    """A read-only ndarray-like view of one plane (``"mean"`` or ``"var"``) of a :class:`BandReader`.

    Parameters
    ----------
    reader : BandReader
    which : {"mean", "var"}

    Notes
    -----
    Basic indexing (slices and one integer channel) returns another
    :class:`BandArray`; integer arrays for rows and columns gather the values
    at once; ``numpy.asarray(view)`` finishes the rows of the view.  The rest
    of ndarray (methods, arithmetic, masks) works on the whole view read at
    once, for convenience: the package's own readers never use it.
    """

    def __init__(self, reader, which, _rows=None, _cols=None, _chan=None):
        if which not in ("mean", "var"):
            raise HotPixelError(f"which must be 'mean' or 'var', got {which!r}")
        h, w, c = reader.shape
        self.reader = reader
        self.which = which
        self._rows = _rows if _rows is not None else (0, 1, h)     # start, step, count
        self._cols = _cols if _cols is not None else (0, 1, w)
        self._chan = _chan if _chan is not None else (0, 1, c)     # or an int: channel dropped

    # ------------------------------------------------------------ ndarray face
    @property
    def shape(self):
        base = (self._rows[2], self._cols[2])
        return base if isinstance(self._chan, int) else base + (self._chan[2],)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape))

    @property
    def dtype(self):
        return self.reader.dtype

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"BandArray({self.which}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype=None, copy=None):
        r0, rs, rn = self._rows
        h, w, c = self.reader.shape
        if isinstance(self._chan, int) and c > 1 and rn and self._cols[2] \
                and self.reader._gather is not None:
            # one channel of several: finish only its values (a third of an
            # RGB band), the other plane kept for the call that comes next
            out = self.reader.gather_view(self.which, self._rows, self._cols, self._chan)
            return out if dtype is None else out.astype(dtype, copy=False)
        out = np.empty((rn,) + self.shape[1:], self.dtype if dtype is None else dtype)
        if rn == 0:
            return out
        last = r0 + rs * (rn - 1)
        lo, hi = min(r0, last), max(r0, last) + 1
        cols = slice(self._cols[0], self._cols[0] + self._cols[1] * self._cols[2], self._cols[1]) \
            if self._cols[1] > 0 else _neg_slice(*self._cols)
        chan = self._chan if isinstance(self._chan, int) else (
            slice(self._chan[0], self._chan[0] + self._chan[1] * self._chan[2], self._chan[1])
            if self._chan[1] > 0 else _neg_slice(*self._chan))
        # each band of rows read once, straight from the reader's cache (no
        # copy of it), and written (cast, if a dtype was asked) where it goes
        wanted = None if rs == 1 else np.arange(rn) * rs + r0
        for s, e, m, v in self.reader._views(lo, hi):
            block = m if self.which == "mean" else v
            if wanted is None:
                out[s - r0:e - r0] = block[:, cols, chan]
                continue
            sel = (wanted >= s) & (wanted < e)
            if sel.any():
                out[sel] = block[wanted[sel] - s][:, cols, chan]
        return out

    def __getitem__(self, key):
        original = key
        if not isinstance(key, tuple):
            key = (key,)
        if any(isinstance(k, (np.ndarray, list)) and np.asarray(k).dtype == bool for k in key):
            return np.asarray(self)[original]         # a mask: the whole view, read
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-d BandArray")
        key = key + (slice(None),) * (self.ndim - len(key))
        if any(isinstance(k, (np.ndarray, list)) for k in key):
            if any(isinstance(k, slice) for k in key):
                return np.asarray(self)[original]     # a mixed key: the whole view, read
            return self._gather(key)
        rows, cols, chan = self._rows, self._cols, self._chan
        parts = []
        for k, (start, step, count) in zip(key, (rows, cols) + (() if isinstance(chan, int) else (chan,))):
            if isinstance(k, slice):
                s, st, n = _range(k, count)
                parts.append((start + step * s, step * st, n))
            else:
                i = int(k)
                if i < 0:
                    i += count
                if not 0 <= i < count:
                    raise IndexError(f"index {k} is out of bounds for size {count}")
                parts.append(start + step * i)
        new_rows, new_cols = parts[0], parts[1]
        new_chan = parts[2] if len(parts) > 2 else chan
        if isinstance(new_rows, int) or isinstance(new_cols, int):
            # a single row or column: small, return it as an array
            view = BandArray(self.reader, self.which,
                             (new_rows, 1, 1) if isinstance(new_rows, int) else new_rows,
                             (new_cols, 1, 1) if isinstance(new_cols, int) else new_cols, new_chan)
            arr = np.asarray(view)
            index = (0 if isinstance(new_rows, int) else slice(None),
                     0 if isinstance(new_cols, int) else slice(None))
            return arr[index]
        return BandArray(self.reader, self.which, new_rows, new_cols, new_chan)

    def __getattr__(self, name):
        # Anything else of ndarray (min, sum, reshape, astype, ...) works on
        # the whole view, read at once: convenient in a notebook, and what
        # the band-wise readers of the package avoid.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)

    def _gather(self, key):
        idx = []
        dims = (self._rows, self._cols) + (() if isinstance(self._chan, int) else (self._chan,))
        for k, (start, step, count) in zip(key, dims):
            if isinstance(k, slice):
                raise IndexError("BandArray: a mix of slices and integer arrays is not supported")
            a = np.asarray(k, np.intp)
            a = np.where(a < 0, a + count, a)
            if a.size and (a.min() < 0 or a.max() >= count):
                raise IndexError(f"index out of bounds for size {count}")
            idx.append(start + step * a)
        cs = self._chan if isinstance(self._chan, int) else idx[2]
        return self.reader.gather(self.which, idx[0], idx[1], cs)


def _delegate(op):
    def method(self, *args):
        return getattr(np.asarray(self), op)(*args)
    method.__name__ = op
    return method


for _op in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
            "__rtruediv__", "__pow__", "__neg__", "__abs__", "__lt__", "__le__", "__gt__", "__ge__",
            "__eq__", "__ne__", "__iter__"):
    setattr(BandArray, _op, _delegate(_op))
BandArray.__hash__ = None
del _op


def keep_lowest(idx, val, values, offset, k):
    """The ``k`` lowest of a kept set and of more values, ties by lowest index.

    Parameters
    ----------
    idx, val : ndarray
        The kept flat indices (int64) and their values (float64), sorted by
        value then index, at most ``k`` of them.
    values : ndarray
        More values (1-D), at flat indices ``offset + i``; they may come in
        any order of offsets (a tie with the worst kept is a candidate).
    offset : int
    k : int

    Returns
    -------
    idx, val : ndarray
        The new kept set, sorted the same way.
    """
    if val.size >= k:
        cand = np.flatnonzero(values <= val[-1])
    else:
        cand = np.arange(values.size)
    if cand.size > k:
        vals = values[cand]
        kth = np.partition(vals, k - 1)[k - 1]
        below = cand[vals < kth]
        ties = cand[vals == kth][:k - below.size]     # storage order: lowest first
        cand = np.concatenate([below, ties])
    idx = np.concatenate([idx, cand + int(offset)])
    val = np.concatenate([val, values[cand].astype(np.float64)])
    order = np.lexsort((idx, val))[:k]
    return idx[order], val[order]


def _neg_slice(start, step, count):
    stop = start + step * count
    return slice(start, stop if stop >= 0 else None, step)


def iter_bands(source, band_rows=None):
    """Yield ``(y0, y1, mean_rows, var_rows)`` over a frame, band by band.

    Parameters
    ----------
    source : BandReader, or a pair ``(mean, var)`` of arrays or BandArrays
    band_rows : int, optional
        Rows per band; default about ``DEFAULT_BAND_VALUES`` values.
    """
    reader = as_reader(*source) if isinstance(source, tuple) else source
    h = reader.shape[0]
    step = int(band_rows) if band_rows else default_band_rows(reader.shape)
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        m, v = reader.rows(y0, y1)
        yield y0, y1, m, v


def frame_reader(plane):
    """The :class:`BandReader` behind a :class:`BandArray` that views every
    row, column and channel of its frame, else None."""
    if not isinstance(plane, BandArray):
        return None
    h, w, c = plane.reader.shape
    if plane._rows == (0, 1, h) and plane._cols == (0, 1, w) and plane._chan == (0, 1, c):
        return plane.reader
    return None


def as_reader(mean, var):
    """The :class:`BandReader` behind two planes: their reader when both are
    whole-frame :class:`BandArray` views of one, else one over the arrays."""
    reader = frame_reader(mean)
    if reader is not None and frame_reader(var) is reader:
        return reader
    return ArrayBands(np.asarray(mean), np.asarray(var))
