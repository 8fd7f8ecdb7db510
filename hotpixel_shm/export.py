"""Output files: JSON report, CSV, dcraw, RawTherapee and Siril lists, PNG mask.

Every file is written atomically: the content goes to a temporary file in the
target's directory, which is flushed, fsync'ed and renamed over the target, so
an interrupted run or a full disk never leaves a truncated file behind and an
earlier file of the same name survives any failure.

Coordinates in every file are column ``x`` and row ``y``, 0-based, in the
stored pixel array of the analysed photos (sensor orientation: the EXIF
orientation tag is never applied).  Text formats that allow comments start
with a header comment naming the tool, its version and this frame.

The per-pixel lists (dcraw, RawTherapee, Siril, mask) hold each ``(x, y)`` once
(the defect with the highest score decides its kind), sorted by row then
column.  The JSON report and the CSV hold one entry per defect, in the order
given.
"""
from __future__ import annotations

import csv
import json
import math
import os
import stat
import tempfile
from collections.abc import Mapping

import numpy as np
from PIL import Image

from .errors import HotPixelError
from .model import KINDS

__all__ = [
    "atomic_write", "check_output_paths", "build_report", "write_json", "write_csv",
    "write_dcraw", "write_libraw", "write_rawtherapee", "rawtherapee_file_name", "write_siril", "write_mask",
    "CSV_COLUMNS", "REPORT_KEYS", "ENGINE_KEYS", "DEFECT_KEYS", "LINE_KINDS", "line_fields",
    "printable", "defect_field", "defect_xy",
]

#: Header of the CSV file, in order.
CSV_COLUMNS = ("x", "y", "kind", "channels", "mean", "std", "neighbour_mean", "score", "size",
               "from", "to")
#: Kinds of line defects (``hotpixel_shm.lines.LineDefect``).
LINE_KINDS = ("column", "row")
#: Top-level keys of the JSON report (the stable contract; keys may be added, never renamed).
REPORT_KEYS = ("version", "shape", "images", "engine", "defects")
#: Keys every ``engine`` entry of the report has.
ENGINE_KEYS = ("workers", "dtype", "budget_bytes", "planned_bytes", "seconds")
#: Keys every defect entry of the report has (``size`` and ``colour`` are added when known).
DEFECT_KEYS = ("x", "y", "channels", "kind", "mean", "std", "neighbour_mean", "score")

_FRAME = ("coordinates: column x, row y, 0-based, in the stored pixel array "
          "(sensor orientation; EXIF orientation not applied)")


# --------------------------------------------------------------------------- #
# Atomic writing and path checks
# --------------------------------------------------------------------------- #

