"""Checkpoints of band passes (issue 9): a checkpoint records the pass under
way, the finished rows of the passes before it and the raw partial results of
this one; ``--resume`` goes on from there, and the result equals a one-pass
run (the exact tier bit for bit, the float tiers within their bounds)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import make_frames, reference_stats, write_images
from hotpixel_shm import engine, shm, statsio
from hotpixel_shm.cli import main
from hotpixel_shm.errors import HotPixelError

SHAPE = (61, 40, 3)      # 61 rows: bands of unequal height
N = 12


def _job(paths, tier, workers, **kw):
    return engine.Job(files=paths, shape=SHAPE, sample_dtype="uint8", tier=tier, workers=workers, **kw)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("band_photos")
    paths, decoded = write_images(d, make_frames(N, SHAPE, seed=9))
    return str(d), paths, decoded


def _same(a, b):
    assert np.array_equal(np.asarray(a.mean), np.asarray(b.mean))
    assert np.array_equal(np.asarray(a.var), np.asarray(b.var))


def _within(stats, decoded, tier):
    mean, var = reference_stats(decoded)
    mean_tol, var_rel = {"float64": (1e-9, 1e-9), "float32": (0.01, 1e-4),
                         "float16": (0.01, 0.05)}[tier]
    assert np.max(np.abs(np.asarray(stats.mean) - mean)) <= mean_tol
    big = var > 0.25
    got = np.asarray(stats.var)
    assert np.max(np.abs(got[big] - var[big]) / var[big]) <= var_rel


def _stop_in_second_pass(paths, after=3):
    """``should_stop`` and ``progress`` that stop the run ``after`` files into the second pass."""
    done = []

    def progress(d, total, skipped):
        done.append(d)

    def should_stop():
        return signal.SIGINT if done and done[-1] >= len(paths) + after else None
    return progress, should_stop


@pytest.mark.parametrize("workers, tier", [(1, "exact"), (2, "exact"), (2, "float32")])
def test_interrupted_in_the_second_pass_resumes_to_the_one_pass_result(photos, tmp_path, monkeypatch,
                                                                       tier, workers):
    _, paths, decoded = photos
    monkeypatch.setenv("HOTPIXEL_SHM_TEST_DELAY", "0.02")   # workers slower than the parent
    progress, should_stop = _stop_in_second_pass(paths)
    with pytest.raises(engine.Interrupted) as ei:
        engine.run(_job(paths, tier, workers, bands=3), progress=progress, should_stop=should_stop)
    snap = ei.value.result.snapshot
    assert snap.pass_index == 1 and snap.bands == 3 and snap.used == paths
    assert 3 <= snap.n < N and len(snap.partial_files) == snap.n
    ck = str(tmp_path / "ck.npz")
    statsio.save_band_checkpoint(ck, snap)
    del snap, ei
    monkeypatch.delenv("HOTPIXEL_SHM_TEST_DELAY")
    loaded = statsio.load_band_checkpoint(ck)
    assert (loaded.pass_index, loaded.bands, loaded.used) == (1, 3, paths)
    # the second run has the other worker count: the partial results do not care
    res = engine.run(_job(paths, tier, 3 - workers, bands=3, resume=loaded))
    loaded.close()
    assert res.used == paths and res.stats.n == N and not res.skipped
    if tier == "exact":
        _same(res.stats, engine.run(_job(paths, "exact", 1)).stats)
    else:
        _within(res.stats, decoded, tier)


@pytest.mark.parametrize("workers", [1, 2])
def test_periodic_checkpoint_of_the_second_pass(photos, tmp_path, workers):
    _, paths, decoded = photos
    files = {}

    def keep(snap):
        # one file per pass: the first checkpoint taken in it
        if snap.pass_index not in files:
            path = str(tmp_path / f"pass{snap.pass_index}.npz")
            statsio.save_band_checkpoint(path, snap)
            files[snap.pass_index] = (path, snap.n)

    full = engine.run(_job(paths, "exact", workers, bands=3, checkpoint_every=5),
                      on_checkpoint=keep)
    assert sorted(files) == [0, 1, 2] and all(5 <= n < N for _, n in files.values())
    _same(full.stats, engine.run(_job(paths, "exact", 1)).stats)
    # resumed from the first pass (files still to be chosen) and from the second
    for p in (0, 1):
        ck = statsio.load_band_checkpoint(files[p][0])
        res = engine.run(_job(paths, "exact", 1, bands=3, resume=ck))
        ck.close()
        assert res.used == paths
        _same(res.stats, full.stats)


def test_a_worker_killed_after_resuming(tmp_path):
    """The partial results loaded from the checkpoint stay in the parent: a
    worker killed in the resumed pass loses only its own files, which are
    redone; the result is still the one-pass result bit for bit."""
    import threading
    shape = (32, 24, 3)
    paths, decoded = write_images(tmp_path, make_frames(16, shape, seed=3))
    ck = str(tmp_path / "ck.npz")

    def keep(s):
        if s.pass_index == 1 and not os.path.exists(ck):
            statsio.save_band_checkpoint(ck, s)

    def job(**kw):
        return engine.Job(files=paths, shape=shape, sample_dtype="uint8", tier="exact", **kw)
    engine.run(job(workers=1, bands=2, checkpoint_every=4), on_checkpoint=keep)
    loaded = statsio.load_band_checkpoint(ck)
    assert loaded.pass_index == 1 and 4 <= loaded.n < 16
    killed, seen = [], []

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if len(seen) >= 2:                   # the resumed pass is under way
                kids = _workers_of(os.getpid())
                if kids:
                    os.kill(kids[0].pid, signal.SIGKILL)
                    killed.append(kids[0].pid)
            time.sleep(0.01)

    def progress(done, total, skipped):
        seen.append(done)
        time.sleep(0.05)        # keep the run going long enough to be hit
    t = threading.Thread(target=killer)
    t.start()
    res = engine.run(job(workers=2, bands=2, resume=loaded), progress=progress)
    t.join()
    loaded.close()
    assert killed and res.worker_deaths >= 1 and res.used == paths
    _same(res.stats, engine.run(job(workers=1)).stats)


def test_a_checkpoint_is_no_statistics_file(photos, tmp_path, monkeypatch):
    _, paths, _ = photos
    monkeypatch.setenv("HOTPIXEL_SHM_TEST_DELAY", "0.02")
    progress, should_stop = _stop_in_second_pass(paths)
    with pytest.raises(engine.Interrupted) as ei:
        engine.run(_job(paths, "float16", 2, bands=2), progress=progress, should_stop=should_stop)
    ck = str(tmp_path / "ck.npz")
    statsio.save_band_checkpoint(ck, ei.value.result.snapshot)
    assert statsio.is_band_checkpoint(ck)
    with pytest.raises(HotPixelError, match="continue it with --resume"):
        statsio.load_stats(ck)
    # a band count or tier other than the checkpoint's is refused
    loaded = statsio.load_band_checkpoint(ck)
    with pytest.raises(HotPixelError, match="band passes"):
        _job(paths, "float16", 1, bands=3, resume=loaded)
    loaded.close()
    # a damaged file: one clear error
    with open(ck, "r+b") as fh:
        fh.truncate(os.path.getsize(ck) // 2)
    assert not statsio.is_band_checkpoint(ck)
    with pytest.raises(HotPixelError):
        statsio.load_band_checkpoint(ck)


def _workers_of(pid):
    import psutil
    try:
        return [k for k in psutil.Process(pid).children()
                if "spawn_main" in " ".join(k.cmdline())]
    except psutil.Error:
        return []


def test_ctrl_c_in_the_second_pass_and_resume_from_the_command_line(photos, tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole group) during the second of two passes."""
    d, paths, _ = photos
    ck = str(tmp_path / "ck.npz")
    env = dict(os.environ, HOTPIXEL_SHM_TEST_DELAY="0.1")
    proc = subprocess.Popen([sys.executable, "-m", "hotpixel_shm", "-q", "--workers", "2",
                             "--dtype", "exact", "--bands", "2", "--checkpoint", ck,
                             "--checkpoint-every", "2", d],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:      # until a checkpoint of the second pass is on disk
        if os.path.exists(ck):
            with np.load(ck) as z:
                if int(z["band_pass"]) >= 1:
                    break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    workers = [w.pid for w in _workers_of(proc.pid)]
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "in band pass 2 of 2" in err and f"--resume {ck}" in err
    assert "Traceback" not in err and "leaked" not in err and "resource_tracker" not in err
    time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]
                   for p in workers)
    assert not shm.list_segments(pid=proc.pid)
    with np.load(ck) as z:
        assert int(z["band_pass"]) == 1
    final = str(tmp_path / "final.npz")
    one = str(tmp_path / "one.npz")
    assert main(["-q", "--workers", "1", "--resume", ck, "--save-stats", final, d]) == 0
    assert main(["-q", "--dtype", "exact", "--save-stats", one, d]) == 0
    a, _ = statsio.load_stats(final)
    b, _ = statsio.load_stats(one)
    assert a.n == b.n == N and sorted(a.files) == sorted(paths)
    _same(a, b)


