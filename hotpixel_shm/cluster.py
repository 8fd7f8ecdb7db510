"""The same analysis on a Dask cluster (``--dask ADDRESS`` or ``--dask local``).

Dask's distributed scheduler places the work, moves the partial results
between machines and recomputes what a lost worker held; this module only
says what the tasks are:

* the client (this process) probes the headers and groups the photos exactly
  as a local run does (``pipeline.resolve_inputs``), then cuts the group into
  shards of a few files;
* one task per shard computes that shard's partial statistics on a Dask
  worker with the project's own ingest step (``engine.Ingest``: decode, fold,
  skip) into an :class:`~hotpixel_shm.welford.Accumulator`, in the worker's
  process (the serial path; the cluster has one worker per CPU), and returns
  the accumulator's own fields (a ``kernels_numpy.Partial``);
* the partials are merged on the cluster in a tree of at most
  ``split_every`` partials per task (:func:`combine_partials`), so no
  machine holds more than a few at once;
* a last task finishes the statistics (``welford.finalise_range``, merged
  with loaded statistics as a local run does) and keeps them on the cluster;
  detection (defects and line defects), the picture and the statistics
  file are computed from them there, and only the defects, the line
  defects, the summary, the picture's and the statistics file's bytes come
  back.

The exact tier's partials stay integer sums all the way up the tree (widened
to 64 bits where a sum could overflow), so the result equals a local run bit
for bit; the float tiers combine with Chan's formula in float64 and are
within their documented bounds of a local run.

Dask itself is imported only here, and only when a cluster is asked for:
without the optional extra, :func:`require` says how to install it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from . import tiers
from .errors import HotPixelError
from .pipeline import Analysis, Stopped, TooFewImages

__all__ = [
    "LOCAL", "DEFAULT_TIMEOUT", "DEFAULT_SPLIT_EVERY", "INSTALL_HINT", "DaskUnavailable",
    "require", "connect", "Session", "WorkerInfo", "ClusterPlan", "ClusterStats",
    "ClusterAnalysis", "Shard", "combine_partials", "shard_sizes", "merge_task_bytes",
    "MAX_SHARD_FILES", "LOCAL_HTTP",
]

#: ``--dask local``: start a LocalCluster on this machine.
LOCAL = "local"
#: Seconds to reach the scheduler (``--dask-timeout``).
DEFAULT_TIMEOUT = 10.0
#: Partials merged per task of the tree (``--dask-split-every``).
DEFAULT_SPLIT_EVERY = 4
INSTALL_HINT = ("--dask needs the optional Dask extra: pip install 'hotpixel_shm[dask]' "
                "(it brings dask[distributed])")
#: Files per shard at most: a lost worker costs at most this many files'
#: work to recompute, and a fast worker can take over a slow one's share.
#: Not fewer: every shard is one more image-sized partial to move and merge
#: (measured with ``scripts/dask_bench.py``: moving a 24 MP exact partial
#: between two processes of one machine costs about as much as decoding
#: and adding a few photos).
MAX_SHARD_FILES = 64
#: Same variable as the engine's testing aid: seconds a shard task sleeps
#: after each file, so that tests can act while a run is in progress.
_DELAY_ENV = "HOTPIXEL_SHM_TEST_DELAY"
_POLL = 0.1
#: A LocalCluster's scheduler always serves HTTP (health, metrics): on a free
#: loopback port, without the dashboard (``dashboard_address=None`` would
#: still try port 8787 and warn when another cluster has it).
LOCAL_HTTP = {"dashboard_address": "127.0.0.1:0", "scheduler_kwargs": {"dashboard": False}}


class DaskUnavailable(HotPixelError):
    """Dask's distributed scheduler is not installed (see :data:`INSTALL_HINT`)."""


def require():
    """Import ``distributed`` or say how to install it.

    Returns
    -------
    module
        The ``distributed`` package.

    Raises
    ------
    DaskUnavailable
        It is not installed.
    """
    try:
        import distributed
    except ImportError as exc:
        raise DaskUnavailable(INSTALL_HINT) from exc
    return distributed


# --------------------------------------------------------------------------- merge algebra

