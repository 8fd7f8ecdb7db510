"""The command line: ``python -m hotpixel_shm`` and ``hotpixel-shm``.

No numerics and no steps of the analysis here: this module parses options,
drives the steps of ``pipeline`` (resolve the inputs, plan, run, detect,
write), prints what they report, and turns every expected failure into one
clear line and an exit code.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time

from . import __version__
from .errors import HotPixelError, PlanError

__all__ = ["build_parser", "main", "EXIT_OK", "EXIT_USAGE", "EXIT_TOO_FEW",
           "EXIT_NO_PLAN", "EXIT_ERROR"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TOO_FEW = 3
EXIT_NO_PLAN = 4

_EPILOG = """\
exit codes: 0 analysis done; 1 an output could not be written or another error;
2 usage error; 3 fewer usable images than --min-images; 4 no plan fits in memory;
130 interrupted (Ctrl-C); 143 terminated (SIGTERM).

coordinates in every output: column x, row y, 0-based, in the stored pixel
array (the EXIF orientation tag is not applied).
"""


class _Version(argparse.Action):
    """``--version``: the version and the kernels in use (imported only when asked)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .kernels import describe
        print(f"{parser.prog} {__version__}\n{describe()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hotpixel-shm",
        description="Find hot, stuck, dead and noisy pixels of a camera sensor from many "
                    "photos (or dark frames): per-subpixel mean and variance computed by "
                    "worker processes sharing memory, within the memory you have.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image files, directories, or glob patterns (quoted patterns are "
                        "expanded by the program: 'shots/*.JPG')")
    p.add_argument("--version", action=_Version, nargs=0,
                   help="show the version and the kernels in use, then exit")
    p.add_argument("--demo", action="store_true",
                   help="make a simulated camera's photos with known defects in a temporary "
                        "directory, analyse them with --auto-workers and compare")
    g = p.add_argument_group("inputs")
    g.add_argument("-r", "--recursive", action="store_true", help="descend into sub-directories")
    g.add_argument("--darks", action="store_true",
                   help="the inputs are dark frames (lens cap on): hot pixels, weak ones "
                        "included, by mean; noisy ones by std")
    g.add_argument("--min-images", type=int, default=2, metavar="N",
                   help="fail (exit 3) with fewer usable images than this (default 2)")
    g.add_argument("--camera", metavar="TEXT", default=None,
                   help="analyse only photos whose camera (make, model, serial joined with "
                        "spaces) contains TEXT, ignoring case")
    g.add_argument("--all-cameras", action="store_true",
                   help="analyse every camera body with at least --min-images photos, each "
                        "with its own plan, statistics and outputs (the camera's name is "
                        "inserted into every output file name); default: only the body with "
                        "the most usable photos")
    g.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels than this as possible decompression "
                        "bombs (default Pillow's 89,478,485)")
    g = p.add_argument_group("plan and engine")
    g.add_argument("--auto-workers", action="store_true",
                   help="choose the number of worker processes and the accumulator tier "
                        "from the CPUs and memory really available (recommended)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="use N worker processes (1 = in-process serial path); default 1 "
                        "unless --auto-workers")
    g.add_argument("--dtype", default="auto",
                   choices=("auto", "exact", "float64", "float32", "float16"),
                   help="accumulator tier (default auto: the most accurate that fits)")
    g.add_argument("--memory-budget", metavar="SIZE", default=None,
                   help="memory the whole run may use, e.g. 1.5G or 800M (default: "
                        "75%% of the memory available now, cgroup limits included)")
    g.add_argument("--batch", type=int, default=None, metavar="K",
                   help="photos each worker decodes before one pass over its accumulator "
                        "(default: up to 2, as the memory budget allows)")
    g.add_argument("--bands", type=int, default=None, metavar="N",
                   help="make N passes over the photos, each accumulating one horizontal band "
                        "of the frame (default: one pass, or as many as the memory budget needs)")
    g.add_argument("--force", action="store_true",
                   help="run a plan forced by --workers/--dtype even when over budget")
    g.add_argument("--plan", action="store_true",
                   help="print the plan and the reasons for it, then exit without decoding")
    g = p.add_argument_group("Dask cluster (optional extra: pip install 'hotpixel_shm[dask]')")
    g.add_argument("--dask", metavar="ADDRESS",
                   help="compute on a Dask cluster: tcp://host:8786 of a running scheduler, or "
                        "'local' to start one worker process per CPU here; the files must be "
                        "readable at the same paths on every worker")
    g.add_argument("--dask-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to reach the scheduler (default 10)")
    g.add_argument("--dask-split-every", type=int, default=4, metavar="N",
                   help="partial results merged per task of the tree on the cluster (default 4)")
    g = p.add_argument_group("statistics files")
    g.add_argument("--save-stats", metavar="FILE.npz", help="save n, mean, var (+ shape, tier, files)")
    g.add_argument("--load-stats", metavar="FILE.npz",
                   help="merge statistics saved earlier with the new photos")
    g.add_argument("--checkpoint", metavar="FILE.npz",
                   help="save the statistics so far and the files done when interrupted "
                        "(and every --checkpoint-every files)")
    g.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="also checkpoint after every N files (default: only on interruption)")
    g.add_argument("--checkpoint-seconds", type=float, default=0, metavar="S",
                   help="also checkpoint every S seconds")
    g.add_argument("--resume", metavar="FILE.npz",
                   help="continue an interrupted run from its checkpoint")
    g = p.add_argument_group("detection")
    g.add_argument("--top", type=int, default=None, metavar="N", help="keep the N worst defects")
    g.add_argument("--no-residuals", action="store_true",
                   help="do not keep temporal residual statistics (less memory and time; "
                        "warm photosites under scene texture are then missed)")
    g.add_argument("--hot-sigma", type=float, default=None, metavar="K",
                   help="hot: mean this many robust sigmas above the neighbours")
    g.add_argument("--stuck-sigma", type=float, default=None, metavar="K",
                   help="stuck: std this many robust sigmas below the neighbours")
    g.add_argument("--dead-sigma", type=float, default=None, metavar="K",
                   help="dead: mean this many robust sigmas below the neighbours")
    g.add_argument("--noisy-sigma", type=float, default=None, metavar="K",
                   help="noisy: std this many robust sigmas above the neighbours")
    g.add_argument("--compare", metavar="OLD.json",
                   help="an earlier report of the same body: mark each defect new or "
                        "persisting (with the date first seen), list the gone ones, and give "
                        "new defects the time of OLD's newest photo in the --dcraw list")
    g = p.add_argument_group("outputs (each written atomically)")
    g.add_argument("--json", metavar="FILE", help="the report (stable schema)")
    g.add_argument("--csv", metavar="FILE", help="the defects as CSV")
    g.add_argument("--dcraw", metavar="FILE",
                   help="dcraw -P bad-pixel list: 'col row 0', in dcraw's frame")
    g.add_argument("--libraw", metavar="FILE",
                   help="bad-pixel list for LibRaw-based programs (dcraw_emu -P, rawpy): "
                        "'col row 0', in LibRaw's frame")
    g.add_argument("--rawtherapee", metavar="FILE_OR_DIR",
                   help="RawTherapee 'x y' list; a directory gets '<Make> <Model>.badpixels'")
    g.add_argument("--siril", metavar="FILE", help="Siril cosmetic list: 'P x y H' / 'P x y C'")
    g.add_argument("--mask", metavar="FILE.png", help="8-bit mask: 255 at defective pixels")
    g.add_argument("--picture", metavar="FILE.png",
                   help="the frame with every defect marked and crops of the worst")
    g = p.add_argument_group("repair (see README, Repairing photos)")
    g.add_argument("--repair-into", metavar="DIR",
                   help="after the analysis, write a repaired copy of each analysed photo "
                        "into DIR (created; same names, raw files as DNG; never over an input)")
    g.add_argument("--apply", metavar="REPORT.json",
                   help="skip the analysis: repair the given photos with the defects of an "
                        "earlier --json report (needs --repair-into)")
    g = p.add_argument_group("console")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only results")
    g.add_argument("-v", "--verbose", action="store_true", help="more detail")
    return p


