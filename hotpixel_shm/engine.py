"""The worker processes: hand out files, watch the workers, merge their partials.

Design
------
* The parent creates one shared-memory segment per worker holding that
  worker's accumulator (:class:`hotpixel_shm.welford.Accumulator`); the worker
  attaches by name and updates it in place; the parent unlinks the name as
  soon as the worker has attached (see :mod:`hotpixel_shm.shm`).
* Each worker has its own duplex pipe.  Files are handed out one at a time,
  with up to ``PREFETCH`` queued per worker, so that no worker idles while
  another has a backlog.  Only small tuples cross the pipes (a file index and
  path, "done", "skipped: reason"); the parent records the largest message it
  saw, and the tests check it.
* The parent waits on the pipes *and* the process sentinels, so a worker that
  dies (SIGKILL, a segfault in a decoder, the OOM killer) is noticed at once:
  its accumulator is discarded, a fresh one is made, and every file it had
  accumulated, plus the one it held, goes to a replacement worker.  A file
  that was being decoded when two workers died is quarantined.
* One worker runs in-process (no pipes, no shared memory): the serial path is
  the reference for the others.
* ``multiprocessing.Pool`` is not used: it hangs forever when a worker is killed.
"""
from __future__ import annotations

import collections
import ctypes
import dataclasses
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Callable, List, NamedTuple, Optional, Tuple

import numpy as np

from . import shm as _shm
from . import tiers
from .bands import (DEFAULT_CACHE_BANDS, BandArray, BandReader, band_rows, cache_bands_for,
                    default_band_rows, iter_bands)
from .errors import HotPixelError, SkipFile
from .inputs import DEFAULT_MAX_PIXELS, decode
from .model import Stats
from .spawning import CONTEXT, start_without_sigint, worker_entry
from .kernels_numpy import MAX_BATCH
from .residual import ResidualAccumulator, residual_layout, residual_nbytes, sum_residuals
from .welford import Accumulator, finalise_at, finalise_range, finalise_rows, fold_exact, merge

__all__ = ["Job", "RunResult", "Ingest", "run", "Interrupted", "PREFETCH", "CRASH_REASON",
           "segment_parts", "band_rows", "BandSnapshot", "residual_hook"]

#: Files queued per worker beyond the one being decoded.
PREFETCH = 1
#: How often the parent looks around when nothing happens (seconds).
_TICK = 0.2
CRASH_REASON = "crashed the decoder (killed two worker processes); quarantined"
#: Testing aid: seconds a worker sleeps after each file, so that the signal
#: tests can interrupt a run of small files while it is in progress.
_DELAY_ENV = "HOTPIXEL_SHM_TEST_DELAY"
#: Workers dying before they are ready this many times end the run.
_MAX_STARTUP_DEATHS = 4
#: Workers dying this many times in a row with no file to blame (a crash
#: while adding decoded photos, not while decoding one) and no photo added
#: in between end the run: requeueing the same photos would go on forever.
_MAX_BLAMELESS_DEATHS = 3
#: ``crash_on`` value of the test hook that fails the accumulator update.
CRASH_IN_UPDATE = ":update"
_CTX = CONTEXT


class Interrupted(HotPixelError):
    """The run was stopped by a signal; ``signum`` tells which."""

    def __init__(self, signum, result=None):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.result = result


