"""The engine with real worker processes, real shared memory, real files."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from hotpixel_shm import engine, shm
from hotpixel_shm.tiers import TIERS, supports

from conftest import make_frames, reference_stats, write_images


def _job(paths, shape, dtype, tier, workers, **kw):
    return engine.Job(files=list(paths), shape=shape, sample_dtype=dtype, tier=tier, workers=workers, **kw)


def _check(stats, decoded, tier):
    mean, var = reference_stats(decoded)
    assert stats.n == len(decoded)
    if tier in ("exact", "float64"):
        np.testing.assert_allclose(stats.mean, mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stats.var, var, rtol=1e-9, atol=1e-9)
    elif tier == "float32":
        assert np.max(np.abs(stats.mean - mean)) < 0.01
        m = np.sqrt(var) >= 0.5
        assert np.max(np.abs(stats.var[m] - var[m]) / var[m]) < 1e-4
    else:
        assert np.max(np.abs(stats.mean - mean)) < 0.1
        m = np.sqrt(var) >= 0.5
        assert np.max(np.abs(stats.var[m] - var[m]) / var[m]) < 0.02


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("tier", TIERS)
def test_workers_and_tiers_match_numpy(small_set, workers, tier):
    paths, decoded = small_set
    res = engine.run(_job(paths, (24, 32, 3), "uint8", tier, workers))
    assert res.used == paths and not res.skipped
    _check(res.stats, decoded, tier)
    # nothing image-sized ever crossed a process boundary
    assert res.max_message_bytes < 1024


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_sixteen_bit_near_65000(tmp_path, workers):
    base = np.full((12, 10, 1), 65000.0)
    frames = make_frames(11, (12, 10, 1), np.uint16, seed=5, base=base, noise=0.2)
    paths, decoded = write_images(tmp_path, frames)
    for tier in ("exact", "float64", "float32"):
        res = engine.run(_job(paths, (12, 10, 1), "uint16", tier, workers))
        _check(res.stats, decoded, tier)


def test_parallel_equals_serial_for_exact_tier(small_set):
    paths, _ = small_set
    a = engine.run(_job(paths, (24, 32, 3), "uint8", "exact", 1)).stats
    b = engine.run(_job(paths, (24, 32, 3), "uint8", "exact", 3)).stats
    # the workers' integer sums are added exactly: bit for bit the serial result
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.var, b.var)


def test_bad_files_are_skipped_and_the_run_goes_on(small_set, tmp_path):
    paths, decoded = small_set
    bad = str(tmp_path / "zz_trunc.png")
    with open(paths[0], "rb") as fh:
        data = fh.read()
    with open(bad, "wb") as fh:
        fh.write(data[: len(data) // 3])
    res = engine.run(_job(paths + [bad], (24, 32, 3), "uint8", "float64", 2))
    assert [p for p, _ in res.skipped] == [bad]
    _check(res.stats, decoded, "float64")


def test_a_file_that_kills_workers_is_quarantined(small_set):
    paths, decoded = small_set
    victim = os.path.basename(paths[3])
    res = engine.run(_job(paths, (24, 32, 3), "uint8", "float64", 2, crash_on=victim))
    assert res.skipped == [(paths[3], engine.CRASH_REASON)]
    assert res.worker_deaths == 2
    _check(res.stats, decoded[:3] + decoded[4:], "float64")


@pytest.mark.parametrize("batch", [1, 2])
def test_workers_that_fail_while_adding_photos_stop_the_run_with_the_reason(small_set, batch):
    # a worker whose accumulator update raises (a broken build of the
    # kernels, say) dies without a file to blame: its photos went back to
    # the queue for a fresh worker, which failed the same way -- for ever.
    # Now the worker reports its error and the run stops after a few such
    # deaths in a row, saying why, with nothing left behind.
    from hotpixel_shm.errors import HotPixelError
    paths, _ = small_set
    with pytest.raises(HotPixelError) as err:
        engine.run(_job(paths, (24, 32, 3), "uint8", "exact", 2, batch=batch,
                        crash_on=engine.CRASH_IN_UPDATE))
    msg = str(err.value)
    assert "3 times in a row" in msg and "RuntimeError: test hook: the accumulator update" in msg
    # this process's segments only: another run on the machine may hold its own
    assert not shm.list_segments(pid=os.getpid())


def test_sigkill_of_a_worker_from_outside(tmp_path):
    frames = make_frames(40, (64, 64, 3), seed=9)
    paths, decoded = write_images(tmp_path, frames)
    killed = []

    def killer():
        import psutil
        me = psutil.Process()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not killed:
            kids = [c for c in me.children() if "spawn_main" in " ".join(c.cmdline())]
            if len(kids) >= 2:
                time.sleep(0.3)
                os.kill(kids[0].pid, signal.SIGKILL)
                killed.append(kids[0].pid)
            time.sleep(0.02)

    done = []

    def slow_progress(d, total, s):
        done.append(d)
        time.sleep(0.02)  # keep the run going long enough to be hit

    t = threading.Thread(target=killer)
    t.start()
    res = engine.run(_job(paths, (64, 64, 3), "uint8", "exact", 2), progress=slow_progress)
    t.join()
    assert killed, "the killer thread found no worker"
    assert res.worker_deaths >= 1
    assert res.used == paths
    _check(res.stats, decoded, "exact")


def test_stop_request_returns_partial_result(tmp_path):
    frames = make_frames(30, (32, 32, 3), seed=2)
    paths, decoded = write_images(tmp_path, frames)
    done = []

    def should_stop():
        return signal.SIGTERM if len(done) >= 5 else None

    def progress(d, total, skipped):
        done.append(d)

    with pytest.raises(engine.Interrupted) as ei:
        engine.run(_job(paths, (32, 32, 3), "uint8", "float64", 2), progress=progress,
                   should_stop=should_stop)
    res = ei.value.result
    assert ei.value.signum == signal.SIGTERM
    assert 5 <= len(res.used) < len(paths)
    idx = [paths.index(p) for p in res.used]
    _check(res.stats, [decoded[i] for i in idx], "float64")


def test_cap_per_worker_is_respected(small_set):
    paths, decoded = small_set
    res = engine.run(_job(paths, (24, 32, 3), "uint8", "exact", 2, cap=4))
    assert res.stats.n == 7
    res1 = engine.run(_job(paths, (24, 32, 3), "uint8", "exact", 1, cap=4))
    assert res1.stats.n == 4 and len(res1.skipped) == 3


@pytest.mark.parametrize("workers", [1, 2])
def test_periodic_snapshots_are_consistent(tmp_path, workers):
    frames = make_frames(17, (16, 16, 3), seed=4)
    paths, decoded = write_images(tmp_path, frames)
    snaps = []
    res = engine.run(_job(paths, (16, 16, 3), "uint8", "float64", workers, checkpoint_every=5),
                     on_checkpoint=lambda st: snaps.append((st.n, list(st.files), st.mean.copy(),
                                                           st.var.copy())))
    assert len(snaps) >= 2
    for n, files, mean, var in snaps:
        assert n == len(files) >= 5
        want_mean, want_var = reference_stats([decoded[paths.index(f)] for f in files])
        np.testing.assert_allclose(mean, want_mean, rtol=1e-9)
        np.testing.assert_allclose(var, want_var, rtol=1e-9, atol=1e-9)
    _check(res.stats, decoded, "float64")


def test_a_snapshot_holds_no_more_bands_than_the_plan_counts(tmp_path):
    # the plan counts a checkpoint's snapshot as one reader's default cache
    # (budget.memory_model: reader_cache_bytes); the snapshot is read by the
    # saver alone, so its reader must not take the cache of the threads that
    # read the final statistics (bands.cache_bands_for(workers))
    from hotpixel_shm import tiers
    from hotpixel_shm.bands import reader_cache_bytes
    shape = (40, 16, 3)
    frames = make_frames(9, shape, seed=6)
    paths, _ = write_images(tmp_path, frames)
    held = []
    engine.run(_job(paths, shape, "uint8", "exact", 3, checkpoint_every=4),
               on_checkpoint=lambda st: held.append(st.mean.reader.nbytes_cached()))
    assert held
    assert max(held) <= reader_cache_bytes(shape, tiers.result_dtype("exact"))


def test_script_without_main_guard_fails_clearly_instead_of_looping(small_set, tmp_path):
    """Spawned workers import the main module; an unguarded call would start
    workers forever.  The engine gives up with an explanation."""
    import subprocess
    import sys
    paths, _ = small_set
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from hotpixel_shm import engine\n"
        f"job = engine.Job(files={paths!r}, shape=(24, 32, 3), sample_dtype='uint8', tier='exact', workers=2)\n"
        "engine.run(job)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "worker processes die while starting" in r.stderr
    assert "__main__" in r.stderr


@pytest.mark.parametrize("batch", [1, 2, 3, 7])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_batches_of_photos_per_pass(small_set, workers, batch):
    # 7 photos: no batch size but 1 and 7 divides them, nor do 2 or 3 workers
    paths, decoded = small_set
    serial = engine.run(_job(paths, (24, 32, 3), "uint8", "exact", 1)).stats
    res = engine.run(_job(paths, (24, 32, 3), "uint8", "exact", workers, batch=batch))
    assert res.used == paths and not res.skipped
    np.testing.assert_array_equal(res.stats.mean, serial.mean)
    np.testing.assert_array_equal(res.stats.var, serial.var)
    for tier in ("float32", "float16"):
        res = engine.run(_job(paths, (24, 32, 3), "uint8", tier, workers, batch=batch))
        assert res.used == paths
        _check(res.stats, decoded, tier)


def test_a_killed_worker_s_batch_is_redone(small_set):
    paths, decoded = small_set
    victim = os.path.basename(paths[4])
    res = engine.run(_job(paths, (24, 32, 3), "uint8", "exact", 2, batch=3, crash_on=victim))
    assert res.skipped == [(paths[4], engine.CRASH_REASON)]
    assert res.worker_deaths == 2
    rest = paths[:4] + paths[5:]
    assert res.used == rest
    serial = engine.run(_job(rest, (24, 32, 3), "uint8", "exact", 1)).stats
    np.testing.assert_array_equal(res.stats.mean, serial.mean)
    np.testing.assert_array_equal(res.stats.var, serial.var)


def test_ingest_calls_on_first_once_before_the_first_fold(tmp_path):
    """A worker maps its segment's pages (shm.Segment.populate) just before
    its first batch is folded: not for a skipped file, once per worker."""
    from hotpixel_shm.welford import Accumulator
    frames = make_frames(3, (6, 8, 3), seed=4)
    paths, _ = write_images(tmp_path, frames)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    acc = Accumulator("exact", (6, 8, 3), np.uint8)
    seen = []
    ingest = engine.Ingest(acc, 10 ** 6, 2, on_first=lambda: seen.append(acc.n))
    assert ingest.add(0, str(bad)) is not None
    assert ingest.flush() == [] and seen == []
    for i, p in enumerate(paths):
        assert ingest.add(i, p) is None
    ingest.flush()
    assert seen == [0] and acc.n == 3      # called once, before anything was folded