class _Console:
    def __init__(self, quiet, verbose):
        self.quiet = quiet
        self.verbose = verbose

    def out(self, text=""):
        print(text, flush=True)

    def info(self, text):
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def detail(self, text):
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def skip(self, path, reason):
        print(f"{os.fsdecode(path)}: {reason}", file=sys.stderr, flush=True)

    def error(self, text):
        print(f"hotpixel-shm: error: {text}", file=sys.stderr, flush=True)


class _Interrupt(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the program is (``signum`` tells which)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = int(signum)


class _Stopper:
    """What SIGINT and SIGTERM do, for the whole command.

    By default a signal raises :class:`_Interrupt` at once, wherever the
    program is: nothing is kept, and ``finally`` blocks end the workers and
    remove the shared memory, so the program is gone within a fraction of a
    second (a 24 MP merge alone would take seconds).  Inside
    :meth:`graceful` (a run whose partial work is to be saved in a
    checkpoint, or whose tasks on a Dask cluster are to be cancelled) the
    first signal only sets a flag the engine polls -- it stops the workers,
    merges and saves, or cancels -- and a second one raises.
    """

    def __init__(self):
        self.signum = None
        self._graceful = False
        self._old = {}

    def __enter__(self):
        from . import _early

        self.signum = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        early = _early.take()
        if early is not None:          # arrived while the command was loading
            self.__exit__(None, None, None)
            raise _Interrupt(early)
        return self

    def _handler(self, signum, frame):
        if not self._graceful or self.signum is not None:
            raise _Interrupt(signum)
        self.signum = signum

    def __call__(self):
        return self.signum

    @contextlib.contextmanager
    def graceful(self, on=True):
        """Within: the first signal sets the flag (if ``on``) instead of raising."""
        self._graceful = bool(on)
        try:
            yield self
        finally:
            self._graceful = False

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


#: The command's signal handling (one per process: signals go to the main thread).
_STOPPER = _Stopper()


def _exit_code_for(signum):
    return 128 + int(signum)


def main(argv=None) -> int:
    """Run the command line; returns the exit code."""
    from . import _early

    old = _early.install()
    # the command's own process, when numpy is still to be loaded (not
    # when main() is called from a program that has it already)
    _early.single_threaded_blas()
    try:
        return _main(argv)
    finally:
        _early.restore(old)


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    con = _Console(args.quiet, args.verbose)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.bands is not None and args.bands < 1:
        parser.error("--bands must be at least 1")
    if args.min_images < 1:
        parser.error("--min-images must be at least 1")
    if args.top is not None and args.top < 1:
        parser.error("--top must be at least 1")
    if args.checkpoint_every < 0 or args.checkpoint_seconds < 0:
        parser.error("--checkpoint-every and --checkpoint-seconds must be 0 or more")
    if (args.checkpoint_every or args.checkpoint_seconds) and not args.checkpoint:
        parser.error("--checkpoint-every/--checkpoint-seconds need --checkpoint FILE")
    if args.max_pixels is not None and args.max_pixels < 1:
        parser.error("--max-pixels must be positive")
    if args.all_cameras and (args.load_stats or args.resume):
        parser.error("--all-cameras cannot be combined with --load-stats/--resume "
                     "(statistics files hold one body's photos)")
    if args.camera is not None and not args.camera.strip():
        parser.error("--camera needs some text")
    if not args.paths and not args.demo:
        parser.error("give at least one image file, directory or pattern (or --demo)")
    if args.apply and not args.repair_into:
        parser.error("--apply needs --repair-into DIR (where the repaired copies go)")
    if args.dask:
        _check_dask_args(parser, args)
    try:
        # numpy and the rest load while the early handler only records a
        # signal: an exception raised inside an extension module's import
        # comes back as an ImportError (numpy's does), not as the signal
        _load_engine(args)
        with _STOPPER:
            if args.apply:
                return _apply(args, con)
            return _demo(args, con) if args.demo else _analyse(args, con)
    except PlanError as exc:
        con.error(str(exc))
        return EXIT_NO_PLAN
    except HotPixelError as exc:
        con.error(str(exc))
        return EXIT_ERROR
    except (KeyboardInterrupt, ImportError) as exc:
        cause = _interrupt_behind(exc)   # exc itself, for a KeyboardInterrupt
        if cause is None:
            raise
        con.error("interrupted")
        return _exit_code_for(getattr(cause, "signum", signal.SIGINT))
    except BrokenPipeError:
        # stdout closed early (e.g. piped into `head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _load_engine(args):
    """Import the modules the command will run (numpy among them)."""
    from . import pipeline  # noqa: F401
    if args.dask:
        from . import cluster  # noqa: F401


def _interrupt_behind(exc):
    """The KeyboardInterrupt (or :class:`_Interrupt`) an exception was raised
    from, or None (a signal that lands inside an extension's import is
    re-raised as an ImportError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _check_dask_args(parser, args):
    from .cluster import DaskUnavailable, require
    try:
        require()
    except DaskUnavailable as exc:
        parser.error(str(exc))
    if args.checkpoint or args.resume:
        parser.error("--checkpoint and --resume are not available with --dask (a lost Dask "
                     "worker's tasks are recomputed instead)")
    if args.workers is not None:
        parser.error("--workers does not apply with --dask (the cluster's workers do the work)")
    if args.dask_timeout <= 0:
        parser.error("--dask-timeout must be positive")
    if args.dask_split_every < 2:
        parser.error("--dask-split-every must be at least 2")


def _engine(args, con, settings):
    """The steps that plan and run: the pipeline's own, or a Dask session's."""
    if not args.dask:
        from . import pipeline
        return contextlib.nullcontext(pipeline)
    from . import cluster
    return cluster.connect(args.dask, args.dask_timeout, settings=settings, log=con,
                           split_every=args.dask_split_every)


def _settings(args):
    """The pipeline's settings from the parsed options."""
    from .detect import DetectOptions
    from .pipeline import Settings
    opts = DetectOptions(darks=args.darks, top=args.top)
    for name in ("hot_sigma", "stuck_sigma", "dead_sigma", "noisy_sigma"):
        v = getattr(args, name)
        if v is not None:
            setattr(opts, name, v)
    workers = args.workers
    if workers is None and not args.auto_workers:
        workers = 1
    return Settings(
        workers=workers, tier=None if args.dtype == "auto" else args.dtype,
        memory_budget=args.memory_budget,
        force=args.force, batch=args.batch, bands=args.bands, recursive=args.recursive,
        max_pixels=args.max_pixels or Settings.max_pixels, min_images=args.min_images,
        detect=opts, load_stats=args.load_stats, resume=args.resume, save_stats=args.save_stats,
        checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
        checkpoint_seconds=args.checkpoint_seconds, camera=args.camera,
        all_cameras=args.all_cameras, residuals=not args.no_residuals)


def _outputs(args):
    """{option: path} of the outputs asked for."""
    from .pipeline import OUTPUT_OPTIONS
    return {o: getattr(args, o) for o in OUTPUT_OPTIONS if getattr(args, o)}


def _analyse(args, con, truths=None):
    """Analyse the photos body by body; ``truths`` maps a camera to its
    planted defects (the demo)."""
    from . import pipeline

    t_start = time.perf_counter()
    settings = _settings(args)
    outputs = _outputs(args)
    many = args.all_cameras
    try:
        old = _old_report(args)
        plain = {**outputs, "save_stats": args.save_stats, "checkpoint": args.checkpoint}
        checked = [] if many else [p for o, p in plain.items()
                                   if p and not (o == "rawtherapee" and os.path.isdir(p))]
        with _engine(args, con, settings) as engine:
            groups = pipeline.prepare(args.paths, settings, con, outputs=checked)
            if many:
                _check_per_camera_outputs(groups, plain)
            elif old is not None:
                from .history import check_same_body
                check_same_body(old, groups[0].camera, groups[0].shape, args.compare)
            if args.repair_into:
                from .repairfiles import check_repair_targets
                check_repair_targets([h.path for g in groups for h in g.headers],
                                     args.repair_into)
            rows = []
            for group in groups:
                body_outputs = {o: pipeline.output_for(p, group.camera, o) if many else p
                                for o, p in plain.items()}
                row = _one_body(args, con, engine, group, settings, body_outputs, old, t_start,
                                (truths or {}).get(group.camera))
                if row is None:
                    return EXIT_OK  # --plan
                rows.append(row)
                t_start = time.perf_counter()
    except pipeline.TooFewImages as exc:
        con.error(str(exc))
        return EXIT_TOO_FEW
    except pipeline.Stopped as exc:
        con.error(str(exc))
        return _exit_code_for(exc.signum)
    if many:
        _table(con, rows)
    return EXIT_OK


def _old_report(args):
    if not args.compare:
        return None
    from .history import load_report
    return load_report(args.compare)


def _check_per_camera_outputs(groups, plain):
    """Per-body output names: none may be an input or another's output."""
    from . import pipeline
    from .export import check_output_paths
    names = {}
    for g in groups:
        for o, p in plain.items():
            if p and not (o == "rawtherapee" and os.path.isdir(p)):
                names[f"--{o.replace('_', '-')} for {g.camera.label}"] = \
                    pipeline.output_for(p, g.camera, o)
    check_output_paths(names, [h.path for g in groups for h in g.headers])


def _one_body(args, con, engine, group, settings, outputs, old, t_start, truth):
    """Plan, run, detect, compare and write one body; its table row (None
    after --plan).  ``engine`` plans and runs: the pipeline, or a Dask session."""
    from dataclasses import replace

    from . import pipeline
    settings = replace(settings, save_stats=outputs.pop("save_stats"),
                       checkpoint=outputs.pop("checkpoint"))
    rt = outputs.get("rawtherapee")
    if args.all_cameras and rt and os.path.isdir(rt) and not group.camera.known:
        con.skip(rt, f"no RawTherapee file for the {group.camera.label}'s {len(group.headers)} "
                     "photo(s): they name no make and model, so RawTherapee could not match it")
        outputs["rawtherapee"] = None
    if group.camera.known or args.all_cameras:
        con.out(f"camera: {group.camera.label} ({len(group.headers)} photo(s) to read)")
    plan = engine.plan_group(group, settings, con)
    if args.plan:
        if args.quiet:
            con.out(plan.describe())
        return "plan" if args.all_cameras else None
    bar = _progress(len(group.headers), con)
    try:
        # a checkpoint to save, or a cluster's tasks to cancel: stop in order
        with _STOPPER.graceful(bool(settings.checkpoint or args.dask)) as stopper:
            analysis = engine.analyse_group(group, plan, settings, con, started=t_start,
                                            progress=bar.update if bar else None,
                                            should_stop=stopper)
    finally:
        if bar:
            bar.close()
    if old is not None:
        _compare_old(con, analysis, old, args)
    _summary(con, analysis)
    for option, frame in analysis.frames.items():
        if outputs.get(option) and not frame.known:
            print(f"hotpixel-shm: warning: --{option}: {frame.note}", file=sys.stderr)
    written = analysis.write(**{o: p for o, p in outputs.items() if p})
    for path in written:
        con.info(f"wrote {path}")
    if hasattr(analysis, "release"):  # statistics kept on a Dask cluster: let them go
        analysis.release()
    if args.repair_into:
        from .repairfiles import repair_photos
        _repair_summary(con, repair_photos(group.paths, analysis.defects, args.repair_into,
                                           log=con))
    if truth is not None:
        _compare_truth(con, truth, analysis.defects)
    # the table needs only these: the statistics of each body are let go
    # before the next body's run (its plan counts on that memory)
    counts = analysis.counts()["kind"]
    return analysis.camera.label, analysis.stats.n, counts, written


def _apply(args, con):
    """--apply: repair the photos with an earlier report's defects, no analysis."""
    from . import inputs
    from .repairfiles import check_apply, load_report, repair_photos
    shape, defects, report = load_report(args.apply)
    files, skipped = inputs.expand_paths(args.paths, recursive=args.recursive)
    headers, bad = inputs.probe_all(files, args.max_pixels or inputs.DEFAULT_MAX_PIXELS)
    check_apply(args.apply, shape, report, headers, skipped + bad)
    con.info(f"--apply: {len(defects)} defect(s) from {args.apply} on {len(headers)} photo(s)")
    _repair_summary(con, repair_photos([h.path for h in headers], defects, args.repair_into,
                                       log=con))
    return EXIT_OK


def _repair_summary(con, results):
    done = [r for r in results if not r.skipped]
    con.out(f"repaired copies: {len(done)} written, {len(results) - len(done)} skipped")
    for r in done:
        for x, y, why in r.unrepaired[:5]:
            con.detail(f"  {r.target}: x={x} y={y} not repaired: {why}")
        if r.measures.get("mcus") is not None:
            con.detail(f"  {r.target}: {r.measures['mcus']} of {r.measures['mcus_total']} MCUs "
                       f"re-encoded; outside them decoded pixels moved by mean "
                       f"{r.measures['outside_mean']:.3f}, max {r.measures['outside_max']} levels")


def _compare_old(con, analysis, old, args):
    from .camera import Camera
    old_cam = Camera.from_dict(old.get("camera"))
    if (args.all_cameras and old_cam.known and analysis.camera.known
            and old_cam != analysis.camera):
        con.info(f"--compare: {args.compare} is a report of {old_cam.label}; "
                 f"{analysis.camera.label} not compared")
        return
    h = analysis.compare(old, path=args.compare)
    since = f" since {h['since']}" if h["since"] else ""
    con.out(f"{h['new']} new, {h['persisting']} persisting, {len(h['gone'])} gone{since}")
    hl = h.get("lines") or {}
    if hl.get("new") or hl.get("persisting") or hl.get("gone"):
        con.out(f"bad columns/rows: {hl['new']} new, {hl['persisting']} persisting, "
                f"{len(hl['gone'])} gone")


def _table(con, rows):
    """The final table of a run over several bodies."""
    rows = [r for r in rows if r != "plan"]
    if not rows:
        return
    from .model import KINDS
    con.out("")
    head = ["camera", "photos"] + list(KINDS) + ["outputs"]
    lines = []
    for label, n, c, written in rows:
        lines.append([label, str(n)] + [str(c[k]) for k in KINDS] + [", ".join(written) or "-"])
    widths = [max(len(r[i]) for r in lines + [head]) for i in range(len(head) - 1)]
    for r in [head] + lines:
        con.out("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in
                          enumerate(zip(r, widths))) + "  " + r[-1])


