"""The Python API: :func:`analyse` and :func:`iter_analyses`, the whole job
in one call, made of the same steps (``pipeline``) the command line drives.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import List

from .analysis import Analysis
from .detect import DetectOptions
from .errors import HotPixelError
from .pipeline import (LogToLogging, Settings, analyse_group, plan_group, prepare)

__all__ = ["analyse", "iter_analyses"]


def analyse(paths, *, workers="auto", tier="auto", memory_budget=None, darks=False,
            camera=None, all_cameras=False, progress=None, recursive=False, min_images=2,
            detect_options=None, load_stats=None, resume=None, save_stats=None,
            checkpoint=None, log=None) -> List[Analysis]:
    """Analyse a folder of photos: statistics, defects, one camera body at a time.

    This is what the command line does, step by step (the command line
    drives the same functions).

    Parameters
    ----------
    paths : str, path-like or iterable of them
        Files, directories or glob patterns.
    workers : int or "auto", default "auto"
        Worker processes (1 runs in this process); "auto" lets the planner
        choose from the CPUs and memory available.
    tier : str, default "auto"
        Accumulator tier ("exact", "float64", "float32", "float16").
    memory_budget : int or str, optional
        Bytes, or text such as ``"1.5G"``; default 75 % of the memory
        available now.
    darks : bool
        The photos are dark frames.
    camera : str, optional
        Only photos whose camera (make, model, serial) contains this text.
    all_cameras : bool
        Every body with at least ``min_images`` photos, each its own analysis;
        otherwise the body with the most usable photos.
    progress : callable, optional
        ``progress(done, total, skipped)`` after each photo.
    recursive : bool
        Descend into sub-directories.
    min_images : int
        Fewer usable photos than this raises :class:`TooFewImages`.
    detect_options : detect.DetectOptions, optional
        Detection thresholds (``darks`` overrides its ``darks``).
    load_stats, resume, save_stats, checkpoint : str, optional
        Statistics files, as the command line's options of those names.
    log : object, optional
        ``info``/``detail``/``skip`` receiver (default :class:`LogToLogging`).

    Returns
    -------
    list of Analysis
        One per analysed body, most photos first.

    Raises
    ------
    TooFewImages
        No body has ``min_images`` usable photos.
    HotPixelError
        Bad input that stops the whole analysis (unreadable statistics
        file, no camera matching ``camera``, nothing fits in memory, ...).

    Examples
    --------
    >>> import hotpixel_shm
    >>> for a in hotpixel_shm.analyse("~/Pictures/2026", all_cameras=True):  # doctest: +SKIP
    ...     print(a.camera.label, len(a.defects))
    ...     a.write(json=f"{a.camera.file_tag}.json")
    """
    return list(_analyses(*_settings(
        paths, workers=workers, tier=tier, memory_budget=memory_budget, darks=darks,
        camera=camera, all_cameras=all_cameras, progress=progress, recursive=recursive,
        min_images=min_images, detect_options=detect_options, load_stats=load_stats,
        resume=resume, save_stats=save_stats, checkpoint=checkpoint, log=log)))


def _settings(paths, *, workers="auto", tier="auto", memory_budget=None, darks=False,
              camera=None, all_cameras=False, progress=None, recursive=False, min_images=2,
              detect_options=None, load_stats=None, resume=None, save_stats=None,
              checkpoint=None, log=None):
    """(settings, paths, progress, log) from the API's arguments."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    paths = [os.path.expanduser(os.fsdecode(p)) for p in paths]
    if all_cameras and (load_stats or resume):
        raise HotPixelError("all_cameras cannot be combined with loaded statistics "
                            "(they hold one body's photos)")
    opts = replace(detect_options or DetectOptions(), darks=bool(darks))
    settings = Settings(
        workers=None if workers == "auto" else int(workers),
        tier=None if tier == "auto" else tier, memory_budget=memory_budget,
        recursive=recursive, min_images=min_images, detect=opts, load_stats=load_stats,
        resume=resume, save_stats=save_stats, checkpoint=checkpoint, camera=camera,
        all_cameras=all_cameras)
    return settings, paths, progress, log or LogToLogging()


def iter_analyses(paths, **options):
    """:func:`analyse`, one body at a time: yields each :class:`Analysis` as
    it is finished.

    Every ``Analysis`` holds its body's statistics (two image-sized arrays);
    :func:`analyse`'s list keeps them all, where a loop that lets each one
    go before asking for the next (``del a`` at the end of the loop's body:
    the loop variable still holds the previous one while the next is
    computed) keeps one body's in memory at a time, as the command line
    does.  Parameters are those of :func:`analyse`.

    Examples
    --------
    >>> for a in hotpixel_shm.iter_analyses("~/Pictures", all_cameras=True):  # doctest: +SKIP
    ...     a.write(json=f"defects.{a.camera.file_tag}.json")
    ...     del a
    """
    return _analyses(*_settings(paths, **options))


def _analyses(settings, paths, progress, log):
    started = time.perf_counter()
    for group in prepare(paths, settings, log):
        plan = plan_group(group, settings, log)
        yield analyse_group(group, plan, settings, log, started=started, progress=progress)
        started = time.perf_counter()
