"""How much CPU and memory the run may use, and the plan that fits in it.

Two jobs, both without starting a process:

* *Resources*: CPUs this process may run on (affinity, capped by a cgroup CPU
  quota) and the memory it may still take (``psutil``'s available memory,
  capped by the limit of every memory cgroup the process is in, v1 or v2,
  minus what that cgroup already uses), plus the free space of the
  shared-memory filesystem.
* *Plan*: :func:`make_plan` turns an image shape, a file count, a CPU count
  and a memory budget into the number of worker processes and the
  accumulator tier, using the documented :func:`memory_model`.  It is a pure
  function so that it can be tested with tables.

Sizes use binary units: ``K``, ``M``, ``G`` and ``T`` are powers of 1024.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import psutil

from . import tiers
from .bands import band_rows, cache_bands_for, reader_cache_bytes
from .errors import HotPixelError, PlanError
from .kernels_numpy import MAX_BATCH

__all__ = [
    "parse_size", "format_bytes", "usable_cpus", "available_memory", "shm_free",
    "Resources", "detect_resources", "DEFAULT_BUDGET_FRACTION", "CGROUP_BUDGET_FRACTION", "Plan", "Candidate",
    "MemoryModel", "memory_model", "make_plan", "run_budget", "DECODERS", "decoder_for",
    "band_height", "max_bands", "MIN_BAND_ROWS", "accumulator_nbytes", "decode_bytes",
    "WORKER_BASELINE_BYTES", "PARENT_BASELINE_BYTES", "WORKER_SCRATCH_BYTES",
    "MERGE_SCRATCH_BYTES", "SEGMENT_ALIGN", "finish_threads",
]

_KIB = 1024
_MIB = 1024 ** 2
_GIB = 1024 ** 3

#: Default ``--memory-budget`` as a fraction of the available memory.  The
#: remaining quarter is left for the operating system and other programs, for
#: the page cache that keeps the photos being read, and for the error of the
#: memory model (allocator fragmentation, libraries that differ by version).
DEFAULT_BUDGET_FRACTION = 0.75
#: Photos a worker decodes before one pass over its accumulator, when the
#: budget allows (the accumulator, 5-16 bytes a value, is then read and
#: written once per K photos).  Measured on a 24 MP frame (bench.py
#: --kernels): the compiled exact update takes 0.126 s per photo with K = 1
#: and 0.068 s with K = 4; but each extra photo held costs a decoded frame
#: per worker (72 MB at 24 MP), which with K = 4 put the float32 tier's peak
#: over a quarter of the article's, so 2 is the default.
DEFAULT_BATCH = 2

#: Default ``--memory-budget`` when a memory cgroup's limit is the bound.
#: There the available memory is exact (limit minus what the group uses,
#: inactive file cache counted as free since the kernel reclaims it first)
#: and no other program competes for it; what is left covers the kernel's
#: own charges to the group (page tables, the dirty page cache of files
#: being written) and the error of the memory model, whose plans measured
#: 1.04 to 1.11 times the peak (never under it).  Measured in a cgroup v1
#: of 1,100 MiB on 24 MP JPEGs: budget 0.85 x 1,070 MiB = 910 MiB, plan
#: 770 MiB (one worker, exact), peak 696 MiB.
CGROUP_BUDGET_FRACTION = 0.85

#: Private memory of one worker interpreter before any image: a process started
#: with the ``spawn`` method that imported the engine, numpy, Pillow and
#: simplejpeg measured 38.8 MiB RSS, of which 20.9 MiB its own (USS) and the
#: rest the libraries' pages, which the parent has mapped already and which
#: count once in the process tree (PSS) and in a memory cgroup (numpy 2.4,
#: Pillow 13, Python 3.11, Linux).  24 MiB: the private part and a little
#: room; plans of two workers were 1.16 x the measured peak with 40 MiB.
WORKER_BASELINE_BYTES = 24 * _MIB

#: The parent interpreter while the photos are read: numpy, Pillow,
#: simplejpeg, psutil and the command line, planner and engine measured
#: 41 MiB RSS (24 MiB PSS); 48 MiB leaves room for the list of files.
PARENT_BASELINE_BYTES = 48 * _MIB

#: What the finish imports on top (scipy, detection, lines, picture,
#: exports): measured 23 MiB more RSS; counted with detection.
_FINISH_IMPORTS_BYTES = 24 * _MIB

#: Temporaries of a worker's accumulator update, which works in blocks of
#: 65536 values (a few float64 blocks: under 4 MiB), plus slack.
WORKER_SCRATCH_BYTES = 8 * _MIB

#: Temporaries of the parent's chunked merge and finalisation: five float64
#: blocks of 65536 values per thread (2.5 MiB each), plus slack.
MERGE_SCRATCH_BYTES = 8 * _MIB

# merge_stats (loaded statistics with new ones) works on five float64
# blocks of 2**20 values.
_LOADED_MERGE_SCRATCH = 40 * _MIB

#: Every array of an accumulator segment starts on a 64-byte boundary (a cache line).
SEGMENT_ALIGN = tiers.SEGMENT_ALIGN

# cgroup v1 says "no limit" with 2**63-1 rounded down to a page
# (9223372036854771712); anything this large is no limit at all.
_UNLIMITED = 1 << 60

# shm_free() when the platform has no shared-memory filesystem to ask.
_NO_SHM_LIMIT = 1 << 62

_DEFAULT_PROC = "/proc"
_DEFAULT_CGROUP = "/sys/fs/cgroup"

_UNITS = {"": 1, "B": 1, "K": _KIB, "M": _MIB, "G": _GIB, "T": 1024 ** 4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------- sizes

def parse_size(text: str) -> int:
    """Parse a memory size such as ``"1.5G"``, ``"800M"``, ``"2GiB"`` or ``"1000000"``.

    Parameters
    ----------
    text : str
        A non-negative number, optionally followed by a unit ``K``, ``M``,
        ``G`` or ``T`` (any case, optionally followed by ``B`` or ``iB``) or
        ``B``.  Spaces around the number and unit are allowed.

    Returns
    -------
    int
        The size in bytes, rounded to the nearest byte.

    Raises
    ------
    HotPixelError
        If the text is not a size.

    Notes
    -----
    The units are binary whatever their spelling: ``K`` = 1024,
    ``M`` = 1024**2, ``G`` = 1024**3, ``T`` = 1024**4 bytes, so ``"1GB"``,
    ``"1G"`` and ``"1GiB"`` are all 1073741824 bytes.  Memory is sold and
    reported by operating systems in these units.
    """
    if not isinstance(text, str):
        raise HotPixelError(f"memory size must be text like '1.5G', got {text!r}")
    m = _SIZE_RE.match(text)
    if m is None or (m.group(3) and not m.group(2) and m.group(3).lower() != "b"):
        raise HotPixelError(
            f"cannot read {text!r} as a memory size; write a number of bytes or a "
            f"number with a unit K, M, G or T (powers of 1024), e.g. '1.5G' or '800M'")
    number, unit, _suffix = m.groups()
    return int(round(float(number) * _UNITS[unit.upper()]))


def format_bytes(n: int) -> str:
    """Format a byte count for people, in binary units with three significant digits.

    Parameters
    ----------
    n : int
        Bytes (may be negative).

    Returns
    -------
    str
        E.g. ``"512 B"``, ``"812 MiB"``, ``"1.50 GiB"``, ``"23.5 GiB"``.
    """
    n = int(n)
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n < _KIB:
        return f"{sign}{n} B"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB")
    value = float(n)
    for i, unit in enumerate(units):
        value /= 1024.0
        # Move up a unit when rounding would print 1024 of this one.
        if round(value) < 1024 or i == len(units) - 1:
            break
    # Three significant digits; rounding may carry into the next decade.
    if round(value, 2) < 10:
        text = f"{value:.2f}"
    elif round(value, 1) < 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:.0f}"
    return f"{sign}{text} {unit}"


# ------------------------------------------------------------------- cgroups

@dataclass(frozen=True)
class _Hierarchy:
    """Where one cgroup hierarchy puts this process."""

    version: int          # 1 or 2
    group: str            # the group path, as in /proc/self/cgroup
    dirs: tuple           # the group's directory, then its parents up to the mount point


def _read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _read_int(path):
    """An integer file, or None when missing, ``max`` or unreadable."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _read_stat(path, *keys):
    """The first of ``keys`` found in a ``memory.stat`` file, or 0."""
    text = _read_text(path)
    if not text:
        return 0
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    for key in keys:
        if key in found:
            return found[key]
    return 0


