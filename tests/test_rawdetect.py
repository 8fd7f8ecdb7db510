"""CFA-aware detection: one photosite per defect, judged against its own colour."""
import numpy as np
import pytest

from hotpixel_shm import rawio
from hotpixel_shm.dng import XTRANS_PATTERN, cfa_array, write_raw_set
from hotpixel_shm.errors import HotPixelError
from hotpixel_shm.detect import cfa_period
from hotpixel_shm.rawdetect import detect_raw

needs_rawpy = pytest.mark.skipif(not rawio.have_rawpy(), reason="rawpy (the raw extra) not installed")

WHITE = 4095


def _stats(paths):
    stack = np.stack([rawio.read_raw(p) for p in paths]).astype(np.float64)
    return stack.mean(axis=0), stack.var(axis=0)


@pytest.fixture(scope="module")
def raw_set(tmp_path_factory):
    """60 photos of 160x120 photosites with planted defects and a clipped lamp."""
    out = tmp_path_factory.mktemp("rawset")
    paths, truth = write_raw_set(out, n=60, width=160, height=120, seed=11, n_hot=4,
                                 n_weak_hot=0, n_stuck=3, n_dead=2, n_noisy=0, white=WHITE)
    mean, var = _stats(paths)
    info = rawio.probe_raw(paths[0])
    defects = detect_raw(mean, var, len(paths), info.cfa, colour_desc=info.colour_desc,
                         white=info.white_level)
    return {"truth": truth, "defects": defects, "mean": mean, "info": info}


@pytest.fixture(scope="module")
def dark_set(tmp_path_factory):
    """30 dark frames of 128x96 with strong and weak (warm) hot sites."""
    from hotpixel_shm.detect import DetectOptions
    out = tmp_path_factory.mktemp("darkset")
    paths, truth = write_raw_set(out, n=30, width=128, height=96, seed=12, n_hot=3,
                                 n_weak_hot=4, weak_range=(15.0, 40.0), n_stuck=1, n_dead=0,
                                 n_noisy=0, darks=True, white=WHITE)
    mean, var = _stats(paths)
    info = rawio.probe_raw(paths[0])
    defects = detect_raw(mean, var, len(paths), info.cfa, DetectOptions(darks=True),
                         colour_desc=info.colour_desc, white=info.white_level)
    return {"truth": truth, "defects": defects}


def _check_exact(truth, defects):
    found = {(d.x, d.y): d for d in defects}
    for t in truth:
        d = found.get((t["x"], t["y"]))
        assert d is not None, f"missed {t}"
        assert d.colour == t["colour"]
        assert d.channels == [0] and d.size == 1
    planted = {(t["x"], t["y"]) for t in truth}
    assert [(d.x, d.y, d.kind) for d in defects if (d.x, d.y) not in planted] == []


@needs_rawpy
def test_scene_set_every_defect_found_at_its_photosite_with_its_colour_and_nothing_else(raw_set):
    _check_exact(raw_set["truth"], raw_set["defects"])
    # the lamp really is clipped in every photo (so "nothing else" means something)
    assert (raw_set["mean"][..., 0] == WHITE).sum() > 100


@needs_rawpy
def test_scene_set_kinds_and_the_stuck_at_white_site(raw_set):
    found = {(d.x, d.y): d for d in raw_set["defects"]}
    for t in raw_set["truth"]:
        d = found[(t["x"], t["y"])]
        if t["label"] == "stuck_white":
            assert d.mean == pytest.approx(WHITE)
            assert d.kind in ("stuck", "hot")      # both true of a site stuck at white
        else:
            assert d.kind == t["kind"]


@needs_rawpy
def test_dark_frames_weak_hot_sites_found(dark_set):
    _check_exact(dark_set["truth"], dark_set["defects"])
    found = {(d.x, d.y): d for d in dark_set["defects"]}
    weak = [t for t in dark_set["truth"] if t["label"] == "weak_hot"]
    assert len(weak) == 4 and all(found[(t["x"], t["y"])].kind == "hot" for t in weak)


