"""The command line: ``python -m hotpixel_shm`` and ``hotpixel-shm``.

No numerics and no steps of the analysis here: this module parses options,
drives the steps of ``pipeline`` (resolve the inputs, plan, run, detect,
write), prints what they report, and turns every expected failure into one
clear line and an exit code.
"""
from __future__ import annotations

import argparse
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
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    g.add_argument("--force", action="store_true",
                   help="run a plan forced by --workers/--dtype even when over budget")
    g.add_argument("--plan", action="store_true",
                   help="print the plan and the reasons for it, then exit without decoding")
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
    g.add_argument("--hot-sigma", type=float, default=None, metavar="K",
                   help="hot: mean this many robust sigmas above the neighbours")
    g.add_argument("--stuck-sigma", type=float, default=None, metavar="K",
                   help="stuck: std this many robust sigmas below the neighbours")
    g.add_argument("--dead-sigma", type=float, default=None, metavar="K",
                   help="dead: mean this many robust sigmas below the neighbours")
    g.add_argument("--noisy-sigma", type=float, default=None, metavar="K",
                   help="noisy: std this many robust sigmas above the neighbours")
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


class _Stopper:
    """SIGINT/SIGTERM set a flag the engine polls; a second one stops at once."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __call__(self):
        return self.signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _exit_code_for(signum):
    return 128 + int(signum)


def main(argv=None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    con = _Console(args.quiet, args.verbose)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
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
    if not args.paths and not args.demo:
        parser.error("give at least one image file, directory or pattern (or --demo)")
    try:
        return _demo(args, con) if args.demo else _analyse(args, con)
    except PlanError as exc:
        con.error(str(exc))
        return EXIT_NO_PLAN
    except HotPixelError as exc:
        con.error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        con.error("interrupted")
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into `head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


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
        force=args.force, recursive=args.recursive,
        max_pixels=args.max_pixels or Settings.max_pixels, min_images=args.min_images,
        detect=opts, load_stats=args.load_stats, resume=args.resume, save_stats=args.save_stats,
        checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
        checkpoint_seconds=args.checkpoint_seconds)


def _outputs(args):
    """{option: path} of the outputs asked for."""
    from .pipeline import OUTPUT_OPTIONS
    return {o: getattr(args, o) for o in OUTPUT_OPTIONS if getattr(args, o)}


def _analyse(args, con, truth=None):
    from . import pipeline

    t_start = time.perf_counter()
    settings = _settings(args)
    outputs = _outputs(args)
    checked = [p for o, p in outputs.items() if not (o == "rawtherapee" and os.path.isdir(p))]
    checked += [p for p in (args.save_stats, args.checkpoint) if p]
    try:
        prior = pipeline.load_prior(settings, con)
        group, skipped = pipeline.resolve_inputs(args.paths, settings, con, prior, outputs=checked)
        if group is None or group.n_images < settings.min_images:
            raise pipeline.TooFewImages(0 if group is None else group.n_images,
                                        settings.min_images)
        plan = pipeline.plan_group(group, settings, con)
        if args.plan:
            if args.quiet:
                con.out(plan.describe())
            return EXIT_OK
        bar = _progress(len(group.headers), con)
        try:
            with _Stopper() as stopper:
                analysis = pipeline.analyse_group(
                    group, plan, settings, con, started=t_start, skipped=skipped,
                    progress=bar.update if bar else None, should_stop=stopper)
        finally:
            if bar:
                bar.close()
    except pipeline.TooFewImages as exc:
        con.error(str(exc))
        return EXIT_TOO_FEW
    except pipeline.Stopped as exc:
        con.error(str(exc))
        return _exit_code_for(exc.signum)
    _summary(con, analysis)
    for option, frame in analysis.frames.items():
        if option in outputs and not frame.known:
            print(f"hotpixel-shm: warning: --{option}: {frame.note}", file=sys.stderr)
    for path in analysis.write(**outputs):
        con.info(f"wrote {path}")
    if truth is not None:
        _compare_truth(con, truth, analysis.defects)
    return EXIT_OK


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


def _demo(args, con):
    from .synth import write_sample_set
    with tempfile.TemporaryDirectory(prefix="hotpixel-demo-") as tmp:
        con.info(f"demo: writing simulated photos to {tmp} ...")
        sample = write_sample_set(tmp, seed=2026)
        con.info(f"demo: {len(sample.paths)} photos of {sample.shape[1]}x{sample.shape[0]}, "
                 f"{len(sample.truth)} planted defects")
        args.paths = [tmp]
        args.auto_workers = True
        return _analyse(args, con, truth=sample.truth)


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