def _progress(total, con):
    if con.quiet or not sys.stderr.isatty() or total == 0:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - optional
        return None

    class _Bar:
        def __init__(self):
            self.t = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True,
                          desc="statistics")
            self.last = 0

        def update(self, done, total_, skipped):
            step = done + skipped - self.last
            if step > 0:
                self.t.update(step)
                self.last += step

        def close(self):
            self.t.close()

    return _Bar()


def _summary(con, analysis):
    stats, defects = analysis.stats, analysis.defects
    h, w, c = stats.shape
    low, high, mean = stats.variance_range()
    con.out(f"images used: {stats.n}, skipped: {len(analysis.skipped)}; {w}x{h}x{c}; "
            f"tier {stats.tier}; {analysis.workers} worker(s); {analysis.seconds:.2f} s")
    con.out(f"variance: min {low:.4g}, max {high:.4g}, mean {mean:.4g}")
    con.out("lowest-variance subpixels (x, y, channel, variance):")
    for x, y, ch, v in stats.lowest_variance(10):
        con.out(f"  {x:6d} {y:6d} {ch:2d}  {v:.6g}")
    con.out(f"defects: {len(defects)}")
    for i, d in enumerate(defects[:20], 1):
        con.out(f"  {i:3d}. {d.kind:5s} x={d.x} y={d.y} channels={d.channels} "
                f"mean={d.mean:.1f} std={d.std:.2f} neighbours={d.neighbour_mean:.1f} "
                f"score={d.score:.1f}")
    if len(defects) > 20:
        con.out(f"  ... {len(defects) - 20} more (see --json/--csv)")
    if analysis.lines:
        con.out(f"line defects: {len(analysis.lines)}")
        for ln in analysis.lines[:20]:
            where = f"x={ln.index}" if ln.kind == "column" else f"y={ln.index}"
            con.out(f"       {ln.kind:6s} {where} from {ln.start} to {ln.stop} "
                    f"channels={ln.channels} offset={ln.offset:+.2f} score={ln.score:.1f}")