@dataclass
class Shard:
    """A partial result travelling through the tree, and the files behind it.

    Attributes
    ----------
    partial : kernels_numpy.Partial
        The accumulator's own fields (exact integer sums stay integers); or
        finished mean and variance once float partials were combined.
    used : list of (int, str)
        ``(index, path)`` of the files in it, in input order.
    skipped : list of (int, str, str)
        ``(index, path, reason)`` of the files a worker could not read.
    residuals : (residual.ResidualLayout, numpy.ndarray) or None
        The temporal residual accumulator of the same files, as its layout
        and its own flat buffer (``residual.residual_nbytes`` bytes); None
        when the run keeps none.
    """

    partial: object
    used: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    residuals: Optional[tuple] = None


def _peak(sample_dtype):
    return 255 if np.dtype(sample_dtype) == np.uint8 else 65535


def _integer_dtype(field_dtype, bound):
    """The field's own integer type if ``bound`` fits it, else uint64."""
    if bound <= np.iinfo(field_dtype).max:
        return np.dtype(field_dtype)
    return np.dtype(np.uint64)


def combine_partials(parts, tier):
    """The combine step of the tree: several partial results as one.

    Parameters
    ----------
    parts : sequence of kernels_numpy.Partial
        Over the same flat values; empty ones (``n == 0``) are ignored.
    tier : str
        The run's tier: finished float partials get its result dtype.

    Returns
    -------
    kernels_numpy.Partial
        Exact accumulators: the tier ``"exact"`` with the integer sums added
        exactly, each field in its own type while the total cannot overflow
        it, else in uint64 (so finishing it gives the bits a local run
        gives), as long as the variance can be finished from integers
        (``(peak * n)**2 < 2**64``: about 65,000 16-bit or 16 million 8-bit
        images).  Anything else: finished mean and population variance
        (``kernels_numpy.FINISHED``), combined with Chan's formula in
        float64 by ``welford.finalise_range``.

    Raises
    ------
    HotPixelError
        Partials of different sizes.
    """
    from .kernels_numpy import FINISHED, Partial
    from .welford import finalise_range

    parts = list(parts)
    if not parts:
        raise HotPixelError("nothing to combine")
    size = parts[0].fields[0].size
    if any(p.fields[0].size != size for p in parts):
        raise HotPixelError("cannot combine partial results of different sizes")
    live = [p for p in parts if p.n > 0]
    if not live:
        return parts[0]
    if len(live) == 1:
        return live[0]
    total = sum(p.n for p in live)
    same = all(p.tier == "exact" and p.sample_dtype == live[0].sample_dtype for p in live)
    # finished from integers only while n * sumsq - sum**2 fits uint64 (as
    # kernels_numpy's block loop requires); beyond, Chan's formula in float64
    if same and (_peak(live[0].sample_dtype) * total) ** 2 < 2 ** 64:
        peak = _peak(live[0].sample_dtype)
        bounds = (total * peak, total * peak * peak)
        fields = []
        for k, bound in enumerate(bounds):
            dt = _integer_dtype(max((p.fields[k].dtype for p in live), key=lambda d: d.itemsize),
                                bound)
            out = live[0].fields[k].astype(dt)
            for p in live[1:]:
                # the sum in the wide type: adding in the inputs' type first would overflow
                np.add(out, p.fields[k], out=out, dtype=dt)
            fields.append(out)
        return Partial(total, "exact", live[0].sample_dtype, tuple(fields))
    rdt = tiers.result_dtype(tier)
    mean = np.empty(size, rdt)
    var = np.empty(size, rdt)
    finalise_range(live, 0, size, mean, var)
    return Partial(total, FINISHED, None, (mean, var))


def merge_task_bytes(shape, sample_dtype, tier, n_images, split_every,
                     residual_bytes=0) -> int:
    """Bytes a merge task of the tree holds: ``split_every`` partials in and one out.

    A shard's partial is the accumulator's fields; a merged one is, for the
    exact tier, the integer sums in the types :func:`combine_partials` widens
    them to for ``n_images`` images, and for the others finished mean and
    variance in the tier's result type.  Each partial also carries its
    temporal residual accumulator (``residual_bytes``, 0 when not kept).
    """
    values = math.prod(shape)
    dt = np.dtype(sample_dtype)
    leaf = tiers.segment_nbytes(tier, dt, values)
    if tier == "exact":
        peak = _peak(dt)
        (_, f_sum), (_, f_sq) = tiers.fields(tier, dt)
        out = values * (_integer_dtype(f_sum, n_images * peak).itemsize
                        + _integer_dtype(f_sq, n_images * peak * peak).itemsize)
    else:
        out = 2 * values * tiers.result_dtype(tier).itemsize
    return (int(split_every) * max(leaf, out) + out
            + (int(split_every) + 1) * int(residual_bytes))


