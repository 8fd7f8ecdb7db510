"""The analysis as a chain of steps: resolve the inputs, plan, run, detect, write.

The command line (``cli``) and the Python API (:func:`hotpixel_shm.analyse`)
both drive these functions, so a notebook gets exactly what the command
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

from . import __version__
from .detect import DetectOptions
from .errors import HotPixelError
from .inputs import DEFAULT_MAX_PIXELS
from .model import Defect, Stats

__all__ = [
    "Settings", "Prior", "Group", "Analysis", "Stopped", "TooFewImages", "LogToLogging",
    "OUTPUT_OPTIONS", "load_prior", "resolve_inputs", "plan_group", "run_group",
    "detect_defects", "analyse_group",
]

#: The outputs :meth:`Analysis.write` knows, in the order they are written.
OUTPUT_OPTIONS = ("json", "csv", "dcraw", "libraw", "rawtherapee", "siril", "mask", "picture")

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

    def __init__(self, signum, saved=None, checkpoint=None):
        if saved is not None:
            text = (f"interrupted; {saved} images saved to checkpoint {checkpoint}; "
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
    """

    workers: Optional[int] = None
    tier: Optional[str] = None
    memory_budget: Union[int, str, None] = None
    force: bool = False
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


@dataclass
class Prior:
    """Statistics loaded from ``--load-stats``/``--resume`` (merged), and the
    files ``--resume`` says are done."""

    stats: Stats
    done: frozenset = frozenset()


@dataclass
class Group:
    """Photos that go into one set of statistics: one shape, one sample type.

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
    """

    headers: list
    shape: Tuple[int, int, int]
    sample_dtype: str
    prior: Optional[Prior] = None

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

    def make_model(self):
        """The most common (make, model) of the photos, or (None, None)."""
        import collections
        pairs = collections.Counter((h.make, h.model) for h in self.headers if h.make or h.model)
        if not pairs:
            return None, None
        return pairs.most_common(1)[0][0]


# --------------------------------------------------------------------------- step 1: inputs

def load_prior(settings: Settings, log) -> Optional[Prior]:
    """Statistics from ``settings.load_stats`` and/or ``settings.resume``, merged.

    Raises
    ------
    HotPixelError
        A file cannot be read, or the two files cannot be merged.
    """
    from . import statsio
    from .welford import merge_stats
    stats, done = None, set()
    for label, path in (("--load-stats", settings.load_stats), ("--resume", settings.resume)):
        if not path:
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
    if stats is None:
        return None
    if settings.tier is not None and settings.tier != stats.tier:
        raise HotPixelError(f"the loaded statistics were computed with the {stats.tier} "
                            f"tier; --dtype {settings.tier} cannot be merged with them")
    return Prior(stats=stats, done=frozenset(done))