#: The demo's two bodies of one model: (serial, photos, seed).
_DEMO_BODIES = (("1001", 24, 2026), ("2002", 16, 2027))


def _demo(args, con):
    from .camera import Camera, Shot, exif_bytes
    from .synth import write_sample_set
    with tempfile.TemporaryDirectory(prefix="hotpixel-demo-") as tmp:
        con.info(f"demo: writing simulated photos of two bodies of one model to {tmp} ...")
        truths = {}
        for serial, n, seed in _DEMO_BODIES:
            cam = Camera("HOTPIXEL", "HOTPIXEL SIM-1", serial)

            def block(i, cam=cam):
                return exif_bytes(cam, Shot(f"2026-04-{1 + i % 28:02d}T12:00:00", 100 * (1 + i % 4),
                                            1 / 250))
            sample = write_sample_set(os.path.join(tmp, f"body_{serial}"), n=n, seed=seed,
                                      exif=block)
            truths[cam] = sample.truth
            con.info(f"demo: {cam.label}: {len(sample.paths)} photos of {sample.shape[1]}x"
                     f"{sample.shape[0]}, {len(sample.truth)} planted defects")
        args.paths = [tmp]
        args.recursive = True
        args.auto_workers = True
        return _analyse(args, con, truths=truths)


def _compare_truth(con, truth, defects, radius=1):
    con.out("")
    con.out("planted vs found (a defect within 1 pixel of the planted photosite counts):")
    matched = set()
    found_n = 0
    for t in truth:
        hit = None
        for i, d in enumerate(defects):
            if abs(d.x - t.x) <= radius and abs(d.y - t.y) <= radius:
                hit = i
                break
        if hit is not None:
            matched.add(hit)
            found_n += 1
            d = defects[hit]
            con.out(f"  {t.kind:8s} at x={t.x:4d} y={t.y:4d}: found as {d.kind} (score {d.score:.1f})")
        else:
            con.out(f"  {t.kind:8s} at x={t.x:4d} y={t.y:4d}: MISSED")
    extra = [d for i, d in enumerate(defects) if i not in matched]
    con.out(f"found {found_n} of {len(truth)} planted defects; {len(extra)} other detection(s)")
    for d in extra[:10]:
        con.out(f"  other: {d.kind} at x={d.x} y={d.y} (score {d.score:.1f})")
