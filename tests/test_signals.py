"""Real signals to a real `python -m hotpixel_shm` process tree: it stops
promptly, keeps what it computed (--checkpoint/--resume) and never leaves
shared memory or worker processes behind."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from hotpixel_shm import shm
from hotpixel_shm.statsio import load_stats

from conftest import make_frames, reference_stats, write_images


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    paths, decoded = write_images(d, make_frames(40, (20, 24, 3), seed=11))
    return str(d), paths, decoded


def _start(args, delay="0.1"):
    env = dict(os.environ, HOTPIXEL_SHM_TEST_DELAY=delay)
    return subprocess.Popen([sys.executable, "-m", "hotpixel_shm", "-q", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)


def _workers(proc):
    try:
        kids = psutil.Process(proc.pid).children()
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            if "spawn_main" in " ".join(k.cmdline()):
                out.append(k)
        except psutil.Error:
            pass
    return out


def _attached(worker):
    """Whether ``worker`` has its segment mapped (it has started its work)."""
    try:
        return any(shm.PREFIX in m.path for m in worker.memory_maps())
    except psutil.Error:
        return False


def _wait_running(proc, n_workers=2, timeout=30, settle=0.4):
    """Until the workers run and every segment is attached and unlinked
    (then ``settle`` seconds more, to let a few files through)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = _workers(proc)
        if len(w) >= n_workers and not shm.list_segments(pid=proc.pid) and \
                sum(map(_attached, w)) >= n_workers:
            time.sleep(settle)
            return w
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("workers did not start")


def _gone(pids, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids):
            return True
        time.sleep(0.05)
    return False


