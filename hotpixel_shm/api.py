"""The Python API: :func:`analyse` and :func:`iter_analyses`, the whole job
in one call, made of the same steps (``pipeline``) the command line drives.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from typing import List

from .analysis import Analysis
from .detect import DetectOptions
from .errors import HotPixelError
from .pipeline import LogToLogging, Settings, prepare

__all__ = ["analyse", "iter_analyses"]


def analyse(paths, *, workers="auto", tier="auto", memory_budget=None, darks=False,
            camera=None, all_cameras=False, progress=None, recursive=False, min_images=2,
            detect_options=None, load_stats=None, resume=None, save_stats=None,
            checkpoint=None, log=None, dask=None, dask_timeout=None,
            dask_split_every=None) -> List[Analysis]:
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
    dask : str, optional
        Compute on a Dask cluster (the optional ``dask`` extra), as the
        command line's ``--dask``: a scheduler's address
        (``"tcp://host:8786"``) or ``"local"`` for a LocalCluster on this
        machine, started for this call and stopped at its end.  ``workers``
        must then stay "auto", and ``checkpoint``/``resume`` are not
        available.  The statistics stay on the cluster: an analysis's
        ``write`` draws a picture there, so ask for pictures while the
        session is open -- inside an :func:`iter_analyses` loop; everything
        else (defects, reports, exports) can be written at any time.
    dask_timeout : float, optional
        Seconds to reach the scheduler and its workers (default 10).
    dask_split_every : int, optional
        Partials merged per task of the merge tree (default 4).

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
        file, no camera matching ``camera``, nothing fits in memory, an
        unreachable Dask scheduler, ...).

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
        resume=resume, save_stats=save_stats, checkpoint=checkpoint, log=log, dask=dask,
        dask_timeout=dask_timeout, dask_split_every=dask_split_every)))


def _settings(paths, *, workers="auto", tier="auto", memory_budget=None, darks=False,
              camera=None, all_cameras=False, progress=None, recursive=False, min_images=2,
              detect_options=None, load_stats=None, resume=None, save_stats=None,
              checkpoint=None, log=None, dask=None, dask_timeout=None, dask_split_every=None):
    """(settings, paths, progress, log, dask) from the API's arguments;
    ``dask`` is None or (address, timeout, split_every)."""
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
    if dask is not None:
        dask = _dask_options(dask, dask_timeout, dask_split_every, workers=workers,
                             checkpoint=checkpoint, resume=resume)
    elif dask_timeout is not None or dask_split_every is not None:
        raise HotPixelError("dask_timeout and dask_split_every need dask (an address or "
                            "\"local\")")
    return settings, paths, progress, log or LogToLogging(), dask


def _dask_options(address, timeout, split_every, *, workers, checkpoint, resume):
    """(address, timeout, split_every), checked as the command line checks them."""
    from . import cluster
    cluster.require()
    if not isinstance(address, str) or not address.strip():
        raise HotPixelError(f"dask must be a scheduler's address or \"{cluster.LOCAL}\", "
                            f"got {address!r}")
    if workers != "auto":
        raise HotPixelError("workers does not apply with dask (the cluster's workers do "
                            "the work)")
    if checkpoint or resume:
        raise HotPixelError("checkpoint and resume are not available with dask (a lost Dask "
                            "worker's tasks are recomputed instead)")
    timeout = cluster.DEFAULT_TIMEOUT if timeout is None else float(timeout)
    if not timeout > 0:
        raise HotPixelError(f"dask_timeout must be positive, got {timeout:g}")
    split_every = cluster.DEFAULT_SPLIT_EVERY if split_every is None else int(split_every)
    if split_every < 2:
        raise HotPixelError(f"dask_split_every must be at least 2, got {split_every}")
    return address.strip(), timeout, split_every


def iter_analyses(paths, **options):
    """:func:`analyse`, one body at a time: yields each :class:`Analysis` as
    it is finished.

    Every ``Analysis`` holds its body's statistics (two image-sized arrays);
    :func:`analyse`'s list keeps them all, where a loop that lets each one
    go before asking for the next (``del a`` at the end of the loop's body:
    the loop variable still holds the previous one while the next is
    computed) keeps one body's in memory at a time, as the command line
    does.  Parameters are those of :func:`analyse`; with ``dask``, the
    cluster session stays open while the loop runs (pictures can be drawn
    there) and closes when the loop ends.

    Examples
    --------
    >>> for a in hotpixel_shm.iter_analyses("~/Pictures", all_cameras=True):  # doctest: +SKIP
    ...     a.write(json=f"defects.{a.camera.file_tag}.json")
    ...     del a
    """
    return _analyses(*_settings(paths, **options))


def _analyses(settings, paths, progress, log, dask):
    started = time.perf_counter()
    with _steps(settings, log, dask) as steps:
        for group in prepare(paths, settings, log):
            plan = steps.plan_group(group, settings, log)
            yield steps.analyse_group(group, plan, settings, log, started=started,
                                      progress=progress)
            started = time.perf_counter()


def _steps(settings, log, dask):
    """The steps that plan and run: the pipeline's own, or a Dask session's."""
    if dask is None:
        from . import pipeline
        return contextlib.nullcontext(pipeline)
    from . import cluster
    address, timeout, split_every = dask
    return cluster.connect(address, timeout, settings=settings, log=log,
                           split_every=split_every)