def resolve_inputs(paths, settings: Settings, log, prior: Optional[Prior] = None,
                   outputs=()) -> Tuple[Optional[Group], list]:
    """Find the photos, read their headers, and choose the ones to analyse.

    Parameters
    ----------
    paths : iterable of str
        Files, directories, glob patterns.
    settings : Settings
    log
        Gets ``skip(path, reason)`` for every file left out, as it is known.
    prior : Prior, optional
        Loaded statistics: they fix shape and sample type, and ``--resume``'s
        finished files are left out.
    outputs : iterable of str
        Output files: refused if one of them is an input.

    Returns
    -------
    group : Group or None
        None when no photo is usable and nothing was loaded.
    skipped : list of (path, reason)
    """
    from . import inputs
    from .export import check_output_paths

    files, skipped = inputs.expand_paths(paths, recursive=settings.recursive)
    check_output_paths(list(outputs), files)
    if prior is not None and prior.done:
        n0 = len(files)
        files = [f for f in files if os.path.realpath(f) not in prior.done]
        log.info(f"--resume: {n0 - len(files)} files already done, {len(files)} to go")
    headers, bad = inputs.probe_all(files, settings.max_pixels)
    skipped.extend(bad)
    if prior is None:
        shape, dtype, used, other = inputs.reference_shape(headers)
    else:
        # the saved statistics fix the shape: photos of another size are skipped
        shape, dtype = prior.stats.shape, prior.stats.sample_dtype
        used, other = inputs.match_loaded(headers, shape, dtype)
    skipped.extend(other)
    used, other = _same_mosaic(used, prior)
    skipped.extend(other)
    for path, reason in skipped:
        log.skip(path, reason)
    if shape is None:
        return None, skipped
    return Group(headers=used, shape=tuple(shape), sample_dtype=dtype, prior=prior), skipped


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
    plan = budget.make_plan(
        group.shape, group.sample_dtype, max(1, len(group.headers)), res.cpus,
        budget.run_budget(res, settings.memory_budget),
        workers=settings.workers, tier=tier, force=settings.force,
        max_file_bytes=max((h.file_bytes for h in group.headers), default=0),
        shm_free_bytes=res.shm_free_bytes, detection=True,
        checkpoints=bool(settings.checkpoint_every or settings.checkpoint_seconds),
        loaded_dtype=None if prior is None else prior.mean.dtype)
    log.info(plan.describe())
    return plan


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

    prior = group.prior.stats if group.prior else None
    meta = {"sample_dtype": group.sample_dtype, "mosaic": group.mosaic()}
    job = engine.Job(files=group.paths, shape=group.shape, sample_dtype=group.sample_dtype,
                     tier=plan.tier, workers=plan.workers, max_pixels=settings.max_pixels,
                     cap=max_images(plan.tier, group.sample_dtype),
                     checkpoint_every=settings.checkpoint_every,
                     checkpoint_seconds=settings.checkpoint_seconds)

    def with_prior(st):
        if st is not None:
            st = replace(st, **meta)
        if prior is not None:
            st = prior if st is None else merge_stats(prior, st)
        return st

    def save_checkpoint(snapshot):
        snapshot = with_prior(snapshot)
        statsio.save_stats(settings.checkpoint, snapshot)
        log.detail(f"checkpoint: {snapshot.n} images saved to {settings.checkpoint}")

    try:
        result = engine.run(job, progress=progress, should_stop=should_stop,
                            on_checkpoint=save_checkpoint if settings.checkpoint else None)
    except engine.Interrupted as exc:
        for path, reason in exc.result.skipped:
            log.skip(path, reason)
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


# --------------------------------------------------------------------------- step 4: detect

def detect_defects(stats: Stats, options: Optional[DetectOptions] = None) -> List[Defect]:
    """The defects of finished statistics, judged as what they are.

    Statistics of a raw mosaic (``stats.mosaic`` set) are judged photosite
    by photosite against same-colour photosites (``rawdetect.detect_raw``),
    each defect with its CFA colour; photos against same-channel neighbours
    (``detect.detect``).  The choice comes from the statistics alone, so
    loaded statistics are judged as the run that made them.
    """
    from .detect import detect
    options = options or DetectOptions()
    if stats.mosaic is not None:
        from .rawdetect import detect_raw
        m = stats.mosaic
        return detect_raw(stats.mean, stats.var, stats.n, m.cfa(stats.shape), options,
                          colour_desc=m.colour_desc, white=m.white_level)
    return detect(stats.mean, stats.var, stats.n, options)


# --------------------------------------------------------------------------- the result

