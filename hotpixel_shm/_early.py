"""Signals that arrive while the command is still loading (no numpy here).

``python -m hotpixel_shm`` installs :func:`install` before anything heavy is
imported; a SIGINT or SIGTERM then only records itself -- raising in the
middle of an import would break it -- and the command's own handling
(``cli._Stopper``) raises it at its first safe point.
"""
import signal

__all__ = ["install", "pending"]

_PENDING = []


def _record(signum, frame):
    _PENDING.append(int(signum))


def install():
    """Record SIGINT and SIGTERM from now on (until the command takes over)."""
    signal.signal(signal.SIGINT, _record)
    signal.signal(signal.SIGTERM, _record)


def pending():
    """The first signal recorded, or None."""
    return _PENDING[0] if _PENDING else None