def _smooth_field(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    mean = 1000.0 + 0.5 * xx + 0.3 * yy + rng.normal(0, 6.0, (h, w))
    var = np.full((h, w), 400.0) + rng.normal(0, 5.0, (h, w))
    return mean, var


def test_bayer_colour_offset_is_judged_per_colour_not_as_a_defect():
    # Red photosites read much brighter than green everywhere (a colour cast):
    # nothing is a defect; a one-colour test would flag every red site.
    h, w = 40, 48
    cfa = np.array([[0, 1], [3, 2]], dtype=np.uint8)
    cfa = np.tile(cfa, (h // 2, w // 2))
    mean, var = _smooth_field(h, w)
    mean[cfa == 0] += 1500.0
    mean[cfa == 2] -= 500.0
    mean[17, 22] += 800.0          # odd row, even column: the second green (index 3)
    defects = detect_raw(mean[..., None], var[..., None], 50, cfa)
    assert [(d.x, d.y, d.colour) for d in defects] == [(22, 17, "G")]
    assert defects[0].kind == "hot"


@pytest.mark.parametrize("darks", [False, True])
def test_isolated_white_site_is_reported_but_a_clipped_block_is_not(darks):
    # darks=True turns off detect's directional (edge) test: the block must
    # still not be reported
    from hotpixel_shm.detect import DetectOptions
    h, w = 48, 48
    cfa = cfa_array("RGGB", h, w)
    mean, var = _smooth_field(h, w, seed=1)
    mean[8:20, 8:20] = WHITE        # a highlight clipped in every frame
    var[8:20, 8:20] = 0.0
    mean[36, 30] = WHITE            # one site stuck at white
    var[36, 30] = 0.0
    defects = detect_raw(mean[..., None], var[..., None], 50, cfa, DetectOptions(darks=darks),
                         white=WHITE)
    assert [(d.x, d.y) for d in defects] == [(30, 36)]
    assert defects[0].colour == "R"


@pytest.mark.parametrize("size", [2, 3])
def test_a_small_spot_clipped_in_every_frame_is_not_a_cluster_of_stuck_sites(size):
    # A star on a tracked mount, a distant street light: a few photosites of
    # every colour clipped in every frame. Each CFA sub-grid sees only one
    # to four of them, too few to look like a structure; the spot is told
    # from stuck sites by its clipped neighbours of the other colours.
    h, w = 48, 48
    cfa = cfa_array("RGGB", h, w)
    mean, var = _smooth_field(h, w, seed=4)
    mean[20:20 + size, 24:24 + size] = WHITE
    var[20:20 + size, 24:24 + size] = 0.0
    mean[36, 9] = WHITE             # one site stuck at white, alone
    var[36, 9] = 0.0
    defects = detect_raw(mean[..., None], var[..., None], 50, cfa, white=WHITE)
    assert [(d.x, d.y, d.colour) for d in defects] == [(9, 36, "G")]


def test_xtrans_sites_are_judged_against_the_same_tile_position():
    h, w = 72, 84
    cfa = cfa_array(XTRANS_PATTERN, h, w)
    mean, var = _smooth_field(h, w, seed=2)
    # green photosites of this sensor are brighter than red and blue
    mean[cfa == 1] += 700.0
    mean[40, 31] += 600.0           # hot
    mean[13, 50] = 60.0             # dead
    var[13, 50] = 0.0
    defects = detect_raw(mean[..., None], var[..., None], 50, cfa, colour_desc="RGB")
    got = sorted((d.x, d.y, d.kind, d.colour) for d in defects)
    letters = "RGB"
    assert got == sorted([(31, 40, "hot", letters[cfa[40, 31]]), (50, 13, "dead", letters[cfa[13, 50]])])


def test_top_keeps_the_worst_over_the_whole_mosaic():
    from hotpixel_shm.detect import DetectOptions
    h, w = 40, 40
    cfa = cfa_array("GRBG", h, w)
    mean, var = _smooth_field(h, w, seed=3)
    for (y, x), extra in zip([(5, 6), (11, 30), (30, 9), (25, 25)], [300.0, 900.0, 600.0, 1200.0]):
        mean[y, x] += extra
    all_found = detect_raw(mean[..., None], var[..., None], 50, cfa)
    assert len(all_found) == 4
    top2 = detect_raw(mean[..., None], var[..., None], 50, cfa, DetectOptions(top=2))
    assert [(d.x, d.y) for d in top2] == [(25, 25), (30, 11)]


def test_cfa_period():
    assert cfa_period(cfa_array("RGGB", 10, 12)) == 2
    assert cfa_period(np.array([[0, 1], [3, 2]] * 3, dtype=np.uint8)[:, :2].repeat(1, 0)) == 2
    assert cfa_period(cfa_array(XTRANS_PATTERN, 24, 30)) == 6
    assert cfa_period(np.zeros((8, 8), dtype=np.uint8)) == 1
    rng = np.random.default_rng(0)
    with pytest.raises(HotPixelError, match="does not repeat"):
        cfa_period(rng.integers(0, 3, (40, 40)))


def test_shape_errors_are_clear():
    cfa = cfa_array("RGGB", 8, 8)
    with pytest.raises(HotPixelError, match="cfa shape"):
        detect_raw(np.zeros((8, 10, 1)), np.zeros((8, 10, 1)), 5, cfa)
    with pytest.raises(HotPixelError, match="one channel"):
        detect_raw(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), 5, cfa)


@pytest.mark.parametrize("reach", [0, 1, 2, 5])
def test_dilation_is_ndimage_maximum_filter(reach):
    from scipy import ndimage

    from hotpixel_shm.rawdetect import _dilate
    rng = np.random.default_rng(reach)
    for shape in ((1, 1), (1, 6), (6, 1), (9, 13), (40, 30)):
        for density in (0.02, 0.2):
            mask = rng.random(shape) < density
            want = ndimage.maximum_filter(mask, size=2 * reach + 1, mode="constant")
            assert np.array_equal(_dilate(mask, reach), want)
