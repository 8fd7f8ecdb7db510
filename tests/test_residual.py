"""Temporal residual statistics: the accumulator against a float64 reference,
and the residual test of detection on simulated cameras."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from hotpixel_shm import kernels
from hotpixel_shm.detect import DetectOptions, detect
from hotpixel_shm.dng import cfa_array, simulate_raw_frames
from hotpixel_shm.errors import HotPixelError
from hotpixel_shm.rawdetect import detect_raw
from hotpixel_shm.residual import (ResidualAccumulator, residual_layout, residual_nbytes,
                                   residuals_of_frames, scratch_bytes)
from hotpixel_shm.residual import _YCC, _reflect
from hotpixel_shm.temporal import thresholds


def _reference(frames, period=None):
    """Per-plane residual mean and variance in float64, the plain way."""
    shape = frames[0].shape if frames[0].ndim == 3 else frames[0].shape + (1,)
    lay = residual_layout(shape, period)
    per_frame = []
    for f in frames:
        f = f.reshape(shape).astype(np.float64)
        if lay.mode == "ycc":
            ycc = f @ _YCC.T.astype(np.float64)
            h, w = shape[:2]
            planes = [ycc[..., 0]]
            for k in (1, 2):
                hp, wp = lay.planes[k]
                acc = np.zeros((hp, wp))
                for dy in (-1, 0, 1, 2):
                    for dx in (-1, 0, 1, 2):
                        yy = np.clip(np.arange(hp) * 2 + dy, 0, h - 1)
                        xx = np.clip(np.arange(wp) * 2 + dx, 0, w - 1)
                        acc += ycc[..., k][yy][:, xx]
                planes.append(acc / 16)
        else:
            planes = [f[..., k] for k in range(shape[2])]
        out = []
        for k, p in enumerate(planes):
            r = lay.plane_reach(k)
            hh, ww = p.shape
            ys, xs = np.arange(hh), np.arange(ww)
            nb = np.sort(np.stack([p[_reflect(ys - r, hh, r)], p[_reflect(ys + r, hh, r)],
                                   p[:, _reflect(xs - r, ww, r)], p[:, _reflect(xs + r, ww, r)]]),
                         axis=0)
            out.append(p - (nb[1] + nb[2]) / 2)
        per_frame.append(out)
    return [(np.mean([pf[k] for pf in per_frame], axis=0), np.var([pf[k] for pf in per_frame], axis=0))
            for k in range(len(lay.planes))]


def _nb4(p, r):
    """The four neighbours ``r`` away, stacked, float64: rows reflected,
    columns reflected where the row is wide enough, else the element itself."""
    hh, ww = p.shape
    ys, xs = np.arange(hh), np.arange(ww)
    if ww <= r:
        left = right = xs
    else:
        edge = min(r, ww - r)
        left = np.where(xs >= r, xs - r, np.where(xs < edge, xs + r, xs))
        right = np.where(xs >= ww - edge, xs - r, np.where(xs < ww - r, xs + r, xs))
    return np.stack([p[_reflect(ys - r, hh, r)], p[_reflect(ys + r, hh, r)],
                     p[:, left], p[:, right]])


def _level_reference(frames, clip):
    """The level statistics (per-frame means of r L, L L, r r and r where not
    clipped, for Cb, then Cr) in float64, the plain way: 8x8 means,
    neighbours 4 blocks away."""
    h, w = frames[0].shape[:2]
    hp, wp = (h + 1) // 2, (w + 1) // 2
    sums = [np.zeros((hp, wp)) for _ in range(8)]
    for f in frames:
        ycc = f.astype(np.float64) @ _YCC.T.astype(np.float64)
        wide = []
        for k in range(3):
            acc = np.zeros((hp, wp))
            for dy in range(-3, 5):
                for dx in range(-3, 5):
                    yy = np.clip(np.arange(hp) * 2 + dy, 0, h - 1)
                    xx = np.clip(np.arange(wp) * 2 + dx, 0, w - 1)
                    acc += ycc[..., k][yy][:, xx]
            wide.append(acc / 64)
        y, cb, cr = wide
        for p, (c, level) in enumerate(((cb, y + cb / (0.5 / 0.886)), (cr, y + cr / (0.5 / 0.701)))):
            nb = np.sort(_nb4(c, 4), axis=0)
            r = c - (nb[1] + nb[2]) / 2
            ln = _nb4(level, 4)
            ls = np.sort(ln, axis=0)
            lam = np.maximum((ls[1] + ls[2]) / 2, 0)
            clipped = np.maximum(ln.max(axis=0), level) >= clip
            lam[clipped] = 0
            for q, v in enumerate((r * lam, lam * lam, r * r, np.where(clipped, 0, r))):
                sums[4 * p + q] += v
    return [a / len(frames) for a in sums]


@pytest.mark.parametrize("bright", [False, True])
@pytest.mark.parametrize("shape", [(37, 50, 3), (40, 44, 3), (9, 7, 3), (150, 40, 3)])
def test_level_statistics_match_float64(shape, bright):
    """The level statistics against float64; bright frames clip in places
    (their level reaches 0.8 of full scale), which then add no r L, L L."""
    rng = np.random.default_rng(sum(shape) + bright)
    lo = 230 if bright else 0
    frames = [rng.integers(lo, 256, shape).astype(np.uint8) for _ in range(5)]
    if bright:
        # half the frame far below the clipping level (204): no 8x8 mean
        # falls within rounding of it
        for f in frames:
            f[:, : shape[1] // 2] //= 2
    res = residuals_of_frames(frames, shape)
    want = _level_reference(frames, 0.8 * 255)
    assert res.levels is not None and len(res.levels) == 8
    for got, ref in zip(res.levels, want):
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(got, ref, atol=2e-4 * scale)
    if bright:
        # the clipped elements of Cb added no L L (and no r), the others did
        assert np.any(want[1] == 0) and np.any(want[1] > 0)
        assert np.any(want[3][want[1] == 0] == 0)


@pytest.mark.parametrize("shape, period", [((37, 50, 3), None), ((40, 44, 3), None),
                                           ((30, 31), 2), ((36, 42), 6), ((20, 22, 1), 1),
                                           ((150, 40, 3), None)])
def test_residuals_match_float64(shape, period):
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, shape).astype(np.uint8) for _ in range(5)]
    res = residuals_of_frames(frames, shape, period)
    assert res.n == 5
    for k, (m, v) in enumerate(_reference(frames, period)):
        np.testing.assert_allclose(res.mean[k], m, atol=1e-3)
        np.testing.assert_allclose(res.var[k], v, rtol=1e-4, atol=2e-2)


def test_partials_add_and_buffer_layout():
    rng = np.random.default_rng(4)
    shape = (24, 30, 3)
    frames = [rng.integers(0, 256, shape).astype(np.uint8) for _ in range(6)]
    lay = residual_layout(shape)
    assert lay.values == 24 * 30 + 2 * 12 * 15
    assert lay.level_values == 8 * 12 * 15
    assert residual_nbytes(lay) == 8 + 4 * (2 * lay.values + lay.level_values)
    assert residual_layout((24, 30)).level_values == 0
    whole = ResidualAccumulator(lay, bytearray(residual_nbytes(lay)))
    a, b = ResidualAccumulator(lay), ResidualAccumulator(lay)
    for i, f in enumerate(frames):
        whole.update(f)
        (a if i % 3 else b).update(f)
    a.add_into(b)
    assert a.n == whole.n == 6
    fa, fw = a.finish(), whole.finish()
    for x, y in zip(fa.mean + fa.var + fa.levels, fw.mean + fw.var + fw.levels):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-3)
    a.reset()
    assert a.n == 0
    with pytest.raises(HotPixelError):
        a.update(np.zeros((24, 31, 3), np.uint8))
    with pytest.raises(HotPixelError):
        ResidualAccumulator(lay, bytearray(10))


@pytest.mark.parametrize("shape", [(24, 30, 3), (9, 11)])
def test_sum_residuals_on_threads_gives_the_bits_of_adding_in_turn(shape, monkeypatch):
    """The workers' partials added and finished band by band on 1, 2 and 3
    threads: the bits of add_into for each partial in turn, then finish."""
    import hotpixel_shm.residual as residual
    rng = np.random.default_rng(len(shape))
    frames = [rng.integers(0, 256, shape).astype(np.uint8) for _ in range(7)]
    lay = residual_layout(shape)

    def partials(k):
        accs = [ResidualAccumulator(lay) for _ in range(k)]
        for i, f in enumerate(frames):
            accs[i % k].update(f)
        return accs + [ResidualAccumulator(lay)]        # an empty one is left out

    want = partials(3)
    for other in want[1:]:
        want[0].add_into(other)
    want = want[0].finish()
    monkeypatch.setattr(residual, "_FOLD_VALUES", 40)     # several bands per plane
    for threads in (1, 2, 3):
        got = residual.sum_residuals(partials(3), threads=threads)
        assert got.n == 7
        for x, y in zip(got.mean + got.var + (got.levels or []),
                        want.mean + want.var + (want.levels or [])):
            np.testing.assert_array_equal(x, y, err_msg=f"{threads} threads")
    assert residual.sum_residuals([ResidualAccumulator(lay)]) is None
    with pytest.raises(HotPixelError, match="layouts"):
        residual.sum_residuals([partials(1)[0], _one_frame((9, 12))])


def _one_frame(shape):
    acc = ResidualAccumulator(residual_layout(shape))
    acc.update(np.zeros(shape, np.uint8))
    return acc


def test_thresholds_fall_with_n_and_false_alarm_rate():
    t16, _ = thresholds(16)
    t60, _ = thresholds(60)
    assert t16 > t60 > 6.0
    assert thresholds(24, false_alarms=1e-3)[0] > thresholds(24)[0]
    assert thresholds(2)[0] == float("inf")


@pytest.mark.parametrize("n", [3, 4, 12, 40, 333, 5000])
@pytest.mark.parametrize("false_alarms,elements", [(0.05, 36e6), (1e-3, 36e6), (1.0, 1e5)])
def test_thresholds_are_scipy_stats_quantiles(n, false_alarms, elements):
    # computed without importing scipy (issue 10): scipy.stats's numbers
    from scipy import stats

    from hotpixel_shm import temporal
    p = false_alarms / (2.0 * elements)
    t, f = thresholds(n, false_alarms, elements)
    assert t == pytest.approx(temporal._T_CORRECTION * float(stats.t.isf(p, 4 * (n - 1))),
                              rel=1e-13)
    assert f == pytest.approx(temporal._F_CORRECTION * float(stats.chi2.isf(2 * p, n - 1)) / (n - 1),
                              rel=1e-13)


def test_level_planes_are_the_written_out_formulas():
    # computed in place (issue 10): the bits of the formulas as written out,
    # where W is 0 and where Q - P**2 / W rounds below 0
    from hotpixel_shm.temporal import _Slope, _Wide
    rng = np.random.default_rng(3)
    P, W, Q, S = (rng.normal(0, 3, (70, 9)).astype(np.float32) for _ in range(4))
    W = np.abs(W)
    W[rng.random(W.shape) < 0.2] = 0
    Q = np.where(rng.random(Q.shape) < 0.3, P * P / np.where(W > 0, W, 1), np.abs(Q))
    p, w, q, m = (a.astype(np.float64) for a in (P, W, Q, S))
    safe = np.where(w > 0, w, 1.0)
    want_mean = np.where(w > 0, p / np.sqrt(safe), 0.0).astype(np.float32)
    want_var = np.maximum(np.where(w > 0, q - p * p / safe, q), 0.0).astype(np.float32)
    for key in (slice(None), slice(5, 40), (np.array([0, 3, 69]), np.array([8, 0, 4]))):
        np.testing.assert_array_equal(_Slope(P, W, Q, "mean")[key], want_mean[key])
        np.testing.assert_array_equal(_Slope(P, W, Q, "var")[key], want_var[key])
        np.testing.assert_array_equal(_Wide(S, Q, "mean")[key], S[key])
        np.testing.assert_array_equal(_Wide(S, Q, "var")[key],
                                      np.maximum(q - m * m, 0.0).astype(np.float32)[key])
    assert np.any(want_var == 0) and np.any(want_mean == 0)
    np.testing.assert_array_equal(P, P.copy())      # the inputs are left as they were


def test_the_residual_planes_cheap_pass_keeps_a_noisy_element_only_when_asked():
    from hotpixel_shm.model import KIND_CODES
    from hotpixel_shm.temporal import _plane_records
    hot, noisy = KIND_CODES["hot"], KIND_CODES["noisy"]
    rng = np.random.default_rng(8)
    mean = rng.normal(0, 0.3, (150, 70)).astype(np.float32)
    var = np.full((150, 70), 4.0, np.float32)
    mean[100, 33] = 9.0                         # a warm element
    var[70, 20] = 400.0                         # a noisy one (variance ratio 100)
    for f_thr, want in ((30.0, {(100, 33, hot), (70, 20, noisy)}), (np.inf, {(100, 33, hot)})):
        ys, xs, code, _, _ = _plane_records(mean, var, 40, 1, 7.0, f_thr, 0.3)
        assert set(zip(ys.tolist(), xs.tolist(), code.tolist())) == want


def _raw_set(seed, n=24, **counts):
    h, w = 128, 160
    frames, truth = simulate_raw_frames(n, width=w, height=h, seed=seed,
                                        weak_range=(110.0, 160.0), **counts)
    frames = list(frames)
    a = np.stack(frames).astype(np.float64)
    mean, var = a.mean(0)[..., None], a.var(0)[..., None]
    res = residuals_of_frames(frames, (h, w), 2)
    return mean, var, res, truth, cfa_array("RGGB", h, w)


def test_warm_photosites_in_raw_scenes_found_by_the_residual_test():
    mean, var, res, truth, cfa = _raw_set(5, n_hot=0, n_weak_hot=6, n_stuck=0, n_dead=0,
                                          n_noisy=0)
    with_t = detect_raw(mean, var, res.n, cfa, white=4095, residuals=res)
    without = detect_raw(mean, var, res.n, cfa, white=4095)
    planted = {(t["x"], t["y"]) for t in truth}
    assert {(d.x, d.y) for d in with_t} == planted
    assert all(d.kind == "hot" and d.colour in "RGB" for d in with_t)
    # the mean/variance tests alone miss some of them
    assert {(d.x, d.y) for d in without} < planted


def test_no_false_alarms_on_defect_free_raw_scenes_and_optional_residuals():
    mean, var, res, truth, cfa = _raw_set(6, n_hot=0, n_weak_hot=0, n_stuck=0, n_dead=0,
                                          n_noisy=0)
    assert detect_raw(mean, var, res.n, cfa, white=4095, residuals=res) == []
    # the test can be switched off, and a layout that does not fit is refused
    assert detect(mean, var, res.n, DetectOptions(temporal=False), residuals=res) == []
    other = residuals_of_frames([np.zeros((8, 8), np.uint16)] * 3, (8, 8), 2)
    with pytest.raises(HotPixelError):
        detect(mean, var, res.n, residuals=other)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_engine_keeps_residuals_equal_for_any_worker_count(small_set, workers):
    from hotpixel_shm import engine

    paths, decoded = small_set
    job = engine.Job(files=list(paths), shape=(24, 32, 3), sample_dtype="uint8", tier="float32",
                     workers=workers, batch=2, residual_period=2)
    stats = engine.run(job).stats
    want = residuals_of_frames(decoded, (24, 32, 3), 2)
    got = stats.residuals
    assert got is not None and got.n == want.n == stats.n
    for a, b in zip(got.mean + got.var, want.mean + want.var):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    # without a residual period the engine keeps none
    job.residual_period = None
    assert engine.run(job).stats.residuals is None


def test_checkpoint_snapshots_carry_residuals(small_set):
    from hotpixel_shm import engine

    paths, decoded = small_set
    snaps = []
    job = engine.Job(files=list(paths), shape=(24, 32, 3), sample_dtype="uint8", tier="float64",
                     workers=2, residual_period=2, checkpoint_every=3)
    engine.run(job, on_checkpoint=snaps.append)
    assert snaps
    for snap in snaps:
        assert snap.residuals is not None and snap.residuals.n == snap.n
        want = residuals_of_frames([decoded[paths.index(f)] for f in snap.files], (24, 32, 3), 2)
        for a, b in zip(snap.residuals.mean, want.mean):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_merge_residuals_equals_one_pass():
    from hotpixel_shm.residual import merge_residuals

    rng = np.random.default_rng(8)
    frames = [rng.integers(0, 4096, (20, 24)).astype(np.uint16) for _ in range(9)]
    whole = residuals_of_frames(frames, (20, 24), 2)
    both = merge_residuals(residuals_of_frames(frames[:4], (20, 24), 2),
                           residuals_of_frames(frames[4:], (20, 24), 2))
    assert both.n == 9
    for a, b in zip(both.mean + both.var, whole.mean + whole.var):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-2)
    assert both.levels is None            # a raw mosaic keeps none
    # RGB photos: the level statistics merge as means; they survive a merge
    # only when both sides have them
    rgb = [rng.integers(0, 256, (20, 24, 3)).astype(np.uint8) for _ in range(9)]
    whole = residuals_of_frames(rgb, (20, 24, 3))
    a, b = residuals_of_frames(rgb[:4], (20, 24, 3)), residuals_of_frames(rgb[4:], (20, 24, 3))
    both = merge_residuals(a, b)
    for x, y in zip(both.levels, whole.levels):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-2)
    b.levels = None
    assert merge_residuals(a, b).levels is None


def _warm_png_set(tmp_path, n=12):
    """PNG photos of varied scenes with warm photosites too weak for the mean test alone."""
    from PIL import Image

    from hotpixel_shm.synth import Planted, simulate_frames

    planted = [Planted(x, y, "hot", "G", True, 15.0)
               for x, y in ((41, 40), (101, 62), (151, 90), (61, 110))]
    frames, truth = simulate_frames(n, 128, 192, seed=21, defects=planted, stamp=False)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"f{i:02d}.png")
    return truth


def test_a_run_keeps_residuals_and_finds_warm_photosites(tmp_path):
    from hotpixel_shm.api import analyse

    truth = _warm_png_set(tmp_path)
    (a,) = analyse([str(tmp_path)], workers=2, tier="float32")
    assert a.plan.residual_period == 2
    assert a.stats.residuals is not None and a.stats.residuals.n == a.stats.n
    found = {(d.x, d.y) for d in a.defects}
    # (+15 of 255 on green photosites, 12 frames: the mean test alone sees none)
    assert len(found) >= 2 and found <= {(p.x, p.y) for p in truth}
    (b,) = analyse([str(tmp_path)], workers=2, tier="float32",
                   detect_options=DetectOptions(temporal=False))
    assert {(d.x, d.y) for d in b.defects} < found


def test_the_plan_drops_residuals_before_a_worker(tmp_path):
    from hotpixel_shm import pipeline

    _warm_png_set(tmp_path, n=4)
    log = pipeline.LogToLogging()
    settings = pipeline.Settings(workers=2, tier="float64", memory_budget=1 << 40)
    (group,) = pipeline.prepare([str(tmp_path)], settings, log)
    full = pipeline.plan_group(group, settings, log)
    assert full.residual_period == 2 and full.memory.residual_bytes > 0
    assert any("temporal residual statistics kept" in r for r in full.reasons)
    # a budget that holds the plan without them, not with them: they go, the workers stay
    settings.memory_budget = full.total_bytes - full.memory.residual_bytes
    short = pipeline.plan_group(group, settings, log)
    assert short.residual_period is None and short.memory.residual_bytes == 0
    assert (short.workers, short.tier) == (2, "float64")
    assert any("no temporal residual statistics" in r for r in short.reasons)
    assert "no temporal residual statistics" in short.describe()
    # off when asked, and for dark frames
    settings.memory_budget, settings.residuals = 1 << 40, False
    assert pipeline.plan_group(group, settings, log).residual_period is None


def test_statistics_files_keep_residuals_and_old_files_still_load(tmp_path):
    from hotpixel_shm import statsio
    from hotpixel_shm.model import Stats

    rng = np.random.default_rng(9)
    frames = [rng.integers(0, 256, (20, 24, 3)).astype(np.uint8) for _ in range(5)]
    a = np.stack(frames).astype(np.float64)
    res = residuals_of_frames(frames, (20, 24, 3), 2)
    st = Stats(n=5, mean=a.mean(0), var=a.var(0), tier="float64", sample_dtype="uint8",
               residuals=res)
    statsio.save_stats(tmp_path / "r.npz", st)
    back, _ = statsio.load_stats(tmp_path / "r.npz")
    assert back.residuals is not None and back.residuals.layout == res.layout
    assert len(back.residuals.levels) == 8
    for x, y in zip(back.residuals.mean + back.residuals.var + back.residuals.levels,
                    res.mean + res.var + res.levels):
        np.testing.assert_array_equal(x, y)
    # a file written before the level statistics loads without them
    with np.load(tmp_path / "r.npz") as z:
        parts = {k: z[k] for k in z.files if not k.startswith(statsio.LEVEL_PREFIX)}
    np.savez(tmp_path / "older.npz", **parts)
    older, _ = statsio.load_stats(tmp_path / "older.npz")
    assert older.residuals is not None and older.residuals.levels is None
    detect(older.mean, older.var, older.n, residuals=older.residuals)
    st.residuals = None
    statsio.save_stats(tmp_path / "plain.npz", st)
    assert statsio.load_stats(tmp_path / "plain.npz")[0].residuals is None
    # a damaged plane is a clear error
    with np.load(tmp_path / "r.npz") as z:
        parts = {k: z[k] for k in z.files}
    parts["residual_var_1"] = parts["residual_var_1"][:-1]
    np.savez(tmp_path / "bad.npz", **parts)
    with pytest.raises(HotPixelError, match="residual"):
        statsio.load_stats(tmp_path / "bad.npz")
    with np.load(tmp_path / "r.npz") as z:
        parts = {k: z[k] for k in z.files}
    parts["residual_level_5"] = -parts["residual_level_5"] - 1       # a negative L L
    np.savez(tmp_path / "bad_level.npz", **parts)
    with pytest.raises(HotPixelError, match="level statistics"):
        statsio.load_stats(tmp_path / "bad_level.npz")


def _jpeg420(frame):
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=85, subsampling="4:2:0")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_dead_blue_photosites_in_420_jpegs_found_by_the_level_test():
    """Two dead blue photosites under 4:2:0 JPEG q85: their residual follows
    the scene's blue level, so only the level test sees them -- at the
    photosite (within JPEG's pixel), with nothing else reported; without
    the level statistics (an older statistics file) neither is found."""
    from hotpixel_shm.synth import simulate_frames

    frames, truth = simulate_frames(20, 128, 160, seed=6, dead_any_colour=True,
                                    defects={"hot": 0, "weak_hot": 0, "stuck": 0, "dead": 2,
                                             "noisy": 0})
    frames = [_jpeg420(f) for f in frames]
    a = np.stack(frames).astype(np.float64)
    mean, var = a.mean(0), a.var(0)
    res = residuals_of_frames(frames, frames[0].shape)
    assert [p.colour for p in truth] == ["B", "B"]
    found = detect(mean, var, len(frames), residuals=res)
    assert len(found) == 2
    for p in truth:
        assert any(d.kind == "dead" and abs(d.x - p.x) <= 1 and abs(d.y - p.y) <= 1
                   for d in found), (p, found)
    res.levels = None
    assert detect(mean, var, len(frames), residuals=res) == []


@pytest.mark.parametrize("shape, period, batch", [
    ((200, 3000, 3), None, 1), ((200, 3000, 3), None, 3), ((200, 1500, 1), 2, 2),
    ((160, 1200, 1), 6, 1)])
def test_the_numpy_update_stays_within_its_planned_scratch(shape, period, batch):
    # the planner counts residual.scratch_bytes per worker: the numpy
    # reference's temporaries (a worker's without a compiler) must stay
    # within it, and the figure must not be far above them either
    import tracemalloc

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 250, shape, dtype=np.uint8) for _ in range(batch)]
    layout = residual_layout(shape, period)
    acc = ResidualAccumulator(layout)
    with kernels.use("numpy"):
        tracemalloc.start()
        try:
            acc.update_batch(frames)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    planned = scratch_bytes(layout, batch, compiled=False)
    assert peak <= planned <= 1.3 * peak + (2 << 20), (peak, planned)


@pytest.mark.skipif(isinstance(kernels.available()["compiled"], str)
                    or not os.path.exists("/proc/self/status"),
                    reason="compiled kernels not built, or no /proc")
@pytest.mark.parametrize("shape, period", [((64, 120000, 3), None), ((64, 120000, 1), 6)])
def test_the_compiled_update_stays_within_its_planned_scratch(shape, period):
    # the compiled kernel's rings are C memory (no tracemalloc): the resident
    # high-water mark (VmHWM: getrusage's maxrss would carry the parent's
    # over exec) of a fresh process, before and after one update of K very
    # wide frames (so the rings dwarf everything else), is the measure
    code = f"""
import numpy as np
from hotpixel_shm import kernels
from hotpixel_shm.residual import ResidualAccumulator, residual_layout, scratch_bytes
assert kernels.NAME == "compiled"
frames = [np.random.default_rng(2).integers(0, 250, {shape!r}, dtype=np.uint8) for _ in range(3)]
layout = residual_layout({shape!r}, {period!r})
acc = ResidualAccumulator(layout)
acc._flat[:] = 1
acc._flat[:] = 0
def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
before = hwm()
acc.update_batch(frames)
grew = hwm() - before
print(grew, scratch_bytes(layout, 3), flush=True)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HOTPIXEL_SHM_KERNELS": "compiled"})
    grew, planned = (int(v) for v in out.stdout.split())
    assert 0.5 * planned <= grew <= planned, (grew, planned)


def test_merging_a_file_without_level_statistics_says_the_level_test_is_not_made(tmp_path,
                                                                                   capsys):
    # a statistics file of an earlier version has residual statistics but
    # no level sums: the merge keeps none, and the plan says so
    from conftest import make_frames, write_images

    from hotpixel_shm import statsio
    from hotpixel_shm.cli import main
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    write_images(first, make_frames(4, (24, 28, 3), seed=11))
    write_images(second, make_frames(4, (24, 28, 3), seed=12))
    saved = str(tmp_path / "s.npz")
    assert main(["-q", "--workers", "1", "--save-stats", saved, str(first)]) == 0
    with np.load(saved) as z:
        parts = {k: z[k] for k in z.files if not k.startswith(statsio.LEVEL_PREFIX)}
    older = str(tmp_path / "older.npz")
    np.savez(older, **parts)
    capsys.readouterr()
    for stats_file, said in ((saved, False), (older, True)):
        assert main(["--plan", "-v", "--workers", "1", "--load-stats", stats_file,
                     str(second)]) == 0
        out = capsys.readouterr()
        assert ("no level statistics" in out.out + out.err) is said, out


def _level_test_set():
    from hotpixel_shm.synth import simulate_frames
    frames, _ = simulate_frames(20, 128, 160, seed=6, dead_any_colour=True,
                                defects={"hot": 2, "weak_hot": 2, "stuck": 0, "dead": 2,
                                         "noisy": 0})
    frames = [_jpeg420(f) for f in frames]
    a = np.stack(frames).astype(np.float64)
    return a.mean(0), a.var(0), residuals_of_frames(frames, frames[0].shape), len(frames)


def test_the_residual_test_beside_detection_gives_the_same_defects():
    # issue 10: the residual test queued on another thread (the line
    # test's, in a run) while this one does the bands: the same defects
    from concurrent.futures import ThreadPoolExecutor
    mean, var, res, n = _level_test_set()
    want = detect(mean, var, n, residuals=res)
    assert len(want) >= 3
    seen = []
    with ThreadPoolExecutor(1) as pool:
        pool.submit(seen.append, "first")            # the line test, say
        got = detect(mean, var, n, residuals=res, beside=pool)
    assert got == want and seen == ["first"]


def test_an_interrupted_detection_cancels_the_residual_test_beside_it(monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from hotpixel_shm import detect as detect_mod, temporal
    mean, var, res, n = _level_test_set()
    started, ended = threading.Event(), {}
    real = temporal._plane_records

    def slow_plane(*a, **k):
        started.set()
        cancel = a[7] if len(a) > 7 else k.get("cancel")
        t0 = time.monotonic()
        while not cancel() and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        try:
            return real(*a, **k)
        except temporal.Cancelled:
            ended["cancelled"] = time.monotonic() - t0
            raise

    def interrupted_bands(*a, **k):
        assert started.wait(10)
        raise KeyboardInterrupt
    monkeypatch.setattr(temporal, "_plane_records", slow_plane)
    monkeypatch.setattr(detect_mod, "_detect_planes", interrupted_bands)
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(KeyboardInterrupt):
            detect(mean, var, n, residuals=res, beside=pool)
    assert ended["cancelled"] < 5
    with pytest.raises(temporal.Cancelled):
        temporal.temporal_records(res, mean, var, cancel=lambda: True)


def test_the_residual_test_stays_within_its_planned_memory():
    # the planner counts temporal_memory_bytes beside detection's bands:
    # measured with thresholds low enough for thousands of records and
    # several chunks of candidates
    import tracemalloc
    from hotpixel_shm import detect as detect_mod
    from hotpixel_shm.temporal import temporal_memory_bytes, temporal_records
    rng = np.random.default_rng(4)
    shape = (140, 1100, 3)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(5)]
    res = residuals_of_frames(frames, shape)
    a = np.stack(frames).astype(np.float64)
    mean, var = a.mean(0), a.var(0)

    def overlay(ys, xs, scale):
        return detect_mod._near_overlay(var, ys, xs, 0.4, detect_mod._RING_RADIUS * scale)
    tracemalloc.start()
    try:
        rec = temporal_records(res, mean, var, t_thr=1.5, f_thr=2.0, overlay=overlay)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rec["y"].size > 2 * detect_mod._OVERLAY_CHUNK
    assert peak <= temporal_memory_bytes(shape)