# --------------------------------------------------------------------------- tasks (run on workers)

@dataclass(frozen=True)
class _Spec:
    """What a shard task needs besides its files."""

    tier: str
    shape: Tuple[int, int, int]
    sample_dtype: str
    max_pixels: int
    batch: int = 1
    #: neighbour distance of the temporal residual statistics (``engine.Job``); None: none kept
    residual_period: Optional[int] = None


def _worker_address():
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return None


def _event(topic, msg):
    """Tell the client about one file (its progress bar); best effort."""
    if not topic:
        return
    try:
        from distributed import get_worker
        get_worker().log_event(topic, msg)
    except (ImportError, ValueError):
        pass


def _shard_task(spec: _Spec, files, topic=None, delay=0.0) -> Shard:
    """One shard's partial statistics, with the engine's own ingest step
    (and its per-frame residual hook when the run keeps residuals).

    ``files`` is a list of ``(index, path)``.  A file this worker cannot read
    is skipped with its reason and the worker's address.
    """
    from .engine import Ingest, residual_hook, segment_parts
    from .residual import ResidualAccumulator, residual_nbytes
    from .welford import Accumulator

    where = _worker_address()
    acc = Accumulator(spec.tier, spec.shape, spec.sample_dtype)
    layout = segment_parts(spec.tier, spec.shape, spec.sample_dtype, spec.residual_period)[2]
    residuals = racc = None
    if layout is not None:
        # the accumulator in a buffer of its own: the partial carries it as it is
        residuals = (layout, np.zeros(residual_nbytes(layout), np.uint8))
        racc = ResidualAccumulator(layout, residuals[1])
    ingest = Ingest(acc, spec.max_pixels, spec.batch, on_batch=residual_hook(racc))
    path_of = dict(files)
    used, skipped = [], []

    def fold():
        for idx in ingest.flush():
            used.append((idx, path_of[idx]))
            _event(topic, ("done", idx))

    try:
        for idx, path in files:
            reason = ingest.add(idx, path)
            if reason is not None:
                if where:
                    reason = f"{reason} (on Dask worker {where})"
                skipped.append((idx, path, reason))
                _event(topic, ("skip", idx))
            elif ingest.full:
                fold()
            if delay:
                time.sleep(delay)
        fold()
    finally:
        ingest.close()
    used.sort()
    return Shard(acc.as_partial(), used, skipped, residuals)


def _residual_accumulators(parts, writable_first=False):
    """``(layout, buffer)`` partials as ``residual.ResidualAccumulator`` views
    (the first on a copy when it is to be written: buffers that came over
    the network may be read-only)."""
    from .residual import ResidualAccumulator
    out = []
    for k, (layout, buf) in enumerate(parts):
        if k == 0 and writable_first:
            buf = np.array(buf, dtype=np.uint8, copy=True)
        out.append((ResidualAccumulator(layout, buf), buf))
    return out


def _combine_residuals(parts):
    """Residual partials added as the local merge adds them
    (``ResidualAccumulator.add_into``); None when the run keeps none."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]     # as combine_partials passes a lone partial on: no copy
    accs = _residual_accumulators(parts, writable_first=True)
    first, buf = accs[0]
    for other, _ in accs[1:]:
        first.add_into(other)
    return (first.layout, buf)


def _combine_task(tier, *shards: Shard) -> Shard:
    """A node of the tree: a few shards' partials as one."""
    part = combine_partials([s.partial for s in shards], tier)
    used = sorted(u for s in shards for u in s.used)
    skipped = sorted(k for s in shards for k in s.skipped)
    return Shard(part, used, skipped, _combine_residuals([s.residuals for s in shards]))


@dataclass
class _Finished:
    """The finished statistics, kept on the cluster, and the skipped files."""

    stats: object
    skipped: list