def _no_segments_of(pid, timeout=5):
    deadline = time.monotonic() + timeout
    while shm.list_segments(pid=pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_saves_checkpoint_and_resume_completes(photo_dir, tmp_path, sig, code):
    d, paths, decoded = photo_dir
    ck = str(tmp_path / "ck.npz")
    # files are surely done once the first periodic checkpoint (4 files) is
    # on disk; 36 files of 0.25 s over 2 workers are then still to go
    proc = _start(["--workers", "2", "--dtype", "float64", "--checkpoint", ck,
                   "--checkpoint-every", "4", d], delay="0.25")
    workers = _wait_running(proc, settle=0)
    deadline = time.monotonic() + 60
    while not os.path.exists(ck):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    t0 = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole group
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    stopped_in = time.monotonic() - t0
    assert proc.returncode == code, err
    assert stopped_in < 5, f"took {stopped_in:.1f} s to stop"  # 40 files x 0.1 s would be 2 s/worker more
    assert "leaked" not in err and "resource_tracker" not in err and "Traceback" not in err
    assert _gone([w.pid for w in workers])
    assert _no_segments_of(proc.pid)
    st, _ = load_stats(ck)
    # the interruption saved the checkpoint, with the files done by then
    assert f"interrupted; {st.n} images saved to checkpoint {ck}; continue with --resume {ck}" in err
    assert 4 <= st.n < len(paths) and len(st.files) == st.n
    # resume: the remaining files only, and the result equals one run over all
    final = str(tmp_path / "final.npz")
    r = subprocess.run([sys.executable, "-m", "hotpixel_shm", "-q", "--workers", "2",
                        "--dtype", "float64", "--resume", ck, "--save-stats", final, d],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "leaked" not in r.stderr and "resource_tracker" not in r.stderr
    got, _ = load_stats(final)
    mean, var = reference_stats(decoded)
    assert got.n == len(paths) and sorted(got.files) == sorted(paths)
    np.testing.assert_allclose(got.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(got.var, var, rtol=1e-9, atol=1e-9)


def test_sigkill_of_parent_takes_the_workers_and_leaves_no_memory(photo_dir):
    d, _, _ = photo_dir
    proc = _start(["--workers", "2", d], delay="0.2")
    workers = _wait_running(proc)
    proc.kill()
    proc.communicate(timeout=30)
    assert _gone([w.pid for w in workers]), "workers outlived the parent"
    assert _no_segments_of(proc.pid)


def test_sigkill_of_the_whole_group_leaves_no_memory(photo_dir):
    d, _, _ = photo_dir
    proc = _start(["--workers", "2", d], delay="0.2")
    workers = _wait_running(proc)
    os.killpg(proc.pid, signal.SIGKILL)  # what the OOM killer or `docker kill` does
    proc.communicate(timeout=30)
    assert _gone([w.pid for w in workers])
    assert _no_segments_of(proc.pid)


def test_sigkill_before_workers_attach_is_cleaned_at_next_start(photo_dir, tmp_path):
    """The one window a SIGKILL can leave a segment: created, not yet attached.
    The workers remove it themselves when they find their parent gone, and the
    next run removes whatever is left."""
    d, _, _ = photo_dir
    proc = _start(["--workers", "2", d])
    deadline = time.monotonic() + 30
    while not shm.list_segments(pid=proc.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    r = subprocess.run([sys.executable, "-m", "hotpixel_shm", "-q", "--plan", d],
                       capture_output=True, text=True, timeout=60)
    # --plan does not run the engine; a real run cleans up at its start
    r = subprocess.run([sys.executable, "-m", "hotpixel_shm", "-q", "--workers", "2", d],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _no_segments_of(proc.pid)


def test_a_failing_run_cleans_up(photo_dir):
    """An exception inside the run (here from the progress callback)."""
    from hotpixel_shm import engine
    d, paths, _ = photo_dir
    job = engine.Job(files=paths, shape=(20, 24, 3), sample_dtype="uint8", tier="exact", workers=2)

    def boom(done, total, skipped):
        if done >= 3:
            raise RuntimeError("boom")

    me = psutil.Process()
    with pytest.raises(RuntimeError):
        engine.run(job, progress=boom)
    assert not [k for k in me.children() if "spawn_main" in " ".join(k.cmdline())]
    assert not shm.list_segments(pid=os.getpid())


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_without_checkpoint_it_stops_within_a_second(photo_dir, sig, code):
    """Nothing to save: the run ends at once, even while every worker is busy
    with a file (here each file takes 3 s), leaving no process or memory."""
    d, _, _ = photo_dir
    proc = _start(["--workers", "2", d], delay="3")
    workers_seen = _wait_running(proc)
    t0 = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    stopped_in = time.monotonic() - t0
    assert proc.returncode == code, err
    assert stopped_in < 1.0, f"took {stopped_in:.2f} s to stop"
    assert "Traceback" not in err and "leaked" not in err and "resource_tracker" not in err
    assert _gone([w.pid for w in workers_seen])
    assert _no_segments_of(proc.pid)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_start_up(photo_dir, sig, code):
    """While the command loads and looks at its inputs: the same exit code, no traceback."""
    d, _, _ = photo_dir
    proc = _start(["--workers", "2", d])
    # the interpreter itself starts first; from the program's first line on it is ours
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if "hotpixel_shm" in " ".join(psutil.Process(proc.pid).cmdline()) and \
                    any("numpy" in m.path for m in psutil.Process(proc.pid).memory_maps()):
                break
        except psutil.Error:
            pass
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert _no_segments_of(proc.pid)


_SIGNAL_IN_IMPORT = """
import importlib.abc, os, runpy, signal, sys

class SignalWhenImported(importlib.abc.MetaPathFinder):
    # a signal arriving while numpy's C extension imports datetime
    # (PyCapsule_Import: an exception there comes back as an ImportError)
    def find_spec(self, name, path=None, target=None):
        if name == "datetime" and "numpy._core._multiarray_umath" in sys.modules:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), {sig})
        return None

sys.meta_path.insert(0, SignalWhenImported())
sys.argv = ["hotpixel-shm", "-q", "--workers", "2", {d!r}]
if {script}:   # the console script: cli.main called directly
    from hotpixel_shm.cli import main
    sys.exit(main())
runpy.run_module("hotpixel_shm", run_name="__main__")
"""


@pytest.mark.parametrize("script", [False, True], ids=["python-m", "console-script"])
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_inside_numpys_import(photo_dir, sig, code, script):
    """Deterministic twin of the test above: the signal lands while numpy's
    extension module is being imported (raising there would come back as an
    ImportError with a long traceback); the command still ends with the
    signal's exit code and no traceback."""
    d, _, _ = photo_dir
    src = _SIGNAL_IN_IMPORT.format(sig=int(sig), d=d, script=script)
    proc = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "interrupted" in proc.stderr