def atomic_write(path, write_fn, *, mode="w", encoding="utf-8") -> None:
    """Write a file atomically: all of it, or nothing and the old file kept.

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The file to create or replace.  If it is a symbolic link, the file the
        link points to is replaced and the link is kept.
    write_fn : callable
        ``write_fn(fileobj)`` writes the whole content to the open file.
    mode : {"w", "wb"}
        Text or binary.  Text files are written with ``newline=""``: what
        ``write_fn`` writes is what ends up on disk, ``"\\n"`` line ends included.
    encoding : str
        Encoding of a text file (ignored in binary mode).

    Raises
    ------
    HotPixelError
        ``"could not write PATH: <reason>; the previous file, if any, is
        unchanged"`` on any error (full disk, no permission, missing directory,
        an exception raised by ``write_fn``...).  The temporary file is removed.

    Notes
    -----
    The content goes to ``.<name>.<random>.tmp`` in the target's own directory
    (a rename is only atomic within one file system), is flushed and
    ``fsync``'ed, and is then renamed over the target with ``os.replace``; the
    directory is fsync'ed afterwards so the rename itself survives a crash.
    The new file gets the permissions a plain ``open(path, "w")`` would give
    it: those of the file it replaces, or ``0o666 & ~umask`` for a new one
    (``mkstemp`` alone would leave 0600).
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")
    # str throughout (undecodable bytes survive as surrogates), so mkstemp never mixes types.
    target = os.fsdecode(os.fspath(path))
    if os.path.islink(target):
        target = os.path.realpath(target)
    directory = os.path.dirname(os.path.abspath(target))
    name = os.path.basename(target)
    binary = "b" in mode
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            if binary:
                fileobj = os.fdopen(fd, "wb")
            else:
                fileobj = os.fdopen(fd, "w", encoding=encoding, newline="")
        except BaseException:
            os.close(fd)
            raise
        with fileobj:
            write_fn(fileobj)
            fileobj.flush()
            os.fsync(fileobj.fileno())
        os.chmod(tmp, _new_file_mode(target))
        os.replace(tmp, target)
        tmp = None
    except Exception as exc:
        raise HotPixelError(f"could not write {printable(path)}: {_reason(exc)}; "
                            "the previous file, if any, is unchanged") from exc
    finally:
        # Also on KeyboardInterrupt: no half-written temporary file is left behind.
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _fsync_directory(directory)


def _reason(exc):
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text if text else type(exc).__name__


def _new_file_mode(target):
    try:
        # Replacing a file keeps its permissions, as writing it in place would.
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask():
    # os.umask() can only be read by setting it, which races with other
    # threads; Linux (>= 4.7) shows it in /proc, so try that first.
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some file systems refuse fsync on a directory; the data itself is safe.
        pass
    finally:
        os.close(fd)


def check_output_paths(outputs, inputs) -> None:
    """Refuse outputs that would overwrite an input photo or each other.

    Parameters
    ----------
    outputs : mapping or iterable
        Output paths, or a mapping ``{label: path}`` (e.g. ``{"--json": "r.json"}``)
        whose labels are used in the error message.  ``None`` entries are skipped.
    inputs : iterable
        The input photo paths.

    Raises
    ------
    HotPixelError
        If an output is one of the inputs, or two outputs are the same file.
        Paths are compared after resolving symbolic links and ``..``
        (``os.path.realpath``) and, for files that exist, by device and inode,
        which also catches hard links.
    """
    if isinstance(outputs, Mapping):
        items = [(label, p) for label, p in outputs.items() if p is not None]
    else:
        items = [(None, p) for p in outputs if p is not None]
    items = [(label, os.fsdecode(os.fspath(p))) for label, p in items]
    inputs = [os.fsdecode(os.fspath(p)) for p in inputs]
    input_by_real = {}
    for p in inputs:
        input_by_real.setdefault(os.path.realpath(p), p)
    input_by_inode = None  # stat'ed lazily: only needed if an output already exists

    seen_real, seen_inode = {}, {}
    for label, out in items:
        shown = _describe(label, out)
        real = os.path.realpath(out)
        st = _stat(out)
        inode = (st.st_dev, st.st_ino) if st is not None else None
        clash = input_by_real.get(real)
        if clash is None and inode is not None:
            if input_by_inode is None:
                input_by_inode = {}
                for p in inputs:
                    pst = _stat(p)
                    if pst is not None:
                        input_by_inode.setdefault((pst.st_dev, pst.st_ino), p)
            clash = input_by_inode.get(inode)
        if clash is not None:
            raise HotPixelError(f"{shown} is the input photo {printable(clash)}; refusing to overwrite "
                                "it: choose another output file name")
        other = seen_real.get(real)
        if other is None and inode is not None:
            other = seen_inode.get(inode)
        if other is not None:
            raise HotPixelError(f"{shown} and {other} are the same file; give each output its own name")
        seen_real[real] = shown
        if inode is not None:
            seen_inode[inode] = shown


def _describe(label, path):
    return f"{label} {printable(path)}" if label else printable(path)


def _stat(path):
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- #
# Value conversion
# --------------------------------------------------------------------------- #

def printable(value) -> str:
    """A printable, UTF-8-encodable str for a path or any text.

    Bytes that are not UTF-8 (file names on Linux are bytes; Python decodes
    them with surrogateescape) become backslash escapes: ``b"caf\\xe9.jpg"``
    becomes the text ``caf\\xe9.jpg``, never an encoding error.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        # A lone surrogate that did not come from surrogateescape.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _float(value):
    """float, or None for NaN/inf (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value):
    """Plain JSON types: numpy scalars/arrays unwrapped, non-finite floats -> None."""
    if isinstance(value, Mapping):
        return {printable(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, bytes, os.PathLike)):
        return printable(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _float(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    return printable(value)


def defect_field(defect, name, default=None):
    """``defect.name`` of a Defect, or ``defect[name]`` of a mapping (``default`` if absent)."""
    if isinstance(defect, Mapping):
        return defect.get(name, default)
    return getattr(defect, name, default)


def defect_xy(defect):
    """``(x, y)`` of a Defect or mapping as ints, or HotPixelError if not whole numbers >= 0."""
    x, y = defect_field(defect, "x"), defect_field(defect, "y")
    try:
        xi, yi = int(x), int(y)
    except (TypeError, ValueError):
        raise HotPixelError(f"defect has no integer x/y: x={x!r}, y={y!r}") from None
    if xi != x or yi != y or xi < 0 or yi < 0:
        raise HotPixelError(f"defect at x={x!r}, y={y!r}: coordinates must be integers >= 0")
    return xi, yi


def _score_key(defect):
    score = defect_field(defect, "score")
    try:
        score = float(score)
    except (TypeError, ValueError):
        return -math.inf
    return score if math.isfinite(score) else -math.inf


def _write_pixel_list(path, defects, title, fmt, line, frame=None, extra=None):
    """A ``#`` header, then ``line(x, y, defect)`` for each pixel once, atomically.

    ``frame`` (a ``frames.Frame``) shifts every coordinate into the program's
    own frame and adds its note to the header; ``extra(dx, dy)`` gives more
    lines for the end (already shifted).
    """
    pixels = _unique_pixels(defects)
    dx, dy = (frame.dx, frame.dy) if frame is not None else (0, 0)
    notes = [frame.note] if frame is not None and frame.note else []
    if dx or dy:
        notes.append(f"shifted by x+{dx}, y+{dy} from the analysed frame (LibRaw's visible area)")
    tail = list(extra(dx, dy)) if extra is not None else []
    count = f"{len(pixels)} pixels" + (f", {len(tail)} lines" if tail else "")
    text = _header(title, fmt, *notes, count)
    text += "".join(line(x + dx, y + dy, d) + "\n" for x, y, d in pixels)
    text += "".join(t + "\n" for t in tail)
    atomic_write(path, lambda f: f.write(text))


def _unique_pixels(defects):
    """[(x, y, defect)] once per pixel, the highest-scoring defect kept, by row then column."""
    best = {}
    for d in defects:
        key = defect_xy(d)
        if key not in best or _score_key(d) > _score_key(best[key]):
            best[key] = d
    return [(x, y, best[(x, y)]) for (x, y) in sorted(best, key=lambda k: (k[1], k[0]))]


def line_fields(line):
    """``(kind, index, start, stop, offset, score)`` of a line defect.

    ``line`` is a ``hotpixel_shm.lines.LineDefect`` or its report entry
    (``{"kind": "column", "x": 12, "from": 0, "to": 99, ...}``).
    """
    if isinstance(line, Mapping):
        kind = line.get("kind")
        index = line.get("x" if kind == "column" else "y")
        start, stop = line.get("from"), line.get("to")
        offset, score = line.get("offset"), line.get("score")
    else:
        kind, index, start, stop = line.kind, line.index, line.start, line.stop
        offset, score = line.offset, line.score
    if kind not in LINE_KINDS:
        raise HotPixelError(f"line defect of unknown kind {kind!r}; expected one of {LINE_KINDS}")
    try:
        index, start, stop = int(index), int(start), int(stop)
    except (TypeError, ValueError):
        raise HotPixelError(f"{kind} defect without integer position: {index!r} {start!r}..{stop!r}") \
            from None
    if min(index, start) < 0 or stop < start:
        raise HotPixelError(f"{kind} defect at {index} from {start} to {stop}: bad range")
    return kind, index, start, stop, _float(offset) or 0.0, _float(score)


def _line_pixels(lines):
    """Every pixel of the line defects, as entries of a pixel list (hot for a
    positive offset, dead for a negative one)."""
    out = []
    for line in lines or ():
        kind, index, start, stop, offset, score = line_fields(line)
        label = "dead" if offset < 0 else "hot"
        for v in range(start, stop + 1):
            x, y = (index, v) if kind == "column" else (v, index)
            out.append({"x": x, "y": y, "kind": label, "score": score})
    return out


def _version():
    from . import __version__
    return __version__


def _header(*lines):
    """Comment lines naming the tool, its version and the coordinate frame."""
    head = [f"# hotpixel_shm {_version()}: {lines[0]}", f"# {_FRAME}"]
    head += [f"# {line}" for line in lines[1:]]
    return "".join(line + "\n" for line in head)


# --------------------------------------------------------------------------- #
# JSON report and CSV
# --------------------------------------------------------------------------- #

def build_report(*, version, shape, used, skipped, engine, defects, extra=None, lines=None) -> dict:
    """The JSON report as a dict, in the stable schema.

    Parameters
    ----------
    version : str
        Package version.
    shape : sequence of int
        ``(height, width, channels)``; ``(height, width)`` means one channel.
    used : int
        Number of images that went into the statistics.
    skipped : iterable
        ``(path, reason)`` pairs or ``{"path": ..., "reason": ...}`` dicts.
        Paths may be str (undecodable bytes as surrogates), bytes or PathLike;
        undecodable bytes become backslash escapes (``caf\\xe9.jpg``).
    engine : mapping
        Must contain ``workers``, ``dtype``, ``budget_bytes``, ``planned_bytes``
        and ``seconds``; any further keys are kept.
    defects : iterable of Defect or mapping
        One report entry each, in the order given, with the schema's keys plus
        ``size`` and ``colour`` when known.
    extra : mapping, optional
        More top-level keys.  They may not replace a schema key.
    lines : iterable of LineDefect or mapping, optional
        Bad columns and rows: a top-level ``"lines"`` list, one entry each,
        ``{"kind": "column", "x", "from", "to", "channels", "offset",
        "score"[, "colour"]}`` (``"row"`` has ``"y"``).  Always present (an
        empty list when none was found or looked for).

    Returns
    -------
    dict
        ``{"version", "shape", "images": {"used", "skipped"}, "engine",
        "defects", "lines", ...extra}`` holding only JSON types; NaN and
        infinite floats are ``None`` (``null`` in JSON).

    Raises
    ------
    ValueError
        If ``shape`` is not 2 or 3 integers, ``engine`` lacks a required key or
        ``extra`` repeats a schema key.
    """
    shape = [int(s) for s in shape]
    if len(shape) == 2:
        shape.append(1)
    if len(shape) != 3:
        raise ValueError(f"shape must be (height, width, channels), got {shape}")
    engine = dict(engine)
    missing = [k for k in ENGINE_KEYS if k not in engine]
    if missing:
        raise ValueError(f"engine lacks {', '.join(missing)}")
    engine_out = {
        "workers": int(engine["workers"]),
        "dtype": printable(engine["dtype"]),
        "budget_bytes": int(engine["budget_bytes"]),
        "planned_bytes": int(engine["planned_bytes"]),
        "seconds": _float(engine["seconds"]),
    }
    for key, value in engine.items():
        if key not in engine_out:
            engine_out[printable(key)] = _jsonable(value)

    report = {
        "version": printable(version),
        "shape": shape,
        "images": {"used": int(used), "skipped": [_skip_entry(s) for s in skipped]},
        "engine": engine_out,
        "defects": [_defect_entry(d) for d in defects],
        "lines": [_line_entry(ln) for ln in (lines or ())],
    }
    for key, value in (extra or {}).items():
        if key in report:
            raise ValueError(f"extra key {key!r} would replace a schema key")
        report[printable(key)] = _jsonable(value)
    return report


def _skip_entry(item):
    if isinstance(item, Mapping):
        path, reason = item["path"], item["reason"]
    else:
        path, reason = item
    return {"path": printable(path), "reason": printable(reason)}


def _defect_entry(defect):
    x, y = defect_xy(defect)
    kind = printable(defect_field(defect, "kind"))
    if kind not in KINDS:
        raise ValueError(f"defect at x={x}, y={y} has unknown kind {kind!r}; expected one of {KINDS}")
    entry = {
        "x": x,
        "y": y,
        "channels": [int(c) for c in (defect_field(defect, "channels") or [])],
        "kind": kind,
        "mean": _float(defect_field(defect, "mean")),
        "std": _float(defect_field(defect, "std")),
        "neighbour_mean": _float(defect_field(defect, "neighbour_mean")),
        "score": _float(defect_field(defect, "score")),
    }
    size = defect_field(defect, "size")
    if size is not None:
        entry["size"] = int(size)
    colour = defect_field(defect, "colour")
    if colour is not None:
        entry["colour"] = printable(colour)
    for key in ("status", "first_seen"):  # history (--compare)
        value = defect_field(defect, key)
        if value is not None:
            entry[key] = printable(value)
    return entry


def _line_entry(line):
    kind, index, start, stop, offset, score = line_fields(line)
    entry = {"kind": kind, ("x" if kind == "column" else "y"): index, "from": start, "to": stop,
             "channels": [int(c) for c in (defect_field(line, "channels") or [])],
             "offset": offset, "score": score}
    colour = defect_field(line, "colour")
    if colour is not None:
        entry["colour"] = printable(colour)
    for key in ("status", "first_seen"):
        value = defect_field(line, key)
        if value is not None:
            entry[key] = printable(value)
    return entry


def write_json(path, report: dict) -> None:
    """Write the report as UTF-8 JSON (indented, ends with a newline).

    Parameters
    ----------
    path : path-like
        Output file; written atomically.
    report : dict
        Usually from :func:`build_report`.  Values are converted to plain JSON
        types on the way: numpy scalars unwrapped, NaN/inf floats written as
        ``null``, and undecodable bytes in strings (non-UTF-8 file names)
        written as backslash escapes, so the file is always valid UTF-8 JSON.

    Notes
    -----
    Coordinates in ``defects`` are column ``x``, row ``y``, 0-based, in the
    stored pixel array (EXIF orientation not applied).  JSON has no comments,
    so the frame is stated here and in the README, not in the file.
    """
    text = json.dumps(_jsonable(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text))


def _csv_number(value):
    value = _float(value)
    # 7 significant digits: all a float32 accumulator holds, without "12.300000190734863".
    return "" if value is None else format(value, ".7g")


def write_csv(path, defects, lines=()) -> None:
    """Write one CSV row per defect, then one per line defect.

    Parameters
    ----------
    path : path-like
        Output file; written atomically, UTF-8, ``\\n`` line ends.
    defects : iterable of Defect or mapping
        Written in the order given.
    lines : iterable of LineDefect or mapping, optional
        Bad columns and rows, after the pixels: kind ``column`` (``x`` set,
        ``y`` empty) or ``row`` (``y`` set, ``x`` empty), ``mean`` the
        offset, ``size`` the pixels, ``from``/``to`` the first and last row
        (column, for a row) it covers.

    Notes
    -----
    Header: ``x,y,kind,channels,mean,std,neighbour_mean,score,size,from,to``
    (``from`` and ``to`` are empty for pixels).
    ``x`` is the column and ``y`` the row, 0-based, in the stored pixel array
    (EXIF orientation not applied).  ``channels`` is joined with ``;``
    (``0;2``); floats have 7 significant digits and NaN/inf are empty fields.
    A CSV file has no comment syntax, so no header comment is written.
    """
    rows = []
    for d in defects:
        x, y = defect_xy(d)
        size = defect_field(d, "size")
        rows.append([
            x, y, printable(defect_field(d, "kind")),
            ";".join(str(int(c)) for c in (defect_field(d, "channels") or [])),
            _csv_number(defect_field(d, "mean")), _csv_number(defect_field(d, "std")),
            _csv_number(defect_field(d, "neighbour_mean")), _csv_number(defect_field(d, "score")),
            "" if size is None else int(size), "", "",
        ])
    for line in lines or ():
        kind, index, start, stop, offset, score = line_fields(line)
        rows.append([
            index if kind == "column" else "", index if kind == "row" else "", kind,
            ";".join(str(int(c)) for c in (defect_field(line, "channels") or [])),
            _csv_number(offset), "", "", _csv_number(score), stop - start + 1, start, stop,
        ])

    def write(f):
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)

    atomic_write(path, write)


# --------------------------------------------------------------------------- #
# Bad pixel lists for other programs
# --------------------------------------------------------------------------- #

def write_dcraw(path, defects, frame=None, lines=()) -> None:
    """Write a dcraw ``-P`` dead-pixel file: ``col row 0`` per line.

    Parameters
    ----------
    path : path-like
        Output file; written atomically.  Use it as ``dcraw -P path ...``.
    defects : iterable of Defect or mapping
        Every defective pixel is listed once, sorted by row then column.
    frame : frames.Frame, optional
        dcraw's frame for the analysed raw files (``frames.program_frames``);
        coordinates are shifted into it and its note goes into the header.
        None: the analysis frame, unchanged.
    lines : iterable of LineDefect or mapping, optional
        Bad columns and rows: each of their pixels is listed.

    Notes
    -----
    dcraw (and LibRaw, which kept the code) cuts every line at ``#`` and reads
    ``column row time``; a pixel is fixed in photos taken after ``time`` (a
    Unix time), so ``0`` means "bad since always".  The header lines are
    ``#`` comments with the tool name, version and frame.

    Coordinates: column ``x`` (dcraw's *col*), row ``y`` (dcraw's *row*),
    0-based, in the stored pixel array (EXIF orientation not applied).  dcraw
    applies the list to the raw mosaic only (not to JPEG/TIFF input), so the
    list matches dcraw's frame when the analysed photos were raw files read as
    their raw mosaic, in dcraw's frame (``frame``); LibRaw counts from its
    own margins, so LibRaw-based programs need :func:`write_libraw`.
    Example line: ``1234 567 0``.

    A defect with a ``bad_since`` (Unix seconds; set by ``--compare`` on new
    defects: the capture time of the newest photo of the earlier run, the
    last time the pixel was seen good) gets it as its time, so dcraw and
    LibRaw fix it only in photos taken after that.
    """
    _write_pixel_list(path, list(defects) + _line_pixels(lines), "bad pixels for dcraw -P",
                      "format: column row time; time 0 = bad since always",
                      lambda x, y, d: f"{x} {y} {_bad_since(d)}", frame)


def write_libraw(path, defects, frame=None, lines=()) -> None:
    """Write a LibRaw bad-pixel file (``dcraw_emu -P``, rawpy's ``bad_pixels_path``).

    Parameters
    ----------
    path : path-like
        Output file; written atomically.
    defects : iterable of Defect or mapping
        Every defective pixel is listed once, sorted by row then column.
    frame : frames.Frame, optional
        LibRaw's frame (the analysis frame of raw files: no shift); its note
        goes into the header.
    lines : iterable of LineDefect or mapping, optional
        Bad columns and rows: each of their pixels is listed.

    Notes
    -----
    The format is dcraw's (``col row time``, ``#`` comments), but LibRaw
    counts from its visible area, whose odd margins it rounds up to even
    ones: with a DNG whose ActiveArea starts at an odd row or column the
    same defect has other coordinates for dcraw. Example line: ``1234 567 0``.
    """
    _write_pixel_list(path, list(defects) + _line_pixels(lines),
                      "bad pixels for LibRaw (dcraw_emu -P, rawpy bad_pixels_path)",
                      "format: column row time; time 0 = bad since always",
                      lambda x, y, d: f"{x} {y} {_bad_since(d)}", frame)


def _bad_since(defect) -> int:
    value = defect_field(defect, "bad_since")
    try:
        return max(0, int(value)) if value is not None else 0
    except (TypeError, ValueError):
        return 0


# dcraw's list of maker names ("Simplify company names" in its identify()); RawTherapee
# keys its .badpixels files on the maker and model its dcraw/LibRaw code derives this way.
_MAKERS = ("AgfaPhoto", "Canon", "Casio", "Epson", "Fujifilm", "Mamiya", "Minolta", "Motorola",
           "Kodak", "Konica", "Leica", "Nikon", "Nokia", "Olympus", "Pentax", "Phase One",
           "Ricoh", "Samsung", "Sigma", "Sinar", "Sony")


def rawtherapee_file_name(make, model, serial=None) -> str:
    """RawTherapee's file name for a camera's bad pixel list.

    Parameters
    ----------
    make, model : str or None
        EXIF ``Make`` and ``Model`` of the photos.
    serial : str, optional
        The body's serial number: the per-body name RawTherapee looks for
        first.

    Returns
    -------
    str
        ``"<Make> <Model>.badpixels"``, e.g. ``"Nikon D750.badpixels"`` for
        ``Make="NIKON CORPORATION"``, ``Model="NIKON D750"``; with a serial
        ``"<Make> <Model> <serial>.badpixels"`` (``"Nikon D750 3012345.badpixels"``).

    Raises
    ------
    HotPixelError
        If make or model is missing or blank.

    Notes
    -----
    RawTherapee looks for ``"<maker> <model>.badpixels"`` (or ``"<maker>
    <model> <serial>.badpixels"``) using the names its raw decoder derives from
    the EXIF tags.  This follows dcraw's rules: runs of whitespace collapse to
    one space and trailing spaces go; a known maker found anywhere in ``Make``
    (case-insensitive) replaces it (``"NIKON CORPORATION"`` -> ``"Nikon"``);
    a model starting with ``PENTAX`` makes the maker ``Pentax``; the maker is
    removed from the start of the model (``"Canon EOS 6D"`` -> ``"EOS 6D"``);
    ``/`` (impossible in a file name) becomes ``_``.  For cameras with unusual
    names RawTherapee's own spelling may still differ; with verbose output on,
    RawTherapee prints the name it looked for (``"... .badpixels not found"``).
    """
    make = " ".join(str(make or "").replace("\x00", " ").split())
    model = " ".join(str(model or "").replace("\x00", " ").split())
    if not make or not model:
        raise HotPixelError(
            "the camera make/model is unknown (no EXIF Make/Model in the photos), so the "
            "RawTherapee file name cannot be derived: give a file name instead of a directory, "
            "named '<Make> <Model>.badpixels' as RawTherapee spells the camera")
    for maker in _MAKERS:
        if maker.lower() in make.lower():
            make = maker
            break
    if model.lower().startswith("pentax"):
        make = "Pentax"
    if model.lower().startswith(make.lower() + " "):
        model = model[len(make) + 1:]
    serial = " ".join(str(serial or "").replace("\x00", " ").split())
    name = f"{make} {model} {serial}" if serial else f"{make} {model}"
    return printable(name.replace("/", "_")) + ".badpixels"


def write_rawtherapee(path_or_dir, defects, *, make=None, model=None, serial=None,
                      frame=None, lines=()) -> str:
    """Write a RawTherapee ``.badpixels`` file: ``x y`` per line.

    Parameters
    ----------
    path_or_dir : path-like
        A file name, or an existing directory (e.g. RawTherapee's dark-frame
        directory) in which the file is named by :func:`rawtherapee_file_name`.
    defects : iterable of Defect or mapping
        Every defective pixel is listed once, sorted by row then column.
    make, model : str, optional
        EXIF ``Make``/``Model``; required when ``path_or_dir`` is a directory.
    serial : str, optional
        The body's serial: in a directory the file gets RawTherapee's
        per-body name ``"<Make> <Model> <serial>.badpixels"``.
    frame : frames.Frame, optional
        RawTherapee's frame (its raw crop) for the analysed raw files; None:
        the analysis frame.
    lines : iterable of LineDefect or mapping, optional
        Bad columns and rows: each of their pixels is listed.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    HotPixelError
        If a directory is given without a usable make and model, or the file
        cannot be written.

    Notes
    -----
    RawTherapee reads every ``.badpixels`` file in the dark-frame directory
    (Preferences > Image Processing > Dark-Frame) and always corrects the
    listed pixels of raw files whose camera matches the file name.  Its reader
    takes every line that starts with two integers as ``x y`` and ignores the
    others, so the ``#`` header lines here are skipped.  One quirk: a *first*
    line holding a single integer is read as an offset added to every
    coordinate, which is why this file never starts with a number.

    Coordinates: column ``x``, row ``y``, 0-based, in the stored pixel array
    (EXIF orientation not applied).  RawTherapee applies them to the raw
    mosaic, so they match when the analysed photos were raw files read as
    their raw (visible-area) mosaic.  Example line: ``1234 567``.
    """
    target = os.fspath(path_or_dir)
    if os.path.isdir(target):
        target = os.path.join(os.fsdecode(target), rawtherapee_file_name(make, model, serial))
    _write_pixel_list(target, list(defects) + _line_pixels(lines),
                      "bad pixels for RawTherapee (dark-frame directory, '<Make> <Model>.badpixels')",
                      "format: x y (lines not starting with two integers are ignored)",
                      lambda x, y, d: f"{x} {y}", frame)
    return os.fsdecode(target)


def write_siril(path, defects, frame=None, lines=()) -> None:
    """Write a Siril cosmetic-correction list: ``P x y H`` or ``P x y C`` per pixel.

    Parameters
    ----------
    path : path-like
        Output file; written atomically.  Siril's ``cosme`` commands expect
        the ``.lst`` extension (they add it when it is missing).
    defects : iterable of Defect or mapping
        Every defective pixel is listed once, sorted by row then column.
    frame : frames.Frame, optional
        Siril's frame (the CFA image it loads through LibRaw: no shift); its
        note goes into the header.
    lines : iterable of LineDefect or mapping, optional
        Bad columns and rows, after the pixels: ``C x 0 T`` (column ``x``)
        and ``L y 0 T`` (row ``y``), ``T`` being ``H`` for a positive offset
        and ``C`` for a negative one.  Siril corrects the whole column or
        row (from its neighbours), also where the defect covers only part.

    Notes
    -----
    Siril's ``cosme``, ``cosme_cfa``, ``seqcosme`` and ``seqcosme_cfa``
    commands read this file: a line starting with ``#`` is a comment; ``P x y
    T`` fixes one pixel, ``T`` being ``H`` (hot: replaced by the mean of its
    neighbours) or ``C`` (cold: replaced by their median).  ``dead`` defects
    are written as ``C``; ``hot``, ``stuck`` and ``noisy`` as ``H``.  Siril
    reports any other line (even an empty one) as a format error, so the file
    has none.  Use the ``_cfa`` variants on undebayered raw (CFA) frames, so
    that only same-colour neighbours are used.

    Coordinates need no conversion.  Siril stores images bottom-up (FITS
    order), but its reader flips the row itself (``y_internal = height - 1 -
    y``, and ``find_hot`` flips the other way when writing), so in the file
    ``x`` is the 0-based column and ``y`` the 0-based row counted from the
    top: the same frame as here (stored pixel array, EXIF orientation not
    applied).  They match Siril's image when Siril loads the same frame (raw
    files as their raw mosaic, or the same JPEG/TIFF/PNG files).  Example
    line: ``P 1234 567 H``.
    """
    def line_entries(dx, dy):
        for ln in lines or ():
            kind, index, _, _, offset, _ = line_fields(ln)
            t = "C" if offset < 0 else "H"
            yield f"C {index + dx} 0 {t}" if kind == "column" else f"L {index + dy} 0 {t}"

    _write_pixel_list(path, defects, "bad pixels for Siril (cosme / cosme_cfa)",
                      "format: P x y T, C x 0 T (column), L y 0 T (row); "
                      "T = H (hot, stuck, noisy) or C (cold = dead)",
                      lambda x, y, d: f"P {x} {y} {'C' if defect_field(d, 'kind') == 'dead' else 'H'}",
                      frame, extra=line_entries)


def write_mask(path, defects, shape, lines=()) -> None:
    """Write an 8-bit grayscale PNG mask: 255 at defective pixels, 0 elsewhere.

    Parameters
    ----------
    path : path-like
        Output file; written atomically.
    defects : iterable of Defect or mapping
        Each defect marks its ``(x, y)``.
    shape : sequence of int
        ``(height, width)`` or ``(height, width, channels)`` of the photos;
        the mask is ``width`` pixels wide and ``height`` tall.
    lines : iterable of LineDefect or mapping, optional
        Bad columns and rows: each of their pixels is marked.

    Raises
    ------
    HotPixelError
        If a defect lies outside the image, or the file cannot be written.

    Notes
    -----
    Pixel ``(x, y)`` of the PNG is column ``x``, row ``y`` of the stored pixel
    array (EXIF orientation not applied; PNG has no orientation tag either).
    """
    height, width = int(shape[0]), int(shape[1])
    mask = np.zeros((height, width), dtype=np.uint8)
    for x, y, _ in _unique_pixels(list(defects) + _line_pixels(lines)):
        if x >= width or y >= height:
            raise HotPixelError(f"defect at x={x}, y={y} lies outside the {width}x{height} image")
        mask[y, x] = 255
    image = Image.fromarray(mask)
    atomic_write(path, lambda f: image.save(f, format="PNG"), mode="wb")
