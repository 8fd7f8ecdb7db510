"""Peak memory of a process tree, shared memory included, counted once.

:class:`PeakMemory` samples the proportional set size (PSS) of a process and
all of its descendants in a background thread and keeps the largest total.
PSS charges every resident page to the processes that map it in equal
shares, so a shared-memory block mapped by the parent and by a worker is
counted once in the total, not once per process as a sum of RSS would.

This is how the product checks its promise that the measured peak of the
whole run stays under the plan; the test suite and ``scripts/bench.py`` use it.
"""
from __future__ import annotations

import os
import threading

import psutil

__all__ = ["PeakMemory", "tree_bytes"]

# A process can exit, become a zombie or refuse access between the moment it is
# listed among the children and the moment its memory is read.
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def _process_bytes(proc: psutil.Process) -> int:
    """PSS of one process, or its RSS where PSS cannot be read (0 if it is gone)."""
    try:
        full = proc.memory_full_info()
        pss = getattr(full, "pss", None)
        if pss is not None:
            return int(pss)
        return int(full.rss)
    except psutil.AccessDenied:
        # Reading smaps needs more rights than reading statm; RSS over-counts
        # shared pages but is better than nothing.
        pass
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0
    try:
        return int(proc.memory_info().rss)
    except _GONE:
        return 0


def tree_bytes(pid: int) -> int:
    """Sum of PSS (RSS where PSS is unavailable) of a process and its descendants.

    Parameters
    ----------
    pid : int
        The root of the tree.

    Returns
    -------
    int
        Bytes; 0 when the root process no longer exists.  Descendants that
        exit while they are being read contribute nothing.
    """
    try:
        root = psutil.Process(pid)
        children = root.children(recursive=True)
    except _GONE:
        return 0
    return sum(_process_bytes(p) for p in [root, *children])


class PeakMemory:
    """Context manager recording the peak memory of a process tree.

    Parameters
    ----------
    pid : int, optional
        Root of the tree to watch; this process when None.  All recursive
        children are included, as they are found at each sample.
    interval : float, optional
        Seconds between samples (default 0.02).

    Attributes
    ----------
    peak_bytes : int
        Largest total seen so far, in bytes.
    samples : int
        Number of samples taken.

    Notes
    -----
    The total is the sum of each process's PSS (``psutil``'s
    ``memory_full_info().pss``; RSS where PSS is missing, e.g. not Linux or
    access denied).  PSS divides every shared page among the processes that
    map it, so a shared-memory block is counted once however many processes
    map it.  Pages of a shared-memory block that no process maps at that
    moment are not counted, and peaks shorter than ``interval`` can be
    missed: this is a sampling monitor, not an accountant.

    If sampling fails unexpectedly in the background thread, the exception
    is re-raised when the ``with`` block exits, so a broken monitor cannot
    report a silently wrong peak.

    Examples
    --------
    >>> with PeakMemory() as peak:           # doctest: +SKIP
    ...     run_the_work()
    >>> peak.peak_bytes                      # doctest: +SKIP
    """

    def __init__(self, pid=None, interval=0.02):
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.pid = os.getpid() if pid is None else int(pid)
        self.interval = float(interval)
        self.peak_bytes = 0
        self.samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._error = None

    def sample(self) -> int:
        """Read the tree's memory now, update :attr:`peak_bytes` and return the reading.

        Returns
        -------
        int
            Bytes used by the tree at this moment.
        """
        now = tree_bytes(self.pid)
        with self._lock:
            self.samples += 1
            if now > self.peak_bytes:
                self.peak_bytes = now
        return now

    def _run(self):
        try:
            while not self._stop.wait(self.interval):
                self.sample()
        except BaseException as exc:  # re-raised in __exit__
            self._error = exc

    def __enter__(self):
        if self._thread is not None:
            raise RuntimeError("PeakMemory is already running")
        self._stop.clear()
        self._error = None
        self.sample()
        self._thread = threading.Thread(target=self._run, name="hotpixel-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            if exc is None:
                raise error
            return False
        self.sample()
        return False

    def __repr__(self):
        return (f"PeakMemory(pid={self.pid}, interval={self.interval}, "
                f"peak_bytes={self.peak_bytes}, samples={self.samples})")
