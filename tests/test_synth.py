"""The simulated camera: determinism, the planted truth, the frames and the files."""
import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from hotpixel_shm.errors import HotPixelError
from hotpixel_shm.synth import (DARK_BIAS, DARK_READ_NOISE, Planted, cfa_colour,
                                make_photo_like, simulate_frames, write_sample_set)

H, W = 160, 240
NONE = {"hot": 0, "weak_hot": 0, "stuck": 0, "dead": 0, "noisy": 0}


def _stack(frames):
    return np.stack(list(frames)).astype(np.float64)


def _load(path):
    with Image.open(path) as im:
        return np.asarray(im)


def test_same_seed_same_frames_and_truth():
    f1, t1 = simulate_frames(3, H, W, seed=7)
    f2, t2 = simulate_frames(3, H, W, seed=7)
    assert t1 == t2
    for a, b in zip(f1, f2):
        assert np.array_equal(a, b)
    f3, t3 = simulate_frames(3, H, W, seed=8)
    assert t3 != t1
    assert not np.array_equal(next(iter(f3)), next(iter(simulate_frames(3, H, W, seed=7)[0])))


def test_truth_is_spaced_inside_and_coloured_by_the_mosaic():
    _, truth = simulate_frames(2, 320, 480, seed=3)
    assert [t.kind for t in truth].count("hot") == 6          # 3 strong + 3 weak
    assert sum(t.weak for t in truth) == 3
    assert {t.kind for t in truth} == {"hot", "stuck", "dead"}
    for t in truth:
        assert 4 <= t.x < 480 - 4 and 4 <= t.y < 320 - 4
        assert t.colour == cfa_colour(t.x, t.y)
        if t.weak or t.kind == "dead":
            assert t.colour == "G"          # weak defects sit where JPEG keeps them
    for i, a in enumerate(truth):
        for b in truth[i + 1:]:
            assert max(abs(a.x - b.x), abs(a.y - b.y)) >= 6
    # away from the date stamp (lower right) and the blown sky (top)
    for t in truth:
        assert not (t.x > 480 - 120 and t.y > 320 - 50)


def test_cfa_colour_is_rggb():
    assert [cfa_colour(0, 0), cfa_colour(1, 0), cfa_colour(0, 1), cfa_colour(1, 1)] == \
        ["R", "G", "G", "B"]