def _finish_task(root: Optional[Shard], tier, shape, meta: dict, prior=None) -> _Finished:
    """Finish the tree's root into Stats (merged with loaded ones, if any),
    with its residual statistics finished as the local run finishes them
    (``residual.sum_residuals``)."""
    from .model import Stats
    from .residual import sum_residuals
    from .welford import finalise_range, merge_stats

    stats, skipped = None, []
    if root is not None and root.partial.n > 0:
        rdt = tiers.result_dtype(tier)
        mean = np.empty(shape, rdt)
        var = np.empty(shape, rdt)
        n = finalise_range([root.partial], 0, mean.size, mean.reshape(-1), var.reshape(-1))
        residuals = None
        if root.residuals is not None:
            residuals = sum_residuals([a for a, _ in _residual_accumulators(
                [root.residuals], writable_first=True)])
        stats = Stats(n=int(n), mean=mean, var=var, tier=tier,
                      files=[p for _, p in root.used], residuals=residuals, **meta)
    if prior is not None:
        stats = prior if stats is None else merge_stats(prior, stats)
    if root is not None:
        skipped = [(p, r) for _, p, r in root.skipped]
    return _Finished(stats, skipped)


@dataclass
class _Summary:
    """What comes back to the client: counts, defects, line defects and the
    summary lines."""

    stats: "ClusterStats"
    defects: list
    skipped: list
    lines: list = field(default_factory=list)


def _detect_task(finished: _Finished, options, lowest: int = 10) -> _Summary:
    """Detection (defects and line defects, by the pipeline's own functions)
    on the worker that holds the statistics."""
    from .pipeline import detect_defects, detect_lines
    st = finished.stats
    if st is None:
        return _Summary(None, [], finished.skipped)
    defects = detect_defects(st, options)
    lines = detect_lines(st)
    summary = ClusterStats(n=st.n, tier=st.tier, shape=tuple(st.shape),
                           sample_dtype=st.sample_dtype, mosaic=st.mosaic, files=list(st.files),
                           camera=st.camera,
                           _range=st.variance_range(), _lowest=st.lowest_variance(lowest))
    return _Summary(summary, defects, finished.skipped, lines)


def _file_bytes(name, write):
    """Run ``write(path)`` into a private temporary file called ``name``; its bytes."""
    with tempfile.TemporaryDirectory(prefix="hotpixel-dask-") as tmp:
        path = os.path.join(tmp, name)
        write(path)
        with open(path, "rb") as fh:
            return fh.read()


def _stats_file_task(finished: _Finished) -> bytes:
    """The statistics file (``statsio.save_stats``), as bytes."""
    from . import statsio
    return _file_bytes("stats.npz", lambda path: statsio.save_stats(path, finished.stats))


def _picture_task(finished: _Finished, analysis) -> bytes:
    """The picture, drawn by the pipeline's own writer from the statistics here."""
    full = dataclasses.replace(analysis, stats=finished.stats)
    return _file_bytes("picture.png", lambda path: full.write(picture=path))


# --------------------------------------------------------------------------- client side

@dataclass(frozen=True)
class WorkerInfo:
    """One Dask worker as the scheduler describes it."""

    address: str
    nthreads: int
    memory_limit: int    # bytes; 0: no limit

    @property
    def task_limit(self) -> int:
        """Memory of one task: the worker's limit shared by its threads (0: none)."""
        return self.memory_limit // max(1, self.nthreads) if self.memory_limit else 0


