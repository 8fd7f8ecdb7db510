"""Save and load finished statistics (``--save-stats``, ``--load-stats``,
checkpoints), safely: no pickle, every key, shape and dtype validated.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from . import __version__
from .errors import HotPixelError
from .model import Mosaic, Stats
from .tiers import TIERS

__all__ = ["save_stats", "load_stats", "BandFile", "STATS_KEYS", "MOSAIC_KEYS", "CAMERA_KEY",
           "RESIDUAL_KEY"]

#: keys every statistics file holds
STATS_KEYS = ("n", "mean", "var", "shape", "tier", "dtype", "files", "version")
#: keys of statistics of a raw mosaic (absent in photos' files and in older
#: files; those load with ``Stats.mosaic`` None)
MOSAIC_KEYS = ("cfa_tile", "colour_desc", "white_level")
#: the camera body: make, model, serial ("" when unknown; absent in older files)
CAMERA_KEY = "camera"
#: present when the file holds temporal residual statistics: their neighbour
#: distance; the planes are ``residual_mean_K`` and ``residual_var_K`` (float32)
RESIDUAL_KEY = "residual_period"


def save_stats(path, stats: Stats, sample_dtype: str = None, *, extra_files=()) -> None:
    """Write ``stats`` to ``path`` (.npz) atomically, mean and variance band by band.

    The file holds ``n`` (0-d int64: every subpixel has seen the same number
    of images), ``mean`` and ``var`` (height x width x channels, population
    variance, float64 for the exact and float64 tiers, float32 otherwise),
    ``shape``, ``tier``, ``dtype`` (of the input samples:
    ``sample_dtype``, default ``stats.sample_dtype``), ``files`` (the images
    used) and ``version``; for a raw mosaic also ``cfa_tile`` (uint8 colour
    indices of the repeating tile), ``colour_desc`` and ``white_level`` (-1
    when unknown); ``camera`` (make, model, serial; "" for unknown) when the
    body is known; ``residual_period`` and the float32 planes
    ``residual_mean_K``, ``residual_var_K`` when the statistics carry
    temporal residual statistics (files without them load, and detect with
    the mean/variance tests only).  It loads with ``numpy.load(path,
    allow_pickle=False)``.

    Notes
    -----
    ``mean`` and ``var`` are written as ``.npy`` members of an uncompressed
    zip (what ``numpy.savez`` writes), but a band of rows at a time from
    ``stats.bands()``: statistics finished band by band from a run's
    accumulators are never held whole in memory.
    """
    from .export import atomic_write

    sample_dtype = sample_dtype or stats.sample_dtype
    if not sample_dtype:
        raise HotPixelError("statistics without a sample dtype cannot be saved")
    files = [os.fsdecode(f) for f in list(stats.files) + list(extra_files)]
    shape = tuple(int(v) for v in stats.shape)
    dtype = np.dtype(stats.mean.dtype)
    small = {
        "n": np.asarray(stats.n, dtype=np.int64),
        "shape": np.asarray(shape, dtype=np.int64),
        "tier": np.asarray(stats.tier),
        "dtype": np.asarray(str(np.dtype(sample_dtype))),
        "files": np.asarray(files if files else np.zeros(0, "U1")),
        "version": np.asarray(__version__),
    }
    if stats.camera is not None:
        small[CAMERA_KEY] = np.asarray([stats.camera.make or "", stats.camera.model or "",
                                         stats.camera.serial or ""])
    res = getattr(stats, "residuals", None)
    if res is not None and res.n == stats.n:
        small[RESIDUAL_KEY] = np.asarray(res.layout.reach, dtype=np.int64)
        for k, (m, v) in enumerate(zip(res.mean, res.var)):
            small[f"residual_mean_{k}"] = np.asarray(m, dtype=np.float32)
            small[f"residual_var_{k}"] = np.asarray(v, dtype=np.float32)
    if stats.mosaic is not None:
        m = stats.mosaic
        small["cfa_tile"] = np.asarray(m.tile, dtype=np.uint8)
        small["colour_desc"] = np.asarray(m.colour_desc)
        small["white_level"] = np.asarray(-1 if m.white_level is None else m.white_level,
                                          dtype=np.int64)

    def write(fh):
        with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("n.npy", "w") as f:
                np.lib.format.write_array(f, small["n"], allow_pickle=False)
            _write_planes(zf, stats, shape, dtype)
            for key, value in small.items():
                if key == "n":
                    continue
                with zf.open(key + ".npy", "w") as f:
                    np.lib.format.write_array(f, value, allow_pickle=False)

    atomic_write(path, write, mode="wb")


def _write_planes(zf, stats, shape, dtype):
    """``mean.npy`` and ``var.npy``, each streamed band by band (two passes
    over the bands: a zip member is written whole before the next begins)."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    nbytes = int(np.prod(shape)) * dtype.itemsize
    for plane in (2, 3):
        name = "mean.npy" if plane == 2 else "var.npy"
        with zf.open(name, "w", force_zip64=nbytes > (1 << 31)) as f:
            np.lib.format.write_array_header_1_0(f, header)   # a small header: 1.0 suffices
            for band in stats.bands():
                a = np.ascontiguousarray(band[plane], dtype=dtype)
                f.write(memoryview(a).cast("B"))


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
            data = {k: z[k] for k in STATS_KEYS + MOSAIC_KEYS + (CAMERA_KEY,) if k in z.files}
            residual_keys = [k for k in z.files if k == RESIDUAL_KEY or k.startswith("residual_")]
            data.update({k: z[k] for k in residual_keys})
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
                  files=[str(f) for f in files], sample_dtype=dtype,
                  mosaic=_mosaic(path, data, shape), camera=_camera(path, data))
    stats.residuals = _residuals(path, data, shape, int(n))
    return stats, dtype


