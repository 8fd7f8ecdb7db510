"""The command's start-up, two or more checkouts side by side (issue 10, fixed costs).

Each ``LABEL=PATH`` names a checkout (with its compiled kernels built in
place); ``LABEL=PATH:VAR=VALUE`` adds an environment variable to its runs
(e.g. ``OPENBLAS_NUM_THREADS=1``).  For every round, photo set and
checkout in turn (the order reversed every other round, so that the
machine's load falls on all alike) the script runs ``python -m
hotpixel_shm -q --auto-workers <set>`` and measures

* the wall time of the whole command and its CPU time (the process tree's
  user + system time);
* the time from the command's start until each process decodes its first
  photo (the workers' first decoded photo marks the end of the fixed costs
  before the statistics), through a ``sitecustomize`` module put before the
  checkout on ``PYTHONPATH`` that notes when ``inputs.decode`` first returns
  in each process;

and ``python -m hotpixel_shm -q --plan <first set>`` (the plan's start-up).
It prints the medians per set and checkout, and every run's wall time.
With ``--stop-after N`` each command is stopped (SIGTERM) as soon as N
processes have decoded their first photo: many short rounds of the
start-up alone (the wall and CPU columns then measure that part only).

Example::

    git worktree add ../before <commit before>   # and build it in place
    python scripts/startup_ab.py before=../before now=. \\
        --set 24MP '/photos/big/*.jpg' --set 6MP '/photos/small/*.jpg' --rounds 5
"""
from __future__ import annotations

import argparse
import glob
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

__all__ = ["HOOK", "run_once", "main"]

#: The ``sitecustomize`` that notes when ``hotpixel_shm.inputs.decode``
#: first returns in each process (appended to ``$HPS_FIRST_DECODE``).
HOOK = '''
import os, sys, time
_out = os.environ.get("HPS_FIRST_DECODE")
if _out:
    import importlib.abc, importlib.machinery

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "hotpixel_shm.inputs":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                decode, first = module.decode, [True]

                def timed(*args, **kwargs):
                    out = decode(*args, **kwargs)
                    if first[0]:
                        first[0] = False
                        with open(_out, "a") as fh:
                            fh.write(f"{os.getpid()} {time.time():.4f}\\n")
                    return out
                module.decode = timed
            spec.loader.exec_module = exec_module
            return spec
    sys.meta_path.insert(0, _Finder())
'''


def _checkout(text):
    label, _, rest = text.partition("=")
    path, *env = rest.split(":")
    if not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH[:VAR=VALUE...], got {text!r}")
    return label, os.path.abspath(path), dict(e.split("=", 1) for e in env)


def _firsts(log, t0):
    if not os.path.exists(log):
        return []
    with open(log) as fh:
        return sorted(float(line.split()[1]) - t0 for line in fh if line.strip())


def run_once(checkout, args, hook_dir, log, stop_after=0):
    """One command: ``(wall s, CPU s, [s from the start to each process's
    first decoded photo])``; stopped once ``stop_after`` processes (if not
    0) have decoded a photo."""
    _, path, extra = checkout
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([hook_dir, path]), HPS_FIRST_DECODE=log,
               **extra)
    if os.path.exists(log):
        os.unlink(log)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-m", "hotpixel_shm", "-q", *args], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if stop_after:
        while p.poll() is None and len(_firsts(log, t0)) < stop_after:
            time.sleep(0.005)
        p.terminate()
    err = p.communicate()[1]
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # stopped: killed by the signal, or exited with its status (the command's own handling)
    stopped = stop_after and p.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)
    if p.returncode != 0 and not stopped:
        raise SystemExit(f"{path}: exit {p.returncode}: {err.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, _firsts(log, t0)


def _med(values):
    return f"{statistics.median(values):.3f}" if values else "-"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="startup_ab.py", description=__doc__.splitlines()[0])
    p.add_argument("checkouts", nargs="+", type=_checkout, metavar="LABEL=PATH[:VAR=VALUE]")
    p.add_argument("--set", nargs=2, action="append", metavar=("NAME", "GLOB"), required=True,
                   help="a photo set (repeatable)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--extra", default="", help="more options for every run, space-separated")
    p.add_argument("--stop-after", type=int, default=0, metavar="N",
                   help="stop each command once N processes have decoded a photo (the "
                        "start-up alone; --plan is then not run)")
    a = p.parse_args(argv)
    sets = {name: sorted(glob.glob(pattern)) for name, pattern in a.set}
    for name, files in sets.items():
        if not files:
            p.error(f"--set {name}: no file matches")
    extra = a.extra.split()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="hps-startup-") as tmp:
        with open(os.path.join(tmp, "sitecustomize.py"), "w") as fh:
            fh.write(HOOK)
        log = os.path.join(tmp, "first-decode.log")
        for r in range(a.rounds):
            order = a.checkouts if r % 2 == 0 else a.checkouts[::-1]
            for name, files in sets.items():
                for c in order:
                    rows.setdefault((name, c[0]), []).append(
                        run_once(c, ["--auto-workers", *extra, *files], tmp, log, a.stop_after))
            for c in (order if not a.stop_after else ()):
                rows.setdefault(("--plan", c[0]), []).append(
                    run_once(c, ["--plan", *extra, *next(iter(sets.values()))], tmp, log))
            print(f"round {r + 1} of {a.rounds} (load average {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)
    print(f"{'set':8s} {'checkout':10s} {'wall s':>8s} {'CPU s':>7s} {'1st decode s':>13s} "
          f"{'last process 1st decode s':>26s}  walls")
    for (name, label), runs in rows.items():
        firsts = [f[0] for _, _, f in runs if f]
        lasts = [f[-1] for _, _, f in runs if f]
        print(f"{name:8s} {label:10s} {_med([w for w, _, _ in runs]):>8s} "
              f"{_med([c for _, c, _ in runs]):>7s} {_med(firsts):>13s} {_med(lasts):>26s}  "
              + " ".join(f"{w:.2f}" for w, _, _ in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
