"""Defect detection: recall and false alarms on simulated camera files, exact
masks on small hand-built statistics, the stamp/sky/border guards, clustering,
options, raw mosaics and the memory bound."""
import dataclasses
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from hotpixel_shm import kernels
from hotpixel_shm.detect import DetectOptions, detect, detect_memory_bytes
from hotpixel_shm.errors import HotPixelError
from hotpixel_shm.synth import write_sample_set

NONE = dict(n_hot=0, n_weak_hot=0, n_stuck=0, n_dead=0, n_noisy=0)


def _stats(paths):
    """numpy float64 mean and population variance of the decoded files."""
    s1 = s2 = None
    for p in paths:
        with Image.open(p) as im:
            a = np.asarray(im).astype(np.float64)
        if a.ndim == 2:
            a = a[:, :, None]
        if s1 is None:
            s1, s2 = np.zeros_like(a), np.zeros_like(a)
        s1 += a
        s2 += a * a
    n = len(paths)
    mean = s1 / n
    return mean, np.maximum(s2 / n - mean * mean, 0.0), n


SETS = {
    "jpeg420": dict(n=40, seed=11, fmt="jpeg", subsampling="4:2:0"),
    "jpeg422": dict(n=32, seed=12, fmt="jpeg", subsampling="4:2:2"),
    "png": dict(n=32, seed=13, fmt="png", n_noisy=1),
    "darks": dict(n=30, seed=14, fmt="tiff16", darks=True),
    "clean420": dict(n=30, seed=15, fmt="jpeg", subsampling="4:2:0", **NONE),
    "clean_png": dict(n=30, seed=16, fmt="png", **NONE),
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Sample sets written as real files, and their statistics, made on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(name)
            s = write_sample_set(out, **SETS[name])
            cache[name] = (s,) + _stats(s.paths)
        return cache[name]
    return get


def _match(truth, defects):
    """Planted -> the defect within 1 px of it (or None); and the unmatched defects."""
    hits, used = [], set()
    for t in truth:
        hit = next((i for i, d in enumerate(defects)
                    if abs(d.x - t.x) <= 1 and abs(d.y - t.y) <= 1), None)
        hits.append(None if hit is None else defects[hit])
        if hit is not None:
            used.add(hit)
    return hits, [d for i, d in enumerate(defects) if i not in used]


# --------------------------------------------------------------------------- sample sets

@pytest.mark.parametrize("name", ["jpeg420", "jpeg422", "png"])
def test_every_planted_defect_is_found_with_its_kind(sample, name):
    s, mean, var, n = sample(name)
    defects = detect(mean, var, n)
    hits, extra = _match(s.truth, defects)
    assert {t.kind for t in s.truth} >= {"hot", "stuck", "dead"}
    for t, d in zip(s.truth, hits):
        assert d is not None, f"missed {t}"
        if name == "jpeg420" and t.kind == "stuck" and t.colour != "G":
            # 4:2:0 keeps a quarter of a red/blue photosite's colour: its
            # constancy is diluted and it may read as hot (documented limit)
            assert d.kind in ("stuck", "hot")
        else:
            assert d.kind == t.kind, f"{t} found as {d.kind}"
    assert len(extra) <= 2, extra
    scores = [d.score for d in defects]
    assert scores == sorted(scores, reverse=True)


def test_jpeg_smear_is_one_defect_in_every_channel(sample):
    s, mean, var, n = sample("jpeg420")
    defects = detect(mean, var, n)
    hits, _ = _match(s.truth, defects)
    for t, d in zip(s.truth, hits):
        near = [e for e in defects if abs(e.x - t.x) <= 4 and abs(e.y - t.y) <= 4]
        assert near == [d], "one defect per planted photosite"
    green = [d for t, d in zip(s.truth, hits) if t.colour == "G" and t.kind in ("hot", "dead")]
    assert green and all(d.channels == [0, 1, 2] and d.size >= 3 for d in green)


def test_dark_frames_every_hot_pixel_and_the_noisy_ones(sample):
    s, mean, var, n = sample("darks")
    assert mean.shape[2] == 1
    defects = detect(mean, var, n, DetectOptions(darks=True))
    hits, extra = _match(s.truth, defects)
    assert sum(t.weak for t in s.truth) >= 3
    for t, d in zip(s.truth, hits):
        assert d is not None, f"missed {t}"
        assert d.kind == t.kind and d.channels == [0] and d.size == 1
    assert extra == []


@pytest.mark.parametrize("name", ["clean420", "clean_png"])
def test_no_false_alarm_on_clipped_sky_border_and_date_stamp(sample, name):
    s, mean, var, n = sample(name)
    assert s.truth == []
    # the set does have what we must not report: a sky clipped in most
    # photos, a black border, and a stamp identical in every photo
    assert ((mean[10:40] > 150) & (var[10:40] > 100)).all(axis=2).sum() > 1000
    assert np.median(mean[:, :2]) < 8
    assert (var[-40:, -120:] < 25).all(axis=2).sum() > 30     # std < 5, the scene ~20+
    assert detect(mean, var, n) == []


# --------------------------------------------------------------------------- hand-built

def _field(h=96, w=128, c=3, seed=0, level=100.0, noise=1.0, std=20.0):
    """Smooth seeded statistics: a gentle gradient plus per-subpixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = level + 0.2 * xx + 0.1 * yy
    mean = base[:, :, None] + rng.normal(0, noise, (h, w, c))
    sd = std + rng.normal(0, 0.3, (h, w, c))
    return mean, sd ** 2


def test_exact_mask_of_single_subpixel_defects():
    mean, var = _field(seed=1)
    planted = {(20, 15, 0): "hot", (50, 30, 1): "dead", (80, 20, 2): "stuck",
               (35, 60, 1): "noisy", (100, 70, 0): "hot", (64, 48, 2): "dead"}
    for (x, y, c), kind in planted.items():
        if kind == "hot":
            mean[y, x, c] += 40
        elif kind == "dead":
            mean[y, x, c] = 2.0
            var[y, x, c] = 1.0
        elif kind == "stuck":
            mean[y, x, c] = 230.0
            var[y, x, c] = 0.5
        else:
            var[y, x, c] *= 9.0
    defects = detect(mean, var, 50, DetectOptions(cluster=False))
    found = {(d.x, d.y, d.channels[0]): d.kind for d in defects}
    assert found == planted
    for d in defects:
        assert d.size == 1
        assert d.mean == pytest.approx(mean[d.y, d.x, d.channels[0]], abs=1e-3)
        assert d.std == pytest.approx(np.sqrt(var[d.y, d.x, d.channels[0]]), rel=1e-4)
        assert abs(d.neighbour_mean - np.median(mean[d.y - 2:d.y + 3, d.x - 2:d.x + 3,
                                                     d.channels[0]])) < 3


def test_smeared_3x3_defect_is_one_defect_with_all_channels():
    mean, var = _field(seed=2)
    x, y = 61, 40
    smear = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    mean[y - 1:y + 2, x - 1:x + 2, :] += 60 * smear[:, :, None] * np.array([1.0, 0.6, 0.4])
    defects = detect(mean, var, 40)
    assert len(defects) == 1
    d = defects[0]
    assert (d.x, d.y, d.kind, d.channels) == (x, y, "hot", [0, 1, 2])
    assert d.size >= 3
    # without clustering every flagged subpixel is its own defect
    assert len(detect(mean, var, 40, DetectOptions(cluster=False))) == d.size


def test_smooth_gradient_vignetting_black_border_and_clip_are_quiet():
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2)) / np.sqrt(2)
    vignette = (1 + (1.3 * r) ** 2) ** -2
    rng = np.random.default_rng(3)
    mean = (60 + 1.2 * xx + 0.6 * yy)[:, :, None] * vignette[:, :, None] * [1.0, 1.1, 0.8]
    mean = mean + rng.normal(0, 0.5, mean.shape)
    std = 30 * vignette[:, :, None] + rng.normal(0, 0.2, mean.shape) + 0.5
    mean[:, :3] = 0.0                     # black border: black in every photo
    std[:, :3] = 0.0
    mean[:25, 60:] = 255.0                # clipped in every photo
    std[:25, 60:] = 0.0
    assert detect(mean, std ** 2, 40) == []


def test_a_bad_column_is_structure_in_photos_but_reported_in_dark_frames():
    rng = np.random.default_rng(13)
    mean = 256 + rng.normal(0, 1.0, (60, 80, 1))
    std = 6 + rng.normal(0, 0.1, (60, 80, 1))
    mean[10:50, 40] += 30
    assert detect(mean, std ** 2, 30) == []
    found = detect(mean, std ** 2, 30, DetectOptions(darks=True, cluster=False))
    assert sorted((d.x, d.y) for d in found) == [(40, y) for y in range(10, 50)]
    assert {d.kind for d in found} == {"hot"}
    # clustered, the touching pixels are one defect
    [column] = detect(mean, std ** 2, 30, DetectOptions(darks=True))
    assert column.x == 40 and 10 <= column.y < 50 and column.size == 40


def _stamp(mean, var, x0, y0, stroke_std=0.0):
    """A seven-segment-like "20" in bright orange, identical in every photo."""
    strokes = [(0, 0, 12, 2), (10, 0, 2, 9), (0, 8, 12, 2), (0, 8, 2, 9), (0, 15, 12, 2),
               (16, 0, 12, 2), (16, 0, 2, 17), (26, 0, 2, 17), (16, 15, 12, 2)]
    for dx, dy, w, h in strokes:
        mean[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w] = [255.0, 170.0, 40.0]
        var[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w] = stroke_std ** 2


@pytest.mark.parametrize("stroke_std", [0.0, 3.0])
@pytest.mark.parametrize("static_ratio", [0.4, 0.0])
def test_date_stamp_edges_and_corners_are_not_defects(stroke_std, static_ratio):
    mean, var = _field(seed=4)
    _stamp(mean, var, 70, 60, stroke_std)
    # a real hot pixel a JPEG block away from the stamp is still found
    mean[30, 40, 1] += 40
    defects = detect(mean, var, 40, DetectOptions(static_ratio=static_ratio))
    assert [(d.x, d.y, d.kind) for d in defects] == [(40, 30, "hot")]


def test_stuck_pixel_next_to_nothing_static_is_found_but_not_inside_a_stamp():
    mean, var = _field(seed=5)
    _stamp(mean, var, 70, 60)
    mean[20, 20, 2] = 240.0
    var[20, 20, 2] = 0.0
    kinds = [(d.x, d.y, d.kind) for d in detect(mean, var, 40)]
    assert kinds == [(20, 20, "stuck")]


def test_jpeg_echo_is_merged_but_two_real_defects_are_not():
    mean, var = _field(seed=6)
    mean[20, 20, 0] += 100          # strong
    mean[22, 26, 0] += 15           # a weak speck in the same 16x16 block: its echo
    defects = detect(mean, var, 40)
    assert [(d.x, d.y) for d in defects] == [(20, 20)]
    assert defects[0].size == 2
    mean[22, 26, 0] += 60           # now a defect of its own
    assert sorted((d.x, d.y) for d in detect(mean, var, 40)) == [(20, 20), (26, 22)]


def test_dark_frame_hot_warm_and_telegraph_pixels():
    rng = np.random.default_rng(7)
    h, w, n, sigma = 80, 100, 30, 6.0
    mean = 256 + rng.normal(0, 1.5, (h, w, 1)) + rng.normal(0, sigma / np.sqrt(n), (h, w, 1))
    std = sigma * (1 + rng.normal(0, 1 / np.sqrt(2 * n), (h, w, 1)))
    mean[10, 10] += 5 * sigma                         # warm: +5 sigma of the read noise
    std[10, 10] = np.sqrt(sigma ** 2 + 5 * sigma)     # with its dark-current shot noise
    mean[40, 50] += 300
    std[40, 50] = np.sqrt(sigma ** 2 + 300)
    std[60, 20] = 8 * sigma                           # telegraph: std up, mean normal
    mean[60, 20] += 4.0                               # (a little off by chance)
    std[20, 80] = 0.0                                 # dead: reads 0, always
    mean[20, 80] = 0.0
    defects = detect(mean, std ** 2, n, DetectOptions(darks=True))
    assert {(d.x, d.y): d.kind for d in defects} == {
        (10, 10): "hot", (50, 40): "hot", (20, 60): "noisy", (80, 20): "dead"}
    assert defects[0].score > defects[-1].score


def test_top_keeps_the_worst_in_order():
    mean, var = _field(seed=8)
    for i, amp in enumerate((30, 90, 60)):
        mean[20 + 20 * i, 20 + 30 * i, 1] += amp
    all_ = detect(mean, var, 40)
    assert len(all_) == 3
    top = detect(mean, var, 40, DetectOptions(top=2))
    assert [(d.x, d.y) for d in top] == [(50, 40), (80, 60)]
    assert top[0].score > top[1].score


def test_float32_and_float64_give_the_same_defects():
    mean, var = _field(seed=9)
    mean[30, 30, 0] += 50
    mean[60, 90, 2] = 1.0
    a = detect(mean, var, 40)
    b = detect(mean.astype(np.float32), var.astype(np.float32), 40)
    def key(found):
        return [(d.x, d.y, d.kind, d.channels) for d in found]
    assert key(a) == key(b)
    assert [d.score for d in a] == pytest.approx([d.score for d in b], rel=1e-3)


def test_two_dimensional_input_and_tiny_images():
    mean, var = _field(h=40, w=50, c=1, seed=10)
    mean[20, 25, 0] += 60
    assert [(d.x, d.y) for d in detect(mean[:, :, 0], var[:, :, 0], 20)] == [(25, 20)]
    small = detect(np.full((3, 4, 1), 9.0), np.ones((3, 4, 1)), 5)
    assert small == []


def test_bad_input():
    m = np.zeros((10, 12, 3))
    with pytest.raises(HotPixelError):
        detect(m, np.zeros((10, 12, 2)), 10)
    with pytest.raises(HotPixelError):
        detect(np.zeros(5), np.zeros(5), 10)
    with pytest.raises(HotPixelError):
        detect(m, m, 1)
    with pytest.raises(HotPixelError):
        detect(m, m, 10, DetectOptions(window=4))
    with pytest.raises(HotPixelError):
        detect(m, m, 10, cfa=np.zeros((10, 12), int))          # cfa needs one channel
    with pytest.raises(HotPixelError):
        detect(m[:, :, :1], m[:, :, :1], 10, cfa=np.zeros((4, 4), int))
    with pytest.raises(HotPixelError):
        detect(m.astype(object), m, 10)


def test_raw_mosaic_with_a_cfa():
    h, w = 64, 80
    cfa = np.zeros((h, w), int)
    cfa[0::2, 1::2] = 1
    cfa[1::2, 0::2] = 1
    cfa[1::2, 1::2] = 2                                   # RGGB
    rng = np.random.default_rng(11)
    level = np.choose(cfa, [400.0, 900.0, 300.0])         # the colours differ a lot
    mean = (level + rng.normal(0, 2, (h, w)))[:, :, None]
    var = (40 + rng.normal(0, 0.5, (h, w)))[:, :, None] ** 2
    mean[20, 30, 0] += 200                                # R site (even, even)
    mean[41, 51, 0] = 5.0                                 # B site (odd, odd)
    var[41, 51, 0] = 1.0
    defects = detect(mean, var, 30, cfa=cfa)
    assert sorted((d.x, d.y, d.kind, d.colour, d.channels, d.size) for d in defects) == [
        (30, 20, "hot", "R", [0], 1), (51, 41, "dead", "B", [0], 1)]
    assert defects[0].score >= defects[1].score


def _records(defects):
    return [dataclasses.astuple(d) for d in defects]


@pytest.mark.parametrize("name", ["jpeg420", "darks"])
def test_threads_give_the_same_defects(sample, name):
    # issue 10: the bands spread over threads, collected in band order:
    # the same defects, scores and all, from arrays and from statistics
    # read band by band (a reader whose bands do not line up with detection's)
    from hotpixel_shm.bands import ArrayBands, BandArray, BandReader, cache_bands_for
    s, mean, var, n = sample(name)
    opts = DetectOptions(darks=SETS[name].get("darks", False))
    one = _records(detect(mean, var, n, opts))
    assert len(one) >= 3
    for threads in (2, 3):
        assert _records(detect(mean, var, n, opts, threads=threads)) == one
        arrays = ArrayBands(mean, var)
        calls = []

        def finish(y0, y1, out_mean, out_var):
            calls.append(y0)
            arrays._copy(y0, y1, out_mean, out_var)
        reader = BandReader(mean.shape, np.float64, finish, band_rows=29,
                            cache_bands=cache_bands_for(threads))
        got = detect(BandArray(reader, "mean"), BandArray(reader, "var"), n, opts,
                     threads=threads)
        assert _records(got) == one
        assert set(calls) == set(range(0, mean.shape[0], 29))


def test_threads_keep_the_same_strongest_when_too_many_are_flagged(monkeypatch):
    # the cap on flagged subpixels is applied band after band whatever the threads
    from hotpixel_shm import detect as detect_mod
    mean, var = _field(h=160, w=128, seed=21)
    rng = np.random.default_rng(5)
    ys, xs = rng.integers(3, 157, 40), rng.integers(3, 125, 40)
    mean[ys, xs, 1] += rng.uniform(40, 90, 40)
    monkeypatch.setattr(detect_mod, "_MAX_FLAGGED", 7)
    one = _records(detect(mean, var, 40, DetectOptions(cluster=False)))
    assert 0 < len(one) <= 7
    for threads in (2, 3):
        assert _records(detect(mean, var, 40, DetectOptions(cluster=False),
                               threads=threads)) == one


def test_raw_mosaic_threads_give_the_same_defects():
    h, w = 96, 80
    cfa = np.zeros((h, w), int)
    cfa[0::2, 1::2] = 1
    cfa[1::2, 0::2] = 1
    cfa[1::2, 1::2] = 2
    rng = np.random.default_rng(12)
    mean = (np.choose(cfa, [400.0, 900.0, 300.0]) + rng.normal(0, 2, (h, w)))[:, :, None]
    var = (40 + rng.normal(0, 0.5, (h, w)))[:, :, None] ** 2
    mean[20, 30, 0] += 200
    mean[75, 51, 0] = 5.0
    var[75, 51, 0] = 1.0
    one = _records(detect(mean, var, 30, cfa=cfa))
    assert len(one) == 2
    assert _records(detect(mean, var, 30, cfa=cfa, threads=2)) == one


def test_memory_bound_holds_and_depends_on_the_width_only():
    # and the channels: statistics read band by band are read a band of every channel at once
    assert detect_memory_bytes((100, 1000, 3)) == detect_memory_bytes((4000, 1000, 3))
    assert detect_memory_bytes((100, 1000, 1)) < detect_memory_bytes((100, 1000, 3))
    assert detect_memory_bytes((100, 6000, 3)) > detect_memory_bytes((100, 1000, 3))
    assert detect_memory_bytes((4000, 6000, 3)) < 128 * 2 ** 20
    mean, var = _field(h=300, w=700, seed=12)
    mean[100, 200, 1] += 50
    tracemalloc.start()
    try:
        detect(mean, var, 40)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= detect_memory_bytes(mean.shape)
    # read band by band: the reader's cache (counted by the plan on its own) on top
    from hotpixel_shm.bands import ArrayBands, BandArray, BandReader
    arrays = ArrayBands(mean, var)
    reader = BandReader(mean.shape, np.float64, arrays._copy)
    tracemalloc.start()
    try:
        detect(BandArray(reader, "mean"), BandArray(reader, "var"), 40)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= detect_memory_bytes(mean.shape) + reader.nbytes_cached()
    # on threads: band buffers for each (the threads' bytes are traced too)
    assert detect_memory_bytes(mean.shape, threads=2) > detect_memory_bytes(mean.shape)
    tracemalloc.start()
    try:
        detect(mean, var, 40, threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= detect_memory_bytes(mean.shape, threads=2)


def test_mosaic_period_is_the_whole_frames_from_a_corner():
    """mosaic_period reads a corner; the answer (or the error) is the frame's."""
    from hotpixel_shm.detect import cfa_period, mosaic_period
    from hotpixel_shm.errors import HotPixelError
    from hotpixel_shm.model import Mosaic

    bayer = np.array([[0, 1], [3, 2]], np.uint8)
    xtrans = np.array([[1, 1, 0, 1, 1, 2], [1, 1, 2, 1, 1, 0], [2, 0, 1, 0, 2, 1],
                       [1, 1, 2, 1, 1, 0], [1, 1, 0, 1, 1, 2], [0, 2, 1, 2, 0, 1]], np.uint8)
    rng = np.random.default_rng(3)
    tiles = [bayer, xtrans, np.zeros((1, 1), np.uint8), np.tile(bayer, (3, 2)),
             rng.integers(0, 3, (3, 5)).astype(np.uint8), rng.integers(0, 3, (17, 17)).astype(np.uint8)]
    for tile in tiles:
        m = Mosaic(tile)
        for shape in [(400, 600), (5, 300), (300, 7), (1, 1), (20, 33)]:
            try:
                want = cfa_period(m.cfa(shape))
            except HotPixelError:
                with pytest.raises(HotPixelError):
                    mosaic_period(m, shape)
                continue
            assert mosaic_period(m, shape) == want, (tile.shape, shape)


def test_a_defect_the_mean_test_scores_higher_is_no_lobe():
    """A residual-test defect less than a 4:2:0 block (16 px) from a
    stronger-|z| one of the opposite kind is its lobe (merged) -- unless the
    mean/variance test scored it above its own |z| and above the other
    defect (a dead green photosite of a 4:2:2 set was dropped as a lobe);
    16 px away it is a defect of its own (defects the simulated cameras
    plant 16 px apart were dropped)."""
    from hotpixel_shm.detect import _absorb_echoes
    from hotpixel_shm.model import Defect

    def pair(dead_score, dead_t, dy=15):
        warm = Defect(x=163, y=196, channels=[1], kind="hot", mean=150.0, std=9.0,
                      neighbour_mean=140.0, score=17.9)
        dead = Defect(x=173, y=196 + dy, channels=[1], kind="dead", mean=34.0, std=10.0,
                      neighbour_mean=86.0, score=dead_score)
        kept = _absorb_echoes([warm, dead], [18.0, dead_t])
        return sorted((d.kind, d.x, d.y) for d in kept)

    both = [("dead", 173, 211), ("hot", 163, 196)]
    assert pair(28.4, 9.5) == both
    # scored by the residual test alone (score <= |z|): a lobe
    assert pair(7.9, 9.5) == [("hot", 163, 196)]
    # the mean/variance test scored it, but below the other one: a lobe
    assert pair(12.0, 9.5) == [("hot", 163, 196)]
    # a full block away: no lobe
    assert pair(7.9, 9.5, dy=16) == [("dead", 173, 212), ("hot", 163, 196)]


# --------------------------------------------------------------------------- compiled twin

_HAVE_COMPILED = not isinstance(kernels.available()["compiled"], str)
_needs_compiled = pytest.mark.skipif(not _HAVE_COMPILED, reason="compiled kernels not built")

# (height, width, window, y0): a top, middle and last band, odd sizes, a
# frame lower than the window and a band lower than two rows, one pixel,
# one column, the usual and the wider windows
_CAND_CASES = [(40, 37, 5, 0), (40, 37, 5, 32), (75, 64, 5, 32), (70, 33, 7, 64),
               (3, 5, 5, 0), (1, 1, 3, 0), (9, 11, 9, 0), (33, 2, 3, 32), (50, 1, 5, 32),
               (36, 17, 11, 0)]


def _candidate_planes(hgt, wid, dtype, seed):
    """Mean and variance of 3 channels: noise, a constant (clipped) block,
    tiny negative variances from rounding, a few spikes."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(100, 30, (hgt, wid, 3))
    var = rng.normal(20, 6, (hgt, wid, 3)) ** 2
    mean[: hgt // 2, : wid // 3] = 255.0
    var[: hgt // 2, : wid // 3] = 0.0
    var[rng.random(var.shape) < 0.05] = -1e-9
    spikes = rng.random(mean.shape) < 0.02
    mean[spikes] += 200
    return mean.astype(dtype), var.astype(dtype)


def _split(rows, cuts):
    """Rows as consecutive pieces cut at ``cuts`` (the band reader's bands)."""
    edges = [0] + [c for c in cuts if 0 < c < rows.shape[0]] + [rows.shape[0]]
    return [rows[a:b] for a, b in zip(edges[:-1], edges[1:])]


@_needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", _CAND_CASES)
def test_compiled_candidate_pass_gives_the_numpy_bits(case, dtype):
    from hotpixel_shm import detect as D
    hgt, wid, window, y0 = case
    h = window // 2
    mean, var = _candidate_planes(hgt, wid, dtype, seed=hgt * wid + window)
    pm, pv = mean[:, :, 1], var[:, :, 1]            # strided: one channel of three
    y1 = min(hgt, y0 + D._TILE)
    rows = y1 - y0
    lo, hi, top = D._halo_rows(hgt, y0, y1, h)
    thr = np.array([0.5, 3.0, 1.5, 8.0, 0.2, 2.0, 0.7, 4.0], np.float32)

    def run(compiled):
        bm, bs, hsum, am, as_, mask, mask_s = D._band_buffers(hgt, wid, h)
        for b in (bm, bs, hsum, am, as_):
            b.fill(np.nan)                          # nothing left over counts
        vm, vs, hs = bm[:rows + 2 * h], bs[:rows + 2 * h], hsum[:rows + 2 * h]
        am, as_, mk = am[:rows], as_[:rows], mask[:rows]
        if compiled:
            # the mean's and the variance's rows cut differently, as pieces
            done = kernels.get("compiled").detect_candidates(
                _split(pm[lo:hi], [3, 7]), _split(pv[lo:hi], [1, 2, 20]), top, h,
                (vm, vs, hs, am, as_, mk), tuple(thr))
            assert done
        else:
            D._fill_band(vm, pm, y0, y1, h, False)
            D._fill_band(vs, pv, y0, y1, h, True)
            D._box_residuals(vm, hs, am, h)
            D._box_residuals(vs, hs, as_, h)
            D._above(am, D._phase_thresholds(thr[:4], wid), mk)
            mk |= D._above(as_, D._phase_thresholds(thr[4:], wid), mask_s[:rows])
        return vm.view(np.uint32).copy(), vs.view(np.uint32).copy(), \
            am.view(np.uint32).copy(), as_.view(np.uint32).copy(), mk.copy()

    want, got = run(False), run(True)
    for name, a, b in zip(("mean band", "std band", "mean residual", "std residual", "mask"),
                          want, got):
        np.testing.assert_array_equal(b, a, err_msg=name)
    if want[4].size >= 100:
        assert 0 < want[4].sum() < want[4].size         # candidates and others


@_needs_compiled
def test_compiled_candidate_pass_leaves_other_dtypes_to_numpy():
    from hotpixel_shm import detect as D
    c = kernels.get("compiled")
    bufs = D._band_buffers(8, 6, 2)
    rows = [np.zeros((8, 6), np.int32)]
    assert not c.detect_candidates(rows, rows, 2, 2, (bufs[0][:12], bufs[1][:12], bufs[2][:12],
                                                       bufs[3][:8], bufs[4][:8], bufs[5][:8]),
                                   (1.0,) * 8)
    with pytest.raises(ValueError):
        # rows that do not fit the band are refused, not written past it
        rows = [np.zeros((20, 6))]
        c.detect_candidates(rows, rows, 2, 2, (bufs[0][:12], bufs[1][:12], bufs[2][:12],
                                               bufs[3][:8], bufs[4][:8], bufs[5][:8]),
                            (1.0,) * 8)


def _detect_on(name, mean, var, n, opts, band_rows=None, threads=1, **kw):
    from hotpixel_shm.bands import ArrayBands, BandArray, BandReader
    with kernels.use(name):
        if band_rows:
            arrays = ArrayBands(mean, var)
            reader = BandReader(mean.shape, mean.dtype, arrays._copy, band_rows=band_rows,
                                cache_bands=8)
            mean, var = BandArray(reader, "mean"), BandArray(reader, "var")
        return _records(detect(mean, var, n, opts, threads=threads, **kw))


@_needs_compiled
@pytest.mark.parametrize("name", ["jpeg420", "darks"])
def test_both_kernel_paths_give_the_same_defects(sample, name, monkeypatch):
    from hotpixel_shm import detect as D
    s, mean, var, n = sample(name)
    opts = DetectOptions(darks=SETS[name].get("darks", False))
    want = _detect_on("numpy", mean, var, n, opts)
    assert len(want) >= 3
    want32 = _detect_on("numpy", mean.astype(np.float32), var.astype(np.float32), n, opts)
    # the compiled pass really runs: numpy's fill is never called
    monkeypatch.setattr(D, "_fill_band", None)
    assert _detect_on("compiled", mean, var, n, opts) == want
    assert _detect_on("compiled", mean.astype(np.float32), var.astype(np.float32), n,
                      opts) == want32
    # read band by band (bands of 7 rows: detection's bands take 6 of them)
    assert _detect_on("compiled", mean, var, n, opts, band_rows=7) == want
    assert _detect_on("compiled", mean, var, n, opts, band_rows=7, threads=2) == want


@_needs_compiled
def test_both_kernel_paths_give_the_same_defects_on_hand_built_statistics():
    mean, var = _field(h=75, w=61, seed=3)
    mean[30, 20, 0] += 40
    mean[5, 58, 2] = 2.0
    var[40, 40, 1] *= 9.0
    mean[60:, :20] = 250.0                      # a clipped corner
    var[60:, :20] = 0.0
    for window in (3, 5, 7):
        opts = DetectOptions(window=window, cluster=False)
        want = _detect_on("numpy", mean, var, 40, opts)
        assert len(want) >= 2
        assert _detect_on("compiled", mean, var, 40, opts) == want
        assert _detect_on("compiled", mean, var, 40, opts, band_rows=5) == want
    h, w = 46, 38
    cfa = np.zeros((h, w), int)
    cfa[0::2, 1::2] = 1
    cfa[1::2, 0::2] = 1
    cfa[1::2, 1::2] = 2
    m, v = mean[:h, :w, :1].copy(), var[:h, :w, :1].copy()
    m[20, 31, 0] += 200
    want = _detect_on("numpy", m, v, 30, DetectOptions(), cfa=cfa)
    assert len(want) >= 1
    assert _detect_on("compiled", m, v, 30, DetectOptions(), cfa=cfa) == want
    assert _detect_on("compiled", m, v, 30, DetectOptions(), band_rows=9, cfa=cfa) == want
