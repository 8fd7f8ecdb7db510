"""How a worker process is spawned (no numpy here).

* The ``spawn`` start method (:data:`CONTEXT`), never ``fork``: the parent
  holds threads and large mappings.
* SIGINT blocked at birth (:func:`start_without_sigint`): a terminal's
  Ctrl-C reaches the whole process group while a worker is still loading.
* The child's entry point (:func:`worker_entry`) lives in this numpy-free
  module, so that the child is set up before it loads numpy: it asks
  OpenBLAS for no thread pool (``_early.single_threaded_blas``), then runs
  ``engine._worker_main``.
"""
from __future__ import annotations

import multiprocessing as mp
import signal

__all__ = ["CONTEXT", "start_without_sigint", "worker_entry"]

#: Worker processes are spawned (never forked: the parent holds threads and
#: large mappings).
CONTEXT = mp.get_context("spawn")


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


def worker_entry(conn, parent_pid, spec):
    """Entry point of every worker process: set up BLAS, load the engine, work.

    ``spec``: the job as a plain tuple (``engine._WorkerSpec``'s fields), so
    that unpickling the arguments loads no numpy either.
    """
    from ._early import single_threaded_blas
    single_threaded_blas()
    from .engine import _worker_main
    _worker_main(conn, parent_pid, spec)
