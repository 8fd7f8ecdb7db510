"""Signals that arrive while the command is still loading (no numpy here).

``python -m hotpixel_shm`` installs :func:`install` before anything heavy is
imported, and :func:`cli.main` does again for the ``hotpixel-shm`` script
and callers in-process; a SIGINT or SIGTERM then only records itself --
raising in the middle of an import would break it (numpy turns it into an
ImportError) -- and the command's own handling (``cli._Stopper``) raises it
at its first safe point.
"""
import signal

__all__ = ["install", "restore", "take"]

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
