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
           "RESIDUAL_KEY", "BAND_KEY", "is_band_checkpoint", "save_band_checkpoint",
           "load_band_checkpoint", "BandCheckpoint"]

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
#: prefix of the level statistics of an RGB photo's residuals,
#: ``residual_level_K`` (float32, ``residual.LEVEL_SUMS`` of Cb then Cr;
#: absent in older files, which load and detect without the level test)
LEVEL_PREFIX = "residual_level_"
#: present (the format's version, 1) in a checkpoint of band passes: a file
#: that is no statistics file (it has no ``n``), continued by ``--resume``
BAND_KEY = "band_checkpoint"


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
    the mean/variance tests only), and ``residual_level_K`` when they carry
    the level statistics of an RGB photo (files without them load, and
    detect without the level test).  It loads with ``numpy.load(path,
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
    small.update(_body_arrays(stats.camera, stats.mosaic))
    res = getattr(stats, "residuals", None)
    if res is not None and res.n == stats.n:
        small[RESIDUAL_KEY] = np.asarray(res.layout.reach, dtype=np.int64)
        for k, (m, v) in enumerate(zip(res.mean, res.var)):
            small[f"residual_mean_{k}"] = np.asarray(m, dtype=np.float32)
            small[f"residual_var_{k}"] = np.asarray(v, dtype=np.float32)
        for k, a in enumerate(res.levels or ()):
            small[f"{LEVEL_PREFIX}{k}"] = np.asarray(a, dtype=np.float32)

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


def _body_arrays(camera, mosaic) -> dict:
    """The ``camera`` and raw mosaic keys of a file (empty when not known)."""
    out = {}
    if camera is not None:
        out[CAMERA_KEY] = np.asarray([camera.make or "", camera.model or "", camera.serial or ""])
    if mosaic is not None:
        out["cfa_tile"] = np.asarray(mosaic.tile, dtype=np.uint8)
        out["colour_desc"] = np.asarray(mosaic.colour_desc)
        out["white_level"] = np.asarray(-1 if mosaic.white_level is None else mosaic.white_level,
                                        dtype=np.int64)
    return out


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
            if BAND_KEY in z.files:
                raise HotPixelError(f"{path}: a checkpoint of band passes, not statistics; "
                                    f"continue it with --resume {path}")
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
    return Residuals(n=n, layout=layout, mean=means, var=variances,
                     levels=_levels(path, data, layout))


def _levels(path, data, layout):
    """The file's level statistics, validated, or None (older files, or none kept)."""
    from .residual import LEVEL_SUMS

    if f"{LEVEL_PREFIX}0" not in data:
        return None
    if layout.mode != "ycc":
        raise HotPixelError(f"{path}: level statistics of a one-channel residual layout")
    out = []
    for k in range(len(LEVEL_SUMS) * 2):
        a = data.get(f"{LEVEL_PREFIX}{k}")
        plane = layout.planes[1 + k // len(LEVEL_SUMS)]
        if a is None or a.shape != plane or a.dtype != np.float32:
            raise HotPixelError(f"{path}: level statistics {k} are missing or not {plane} "
                                f"float32")
        # r L and r may be negative; L L and r r are not
        if not np.all(np.isfinite(a)) or (LEVEL_SUMS[k % len(LEVEL_SUMS)] in ("LL", "rr")
                                          and np.any(a < 0)):
            raise HotPixelError(f"{path}: level statistics hold invalid values")
        out.append(a)
    return out


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


# --------------------------------------------------------------------------- band-pass checkpoints

def is_band_checkpoint(path) -> bool:
    """Whether ``path`` is a checkpoint of band passes (False for anything
    else, unreadable files included: their error comes from :func:`load_stats`)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return BAND_KEY + ".npy" in zf.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def save_band_checkpoint(path, snap, *, camera=None, mosaic=None, loaded_files=()) -> None:
    """Write a checkpoint of band passes (an ``engine.BandSnapshot``) to ``path`` atomically.

    The file (an uncompressed .npz) holds ``band_checkpoint`` (1), ``shape``,
    ``tier``, ``dtype``, ``version``, ``bands``, ``band_pass`` (0-based),
    ``files`` (the files every pass reads; during the first pass, those
    read so far), ``skipped_files``/``skipped_reasons``, ``partial_files``,
    ``loaded_files`` (the files of the ``--load-stats`` statistics the run
    merges its result with), ``mean``/``var`` (the finished rows of the earlier
    passes; the others zero), and for each partial result ``k`` of the pass
    under way ``part_k_n``, ``part_k_tier`` and its raw accumulator fields
    ``part_k_field_j`` (flat, over the pass's band of rows), camera and mosaic
    keys as in :func:`save_stats`.  It has no ``n``: it is no statistics
    file, and :func:`load_stats` refuses it.

    Everything is streamed: the planes from ``snap.finished`` a band at a
    time, the partial results straight from the accumulators.
    """
    from .export import atomic_write

    shape = tuple(int(v) for v in snap.shape)
    y_end = snap.rows[0]
    _, w, c = shape
    parts = [p for p in snap.parts if p.n]
    small = {
        BAND_KEY: np.asarray(1, np.int64),
        "shape": np.asarray(shape, dtype=np.int64),
        "tier": np.asarray(snap.tier),
        "dtype": np.asarray(str(np.dtype(snap.sample_dtype))),
        "version": np.asarray(__version__),
        "bands": np.asarray(snap.bands, np.int64),
        "band_pass": np.asarray(snap.pass_index, np.int64),
        "files": _strings([os.fsdecode(f) for f in snap.used]),
        "skipped_files": _strings([os.fsdecode(f) for f, _ in snap.skipped]),
        "skipped_reasons": _strings([str(r) for _, r in snap.skipped]),
        "partial_files": _strings([os.fsdecode(f) for f in snap.partial_files]),
        "loaded_files": _strings([os.fsdecode(f) for f in loaded_files]),
        "parts": np.asarray(len(parts), np.int64),
    }
    small.update(_body_arrays(camera, mosaic))
    for k, p in enumerate(parts):
        small[f"part_{k}_n"] = np.asarray(int(p.n), np.int64)
        small[f"part_{k}_tier"] = np.asarray(p.tier)
    rdt = _result_dtype(snap.tier)
    step = max(1, (1 << 19) // (w * c))
    rows = snap.rows
    values = (rows[1] - rows[0]) * w * c

    def write(fh):
        with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, value in small.items():
                with zf.open(key + ".npy", "w") as f:
                    np.lib.format.write_array(f, value, allow_pickle=False)
            header = {"descr": np.lib.format.dtype_to_descr(rdt), "fortran_order": False,
                      "shape": shape}
            for plane, name in ((0, "mean.npy"), (1, "var.npy")):
                nbytes = int(np.prod(shape)) * rdt.itemsize
                with zf.open(name, "w", force_zip64=nbytes > (1 << 31)) as f:
                    np.lib.format.write_array_header_1_0(f, header)
                    for y0 in range(0, shape[0], step):
                        y1 = min(shape[0], y0 + step)
                        out = [np.zeros((y1 - y0, w, c), rdt), np.zeros((y1 - y0, w, c), rdt)]
                        if y0 < y_end:
                            a = min(y1, y_end)
                            snap.finished.read_rows(y0, a, out[0][:a - y0], out[1][:a - y0])
                        f.write(memoryview(out[plane]).cast("B"))
            for k, p in enumerate(parts):
                fields = p.chunk(0, values).fields
                for j, field in enumerate(fields):
                    field = np.asarray(field).reshape(-1)
                    header = {"descr": np.lib.format.dtype_to_descr(field.dtype),
                              "fortran_order": False, "shape": (values,)}
                    nbytes = values * field.dtype.itemsize
                    with zf.open(f"part_{k}_field_{j}.npy", "w", force_zip64=nbytes > (1 << 31)) as f:
                        np.lib.format.write_array_header_1_0(f, header)
                        for s in range(0, values, 1 << 20):
                            f.write(memoryview(np.ascontiguousarray(field[s:s + (1 << 20)])).cast("B"))

    atomic_write(path, write, mode="wb")


def _result_dtype(tier):
    from .tiers import result_dtype
    return np.dtype(result_dtype(tier))


def _strings(items):
    return np.asarray(items if items else np.zeros(0, "U1"))


class _Member:
    """A stored (uncompressed) ``.npy`` member of a zip file, read in place
    with positioned reads: nothing of it is held in memory."""

    def __init__(self, fd, zf, name, path):
        info = zf.getinfo(name)
        if info.compress_type != zipfile.ZIP_STORED:
            raise HotPixelError(f"{path}: {name} is compressed; a checkpoint is written uncompressed")
        local = os.pread(fd, 30, info.header_offset)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise HotPixelError(f"{path}: {name} cannot be located")
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
            + int.from_bytes(local[28:30], "little")
        with zf.open(name) as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
        if fortran or dtype.hasobject:
            raise HotPixelError(f"{path}: {name} is not a plain C-ordered array")
        self.fd, self.shape, self.dtype = fd, tuple(shape), dtype
        self.offset = start + offset
        self.size = int(np.prod(self.shape)) if self.shape else 1
        if info.file_size != offset + self.size * dtype.itemsize:
            raise HotPixelError(f"{path}: {name} is cut short")

    def read(self, start, stop, out=None):
        """Flat values ``[start, stop)`` (into ``out`` if given)."""
        out = np.empty(stop - start, self.dtype) if out is None else out
        _positioned_io(self.fd, memoryview(out.reshape(-1)).cast("B"),
                       self.offset + start * self.dtype.itemsize, False, "the checkpoint file")
        return out


def _positioned_io(fd, view, offset, write, what):
    """Write ``view`` at ``offset`` of ``fd``, or fill it from there, whole
    (positioned reads and writes may do part of it at a time)."""
    done = 0
    while done < len(view):
        if write:
            k = os.pwrite(fd, view[done:], offset + done)
        else:
            k = os.preadv(fd, [view[done:]], offset + done)
        if k <= 0:
            raise HotPixelError(f"{what} was cut short")
        done += k


class _FileHandle:
    """Owns ``_fd``, an open file descriptor, until :meth:`close`."""

    _fd = None

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class _FilePart:
    """A partial result kept in a checkpoint: its raw fields read as needed."""

    def __init__(self, n, tier, sample_dtype, members):
        self.n, self.tier, self.sample_dtype = int(n), tier, np.dtype(sample_dtype)
        self.members = members

    def chunk(self, start, stop):
        from .kernels_numpy import Partial
        return Partial(self.n, self.tier, self.sample_dtype,
                       tuple(m.read(start, stop) for m in self.members))


class BandCheckpoint(_FileHandle):
    """A checkpoint of band passes, read from its file as needed
    (:func:`load_band_checkpoint`); the attributes of ``engine.BandSnapshot``
    plus ``sample_dtype``, ``mosaic``, ``camera``, ``loaded_files`` and ``path``."""

    def __init__(self, path):
        self.path = path
        self._fd = None
        try:
            self._fd = os.open(path, os.O_RDONLY)
            with zipfile.ZipFile(path) as zf, np.load(path, allow_pickle=False) as z:
                self._read(path, zf, z)
        except HotPixelError:
            self.close()
            raise
        except FileNotFoundError:
            self.close()
            raise HotPixelError(f"{path}: no such file") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            self.close()
            raise HotPixelError(f"{path}: cannot read the band-pass checkpoint: {exc}") from None

    def _read(self, path, zf, z):
        from .tiers import fields as tier_fields

        def small(key):
            if key + ".npy" not in zf.namelist():
                raise HotPixelError(f"{path}: band-pass checkpoint without {key}")
            return z[key]
        if int(small(BAND_KEY)) != 1:
            raise HotPixelError(f"{path}: a band-pass checkpoint of a newer format")
        self.shape = tuple(int(v) for v in small("shape"))
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise HotPixelError(f"{path}: invalid shape {self.shape}")
        self.tier, self.sample_dtype = str(small("tier")), str(small("dtype"))
        if self.tier not in TIERS or self.sample_dtype not in ("uint8", "uint16"):
            raise HotPixelError(f"{path}: unknown tier {self.tier!r} or sample dtype")
        self.bands, self.pass_index = int(small("bands")), int(small("band_pass"))
        if not 1 < self.bands <= self.shape[0] or not 0 <= self.pass_index < self.bands:
            raise HotPixelError(f"{path}: invalid band pass {self.pass_index} of {self.bands}")
        from .bands import band_rows
        passes = band_rows(self.shape[0], self.bands)
        if self.pass_index >= len(passes):
            raise HotPixelError(f"{path}: invalid band pass {self.pass_index} of {self.bands}")
        self.rows = passes[self.pass_index]
        lists = {}
        for key in ("files", "skipped_files", "skipped_reasons", "partial_files", "loaded_files"):
            a = small(key)
            if a.ndim != 1 or (a.size and a.dtype.kind != "U"):
                raise HotPixelError(f"{path}: invalid {key}")
            lists[key] = [str(v) for v in a]
        if len(lists["skipped_files"]) != len(lists["skipped_reasons"]):
            raise HotPixelError(f"{path}: invalid skipped_files")
        self.used, self.partial_files = lists["files"], lists["partial_files"]
        self.skipped = list(zip(lists["skipped_files"], lists["skipped_reasons"]))
        self.loaded_files = lists["loaded_files"]
        if not set(self.partial_files) <= set(self.used) or \
                (self.pass_index == 0 and set(self.partial_files) != set(self.used)):
            raise HotPixelError(f"{path}: the partial results' files are not the run's")
        rdt = _result_dtype(self.tier)
        self._planes = [_Member(self._fd, zf, name, path) for name in ("mean.npy", "var.npy")]
        for m in self._planes:
            if m.shape != self.shape or m.dtype != rdt:
                raise HotPixelError(f"{path}: finished rows of shape {m.shape} and dtype "
                                    f"{m.dtype}, expected {self.shape} {rdt}")
        _, w, c = self.shape
        values = (self.rows[1] - self.rows[0]) * w * c
        want = [np.dtype(d) for _, d in tier_fields(self.tier, self.sample_dtype)]
        self.parts = []
        for k in range(int(small("parts"))):
            n, tier = int(small(f"part_{k}_n")), str(small(f"part_{k}_tier"))
            if tier != self.tier or n < 1:
                raise HotPixelError(f"{path}: invalid partial result {k}")
            members = [_Member(self._fd, zf, f"part_{k}_field_{j}.npy", path)
                       for j in range(len(want))]
            if any(m.shape != (values,) or m.dtype != d for m, d in zip(members, want)):
                raise HotPixelError(f"{path}: partial result {k} is not a {self.tier} "
                                    f"accumulator of the band's {values} values")
            self.parts.append(_FilePart(n, tier, self.sample_dtype, members))
        if sum(p.n for p in self.parts) != len(self.partial_files):
            raise HotPixelError(f"{path}: the partial results hold {sum(p.n for p in self.parts)} "
                                f"images, the checkpoint lists {len(self.partial_files)}")
        data = {k: z[k] for k in MOSAIC_KEYS + (CAMERA_KEY,) if k + ".npy" in zf.namelist()}
        self.mosaic = _mosaic(path, data, self.shape)
        self.camera = _camera(path, data)

    @property
    def n(self) -> int:
        return sum(p.n for p in self.parts)

    def read_rows(self, y0, y1, out_mean, out_var) -> None:
        """Finished rows ``y0 <= y < y1`` (of the passes before :attr:`pass_index`)."""
        if y1 > self.rows[0]:
            raise HotPixelError(f"rows up to {y1} are not finished in the checkpoint")
        _, w, c = self.shape
        for plane, out in zip(self._planes, (out_mean, out_var)):
            plane.read(y0 * w * c, y1 * w * c, out)

    @property
    def finished(self):
        return self


def load_band_checkpoint(path) -> BandCheckpoint:
    """Read a checkpoint written by :func:`save_band_checkpoint`.

    Raises
    ------
    HotPixelError
        Not such a file, or a key, shape or dtype is wrong.
    """
    return BandCheckpoint(path)


class BandFile(_FileHandle):
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
        _positioned_io(self._fd, memoryview(arr).cast("B"),
                       plane * self._plane_bytes + int(y0) * self._row_bytes, write,
                       "the band-pass file")

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
