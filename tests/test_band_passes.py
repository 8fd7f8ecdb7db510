"""Band passes (issue 9): one pass over the files per horizontal band of the
frame give the statistics of a one-pass run -- the exact tier bit for bit,
the float tiers within their bounds -- with 1 and 2 workers, a killed worker,
an interruption, and from the command line."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from conftest import make_frames, reference_stats, write_images
from hotpixel_shm import engine
from hotpixel_shm.cli import main

SHAPE = (61, 40, 3)      # 61 rows: bands of unequal height


def _job(paths, tier, workers, **kw):
    return engine.Job(files=paths, shape=SHAPE, sample_dtype="uint8", tier=tier, workers=workers, **kw)


@pytest.fixture
def photos(tmp_path):
    frames = make_frames(7, SHAPE, seed=4)
    return write_images(tmp_path, frames)


def test_band_rows_cover_the_frame_once():
    for h, b in ((61, 3), (10, 4), (10, 6), (4000, 125), (7, 7)):
        rows = engine.band_rows(h, b)
        assert rows[0][0] == 0 and rows[-1][1] == h and len(rows) <= b
        assert all(a[1] == c[0] for a, c in zip(rows, rows[1:]))


@pytest.mark.parametrize("workers", [1, 2])
def test_exact_band_passes_equal_one_pass_bit_for_bit(photos, workers):
    paths, decoded = photos
    one = engine.run(_job(paths, "exact", workers))
    banded = engine.run(_job(paths, "exact", workers, bands=3))
    assert banded.used == one.used == paths and banded.stats.n == 7
    assert np.array_equal(np.asarray(banded.stats.mean), np.asarray(one.stats.mean))
    assert np.array_equal(np.asarray(banded.stats.var), np.asarray(one.stats.var))
    mean, var = reference_stats(decoded)
    assert np.allclose(np.asarray(banded.stats.mean), mean, rtol=0, atol=1e-12)
    assert np.allclose(np.asarray(banded.stats.var), var, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("tier, mean_tol, var_rel", [
    ("float64", 1e-9, 1e-9), ("float32", 0.01, 1e-4), ("float16", 0.01, 0.05)])
@pytest.mark.parametrize("workers", [1, 2])
def test_float_band_passes_within_their_bounds(photos, tier, mean_tol, var_rel, workers):
    paths, decoded = photos
    res = engine.run(_job(paths, tier, workers, bands=4))
    mean, var = reference_stats(decoded)
    assert np.max(np.abs(np.asarray(res.stats.mean) - mean)) <= mean_tol
    big = var > 0.25
    got = np.asarray(res.stats.var)
    assert np.max(np.abs(got[big] - var[big]) / var[big]) <= var_rel


def test_a_file_that_kills_workers_is_quarantined_in_the_first_pass(photos):
    paths, decoded = photos
    victim = os.path.basename(paths[2])
    res = engine.run(_job(paths, "exact", 2, bands=2, crash_on=victim))
    assert res.skipped == [(paths[2], engine.CRASH_REASON)]
    assert res.worker_deaths == 2
    mean, var = reference_stats(decoded[:2] + decoded[3:])
    assert np.allclose(np.asarray(res.stats.var), var, rtol=1e-12, atol=1e-9)
    assert res.stats.n == 6


def test_a_worker_killed_in_the_second_pass(tmp_path):
    frames = make_frames(24, (64, 48, 3), seed=8)
    paths, decoded = write_images(tmp_path, frames)
    killed, seen = [], []

    def killer():
        import psutil
        me = psutil.Process()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            if seen and seen[-1] >= len(paths) + 3:          # inside the second pass
                kids = [c for c in me.children() if "spawn_main" in " ".join(c.cmdline())]
                if kids:
                    os.kill(kids[0].pid, signal.SIGKILL)
                    killed.append(kids[0].pid)
            time.sleep(0.01)

    def progress(done, total, skipped):
        assert total == 2 * len(paths)
        seen.append(done)
        time.sleep(0.05)        # keep the run going long enough to be hit

    t = threading.Thread(target=killer)
    t.start()
    job = engine.Job(files=paths, shape=(64, 48, 3), sample_dtype="uint8", tier="exact", workers=2,
                     bands=2)
    res = engine.run(job, progress=progress)
    t.join()
    assert killed and res.worker_deaths >= 1
    assert res.used == paths
    one = engine.run(engine.Job(files=paths, shape=(64, 48, 3), sample_dtype="uint8", tier="exact",
                                workers=1))
    assert np.array_equal(np.asarray(res.stats.var), np.asarray(one.stats.var))
    assert np.array_equal(np.asarray(res.stats.mean), np.asarray(one.stats.mean))


def test_interrupted_band_passes_return_no_partial_frame(photos):
    paths, _ = photos
    done = []

    def should_stop():
        return signal.SIGINT if len(done) >= len(paths) + 2 else None

    with pytest.raises(engine.Interrupted) as ei:
        engine.run(_job(paths, "exact", 2, bands=3), progress=lambda d, t, s: done.append(d),
                   should_stop=should_stop)
    assert ei.value.signum == signal.SIGINT
    assert ei.value.result.stats is None


def test_command_line_bands(photos, tmp_path, capsys):
    paths, decoded = photos
    one = str(tmp_path / "one.npz")
    three = str(tmp_path / "three.npz")
    js = str(tmp_path / "r.json")
    assert main(["-q", "--dtype", "exact", "--save-stats", one, *paths]) == 0
    assert main(["-q", "--dtype", "exact", "--workers", "2", "--bands", "3", "--json", js,
                 "--save-stats", three, *paths]) == 0
    with np.load(one) as a, np.load(three) as b:
        assert np.array_equal(a["mean"], b["mean"]) and np.array_equal(a["var"], b["var"])
    import json
    with open(js) as fh:
        assert json.load(fh)["engine"]["bands"] == 3
    capsys.readouterr()
    assert main(["--plan", "--bands", "2", *paths]) == 0
    assert "2 band passes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--bands", "0", *paths])
