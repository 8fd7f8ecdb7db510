"""Worker processes started before the plan (issue 10, fixed costs): how many,
that the run takes them, that the unused ones are stopped, and that every
exit -- a refused plan, a signal while they wait for their job, a killed one
-- leaves no process and no shared memory behind."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from hotpixel_shm import budget, engine, prestart, shm
from hotpixel_shm.camera import Camera, Shot, exif_bytes
from hotpixel_shm.cli import main
from hotpixel_shm.inputs import decode
from hotpixel_shm.statsio import load_stats
from hotpixel_shm.synth import write_sample_set

from conftest import make_frames, reference_stats, write_images

SHAPE = (20, 24, 3)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    paths, decoded = write_images(d, make_frames(7, SHAPE, seed=5))
    return str(d), paths, decoded


def _spawned(pid):
    """Live (non-zombie) worker processes of ``pid``."""
    out = []
    try:
        kids = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    for k in kids:
        try:
            if "spawn_main" in " ".join(k.cmdline()) and k.status() != psutil.STATUS_ZOMBIE:
                out.append(k)
        except psutil.Error:
            pass
    return out


def _gone(pids, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids):
            return True
        time.sleep(0.02)
    return False


def _waiting_for_their_job(proc, n, timeout=60):
    """The ``n`` pre-started workers of ``proc``, once each has loaded the
    engine (numpy mapped) -- they then wait for their job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        ws = _spawned(proc.pid)
        try:
            loaded = [w for w in ws if any("numpy" in m.path for m in w.memory_maps())]
        except psutil.Error:
            loaded = []
        if len(ws) == n and len(loaded) == n:
            return ws
        time.sleep(0.02)
    raise AssertionError("the pre-started workers did not come up")