@dataclass
class Analysis:
    """One finished analysis: statistics, defects and how they were made.

    Attributes
    ----------
    plan : budget.Plan
        The plan the run followed.
    stats : Stats
        The finished statistics (with their metadata).
    defects : list of Defect
        Worst first.
    skipped : list of (path, reason)
        Every input left out, with the reason.
    workers : int
        Worker processes that ran.
    seconds : float
        Wall time from the first input step to the end of detection.
    make, model : str or None
        The camera's EXIF make and model (most common among the photos).
    frames : dict
        ``{program: frames.Frame}``: where each program's bad-pixel list
        counts from (``frames.frames_for_inputs``).
    """

    plan: object
    stats: Stats
    defects: List[Defect]
    skipped: list
    workers: int
    seconds: float
    make: Optional[str] = None
    model: Optional[str] = None
    frames: dict = field(default_factory=dict)

    def report(self) -> dict:
        """The JSON report (``export.build_report``'s stable schema).

        ``engine.dtype`` and ``engine.tier`` both hold the accumulator tier
        (``tier`` is the clearer name; ``dtype`` stays for readers of older
        reports).
        """
        from .export import build_report
        return build_report(
            version=__version__, shape=list(self.stats.shape),
            used=self.stats.n, skipped=self.skipped,
            engine={"workers": self.workers, "dtype": self.stats.tier,
                    "budget_bytes": int(self.plan.budget_bytes),
                    "planned_bytes": int(self.plan.total_bytes),
                    "seconds": round(float(self.seconds), 3), "tier": self.stats.tier},
            defects=self.defects)

    def write(self, *, json=None, csv=None, dcraw=None, libraw=None, rawtherapee=None,
              siril=None, mask=None, picture=None) -> List[str]:
        """Write the outputs asked for, each once and atomically.

        Parameters
        ----------
        json, csv, dcraw, libraw, siril, mask, picture : path-like, optional
            See ``export`` and ``picture``; the bad-pixel lists are written
            in their programs' frames (``frames``).
        rawtherapee : path-like, optional
            A file, or a directory in which the file gets RawTherapee's name
            for the camera.

        Returns
        -------
        list of str
            The files written, in the order of ``OUTPUT_OPTIONS``.
        """
        from . import export
        wanted = {"json": json, "csv": csv, "dcraw": dcraw, "libraw": libraw,
                  "rawtherapee": rawtherapee,
                  "siril": siril, "mask": mask, "picture": picture}
        written = []
        for option in OUTPUT_OPTIONS:
            path = wanted[option]
            if path:
                written.append(self._write_one(export, option, path))
        return written

    def _write_one(self, export, option, path) -> str:
        d = self.defects
        if option == "json":
            export.write_json(path, self.report())
        elif option == "csv":
            export.write_csv(path, d)
        elif option == "dcraw":
            export.write_dcraw(path, d, self.frames.get("dcraw"))
        elif option == "libraw":
            export.write_libraw(path, d, self.frames.get("libraw"))
        elif option == "rawtherapee":
            return export.write_rawtherapee(path, d, make=self.make, model=self.model,
                                            frame=self.frames.get("rawtherapee"))
        elif option == "siril":
            export.write_siril(path, d, self.frames.get("siril"))
        elif option == "mask":
            export.write_mask(path, d, self.stats.shape)
        elif option == "picture":
            from .picture import write_picture
            write_picture(path, self.stats.mean, d)
        return os.fsdecode(path)


def analyse_group(group: Group, plan, settings: Settings, log, *, started=None,
                  skipped=(), progress=None, should_stop=None) -> Analysis:
    """Run, detect and wrap up one planned group (steps 3 and 4).

    Parameters
    ----------
    started : float, optional
        ``time.perf_counter()`` at the start of the input step (for ``seconds``).
    skipped : iterable of (path, reason)
        Inputs left out before the run; the run's own skips are added.
    """
    started = time.perf_counter() if started is None else started
    stats, result = run_group(group, plan, settings, log, progress=progress,
                              should_stop=should_stop)
    defects = detect_defects(stats, settings.detect)
    make, model = group.make_model()
    from .frames import frames_for_inputs
    frames = frames_for_inputs([h.path for h in group.headers if h.format == "RAW"])
    return Analysis(plan=plan, stats=stats, defects=defects,
                    skipped=list(skipped) + list(result.skipped), workers=result.workers,
                    seconds=time.perf_counter() - started, make=make, model=model,
                    frames=frames)