def shard_sizes(n_files, threads, cap=None) -> List[int]:
    """How many files each shard gets.

    Parameters
    ----------
    n_files : int
    threads : int
        Worker threads of the cluster (tasks that can run at once).
    cap : int, optional
        Most files per shard (the tier's accuracy limit per accumulator).

    Returns
    -------
    list of int
        Consecutive shard sizes, as even as possible: one shard per thread,
        more when a shard would hold more than :data:`MAX_SHARD_FILES` or
        ``cap`` files.
    """
    n_files = int(n_files)
    if n_files <= 0:
        return []
    most = min(MAX_SHARD_FILES, int(cap)) if cap else MAX_SHARD_FILES
    shards = min(n_files, max(max(1, int(threads)), -(-n_files // most)))
    base, extra = divmod(n_files, shards)
    return [base + (1 if i < extra else 0) for i in range(shards)]


@dataclass
class ClusterPlan:
    """The plan of a run on a cluster.

    Attributes
    ----------
    address : str
        The scheduler (or ``local``).
    workers : list of WorkerInfo
    task_plan : budget.Plan
        One task's plan: the serial path on one shard, planned with a
        worker's memory limit (the smallest among the workers).
    shards : list of int
        Files per shard.
    split_every : int
        Partials merged per task of the tree.
    merge_bytes : int
        Counted in ``task_plan``: the partials a merge task holds.
    """

    address: str
    workers: List[WorkerInfo]
    task_plan: object
    shards: List[int]
    split_every: int
    merge_bytes: int

    # what the report and the console read from a plan
    @property
    def tier(self) -> str:
        return self.task_plan.tier

    @property
    def budget_bytes(self) -> int:
        return self.task_plan.budget_bytes

    @property
    def total_bytes(self) -> int:
        return self.task_plan.total_bytes

    @property
    def threads(self) -> int:
        return sum(w.nthreads for w in self.workers)

    def describe(self) -> str:
        """Multi-line text for the console and ``--plan``."""
        from .budget import format_bytes
        lines = [f"Dask cluster at {self.address}: {len(self.workers)} worker(s), "
                 f"{self.threads} thread(s)"]
        lines.append(f"  {'worker':<28s} {'threads':>7s}  memory limit")
        for w in self.workers:
            limit = format_bytes(w.memory_limit) if w.memory_limit else "none"
            lines.append(f"  {w.address:<28s} {w.nthreads:>7d}  {limit}")
        n = sum(self.shards)
        lines.append(f"Shards: {len(self.shards)} of up to {max(self.shards, default=0)} "
                     f"file(s) ({n} in all), one task each; partials merged {self.split_every} "
                     f"at a time in a tree ({format_bytes(self.merge_bytes)} per merge task)")
        lines.append("Each task, planned with a worker's memory limit:")
        lines += ["  " + ln for ln in self.task_plan.describe().splitlines()]
        return "\n".join(lines)


@dataclass
class ClusterStats:
    """What the client knows of statistics that stay on the cluster.

    The summary methods of :class:`~hotpixel_shm.model.Stats` work; the
    arrays themselves are not here (``--save-stats`` brings them back).
    """

    n: int
    tier: str
    shape: tuple
    sample_dtype: Optional[str] = None
    mosaic: object = None
    files: list = field(default_factory=list)
    camera: object = None
    _range: tuple = (0.0, 0.0, 0.0)
    _lowest: list = field(default_factory=list)

    @property
    def is_raw(self) -> bool:
        return self.mosaic is not None

    def variance_range(self):
        """(min, max, mean) of the variance."""
        return self._range

    def lowest_variance(self, k=10):
        """The k subpixels of lowest variance, as computed on the cluster."""
        if k > len(self._lowest) and len(self._lowest) < math.prod(self.shape):
            raise HotPixelError(f"only the {len(self._lowest)} lowest variances came back "
                                f"from the cluster")
        return list(self._lowest[:k])

    @property
    def mean(self):
        raise HotPixelError("the statistics stay on the Dask cluster (use --save-stats)")

    var = mean


class ClusterAnalysis(Analysis):
    """A :class:`pipeline.Analysis` whose statistics stay on the cluster.

    Everything but the picture is written here from the defects; the picture
    is drawn on the cluster, by the same writer, and only its bytes come
    back.
    """

    _session = None
    _finished = None

    def _write_one(self, export, option, path) -> str:
        if option != "picture":
            return super()._write_one(export, option, path)
        if self._session is None or self._session.client is None:
            raise HotPixelError("the picture is drawn on the Dask cluster, whose session is "
                                "closed: write it while the session is open (inside an "
                                "iter_analyses loop)")
        base = Analysis(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Analysis)})
        data = self._session.result(self._session.client.submit(
            _picture_task, self._finished, base, pure=False))
        _write_bytes(path, data)
        return os.fsdecode(path)

    def release(self):
        """Let the cluster forget the statistics."""
        if self._finished is not None:
            self._finished.release()
            self._finished = None


def _write_bytes(path, data):
    from .export import atomic_write
    atomic_write(path, lambda fh: fh.write(data), mode="wb")


class Session:
    """A connection to a Dask cluster (and the LocalCluster, if it is ours).

    Use :func:`connect`; close it (or use it as a context manager) when done.
    ``plan_group`` and ``analyse_group`` take the place of the pipeline's
    functions of those names.
    """

    def __init__(self, client, address, cluster=None, split_every=DEFAULT_SPLIT_EVERY):
        if int(split_every) < 2:
            raise HotPixelError(f"split_every must be at least 2, got {split_every}")
        self.client = client
        self.address = address
        self.cluster = cluster
        self.split_every = int(split_every)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Disconnect (and stop the LocalCluster started for this run)."""
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    # ------------------------------------------------------------------ cluster
    def workers(self) -> List[WorkerInfo]:
        """The workers the scheduler knows now, by address."""
        try:
            info = self.client.scheduler_info(n_workers=-1)["workers"]
        except TypeError:  # before Dask 2025: every worker is listed anyway
            info = self.client.scheduler_info()["workers"]
        return [WorkerInfo(a, int(w.get("nthreads", 1)), int(w.get("memory_limit") or 0))
                for a, w in sorted(info.items())]

    def result(self, future, should_stop=None, on_tick=None):
        """Wait for ``future``; poll ``should_stop`` while waiting.

        Raises
        ------
        Stopped
            ``should_stop`` returned a signal (the caller cancels).
        HotPixelError
            The cluster gave up on a task (e.g. it killed workers again and again).
        """
        while not future.done():
            if should_stop is not None:
                sig = should_stop()
                if sig:
                    stop = Stopped(sig)
                    stop.args = ("interrupted; the run's tasks on the Dask cluster were cancelled",)
                    raise stop
            if on_tick is not None:
                on_tick()
            time.sleep(_POLL)
        if on_tick is not None:
            on_tick()
        try:
            return future.result()
        except HotPixelError:
            raise
        except Exception as exc:  # noqa: BLE001 - the cluster's own failures, one line
            if type(exc).__name__ in ("KilledWorker", "CancelledError", "FutureCancelledError"):
                raise HotPixelError(f"the Dask cluster gave up: {type(exc).__name__}: {exc}") from None
            raise

    # ------------------------------------------------------------------ plan
    def plan_group(self, group, settings, log) -> ClusterPlan:
        """The plan of one group on this cluster, logged.

        Each task is planned by ``budget.make_plan`` as the serial path on one
        shard, with the smallest worker memory limit per thread as budget
        (times Dask's pause fraction: a worker stops taking tasks above it);
        the partials a merge task holds are counted too.  Temporal residual
        statistics are kept, or not, by the pipeline's rules (``--no-residuals``,
        dark frames, loaded statistics without them, or when they would cost
        the tier or band passes), and the plan says why.

        Raises
        ------
        PlanError
            Nothing fits a worker's memory.
        """
        from . import budget, pipeline
        workers = self.workers()
        if not workers:
            raise HotPixelError(f"the Dask scheduler at {self.address} has no workers")
        limits = [w.task_limit for w in workers if w.task_limit]
        if limits:
            task_budget = int(min(limits) * _pause_fraction())
        else:
            task_budget = budget.run_budget(budget.detect_resources(), settings.memory_budget)
            log.detail("the Dask workers have no memory limit: planned with this machine's budget")
        threads = sum(w.nthreads for w in workers)
        prior = group.prior.stats if group.prior else None
        tier = settings.tier or (prior.tier if prior is not None else None)
        n = len(group.headers)
        cap = tiers.max_images(tier, group.sample_dtype) if tier else None
        sizes = shard_sizes(n, threads, cap)
        merges = {}

        def plan_for(residual_bytes, residual_period=None):
            merge_bytes = 0
            for _ in range(3):  # the merge's bytes depend on the tier the plan chooses
                plan = budget.make_plan(
                    group.shape, group.sample_dtype, max(1, max(sizes, default=1)), 1,
                    task_budget, workers=1, tier=tier, force=settings.force,
                    max_file_bytes=max((h.file_bytes for h in group.headers), default=0),
                    detection=True, extra_parent_bytes=merge_bytes,
                    loaded_dtype=None if prior is None else prior.mean.dtype,
                    residual_bytes=residual_bytes, residual_period=residual_period)
                need = self._merge_bytes(group, plan.tier, residual_bytes)
                if need == merge_bytes:
                    break
                merge_bytes = need
            merges[residual_bytes] = merge_bytes
            return plan

        # residuals kept as a local run keeps them: when they cost no tier and no
        # band pass within a worker's memory (the pipeline's own rules and reasons)
        plan = pipeline._keep_residuals(plan_for(0), plan_for, group, settings, prior)
        merge_bytes = merges[max(merges)] if plan.residual_period else merges[0]
        if tier is None:
            sizes = shard_sizes(n, threads, tiers.max_images(plan.tier, group.sample_dtype))
        cplan = ClusterPlan(self.address, workers, plan, sizes, self.split_every, merge_bytes)
        log.info(cplan.describe())
        return cplan

    def _merge_bytes(self, group, tier, residual_bytes=0):
        """A merge task holds ``split_every`` partials and makes one."""
        return merge_task_bytes(group.shape, group.sample_dtype, tier, len(group.headers),
                                self.split_every, residual_bytes)

    # ------------------------------------------------------------------ run
    def analyse_group(self, group, plan: ClusterPlan, settings, log, *, started=None,
                      progress=None, should_stop=None) -> "ClusterAnalysis":
        """Run, detect and wrap up one planned group on the cluster.

        Same parameters and result as ``pipeline.analyse_group``; the result's
        ``stats`` is a :class:`ClusterStats` (the arrays stay on the cluster).

        Raises
        ------
        Stopped
            ``should_stop`` asked for it: every task of the run is cancelled
            and the cluster stays as it was.
        TooFewImages
            Fewer than ``settings.min_images`` images in the end.
        """
        started = time.perf_counter() if started is None else started
        client = self.client
        run = uuid.uuid4().hex[:12]
        files = list(enumerate(group.paths))
        spec = _Spec(plan.tier, tuple(group.shape), group.sample_dtype, settings.max_pixels,
                     plan.task_plan.batch, getattr(plan.task_plan, "residual_period", None))
        delay = float(os.environ.get(_DELAY_ENV) or 0)
        topic = f"hotpixel-shm-{run}"
        counter = _Progress(len(files), progress)
        client.subscribe_topic(topic, counter.event)
        futures, finished = [], None
        try:
            level, start = [], 0
            for i, size in enumerate(plan.shards):
                level.append(client.submit(_shard_task, spec, files[start:start + size], topic,
                                           delay, key=f"hotpixel-shard-{i}-{run}", pure=False))
                start += size
            futures += level
            depth = 0
            while len(level) > 1:
                depth += 1
                level = [client.submit(_combine_task, plan.tier, *level[j:j + plan.split_every],
                                       key=f"hotpixel-merge-{depth}-{j}-{run}", pure=False)
                         for j in range(0, len(level), plan.split_every)]
                futures += level
            root = level[0] if level else None  # None: the loaded statistics alone
            prior = group.prior.stats if group.prior else None
            if prior is not None:
                prior = client.scatter(prior)
                futures.append(prior)
            meta = {"sample_dtype": group.sample_dtype, "mosaic": group.mosaic(),
                    "camera": group.camera}
            finished = client.submit(_finish_task, root, plan.tier, tuple(group.shape), meta,
                                     prior, key=f"hotpixel-finish-{run}", pure=False)
            futures.append(finished)
            summary_f = client.submit(_detect_task, finished, settings.detect,
                                      key=f"hotpixel-detect-{run}", pure=False)
            futures.append(summary_f)
            summary = self.result(summary_f, should_stop, counter.tick)
            if summary.stats is None or summary.stats.n < settings.min_images:
                raise TooFewImages(0 if summary.stats is None else summary.stats.n,
                                   settings.min_images)
            if settings.save_stats:
                saved = client.submit(_stats_file_task, finished, pure=False)
                futures.append(saved)
                data = self.result(saved, should_stop)
                _write_bytes(settings.save_stats, data)
                log.info(f"statistics saved to {settings.save_stats}")
        except BaseException:
            client.cancel(futures)
            raise
        finally:
            client.unsubscribe_topic(topic)
            for f in futures:
                if f is not finished:
                    f.release()
        for path, reason in summary.skipped:
            log.skip(path, reason)
        analysis = ClusterAnalysis(
            plan=plan, stats=summary.stats, defects=summary.defects, lines=summary.lines,
            skipped=list(group.skipped) + list(summary.skipped), workers=plan.threads,
            seconds=time.perf_counter() - started,
            **_group_fields(group, summary.stats.files))
        analysis._session = self
        analysis._finished = finished
        return analysis


def _group_fields(group, used):
    """The fields of an Analysis that come from the group's headers, as
    ``pipeline.analyse_group`` sets them."""
    from .frames import frames_for_inputs
    frames = frames_for_inputs([h.path for h in group.headers if h.format == "RAW"])
    return {"camera": group.camera, "shots": group.shots(used), "frames": frames}


class _Progress:
    """Counts the files done across the cluster from the workers' events.

    A file a lost worker had done is done again by another; it counts once.
    """

    def __init__(self, total, callback):
        self.total = total
        self.callback = callback
        self.done = set()
        self.skipped = set()
        self._lock = threading.Lock()
        self._shown = None

    def event(self, event):
        # called on the client's event-loop thread: (timestamp, msg)
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        try:
            kind, idx = msg[0], int(msg[1])
        except (TypeError, ValueError, IndexError, KeyError):
            return
        with self._lock:
            (self.done if kind == "done" else self.skipped).add(idx)

    def tick(self):
        if self.callback is None:
            return
        with self._lock:
            now = (len(self.done), len(self.skipped - self.done))
        if now != self._shown:
            self._shown = now
            self.callback(now[0], self.total, now[1])


def _pause_fraction():
    try:
        import dask
        frac = dask.config.get("distributed.worker.memory.pause")
    except (ImportError, KeyError):
        frac = None
    return float(frac) if frac else 0.8


def connect(address, timeout=DEFAULT_TIMEOUT, *, settings=None, log=None,
            split_every=DEFAULT_SPLIT_EVERY) -> Session:
    """Connect to a Dask scheduler, or start a LocalCluster.

    Parameters
    ----------
    address : str
        ``tcp://host:port`` of a running scheduler, or :data:`LOCAL` for a
        LocalCluster on this machine: one worker process per usable CPU with
        one thread each, bound to 127.0.0.1, no dashboard, the memory budget
        (``settings.memory_budget``, default 75 % of the memory available)
        shared equally as their memory limits.
    timeout : float
        Seconds to reach the scheduler (and for its workers to appear).
    settings : pipeline.Settings, optional
        The memory budget of a local cluster.
    log : optional
        Gets ``info`` about the cluster.
    split_every : int
        Partials merged per task of the tree.

    Returns
    -------
    Session

    Raises
    ------
    DaskUnavailable
        Dask's distributed scheduler is not installed.
    HotPixelError
        The scheduler cannot be reached within ``timeout`` seconds, or has
        no worker.
    """
    require()
    from distributed import Client
    timeout = float(timeout)
    if address == LOCAL:
        return _connect_local(timeout, settings, log, split_every)
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise HotPixelError(f"cannot reach the Dask scheduler at {address} within "
                            f"{timeout:g} s ({exc})") from None
    except ValueError as exc:
        raise HotPixelError(f"--dask {address}: {exc}") from None
    session = Session(client, address, split_every=split_every)
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError):
        session.close()
        raise HotPixelError(f"the Dask scheduler at {address} has no worker "
                            f"(waited {timeout:g} s)") from None
    except BaseException:
        session.close()
        raise
    return session


@contextlib.contextmanager
def _sigint_ignored():
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _connect_local(timeout, settings, log, split_every):
    from distributed import Client, LocalCluster

    from . import budget
    res = budget.detect_resources()
    total = budget.run_budget(res, settings.memory_budget if settings else None)
    n = max(1, res.cpus)
    limit = total // n
    if log is not None:
        log.info(f"starting a local Dask cluster: {n} worker process(es), "
                 f"{budget.format_bytes(limit)} memory limit each")
    # A terminal's Ctrl-C reaches the whole process group: the worker
    # processes would die with a KeyboardInterrupt traceback each, while this
    # process cancels the run and stops them in order.  An ignored SIGINT is
    # inherited across exec, and Python then installs no handler of its own.
    # The plan counts every partial a task holds, so the workers keep them in
    # memory: spilling image-sized partials to disk (Dask's default at 60 %
    # of the limit) would only add disk traffic.
    import dask
    no_spill = {"distributed.worker.memory.target": False,
                "distributed.worker.memory.spill": False}
    with _sigint_ignored(), dask.config.set(no_spill):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               host="127.0.0.1", memory_limit=limit, silence_logs=logging.ERROR,
                               **LOCAL_HTTP)
    try:
        client = Client(cluster, timeout=timeout, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    session = Session(client, cluster.scheduler_address, cluster=cluster, split_every=split_every)
    try:
        client.wait_for_workers(n, timeout=max(timeout, 60.0))
    except BaseException:
        session.close()
        raise
    return session
