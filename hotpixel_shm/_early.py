"""What the command does before numpy loads (no numpy here): signals that
arrive while it is still loading, and the BLAS thread pool it does not need.

``python -m hotpixel_shm`` installs :func:`install` before anything heavy is
imported, and :func:`cli.main` does again for the ``hotpixel-shm`` script
and callers in-process; a SIGINT or SIGTERM then only records itself --
raising in the middle of an import would break it (numpy turns it into an
ImportError) -- and the command's own handling (``cli._Stopper``) raises it
at its first safe point.
"""
import os
import signal
import sys

__all__ = ["install", "restore", "take", "single_threaded_blas"]

_PENDING = []
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _record(signum, frame):
    _PENDING.append(int(signum))


def install():
    """Record SIGINT and SIGTERM from now on (until the command takes over).

    Returns the handlers replaced, for :func:`restore`; an empty dict when
    not in the main thread (where handlers cannot be set).
    """
    old = {}
    for sig in _SIGNALS:
        try:
            old[sig] = signal.signal(sig, _record)
        except ValueError:  # not the main thread
            break
    return old


def restore(old):
    """Put back the handlers :func:`install` replaced."""
    for sig, handler in old.items():
        signal.signal(sig, handler)


def take():
    """The first signal recorded, or None; forgets them all."""
    first = _PENDING[0] if _PENDING else None
    _PENDING.clear()
    return first


def single_threaded_blas():
    """Ask OpenBLAS, before numpy loads it, for no thread pool of its own.

    No BLAS routine is called by this package (its kernels are loops of its
    own and numpy's element-wise functions), yet OpenBLAS starts a thread
    per CPU when numpy loads and these spin: measured 0.05 s of CPU and 0.06
    s of wall time per ``import numpy`` on a 2-core machine, paid by the
    command and by each worker while the others start.  A value the user set
    is kept.  Returns whether numpy was still to be loaded (else too late:
    nothing is changed).
    """
    if "numpy" in sys.modules:
        return False
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return True