def _unescape_mount(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _parse_mountinfo(proc_root):
    """Cgroup mounts as ``(fstype, superoptions, root, mount_point)``."""
    text = _read_text(os.path.join(proc_root, "self", "mountinfo"))
    mounts = []
    for line in (text or "").splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 2:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        superopts = set(fields[sep + 3].split(",")) if len(fields) > sep + 3 else set()
        mounts.append((fstype, superopts, _unescape_mount(fields[3]), _unescape_mount(fields[4])))
    return mounts, text is not None


def _rebase(mount_point, cgroup_root):
    """Move a mount point found in mountinfo under ``cgroup_root`` (for tests and chroots)."""
    if cgroup_root == _DEFAULT_CGROUP:
        return mount_point
    if mount_point == _DEFAULT_CGROUP or mount_point.startswith(_DEFAULT_CGROUP + "/"):
        return cgroup_root + mount_point[len(_DEFAULT_CGROUP):]
    return mount_point


def _group_dirs(mount_root, mount_point, group):
    """The group's directory and its parents up to the mount point.

    Inside a container the mount's root is often the container's own group
    (mountinfo root ``/docker/abc`` while /proc/self/cgroup says
    ``/docker/abc``): the path is then taken relative to that root.  A group
    outside the mount's root cannot be reached; the mount point, the closest
    group we can see, stands in for it.
    """
    root = "/" + mount_root.strip("/")
    group = "/" + group.strip("/")
    if root == "/":
        rel = group.strip("/")
    elif group == root or group.startswith(root + "/"):
        rel = group[len(root):].strip("/")
    else:
        rel = ""
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        parts = []
    dirs = []
    for i in range(len(parts), -1, -1):
        dirs.append(os.path.join(mount_point, *parts[:i]))
    return tuple(dirs)


def _hierarchies(controller, proc_root, cgroup_root):
    """Every hierarchy (v1 for ``controller``, and v2) this process is placed in."""
    text = _read_text(os.path.join(proc_root, "self", "cgroup"))
    if not text:
        return []
    mounts, have_mountinfo = _parse_mountinfo(proc_root)
    if not have_mountinfo:
        # No mount table to read: assume the usual layout under cgroup_root.
        mounts = [("cgroup2", set(), "/", cgroup_root)]
        try:
            names = sorted(os.listdir(cgroup_root))
        except OSError:
            names = []
        for name in names:
            if controller in name.split(","):
                mounts.append(("cgroup", {controller}, "/", os.path.join(cgroup_root, name)))
        rebase = False
    else:
        rebase = True
    found = []
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, group = parts
        if hid == "0" and ctrls == "":
            version, fstype = 2, "cgroup2"
        elif controller in ctrls.split(","):
            version, fstype = 1, "cgroup"
        else:
            continue
        candidates = [m for m in mounts
                      if m[0] == fstype and (version == 2 or controller in m[1])]
        if not candidates:
            continue

        def _covers(m):
            root = "/" + m[2].strip("/")
            g = "/" + group.strip("/")
            return root == "/" or g == root or g.startswith(root + "/")
        # A bind mount of the group itself is the most direct view of it.
        covering = sorted((m for m in candidates if _covers(m)), key=lambda m: -len(m[2]))
        _, _, mroot, mpoint = (covering or candidates)[0]
        if rebase:
            mpoint = _rebase(mpoint, cgroup_root)
        found.append(_Hierarchy(version, group, _group_dirs(mroot, mpoint, group)))
    return found


def _cgroup_cpu_limit(proc_root, cgroup_root):
    """Smallest CPU quota (in CPUs, rounded up) over the process's groups and parents."""
    best, where = None, None
    for h in _hierarchies("cpu", proc_root, cgroup_root):
        for d in h.dirs:
            if h.version == 2:
                text = _read_text(os.path.join(d, "cpu.max"))
                if not text:
                    continue
                parts = text.split()
                if len(parts) < 1 or parts[0] == "max":
                    continue
                try:
                    quota = int(parts[0])
                    period = int(parts[1]) if len(parts) > 1 else 100_000
                except ValueError:
                    continue
            else:
                quota = _read_int(os.path.join(d, "cpu.cfs_quota_us"))
                period = _read_int(os.path.join(d, "cpu.cfs_period_us"))
                if quota is None or period is None:
                    continue
            if quota <= 0 or period <= 0:
                continue        # -1 (v1) means no quota
            cpus = max(1, math.ceil(quota / period))
            if best is None or cpus < best:
                best, where = cpus, f"cgroup v{h.version} quota {quota}/{period} at {d}"
    return best, where


def _cpus_with_reason(proc_root=_DEFAULT_PROC, cgroup_root=_DEFAULT_CGROUP):
    try:
        n = len(os.sched_getaffinity(0))
        how = "CPU affinity"
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
        how = "CPU count"
    quota, where = _cgroup_cpu_limit(proc_root, cgroup_root)
    if quota is not None and quota < n:
        return quota, f"{quota} CPU(s): {how} allows {n}, capped by {where}"
    return max(1, n), f"{max(1, n)} CPU(s) by {how}" + ("" if quota is None else f" (cgroup quota allows {quota})")


def usable_cpus(*, proc_root="/proc", cgroup_root="/sys/fs/cgroup") -> int:
    """Number of CPUs this process may use.

    Parameters
    ----------
    proc_root, cgroup_root : str, optional
        Where to find ``self/cgroup`` and ``self/mountinfo``, and the cgroup
        filesystem (other values serve tests and chroots).

    Returns
    -------
    int
        ``len(os.sched_getaffinity(0))`` (``os.cpu_count()`` where affinity is
        not available), capped by the tightest CPU quota of the process's
        cgroup and its parents: v2 ``cpu.max`` (``"max 100000"`` is no quota,
        ``"200000 100000"`` is 2 CPUs), v1 ``cpu.cfs_quota_us`` /
        ``cpu.cfs_period_us``.  A fractional quota is rounded up; at least 1.
    """
    return _cpus_with_reason(proc_root, cgroup_root)[0]


def _cgroup_memory_free(proc_root, cgroup_root):
    """``(free bytes or None, explanation lines)`` over the groups and parents."""
    best, lines = None, []
    for h in _hierarchies("memory", proc_root, cgroup_root):
        limited = False
        for d in h.dirs:
            if h.version == 2:
                limits = [v for v in (_read_int(os.path.join(d, "memory.max")),
                                      _read_int(os.path.join(d, "memory.high"))) if v is not None]
                limit = min(limits) if limits else None
                usage = _read_int(os.path.join(d, "memory.current"))
                cache = _read_stat(os.path.join(d, "memory.stat"), "inactive_file")
            else:
                limit = _read_int(os.path.join(d, "memory.limit_in_bytes"))
                usage = _read_int(os.path.join(d, "memory.usage_in_bytes"))
                # usage_in_bytes covers the whole subtree, so does total_*.
                cache = _read_stat(os.path.join(d, "memory.stat"), "total_inactive_file", "inactive_file")
            if limit is None or limit >= _UNLIMITED:
                continue
            limited = True
            used = max(0, (usage or 0) - cache)
            free = max(0, limit - used)
            lines.append(
                f"cgroup v{h.version} {d}: limit {format_bytes(limit)}, in use {format_bytes(usage or 0)}"
                + (f" of which {format_bytes(cache)} is reclaimable file cache" if cache else "")
                + f" -> {format_bytes(free)} free")
            if best is None or free < best:
                best = free
        if not limited and h.dirs and os.path.isdir(h.dirs[0]):
            if h.version == 1 or os.path.exists(os.path.join(h.dirs[0], "memory.current")):
                lines.append(f"cgroup v{h.version} memory group {h.group}: no limit")
    return best, lines


def available_memory(*, proc_root="/proc", cgroup_root="/sys/fs/cgroup") -> tuple:
    """Memory this process can still take, and why.

    Parameters
    ----------
    proc_root, cgroup_root : str, optional
        Where to find ``self/cgroup`` and ``self/mountinfo``, and the cgroup
        filesystem (other values serve tests and chroots).

    Returns
    -------
    bytes : int
        ``psutil.virtual_memory().available``, but never more than what the
        process's memory cgroup, or any of its parents, still allows.
    explanation : str
        One sentence per source, for ``--plan`` and the log.

    Notes
    -----
    The process's own group is found from ``/proc/self/cgroup`` and located
    on disk with ``/proc/self/mountinfo`` (the mount's root matters inside
    containers, where the mount often shows the container's group as its
    root).  For each group from the process's own up to the mount point,
    free = limit - (usage - inactive file cache); the inactive file cache
    (mostly the photos just read) is dropped by the kernel before it runs
    out of memory, as the kubelet's "working set" also assumes.  Limits:
    v2 ``memory.max`` and ``memory.high`` (over ``high`` the kernel throttles
    the group hard) with ``memory.current``; v1 ``memory.limit_in_bytes``
    with ``memory.usage_in_bytes``, where a huge number such as
    9223372036854771712 means no limit.
    """
    free, why, _ = _available(proc_root, cgroup_root)
    return free, why


def _available(proc_root, cgroup_root):
    """``(bytes, explanation, whether a cgroup limit is the bound)``."""
    avail = int(psutil.virtual_memory().available)
    cg, lines = _cgroup_memory_free(proc_root, cgroup_root)
    parts = [f"the system reports {format_bytes(avail)} available"] + lines
    if cg is not None and cg < avail:
        parts.append(f"the cgroup is the tighter bound: {format_bytes(cg)}")
        return cg, "; ".join(parts), True
    return avail, "; ".join(parts), False


def shm_free(path="/dev/shm") -> int:
    """Free bytes of the shared-memory filesystem.

    Parameters
    ----------
    path : str, optional
        Its mount point.

    Returns
    -------
    int
        ``f_bavail * f_frsize`` of ``os.statvfs(path)``; a very large number
        (2**62) when the path does not exist or cannot be asked, as on
        systems whose shared memory is not a filesystem.
    """
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return _NO_SHM_LIMIT
    return int(st.f_bavail) * int(st.f_frsize)


@dataclass(frozen=True)
class Resources:
    """What the machine gives this run.

    Attributes
    ----------
    cpus : int
        From :func:`usable_cpus`.
    available_bytes : int
        From :func:`available_memory`.
    shm_free_bytes : int
        From :func:`shm_free`.
    notes : tuple of str
        Human-readable explanations of the three numbers.
    cgroup_limited : bool
        Whether a memory cgroup limit, not the machine, bounds the memory.
    """

    cpus: int
    available_bytes: int
    shm_free_bytes: int
    notes: tuple
    cgroup_limited: bool = False

    def default_budget(self) -> int:
        """The default budget: ``CGROUP_BUDGET_FRACTION`` of the available
        memory when a cgroup limit is the bound, else ``DEFAULT_BUDGET_FRACTION``."""
        fraction = CGROUP_BUDGET_FRACTION if self.cgroup_limited else DEFAULT_BUDGET_FRACTION
        return int(self.available_bytes * fraction)


def detect_resources(**roots) -> Resources:
    """Detect CPUs, available memory and free shared memory.

    Parameters
    ----------
    **roots
        ``proc_root`` and ``cgroup_root`` as for :func:`available_memory`,
        ``shm_path`` as ``path`` of :func:`shm_free`.

    Returns
    -------
    Resources
    """
    unknown = set(roots) - {"proc_root", "cgroup_root", "shm_path"}
    if unknown:
        raise TypeError(f"detect_resources() got unexpected arguments {sorted(unknown)}")
    proc_root = roots.get("proc_root", _DEFAULT_PROC)
    cgroup_root = roots.get("cgroup_root", _DEFAULT_CGROUP)
    shm_path = roots.get("shm_path", "/dev/shm")
    cpus, cpu_note = _cpus_with_reason(proc_root, cgroup_root)
    avail, mem_note, limited = _available(proc_root, cgroup_root)
    shm = shm_free(shm_path)
    shm_note = (f"shared memory: {format_bytes(shm)} free in {shm_path}" if shm < _NO_SHM_LIMIT
                else f"shared memory: {shm_path} cannot be asked; assuming no separate limit")
    return Resources(cpus, avail, shm, (cpu_note, f"memory: {mem_note}", shm_note), limited)


# ------------------------------------------------------------- memory model

def _shape3(shape):
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise HotPixelError(f"image shape must be (height, width[, channels]), got {shape!r}") from None
    if len(dims) == 2:
        dims = dims + (1,)
    if len(dims) != 3 or min(dims) < 1 or dims[2] > 4:
        raise HotPixelError(f"image shape must be (height, width[, channels<=4]) of positive sizes, got {shape!r}")
    return dims


def _sample_dtype(sample_dtype):
    try:
        dt = np.dtype(sample_dtype)
    except TypeError:
        raise HotPixelError(f"sample dtype must be uint8 or uint16, got {sample_dtype!r}") from None
    if dt not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise HotPixelError(f"sample dtype must be uint8 or uint16, got {dt}")
    return dt


def _check_tier(tier):
    if tier not in tiers.TIERS:
        raise HotPixelError(f"unknown accumulator tier {tier!r}; expected one of {', '.join(tiers.TIERS)}")


def accumulator_nbytes(shape, sample_dtype, tier) -> int:
    """Bytes of one accumulator (one worker's shared-memory segment).

    Parameters
    ----------
    shape : tuple
        ``(height, width)`` or ``(height, width, channels)``.
    sample_dtype : dtype-like
        ``uint8`` or ``uint16``.
    tier : str
        One of ``tiers.TIERS``.

    Returns
    -------
    int
        ``tiers.segment_nbytes``, the size the accumulator itself uses:
        ``tiers.HEADER_BYTES`` plus each array of ``tiers.fields`` rounded up
        to a multiple of ``SEGMENT_ALIGN`` bytes, so that every array starts
        on a cache line.
    """
    h, w, c = _shape3(shape)
    dt = _sample_dtype(sample_dtype)
    _check_tier(tier)
    return tiers.segment_nbytes(tier, dt, h * w * c)


#: Decoders the memory model knows: ``"pillow"`` (any format), ``"simplejpeg"``
#: (8-bit JPEGs decoded straight into the frame buffer), ``"raw"`` (LibRaw).
DECODERS = ("pillow", "simplejpeg", "raw")

# libjpeg's own state while simplejpeg decodes (row buffers, Huffman tables).
_SIMPLEJPEG_SLACK = 2 * _MIB
# LibRaw's own state while it unpacks (its buffered file stream, tables,
# decoder rows), beside the raw image it allocates.
_LIBRAW_SLACK = 8 * _MIB


def decoder_for(formats, sample_dtype) -> str:
    """The decoder whose memory the model counts for a run's file formats.

    Parameters
    ----------
    formats : iterable of str
        The formats of the run's files as the probe names them (``"JPEG"``,
        ``"PNG"``, ``"RAW"`` ...).
    sample_dtype : dtype-like

    Returns
    -------
    str
        ``"simplejpeg"`` when every file is an 8-bit JPEG and simplejpeg is
        installed, ``"raw"`` when every file is a raw mosaic, else ``"pillow"``
        (the largest: a mix is counted at its most expensive decoder).
    """
    import importlib.util
    formats = {str(f).upper() for f in formats}
    if formats == {"JPEG"} and np.dtype(sample_dtype) == np.uint8 \
            and importlib.util.find_spec("simplejpeg") is not None:
        return "simplejpeg"
    if formats == {"RAW"}:
        return "raw"
    return "pillow"


def decode_bytes(shape, sample_dtype, decoder="pillow") -> int:
    """Memory of decoding one photo: its frame buffer and the decoder's transient (file excluded).

    Parameters
    ----------
    shape : tuple
        ``(height, width)`` or ``(height, width, channels)``.
    sample_dtype : dtype-like
        ``uint8`` or ``uint16``.
    decoder : str, optional
        One of ``DECODERS`` (see :func:`decoder_for`).

    Returns
    -------
    int

    Notes
    -----
    simplejpeg decodes into the frame buffer itself: the array and libjpeg's
    few MiB of state.  Pillow keeps RGB, RGBA and LA images at 4
    bytes per pixel and L at 1; 16-bit greyscale is ``I;16`` (2 bytes) in
    recent Pillow but ``I`` (4 bytes) in older ones, so 4 is assumed.
    Multi-channel 16-bit images come from raw or TIFF readers (LibRaw works
    on 4 x 16 bits per pixel): 8 bytes.  Converting to numpy goes through
    ``Image.tobytes()``, which joins a list of chunks: the chunks and the
    joined copy both live for a moment, hence twice the array (one of them
    the frame buffer).  Measured on a 6000 x 4000 image with Pillow 13: RGB
    JPEG 230 MiB over the baseline (model: 229 MiB), L JPEG 69 MiB (model:
    69 MiB), 16-bit greyscale PNG 183 MiB beside the file read whole (model:
    183 MiB; Pillow 13 keeps it as ``I;16``, 2 bytes, but its conversion to
    numpy holds one more copy); simplejpeg needs only the file and one array
    (82 MiB for the RGB JPEG, model 71 MiB + the file).  LibRaw (``"raw"``)
    unpacks a raw file into its own raw image, copied into the frame buffer:
    an uncompressed 6000 x 4000 DNG measured 91 MiB with the frame buffer
    (model: 105 MiB); it reads the file through a buffered stream, so no
    file is counted (see :func:`memory_model`).
    """
    h, w, c = _shape3(shape)
    dt = _sample_dtype(sample_dtype)
    if decoder not in DECODERS:
        raise HotPixelError(f"unknown decoder {decoder!r}; expected one of {', '.join(DECODERS)}")
    pixels = h * w
    frame = pixels * c * dt.itemsize
    if decoder == "simplejpeg":
        return frame + _SIMPLEJPEG_SLACK
    if decoder == "raw":
        # LibRaw unpacks into its raw image (the visible area plus the
        # masked margins, allowed 1/8 here), copied into the frame buffer
        return frame + frame + frame // 8 + _LIBRAW_SLACK
    if dt == np.uint8:
        per_pixel = 1 if c == 1 else 4
    else:
        per_pixel = 4 if c == 1 else 8
    return pixels * per_pixel + 2 * frame


def finish_threads(workers):
    """How the parent spreads the work after the workers over their CPUs:
    ``(detection threads, line test beside it)``.

    One worker: detection, then the line test, on one thread.  More: the
    line test (``lines.find_lines``) runs on a thread of its own beside
    detection, whose bands take the other ``workers - 1`` threads
    (``detect.detect``'s ``threads``).  Measured on 12 photos of 24 MP, 2
    workers, side by side: detection and line test 2.7-3.0 s one after the
    other, 2.4-2.5 s with detection's bands on two threads and the line
    test after, 1.9-2.1 s with the line test beside detection (issue 10).
    The results do not depend on it; the memory model counts both.
    """
    workers = max(1, int(workers))
    return max(1, workers - 1), workers > 1


def _result_bytes(shape, tier, workers=1):
    # float64 and float32 finish in place, in worker 0's segment (or the
    # serial accumulator); the others are finished band by band when read:
    # the reader's cache of bands is all they take (a cache for each of the
    # threads detection reads it on: as many as workers, issue 10).
    if tiers.finishes_in_place(tier):
        return 0
    return reader_cache_bytes(shape, tiers.result_dtype(tier), cache_bands_for(workers))


@dataclass(frozen=True)
class MemoryModel:
    """Every byte a run will hold at its peak, by part (see :func:`memory_model`).

    A run has two phases: *accumulate* (the workers decode and update; the
    parent waits, takes checkpoints) and *finish* (the workers are gone;
    the parent merges, detects, writes).  The planned peak is the larger.

    Attributes
    ----------
    workers : int
        Worker processes; 1 is the serial path in the parent process.
    tier : str
        Accumulator tier.
    bands : int
        Passes over the files, each accumulating one horizontal band (1: the
        whole frame in one pass).
    segment_bytes : int
        One accumulator (of one band's rows with band passes): a worker's
        shared-memory segment, or the serial path's private accumulator.
    decode_bytes : int
        Decoding: the frame buffers and the decoder's transient memory.
    file_bytes : int
        The largest compressed file, read whole.
    worker_scratch_bytes : int
        Temporaries of one accumulator update.
    worker_baseline_bytes : int
        The interpreter of one worker process (0 for the serial path).
    parent_baseline_bytes : int
        The parent interpreter before any image.
    kept_segments : int
        Accumulators still mapped while finishing: all of them when the
        result is finished band by band from them, else the one it was
        finished in.
    result_bytes : int
        Finished mean and variance the parent holds (the bands a reader
        keeps; 0 when the merge finishes them in place).
    merge_scratch_bytes : int
        Temporaries of the chunked merge and finalisation.
    detection_bytes : int
        Working set of defect detection and the modules it imports (0 when
        the run does not detect).
    checkpoint_bytes : int
        A periodic checkpoint's snapshot, merged while the workers wait.
    loaded_bytes : int
        Statistics loaded from files (``--load-stats``, ``--resume``), held
        from the start.
    loaded_merge_bytes : int
        Their merge with the new statistics (at the finish).
    extra_bytes : int
        Anything else the caller asked to count in the parent.
    batch : int
        K: photos each worker decodes into reused buffers and folds per
        accumulator pass.
    batch_bytes : int
        The K - 1 decoded photos a worker holds beside the one being decoded.
    """

    workers: int
    tier: str
    bands: int
    segment_bytes: int
    decode_bytes: int
    file_bytes: int
    worker_scratch_bytes: int
    worker_baseline_bytes: int
    parent_baseline_bytes: int
    kept_segments: int
    result_bytes: int
    merge_scratch_bytes: int
    detection_bytes: int
    checkpoint_bytes: int
    loaded_bytes: int
    loaded_merge_bytes: int
    extra_bytes: int
    batch: int = 1
    batch_bytes: int = 0
    #: of ``segment_bytes``: the temporal residual statistics (0 when not kept)
    residual_bytes: int = 0
    #: temporaries of their update in each worker (``residual.scratch_bytes``)
    residual_scratch_bytes: int = 0

    @property
    def shm_bytes_per_worker(self) -> int:
        """Shared memory of each worker (0 on the serial path: private memory)."""
        return self.segment_bytes if self.workers > 1 else 0

    @property
    def bytes_per_worker(self) -> int:
        """Everything one worker adds; on the serial path, what the work adds to the parent."""
        return (self.segment_bytes + self.decode_bytes + self.batch_bytes + self.file_bytes
                + self.worker_scratch_bytes + self.residual_scratch_bytes
                + self.worker_baseline_bytes)

    @property
    def accumulate_bytes(self) -> int:
        """The accumulate phase: the workers at work, the parent waiting (and checkpointing)."""
        return (self.workers * self.bytes_per_worker + self.parent_baseline_bytes
                + self.checkpoint_bytes + self.loaded_bytes + self.extra_bytes)

    @property
    def finish_bytes(self) -> int:
        """The finish phase: accumulators, merge, results, detection, in the parent alone."""
        return (self.kept_segments * self.segment_bytes + self.parent_baseline_bytes
                + self.merge_scratch_bytes + self.result_bytes + self.detection_bytes
                + self.loaded_bytes + self.loaded_merge_bytes + self.extra_bytes)

    @property
    def parent_bytes(self) -> int:
        """What the plan leaves for the parent beyond the workers: ``total - workers * per worker``."""
        return self.total_bytes - self.workers * self.bytes_per_worker

    @property
    def total_bytes(self) -> int:
        """The planned peak: the larger of the two phases."""
        return max(self.accumulate_bytes, self.finish_bytes)

    def parts(self) -> tuple:
        """The non-zero parts as ``(words, bytes)`` pairs, for ``--plan``."""
        per = "per worker" if self.workers > 1 else "in this process"
        rows = (
            (f"accumulator ({per})", self.segment_bytes - self.residual_bytes),
            (f"temporal residual statistics ({per})", self.residual_bytes),
            (f"decoding one photo ({per})", self.decode_bytes),
            (f"{self.batch - 1} more photo(s) of a batch ({per})", self.batch_bytes),
            (f"largest file read whole ({per})", self.file_bytes),
            (f"update scratch ({per})", self.worker_scratch_bytes),
            (f"residual update scratch ({per})", self.residual_scratch_bytes),
            ("worker interpreter (per worker)", self.worker_baseline_bytes),
            ("main interpreter", self.parent_baseline_bytes),
            ("finished mean and variance (bands read)", self.result_bytes),
            ("merge scratch", self.merge_scratch_bytes),
            ("detection", self.detection_bytes),
            ("checkpoint snapshot", self.checkpoint_bytes),
            ("loaded statistics", self.loaded_bytes),
            ("their merge with the new ones", self.loaded_merge_bytes),
            ("other", self.extra_bytes),
        )
        return tuple((words, int(b)) for words, b in rows if b)

    def to_dict(self) -> dict:
        """The parts and totals as JSON-ready built-in types.

        Returns
        -------
        dict
        """
        d = {k: (int(v) if isinstance(v, (int, np.integer)) else v) for k, v in asdict(self).items()}
        d.update(shm_bytes_per_worker=self.shm_bytes_per_worker, bytes_per_worker=self.bytes_per_worker,
                 accumulate_bytes=self.accumulate_bytes, finish_bytes=self.finish_bytes,
                 parent_bytes=self.parent_bytes, total_bytes=self.total_bytes)
        return d


def memory_model(shape, sample_dtype, tier, workers, *, max_file_bytes=0, extra_parent_bytes=0,
                 detection=False, checkpoints=False, loaded_dtype=None, decoder="pillow",
                 batch=1, bands=1, residual_bytes=0, residual_period=None) -> MemoryModel:
    """Planned peak memory of a run, by part: the one place that counts bytes.

    Parameters
    ----------
    shape : tuple
        ``(height, width)`` or ``(height, width, channels)`` of every image.
    sample_dtype : dtype-like
        ``uint8`` or ``uint16``.
    tier : str
        Accumulator tier, one of ``tiers.TIERS``.
    workers : int
        Worker processes; 1 means the serial path in the parent process.
    max_file_bytes : int, optional
        Size of the largest compressed file (read whole into memory; not
        counted for the ``"raw"`` decoder, which streams it).
    extra_parent_bytes : int, optional
        Anything else the parent holds that the model does not know about.
    detection : bool, optional
        The run detects defects (the command line always does).
    checkpoints : bool, optional
        The run takes periodic checkpoints (``--checkpoint-every`` or
        ``--checkpoint-seconds``).
    loaded_dtype : dtype-like, optional
        The dtype of statistics of the same shape loaded from a file
        (``--load-stats``, ``--resume``), None when nothing is loaded.
    decoder : str, optional
        See :func:`decoder_for` and :func:`decode_bytes`.
    batch : int, optional
        K, photos decoded per worker before one accumulator pass: K - 1
        decoded arrays beside the one being decoded.
    bands : int, optional
        Band passes (see :func:`band_height`).
    residual_bytes : int, optional
        The temporal residual accumulator (``hotpixel_shm.residual``) kept
        in each segment after the accumulator (0: none; not with band
        passes).  It is summed in place in one kept segment at the end; a
        checkpoint's snapshot copies it once.
    residual_period : int, optional
        Neighbour distance of those statistics (a raw mosaic's CFA period;
        default 2): with ``residual_bytes``, each worker also counts the
        temporaries of their update (``residual.scratch_bytes`` for the
        kernels in use and K).

    Returns
    -------
    MemoryModel

    Notes
    -----
    With ``values = height * width * channels``::

        segment    = accumulator_nbytes((band rows, width, channels), dtype, tier)
        worker     = segment + decode_bytes(shape, dtype, decoder)
                     + (batch - 1) * values * itemsize + max_file_bytes
                     + WORKER_SCRATCH_BYTES + residual scratch
                     (+ WORKER_BASELINE_BYTES for a worker process)
        accumulate = workers * worker + PARENT_BASELINE_BYTES
                     + checkpoint + loaded + extra
        finish     = kept * segment + PARENT_BASELINE_BYTES + MERGE_SCRATCH_BYTES
                     + results + detection + loaded + loaded merge + extra
        total      = max(accumulate, finish)

    ``kept`` is 1 for float64/float32 in one pass (the merge finishes in
    place, in worker 0's segment or the serial accumulator) and ``workers``
    for band passes and for exact and float16, whose results are finished band by band from the accumulators
    as detection, the picture and ``--save-stats`` read them (``results`` is
    then the bands a reader caches).  ``detection`` is
    ``hotpixel_shm.detect.detect_memory_bytes(shape)``, ``checkpoint`` the
    bands a reader keeps (a snapshot is read band by band while the workers
    wait; twice with loaded statistics, merged band by band), ``loaded`` the
    loaded arrays and ``loaded merge`` their merge with the new statistics:
    2 * values * 8 when those are finished in place, else the bands a reader
    keeps.  With band passes (``bands > 1``) each pass's band is written to a
    file as it is finished and read back band by band: ``results`` is the
    bands a reader keeps, whatever the tier.  Decoding is always of whole
    frames.  Within a phase every part is counted at its peak as if all peaks
    coincided.
    """
    h, w, c = _shape3(shape)
    dt = _sample_dtype(sample_dtype)
    _check_tier(tier)
    workers = int(workers)
    if workers < 1:
        raise HotPixelError(f"workers must be at least 1, got {workers}")
    if max_file_bytes < 0 or extra_parent_bytes < 0:
        raise HotPixelError("max_file_bytes and extra_parent_bytes must not be negative")
    if not 1 <= int(batch) <= MAX_BATCH:
        raise HotPixelError(f"batch must be 1 to {MAX_BATCH} photos, got {batch}")
    bands = int(bands)
    if not 1 <= bands <= h:
        raise HotPixelError(f"bands must be 1 to {h} (the rows), got {bands}")
    # the passes the engine makes: bands of equal height, rounded up, may be
    # fewer than asked (4000 rows in 124 bands are 122 passes of 33 rows)
    bands = len(band_rows(h, bands))
    values = h * w * c
    float64_pair = 2 * values * 8
    detect_bytes = 0
    if detection:
        from .detect import detect_memory_bytes   # scipy: only when asked
        # detection's bands on threads, the line test beside it (issue 10)
        threads, beside = finish_threads(workers)
        detect_bytes = detect_memory_bytes((h, w, c), threads=threads) + _FINISH_IMPORTS_BYTES
        if beside:
            # the line test, then the residual test on the same thread,
            # beside detection's bands (issue 10)
            from .lines import lines_memory_bytes
            from .temporal import temporal_memory_bytes
            detect_bytes += max(lines_memory_bytes((h, w, c)), temporal_memory_bytes((h, w, c)))
        if decoder == "raw":
            # a mosaic is judged with its frame-sized CFA index array and
            # mask of clipped photosites (one byte per photosite each); read
            # band by band, the rows it reads cost about one byte more per
            # photosite (6000 x 4000 DNGs, exact tier, one worker: finish
            # measured 676 MiB, planned 683 MiB)
            band_read = bands > 1 or not tiers.finishes_in_place(tier)
            detect_bytes += (3 if band_read else 2) * h * w
    loaded = 0 if loaded_dtype is None else 2 * values * np.dtype(loaded_dtype).itemsize
    bands_read = reader_cache_bytes((h, w, c), tiers.result_dtype(tier))
    # a checkpoint's snapshot is read band by band while the workers wait
    # (and merged band by band with loaded statistics)
    checkpoint = 0 if not checkpoints else bands_read * (2 if loaded_dtype is not None else 1)
    # loaded statistics merged with statistics read band by band are merged
    # band by band; with a result finished in place, into new float64 arrays
    loaded_merge = 0
    if loaded_dtype is not None:
        loaded_merge = _LOADED_MERGE_SCRATCH + (float64_pair if tiers.finishes_in_place(tier)
                                                else bands_read)
    return MemoryModel(
        workers=workers, tier=tier, bands=bands,
        segment_bytes=accumulator_nbytes((band_height(h, bands), w, c), dt, tier)
        + int(residual_bytes),
        decode_bytes=decode_bytes((h, w, c), dt, decoder),
        # LibRaw streams the file (see decode_bytes); the others read it whole
        file_bytes=0 if decoder == "raw" else int(max_file_bytes),
        worker_scratch_bytes=WORKER_SCRATCH_BYTES,
        worker_baseline_bytes=WORKER_BASELINE_BYTES if workers > 1 else 0,
        parent_baseline_bytes=PARENT_BASELINE_BYTES,
        # a band pass keeps every accumulator until its rows are written
        # (a checkpoint of it saves them as they are: never merged in place)
        kept_segments=1 if tiers.finishes_in_place(tier) and bands == 1 else workers,
        result_bytes=_result_bytes((h, w, c), tier, workers) if bands == 1 else bands_read,
        merge_scratch_bytes=MERGE_SCRATCH_BYTES,
        detection_bytes=detect_bytes,
        checkpoint_bytes=checkpoint + (int(residual_bytes) if checkpoints else 0),
        loaded_bytes=loaded,
        loaded_merge_bytes=loaded_merge,
        extra_bytes=int(extra_parent_bytes),
        batch=int(batch),
        batch_bytes=(int(batch) - 1) * values * dt.itemsize,
        residual_bytes=int(residual_bytes),
        residual_scratch_bytes=_residual_scratch((h, w, c), batch, residual_period)
        if residual_bytes else 0)


def _residual_scratch(shape, batch, period):
    """Temporaries of a worker's residual update, for the kernels in use."""
    from . import kernels
    from .residual import residual_layout, scratch_bytes
    return scratch_bytes(residual_layout(shape, period), int(batch),
                         compiled=kernels.NAME == "compiled")


#: The smallest band a pass accumulates: one row of detection's tiles.
MIN_BAND_ROWS = 32


def band_height(height, bands) -> int:
    """Rows of the tallest band when a frame of ``height`` rows is split in
    ``bands`` passes (the first of ``bands.band_rows``, which the engine runs)."""
    y0, y1 = band_rows(height, bands)[0]
    return y1 - y0


def max_bands(height) -> int:
    """Most band passes the planner considers: bands of ``MIN_BAND_ROWS`` rows."""
    return max(1, -(-int(height) // MIN_BAND_ROWS))


def run_budget(resources, memory_budget=None) -> int:
    """The memory budget of a run: the one the user gave, or the default.

    Parameters
    ----------
    resources : Resources
        From :func:`detect_resources`.
    memory_budget : str or int, optional
        ``--memory-budget`` (text such as ``"1.5G"``, or bytes); None for the
        default, :meth:`Resources.default_budget`.

    Returns
    -------
    int
        Bytes.
    """
    if memory_budget is None or memory_budget == "":
        return resources.default_budget()
    if isinstance(memory_budget, str):
        return parse_size(memory_budget)
    return int(memory_budget)


# ---------------------------------------------------------------------- plan

_TIER_WORDS = {
    "exact": "exact (integer sums)",
    "float64": "float64 (double precision)",
    "float32": "float32 (single precision)",
    "float16": "float16 (half precision, compact)",
}


@dataclass(frozen=True)
class Candidate:
    """One plan the planner considered, for the table of ``--plan``.

    Attributes
    ----------
    workers : int
    tier : str
    total_bytes : int
        Its planned peak (0 when the tier is not offered for the sample dtype).
    verdict : str
        ``"chosen"``, ``"fits"`` (a less preferred plan that fits too), or
        why it was not taken.
    """

    workers: int
    tier: str
    total_bytes: int
    verdict: str
    bands: int = 1


@dataclass(frozen=True)
class Plan:
    """How the run will use the machine: worker count, accumulator tier, memory.

    Attributes
    ----------
    workers : int
        Worker processes; 1 is the serial path in the parent process.
    tier : str
        Accumulator tier (``tiers.TIERS``).
    sample_dtype : str
        ``"uint8"`` or ``"uint16"``.
    shape : tuple
        ``(height, width, channels)``.
    n_files : int
        Photos to read.
    images_per_worker : int
        ``ceil(n_files / workers)``; the engine caps each worker at
        ``tiers.max_images(tier, sample_dtype)``.
    shm_bytes_per_worker, bytes_per_worker, parent_bytes, total_bytes : int
        As in :attr:`memory`.
    budget_bytes : int
        The memory budget the plan was made for.
    reasons : tuple of str
        Why this plan, one sentence each.
    memory : MemoryModel
        The planned bytes, part by part.
    candidates : tuple of Candidate
        The plans considered, most preferred first, up to the chosen one
        (when a forced plan exceeds the budget: all of them).
    bands : int
        Passes over the photos, each accumulating one horizontal band of
        rows (1: one pass).
    batch : int
        K: photos each worker decodes and folds per accumulator pass.
    """

    workers: int
    tier: str
    sample_dtype: str
    shape: tuple
    n_files: int
    images_per_worker: int
    shm_bytes_per_worker: int
    bytes_per_worker: int
    parent_bytes: int
    total_bytes: int
    budget_bytes: int
    reasons: tuple
    memory: MemoryModel = field(default=None, compare=False, repr=False)
    candidates: tuple = field(default=(), compare=False, repr=False)
    bands: int = 1
    batch: int = 1
    #: neighbour distance of the temporal residual statistics the run keeps
    #: (``engine.Job.residual_period``); None: not kept
    residual_period: Optional[int] = None

    @property
    def fits(self) -> bool:
        """Whether the planned peak is within the budget."""
        return self.total_bytes <= self.budget_bytes

    def describe(self) -> str:
        """Multi-line text for the console and ``--plan``.

        Returns
        -------
        str
        """
        h, w, c = self.shape
        bits = 8 if self.sample_dtype == "uint8" else 16
        procs = "serial, in this process" if self.workers == 1 else f"{self.workers} worker processes"
        passes = "" if self.bands == 1 else f"; {self.bands} band passes"
        lines = [
            f"Plan: {self.n_files} photo(s) of {w} x {h} pixels, {c} channel(s), {bits}-bit; "
            f"{procs}; {_TIER_WORDS[self.tier]} accumulators{passes}; "
            f"{self.batch} photo(s) folded per accumulator pass",
        ]
        if self.workers > 1:
            lines += [
                f"  shared memory per worker : {format_bytes(self.shm_bytes_per_worker)}",
                f"  memory per worker        : {format_bytes(self.bytes_per_worker)}"
                " (accumulator, interpreter, decoding one photo)",
            ]
        else:
            lines.append(f"  accumulator and decoding : {format_bytes(self.bytes_per_worker)}")
        lines += [
            f"  main process             : {format_bytes(self.parent_bytes)}",
            f"  planned peak             : {format_bytes(self.total_bytes)} of a "
            f"{format_bytes(self.budget_bytes)} budget",
        ]
        if self.memory is not None:
            lines.append("Memory, part by part:")
            lines += [f"  {words:<40s} {format_bytes(b):>10s}" for words, b in self.memory.parts()]
        if len(self.candidates) > 1:
            lines.append("Plans considered (most preferred first):")
            lines.append(f"  {'workers':>7s}  {'tier':<8s} {'bands':>5s} {'planned':>10s}  verdict")
            for cand in self.candidates:
                planned = format_bytes(cand.total_bytes) if cand.total_bytes else "-"
                lines.append(f"  {cand.workers:>7d}  {cand.tier:<8s} {cand.bands:>5d} {planned:>10s}  "
                             f"{cand.verdict}")
        lines.append("Why:")
        lines += [f"  - {r}" for r in self.reasons]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The plan as JSON-ready built-in types.

        Returns
        -------
        dict
        """
        return {
            "workers": self.workers, "tier": self.tier, "sample_dtype": self.sample_dtype,
            "shape": list(self.shape), "n_files": self.n_files,
            "images_per_worker": self.images_per_worker,
            "shm_bytes_per_worker": self.shm_bytes_per_worker,
            "bytes_per_worker": self.bytes_per_worker, "parent_bytes": self.parent_bytes,
            "total_bytes": self.total_bytes, "budget_bytes": self.budget_bytes,
            "reasons": list(self.reasons),
            "memory": None if self.memory is None else self.memory.to_dict(),
            "candidates": [asdict(cand) for cand in self.candidates],
            "bands": self.bands,
            "batch": self.batch,
        }


@dataclass(frozen=True)
class _Option:
    """A (workers, tier) pair under evaluation."""

    workers: int
    tier: str
    per_worker_images: int
    model: Optional[MemoryModel]      # None: the tier is not offered for the dtype
    shm_ok: bool

    @property
    def total(self):
        return 0 if self.model is None else self.model.total_bytes

    @property
    def segment(self):
        return 0 if self.model is None else self.model.segment_bytes


def _why_not(opt, dt, budget, shm_free_bytes):
    """Why an option was not taken, in words."""
    bits = 8 * dt.itemsize
    if not tiers.supports(opt.tier, dt):
        return f"not offered for {bits}-bit photos"
    limit = tiers.max_images(opt.tier, dt)
    if opt.per_worker_images > limit:
        return (f"it stays accurate for at most {limit} photos per worker process, "
                f"this run has {opt.per_worker_images} per worker")
    if not opt.shm_ok:
        return (f"{opt.workers} workers would need {opt.workers} x {format_bytes(opt.segment)} "
                f"of shared memory, only {format_bytes(shm_free_bytes)} is free")
    return f"it would need {format_bytes(opt.total)}, over the {format_bytes(budget)} budget"


def _check_plan_args(n_files, cpus, budget_bytes, workers, tier):
    n_files, cpus, budget = int(n_files), int(cpus), int(budget_bytes)
    if n_files < 0:
        raise HotPixelError(f"n_files must not be negative, got {n_files}")
    if cpus < 1:
        raise HotPixelError(f"cpus must be at least 1, got {cpus}")
    if budget <= 0:
        raise HotPixelError(f"the memory budget must be positive, got {budget}")
    if workers is not None and int(workers) < 1:
        raise HotPixelError(f"workers must be at least 1, got {workers}")
    if tier is not None:
        _check_tier(tier)
    return n_files, cpus, budget


def _worker_counts(workers, cpus, n_files):
    """The worker counts to try, most preferred first, and what to say about them.

    Returns ``(counts, reasons, first_reason)``: ``reasons`` apply whatever is
    chosen, ``first_reason`` (None for a count the user gave) goes after them.
    """
    if workers is None:
        top = max(1, min(cpus, n_files))
        if n_files < cpus:
            first = f"at most {top} worker process(es): {cpus} CPUs usable but only {n_files} photo(s)"
        else:
            first = f"up to {top} worker process(es): {cpus} CPU(s) usable for {n_files} photos"
        return list(range(top, 0, -1)), [], first
    asked = count = int(workers)
    reasons = []
    if asked > max(1, n_files):
        count = max(1, n_files)
        reasons.append(f"{asked} workers were asked for but there are only {n_files} photo(s): "
                       f"using {count}")
    elif asked > cpus:
        reasons.append(f"{asked} workers as asked, on {cpus} CPU(s): they will share the cores")
    return [count], reasons, None


def _tier_list(tier, dt):
    """The tiers to try, most accurate first."""
    if tier is None:
        return list(tiers.ACCURACY_ORDER)
    if not tiers.supports(tier, dt):
        bits = 8 * dt.itemsize
        raise PlanError(
            f"the {tier} tier is not offered for {bits}-bit photos: float16 has an 11-bit "
            f"significand and cannot hold {bits}-bit values exactly; choose float32 or better")
    return [tier]


def _options(dims, dt, n_files, counts, tier_list, shm_free_bytes, model_kwargs):
    """Every (workers, tier) option with its memory model, most preferred first."""
    out = []
    for k in counts:
        per = -(-n_files // k)
        for t in tier_list:
            if not tiers.supports(t, dt):
                out.append(_Option(k, t, per, None, True))
                continue
            model = memory_model(dims, dt, t, k, **model_kwargs)
            shm_ok = shm_free_bytes is None or k == 1 or k * model.segment_bytes <= shm_free_bytes
            out.append(_Option(k, t, per, model, shm_ok))
    return out


def _runnable(o, dt):
    """Whether option ``o`` may run: modelled, accurate for its photos per
    worker, and its segments fit the shared memory (budget aside)."""
    return o.model is not None and o.shm_ok and o.per_worker_images <= tiers.max_images(o.tier, dt)


def _choose(options, dt, n_files, budget, force, shm_free_bytes, more_bands=None, max_b=1):
    """The first option that is accurate, fits the shared memory and the budget.

    ``more_bands(b)``, when given, makes the options of ``b`` band passes,
    tried for ``b = 2 .. max_b`` when nothing fits in one pass.  Returns
    ``(chosen, usable, over, considered)``; raises PlanError when none may run.
    """
    valid = [o for o in options if o.model is not None
             and o.per_worker_images <= tiers.max_images(o.tier, dt)]
    if not valid:
        o = options[0]
        limit = tiers.max_images(o.tier, dt)
        raise PlanError(
            f"the {o.tier} tier stays accurate for at most {limit} photos per worker process, but "
            f"{n_files} photos over {o.workers} worker(s) is {o.per_worker_images} per worker; "
            f"use more workers or a tier that allows more photos (float64)")
    usable = [o for o in valid if o.shm_ok]
    if not usable:
        o = valid[-1]
        raise PlanError(
            f"the shared memory cannot hold the accumulators: {o.workers} workers x "
            f"{format_bytes(o.segment)} = {format_bytes(o.workers * o.segment)} needed, "
            f"{format_bytes(shm_free_bytes)} free; use fewer workers, or enlarge /dev/shm")
    fitting = [o for o in usable if o.total <= budget]
    if fitting:
        return fitting[0], usable, False, options
    tried = options
    if more_bands is not None:
        # nothing fits in one pass: the fewest band passes that fit
        for b in range(2, max_b + 1):
            opts = more_bands(b)
            fit = [o for o in opts if _runnable(o, dt) and o.total <= budget]
            if fit:
                return fit[0], usable, False, options + opts
            tried = opts
        usable = [o for o in tried if _runnable(o, dt)] or usable
    smallest = min(usable, key=lambda o: o.total)
    if force:  # the considered plans include the band passes ``smallest`` may come from
        return smallest, usable, True, options if tried is options else options + tried
    bands = smallest.model.bands
    how = (f"even in {bands} band passes, the smallest plan "
           if bands > 1 else "the smallest plan ")
    raise PlanError(
        f"no plan fits the memory budget: {how}({smallest.workers} worker(s), "
        f"{smallest.tier} accumulators) needs {format_bytes(smallest.total)} "
        f"({smallest.total} bytes) and the budget is {format_bytes(budget)} ({budget} bytes). "
        f"Raise --memory-budget if the machine has the memory, or use photos of lower "
        f"resolution")


def _explain(chosen, options, usable, over, *, dt, budget, counts, workers, tier, shm_free_bytes):
    """Why the chosen option, one sentence each."""
    reasons = []
    bpv = tiers.bytes_per_value(chosen.tier, dt)
    tier_text = f"{_TIER_WORDS[chosen.tier]} accumulators ({bpv} bytes per subpixel)"
    if over and len(usable) > 1:
        reasons.append(f"{chosen.workers} worker(s) and {tier_text}: the smallest plan allowed, "
                       f"since none fits the budget")
    elif over:
        reasons.append(f"{chosen.workers} worker(s) and {tier_text}, as asked")
    else:
        if workers is None and chosen.workers < counts[0]:
            more = [o for o in usable if o.workers > chosen.workers]
            if more:
                smallest = min(more, key=lambda o: o.total)
                reasons.append(
                    f"{chosen.workers} worker(s) instead of {counts[0]}: with more, even the smallest accurate "
                    f"plan ({smallest.workers} workers, {smallest.tier}) needs "
                    f"{format_bytes(smallest.total)}, over the {format_bytes(budget)} budget")
            else:
                reasons.append(f"{chosen.workers} worker(s) instead of {counts[0]}: with more, no "
                               f"accumulator fits the shared memory or its accuracy limit")
        if tier is not None:
            reasons.append(f"{tier_text}, as asked")
        else:
            order = tiers.ACCURACY_ORDER
            skipped = [o for o in options if o.workers == chosen.workers
                       and (o.model is None or o.model.bands == chosen.model.bands)
                       and order.index(o.tier) < order.index(chosen.tier)]
            if not skipped:
                reasons.append(f"{tier_text}: the most accurate tier, and it fits")
            else:
                reasons.append(f"{tier_text}: the most accurate tier that fits")
                for o in skipped:
                    reasons.append(f"not {o.tier}: " + _why_not(o, dt, budget, shm_free_bytes))
    if chosen.workers > 1:
        limit = tiers.max_images(chosen.tier, dt)
        reasons.append(
            f"each worker adds up to {chosen.per_worker_images} photo(s)"
            + (f" (at most {limit} keep {chosen.tier} accurate)" if limit < 10 ** 6 else "")
            + f" into its own {format_bytes(chosen.segment)} shared-memory accumulator")
        if shm_free_bytes is not None:
            reasons.append(f"shared memory: {chosen.workers} x {format_bytes(chosen.segment)} of "
                           f"{format_bytes(shm_free_bytes)} free")
    else:
        reasons.append("one process does all the work (serial path): no shared memory, no second interpreter")
    reasons.append(_peak_reason(chosen.total, budget, over))
    return reasons


def _peak_reason(total, budget, over):
    if over:
        return (f"EXCEEDS THE BUDGET by {format_bytes(total - budget)}: planned "
                f"{format_bytes(total)}, budget {format_bytes(budget)} (forced)")
    return f"planned peak {format_bytes(total)} of the {format_bytes(budget)} budget"


def _candidates(options, chosen, dt, budget, shm_free_bytes, chosen_total):
    """The options as the table of ``--plan`` shows them: the ones tried before
    the chosen one, and the chosen one (the rest were never needed)."""
    rows = []
    for o in options[:options.index(chosen) + 1] if chosen in options else options:
        if o is chosen:
            verdict = "chosen"
        elif o.model is not None and o.shm_ok and o.per_worker_images <= tiers.max_images(o.tier, dt) \
                and o.total <= budget:
            verdict = "fits"
        elif o.model is not None and o.shm_ok and o.per_worker_images <= tiers.max_images(o.tier, dt):
            verdict = "over the budget"
        else:
            verdict = _why_not(o, dt, budget, shm_free_bytes)
        rows.append(Candidate(o.workers, o.tier, chosen_total if o is chosen else o.total, verdict,
                              1 if o.model is None else o.model.bands))
    return tuple(rows)


def make_plan(shape, sample_dtype, n_files, cpus, budget_bytes, *, workers=None, tier=None, force=False,
              max_file_bytes=0, shm_free_bytes=None, extra_parent_bytes=0, detection=False,
              checkpoints=False, loaded_dtype=None, decoder="pillow", batch=None, bands=None,
              residual_bytes=0, residual_period=None) -> Plan:
    """Choose the worker count, accumulator tier, batch size and band passes that fit the memory budget.

    Parameters
    ----------
    shape : tuple
        ``(height, width)`` or ``(height, width, channels)`` of the photos.
    sample_dtype : dtype-like
        ``uint8`` or ``uint16``.
    n_files : int
        Number of photos.
    cpus : int
        Usable CPUs (:func:`usable_cpus`).
    budget_bytes : int
        Memory the run may take.
    workers : int, optional
        Worker count asked for by the user; chosen automatically when None.
    tier : str, optional
        Accumulator tier asked for by the user; chosen automatically when None.
    force : bool, optional
        Return a plan even when it exceeds ``budget_bytes`` (the smallest
        one that respects the other constraints), with a reason saying so.
    max_file_bytes, extra_parent_bytes, detection, checkpoints, loaded_dtype, decoder : optional
        What else the run holds; see :func:`memory_model`.
    batch : int, optional
        K, photos each worker decodes before one accumulator pass; chosen
        when None (see Notes).
    shm_free_bytes : int, optional
        Free shared memory; the segments of all workers must fit in it.
    bands : int, optional
        Band passes asked for by the user (``--bands``); None: one pass, or
        the fewest band passes that fit when nothing fits in one.
    residual_bytes : int, optional
        The temporal residual accumulator in each segment (see
        :func:`memory_model`); whether to keep it is the caller's choice
        (``pipeline.plan_group`` keeps it only when it costs no worker, no
        tier and no band pass).
    residual_period : int, optional
        Their neighbour distance (see :func:`memory_model`).

    Returns
    -------
    Plan

    Raises
    ------
    PlanError
        When the requested tier is not offered for the sample dtype or does
        not stay accurate for that many photos per worker, when the shared
        memory does not hold the segments, or when no plan fits the budget
        and ``force`` is false (the message gives the bytes the smallest plan
        needs and the budget).
    HotPixelError
        On invalid arguments.

    Notes
    -----
    Automatic choice: ``workers = min(cpus, n_files)`` (at least 1); then the
    most accurate tier of ``tiers.ACCURACY_ORDER`` that is offered for the
    dtype, whose ``tiers.max_images`` covers ``ceil(n_files / workers)`` and
    whose total fits the budget and the shared memory; if none does, the same
    with one worker fewer, down to 1.  Parallelism is given up before
    accuracy only when no tier fits at all.  A worker count or tier given by
    the user is kept; more workers than photos is reduced to the photo count.
    ``force`` never overrides the accuracy limits (results would be wrong) nor
    the shared-memory space (a worker touching a page beyond it is killed by
    SIGBUS); it only lets a plan exceed the budget.

    When nothing fits in one pass, the same order is tried with 2, 3, ...
    band passes (each accumulating one horizontal band of the frame; every
    photo is decoded once per pass), down to bands of ``MIN_BAND_ROWS``
    rows; the fewest passes that fit win.

    The batch K comes last, from what the budget leaves: the largest K up to
    ``DEFAULT_BATCH`` (and up to the photos per worker) whose K - 1 extra
    decoded photos per worker still fit; 1 when nothing is left.  It never
    costs a worker, a tier or a band pass.
    """
    dims = _shape3(shape)
    dt = _sample_dtype(sample_dtype)
    n_files, cpus, budget = _check_plan_args(n_files, cpus, budget_bytes, workers, tier)
    counts, reasons, first_reason = _worker_counts(workers, cpus, n_files)
    tier_list = _tier_list(tier, dt)
    model_kwargs = dict(max_file_bytes=max_file_bytes, extra_parent_bytes=extra_parent_bytes,
                        detection=detection, checkpoints=checkpoints, loaded_dtype=loaded_dtype,
                        decoder=decoder, bands=1 if bands is None else int(bands),
                        residual_bytes=residual_bytes, residual_period=residual_period)
    options = _options(dims, dt, n_files, counts, tier_list, shm_free_bytes, model_kwargs)

    def more_bands(b):
        return _options(dims, dt, n_files, counts, tier_list, shm_free_bytes, {**model_kwargs, "bands": b})
    chosen, usable, over, options = _choose(options, dt, n_files, budget, force, shm_free_bytes,
                                            more_bands if bands is None else None, max_bands(dims[0]))
    if first_reason is not None:
        reasons.append(first_reason)
    reasons += _explain(chosen, options, usable, over, dt=dt, budget=budget, counts=counts,
                        workers=workers, tier=tier, shm_free_bytes=shm_free_bytes)
    kwargs = {**model_kwargs, "bands": chosen.model.bands}
    k = _batch(chosen, batch, budget, over, dims, dt, kwargs)
    m = memory_model(dims, dt, chosen.tier, chosen.workers, batch=k, **kwargs)
    # the peak said among the reasons is the plan's, K's photos included
    reasons = [_peak_reason(m.total_bytes, budget, over)
               if r == _peak_reason(chosen.total, budget, over) else r for r in reasons]
    if k > 1:
        reasons.append(f"{k} photos decoded per worker, then folded in one pass over its "
                       f"accumulator ({k - 1} more decoded photo(s) per worker)")
    if m.bands > 1:
        rows = band_height(dims[0], m.bands)
        reasons.insert(len(reasons) - 1, (
            f"{m.bands} band passes" + (": nothing fits the budget in one pass" if bands is None
                                        else " as asked" if int(bands) == m.bands else
                                        f" (--bands {bands} in bands of equal height)")
            + f": each pass reads all {n_files} photo(s) and accumulates a band of {rows} rows "
            f"({format_bytes(m.segment_bytes)} accumulator); every photo is decoded {m.bands} "
            f"times, so the run takes about {m.bands} times as long as one pass"))
    return Plan(
        workers=chosen.workers, tier=chosen.tier, sample_dtype=dt.name, shape=dims,
        n_files=n_files, images_per_worker=chosen.per_worker_images,
        shm_bytes_per_worker=m.shm_bytes_per_worker, bytes_per_worker=m.bytes_per_worker,
        parent_bytes=m.parent_bytes, total_bytes=m.total_bytes, budget_bytes=budget,
        reasons=tuple(reasons), memory=m, bands=m.bands, batch=k,
        candidates=_candidates(options, chosen, dt, budget, shm_free_bytes, m.total_bytes))


def _batch(chosen, batch, budget, over, dims, dt, model_kwargs):
    """K for the chosen workers and tier: as asked, or the largest that fits."""
    if batch is not None:
        k = int(batch)
        if not 1 <= k <= MAX_BATCH:
            raise HotPixelError(f"batch must be 1 to {MAX_BATCH} photos, got {batch}")
        return k
    if over:
        return 1
    for k in range(max(1, min(DEFAULT_BATCH, chosen.per_worker_images)), 1, -1):
        if memory_model(dims, dt, chosen.tier, chosen.workers, batch=k,
                        **model_kwargs).total_bytes <= budget:
            return k
    return 1