def _residuals(path, data, shape, n):
    """The file's temporal residual statistics, validated, or None (older files)."""
    if RESIDUAL_KEY not in data:
        return None
    from .residual import Residuals, residual_layout

    period = data[RESIDUAL_KEY]
    if period.shape != () or period.dtype.kind not in "iu" or not 1 <= int(period) <= 16:
        raise HotPixelError(f"{path}: invalid residual_period")
    layout = residual_layout(shape, int(period))
    means, variances = [], []
    for k, plane in enumerate(layout.planes):
        m, v = data.get(f"residual_mean_{k}"), data.get(f"residual_var_{k}")
        if m is None or v is None or m.shape != plane or v.shape != plane \
                or m.dtype != np.float32 or v.dtype != np.float32:
            raise HotPixelError(f"{path}: residual statistics of plane {k} are missing or "
                                f"not {plane} float32")
        if not (np.all(np.isfinite(m)) and np.all(v >= 0)):
            raise HotPixelError(f"{path}: residual statistics hold invalid values")
        means.append(m)
        variances.append(v)
    return Residuals(n=n, layout=layout, mean=means, var=variances)


def _camera(path, data):
    if CAMERA_KEY not in data:
        return None
    c = data[CAMERA_KEY]
    if c.dtype.kind != "U" or c.shape != (3,):
        raise HotPixelError(f"{path}: invalid camera description")
    from .camera import Camera
    return Camera.from_dict(dict(zip(("make", "model", "serial"), (str(v) for v in c))))


