"""Worker processes started before their job is known (issue 10, fixed costs).

A worker process spends its first 0.15-0.25 s starting an interpreter and
importing numpy, Pillow and the engine.  The command starts its workers
first, while it lists and probes the photos and plans, so that this start-up
overlaps the parent's own; each pre-started worker then waits for its job
(its shared-memory segment and what to compute, see ``engine._Slot``).

The number of workers is only known after the plan: the command starts as
many as the plan could choose (:func:`prestart_count`), the engine takes
them one by one (:meth:`Prestarted.take`), and the ones the plan does not
use are stopped before the run allocates anything (:meth:`Prestarted.keep`).
A worker that waits for its job holds no shared memory, so stopping it
leaves nothing behind; it also leaves by itself when its pipe closes or its
parent dies.

This module imports no numpy: a worker's entry point (:func:`worker_entry`)
lives here so that the child is set up before it loads numpy.  Counting
the workers (:func:`prestart_count`) takes the planner's own CPU and memory
detection (``budget``, which does load numpy); the command does it before
it loads the rest of itself.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

__all__ = ["Prestarted", "prestart_count", "start_without_sigint", "worker_entry", "CONTEXT",
           "HOLD_ENV", "hold_for_tests"]

#: Worker processes are spawned (never forked: the parent holds threads and
#: large mappings).
CONTEXT = mp.get_context("spawn")
#: Testing aid: the command waits after starting its workers, until the file
#: this names exists, so that tests can signal it while the workers wait for
#: their job (a stand-in for a slow probe of many photos).
HOLD_ENV = "HOTPIXEL_SHM_TEST_HOLD"
#: Seconds to wait for a stopped worker to be gone.
_JOIN_SECONDS = 2.0


def start_without_sigint(proc):
    """Start ``proc`` with SIGINT blocked, so that it is born with it blocked.

    A terminal's Ctrl-C reaches the whole process group; a worker that is
    still starting (importing numpy, before it can ignore SIGINT) would die
    of it with a traceback -- band passes start workers at every pass.  The
    parent's own SIGINT stays pending while blocked and is delivered at once
    after (never lost); the worker ignores SIGINT anyway
    (``engine._worker_main``).
    """
    block = getattr(signal, "pthread_sigmask", None)
    if block is None:
        proc.start()
        return
    # the first start also starts multiprocessing's resource tracker, and
    # that unblocks SIGINT and SIGTERM when done: have it running first
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()
    old = block(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        proc.start()
    finally:
        block(signal.SIG_SETMASK, old)


def worker_entry(conn, parent_pid, spec=None):
    """Entry point of every worker process: load the engine and work.

    ``spec``: the job as a plain tuple (``engine._WorkerSpec``'s fields), or
    None for a pre-started worker, which waits for it on ``conn``.  Spawned
    by reference to this numpy-free module, so that BLAS is set up before
    the child loads numpy (``_early.single_threaded_blas``).
    """
    from ._early import single_threaded_blas
    single_threaded_blas()
    from .engine import _worker_main
    _worker_main(conn, parent_pid, spec)


def prestart_count(workers, paths, memory_budget=None, min_images=1) -> int:
    """How many workers to start before the plan exists (0: none).

    Parameters
    ----------
    workers : int or None
        Workers asked for (None: the planner chooses).
    paths : list of str
        The command's inputs.  When every one is a file, there are no more
        workers than files (nor any when fewer files than ``min_images``).
    memory_budget : int, str or None
        As ``--memory-budget``: no more workers than the budget holds
        interpreters for beside the parent's.
    min_images : int
        Fewer usable photos than this end the run.

    Returns
    -------
    int
        At most the usable CPUs (the most the planner chooses), at most
        ``workers``; 0 when the run would be serial (one worker runs
        in-process) or cannot start.

    Notes
    -----
    The plan may still choose fewer (a smaller budget, photos of another
    size or camera): :meth:`Prestarted.keep` stops the others before the run.
    """
    if workers is not None and workers < 2:
        return 0
    from . import budget
    from .errors import HotPixelError
    try:
        res = budget.detect_resources()
        room = budget.run_budget(res, memory_budget) - budget.PARENT_BASELINE_BYTES
    except HotPixelError:
        return 0        # the command reports it in its place
    n = min(res.cpus, workers or res.cpus, max(0, room) // budget.WORKER_BASELINE_BYTES)
    if paths and all(os.path.isfile(p) for p in paths):
        n = 0 if len(paths) < min_images else min(n, len(paths))
    return n if n >= 2 else 0


class Prestarted:
    """Worker processes waiting for their job.

    Use :meth:`start` to make one, :meth:`take` (the engine) to hand a
    worker its job, :meth:`keep` once the plan knows how many are wanted,
    and :meth:`close` (or ``with``) whatever happens: it stops the ones not
    taken.
    """

    def __init__(self):
        self._idle = []         # (process, parent end of its pipe)

    @classmethod
    def start(cls, n: int) -> "Prestarted":
        """Start ``n`` worker processes (none left running if a start fails)."""
        pool = cls()
        try:
            for i in range(n):
                parent_conn, child_conn = CONTEXT.Pipe(duplex=True)
                proc = CONTEXT.Process(target=worker_entry, args=(child_conn, os.getpid()),
                                       name=f"hotpixel-worker-pre-{i}", daemon=True)
                try:
                    start_without_sigint(proc)
                except BaseException:
                    parent_conn.close()
                    raise
                finally:
                    child_conn.close()
                pool._idle.append((proc, parent_conn))
        except BaseException:
            pool.close()
            raise
        return pool

    def take(self):
        """A waiting worker as ``(process, connection)``, or None when none is left.

        The caller owns it from now on: it sends the job, or stops it.
        """
        return self._idle.pop(0) if self._idle else None

    def keep(self, n: int) -> None:
        """Stop every waiting worker but ``n`` (0: all)."""
        extra, self._idle = self._idle[max(0, n):], self._idle[:max(0, n)]
        _stop_all(extra)

    def close(self) -> None:
        """Stop every worker not taken (idempotent)."""
        self.keep(0)

    def __len__(self):
        return len(self._idle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stop_all(idle):
    """Stop workers that wait for their job: they hold no shared memory and
    no file, so they are killed outright (at once, even while one is still
    importing numpy); their pipes are closed first, which ends any that is
    already waiting by itself."""
    for proc, conn in idle:
        conn.close()
    for proc, _ in idle:
        if proc.is_alive():
            proc.kill()
    deadline = time.monotonic() + _JOIN_SECONDS
    for proc, _ in idle:
        proc.join(timeout=max(0.05, deadline - time.monotonic()))


def hold_for_tests():
    """Testing aid (:data:`HOLD_ENV`): wait until the file it names exists."""
    path = os.environ.get(HOLD_ENV)
    while path and not os.path.exists(path):
        time.sleep(0.02)