def test_workers_are_born_with_sigint_blocked(photos):
    """Band passes start workers at every pass: a Ctrl-C to the group while
    one is still importing must not kill it with a traceback, so workers are
    started with SIGINT blocked (and ignore it once running)."""
    _, paths, _ = photos
    masks = []

    def progress(done, total, skipped):
        for w in _workers_of(os.getpid()):
            try:
                with open(f"/proc/{w.pid}/status") as fh:
                    blocked = next(int(line.split()[1], 16) for line in fh if line.startswith("SigBlk"))
            except (OSError, StopIteration):
                continue
            masks.append(blocked)
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc")
    res = engine.run(_job(paths, "exact", 2, bands=2), progress=progress)
    assert res.used == paths
    assert masks and all(m & (1 << (signal.SIGINT - 1)) for m in masks)
    # the parent's own mask is as it was: its Ctrl-C is never lost
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & {signal.SIGINT}


def test_resume_with_the_same_load_stats(photos, tmp_path, capsys):
    """A band-pass run that merges --load-stats statistics is resumed with the
    same --load-stats (and refuses to go on without them)."""
    d, paths, decoded = photos
    old, new = paths[:5], paths[5:]
    loaded = str(tmp_path / "old.npz")
    ck = str(tmp_path / "ck.npz")
    final = str(tmp_path / "final.npz")
    assert main(["-q", "--dtype", "exact", "--save-stats", loaded, *old]) == 0
    # the run completes; its last periodic checkpoint is of the second pass
    assert main(["-q", "--dtype", "exact", "--bands", "2", "--load-stats", loaded,
                 "--checkpoint", ck, "--checkpoint-every", "2", *new]) == 0
    with np.load(ck) as z:
        assert int(z["band_pass"]) == 1 and len(z["loaded_files"]) == len(old)
    capsys.readouterr()
    assert main(["-q", "--resume", ck, *new]) != 0
    assert "give the same --load-stats to resume it" in capsys.readouterr().err
    assert main(["-q", "--load-stats", loaded, "--resume", ck, "--save-stats", final, *new]) == 0
    got, _ = statsio.load_stats(final)
    assert got.n == N and sorted(got.files) == sorted(paths)
    mean, var = reference_stats(decoded)
    np.testing.assert_allclose(got.mean, mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.var, var, rtol=1e-9, atol=1e-9)