@dataclass
class Job:
    """What to compute: the files, their common shape and sample type, and how.

    ``sample_dtype`` is the type of the decoded samples (``uint8`` or
    ``uint16``); ``tier`` the accumulator tier (``--dtype`` on the command
    line, ``engine.dtype`` in the report).
    """

    files: List[str]
    shape: Tuple[int, int, int]
    sample_dtype: str
    tier: str
    workers: int
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: images per worker at most (the tier's accuracy limit); None: no cap
    cap: Optional[int] = None
    #: photos decoded into reused buffers and folded per accumulator pass (K)
    batch: int = 1
    #: test hook: a worker exits abruptly (os._exit) when it reaches a path ending with this
    crash_on: Optional[str] = None
    #: take a consistent snapshot every this many files (0: never) ...
    checkpoint_every: int = 0
    #: ... or every this many seconds (0: never)
    checkpoint_seconds: float = 0.0
    #: also accumulate temporal residual statistics, against same-colour
    #: neighbours this far apart (2 for photos, the CFA period for a raw
    #: mosaic); None: not kept (see hotpixel_shm.residual)
    residual_period: Optional[int] = None
    #: passes over the files, each accumulating one horizontal band of rows
    #: (1: the whole frame at once; see ``band_rows``)
    bands: int = 1
    #: the rows ``(y0, y1)`` this run accumulates (set by the band passes);
    #: None: every row
    rows: Optional[Tuple[int, int]] = None
    #: where band passes keep the finished rows (default: the temporary directory)
    scratch_dir: Optional[str] = None
    #: band passes continue from this checkpoint (a :class:`BandSnapshot`, or
    #: what ``statsio.load_band_checkpoint`` read: the same attributes)
    resume: Optional[object] = None

    def __post_init__(self):
        self.shape = tuple(int(v) for v in self.shape)
        self.sample_dtype = np.dtype(self.sample_dtype).name
        self.batch = int(self.batch)
        if not 1 <= self.batch <= MAX_BATCH:
            raise HotPixelError(f"batch must be 1 to {MAX_BATCH} images, got {self.batch}")
        self.bands = int(self.bands)
        if not 1 <= self.bands <= self.shape[0]:
            raise HotPixelError(f"bands must be 1 to {self.shape[0]} (the rows), got {self.bands}")
        if self.bands > 1 and self.residual_period:
            raise HotPixelError("band passes do not keep residual statistics")
        if self.resume is not None and (self.resume.bands != self.bands or self.resume.tier != self.tier):
            raise HotPixelError(f"the checkpoint is of {self.resume.bands} band passes with the "
                                f"{self.resume.tier} tier, not {self.bands} with {self.tier}")
        if self.rows is not None:
            y0, y1 = (int(v) for v in self.rows)
            if not 0 <= y0 < y1 <= self.shape[0]:
                raise HotPixelError(f"rows {self.rows} are not within the {self.shape[0]} rows")
            self.rows = (y0, y1)

    @property
    def acc_shape(self):
        """Shape of the accumulators: the frame, or the band of :attr:`rows`."""
        return _acc_shape(self.shape, self.rows)


def _acc_shape(shape, rows):
    """The frame ``shape``, or the band of ``rows`` (``(y0, y1)``) in it."""
    shape = tuple(shape)
    return shape if rows is None else (rows[1] - rows[0],) + shape[1:]


@dataclass
class RunResult:
    stats: Optional[Stats]
    used: List[str]
    skipped: List[Tuple[str, str]]
    seconds: float
    workers: int
    #: the largest message (bytes, pickled) that crossed a process boundary
    max_message_bytes: int = 0
    worker_deaths: int = 0
    #: a band pass's accumulators holding images (read by the band passes)
    parts: list = field(default_factory=list, repr=False)
    #: band passes stopped by a signal: what a checkpoint keeps (or None)
    snapshot: Optional["BandSnapshot"] = field(default=None, repr=False)


@dataclass
class BandSnapshot:
    """Where band passes are: what a checkpoint of them keeps (issue 9).

    Attributes
    ----------
    shape, tier, sample_dtype, bands
        Of the run.
    pass_index : int
        The band pass under way (0-based); its rows are ``band_rows(height,
        bands)[pass_index]``.
    used : list of str
        The files every pass reads (decided by the first pass: while it is
        under way, the files accumulated so far).
    skipped : list of (str, str)
        Files the first pass left out, with the reason.
    partial_files : list of str
        The files in ``parts``.
    parts : list
        The pass's partial results over its band of rows, each with ``n``,
        ``tier``, ``sample_dtype`` and ``chunk(start, stop)`` (a
        :class:`hotpixel_shm.welford.Partial` of those flat values of the band).
    finished
        The rows of the earlier passes: ``read_rows(y0, y1, out_mean, out_var)``.
    """

    shape: Tuple[int, int, int]
    tier: str
    sample_dtype: str
    bands: int
    pass_index: int
    used: List[str]
    skipped: List[Tuple[str, str]]
    partial_files: List[str]
    parts: list
    finished: object

    @property
    def rows(self):
        """The ``(y0, y1)`` rows of the pass under way."""
        return band_rows(self.shape[0], self.bands)[self.pass_index]

    @property
    def n(self) -> int:
        """Images in the partial results of the pass under way."""
        return sum(int(p.n) for p in self.parts)


class _AccPart:
    """An accumulator as a part of a :class:`BandSnapshot`."""

    def __init__(self, acc):
        self.acc = acc
        self.n, self.tier, self.sample_dtype = acc.n, acc.tier, acc.sample_dtype

    def chunk(self, start, stop):
        p = self.acc.as_partial()
        return p._replace(fields=tuple(f[start:stop] for f in p.fields))


def _parts_reader(parts, shape, dtype):
    """A :class:`BandReader` that merges ``parts`` (see :class:`BandSnapshot`)
    over a band of ``shape`` and finishes its rows."""
    _, w, c = shape
    live = [p for p in parts if p.n]

    def finish(y0, y1, out_mean, out_var):
        s, e = y0 * w * c, y1 * w * c
        finalise_range([p.chunk(s, e) for p in live], 0, e - s, out_mean, out_var)
    return BandReader(shape, dtype, finish)


def segment_parts(tier, shape, sample_dtype, residual_period=None):
    """How a worker's segment is laid out: ``(nbytes, residual_offset, layout)``.

    The accumulator comes first; the residual accumulator (when
    ``residual_period`` is set, see ``Job``) follows at a 64-byte boundary.
    ``layout`` is None when no residuals are kept.
    """
    acc = Accumulator.nbytes(tier, shape, sample_dtype)
    if not residual_period:
        return acc, acc, None
    layout = residual_layout(shape, residual_period)
    offset = -(-acc // 64) * 64
    return offset + residual_nbytes(layout), offset, layout


def _residuals_in(buf, offset, layout):
    """The residual accumulator in ``buf`` at ``offset`` (None without a layout)."""
    if layout is None:
        return None
    return ResidualAccumulator(layout, memoryview(buf)[offset:offset + residual_nbytes(layout)])


def residual_hook(racc):
    """The ``on_batch`` hooks of an :class:`Ingest` that feed a residual accumulator.

    Parameters
    ----------
    racc : ResidualAccumulator or None
        Updated with every batch of frames; None when the run keeps no
        residual statistics.

    Returns
    -------
    list of callable
        ``[racc.update_batch]``, or ``[]`` when ``racc`` is None.
    """
    if racc is None:
        return []
    return [racc.update_batch]


# --------------------------------------------------------------------------- worker side

def _set_pdeathsig(sig):
    """Ask Linux to send ``sig`` to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover
        pass


def _send(conn, msg):
    conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn):
    return pickle.loads(conn.recv_bytes())


def _orphaned(seg_name):
    """The parent is gone: remove our segment's name (the parent may have died
    before it could) and leave at once."""
    _shm.unlink_name(seg_name)
    os._exit(1)


class Ingest:
    """The one ingest step: decode photos into K reused buffers, fold each
    batch into an accumulator in one pass, report the files it had to skip.

    Shared by the worker processes and the serial path.

    Parameters
    ----------
    acc : Accumulator
        Where the photos go.
    max_pixels : int
        Decoder limit (see :func:`hotpixel_shm.inputs.decode`).
    batch : int, optional
        K: photos held decoded before they are folded in one pass.
    on_batch : sequence of callable, optional
        Extra per-frame kernels: each is called as ``hook(frames)`` with the
        decoded frames of every batch (a list of arrays of the accumulator's
        shape, valid only during the call), after the accumulator's update.
    on_first : callable, optional
        Called once, just before the first batch is folded (a worker maps
        its segment's pages then: ``shm.Segment.populate``).

    Notes
    -----
    :meth:`add` decodes one file; :meth:`flush` folds what was decoded and
    returns the keys of the files now in the accumulator.  A caller flushes
    when :attr:`full`, before it waits for more work, and before anyone
    reads the accumulator.
    """

    def __init__(self, acc: Accumulator, max_pixels: int, batch: int = 1, on_batch=(), *,
                 frame_shape=None, rows=None, on_first=None):
        self.acc = acc
        self.on_first = on_first
        self.max_pixels = max_pixels
        self.batch = int(batch)
        self.on_batch = list(on_batch)
        # band passes: whole frames are decoded, the band of ``rows`` accumulated
        self.frame_shape = tuple(frame_shape) if frame_shape is not None else acc.shape
        self.rows = rows
        self._bufs = [np.empty(self.frame_shape, acc.sample_dtype) for _ in range(self.batch)]
        self._keys = []

    @property
    def full(self) -> bool:
        return len(self._keys) >= self.batch

    @property
    def held(self) -> int:
        """Photos decoded and not yet folded."""
        return len(self._keys)

    def add(self, key, path) -> Optional[str]:
        """Decode ``path`` into the next free buffer (flushing first if full).

        Returns
        -------
        str or None
            Why the file was skipped, or None when it waits in the batch.
        """
        if self.full:
            self.flush()
        acc = self.acc
        try:
            decode(path, self.frame_shape, acc.sample_dtype, out=self._bufs[len(self._keys)],
                   max_pixels=self.max_pixels)
        except SkipFile as exc:
            return str(exc)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a decoder bug skips one file
            return f"decoder error: {type(exc).__name__}: {exc}"
        self._keys.append(key)
        return None

    def flush(self) -> list:
        """Fold the decoded photos into the accumulator; their keys."""
        keys, self._keys = self._keys, []
        if keys:
            if self.on_first is not None:
                first, self.on_first = self.on_first, None
                first()
            frames = self._bufs[:len(keys)]
            if self.rows is not None:
                frames = [f[self.rows[0]:self.rows[1]] for f in frames]   # C-contiguous rows
            self.acc.update_batch(frames)
            for hook in self.on_batch:
                hook(frames)
        return keys

    def close(self):
        self._bufs = []


class _WorkerSpec(NamedTuple):
    """A worker's job: its segment and what to compute (a small message)."""

    seg_name: str
    tier: str
    shape: Tuple[int, int, int]
    sample_dtype: str
    max_pixels: int
    crash_on: Optional[str]
    batch: int
    residual_period: Optional[int]
    rows: Optional[Tuple[int, int]]


def _worker_main(conn, parent_pid, spec):
    """A worker process (``spawning.worker_entry`` calls it in the child).

    ``spec``: the job, a :class:`_WorkerSpec` or its fields as a tuple.
    """
    # The parent coordinates Ctrl-C and SIGTERM: a terminal sends SIGINT to
    # the whole group, and a worker dying mid-update would lose its partial.
    # SIGTERM while the parent lives is left to the parent; SIGTERM after its
    # death (PR_SET_PDEATHSIG below) ends the worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = _WorkerSpec(*spec)

    def on_term(signum, frame):
        if os.getppid() != parent_pid:
            _orphaned(spec.seg_name)

    signal.signal(signal.SIGTERM, on_term)
    _set_pdeathsig(signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        _orphaned(spec.seg_name)
    # attach the segment, then take files until told to stop
    seg_name, shape, rows = spec.seg_name, spec.shape, spec.rows
    seg = _shm.Segment.attach(seg_name)
    acc_shape = _acc_shape(shape, rows)
    acc = Accumulator(spec.tier, acc_shape, spec.sample_dtype, seg.buf)
    _, offset, layout = segment_parts(spec.tier, acc_shape, spec.sample_dtype, spec.residual_period)
    racc = _residuals_in(seg.buf, offset, layout)
    # the first batch writes every byte of the segment (the accumulator and
    # the residual sums): its pages mapped in one call then, not faulted in
    # one by one (issue 10)
    ingest = Ingest(acc, spec.max_pixels, spec.batch, on_batch=residual_hook(racc),
                    frame_shape=shape, rows=rows, on_first=seg.populate)
    _send(conn, ("ready", os.getpid()))
    try:
        _worker_loop(conn, ingest, seg_name, parent_pid, spec.crash_on)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # parent gone or closed our pipe
    except Exception as exc:  # noqa: BLE001 - reported to the parent, then this worker dies
        # the accumulator may be half updated: it is discarded with this
        # process; the parent says why if it has to give up
        try:
            _send(conn, ("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        os._exit(1)
    finally:
        ingest.close()
        del acc, ingest, racc
        seg.close()


def _worker_loop(conn, ingest, seg_name, parent_pid, crash_on):
    """Take files until told to stop; report each as done or skipped."""
    pending = collections.deque()
    delay = float(os.environ.get(_DELAY_ENV) or 0)

    def receive(block):
        if block:
            while not conn.poll(1.0):
                if os.getppid() != parent_pid:  # parent-death check where prctl is missing
                    _orphaned(seg_name)
        pending.append(_recv(conn))

    def fold():
        if crash_on == CRASH_IN_UPDATE and ingest.held:
            raise RuntimeError("test hook: the accumulator update failed")
        for idx in ingest.flush():
            _send(conn, ("done", idx, ingest.acc.n))

    while True:
        if not pending:
            fold()  # nothing more queued: fold what is decoded before waiting
            receive(block=True)
        while conn.poll(0):  # read ahead so that "stop"/"pause" overtake queued files
            receive(block=False)
        if any(m[0] == "stop" for m in pending):
            fold()
            _send(conn, ("stopped", ingest.acc.n))
            return
        if any(m[0] == "pause" for m in pending):
            # a consistent snapshot: the parent reads our accumulator now
            fold()
            for m in [m for m in pending if m[0] == "pause"]:
                pending.remove(m)
            _send(conn, ("paused", ingest.acc.n))
            while True:
                receive(block=True)
                if pending[-1][0] in ("resume", "stop"):
                    break
            if pending[-1][0] == "resume":
                pending.pop()
            continue
        msg = pending.popleft()
        if msg[0] != "file":
            continue
        _, idx, path = msg
        if crash_on and crash_on != CRASH_IN_UPDATE and path.endswith(crash_on):
            os._exit(70)  # test hook: a decoder that takes the process down
        reason = ingest.add(idx, path)
        if reason is not None:
            _send(conn, ("skip", idx, reason))
            continue
        # decoded: a crash from now on (folding it) is not this file's
        _send(conn, ("held", idx))
        if ingest.full:
            fold()
        if delay:
            time.sleep(delay)


# --------------------------------------------------------------------------- parent side

class _Slot:
    """One worker: its process, pipe, segment and bookkeeping."""

    def __init__(self, index, job: Job):
        self.index = index
        self.job = job
        self.proc = None
        self.conn = None
        self.seg = None
        self._fresh()

    def _fresh(self):
        """The bookkeeping of a worker that has done nothing yet."""
        self.ready = False
        self.inflight: collections.deque = collections.deque()
        self.held = set()  # in flight, decoded, waiting for the batch to be folded
        self.done: List[int] = []
        self.assigned = 0  # files accumulated + in flight (the cap counts these)
        self.stopped = False
        self.paused = False
        self.pause_sent = False
        self.broken = False

    def start(self, nbytes):
        self.seg = _shm.Segment.create(nbytes)
        j = self.job
        spec = _WorkerSpec(self.seg.name, j.tier, j.shape, j.sample_dtype, j.max_pixels,
                           j.crash_on, j.batch, j.residual_period, j.rows)
        parent_conn, child_conn = _CTX.Pipe(duplex=True)
        # the job as a plain tuple: the child unpickles it before it loads numpy
        self.proc = _CTX.Process(target=worker_entry, args=(child_conn, os.getpid(), tuple(spec)),
                                 name=f"hotpixel-worker-{self.index}", daemon=True)
        try:
            start_without_sigint(self.proc)
        except BaseException:
            self.proc = None
            parent_conn.close()
            self.seg.unlink()
            self.seg.close()
            self.seg = None
            raise
        finally:
            child_conn.close()
        self.conn = parent_conn
        self._fresh()

    def accumulator(self):
        """The parent's view of this worker's accumulator (its shared segment)."""
        j = self.job
        return Accumulator(j.tier, j.acc_shape, j.sample_dtype, self.seg.buf)

    def residuals(self):
        """The parent's view of this worker's residual accumulator (None if not kept)."""
        j = self.job
        _, offset, layout = segment_parts(j.tier, j.acc_shape, j.sample_dtype, j.residual_period)
        return _residuals_in(self.seg.buf, offset, layout)

    def discard(self):
        """Forget a dead worker: its segment and its pipe."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.seg is not None:
            self.seg.unlink()
            self.seg.close()
            self.seg = None
        if self.proc is not None:
            self.proc.join(timeout=1)
            self.proc = None

    def send(self, msg):
        """Send, tolerating a worker that died a moment ago: its sentinel
        tells the main loop, which requeues everything it held."""
        try:
            _send(self.conn, msg)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.broken = True

    def can_take(self):
        if self.conn is None or self.stopped or self.broken:
            return False
        if self.job.cap is not None and self.assigned >= self.job.cap:
            return False
        # a batch of K files plus PREFETCH queued, so that a worker finds
        # the next files waiting when it has folded a batch
        return len(self.inflight) <= PREFETCH + self.job.batch - 1


class _Checkpointer:
    """Decides when a snapshot is due and hands it to the caller's callback."""

    def __init__(self, job, callback):
        self.callback = callback
        self.every = job.checkpoint_every if callback else 0
        self.seconds = job.checkpoint_seconds if callback else 0
        self.last_count = 0
        self.last_time = time.monotonic()

    def due(self, count):
        if self.every and count - self.last_count >= self.every:
            return True
        return bool(self.seconds) and count > self.last_count and \
            time.monotonic() - self.last_time >= self.seconds

    def take(self, accs, job, used, raccs=()):
        """Merge (not in place: the workers go on) and hand over a snapshot."""
        live = [a for a in accs if a.n]
        if live:
            # read band by band while the workers wait: no image-sized copy
            # read by the saver alone: one reader's default cache, as the
            # plan counts a checkpoint (not the finishing threads' caches)
            snapshot = _band_stats(live, job, used, cache_bands=DEFAULT_CACHE_BANDS)
            residuals = None
            raccs = [r for r in raccs if r is not None and r.n]
            if raccs:
                copy = ResidualAccumulator(raccs[0].layout)
                for r in raccs:
                    copy.add_into(r)
                residuals = copy.finish(in_place=True)
            snapshot.residuals = residuals
            self.callback(snapshot)
            del snapshot, residuals
        self.last_count = len(used)
        self.last_time = time.monotonic()


def run(job: Job, progress: Optional[Callable[[int, int, int], None]] = None,
        should_stop: Optional[Callable[[], Optional[int]]] = None,
        on_checkpoint: Optional[Callable[[Stats], None]] = None) -> RunResult:
    """Compute the statistics of ``job.files``.

    Parameters
    ----------
    job : Job
    progress : callable, optional
        ``progress(done, total, skipped)`` after each file.
    should_stop : callable, optional
        Polled often; returns a signal number to stop the run early (the files
        finished so far are kept and returned inside :class:`Interrupted`).
    on_checkpoint : callable, optional
        ``on_checkpoint(stats)`` with a consistent snapshot of the statistics
        so far (``stats.files``: the files in it), every ``job.checkpoint_every``
        files or ``job.checkpoint_seconds`` seconds.  The workers pause while
        the snapshot is merged.

    Returns
    -------
    RunResult

    Raises
    ------
    Interrupted
        When ``should_stop`` asked for it; ``.result`` holds what was done.
    """
    _shm.cleanup_stale()
    if job.bands > 1 and job.rows is None:
        return _run_bands(job, progress, should_stop, on_checkpoint)
    ckpt = _Checkpointer(job, on_checkpoint)
    if job.workers <= 1:
        return _run_serial(job, progress, should_stop, ckpt)
    return _Parallel(job, progress, should_stop, ckpt).run()


def _run_bands(job, progress, should_stop, on_checkpoint):
    """Band passes: one run over the files per horizontal band of rows, each
    band finished into a file as soon as its pass ends (issue 9).

    The first pass decides which files are used; every later pass reads the
    same files (a file that cannot be read again ends the run: its rows
    would be missing).  Each band's values get the arithmetic of a one-pass
    run, so the result equals it (the exact tier bit for bit).

    Checkpoints (``on_checkpoint``, and the :class:`Interrupted` result's
    ``snapshot``) are :class:`BandSnapshot` objects: the pass under way, the
    finished rows of the passes before it and the raw partial results of
    this one, so that ``job.resume`` continues the pass where it stopped
    (the exact tier's integer sums are kept as they are: bit for bit).
    """
    from .statsio import BandFile
    t0 = time.perf_counter()
    passes = band_rows(job.shape[0], job.bands)
    rdt = tiers.result_dtype(job.tier)
    store = BandFile(job.shape, rdt, job.scratch_dir)
    resume = job.resume
    first = resume.pass_index if resume is not None else 0
    if resume is not None:
        _copy_finished(resume.finished, store, job.shape, passes[first][0])
        if first > 0:
            given = set(job.files)
            missing = [f for f in resume.used if f not in given]
            if missing:
                store.close()
                raise HotPixelError(f"{missing[0]}: used by the checkpointed band passes but "
                                    f"not among the inputs; give the same photos to --resume")
    files = list(job.files) if first == 0 else list(resume.used)
    used = None if first == 0 else list(resume.used)
    skipped = [] if resume is None else list(resume.skipped)
    deaths = max_msg = 0
    total = len(files) * (len(passes) - first)
    counted = 0         # files accumulated by the passes finished so far
    for p in range(first, len(passes)):
        rows = passes[p]
        saved = list(resume.parts) if resume is not None and p == first else []
        saved_files = list(resume.partial_files) if resume is not None and p == first else []
        resumed = set(saved_files)
        todo = [f for f in files if f not in resumed]
        sub = dataclasses.replace(job, files=todo, rows=rows, resume=None)
        base = counted + len(saved_files)

        def step(done, _total, skips, base=base):
            progress(min(total, base + done), total, len(skipped) + skips)

        def snapshot(res_parts, res_used, p=p, saved=saved, saved_files=saved_files):
            return BandSnapshot(
                shape=job.shape, tier=job.tier, sample_dtype=job.sample_dtype, bands=job.bands,
                pass_index=p, used=list(used) if used is not None else saved_files + list(res_used),
                skipped=list(skipped) if used is not None else [],
                partial_files=saved_files + list(res_used),
                parts=[_AccPart(a) for a in res_parts] + saved, finished=store)

        def take(stats, snapshot=snapshot):
            # workers paused: stats.owner are their accumulators, stats.files their files
            on_checkpoint(snapshot(stats.owner, stats.files))
        try:
            res = run(sub, progress=step if progress else None, should_stop=should_stop,
                      on_checkpoint=take if on_checkpoint is not None else None) if todo else \
                RunResult(None, [], [], 0.0, job.workers)
        except Interrupted as exc:
            r = exc.result
            deaths += r.worker_deaths if r is not None else 0
            snap = snapshot(r.parts if r is not None else [], r.used if r is not None else [])
            if snap.n == 0 and p == 0:
                snap = None     # nothing done yet
            partial = RunResult(None, [], skipped + (list(r.skipped) if r is not None else []),
                                time.perf_counter() - t0, job.workers, max_msg, deaths,
                                snapshot=snap)
            raise Interrupted(exc.signum, partial) from None
        deaths += res.worker_deaths
        max_msg = max(max_msg, res.max_message_bytes)
        this = saved_files + list(res.used)
        if used is None:
            skipped += list(res.skipped)
            order = {f: i for i, f in enumerate(job.files)}
            used = sorted(this, key=lambda f: order.get(f, len(order)))
            files = list(used)
            if not used:
                store.close()
                return RunResult(None, [], skipped, time.perf_counter() - t0, job.workers, max_msg, deaths)
        elif set(this) != set(used):
            lost = dict(res.skipped)
            gone = sorted(set(used) - set(this))[0]
            store.close()
            raise HotPixelError(f"{gone}: could not be read again in band pass {p + 1} of "
                                f"{len(passes)} ({lost.get(gone, 'no reason given')}); a file "
                                f"must not change during the band passes")
        parts = [_AccPart(a) for a in res.parts] + saved
        for y0, _, mean, var in iter_bands(_parts_reader(parts, sub.acc_shape, rdt)):
            store.write_rows(rows[0] + y0, mean, var)
        counted += len(this)
        res = parts = saved = None       # frees this pass's accumulators before the next pass
    reader = store.reader()
    stats = Stats(n=len(used), mean=BandArray(reader, "mean"), var=BandArray(reader, "var"),
                  tier=job.tier, files=list(used), owner=store)
    return RunResult(stats, used, skipped, time.perf_counter() - t0, job.workers, max_msg, deaths)


def _copy_finished(finished, store, shape, y_end):
    """Rows ``0 <= y < y_end`` of a checkpoint's finished passes into ``store``."""
    _, w, c = shape
    step = default_band_rows(shape)
    for y0 in range(0, y_end, step):
        y1 = min(y_end, y0 + step)
        m = np.empty((y1 - y0, w, c), store.dtype)
        v = np.empty_like(m)
        finished.read_rows(y0, y1, m, v)
        store.write_rows(y0, m, v)


def _run_serial(job, progress, should_stop, ckpt):
    t0 = time.perf_counter()
    acc = Accumulator(job.tier, job.acc_shape, job.sample_dtype)
    layout = segment_parts(job.tier, job.acc_shape, job.sample_dtype, job.residual_period)[2]
    racc = ResidualAccumulator(layout) if layout is not None else None
    ingest = Ingest(acc, job.max_pixels, job.batch, on_batch=residual_hook(racc),
                    frame_shape=job.shape, rows=job.rows)
    used, skipped = [], []
    total = len(job.files)
    stop_sig = None

    def fold():
        keys = ingest.flush()
        used.extend(keys)
        if progress and keys:
            progress(len(used), total, len(skipped))

    for k, path in enumerate(job.files):
        if should_stop is not None:
            stop_sig = should_stop()
            if stop_sig:
                break
        if job.cap is not None and acc.n + ingest.held >= job.cap:
            skipped.append((path, f"over the {job.cap} images the {job.tier} tier allows per worker"))
            continue
        reason = ingest.add(path, path)
        if reason is not None:
            skipped.append((path, reason))
            if progress:
                progress(len(used), total, len(skipped))
        elif ingest.full:
            fold()
        if ckpt.due(len(used) + ingest.held) and k + 1 < total:
            fold()
            ckpt.take([acc], job, used, [racc])
    fold()
    ingest.close()
    del ingest
    # results merged in place are views that keep their memory alive; otherwise
    # closing the accumulator frees it before detection needs the room
    stats = _finish([acc], job, used, [racc])
    if stats is None or _in_place(job):
        acc.close()     # band-read statistics still read it (stats.owner)
    parts = [acc] if stats is not None and job.rows is not None else []
    del acc
    result = RunResult(stats, used, skipped, time.perf_counter() - t0, 1, parts=parts)
    if stop_sig:
        raise Interrupted(stop_sig, result)
    return result


def _finish(accs, job, used, raccs=()):
    live = [a for a in accs if a.n]
    if not live:
        return None
    # the workers have exited: their CPUs (as many as the plan allowed) add
    residuals = sum_residuals([r for r in raccs if r is not None], threads=job.workers)
    if not _in_place(job):
        if job.rows is None:
            # a one-pass run is over: the workers' exact sums folded into one
            # partial, so every pass over the statistics reads one (and the
            # other segments can be unmapped); a band pass keeps its raw
            # partials for its checkpoint
            live = fold_exact(live, threads=job.workers)
        return _band_stats(live, job, used, residuals)
    # the workers have exited: their CPUs (as many as the plan allowed) merge
    n, mean, var = merge(accs, in_place=True, threads=job.workers)
    return Stats(n=int(n), mean=mean, var=var, tier=job.tier, files=list(used),
                 residuals=residuals)


def _in_place(job):
    """Whether the run's result is merged in place over its accumulators (never
    in a band pass: a checkpoint of it keeps the accumulators themselves)."""
    return tiers.finishes_in_place(job.tier) and job.rows is None


def _band_stats(live, job, used, residuals=None, cache_bands=None):
    """Statistics finished band by band from the accumulators ``live`` as
    they are read (issue 9): no image-sized result.  The accumulators must
    stay unchanged while the statistics are in use.  ``cache_bands``: the
    reader's cache (default: one for each of the threads that read the
    final statistics)."""
    def finish(y0, y1, out_mean, out_var):
        finalise_rows(live, y0, y1, out_mean, out_var)

    def gather(flat, out_mean, out_var):
        finalise_at(live, flat, out_mean, out_var)

    # detection reads it on as many threads as there were workers: a cache
    # for each (bands.cache_bands_for, counted by the plan)
    reader = BandReader(job.acc_shape, tiers.result_dtype(job.tier), finish, gather=gather,
                        cache_bands=cache_bands or cache_bands_for(job.workers))
    return Stats(n=int(sum(a.n for a in live)), mean=BandArray(reader, "mean"),
                 var=BandArray(reader, "var"), tier=job.tier, files=list(used),
                 residuals=residuals, owner=live)


class _Parallel:
    """One parallel run: the workers' slots, the queue of files, the books."""

    def __init__(self, job, progress, should_stop, ckpt):
        self.job = job
        self.progress = progress
        self.should_stop = should_stop
        self.ckpt = ckpt
        self.files = list(job.files)
        self.nbytes = segment_parts(job.tier, job.acc_shape, job.sample_dtype,
                                    job.residual_period)[0]
        self.queue = collections.deque(range(len(self.files)))
        self.strikes = collections.Counter()
        self.skipped = {}
        self.done = set()  # indices of the files accumulated by a live worker
        self.slots = [_Slot(i, job) for i in range(job.workers)]
        self.max_msg = 0
        self.deaths = 0
        self.startup_deaths = 0
        self.added = 0              # "done" messages received: photos added
        self.blameless = 0          # deaths in a row with no file to blame, nothing added
        self.blameless_mark = 0
        self.last_error = None      # the last error a worker reported before dying
        self.stop_sig = None
        self.pausing = False

    def run(self):
        t0 = time.perf_counter()
        finished_ok = False
        result = None
        try:
            for s in self.slots:
                s.start(self.nbytes)
            while not self._step():
                pass
            result = self._collect(time.perf_counter() - t0)
            finished_ok = True
        finally:
            self._release(finished_ok)
        if self.stop_sig:
            raise Interrupted(self.stop_sig, result)
        return result

    def _step(self):
        """One turn of the main loop; True when the run is over."""
        self._poll_stop()
        live = [s for s in self.slots if s.conn is not None]
        self._checkpoint(live)
        if self.stop_sig is None and not self.pausing:
            _dispatch(self.slots, self.queue, self.files)
        self._skip_over_cap(live)
        if self.stop_sig is None and not self.queue and all(not s.inflight for s in live):
            if all(s.ready for s in live):
                return True
        if self.stop_sig is not None and all(s.stopped or s.conn is None for s in self.slots):
            return True
        ready = wait([s.conn for s in live] + [s.proc.sentinel for s in live], timeout=_TICK)
        for s in live:
            if s.conn is not None and s.conn in ready:
                self._receive(s)
            if s.proc is not None and s.proc.sentinel in ready and not s.proc.is_alive():
                self._on_exit(s)
        return False

    def _poll_stop(self):
        if self.should_stop is not None and self.stop_sig is None:
            self.stop_sig = self.should_stop()
            if self.stop_sig:
                for s in self.slots:
                    _stop(s)

    def _checkpoint(self, live):
        """Pause the workers when a snapshot is due; take it once all are paused."""
        # (work remains: files queued, or held by a worker in a batch)
        remains = bool(self.queue) or any(s.inflight for s in live)
        if self.stop_sig is None and not self.pausing and remains and self.ckpt.due(len(self.done)):
            self.pausing = True
        if not self.pausing:
            return
        for s in live:  # also a replacement that became ready meanwhile
            if s.ready and not s.pause_sent:
                s.send(("pause",))
                s.pause_sent = True
        if self.stop_sig is None and all(s.paused or not s.ready for s in live):
            # the files in flight when the pause was sent may have been the
            # last ones: a snapshot of a finished run saves nothing a
            # checkpoint needs (and costs a merge), so only resume then
            remains = bool(self.queue) or any(s.inflight for s in live)
            _snapshot(live, self.ckpt if remains else None, self.job,
                      [self.files[i] for i in sorted(self.done)])
            self.pausing = False

    def _skip_over_cap(self, live):
        if (self.stop_sig is None and self.queue and live
                and all(s.ready and not s.inflight for s in live)
                and not any(s.can_take() for s in live)):
            # every worker is at the tier's accuracy limit (the planner avoids this)
            job = self.job
            while self.queue:
                self.skipped[self.queue.popleft()] = (f"over the {job.cap} images the {job.tier} "
                                                      f"tier allows per worker")

    def _receive(self, s):
        try:
            while s.conn.poll(0):
                data = s.conn.recv_bytes()
                self.max_msg = max(self.max_msg, len(data))
                msg = pickle.loads(data)
                if msg[0] == "error":
                    self.last_error = msg[1]
                    continue
                self.added += msg[0] == "done"
                _handle(s, msg, self.skipped, self.done, self.progress,
                        len(self.files), self.queue)
        except (EOFError, ConnectionResetError, OSError):
            pass  # the sentinel tells the rest

    def _on_exit(self, s):
        """A worker process ended without being told to: requeue its work, replace it."""
        if s.stopped:
            return
        self.deaths += 1
        if not s.ready:
            self.startup_deaths += 1
            _check_startup_deaths(self.startup_deaths, s.proc.exitcode)
        exitcode = s.proc.exitcode
        culprit = _on_death(s, self.queue, self.strikes, self.skipped, self.done)
        if self.added != self.blameless_mark:
            self.blameless, self.blameless_mark = 0, self.added
        if culprit is None and s.ready:
            self.blameless += 1
            _check_blameless_deaths(self.blameless, exitcode, self.last_error)
        if self.stop_sig is None:
            s.start(self.nbytes)
        else:
            s.stopped = True

    def _collect(self, seconds):
        """Orderly shutdown: stop the workers, merge their partials."""
        for s in self.slots:
            if not s.stopped:
                _stop(s)
        _drain_stops(self.slots)
        accs = [s.accumulator() for s in self.slots if s.seg is not None]
        raccs = [s.residuals() for s in self.slots if s.seg is not None]
        used = [self.files[i] for i in sorted(self.done)]
        stats = _finish(accs, self.job, used, raccs)
        parts = [a for a in accs if a.n] if stats is not None and self.job.rows is not None else []
        del accs, raccs
        keep = []
        for s in self.slots:  # unmap every segment the results do not live in
            if s.seg is not None and not s.seg.close():
                keep.append(s.seg)
        if stats is not None:
            stats.owner = keep
        skipped = [(self.files[i], r) for i, r in sorted(self.skipped.items())]
        return RunResult(stats, used, skipped, seconds, self.job.workers, self.max_msg, self.deaths,
                         parts=parts)

    def _release(self, finished_ok):
        """Whatever happened: no process, pipe or segment name left behind."""
        for s in self.slots:
            if s.proc is not None and s.proc.is_alive():
                s.proc.kill()
            if s.proc is not None:
                s.proc.join(timeout=2)
            if s.conn is not None:
                s.conn.close()
            if s.seg is not None:
                s.seg.unlink()
                if not finished_ok:
                    s.seg.close()
        _shm.unlink_all_owned()


def _snapshot(live, ckpt, job, used):
    """Every ready worker is paused: merge a consistent snapshot (unless
    ``ckpt`` is None), then resume them."""
    paused = [s for s in live if s.paused]
    if ckpt is not None:
        ckpt.take([s.accumulator() for s in paused], job, used, [s.residuals() for s in paused])
    for s in live:
        if s.paused:
            s.send(("resume",))
        s.paused = s.pause_sent = False


def _check_startup_deaths(count, exitcode):
    if count >= _MAX_STARTUP_DEATHS:
        raise HotPixelError(
            f"worker processes die while starting (exit code {exitcode}, {count} times); "
            f"when calling hotpixel_shm from a script, put the call under "
            f"'if __name__ == \"__main__\":' (worker processes are spawned and import "
            f"the main module)")


def _check_blameless_deaths(count, exitcode, error):
    if count >= _MAX_BLAMELESS_DEATHS:
        why = f"the last one reported {error}" if error else f"exit code {exitcode}"
        raise HotPixelError(
            f"worker processes died {count} times in a row while adding decoded photos to "
            f"their accumulators, with no photo added in between ({why}); the run stops "
            f"instead of retrying the same photos -- if the compiled kernels were rebuilt "
            f"or upgraded, reinstall the package (HOTPIXEL_SHM_KERNELS=numpy runs without "
            f"them); if the system killed them, the memory budget may be too large")


def _dispatch(slots, queue, files):
    while queue:
        takers = [s for s in slots if s.ready and s.can_take()]
        if not takers:
            return
        s = min(takers, key=lambda t: len(t.inflight))
        idx = queue.popleft()
        s.inflight.append(idx)
        s.assigned += 1
        s.send(("file", idx, files[idx]))


def _handle(s, msg, skipped, done, progress, total, queue):
    kind = msg[0]
    if kind == "ready":
        s.ready = True
        s.seg.unlink()  # attached: the name is no longer needed
    elif kind == "held":
        s.held.add(msg[1])
        return
    elif kind == "done":
        idx = msg[1]
        s.inflight.remove(idx)
        s.held.discard(idx)
        s.done.append(idx)
        done.add(idx)
    elif kind == "skip":
        idx = msg[1]
        s.inflight.remove(idx)
        s.assigned -= 1
        skipped[idx] = msg[2]
    elif kind == "paused":
        s.paused = True
        return
    elif kind == "stopped":
        s.stopped = True
        # files sent but not started go back (and are reported as not done)
        for idx in s.inflight:
            queue.appendleft(idx)
        s.inflight.clear()
        return
    if progress and kind in ("done", "skip"):
        progress(len(done), total, len(skipped))


def _on_death(s, queue, strikes, skipped, done):
    """A worker died: discard its partial, requeue its files, strike the culprit."""
    # the file being decoded: the first one sent and not yet decoded
    culprit = next((i for i in s.inflight if i not in s.held), None)
    redo = list(s.done) + list(s.inflight)
    for i in s.done:
        done.discard(i)
    if culprit is not None:
        strikes[culprit] += 1
        if strikes[culprit] >= 2:
            skipped[culprit] = CRASH_REASON
            redo.remove(culprit)
    queue.extendleft(sorted(redo, reverse=True))  # back at the front, in order
    s.discard()
    return culprit


def _stop(s):
    if s.conn is None or s.stopped:
        return
    try:
        _send(s.conn, ("stop",))
    except (BrokenPipeError, OSError):
        pass


def _drain_stops(slots, timeout=10.0):
    """Wait for every live worker's "stopped" and its exit."""
    deadline = time.monotonic() + timeout
    for s in slots:
        while s.conn is not None and not s.stopped and time.monotonic() < deadline:
            if not s.conn.poll(0.1):
                if s.proc is not None and not s.proc.is_alive():
                    break
                continue
            try:
                msg = _recv(s.conn)
            except (EOFError, OSError):
                break
            if msg[0] == "stopped":
                s.stopped = True
        if s.proc is not None:
            s.proc.join(timeout=max(0.1, deadline - time.monotonic()))