def test_photo_frames_stamp_sky_and_border():
    frames, _ = simulate_frames(12, H, W, seed=1, defects=NONE)
    st = _stack(frames)
    assert st.shape == (12, H, W, 3)
    still = np.all(st == st[0], axis=0).all(axis=2)      # identical in every frame
    ys, xs = np.nonzero(still)
    assert ys.size > 50, "the date stamp is the same in every frame"
    assert ys.min() > H // 2 and xs.min() > W // 2, "and it is in the lower right"
    clipped = (st[:, : H // 6] == 255).all(axis=3).mean(axis=0)
    assert clipped.max() > 0.4, "a sky that is blown out in many frames"
    assert np.median(st[:, :, :2]) <= 2 and np.median(st[:, :, -2:]) <= 2, "a black border"
    assert st[:, H // 2, W // 2].std(axis=0).min() > 5, "the scene varies from frame to frame"

    frames, _ = simulate_frames(6, H, W, seed=1, defects=NONE, stamp=False, clipped=False)
    st = _stack(frames)
    assert not np.all(st == st[0], axis=0).all(axis=2)[H // 2:, W // 2:].any()


def test_defects_are_planted_in_sensor_space_before_demosaicing():
    planted = [Planted(60, 40, "hot", "R", level=120.0),     # (60, 40): even/even -> R
               Planted(121, 81, "stuck", "B", level=230.0),
               Planted(91, 100, "dead", "G")]
    frames, truth = simulate_frames(20, H, W, seed=2, defects=planted, stamp=False)
    assert [t.colour for t in truth] == ["R", "B", "G"]
    st = _stack(frames)
    mean, std = st.mean(axis=0), st.std(axis=0)
    # hot red photosite: the red channel is raised at the site and, through
    # bilinear demosaicing, by about half at its horizontal neighbours
    red = mean[35:46, 55:66, 0]
    assert red[5, 5] - np.median(red) > 80
    assert 25 < red[5, 4] - np.median(red) < red[5, 5] - np.median(red)
    assert abs(mean[40, 60, 1] - np.median(mean[35:46, 55:66, 1])) < 10   # green untouched
    # stuck blue photosite: constant in its own channel
    assert std[81, 121, 2] < 1.0 and abs(mean[81, 121, 2] - 230) < 1.0
    # dead green photosite reads black
    assert mean[100, 91, 1] < 2.0


def test_bayer_off_hits_one_subpixel():
    frames, _ = simulate_frames(8, H, W, seed=2, bayer=False, stamp=False,
                                defects=[Planted(60, 40, "hot", "R", level=120.0)])
    mean = _stack(frames).mean(axis=0)
    around = np.median(mean[35:46, 55:66, 0])
    assert mean[40, 60, 0] - around > 80
    assert abs(mean[40, 61, 0] - around) < 15                 # no smear


def test_sixteen_bit_photos():
    f8, _ = simulate_frames(2, H, W, seed=4)
    f16, _ = simulate_frames(2, H, W, seed=4, bit_depth=16)
    a8, a16 = next(f8), next(f16)
    assert a16.dtype == np.uint16 and a16.shape == a8.shape
    assert np.abs(a16.astype(np.int64) - a8.astype(np.int64) * 257).max() <= 257


def test_dark_frames():
    frames, truth = simulate_frames(20, H, W, seed=5, darks=True)
    st = _stack(frames)
    assert st.shape == (20, H, W)
    kinds = sorted({(t.kind, t.weak) for t in truth})
    assert kinds == [("hot", False), ("hot", True), ("noisy", False)]
    mean, std = st.mean(axis=0), st.std(axis=0)
    assert abs(np.median(mean) - DARK_BIAS) < 3
    assert abs(np.median(std) - DARK_READ_NOISE) < 0.6
    for t in truth:
        if t.kind == "hot":
            lo, hi = (5, 10) if t.weak else (40, 300)
            assert lo * DARK_READ_NOISE <= t.level <= hi * DARK_READ_NOISE
            assert mean[t.y, t.x] - np.median(mean) > 0.6 * t.level
        else:
            assert std[t.y, t.x] > 4 * DARK_READ_NOISE
            assert abs(mean[t.y, t.x] - np.median(mean)) < 0.8 * t.level


def test_bad_arguments():
    with pytest.raises(HotPixelError):
        simulate_frames(0, H, W)
    with pytest.raises(HotPixelError):
        simulate_frames(2, 16, W)
    with pytest.raises(HotPixelError):
        simulate_frames(2, H, W, bit_depth=12)
    with pytest.raises(HotPixelError):
        simulate_frames(2, H, W, defects={"warm": 2})
    with pytest.raises(HotPixelError):
        simulate_frames(2, H, W, defects=[Planted(1000, 5, "hot", "R")])
    with pytest.raises(HotPixelError):
        simulate_frames(2, 64, 64, defects={"hot": 40})          # no room at 16 px spacing


@pytest.mark.parametrize("subsampling,expected", [("4:4:4", 0), ("4:2:2", 1), ("4:2:0", 2)])
def test_write_jpeg_set(tmp_path, subsampling, expected):
    s = write_sample_set(tmp_path, n=3, width=W, height=H, subsampling=subsampling, seed=1)
    assert s.kind == "photos" and s.shape == (H, W, 3) and s.fmt == "jpeg"
    assert len(s.paths) == 3 and all(os.path.exists(p) for p in s.paths)
    with Image.open(s.paths[0]) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (W, H)
        assert JpegImagePlugin.get_sampling(im) == expected


def test_jpeg_smears_one_photosite_into_every_channel(tmp_path):
    s = write_sample_set(tmp_path, n=16, width=W, height=H, seed=6, n_hot=1, n_weak_hot=0,
                         n_stuck=0, n_dead=0, stamp=False)
    t = s.truth[0]
    mean = np.mean([_load(p).astype(np.float64) for p in s.paths], axis=0)
    patch = mean[t.y - 4:t.y + 5, t.x - 4:t.x + 5]
    excess = patch[4, 4] - np.median(patch.reshape(-1, 3), axis=0)
    assert (excess > 3).all(), "every channel is raised at the site"


def test_write_png_and_dark_sets(tmp_path):
    s = write_sample_set(tmp_path / "png", n=2, width=W, height=H, fmt="png")
    a = _load(s.paths[0])
    assert a.dtype == np.uint8 and a.shape == (H, W, 3)
    d = write_sample_set(tmp_path / "tif", n=3, width=W, height=H, fmt="tiff16", darks=True)
    assert d.kind == "darks" and d.shape == (H, W, 1)
    a = _load(d.paths[0])
    assert a.dtype == np.uint16 and a.shape == (H, W)
    assert abs(np.median(a) - DARK_BIAS) < 5
    d = write_sample_set(tmp_path / "dpng", n=2, width=W, height=H, fmt="png", darks=True,
                         n_noisy=0, n_hot=1, n_weak_hot=0)
    assert _load(d.paths[0]).dtype == np.uint16
    assert [t.kind for t in d.truth] == ["hot"]


def test_write_rejects_formats_that_cannot_hold_the_frames(tmp_path):
    with pytest.raises(HotPixelError):
        write_sample_set(tmp_path, n=1, darks=True, fmt="jpeg")
    with pytest.raises(HotPixelError):
        write_sample_set(tmp_path, n=1, fmt="tiff16")
    with pytest.raises(HotPixelError):
        write_sample_set(tmp_path, n=1, fmt="gif")
    with pytest.raises(HotPixelError):
        write_sample_set(tmp_path, n=1, subsampling="4:1:1")


def test_make_photo_like():
    a = make_photo_like(300, 500, 3)
    assert a.shape == (300, 500, 3) and a.dtype == np.uint8
    assert np.array_equal(a, make_photo_like(300, 500, 3))
    assert not np.array_equal(a, make_photo_like(300, 500, 4))
    assert 10 < a.std() and 20 < a.mean() < 235
    # fine grain: neighbouring pixels differ (a flat frame would encode unrealistically fast)
    assert np.abs(np.diff(a.astype(np.int16), axis=1)).mean() > 1.5
    assert make_photo_like(7, 5, 0).shape == (7, 5, 3)


def _script():
    path = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "make_sample_set.py")
    spec = importlib.util.spec_from_file_location("make_sample_set", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_sample_set_script(tmp_path, capsys):
    mod = _script()
    assert mod.main([str(tmp_path / "a"), "-n", "2", "--width", "160", "--height", "96",
                     "--format", "png", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count(".png") == 2 and "planted defects" in out
    truth = tmp_path / "t.json"
    assert mod.main([str(tmp_path / "b"), "-n", "2", "--width", "160", "--height", "96",
                     "--darks", "--truth", str(truth)]) == 0
    data = json.loads(truth.read_text())
    assert data["kind"] == "darks" and data["shape"] == [96, 160, 1]
    assert {p["kind"] for p in data["planted"]} == {"hot", "noisy"}
    assert len(os.listdir(tmp_path / "b")) == 2
    with pytest.raises(SystemExit) as exc:
        mod.main([str(tmp_path / "c"), "--darks", "--format", "jpeg"])
    assert exc.value.code == 2