def _mosaic(path, data, shape):
    """The saved colour filter array, None for photos and older files."""
    present = [k for k in MOSAIC_KEYS if k in data]
    if not present:
        return None
    if len(present) != len(MOSAIC_KEYS):
        raise HotPixelError(f"{path}: incomplete raw mosaic description "
                            f"(has {', '.join(present)})")
    tile, desc, white = data["cfa_tile"], data["colour_desc"], data["white_level"]
    if (tile.ndim != 2 or tile.dtype != np.uint8 or not 1 <= tile.shape[0] <= 16
            or not 1 <= tile.shape[1] <= 16 or shape[2] != 1):
        raise HotPixelError(f"{path}: invalid colour filter tile")
    if desc.dtype.kind != "U" or desc.shape != () or white.shape != () or white.dtype.kind not in "iu":
        raise HotPixelError(f"{path}: invalid colour description or white level")
    desc = str(desc)
    if int(tile.max()) >= max(1, len(desc)):
        raise HotPixelError(f"{path}: colour filter tile uses colours {desc!r} does not name")
    white = int(white)
    return Mosaic(tile=tile, colour_desc=desc, white_level=None if white < 0 else white)


class BandFile:
    """Finished statistics kept on disk, written and read a band of rows at a time.

    The result store of band passes (``--bands``): each pass writes the rows it
    finished, and detection, the picture and ``--save-stats`` read them back
    through :meth:`reader`.  Plain positioned reads and writes (no memory
    map), so the rows live in the page cache, which the kernel reclaims,
    and not in the process's memory.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width, channels)``.
    dtype : dtype-like
        float32 or float64.
    directory : str, optional
        Where the (unnamed once created) file lives; default the temporary
        directory.

    Notes
    -----
    The file is unlinked as soon as it is opened: nothing is left behind
    whatever way the run ends.  Layout: the mean plane, then the variance
    plane, each C-ordered.
    """

    def __init__(self, shape, dtype, directory=None):
        import tempfile
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(dtype)
        h, w, c = self.shape
        self._row_bytes = w * c * self.dtype.itemsize
        self._plane_bytes = h * self._row_bytes
        fd, path = tempfile.mkstemp(prefix="hotpixel-bands-", suffix=".bin", dir=directory)
        try:
            os.unlink(path)
            os.ftruncate(fd, 2 * self._plane_bytes)
        except OSError as exc:
            os.close(fd)
            raise HotPixelError(f"cannot make a {2 * self._plane_bytes} byte file for the band "
                                f"passes in {os.path.dirname(path)}: {exc}") from None
        self._fd = fd

    def _io(self, plane, y0, arr, write):
        arr = np.ascontiguousarray(arr, dtype=self.dtype) if write else arr
        view = memoryview(arr).cast("B")
        offset = plane * self._plane_bytes + int(y0) * self._row_bytes
        done = 0
        while done < len(view):
            if write:
                k = os.pwrite(self._fd, view[done:], offset + done)
            else:
                k = os.preadv(self._fd, [view[done:]], offset + done)
            if k <= 0:
                raise HotPixelError("the band-pass file was cut short")
            done += k

    def write_rows(self, y0, mean, var) -> None:
        """Store finished rows starting at row ``y0``."""
        try:
            self._io(0, y0, mean, True)
            self._io(1, y0, var, True)
        except OSError as exc:
            raise HotPixelError(f"cannot write the band-pass file: {exc}") from None

    def read_rows(self, y0, y1, out_mean, out_var) -> None:
        """Read rows ``y0 <= y < y1`` into two C-contiguous arrays of :attr:`dtype`."""
        self._io(0, y0, out_mean, False)
        self._io(1, y0, out_var, False)

    def reader(self):
        """A :class:`hotpixel_shm.bands.BandReader` over the file."""
        from .bands import BandReader

        def finish(y0, y1, om, ov):
            if om.dtype == self.dtype and ov.dtype == self.dtype:
                self.read_rows(y0, y1, om, ov)
            else:
                m = np.empty(om.shape, self.dtype)
                v = np.empty(ov.shape, self.dtype)
                self.read_rows(y0, y1, m, v)
                np.copyto(om, m, casting="unsafe")
                np.copyto(ov, v, casting="unsafe")
        return BandReader(self.shape, self.dtype, finish)

    def close(self) -> None:
        """Close the file (it has no name: its space is freed)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
