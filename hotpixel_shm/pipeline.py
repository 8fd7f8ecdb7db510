"""The analysis as a chain of steps: resolve the inputs, plan, run, detect, write.

The command line (``cli``) and the Python API (``api``:
:func:`hotpixel_shm.analyse`) both drive these functions, so a notebook gets exactly what the command
gives.  Nothing here prints: messages go to a ``log`` object with
``info(text)``, ``detail(text)`` and ``skip(path, reason)`` methods (the
command line's console, or :class:`LogToLogging`).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional, Tuple, Union

from .detect import DetectOptions
from .errors import HotPixelError
from .inputs import DEFAULT_MAX_PIXELS
from .camera import UNKNOWN, Camera, group_by_camera
from .analysis import OUTPUT_OPTIONS, Analysis, output_for  # noqa: F401 - re-exported
from .model import Defect, Stats

__all__ = [
    "Settings", "Prior", "Group", "Analysis", "Stopped", "TooFewImages", "LogToLogging",
    "OUTPUT_OPTIONS", "prepare", "load_prior", "resolve_inputs", "plan_group",
    "run_group", "detect_defects", "detect_lines", "analyse_group", "output_for",
]

_logger = logging.getLogger("hotpixel_shm")


class LogToLogging:
    """The default ``log`` of the API: messages to the ``hotpixel_shm`` logger."""

    def info(self, text):
        _logger.info(text)

    def detail(self, text):
        _logger.debug(text)

    def skip(self, path, reason):
        _logger.info("%s: %s", os.fsdecode(path), reason)


class TooFewImages(HotPixelError):
    """Fewer usable images than asked for (``count`` of ``needed``)."""

    def __init__(self, count, needed):
        super().__init__(f"{count} usable image(s); at least {needed} needed (--min-images)")
        self.count = count
        self.needed = needed


class Stopped(HotPixelError):
    """A run stopped by a signal.

    Attributes
    ----------
    signum : int
        The signal.
    saved : int or None
        Images saved to ``checkpoint`` (None: nothing saved).
    checkpoint : str or None
        The checkpoint file.
    """

    def __init__(self, signum, saved=None, checkpoint=None, where=""):
        if saved is not None:
            text = (f"interrupted{where}; {saved} images saved to checkpoint {checkpoint}; "
                    f"continue with --resume {checkpoint}")
        else:
            text = "interrupted; nothing saved (use --checkpoint FILE to keep partial work)"
        super().__init__(text)
        self.signum = signum
        self.saved = saved
        self.checkpoint = checkpoint


@dataclass
class Settings:
    """Everything a run needs besides its paths (the command line's options).

    Attributes
    ----------
    workers : int or None
        Worker processes; None lets the planner choose.
    tier : str or None
        Accumulator tier (``tiers.TIERS``); None lets the planner choose.
    memory_budget : int, str or None
        Memory budget in bytes or as text (``"1.5G"``); None: the default
        share of the memory available now (``budget.run_budget``).
    force : bool
        Run a forced plan even when over budget.
    batch : int or None
        Photos each worker decodes before one pass over its accumulator;
        None lets the planner choose.
    bands : int or None
        Passes over the photos, each accumulating one horizontal band of
        rows; None: one pass, or as many as the memory budget needs.
    recursive : bool
        Descend into sub-directories.
    max_pixels : int
        Decompression-bomb limit.
    min_images : int
        Fewer usable images than this is an error (:class:`TooFewImages`).
    detect : DetectOptions
        Detection thresholds (``darks`` included).
    load_stats, resume : str or None
        Statistics files to merge with the new photos; ``resume`` also skips
        the files it holds.
    save_stats : str or None
        Where to save the finished statistics.
    checkpoint : str or None
        Where to save partial statistics on interruption (and periodically).
    checkpoint_every : int
        Also checkpoint after every this many files (0: never).
    checkpoint_seconds : float
        Also checkpoint every this many seconds (0: never).
    camera : str or None
        Analyse only photos whose camera (make, model, serial joined with
        spaces) contains this text, ignoring case.
    all_cameras : bool
        Analyse every body with at least ``min_images`` photos, each on its
        own; otherwise only the body with the most usable photos.
    residuals : bool
        Keep temporal residual statistics for detection when the budget
        allows them without costing a worker or the accuracy tier (see
        ``hotpixel_shm.residual``); never for dark frames.
    """

    workers: Optional[int] = None
    tier: Optional[str] = None
    memory_budget: Union[int, str, None] = None
    force: bool = False
    batch: Optional[int] = None
    bands: Optional[int] = None
    recursive: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_images: int = 2
    detect: DetectOptions = field(default_factory=DetectOptions)
    load_stats: Optional[str] = None
    resume: Optional[str] = None
    save_stats: Optional[str] = None
    checkpoint: Optional[str] = None
    checkpoint_every: int = 0
    checkpoint_seconds: float = 0.0
    camera: Optional[str] = None
    all_cameras: bool = False
    residuals: bool = True


@dataclass
class Prior:
    """Statistics loaded from ``--load-stats``/``--resume`` (merged), and the
    files ``--resume`` says are done."""

    stats: Stats
    done: frozenset = frozenset()
    #: a checkpoint of band passes to continue (``statsio.BandCheckpoint``);
    #: ``stats`` are then the ``--load-stats`` ones, or none (``n == 0``)
    band: Optional[object] = None


@dataclass
class Group:
    """Photos that go into one set of statistics: one camera body, one shape,
    one sample type.

    Attributes
    ----------
    headers : list of inputs.Header
        The photos to read.
    shape : tuple
        ``(height, width, channels)``.
    sample_dtype : str
        ``"uint8"`` or ``"uint16"``.
    prior : Prior or None
        Loaded statistics these photos are merged with.
    camera : camera.Camera
        The body (``camera.UNKNOWN`` for photos that name none).
    skipped : list of (path, reason)
        Inputs left out of this group, with the reason.
    """

    headers: list
    shape: Tuple[int, int, int]
    sample_dtype: str
    prior: Optional[Prior] = None
    camera: Camera = UNKNOWN
    skipped: list = field(default_factory=list)

    @property
    def paths(self) -> List[str]:
        return [h.path for h in self.headers]

    @property
    def n_images(self) -> int:
        """Images the statistics will hold (loaded ones included)."""
        return len(self.headers) + (self.prior.stats.n if self.prior else 0)

    def mosaic(self):
        """The colour filter array of a raw group (from the probe, or the
        loaded statistics), else None."""
        for h in self.headers[:1]:
            m = h.mosaic()
            if m is not None:
                return m
        return self.prior.stats.mosaic if self.prior else None

    def shots(self, paths) -> list:
        """The ``camera.Shot`` of each of ``paths`` that is one of the group's photos."""
        by_path = {h.path: h.shot for h in self.headers}
        return [by_path[p] for p in paths if p in by_path]


# --------------------------------------------------------------------------- step 1: inputs

def load_prior(settings: Settings, log) -> Optional[Prior]:
    """Statistics from ``settings.load_stats`` and/or ``settings.resume``, merged.

    Raises
    ------
    HotPixelError
        A file cannot be read, or the two files cannot be merged.
    """
    if not settings.load_stats and not settings.resume:
        return None     # nothing to load: statsio and the kernels stay unimported
    from . import statsio
    from .welford import merge_stats
    stats, done, band = None, set(), None
    for label, path in (("--load-stats", settings.load_stats), ("--resume", settings.resume)):
        if not path:
            continue
        if label == "--resume" and statsio.is_band_checkpoint(path):
            band = statsio.load_band_checkpoint(path)
            log.info(f"--resume: band pass {band.pass_index + 1} of {band.bands} from {path} "
                     f"({band.n} images of the pass done, {band.tier})")
            continue
        st, _ = statsio.load_stats(path)
        if stats is None:
            stats = st
        elif st.shape != stats.shape or st.sample_dtype != stats.sample_dtype:
            raise HotPixelError(f"{label} {path}: shape/dtype differ from the other statistics")
        else:
            stats = merge_stats(stats, st)
        if label == "--resume":
            done |= {os.path.realpath(f) for f in st.files}
        log.info(f"{label}: {st.n} images from {path} ({st.tier})")
    if band is not None:
        return _band_prior(band, stats, settings)
    if stats is None:
        return None
    if settings.tier is not None and settings.tier != stats.tier:
        raise HotPixelError(f"the loaded statistics were computed with the {stats.tier} "
                            f"tier; --dtype {settings.tier} cannot be merged with them")
    return Prior(stats=stats, done=frozenset(done))


def _band_prior(band, loaded, settings: Settings) -> Prior:
    """The :class:`Prior` of a band-pass checkpoint (with the ``--load-stats``
    statistics ``loaded``, which must be those the checkpointed run merged)."""
    import numpy as np
    from .tiers import result_dtype
    if settings.tier is not None and settings.tier != band.tier:
        raise HotPixelError(f"{band.path}: the checkpointed band passes use the {band.tier} "
                            f"tier, not --dtype {settings.tier}")
    if settings.bands is not None and settings.bands != band.bands:
        raise HotPixelError(f"{band.path}: the checkpoint is of {band.bands} band passes, "
                            f"not --bands {settings.bands}")
    got = sorted(os.path.realpath(f) for f in (loaded.files if loaded is not None else []))
    if got != sorted(os.path.realpath(f) for f in band.loaded_files):
        raise HotPixelError(f"{band.path}: the checkpointed run merged --load-stats statistics of "
                            f"{len(band.loaded_files)} files; give the same --load-stats to resume it")
    if loaded is not None and (loaded.shape != band.shape or loaded.sample_dtype != band.sample_dtype
                               or loaded.tier != band.tier):
        raise HotPixelError(f"{band.path}: shape, dtype or tier differ from the --load-stats ones")
    if loaded is None:
        # no statistics to merge: what the checkpoint says of the photos
        zero = np.broadcast_to(np.zeros((), result_dtype(band.tier)), band.shape)
        loaded = Stats(n=0, mean=zero, var=zero, tier=band.tier, sample_dtype=band.sample_dtype,
                       mosaic=band.mosaic, camera=band.camera)
    return Prior(stats=loaded, band=band)


def resolve_inputs(paths, settings: Settings, log, prior: Optional[Prior] = None,
                   outputs=()) -> List[Group]:
    """Find the photos, read their headers, and choose the ones to analyse,
    one camera body per group.

    Parameters
    ----------
    paths : iterable of str
        Files, directories, glob patterns.
    settings : Settings
        ``camera`` and ``all_cameras`` choose the bodies.
    log
        Gets ``skip(path, reason)`` once for every file left out.
    prior : Prior, optional
        Loaded statistics: they fix shape, sample type and (if they know it)
        the body, and ``--resume``'s finished files are left out.
    outputs : iterable of str
        Output files: refused if one of them is an input.

    Returns
    -------
    list of Group
        By default one (the body with the most usable photos, or the loaded
        statistics' body); with ``all_cameras`` every body with at least
        ``min_images`` usable photos, most photos first.  Empty when no
        photo is usable and nothing was loaded.  Each group's ``skipped``
        lists the inputs left out of it.

    Raises
    ------
    HotPixelError
        No camera matches ``settings.camera``; the photos cannot be merged
        with the loaded statistics; an output is an input.
    """
    from . import inputs
    from .export import check_output_paths

    files, common = inputs.expand_paths(paths, recursive=settings.recursive)
    check_output_paths(list(outputs), files)
    if prior is not None and prior.done:
        n0 = len(files)
        files = [f for f in files if os.path.realpath(f) not in prior.done]
        log.info(f"--resume: {n0 - len(files)} files already done, {len(files)} to go")
    headers, bad = inputs.probe_all(files, settings.max_pixels)
    common.extend(bad)
    for h in headers:
        if h.metadata_problem:
            log.detail(f"{h.path}: {h.metadata_problem}; counted as an unknown camera")
    if prior is not None:
        # the saved statistics fix the shape: photos of another size are skipped
        headers, other = inputs.match_loaded(headers, prior.stats.shape, prior.stats.sample_dtype)
        common.extend(other)
    candidates = _candidates(headers, prior)
    chosen, camera_skips = _choose(candidates, settings, prior)
    for path, reason in common + camera_skips:
        log.skip(path, reason)
    groups = []
    for c in chosen:
        for path, reason in c.shape_skips:
            log.skip(path, reason)
        groups.append(Group(headers=c.used, shape=c.shape, sample_dtype=c.dtype, prior=prior,
                            camera=c.camera, skipped=common + camera_skips + c.shape_skips))
    if not groups and prior is not None:
        st = prior.stats
        groups.append(Group(headers=[], shape=st.shape, sample_dtype=st.sample_dtype, prior=prior,
                            camera=st.camera or UNKNOWN, skipped=common + camera_skips))
    return groups


@dataclass
class _Candidate:
    """One body's photos: all of them, and those of its common shape."""

    camera: Camera
    everything: list
    used: list
    shape: Optional[Tuple[int, int, int]]
    dtype: Optional[str]
    shape_skips: list


def _candidates(headers, prior) -> List[_Candidate]:
    """Every body's photos, the body with the most usable photos first."""
    from . import inputs
    out = []
    for cam, hs in group_by_camera(headers).items():
        if prior is not None:
            shape, dtype, used, other = prior.stats.shape, prior.stats.sample_dtype, hs, []
        else:
            shape, dtype, used, other = inputs.reference_shape(hs)
        used, mosaic_skips = _same_mosaic(used, prior)
        out.append(_Candidate(cam, hs, used, tuple(shape), dtype, other + mosaic_skips))
    out.sort(key=lambda c: (-len(c.used), not c.camera.known))  # stable: ties keep path order
    return out


def _choose(candidates, settings, prior):
    """(the chosen candidates, skips of the photos of the others)."""
    skips = []

    def leave_out(c, why):
        skips.extend((h.path, f"another camera: {c.camera.label} ({len(c.everything)} files); {why}")
                     for h in c.everything)

    if settings.camera:
        found = ", ".join(f"{c.camera.name} ({len(c.everything)})" for c in candidates)
        for c in candidates:
            if not c.camera.matches(settings.camera):
                leave_out(c, f"not matching --camera {settings.camera!r}")
        candidates = [c for c in candidates if c.camera.matches(settings.camera)]
        if not candidates:
            raise HotPixelError(f"no photo's camera matches --camera {settings.camera!r} "
                                f"(cameras found: {found or 'none'})")
    body = prior.stats.camera if prior is not None else None
    if body is not None and body.known:
        for c in candidates:
            if c.camera != body:
                leave_out(c, f"the loaded statistics are of {body.label}")
        return [c for c in candidates if c.camera == body], skips
    if settings.all_cameras:
        chosen = []
        for c in candidates:
            if len(c.used) >= settings.min_images:
                chosen.append(c)
            else:
                skips.extend((h.path, f"camera {c.camera.label}: {len(c.used)} usable photo(s), "
                                      f"fewer than --min-images {settings.min_images}")
                             for h in c.everything)
        return chosen, skips
    for c in candidates[1:]:
        leave_out(c, "--all-cameras analyses each")
    return candidates[:1], skips


def _same_mosaic(headers, prior):
    """Raw files whose colour filter array differs from the reference (the
    loaded statistics', else the first raw file's) are skipped."""
    ref = prior.stats.mosaic if prior is not None else None
    used, skipped = [], []
    for h in headers:
        m = h.mosaic(unpack=False)
        if m is None:
            used.append(h)
        elif ref is None or ref.same_as(m):
            ref = ref or m
            used.append(h)
        else:
            skipped.append((h.path, f"colour filter {m.describe()} differs from the "
                                    f"reference {ref.describe()}"))
    return used, skipped


# --------------------------------------------------------------------------- step 2: plan

def plan_group(group: Group, settings: Settings, log):
    """The plan (workers, tier, memory) for one group, logged.

    Raises
    ------
    PlanError
        Nothing fits the budget (or a forced plan exceeds it without ``force``).
    """
    from . import budget

    res = budget.detect_resources()
    for note in res.notes:
        log.detail(note)
    prior = group.prior.stats if group.prior else None
    tier = settings.tier
    if prior is not None and tier is None:
        tier = prior.tier
    bands = settings.bands
    if group.prior is not None and group.prior.band is not None:
        bands = group.prior.band.bands      # a checkpoint of band passes goes on with them
    if prior is not None and not prior.n:
        prior = None                        # nothing loaded to merge

    def plan_for(residual_bytes, residual_period=None):
        return budget.make_plan(
            group.shape, group.sample_dtype, max(1, len(group.headers)), res.cpus,
            budget.run_budget(res, settings.memory_budget),
            workers=settings.workers, tier=tier, force=settings.force,
            max_file_bytes=max((h.file_bytes for h in group.headers), default=0),
            shm_free_bytes=res.shm_free_bytes, detection=True,
            checkpoints=bool(settings.checkpoint_every or settings.checkpoint_seconds),
            loaded_dtype=None if prior is None else prior.mean.dtype, batch=settings.batch,
            decoder=budget.decoder_for({h.format for h in group.headers}, group.sample_dtype),
            bands=bands, residual_bytes=residual_bytes, residual_period=residual_period,
            # loaded residual statistics, and their merge with the new ones
            extra_parent_bytes=3 * prior.residuals.nbytes if prior is not None
            and prior.residuals is not None else 0)

    plan = _keep_residuals(plan_for(0), plan_for, group, settings, prior)
    log.info(plan.describe())
    from .kernels import describe as kernels_in_use
    log.detail(kernels_in_use())
    return plan


def _keep_residuals(plan, plan_for, group: Group, settings: Settings, prior):
    """``plan`` (made by ``plan_for(0)``) with the temporal residual
    statistics when the run keeps them, else with the reason it does not.

    ``plan_for(residual_bytes, residual_period)`` plans the same run with a
    residual accumulator of that size (and neighbour distance) beside each
    accumulator (also used by the Dask
    path, whose tasks are planned with a worker's memory).
    """
    period, why_not = _residual_period(group, settings, prior)
    if period is not None and plan.bands > 1:
        period, why_not = None, ("no temporal residual statistics: they are not kept "
                                 "with band passes")
    if period is not None:
        plan, why_not = _with_residuals(plan, plan_for, group, period)
    if why_not is None and period is not None and prior is not None \
            and prior.residuals.levels is None and prior.residuals.layout.mode == "ycc":
        # statistics files written before the level statistics: the merge
        # keeps only what both sides have
        why_not = ("no level statistics: the loaded residual statistics have none (an "
                   "earlier version's file), so the merged ones keep none and the level "
                   "test (dead red and blue photosites in 4:2:0 JPEGs) is not made")
    if why_not:
        plan = replace(plan, reasons=plan.reasons + (why_not,))
    return plan


def _residual_period(group: Group, settings: Settings, prior):
    """Neighbour distance of the residual statistics this group would keep,
    or ``(None, why not)``."""
    if not settings.residuals:
        return None, "no temporal residual statistics (turned off)"
    if settings.detect.darks:
        return None, "no temporal residual statistics: dark frames have no scene to see through"
    if prior is not None and prior.residuals is None:
        return None, ("no temporal residual statistics: the loaded statistics have none, "
                      "and a merge keeps them only when both sides do")
    period = 2
    mosaic = group.mosaic()
    if mosaic is not None:
        from .detect import mosaic_period
        period = mosaic_period(mosaic, group.shape)
    if prior is not None and prior.residuals.layout.reach != period:
        return None, ("no temporal residual statistics: the loaded ones were taken "
                      "with other neighbours")
    return period, None


def _with_residuals(plan, plan_for, group, period):
    """The plan with the residual accumulator, if it costs no worker and no
    accuracy tier; else the plan without it and the reason."""
    from . import budget
    from .errors import PlanError
    from .residual import residual_layout, residual_nbytes

    extra = residual_nbytes(residual_layout(group.shape, period)) + 64   # + segment alignment
    try:
        full = plan_for(extra, period)
    except PlanError:
        full = None
    same = full is not None and (full.workers, full.tier, full.bands) == \
        (plan.workers, plan.tier, plan.bands) and (full.fits or not plan.fits)
    if not same:
        return plan, (f"no temporal residual statistics: their {budget.format_bytes(extra)} "
                      f"per accumulator would cost a worker, the accuracy tier or band passes "
                      f"within the budget; detection uses the mean and variance tests only")
    full = replace(full, residual_period=period,
                   reasons=full.reasons + (f"temporal residual statistics kept beside each "
                                           f"accumulator ({budget.format_bytes(extra)}): "
                                           f"warm photosites are judged frame by frame",))
    return full, None


# --------------------------------------------------------------------------- step 3: run

def run_group(group: Group, plan, settings: Settings, log, *,
              progress: Optional[Callable[[int, int, int], None]] = None,
              should_stop: Optional[Callable[[], Optional[int]]] = None):
    """Compute the group's statistics (merged with the loaded ones).

    Returns
    -------
    stats : Stats
        Knowing their sample type and, for raw files, their colour filter array.
    result : engine.RunResult
        Workers, skips and timings of the run.

    Raises
    ------
    Stopped
        ``should_stop`` asked for it (the checkpoint, if any, is saved first).
    TooFewImages
        Fewer than ``settings.min_images`` images in the end.
    """
    from . import engine, statsio
    from .tiers import max_images
    from .welford import merge_stats

    prior = group.prior.stats if group.prior and group.prior.stats.n else None
    meta = {"sample_dtype": group.sample_dtype, "mosaic": group.mosaic(), "camera": group.camera}
    resume = _band_resume(group, log)
    job = engine.Job(files=group.paths, shape=group.shape, sample_dtype=group.sample_dtype,
                     tier=plan.tier, workers=plan.workers, max_pixels=settings.max_pixels,
                     batch=plan.batch,
                     cap=max_images(plan.tier, group.sample_dtype),
                     checkpoint_every=settings.checkpoint_every,
                     checkpoint_seconds=settings.checkpoint_seconds, bands=plan.bands,
                     residual_period=getattr(plan, "residual_period", None), resume=resume)

    def with_prior(st):
        if st is not None:
            st = replace(st, **meta)
        if prior is not None:
            st = prior if st is None else merge_stats(prior, st)
        return st

    def save_band_checkpoint(snap):
        statsio.save_band_checkpoint(settings.checkpoint, snap, camera=meta["camera"],
                                     mosaic=meta["mosaic"],
                                     loaded_files=prior.files if prior is not None else ())
        return f" in band pass {snap.pass_index + 1} of {snap.bands}"

    def save_checkpoint(snapshot):
        if isinstance(snapshot, engine.BandSnapshot):
            where = save_band_checkpoint(snapshot)
            log.detail(f"checkpoint{where}: {snapshot.n} images of the pass saved to "
                       f"{settings.checkpoint}")
            return
        snapshot = with_prior(snapshot)
        statsio.save_stats(settings.checkpoint, snapshot)
        log.detail(f"checkpoint: {snapshot.n} images saved to {settings.checkpoint}")

    try:
        result = engine.run(job, progress=progress, should_stop=should_stop,
                            on_checkpoint=save_checkpoint if settings.checkpoint else None)
    except engine.Interrupted as exc:
        for path, reason in exc.result.skipped:
            log.skip(path, reason)
        snap = exc.result.snapshot
        if settings.checkpoint and snap is not None:
            where = save_band_checkpoint(snap)
            raise Stopped(exc.signum, snap.n, settings.checkpoint, where) from None
        stats = with_prior(exc.result.stats)
        if settings.checkpoint and stats is not None:
            statsio.save_stats(settings.checkpoint, stats)
            raise Stopped(exc.signum, stats.n, settings.checkpoint) from None
        raise Stopped(exc.signum) from None
    for path, reason in result.skipped:
        log.skip(path, reason)
    stats = with_prior(result.stats)
    if stats is None or stats.n < settings.min_images:
        raise TooFewImages(0 if stats is None else stats.n, settings.min_images)
    if settings.save_stats:
        statsio.save_stats(settings.save_stats, stats)
        log.info(f"statistics saved to {settings.save_stats}")
    return stats, result


def _band_resume(group: Group, log):
    """The group's band-pass checkpoint as an ``engine.BandSnapshot`` naming
    the group's own paths (None without one).

    Every file the checkpointed passes read must be among the inputs; inputs
    they did not read cannot join once the first pass is over (the finished
    rows lack them): they are skipped with the reason.
    """
    from .engine import BandSnapshot
    band = group.prior.band if group.prior is not None else None
    if band is None:
        return None
    mine = {os.path.realpath(p): p for p in group.paths}

    def ours(f):
        p = mine.get(os.path.realpath(f))
        if p is None:
            raise HotPixelError(f"{f}: read by the checkpointed band passes but not among the "
                                f"inputs; give --resume the same photos")
        return p
    used = [ours(f) for f in band.used]
    skipped = [(mine.get(os.path.realpath(f), f), r) for f, r in band.skipped]
    if band.pass_index > 0:
        known = set(used) | {f for f, _ in skipped}
        skipped += [(p, f"not read by the checkpointed band passes (their first pass is over); "
                        f"analyse it in another run") for p in group.paths if p not in known]
    log.detail(f"--resume: band pass {band.pass_index + 1} of {band.bands} goes on "
               f"({len(band.partial_files)} files of it done)")
    return BandSnapshot(shape=band.shape, tier=band.tier, sample_dtype=band.sample_dtype,
                        bands=band.bands, pass_index=band.pass_index, used=used, skipped=skipped,
                        partial_files=[ours(f) for f in band.partial_files], parts=band.parts,
                        finished=band)


# --------------------------------------------------------------------------- step 4: detect

def detect_defects(stats: Stats, options: Optional[DetectOptions] = None, *,
                   threads: int = 1, beside=None) -> List[Defect]:
    """The defects of finished statistics, judged as what they are.

    Statistics of a raw mosaic (``stats.mosaic`` set) are judged photosite
    by photosite against same-colour photosites (``rawdetect.detect_raw``),
    each defect with its CFA colour; photos against same-channel neighbours
    (``detect.detect``).  The choice comes from the statistics alone, so
    loaded statistics are judged as the run that made them.  ``threads``:
    the threads detection's bands are spread over (the same defects for
    any count); ``beside``: an executor for the residual test of photos
    (``detect.detect``'s).
    """
    from .detect import detect
    options = options or DetectOptions()
    if stats.mosaic is not None:
        from .rawdetect import detect_raw
        m = stats.mosaic
        return detect_raw(stats.mean, stats.var, stats.n, m.cfa(stats.shape), options,
                          colour_desc=m.colour_desc, white=m.white_level,
                          residuals=stats.residuals, threads=threads)
    return detect(stats.mean, stats.var, stats.n, options, residuals=stats.residuals,
                  threads=threads, beside=beside)


def detect_lines(stats: Stats, *, threads: int = 1, cancel=None) -> list:
    """Bad columns and rows of finished statistics (``lines.find_lines``):
    per CFA sub-grid for a raw mosaic, per channel for photos; with the
    temporal residual statistics when the statistics carry them; the pass
    over the rows on ``threads`` threads; ``cancel`` as ``find_lines``'."""
    from .lines import find_lines
    if stats.mosaic is not None:
        m = stats.mosaic
        return find_lines(stats.mean, stats.var, cfa=m.cfa(stats.shape),
                          colour_desc=m.colour_desc or "RGBG", residuals=stats.residuals,
                          threads=threads, cancel=cancel)
    return find_lines(stats.mean, stats.var, residuals=stats.residuals, threads=threads,
                      cancel=cancel)


def analyse_group(group: Group, plan, settings: Settings, log, *, started=None,
                  progress=None, should_stop=None) -> Analysis:
    """Run, detect and wrap up one planned group (steps 3 and 4).

    Parameters
    ----------
    started : float, optional
        ``time.perf_counter()`` at the start of the input step (for ``seconds``).
    """
    started = time.perf_counter() if started is None else started
    stats, result = run_group(group, plan, settings, log, progress=progress,
                              should_stop=should_stop)
    # the workers have exited: detection and the line test take their
    # CPUs, as the plan counted them (issue 10; the merge does the same)
    from .budget import finish_threads
    threads, beside = finish_threads(plan.workers)
    if beside:
        import threading
        from concurrent.futures import ThreadPoolExecutor
        stop = threading.Event()
        with ThreadPoolExecutor(1, thread_name_prefix="hotpixel-lines") as pool:
            found = pool.submit(detect_lines, stats, cancel=stop.is_set)
            try:
                # the residual test queued on the line test's thread: it
                # runs there once the line test is done, beside detection's
                # bands (issue 10)
                defects = detect_defects(stats, settings.detect, threads=threads, beside=pool)
                # waiting for the line test, too (detection may end first)
                lines = found.result()
            except BaseException:
                # Ctrl-C, SIGTERM or an error: the line test stops at its
                # next band instead of running to its end while the pool
                # waits for it (issue 13: a signal is obeyed within a second)
                stop.set()
                raise
    else:
        defects = detect_defects(stats, settings.detect, threads=threads)
        lines = detect_lines(stats)
    from .frames import frames_for_inputs
    frames = frames_for_inputs([h.path for h in group.headers if h.format == "RAW"])
    return Analysis(camera=group.camera, plan=plan, stats=stats, defects=defects,
                    skipped=list(group.skipped) + list(result.skipped), workers=result.workers,
                    seconds=time.perf_counter() - started, shots=group.shots(result.used),
                    frames=frames, lines=lines)


def prepare(paths, settings: Settings, log, outputs=()) -> List[Group]:
    """Steps before planning: loaded statistics, inputs, bodies; the groups
    that have enough photos.

    Raises
    ------
    TooFewImages
        No group has ``settings.min_images`` images.
    """
    prior = load_prior(settings, log)
    groups = resolve_inputs(paths, settings, log, prior, outputs=outputs)
    enough = [g for g in groups if g.n_images >= settings.min_images]
    if not enough:
        raise TooFewImages(max((g.n_images for g in groups), default=0), settings.min_images)
    return enough
