"""POSIX shared-memory segments that cannot outlive their owner.

Each worker's accumulators live in one segment created by the parent.  The
life cycle is built so that nothing is left in ``/dev/shm`` whatever the exit
(normal, exception, Ctrl-C, SIGTERM, a killed worker, even a SIGKILL of the
whole process group):

1. the parent creates the segment, mode 0600, named
   ``hpxshm_<owner pid>_<random>`` (unpredictable, recognisable);
2. the worker attaches by name and says so;
3. the parent *unlinks the name at once*: the mappings stay valid, the memory
   is freed by the kernel when the last process holding it exits;
4. every start-up removes the segments of owners that are no longer alive
   (which covers a SIGKILL between steps 1 and 3).

The segments are managed with the same POSIX calls as
:class:`multiprocessing.shared_memory.SharedMemory`, but without its resource
tracker: the tracker registers every *attach* as well (Python < 3.13), and then
warns about, or unlinks, segments it does not own.
"""
from __future__ import annotations

import mmap
import os
import secrets
import threading

__all__ = [
    "PREFIX", "Segment", "cleanup_stale", "list_segments", "unlink_all_owned", "unlink_name",
    "SHM_DIR",
]

#: Every segment name starts with this, then the owner's pid.
PREFIX = "hpxshm"
#: Where Linux shows POSIX shared memory as files.
SHM_DIR = "/dev/shm"

try:  # the C helpers behind multiprocessing.shared_memory on POSIX systems
    import _posixshmem
except ImportError:  # pragma: no cover - non-POSIX
    _posixshmem = None

#: madvise advice that maps a range's pages at once (Linux 5.14): for reading,
#: and for writing (which also allocates a fresh segment's pages)
_POPULATE_READ, _POPULATE_WRITE = 22, 23

_lock = threading.Lock()
#: names created by this process and not yet unlinked
_owned: set = set()


def _new_name() -> str:
    return f"{PREFIX}_{os.getpid()}_{secrets.token_hex(8)}"


def _open(name: str, flags: int, mode: int = 0o600) -> int:
    if _posixshmem is not None:
        return _posixshmem.shm_open("/" + name, flags, mode=mode)
    # pragma: no cover - fallback where _posixshmem is missing but /dev/shm exists
    return os.open(os.path.join(SHM_DIR, name), flags, mode)


def unlink_name(name: str) -> bool:
    """Remove a segment's name; False when it was already gone."""
    try:
        if _posixshmem is not None:
            _posixshmem.shm_unlink("/" + name)
        else:  # pragma: no cover
            os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        return False
    return True


class Segment:
    """A mapped shared-memory segment.

    Use :meth:`create` in the owner (the parent) and :meth:`attach` in the
    other processes.  ``buf`` is a writable :class:`mmap.mmap`.
    """

    def __init__(self, name: str, buf: mmap.mmap, size: int, owner: bool):
        self.name = name
        self.buf = buf
        self.size = size
        self.owner = owner
        self.unlinked = not owner

    @classmethod
    def create(cls, size: int) -> "Segment":
        """Create a zero-filled segment of ``size`` bytes, readable by this user only."""
        if size <= 0:
            raise ValueError("segment size must be positive")
        for _ in range(8):
            name = _new_name()
            try:
                fd = _open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            except FileExistsError:  # pragma: no cover - 64 random bits
                continue
            break
        else:  # pragma: no cover
            raise FileExistsError("could not find a free shared-memory name")
        with _lock:
            _owned.add(name)
        try:
            os.ftruncate(fd, size)
            buf = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            unlink_name(name)
            with _lock:
                _owned.discard(name)
            raise
        os.close(fd)
        return cls(name, buf, size, owner=True)

    @classmethod
    def attach(cls, name: str) -> "Segment":
        """Map an existing segment by name (it must not be unlinked yet)."""
        fd = _open(name, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            buf = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, buf, size, owner=False)

    def populate(self, start: int = 0, stop: int = None, write: bool = True) -> bool:
        """Map the pages of bytes ``[start, stop)`` (default: to the end) now,
        in one call, instead of one page fault per page at their first use.

        ``write``: ``MADV_POPULATE_WRITE`` (Linux 5.14 or later), which also
        allocates the pages of a fresh segment; else ``MADV_POPULATE_READ``.
        Call it only where every byte of the range is about to be used: the
        pages count in memory from then on.

        Returns
        -------
        bool
            False, with nothing done, where the kernel or Python cannot (an
            older kernel's EINVAL, no ``mmap.madvise``): the pages then appear
            at their first use, as without it.
        """
        stop = self.size if stop is None else min(int(stop), self.size)
        start = int(start) // mmap.PAGESIZE * mmap.PAGESIZE
        if stop <= start:
            return True
        try:
            self.buf.madvise(_POPULATE_WRITE if write else _POPULATE_READ, start, stop - start)
        except (AttributeError, OSError, ValueError):
            return False
        return True

    def unlink(self) -> None:
        """Remove the name (owner only); mappings stay valid until closed."""
        if self.owner and not self.unlinked:
            unlink_name(self.name)
            self.unlinked = True
            with _lock:
                _owned.discard(self.name)

    def close(self) -> bool:
        """Unmap; returns False (and leaves the mapping to the garbage
        collector) while numpy arrays still point into it."""
        try:
            self.buf.close()
        except BufferError:
            return False
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unlink()
        self.close()

    def __repr__(self):
        return f"Segment({self.name!r}, size={self.size}, owner={self.owner}, unlinked={self.unlinked})"


def unlink_all_owned() -> list:
    """Unlink every segment this process created and has not unlinked yet.

    Safe to call from a signal handler's aftermath, ``finally`` blocks and
    ``atexit``; returns the names removed.
    """
    with _lock:
        names = list(_owned)
        _owned.clear()
    return [n for n in names if unlink_name(n)]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def list_segments(shm_dir: str = SHM_DIR, pid: int = None) -> list:
    """Names of our segments present in ``shm_dir`` (optionally of one owner pid)."""
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return []
    out = []
    for n in names:
        if not n.startswith(PREFIX + "_"):
            continue
        if pid is not None and _owner_pid(n) != pid:
            continue
        out.append(n)
    return sorted(out)


def _owner_pid(name: str) -> int:
    parts = name.split("_")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return -1


def cleanup_stale(shm_dir: str = SHM_DIR) -> list:
    """Unlink segments whose owner process is dead (left by a SIGKILL).

    Only segments owned by this user are touched.  Returns the names removed.
    """
    removed = []
    uid = os.getuid() if hasattr(os, "getuid") else None
    for name in list_segments(shm_dir):
        if _pid_alive(_owner_pid(name)):
            continue
        try:
            st = os.stat(os.path.join(shm_dir, name))
        except OSError:
            continue
        if uid is not None and st.st_uid != uid:
            continue
        if unlink_name(name):
            removed.append(name)
    return removed
