"""Speed and memory of hotpixel_shm against the article's program and the decode floor.

Default mode: on a set of photo-like JPEGs (made once and cached, or taken
from ``--images DIR``) run, side by side and alternating over ``--rounds``
rounds so that machine drift cancels, each command as a separate subprocess
whose whole process tree's peak memory (PSS: shared memory counted once) is
sampled with :class:`hotpixel_shm.memwatch.PeakMemory`:

a. ``article``: the article's naive program (``scripts/article_baseline.py``);
b. ``decode-pillow`` and ``decode-simplejpeg``: decode-only bounds, the files
   spread over the same number of processes, nothing computed;
c. ``hps-<tier>`` (``python -m hotpixel_shm FILES --workers W --dtype <tier>
   -q --json out.json``) for every tier, and ``hps-auto-workers``
   (``--auto-workers``): the whole command as a user runs it (probing,
   planning, statistics, detection, report), with the compiled kernels when
   they are built and K photos per accumulator pass as planned;
   ``hps-auto-numpy`` the same on the numpy kernels, ``hps-auto-k1`` with
   ``--batch 1``, and with ``--compare-with DIR`` ``hps-auto-before``, the
   same command from another checkout (before/after in one run).

Then, unless ``--small-count 0``, the decode bounds and the ``--auto-workers``
rows once more on the first 12 photos: the fixed costs' target.

The medians go to ``bench.md`` (Markdown) and ``bench.json`` in ``--out``,
with the machine, and PASS/FAIL against the targets.

``--scaling``: cost per image and peak memory as the set grows
(``--scaling-counts``, default 10, 40, 160 images).

``--kernels``: the update kernel of each tier, compiled and numpy, one photo
or four per pass (``Accumulator.update_batch`` of in-memory frames), against
a memory copy of the accumulator's size, the decode of the same frame, the
merge of two accumulators, and the temporal residual statistics of the frame
(``ResidualAccumulator.update_batch``, compiled and numpy, K = 1 and 4).

``--profile``: where the time of one hotpixel_shm run goes (cProfile of the
in-process serial path, and of the parent of a parallel run), by phase.

``--memory``: the memory ladder.  For each tier, worker count
(``--memory-workers``, default 1,2) and band count (``--memory-bands``,
default 1), one run of ``python -m hotpixel_shm FILES --workers W --dtype T
--bands B -q --json out.json`` on the set (default 12 images); prints the
table tier, workers, bands, planned bytes (from the report), measured peak of
the process tree, and planned / peak.

Examples::

    python scripts/bench.py                       # 40 x 24 MP, 3 rounds, 2 workers
    python scripts/bench.py --images ~/Pictures/trip --rounds 5
    python scripts/bench.py --scaling --width 3000 --height 2000
    python scripts/bench.py --kernels
    python scripts/bench.py --profile --count 20
    python scripts/bench.py --memory --count 12
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import psutil
from PIL import Image

from hotpixel_shm import __version__ as _HPS_VERSION
from hotpixel_shm.memwatch import PeakMemory
from hotpixel_shm.synth import make_photo_like
from hotpixel_shm.tiers import TIERS

try:
    import resource
except ImportError:  # not POSIX: no CPU times
    resource = None
try:
    import simplejpeg
except ImportError:  # the product falls back to Pillow; so does the bound
    simplejpeg = None

__all__ = [
    "Command", "machine_info", "make_image_set", "decode_only", "measure",
    "build_commands", "run_commands", "summarise", "check_targets", "write_report",
    "scaling", "kernels", "profile", "main", "TARGETS", "ROW_FIELDS",
]

_HERE = os.path.dirname(os.path.abspath(__file__))
_ARTICLE = os.path.join(_HERE, "article_baseline.py")
_DEFAULT_OUT = os.path.join(os.path.dirname(_HERE), "bench-out")

#: The targets (2 workers, 40 x 24 MP JPEG q90; the small set: 12 photos):
#: name -> (description, limit).
TARGETS = {
    "vs_decode": ("--auto-workers, whole command / fastest decode-only bound", 1.3),
    "vs_article": ("article's time / --auto-workers' time (speed-up)", 12.0),
    "float32_memory": ("float32 tier peak memory / article's peak memory", 0.25),
    "small_vs_decode": ("small set: --auto-workers, whole command / fastest decode-only bound", 1.8),
}
#: Keys every row of the results has (the smoke test checks them).
ROW_FIELDS = ("name", "label", "kind", "tier", "workers", "seconds", "median_seconds",
              "cpu_seconds", "median_cpu_seconds", "images_per_s", "megapixels_per_s",
              "peak_bytes", "peak_bytes_max", "time_vs_article", "time_vs_decode",
              "peak_vs_article", "cpu_vs_article", "cpu_vs_decode", "ok", "error")


# --------------------------------------------------------------------------- machine

def machine_info() -> dict:
    """The machine the numbers were measured on.

    Returns
    -------
    dict
        ``cpu`` (model name from ``/proc/cpuinfo``), ``cores`` (logical CPUs),
        ``usable_cores`` (this process's affinity), ``ram_bytes``, ``python``,
        ``numpy``, ``pillow``, ``simplejpeg``, ``hotpixel_shm``, ``system``.
    """
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    import PIL
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_bytes": int(psutil.virtual_memory().total),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "simplejpeg": getattr(simplejpeg, "__version__", None) if simplejpeg else None,
        "hotpixel_shm": _HPS_VERSION,
        "system": f"{platform.system()} {platform.release()}",
    }


# --------------------------------------------------------------------------- the image set

#: what ``--memory-format`` makes: JPEG (8-bit RGB), 16-bit greyscale PNG, DNG
#: (an uncompressed 16-bit Bayer mosaic, 12-bit values)
_FORMATS = {"jpeg": ".jpg", "png16": ".png", "dng": ".dng"}


def _write_frame(task):
    path, height, width, quality, seed = task[:5]
    fmt = task[5] if len(task) > 5 else "jpeg"
    frame = make_photo_like(height, width, seed)
    tmp = path + ".part"
    if fmt == "jpeg":
        # Pillow's default JPEG settings (4:2:0, baseline), as most cameras write.
        Image.fromarray(frame).save(tmp, "JPEG", quality=quality)
    else:
        # 16-bit levels from the green channel, with the fine grain of 16 bits
        rng = np.random.default_rng(seed)
        levels = frame[..., 1].astype(np.uint16) * np.uint16(16 if fmt == "dng" else 256)
        levels += rng.integers(0, 16 if fmt == "dng" else 256, size=levels.shape, dtype=np.uint16)
        if fmt == "png16":
            Image.fromarray(levels).save(tmp, "PNG")     # I;16
        else:
            from hotpixel_shm.dng import write_dng
            write_dng(tmp, levels, pattern="RGGB", white=4095)
    os.replace(tmp, path)
    return path


def _pool_context():
    # fork: the frame generator is a module-level function of this script,
    # which a spawned child could not import when the script was loaded by path.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def make_image_set(out_dir: str, count: int, width: int, height: int, quality: int,
                   processes: int = 2, fmt: str = "jpeg") -> List[str]:
    """Photo-like JPEGs (or 16-bit PNGs or DNGs: ``fmt``), generated once and cached in ``out_dir``.

    Parameters
    ----------
    out_dir : str
        Cache directory, e.g. ``bench-out/set-6000x4000-q90-n40``.  A set is
        reused when its ``set.json`` (written last) says it is complete.
    count, width, height, quality : int
        The set: ``count`` frames of ``width`` x ``height``, JPEG quality.
    processes : int
        Processes generating frames (24 MP frames take about a second each).

    Returns
    -------
    list of str
        The files, in order.
    """
    marker = os.path.join(out_dir, "set.json")
    names = [f"photo_{i:04d}{_FORMATS[fmt]}" for i in range(count)]
    paths = [os.path.join(out_dir, n) for n in names]
    want = {"count": count, "width": width, "height": height, "quality": quality,
            "files": names}
    if fmt != "jpeg":
        want["format"] = fmt
    try:
        with open(marker, encoding="utf-8") as fh:
            have = json.load(fh)
        if have == want and all(os.path.isfile(p) for p in paths):
            return paths
    except (OSError, ValueError):
        pass
    os.makedirs(out_dir, exist_ok=True)
    todo = [(p, height, width, quality, 1000 + i, fmt) for i, p in enumerate(paths)
            if not os.path.isfile(p)]
    if todo:
        print(f"making {len(todo)} photo-like {fmt} files of {width}x{height} (q{quality}) in {out_dir} ...",
              flush=True)
        t0 = time.perf_counter()
        if processes > 1 and len(todo) > 1:
            with _pool_context().Pool(processes) as pool:
                for _ in pool.imap_unordered(_write_frame, todo):
                    pass
        else:
            for t in todo:
                _write_frame(t)
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    with open(marker + ".part", "w", encoding="utf-8") as fh:
        json.dump(want, fh)
    os.replace(marker + ".part", marker)
    return paths


def _find_images(directory):
    from hotpixel_shm.inputs import expand_paths
    files, _ = expand_paths([directory])
    return files


def _frame_size(path):
    if path.lower().endswith(".dng"):
        from hotpixel_shm.inputs import probe
        h = probe(path)
        return h.shape[1], h.shape[0]
    with Image.open(path) as im:
        return im.size  # (width, height)


# --------------------------------------------------------------------------- decode-only bounds

_BUFFER = None


def _decode_pillow_one(path):
    # What a naive program does: a fresh array per image.
    return np.asarray(Image.open(path)).shape


def _decode_simplejpeg_one(path):
    # The product's fast path: libjpeg-turbo into a reused buffer, with the
    # same accurate DCT and smooth upsampling (so the same pixels) as the product.
    global _BUFFER
    with open(path, "rb") as fh:
        data = fh.read()
    h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    if _BUFFER is None or _BUFFER.shape != (h, w, 3):
        _BUFFER = np.empty((h, w, 3), np.uint8)
    simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False,
                           buffer=_BUFFER)
    return _BUFFER.shape


_DECODERS = {"pillow": _decode_pillow_one, "simplejpeg": _decode_simplejpeg_one}


def decode_only(decoder: str, files: List[str], workers: int) -> int:
    """Decode ``files`` over ``workers`` processes and do nothing else.

    Parameters
    ----------
    decoder : {"pillow", "simplejpeg"}
    files : list of str
    workers : int
        Processes; files are handed out one at a time (a queue), as the
        product does.

    Returns
    -------
    int
        Files decoded.
    """
    if decoder == "simplejpeg" and simplejpeg is None:
        raise SystemExit("simplejpeg is not installed")
    fn = _DECODERS[decoder]
    if workers <= 1:
        return sum(1 for f in files if fn(f))
    with _pool_context().Pool(workers) as pool:
        return sum(1 for _ in pool.imap_unordered(fn, files, chunksize=1))


# --------------------------------------------------------------------------- measuring

@dataclass
class Command:
    """One benchmarked command line.

    Attributes
    ----------
    name : str
        Short key (``article``, ``decode-simplejpeg``, ``hps-float32`` ...).
    label : str
        What the report shows.
    kind : {"article", "decode", "hotpixel"}
    argv : list of str
    workers : int or None
        Worker processes; None when the program chooses (``--auto-workers``).
    tier : str or None
        The accumulator tier asked for (None: the program chooses).
    json_path : str or None
        The report a hotpixel_shm run writes (checked after each run).
    env : dict or None
        Environment variables added for this command.
    runs : list of dict
        One :func:`measure` result per round, with ``round``, ``log``,
        ``error`` (and ``engine`` from the report).
    """

    name: str
    label: str
    kind: str                       # "article", "decode" or "hotpixel"
    argv: List[str]
    workers: Optional[int]
    tier: Optional[str] = None
    json_path: Optional[str] = None
    runs: List[dict] = field(default_factory=list)
    #: environment variables set for this command (e.g. the kernels)
    env: Optional[dict] = None


def measure(argv: List[str], log_path: str, interval: float = 0.05, env: Optional[dict] = None) -> dict:
    """Run ``argv`` as a subprocess; its wall time and its process tree's peak memory.

    Parameters
    ----------
    argv : list of str
    log_path : str
        The command's stdout and stderr go here.
    interval : float
        Seconds between memory samples.
    env : dict, optional
        Environment variables to add.

    Returns
    -------
    dict
        ``seconds`` (from start to exit, interpreter start-up included),
        ``cpu_seconds`` (user + system CPU time of the whole tree; None where
        ``resource`` is missing), ``peak_bytes`` (largest PSS sum of the tree),
        ``returncode``, ``load_before`` (1-minute load average at the start).
    """
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN) if resource else None
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env=None if env is None else {**os.environ, **env})
        try:
            with PeakMemory(proc.pid, interval=interval) as peak:
                rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        seconds = time.perf_counter() - t0
    cpu = None
    if resource:
        # The CPU time of the whole tree (children reaped by the command are
        # included once it is waited for): unlike wall time it hardly changes
        # when other programs compete for the cores.
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_bytes": int(peak.peak_bytes),
            "returncode": rc, "load_before": load}


def build_commands(files: List[str], workers: int, out_dir: str, *,
                   tiers=TIERS, auto_workers: bool = True, default_row: bool = False,
                   suffix: str = "", kernel_rows: bool = True,
                   compare_with: Optional[str] = None) -> List[Command]:
    """The benchmarked commands, as a user would type them.

    Parameters
    ----------
    files : list of str
    workers : int
    out_dir : str
        Where the hotpixel_shm runs write their JSON reports.
    tiers : sequence of str
        One ``hps-<tier>`` row per tier (``--dtype <tier>``).
    auto_workers : bool
        Add the ``hps-auto-workers`` row (the recommended command).
    default_row : bool
        Add ``hps-default``: ``--workers W`` with the default ``--dtype auto``.
    suffix : str
        Appended to the report file names (keeps scaling runs apart).
    kernel_rows : bool
        With ``auto_workers``: add ``hps-auto-numpy`` (the numpy kernels,
        ``HOTPIXEL_SHM_KERNELS=numpy``) and ``hps-auto-k1`` (one photo per
        accumulator pass, ``--batch 1``) beside the default (compiled kernels
        when built, K from the plan).
    compare_with : str, optional
        Another checkout of hotpixel_shm: add ``hps-auto-before``, the same
        ``--auto-workers`` command run from it (``PYTHONPATH``), for a
        before/after comparison in one run.

    Returns
    -------
    list of Command
    """
    py = sys.executable
    me = os.path.abspath(__file__)
    w = str(workers)
    cmds = [
        Command("article", f"article's program ({w} processes)", "article",
                [py, _ARTICLE, "--processes", w, *files], workers),
        Command("decode-pillow", f"decode only: Pillow ({w} processes)", "decode",
                [py, me, "--decode-only", "pillow", "--workers", w, *files], workers),
    ]
    if simplejpeg is not None:
        cmds.append(Command("decode-simplejpeg", f"decode only: simplejpeg ({w} processes)",
                            "decode", [py, me, "--decode-only", "simplejpeg", "--workers", w,
                                       *files], workers))
    hps = [py, "-m", "hotpixel_shm", *files]

    def add(name, label, extra, workers_, tier, env=None):
        jp = os.path.join(out_dir, f"run-{name}{suffix}.json")
        cmds.append(Command(name, label, "hotpixel", [*hps, *extra, "-q", "--json", jp],
                            workers_, tier, jp, env=env))

    if default_row:
        add("hps-default", f"hotpixel_shm --workers {w}", ["--workers", w], workers, None)
    for t in tiers:
        add(f"hps-{t}", f"hotpixel_shm --workers {w} --dtype {t}",
            ["--workers", w, "--dtype", t], workers, t)
    if auto_workers:
        add("hps-auto-workers", "hotpixel_shm --auto-workers", ["--auto-workers"], None, None)
        if kernel_rows:
            add("hps-auto-numpy", "hotpixel_shm --auto-workers (numpy kernels)", ["--auto-workers"],
                None, None, {"HOTPIXEL_SHM_KERNELS": "numpy"})
            add("hps-auto-k1", "hotpixel_shm --auto-workers --batch 1", ["--auto-workers", "--batch", "1"],
                None, None)
        if compare_with:
            # -P: the current directory must not shadow the other checkout
            before = os.path.basename(os.path.normpath(compare_with))
            jp = os.path.join(out_dir, f"run-hps-auto-before{suffix}.json")
            cmds.append(Command("hps-auto-before", f"hotpixel_shm --auto-workers, from {before}",
                                "hotpixel", [py, "-P", "-m", "hotpixel_shm", *files, "--auto-workers",
                                             "-q", "--json", jp], None, None, jp,
                                env={"PYTHONPATH": os.path.abspath(compare_with)}))
    return cmds


def _check_run(cmd: Command, run: dict, count: int) -> Optional[str]:
    """Why a run does not count (None if it does)."""
    if run["returncode"] != 0:
        return f"exit code {run['returncode']} (see {run['log']})"
    if cmd.kind != "hotpixel":
        return None
    try:
        with open(cmd.json_path, encoding="utf-8") as fh:
            report = json.load(fh)
    except (OSError, ValueError) as exc:
        return f"no JSON report: {exc}"
    run["engine"] = report.get("engine", {})
    used = report.get("images", {}).get("used")
    if used != count:
        return f"{used} of {count} images used"
    return None


def run_commands(cmds: List[Command], rounds: int, log_dir: str, count: int,
                 interval: float = 0.05, label: str = "") -> None:
    """Run every command ``rounds`` times, alternating, and record each run in ``cmd.runs``.

    Parameters
    ----------
    cmds : list of Command
    rounds : int
    log_dir : str
        Each run's output goes to ``<name><label>-r<round>.log`` here.
    count : int
        Images in the set (a hotpixel_shm run that used fewer failed).
    interval : float
        Seconds between memory samples.
    label : str
        Added to the log names and the progress lines.

    Notes
    -----
    Each round starts one command later than the previous one, so neither
    the order nor a slow drift of the machine favours a command.
    """
    os.makedirs(log_dir, exist_ok=True)
    for r in range(rounds):
        k = r % len(cmds)
        for cmd in cmds[k:] + cmds[:k]:
            if cmd.json_path and os.path.exists(cmd.json_path):
                os.remove(cmd.json_path)  # a stale report must not pass for this run's
            log = os.path.join(log_dir, f"{cmd.name}{label}-r{r + 1}.log")
            run = measure(cmd.argv, log, interval, cmd.env)
            run["round"] = r + 1
            run["log"] = log
            run["error"] = _check_run(cmd, run, count)
            cmd.runs.append(run)
            status = "ok" if run["error"] is None else f"FAILED: {run['error']}"
            cpu = "" if run["cpu_seconds"] is None else f"{run['cpu_seconds']:8.2f} s CPU  "
            load = "" if run["load_before"] is None else f"load {run['load_before']:.1f}  "
            print(f"  round {r + 1}/{rounds}{label}  {cmd.name:20s} {run['seconds']:8.2f} s  "
                  f"{cpu}{run['peak_bytes'] / 2**20:9.0f} MiB  {load}{status}", flush=True)


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def summarise(cmds: List[Command], count: int, megapixels: float) -> dict:
    """Medians and ratios of the measured runs.

    Parameters
    ----------
    cmds : list of Command
        With their ``runs`` filled by :func:`run_commands`.
    count : int
        Images in the set.
    megapixels : float
        Megapixels of one image.

    Returns
    -------
    dict
        ``rows`` (one dict per command with the keys of :data:`ROW_FIELDS`,
        plus ``engine`` for hotpixel_shm rows), ``fastest_decode`` (name of the
        fastest decode-only bound) and ``default_tier`` (the tier the
        ``--dtype auto`` plan chose, from the ``--auto-workers`` report).
    """
    rows = []
    for c in cmds:
        good = [r for r in c.runs if r["error"] is None]
        errors = [r["error"] for r in c.runs if r["error"] is not None]
        secs = [r["seconds"] for r in good]
        med = statistics.median(secs) if secs else None
        cpus = [r["cpu_seconds"] for r in good if r.get("cpu_seconds") is not None]
        peaks = [r["peak_bytes"] for r in good]
        engine = good[-1].get("engine") if good else None
        rows.append({
            "name": c.name, "label": c.label, "kind": c.kind,
            "tier": c.tier or (engine or {}).get("dtype"),
            "workers": c.workers or (engine or {}).get("workers"),
            "batch": (engine or {}).get("batch"),
            "kernels": (engine or {}).get("kernels"),
            "seconds": secs,
            "median_seconds": med,
            "cpu_seconds": cpus,
            "median_cpu_seconds": statistics.median(cpus) if cpus else None,
            "load_before": [r.get("load_before") for r in good],
            "images_per_s": count / med if med else None,
            "megapixels_per_s": count * megapixels / med if med else None,
            "peak_bytes": peaks,
            # the largest of the rounds: a sampling monitor can only miss a peak
            "peak_bytes_max": max(peaks) if peaks else None,
            "ok": not errors and bool(good),
            "error": errors[0] if errors else None,
            "engine": engine,
            "command": _display_argv(c.argv, count),
        })
    by = {r["name"]: r for r in rows}
    decodes = [r for r in rows if r["kind"] == "decode" and r["median_seconds"]]
    fastest = min(decodes, key=lambda r: r["median_seconds"]) if decodes else None
    art = by.get("article")
    for r in rows:
        r["time_vs_article"] = _ratio(r["median_seconds"], art and art["median_seconds"])
        r["time_vs_decode"] = _ratio(r["median_seconds"], fastest and fastest["median_seconds"])
        r["peak_vs_article"] = _ratio(r["peak_bytes_max"], art and art["peak_bytes_max"])
        r["cpu_vs_article"] = _ratio(r["median_cpu_seconds"], art and art["median_cpu_seconds"])
        r["cpu_vs_decode"] = _ratio(r["median_cpu_seconds"],
                                    fastest and fastest["median_cpu_seconds"])
    auto = by.get("hps-auto-workers")
    default = (auto or {}).get("tier") if auto and auto["ok"] else None
    if default is None:  # no auto-workers run: the most accurate tier measured
        default = next((r["tier"] for r in rows if r["kind"] == "hotpixel" and r["tier"]
                        and r["ok"]), None)
    return {"rows": rows, "fastest_decode": fastest["name"] if fastest else None,
            "default_tier": default}


def _display_argv(argv, count):
    """The command line with the file list folded (the files are listed once, elsewhere)."""
    out, folded = [], False
    for a in argv:
        if a.lower().endswith((".jpg", ".jpeg")) and os.path.isfile(a):
            if not folded:
                out.append(f"<{count} files>")
                folded = True
            continue
        out.append(os.path.basename(a) if a == sys.executable else a)
    return " ".join(out)


def check_targets(summary: dict) -> List[dict]:
    """PASS/FAIL of each target of :data:`TARGETS` (FAIL when a row is missing).

    Returns
    -------
    list of dict
        ``name``, ``text``, ``value`` (None if it could not be measured),
        ``limit``, ``passed``.
    """
    by = {r["name"]: r for r in summary["rows"]}
    # the whole command as a user runs it; the default tier's row without it
    default = by.get("hps-auto-workers") or (
        by.get(f"hps-{summary['default_tier']}") if summary["default_tier"] else None)
    f32 = by.get("hps-float32")
    art = by.get("article")
    vs_decode = default and default["time_vs_decode"]
    speedup = _ratio(art and art["median_seconds"], default and default["median_seconds"])
    mem = f32 and f32["peak_vs_article"]
    # The same ratios in CPU time, for reading a run on a busy machine (the
    # verdict is on wall time, as the targets are stated).
    cpu = {"vs_decode": default and default["cpu_vs_decode"],
           "vs_article": _ratio(art and art["median_cpu_seconds"],
                                default and default["median_cpu_seconds"]),
           "float32_memory": None}
    checks = [("vs_decode", vs_decode, lambda v: v <= TARGETS["vs_decode"][1]),
              ("vs_article", speedup, lambda v: v >= TARGETS["vs_article"][1]),
              ("float32_memory", mem, lambda v: v <= TARGETS["float32_memory"][1])]
    small = summary.get("small")
    if small is not None:
        sby = {r["name"]: r for r in small["rows"]}
        s_auto = sby.get("hps-auto-workers")
        cpu["small_vs_decode"] = s_auto and s_auto["cpu_vs_decode"]
        checks.append(("small_vs_decode", s_auto and s_auto["time_vs_decode"],
                       lambda v: v <= TARGETS["small_vs_decode"][1]))
    out = []
    for name, value, ok in checks:
        text, limit = TARGETS[name]
        if name == "small_vs_decode":
            text = text.replace("small set", f"{small['count']} photos")
        out.append({"name": name, "text": text, "value": value, "limit": limit,
                    "passed": bool(value is not None and ok(value)),
                    "cpu_value": cpu[name]})
    return out


# --------------------------------------------------------------------------- reports

def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def _mib(b):
    return None if b is None else b / 2**20


def _machine_md(m):
    return (f"{m['cpu']}, {m['cores']} logical CPUs ({m['usable_cores']} usable), "
            f"{m['ram_bytes'] / 2**30:.1f} GiB RAM; {m['system']}; Python {m['python']}, "
            f"numpy {m['numpy']}, Pillow {m['pillow']}, simplejpeg {m['simplejpeg']}, "
            f"hotpixel_shm {m['hotpixel_shm']}")


def _rows_md(rows, first_col=None):
    head = ["command", "workers", "tier", "kernels", "K", "median s", "images/s", "MP/s", "peak MiB",
            "t / article", "t / decode", "peak / article", "CPU s", "CPU / decode"]
    if first_col:
        head.insert(0, first_col[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], _fmt(r["workers"], ""), r["tier"] or "",
                 r.get("kernels") or "", _fmt(r.get("batch"), ""),
                 _fmt(r["median_seconds"], ".2f"), _fmt(r["images_per_s"], ".2f"),
                 _fmt(r["megapixels_per_s"], ".1f"), _fmt(_mib(r["peak_bytes_max"]), ".0f"),
                 _fmt(r["time_vs_article"], ".3f"), _fmt(r["time_vs_decode"], ".2f"),
                 _fmt(r["peak_vs_article"], ".3f"), _fmt(r["median_cpu_seconds"], ".1f"),
                 _fmt(r["cpu_vs_decode"], ".2f")]
        if first_col:
            cells.insert(0, str(r[first_col[1]]))
        if not r["ok"]:
            cells[0] += f" (FAILED: {r['error']})"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _targets_md(targets):
    lines = []
    for t in targets:
        op = ">=" if t["name"] == "vs_article" else "<="
        verdict = "PASS" if t["passed"] else "FAIL"
        cpu = "" if t.get("cpu_value") is None else f"; in CPU time: {t['cpu_value']:.3f}"
        lines.append(f"- **{verdict}** {t['text']}: {_fmt(t['value'], '.3f')} "
                     f"(target {op} {t['limit']}{cpu})")
    return lines


def write_report(out_dir: str, result: dict, stem: str = "bench") -> tuple:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``.

    Parameters
    ----------
    out_dir : str
    result : dict
        ``machine``, ``set``, ``workers``, ``rounds``, ``rows`` and optionally
        ``targets``, ``fastest_decode``, ``default_tier``, ``scaling``.
    stem : str

    Returns
    -------
    (str, str)
        The JSON and Markdown paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    jpath = os.path.join(out_dir, stem + ".json")
    mpath = os.path.join(out_dir, stem + ".md")
    with open(jpath + ".part", "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    os.replace(jpath + ".part", jpath)
    s = result["set"]
    lines = [f"# hotpixel_shm benchmark ({stem})", "",
             f"Machine: {_machine_md(result['machine'])}.", "",
             f"Set: {s['count']} JPEGs of {s['width']}x{s['height']} "
             f"({s['megapixels']:.1f} MP, quality {s['quality']}, "
             f"{s['mean_file_bytes'] / 1e6:.2f} MB on average){' (generated, photo-like)' if s['generated'] else ''}; "
             f"{result['workers']} workers; median of {result['rounds']} alternating round(s); "
             "peak = largest PSS sum of the whole process tree (shared memory counted once); "
             "wall time includes interpreter start-up; CPU s = user + system time of the "
             "whole process tree (less sensitive than wall time to other load on the machine).",
             ""]
    if "scaling" in result:
        lines += _rows_md(result["rows"], ("images", "count"))
        lines += ["", "Per image (seconds per image; peak memory):", ""]
        lines += ["| command | " + " | ".join(f"{n} images" for n in result["scaling"]["counts"]) + " |",
                  "|---|" + "---|" * len(result["scaling"]["counts"])]
        for name, cells in result["scaling"]["per_image"].items():
            lines.append(f"| {name} | " + " | ".join(
                f"{_fmt(c['seconds_per_image'], '.3f')} s, {_fmt(_mib(c['peak_bytes']), '.0f')} MiB"
                for c in cells) + " |")
    else:
        lines += _rows_md(result["rows"])
        lines += ["", f"t / decode is against the fastest decode-only bound "
                  f"({result.get('fastest_decode')}); the default tier (chosen by "
                  f"`--dtype auto`) is {result.get('default_tier')}.", ""]
    if result.get("small"):
        sm = result["small"]
        lines += ["", f"Small set: the first {sm['count']} photos (fixed costs weigh more):", ""]
        lines += _rows_md(sm["rows"])
    if result.get("targets"):
        lines += ["", "Targets:", ""] + _targets_md(result["targets"])
    with open(mpath + ".part", "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(mpath + ".part", mpath)
    return jpath, mpath


# --------------------------------------------------------------------------- the modes

def _prepare_set(args, count, fmt="jpeg"):
    if args.images:
        files = _find_images(args.images)
        if count is not None:
            files = files[:count]
        generated = False
        quality = None
    else:
        sub = f"set-{args.width}x{args.height}-q{args.quality}-n{count}"
        if fmt != "jpeg":
            sub = f"set-{fmt}-{args.width}x{args.height}-n{count}"
        files = make_image_set(os.path.join(args.out, sub), count, args.width, args.height,
                               args.quality, processes=max(1, args.workers), fmt=fmt)
        generated = True
        quality = args.quality
    if not files:
        raise SystemExit(f"no image files in {args.images}")
    w, h = _frame_size(files[0])
    # Read every file once so that no command pays for a cold page cache.
    sizes = []
    for f in files:
        with open(f, "rb") as fh:
            sizes.append(len(fh.read()))
    info = {"count": len(files), "width": w, "height": h, "megapixels": w * h / 1e6,
            "quality": quality, "generated": generated,
            "mean_file_bytes": sum(sizes) / len(sizes), "total_bytes": sum(sizes),
            "dir": os.path.dirname(os.path.abspath(files[0]))}
    return files, info


def _selected(cmds, only, strict=True):
    """The commands named in ``only`` (all without it); ``strict``: a name
    that is none of them is an error (the small set has no article or tier
    rows, so there they are just left out)."""
    if not only:
        return cmds
    names = set(only)
    unknown = names - {c.name for c in cmds}
    if unknown and strict:
        raise SystemExit(f"unknown command name(s) {sorted(unknown)}; known: "
                         f"{[c.name for c in cmds]}")
    return [c for c in cmds if c.name in names]


def _bench(args) -> int:
    files, info = _prepare_set(args, None if args.images and args.count is None
                               else (args.count or 40))
    runs_dir = os.path.join(args.out, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    cmds = _selected(build_commands(files, args.workers, runs_dir, compare_with=args.compare_with),
                     args.only)
    print(f"benchmark: {info['count']} images of {info['width']}x{info['height']}, "
          f"{args.workers} workers, {args.rounds} round(s), {len(cmds)} commands", flush=True)
    run_commands(cmds, args.rounds, os.path.join(args.out, "logs"), info["count"], args.interval)
    summary = summarise(cmds, info["count"], info["megapixels"])
    n_small = args.small_count
    if n_small and n_small < info["count"]:
        # the fixed costs' target: the fastest decode bound and the whole
        # command on the first photos of the same set, alternating too
        small = [c for c in build_commands(files[:n_small], args.workers, runs_dir, tiers=(),
                                           suffix="-small", compare_with=args.compare_with)
                 if c.kind != "article"]
        small = _selected(small, args.only, strict=False)
        if small:
            print(f"small set: {n_small} images, {len(small)} commands", flush=True)
            run_commands(small, args.rounds, os.path.join(args.out, "logs"), n_small,
                         args.interval, label="-small")
            summary["small"] = {"count": n_small, **summarise(small, n_small, info["megapixels"])}
    result = {"machine": machine_info(), "set": info, "workers": args.workers,
              "rounds": args.rounds, "interval": args.interval, **summary}
    result["targets"] = check_targets(summary)
    jpath, mpath = write_report(args.out, result, "bench")
    print()
    with open(mpath, encoding="utf-8") as fh:
        print(fh.read())
    print(f"wrote {jpath} and {mpath}")
    return 0 if all(r["ok"] for r in summary["rows"]) else 1


def scaling(args) -> int:
    """``--scaling``: cost per image and peak memory as the set grows.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``scaling_counts``, the set, ``workers``,
        ``rounds``, ``out``, ``only``).

    Returns
    -------
    int
        0, or 1 when a command failed.

    Notes
    -----
    The sets are prefixes of one generated set of the largest size.  Rows:
    the article's program, the fastest decode-only bound and
    ``hotpixel_shm --workers W`` (default tier), each at every size; the
    results go to ``bench-scaling.md`` and ``bench-scaling.json``.
    """
    counts = sorted({int(c) for c in args.scaling_counts.split(",") if c.strip()})
    if not counts or counts[0] < 1:
        raise SystemExit("--scaling-counts needs positive integers, e.g. 10,40,160")
    files_all, info = _prepare_set(args, None if args.images and args.count is None
                                   else max(counts))
    counts = [c for c in counts if c <= len(files_all)]
    if not counts:
        raise SystemExit(f"only {len(files_all)} images: fewer than the smallest --scaling-counts")
    runs_dir = os.path.join(args.out, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    rows, per_image = [], {}
    for n in counts:
        files = files_all[:n]
        cmds = build_commands(files, args.workers, runs_dir, tiers=(), auto_workers=False,
                              default_row=True, suffix=f"-n{n}")
        cmds = [c for c in cmds if c.name in ("article", "decode-simplejpeg", "decode-pillow",
                                              "hps-default")]
        if simplejpeg is not None:
            cmds = [c for c in cmds if c.name != "decode-pillow"]
        cmds = _selected(cmds, args.only)
        print(f"scaling: {n} images", flush=True)
        run_commands(cmds, args.rounds, os.path.join(args.out, "logs"), n, args.interval,
                     label=f" n={n}")
        s = summarise(cmds, n, info["megapixels"])
        for r in s["rows"]:
            r["count"] = n
            rows.append(r)
            per_image.setdefault(r["label"], []).append({
                "count": n,
                "seconds_per_image": r["median_seconds"] / n if r["median_seconds"] else None,
                "peak_bytes": r["peak_bytes_max"]})
    info = dict(info, count=len(files_all))
    result = {"machine": machine_info(), "set": info, "workers": args.workers,
              "rounds": args.rounds, "interval": args.interval, "rows": rows,
              "scaling": {"counts": counts, "per_image": per_image}}
    jpath, mpath = write_report(args.out, result, "bench-scaling")
    with open(mpath, encoding="utf-8") as fh:
        print(fh.read())
    print(f"wrote {jpath} and {mpath}")
    return 0 if all(r["ok"] for r in rows) else 1


def _median_time(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def kernels(args) -> int:
    """``--kernels``: each tier's update kernel vs a memory copy of its bytes.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``width``, ``height``, ``quality``,
        ``rounds`` as the number of repetitions, at least 3; ``out``).

    Returns
    -------
    int
        0.

    Notes
    -----
    For one in-memory frame of ``--width`` x ``--height``, with each kernel
    implementation that can run here (compiled, numpy) and batches of K = 1
    and 4 photos: the median time per photo of ``Accumulator.update_batch``
    (after two warm-up batches, so the accumulator's pages exist and the
    float tiers are past their first-image shortcut), ``np.copyto`` of a
    buffer as large as the accumulator, the merge of two accumulators (as the
    engine does at the end), the temporal residual statistics of the frame
    (``ResidualAccumulator.update_batch``, K = 1 and 4), and for scale the
    decode of the same frame as a JPEG.
    """
    import io
    from hotpixel_shm import kernels as _kernels
    from hotpixel_shm.residual import ResidualAccumulator, residual_layout
    from hotpixel_shm.welford import Accumulator, merge

    h, w = args.height, args.width
    reps = max(3, args.rounds)
    frame = make_photo_like(h, w, 7)
    shape = frame.shape
    rows = []
    impls = [name for name, mod in _kernels.available().items() if not isinstance(mod, str)]
    batch = [frame] + [np.roll(frame, k, axis=1) for k in range(1, 4)]
    for tier in TIERS:
        nbytes = Accumulator.nbytes(tier, shape, np.uint8)
        src = np.ones(nbytes, np.uint8)
        dst = np.empty(nbytes, np.uint8)
        np.copyto(dst, src)  # touch the pages first
        t_copy = _median_time(lambda: np.copyto(dst, src), reps)
        del src, dst
        for impl in impls:
            with _kernels.use(impl):
                for k in (1, 4):
                    acc = Accumulator(tier, shape, np.uint8)
                    acc.update_batch(batch[:k])
                    acc.update_batch(batch[:k])
                    t_update = _median_time(lambda: acc.update_batch(batch[:k]), reps) / k
                    other = Accumulator(tier, shape, np.uint8)
                    other.update(frame)
                    other.update(frame[::-1].copy())
                    t0 = time.perf_counter()
                    merge([acc, other], in_place=True, threads=max(1, args.workers))
                    t_merge = time.perf_counter() - t0
                    del acc, other
                    rows.append({"tier": tier, "kernels": impl, "batch": k, "accumulator_bytes": nbytes,
                                 "update_seconds": t_update, "copy_seconds": t_copy,
                                 "update_vs_copy": t_update / t_copy,
                                 "update_gb_per_s": nbytes / t_update / 1e9,
                                 "merge_two_seconds": t_merge})
                    print(f"  {tier:8s} {impl:8s} K={k}  update {t_update:.3f} s/photo  copy "
                          f"{t_copy:.3f} s  ratio {t_update / t_copy:.2f}  merge(2) {t_merge:.3f} s",
                          flush=True)
    residual = []
    for impl in impls:
        with _kernels.use(impl):
            for k in (1, 4):
                racc = ResidualAccumulator(residual_layout(shape))
                racc.update_batch(batch[:k])
                t_res = _median_time(lambda: racc.update_batch(batch[:k]), reps) / k
                del racc
                residual.append({"kernels": impl, "batch": k, "seconds": t_res})
                print(f"  residual {impl:8s} K={k}  {t_res:.3f} s/photo", flush=True)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=args.quality)
    data = buf.getvalue()
    decode = {"pillow": _median_time(lambda: np.asarray(Image.open(io.BytesIO(data))), reps)}
    if simplejpeg is not None:
        out = np.empty(shape, np.uint8)
        decode["simplejpeg"] = _median_time(lambda: simplejpeg.decode_jpeg(
            data, colorspace="RGB", fastdct=False, fastupsample=False, buffer=out), reps)
    result = {"machine": machine_info(), "frame": {"width": w, "height": h, "channels": 3,
                                                   "jpeg_bytes": len(data),
                                                   "quality": args.quality},
              "repetitions": reps, "rows": rows, "residual_rows": residual,
              "decode_seconds": decode}
    os.makedirs(args.out, exist_ok=True)
    jpath = os.path.join(args.out, "bench-kernels.json")
    mpath = os.path.join(args.out, "bench-kernels.md")
    with open(jpath, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    lines = [f"# Update kernels on one {w}x{h} RGB frame ({w * h / 1e6:.1f} MP)", "",
             f"Machine: {_machine_md(result['machine'])}. Median of {reps}.", "",
             "| tier | kernels | K | accumulator MiB | update s per photo | copy s | update / copy "
             "| GB/s | merge of 2 s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tier']} | {r['kernels']} | {r['batch']} | {r['accumulator_bytes'] / 2**20:.0f} | "
                     f"{r['update_seconds']:.3f} | {r['copy_seconds']:.3f} | "
                     f"{r['update_vs_copy']:.2f} | {r['update_gb_per_s']:.2f} | "
                     f"{r['merge_two_seconds']:.3f} |")
    lines += ["", "Temporal residual statistics of the same frame (luma and pooled chroma), "
              "s per photo: " + ", ".join(f"{r['kernels']} K={r['batch']} {r['seconds']:.3f}"
                                          for r in residual) + "."]
    lines += ["", "Decoding the same frame (JPEG q%d, %.2f MB), one process: %s." % (
        args.quality, len(data) / 1e6,
        ", ".join(f"{k} {v:.3f} s" for k, v in decode.items()))]
    with open(mpath, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {jpath} and {mpath}")
    return 0


#: Phases of a run, as (name, module file suffix, function name); cumulative
#: times from cProfile.  Nested phases (decode and update inside the engine)
#: are listed under it.
_PHASES = (
    ("whole command (cli._analyse)", "hotpixel_shm/cli.py", "_analyse"),
    ("imports (all modules, nested)", "<frozen importlib._bootstrap>", "_find_and_load"),
    ("find files + probe headers", "hotpixel_shm/inputs.py", "probe_all"),
    ("plan (resources + make_plan)", "hotpixel_shm/budget.py", "make_plan"),
    ("statistics (engine.run)", "hotpixel_shm/engine.py", "run"),
    ("  decode", "hotpixel_shm/inputs.py", "decode"),
    ("  update (Accumulator.update_batch)", "hotpixel_shm/welford.py", "update_batch"),
    ("  merge/finalize (welford.merge)", "hotpixel_shm/welford.py", "merge"),
    ("  waiting for workers (connection.wait)", "multiprocessing/connection.py", "wait"),
    ("detect", "hotpixel_shm/detect.py", "detect"),
    ("summary on stdout", "hotpixel_shm/cli.py", "_summary"),
    ("outputs (Analysis.write)", "hotpixel_shm/analysis.py", "write"),
)


def _phase_times(prof_path):
    st = pstats.Stats(prof_path)
    total = st.total_tt
    out = {}
    for label, suffix, fname in _PHASES:
        ct = 0.0
        calls = 0
        for (path, _line, name), (_cc, nc, _tt, cum, _callers) in st.stats.items():
            if name == fname and path.replace(os.sep, "/").endswith(suffix):
                ct += cum
                calls += nc
        out[label] = {"seconds": ct, "calls": calls}
    top = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    own = [{"function": f"{os.path.basename(p)}:{ln}({fn})", "tottime": v[2], "calls": v[1]}
           for (p, ln, fn), v in top]
    return total, out, own


def profile(args) -> int:
    """``--profile``: where the time of a hotpixel_shm run goes.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (the set, ``workers``, ``profile_tier``, ``out``).

    Returns
    -------
    int
        0, or 1 when a profiled run failed.

    Notes
    -----
    Runs the command under cProfile twice: with ``--workers 1`` (the
    in-process serial path, so decode and update are visible) and with
    ``--workers W`` (the parent only: merge, detection, report, and the time
    spent waiting for the workers).  Wall times include interpreter start-up.
    """
    files, info = _prepare_set(args, None if args.images and args.count is None
                               else (args.count or 40))
    out = os.path.join(args.out, "profile")
    os.makedirs(out, exist_ok=True)
    dtype = ["--dtype", args.profile_tier] if args.profile_tier != "auto" else []
    result = {"machine": machine_info(), "set": info, "runs": {}}
    lines = [f"# Where the time goes: {info['count']} images of {info['width']}x{info['height']}",
             "", f"Machine: {_machine_md(result['machine'])}.", ""]
    for workers in (1, args.workers):
        prof = os.path.join(out, f"w{workers}.prof")
        jp = os.path.join(out, f"w{workers}.json")
        argv = [sys.executable, "-m", "cProfile", "-o", prof, "-m", "hotpixel_shm", *files,
                "--workers", str(workers), *dtype, "-q", "--json", jp]
        run = measure(argv, os.path.join(out, f"w{workers}.log"), args.interval)
        if run["returncode"] != 0:
            print(f"profile run with {workers} worker(s) failed: exit {run['returncode']}")
            return 1
        total, phases, own = _phase_times(prof)
        with open(jp, encoding="utf-8") as fh:
            tier = json.load(fh)["engine"]["dtype"]
        result["runs"][str(workers)] = {"wall_seconds": run["seconds"],
                                        "peak_bytes": run["peak_bytes"], "tier": tier,
                                        "profiled_seconds": total, "phases": phases,
                                        "top_own_time": own}
        lines += [f"## --workers {workers} (tier {tier}): wall {run['seconds']:.2f} s, "
                  f"peak {run['peak_bytes'] / 2**20:.0f} MiB (under cProfile)", "",
                  "| phase | seconds | calls | per image ms |", "|---|---|---|---|"]
        for label, v in phases.items():
            if v["calls"] == 0:
                continue
            lines.append(f"| {label} | {v['seconds']:.2f} | {v['calls']} | "
                         f"{1000 * v['seconds'] / info['count']:.0f} |")
        lines += ["", "Own time, top functions:", "", "| function | tottime s | calls |",
                  "|---|---|---|"]
        lines += [f"| `{o['function']}` | {o['tottime']:.2f} | {o['calls']} |" for o in own[:10]]
        lines.append("")
    with open(os.path.join(args.out, "bench-profile.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    mpath = os.path.join(args.out, "bench-profile.md")
    with open(mpath, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {mpath}")
    return 0


# --------------------------------------------------------------------------- command line

def _build_parser():
    p = argparse.ArgumentParser(
        description="Benchmark hotpixel_shm against the article's program and decode-only bounds.")
    p.add_argument("--images", metavar="DIR", help="use the images in DIR instead of a generated set")
    p.add_argument("--count", type=int, default=None,
                   help="images in the generated set (default 40; with --images: all)")
    p.add_argument("--width", type=int, default=6000, help="frame width (default 6000)")
    p.add_argument("--height", type=int, default=4000, help="frame height (default 4000)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--out", default=_DEFAULT_OUT,
                   help="results and the cached image sets (default: bench-out next to scripts/)")
    p.add_argument("--interval", type=float, default=0.05,
                   help="seconds between memory samples (default 0.05)")
    p.add_argument("--small-count", type=int, default=12, metavar="N",
                   help="also run the decode bounds and --auto-workers on the first N photos "
                        "(the fixed costs' target; 0: skip; default 12)")
    p.add_argument("--compare-with", metavar="DIR", default=None,
                   help="another hotpixel_shm checkout: add its --auto-workers run "
                        "(PYTHONPATH=DIR) for a before/after comparison in one run")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="run only these commands (article, decode-pillow, decode-simplejpeg, "
                        "hps-<tier>, hps-auto-workers, hps-auto-before, hps-default), on the "
                        "whole set and on the small one")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--scaling", action="store_true",
                      help="cost per image and peak memory as the set grows")
    mode.add_argument("--kernels", action="store_true",
                      help="update kernel of each tier vs a memory copy of the same size")
    mode.add_argument("--profile", action="store_true",
                      help="cProfile of a hotpixel_shm run, by phase")
    mode.add_argument("--memory", action="store_true",
                      help="the memory ladder: planned and measured peak per tier, workers, bands")
    mode.add_argument("--decode-only", choices=sorted(_DECODERS), help=argparse.SUPPRESS)
    p.add_argument("--memory-workers", default="1,2",
                   help="worker counts for --memory (default 1,2)")
    p.add_argument("--memory-bands", default="1",
                   help="band counts for --memory (default 1)")
    p.add_argument("--memory-tiers", default=",".join(TIERS),
                   help="tiers for --memory (default all)")
    p.add_argument("--memory-format", default="jpeg", choices=sorted(_FORMATS),
                   help="files --memory makes: jpeg (8-bit RGB), png16 (16-bit greyscale PNG) "
                        "or dng (16-bit Bayer mosaic); float16 is left out for 16-bit samples "
                        "(default jpeg)")
    p.add_argument("--scaling-counts", default="10,40,160",
                   help="set sizes for --scaling (default 10,40,160)")
    p.add_argument("--profile-tier", default="auto", choices=("auto", *TIERS),
                   help="tier for --profile (default: what --dtype auto picks)")
    p.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    return p


def _int_list(text, name):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--{name} must be a comma-separated list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise SystemExit(f"--{name} must list positive integers, got {text!r}")
    return values


def memory_ladder(args) -> int:
    """``--memory``: planned bytes and measured peak for each tier, worker and band count.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (the set, ``memory_workers``,
        ``memory_bands``, ``memory_tiers``, ``out``, ``interval``).

    Returns
    -------
    int
        0, or 1 when a run failed or a measured peak exceeded its plan.
    """
    files, info = _prepare_set(args, args.count or 12, args.memory_format)
    workers = _int_list(args.memory_workers, "memory-workers")
    bands = _int_list(args.memory_bands, "memory-bands")
    tiers_ = [t for t in args.memory_tiers.split(",") if t]
    unknown = set(tiers_) - set(TIERS)
    if unknown:
        raise SystemExit(f"unknown tier(s) {sorted(unknown)}; known: {list(TIERS)}")
    runs_dir = os.path.join(args.out, "memory")
    os.makedirs(runs_dir, exist_ok=True)
    print(f"memory ladder: {info['count']} images of {info['width']}x{info['height']}"
          f"{'' if args.images else ' (' + args.memory_format + ')'}", flush=True)
    rows = []
    if not args.images and args.memory_format != "jpeg":
        tiers_ = [t for t in tiers_ if t != "float16"]      # 8-bit samples only
    for t in tiers_:
        for w in workers:
            for b in bands:
                jp = os.path.join(runs_dir, f"{args.memory_format}-{t}-w{w}-b{b}.json")
                argv = [sys.executable, "-m", "hotpixel_shm", *files, "--workers", str(w),
                        "--dtype", t, "-q", "--json", jp]
                if b > 1:
                    argv += ["--bands", str(b)]
                run = measure(argv, os.path.join(runs_dir, f"{args.memory_format}-{t}-w{w}-b{b}.log"),
                              args.interval)
                row = {"tier": t, "workers": w, "bands": b, "peak_bytes": run["peak_bytes"],
                       "seconds": run["seconds"], "returncode": run["returncode"], "planned_bytes": None}
                if run["returncode"] == 0:
                    with open(jp, encoding="utf-8") as fh:
                        eng = json.load(fh)["engine"]
                    row["planned_bytes"] = eng["planned_bytes"]
                    row["bands"] = eng.get("bands", b)
                rows.append(row)
                print(_ladder_line(row), flush=True)
    result = {"machine": machine_info(), "set": info, "ladder": rows}
    with open(os.path.join(args.out, "memory.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    lines = ["| tier | workers | bands | planned MiB | peak MiB | planned / peak | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = _ratio(r["planned_bytes"], r["peak_bytes"]) if r["planned_bytes"] else None
        lines.append(f"| {r['tier']} | {r['workers']} | {r['bands']} | {_fmt(_mib(r['planned_bytes']), '.0f')} "
                     f"| {_fmt(_mib(r['peak_bytes']), '.0f')} | {_fmt(ratio, '.2f')} "
                     f"| {_fmt(r['seconds'], '.1f')} |")
    with open(os.path.join(args.out, "memory.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print()
    print("\n".join(lines))
    bad = [r for r in rows if r["returncode"] != 0 or r["planned_bytes"] is None
           or r["peak_bytes"] > r["planned_bytes"]]
    return 1 if bad else 0


def _ladder_line(r):
    planned = "failed" if r["planned_bytes"] is None else f"{r['planned_bytes'] / 2**20:.0f} MiB"
    return (f"  {r['tier']:8s} workers {r['workers']} bands {r['bands']}: planned {planned}, "
            f"peak {r['peak_bytes'] / 2**20:.0f} MiB, {r['seconds']:.1f} s")


def main(argv=None) -> int:
    """Run the benchmark.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0, or 1 when a benchmarked command failed.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.decode_only:
        if not args.files:
            parser.error("--decode-only needs files")
        decode_only(args.decode_only, args.files, args.workers)
        return 0
    if args.files:
        parser.error("unexpected arguments: use --images DIR for your own photos")
    for name in ("rounds", "workers", "width", "height"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    if not 1 <= args.quality <= 100:
        parser.error("--quality must be within 1..100")
    if args.interval <= 0 or not math.isfinite(args.interval):
        parser.error("--interval must be positive")
    args.out = os.path.abspath(args.out)
    if args.kernels:
        return kernels(args)
    if args.scaling:
        return scaling(args)
    if args.profile:
        return profile(args)
    if args.memory:
        return memory_ladder(args)
    return _bench(args)


if __name__ == "__main__":
    sys.exit(main())