def _start_held(args, hold):
    env = dict(os.environ, **{prestart.HOLD_ENV: str(hold)})
    return subprocess.Popen([sys.executable, "-m", "hotpixel_shm", "-q", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


# --------------------------------------------------------------------------- how many

def test_how_many_are_started():
    cpus = budget.usable_cpus()
    top = cpus if cpus >= 2 else 0
    assert prestart.prestart_count(None, []) == top          # --auto-workers: as the CPUs allow
    assert prestart.prestart_count(8, []) == top              # never more than the CPUs
    assert prestart.prestart_count(2, []) == (2 if cpus >= 2 else 0)
    assert prestart.prestart_count(1, []) == 0                # the serial path
    # the memory budget holds the parent's interpreter and one per worker
    room = budget.PARENT_BASELINE_BYTES + budget.WORKER_BASELINE_BYTES
    assert prestart.prestart_count(None, [], memory_budget=room) == 0
    assert prestart.prestart_count(None, [], memory_budget="not a size") == 0


def test_no_more_than_the_files_given(photos):
    _, paths, _ = photos
    cpus = budget.usable_cpus()
    assert prestart.prestart_count(None, paths[:1]) == 0
    assert prestart.prestart_count(None, paths[:2]) == (2 if cpus >= 2 else 0)
    assert prestart.prestart_count(None, paths[:2], min_images=3) == 0   # would be too few
    # a directory or a pattern: the count is not known before listing
    assert prestart.prestart_count(None, [os.path.dirname(paths[0])]) == (cpus if cpus >= 2 else 0)


@pytest.mark.parametrize("args", [["--workers", "1"], ["--plan", "--auto-workers"],
                                  ["--plan", "--workers", "2"]])
def test_none_for_the_serial_path_or_a_plan(photos, monkeypatch, capsys, args):
    d, _, _ = photos

    def refuse(n):
        raise AssertionError("a worker was pre-started")
    monkeypatch.setattr(prestart.Prestarted, "start", classmethod(lambda cls, n: refuse(n)))
    assert main(["-q", *args, d]) == 0


# --------------------------------------------------------------------------- the engine takes them

def _job(paths, workers, **kw):
    return engine.Job(files=paths, shape=SHAPE, sample_dtype="uint8", tier="float64",
                      workers=workers, **kw)


def _check(stats, decoded):
    mean, var = reference_stats(decoded)
    assert stats.n == len(decoded)
    np.testing.assert_allclose(np.asarray(stats.mean), mean, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(stats.var), var, rtol=1e-9, atol=1e-9)


def test_a_run_takes_the_pre_started_workers(photos):
    _, paths, decoded = photos
    with prestart.Prestarted.start(2) as pool:
        pids = [p.pid for p, _ in pool._idle]
        res = engine.run(_job(paths, 2, batch=2), prestarted=pool)
        assert len(pool) == 0
    _check(res.stats, decoded)
    assert res.worker_deaths == 0 and res.max_message_bytes < 1024
    assert _gone(pids)
    assert not _spawned(os.getpid())


def test_unused_ones_are_stopped_at_once_and_missing_ones_started(photos):
    _, paths, decoded = photos
    with prestart.Prestarted.start(3) as pool:
        procs = [p for p, _ in pool._idle]
        pool.keep(1)
        # stopped before the run allocates anything
        assert len(pool) == 1 and not procs[1].is_alive() and not procs[2].is_alive()
        res = engine.run(_job(paths, 2), prestarted=pool)
    _check(res.stats, decoded)
    assert _gone([p.pid for p in procs]) and not _spawned(os.getpid())


def test_a_pre_started_worker_killed_while_it_waits_is_replaced(photos):
    _, paths, decoded = photos
    with prestart.Prestarted.start(2) as pool:
        victim = pool._idle[0][0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        res = engine.run(_job(paths, 2), prestarted=pool)
    _check(res.stats, decoded)
    assert res.worker_deaths == 1
    assert not _spawned(os.getpid())


def test_band_passes_take_them_for_the_first_pass(photos):
    _, paths, decoded = photos
    with prestart.Prestarted.start(2) as pool:
        res = engine.run(_job(paths, 2, bands=3), prestarted=pool)
        assert len(pool) == 0
    _check(res.stats, decoded)
    res.stats.owner.close()
    assert not _spawned(os.getpid())


def test_all_cameras_first_body_takes_them_later_bodies_start_theirs(tmp_path, monkeypatch):
    taken = []
    take = prestart.Prestarted.take

    def counting(self):
        got = take(self)
        taken.append(got is not None)
        return got
    monkeypatch.setattr(prestart.Prestarted, "take", counting)
    bodies = {}
    for serial, n, seed in (("1001", 5, 1), ("2002", 4, 2)):
        cam = Camera("HOTPIXEL", "HOTPIXEL SIM-1", serial)
        s = write_sample_set(tmp_path / "in", n=n, width=160, height=120, seed=seed,
                             prefix=f"b{serial}_",
                             exif=lambda i, cam=cam: exif_bytes(cam, Shot("2026-01-01T00:00:00")))
        bodies[cam] = s.paths
    npz = str(tmp_path / "s.npz")
    assert main(["-q", "--workers", "2", "--all-cameras", "--save-stats", npz,
                 str(tmp_path / "in")]) == 0
    # two workers taken pre-started by the first body, two started by the second
    assert taken.count(True) == 2 and taken.count(False) == 2
    for cam, paths in bodies.items():
        st, _ = load_stats(str(tmp_path / f"s.{cam.file_tag}.npz"))
        assert sorted(st.files) == sorted(paths)
        _check(st, [decode(p, (120, 160, 3), "uint8") for p in sorted(paths)])
    assert not _spawned(os.getpid())


# --------------------------------------------------------------------------- every exit of the command

@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_they_wait_for_their_job(photos, tmp_path, sig, code):
    d, _, _ = photos
    proc = _start_held(["--workers", "2", d], tmp_path / "never")
    workers = _waiting_for_their_job(proc, 2)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)    # a terminal's Ctrl-C reaches the whole group
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "leaked" not in err and "resource_tracker" not in err
    assert _gone([w.pid for w in workers])
    assert not shm.list_segments(pid=proc.pid)


def test_sigkill_of_the_parent_while_they_wait_takes_them(photos, tmp_path):
    d, _, _ = photos
    proc = _start_held(["--workers", "2", d], tmp_path / "never")
    workers = _waiting_for_their_job(proc, 2)
    proc.kill()
    proc.communicate(timeout=30)
    assert _gone([w.pid for w in workers]), "pre-started workers outlived the parent"


def _released(proc, hold):
    workers = _waiting_for_their_job(proc, 2)
    hold.write_text("")
    out, err = proc.communicate(timeout=120)
    return workers, out, err


def test_a_refused_plan_stops_them(photos, tmp_path):
    d, _, _ = photos
    hold = tmp_path / "go"
    # room for the interpreters, not for a forced float64 plan of 2 workers
    room = (budget.PARENT_BASELINE_BYTES + 2 * budget.WORKER_BASELINE_BYTES) // 2**20 + 1
    proc = _start_held(["--workers", "2", "--dtype", "float64", "--memory-budget", f"{room}M", d],
                       hold)
    workers, out, err = _released(proc, hold)
    assert proc.returncode == 4, err
    assert "Traceback" not in err
    assert _gone([w.pid for w in workers])
    assert not shm.list_segments(pid=proc.pid)


def test_too_few_images_stops_them(photos, tmp_path):
    d, _, _ = photos
    hold = tmp_path / "go"
    proc = _start_held(["--workers", "2", "--min-images", "50", d], hold)
    workers, out, err = _released(proc, hold)
    assert proc.returncode == 3, err
    assert _gone([w.pid for w in workers])


def test_a_serial_plan_stops_them_before_its_run(photos):
    from hotpixel_shm import pipeline
    d, _, decoded = photos
    log = pipeline.LogToLogging()
    settings = pipeline.Settings(workers=1)
    group, = pipeline.prepare([d], settings, log)
    plan = pipeline.plan_group(group, settings, log)
    assert plan.workers == 1
    with prestart.Prestarted.start(2) as pool:
        procs = [p for p, _ in pool._idle]
        stats, result = pipeline.run_group(group, plan, settings, log, prestarted=pool)
        assert len(pool) == 0 and not any(p.is_alive() for p in procs)
    _check(stats, decoded)
    assert result.workers == 1


# --------------------------------------------------------------------------- no BLAS threads

def test_workers_load_numpy_without_blas_threads():
    # no BLAS routine is called; OpenBLAS's pool (a thread per CPU) only
    # spun at start-up, in every worker
    with prestart.Prestarted.start(1) as pool:
        worker = psutil.Process(pool._idle[0][0].pid)
        deadline = time.monotonic() + 60
        while not any("_imaging" in m.path for m in worker.memory_maps()):   # numpy loaded before PIL
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert worker.num_threads() == 1


@pytest.mark.parametrize("given", [None, "2"])
def test_the_command_loads_numpy_without_blas_threads_unless_told(photos, given):
    d, _, _ = photos
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given:
        env["OPENBLAS_NUM_THREADS"] = given
    code = ("import os, psutil\n"
            "from hotpixel_shm.cli import main\n"
            f"main(['--plan', '-q', {d!r}])\n"
            "print(os.environ['OPENBLAS_NUM_THREADS'], psutil.Process().num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    setting, threads = out.stdout.strip().splitlines()[-1].split()
    if given:
        assert setting == given      # the user's setting is kept
    else:
        assert (setting, threads) == ("1", "1")
