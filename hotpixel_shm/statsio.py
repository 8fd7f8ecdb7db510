"""Save and load finished statistics (``--save-stats``, ``--load-stats``,
checkpoints), safely: no pickle, every key, shape and dtype validated.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from . import __version__
from .errors import HotPixelError
from .model import Stats
from .tiers import TIERS

__all__ = ["save_stats", "load_stats", "STATS_KEYS"]

#: keys every statistics file holds
STATS_KEYS = ("n", "mean", "var", "shape", "tier", "dtype", "files", "version")


def save_stats(path, stats: Stats, sample_dtype: str, *, extra_files=()) -> None:
    """Write ``stats`` to ``path`` (.npz) atomically.

    The file holds ``n`` (0-d int64: every subpixel has seen the same number
    of images), ``mean`` and ``var`` (height x width x channels, population
    variance), ``shape``, ``tier``, ``dtype`` (of the input samples), ``files``
    (the images used) and ``version``.  It loads with
    ``numpy.load(path, allow_pickle=False)``.
    """
    from .export import atomic_write

    files = [os.fsdecode(f) for f in list(stats.files) + list(extra_files)]
    arrays = {
        "n": np.asarray(stats.n, dtype=np.int64),
        "mean": stats.mean,
        "var": stats.var,
        "shape": np.asarray(stats.mean.shape, dtype=np.int64),
        "tier": np.asarray(stats.tier),
        "dtype": np.asarray(str(np.dtype(sample_dtype))),
        "files": np.asarray(files if files else np.zeros(0, "U1")),
        "version": np.asarray(__version__),
    }
    atomic_write(path, lambda fh: np.savez(fh, **arrays), mode="wb")


def load_stats(path):
    """Read a statistics file written by :func:`save_stats`.

    Returns
    -------
    stats : Stats
    sample_dtype : str

    Raises
    ------
    HotPixelError
        Not such a file, or any key, shape or dtype is wrong.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in STATS_KEYS if k not in z.files]
            if missing:
                raise HotPixelError(f"{path}: not a hotpixel_shm statistics file "
                                    f"(missing {', '.join(missing)})")
            data = {k: z[k] for k in STATS_KEYS}
    except HotPixelError:
        raise
    except FileNotFoundError:
        raise HotPixelError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise HotPixelError(f"{path}: cannot read statistics: {exc}") from None
    n = data["n"]
    if n.shape != () or n.dtype.kind not in "iu" or int(n) < 1:
        raise HotPixelError(f"{path}: invalid image count")
    shape = tuple(int(v) for v in data["shape"])
    if len(shape) != 3 or min(shape) < 1:
        raise HotPixelError(f"{path}: invalid shape {shape}")
    for key in ("mean", "var"):
        a = data[key]
        if a.shape != shape or a.dtype not in (np.float32, np.float64):
            raise HotPixelError(f"{path}: {key} has shape {a.shape} and dtype {a.dtype}, "
                                f"expected {shape} float")
    tier = str(data["tier"])
    if tier not in TIERS:
        raise HotPixelError(f"{path}: unknown tier {tier!r}")
    dtype = str(data["dtype"])
    if dtype not in ("uint8", "uint16"):
        raise HotPixelError(f"{path}: unknown sample dtype {dtype!r}")
    files = data["files"]
    if files.dtype.kind != "U" or files.ndim != 1:
        raise HotPixelError(f"{path}: invalid file list")
    if not (np.all(np.isfinite(data["mean"])) and np.all(data["var"] >= 0)):
        raise HotPixelError(f"{path}: mean or variance holds invalid values")
    stats = Stats(n=int(n), mean=data["mean"], var=data["var"], tier=tier,
                  files=[str(f) for f in files])
    return stats, dtype
