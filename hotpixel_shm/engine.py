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
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Callable, List, Optional, Tuple

import numpy as np

from . import shm as _shm
from .errors import HotPixelError, SkipFile
from .inputs import DEFAULT_MAX_PIXELS, decode
from .model import Stats
from .welford import Accumulator, merge

__all__ = ["Job", "RunResult", "run", "Interrupted", "PREFETCH", "CRASH_REASON"]

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
_CTX = mp.get_context("spawn")


class Interrupted(HotPixelError):
    """The run was stopped by a signal; ``signum`` tells which."""

    def __init__(self, signum, result=None):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.result = result


@dataclass
class Job:
    """What to compute: the files, their common shape/dtype, and how."""

    files: List[str]
    shape: Tuple[int, int, int]
    dtype: str
    tier: str
    workers: int
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: images per worker at most (the tier's accuracy limit); None: no cap
    cap: Optional[int] = None
    #: test hook: a worker exits abruptly (os._exit) when it reaches a path ending with this
    crash_on: Optional[str] = None
    #: take a consistent snapshot every this many files (0: never) ...
    checkpoint_every: int = 0
    #: ... or every this many seconds (0: never)
    checkpoint_seconds: float = 0.0

    def __post_init__(self):
        self.shape = tuple(int(v) for v in self.shape)
        self.dtype = np.dtype(self.dtype).name


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


def _worker_main(conn, seg_name, tier, shape, dtype, parent_pid, max_pixels, crash_on):
    """Entry point of a worker process (must live in an importable module)."""
    # The parent coordinates Ctrl-C and SIGTERM: a terminal sends SIGINT to
    # the whole group, and a worker dying mid-update would lose its partial.
    # SIGTERM while the parent lives is left to the parent; SIGTERM after its
    # death (PR_SET_PDEATHSIG below) ends the worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_term(signum, frame):
        if os.getppid() != parent_pid:
            _orphaned(seg_name)

    signal.signal(signal.SIGTERM, on_term)
    _set_pdeathsig(signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        _orphaned(seg_name)
    seg = _shm.Segment.attach(seg_name)
    acc = Accumulator(tier, shape, dtype, seg.buf)
    buf = np.empty(shape, dtype)
    _send(conn, ("ready", os.getpid()))
    pending = collections.deque()
    delay = float(os.environ.get(_DELAY_ENV) or 0)

    def receive(block):
        if block:
            while not conn.poll(1.0):
                if os.getppid() != parent_pid:  # parent-death check where prctl is missing
                    _orphaned(seg_name)
        pending.append(_recv(conn))

    try:
        while True:
            if not pending:
                receive(block=True)
            while conn.poll(0):  # read ahead so that "stop"/"pause" overtake queued files
                receive(block=False)
            if any(m[0] == "stop" for m in pending):
                _send(conn, ("stopped", acc.n))
                return
            if any(m[0] == "pause" for m in pending):
                # a consistent snapshot: the parent reads our accumulator now
                for m in [m for m in pending if m[0] == "pause"]:
                    pending.remove(m)
                _send(conn, ("paused", acc.n))
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
            if crash_on and path.endswith(crash_on):
                os._exit(70)  # test hook: a decoder that takes the process down
            try:
                decode(path, shape, dtype, out=buf, max_pixels=max_pixels)
            except SkipFile as exc:
                _send(conn, ("skip", idx, str(exc)))
                continue
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - a decoder bug skips one file
                _send(conn, ("skip", idx, f"decoder error: {type(exc).__name__}: {exc}"))
                continue
            acc.update(buf)
            _send(conn, ("done", idx, acc.n))
            if delay:
                time.sleep(delay)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # parent gone or closed our pipe
    finally:
        del acc
        seg.close()


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
        self.done: List[int] = []
        self.assigned = 0  # files accumulated + in flight (the cap counts these)
        self.stopped = False
        self.paused = False
        self.pause_sent = False
        self.broken = False

    def start(self, nbytes):
        self.seg = _shm.Segment.create(nbytes)
        parent_conn, child_conn = _CTX.Pipe(duplex=True)
        j = self.job
        self.proc = _CTX.Process(
            target=_worker_main,
            args=(child_conn, self.seg.name, j.tier, j.shape, j.dtype, os.getpid(),
                  j.max_pixels, j.crash_on),
            name=f"hotpixel-worker-{self.index}", daemon=True)
        try:
            self.proc.start()
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
        return Accumulator(j.tier, j.shape, j.dtype, self.seg.buf)

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
        return len(self.inflight) <= PREFETCH


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

    def take(self, accs, job, used):
        """Merge (not in place: the workers go on) and hand over a snapshot."""
        live = [a for a in accs if a.n]
        if live:
            n, mean, var = merge(live, in_place=False)
            self.callback(Stats(n=int(n), mean=mean, var=var, tier=job.tier, files=list(used)))
            del mean, var
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
    ckpt = _Checkpointer(job, on_checkpoint)
    if job.workers <= 1:
        return _run_serial(job, progress, should_stop, ckpt)
    return _run_parallel(job, progress, should_stop, ckpt)


def _run_serial(job, progress, should_stop, ckpt):
    t0 = time.perf_counter()
    acc = Accumulator(job.tier, job.shape, job.dtype)
    buf = np.empty(job.shape, job.dtype)
    used, skipped = [], []
    total = len(job.files)
    stop_sig = None
    for k, path in enumerate(job.files):
        if should_stop is not None:
            stop_sig = should_stop()
            if stop_sig:
                break
        if job.cap is not None and acc.n >= job.cap:
            skipped.append((path, f"over the {job.cap} images the {job.tier} tier allows per worker"))
            continue
        try:
            decode(path, job.shape, job.dtype, out=buf, max_pixels=job.max_pixels)
        except SkipFile as exc:
            skipped.append((path, str(exc)))
        else:
            acc.update(buf)
            used.append(path)
        if progress:
            progress(len(used), total, len(skipped))
        if ckpt.due(len(used)) and k + 1 < total:
            ckpt.take([acc], job, used)
    del buf
    # results merged in place are views that keep their memory alive; otherwise
    # closing the accumulator frees it before detection needs the room
    stats = _finish([acc], job, used)
    acc.close()
    del acc
    result = RunResult(stats, used, skipped, time.perf_counter() - t0, 1)
    if stop_sig:
        raise Interrupted(stop_sig, result)
    return result


def _finish(accs, job, used):
    if not any(a.n for a in accs):
        return None
    # the workers have exited: their CPUs (as many as the plan allowed) merge
    n, mean, var = merge(accs, in_place=True, threads=job.workers)
    return Stats(n=int(n), mean=mean, var=var, tier=job.tier, files=list(used))


def _run_parallel(job, progress, should_stop, ckpt):
    t0 = time.perf_counter()
    files = list(job.files)
    total = len(files)
    nbytes = Accumulator.nbytes(job.tier, job.shape, job.dtype)
    queue = collections.deque(range(total))
    strikes = collections.Counter()
    skipped = {}
    done = set()  # indices of the files accumulated by a live worker
    slots = [_Slot(i, job) for i in range(job.workers)]
    max_msg = 0
    deaths = 0
    stop_sig = None
    pausing = False
    startup_deaths = 0
    finished_ok = False
    result = None
    try:
        for s in slots:
            s.start(nbytes)
        while True:
            if should_stop is not None and stop_sig is None:
                stop_sig = should_stop()
                if stop_sig:
                    for s in slots:
                        _stop(s)
            live = [s for s in slots if s.conn is not None]
            if stop_sig is None and not pausing and queue and ckpt.due(len(done)):
                pausing = True
            if pausing:
                for s in live:  # also a replacement that became ready meanwhile
                    if s.ready and not s.pause_sent:
                        s.send(("pause",))
                        s.pause_sent = True
            if pausing and stop_sig is None and all(s.paused or not s.ready for s in live):
                _snapshot(live, ckpt, job, [files[i] for i in sorted(done)])
                pausing = False
            if stop_sig is None and not pausing:
                _dispatch(slots, queue, files)
            if (stop_sig is None and queue and live and all(s.ready and not s.inflight for s in live)
                    and not any(s.can_take() for s in live)):
                # every worker is at the tier's accuracy limit (the planner avoids this)
                while queue:
                    skipped[queue.popleft()] = (f"over the {job.cap} images the {job.tier} "
                                                f"tier allows per worker")
            if stop_sig is None and not queue and all(not s.inflight for s in live):
                if all(s.ready for s in live):
                    break
            if stop_sig is not None and all(s.stopped or s.conn is None for s in slots):
                break
            waitables = [s.conn for s in live] + [s.proc.sentinel for s in live]
            ready = wait(waitables, timeout=_TICK)
            for s in live:
                if s.conn is not None and s.conn in ready:
                    try:
                        while s.conn.poll(0):
                            data = s.conn.recv_bytes()
                            max_msg = max(max_msg, len(data))
                            _handle(s, pickle.loads(data), skipped, done, progress,
                                    total, queue)
                    except (EOFError, ConnectionResetError, OSError):
                        pass  # the sentinel tells the rest
                if s.proc is not None and s.proc.sentinel in ready and not s.proc.is_alive():
                    if s.stopped:
                        continue
                    deaths += 1
                    if not s.ready:
                        startup_deaths += 1
                        _check_startup_deaths(startup_deaths, s.proc.exitcode)
                    _on_death(s, queue, strikes, skipped, done)
                    if stop_sig is None:
                        s.start(nbytes)
                    else:
                        s.stopped = True
        # orderly shutdown: tell the workers to stop and wait for them
        for s in slots:
            if not s.stopped:
                _stop(s)
        _drain_stops(slots)
        accs = [s.accumulator() for s in slots if s.seg is not None]
        used = [files[i] for i in sorted(done)]
        stats = _finish(accs, job, used)
        del accs
        keep = []
        for s in slots:  # unmap every segment the results do not live in
            if s.seg is not None and not s.seg.close():
                keep.append(s.seg)
        if stats is not None:
            stats.owner = keep
        result = RunResult(stats, used, [(files[i], r) for i, r in sorted(skipped.items())],
                           time.perf_counter() - t0, job.workers, max_msg, deaths)
        finished_ok = True
    finally:
        for s in slots:
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
    if stop_sig:
        raise Interrupted(stop_sig, result)
    return result


def _snapshot(live, ckpt, job, used):
    """Every ready worker is paused: merge a consistent snapshot, then resume them."""
    ckpt.take([s.accumulator() for s in live if s.paused], job, used)
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
    elif kind == "done":
        idx = msg[1]
        s.inflight.remove(idx)
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
    culprit = s.inflight[0] if s.inflight else None
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
