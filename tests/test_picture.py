"""The overview picture: opened with Pillow, marks at the expected (reduced)
positions, crops of the worst defects, tiny/16-bit/grey/no-defect frames."""
import re
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from hotpixel_shm.errors import HotPixelError
from hotpixel_shm.model import Defect
from hotpixel_shm.picture import KIND_COLOURS, MAX_NUMBERED, write_picture


def _open(path):
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        assert im.mode == "RGB"
        text = dict(im.text)
        return np.asarray(im), text


def _overview(text):
    fields = dict(item.split("=") for item in text["hotpixel_shm.overview"].split())
    return {k: int(v) for k, v in fields.items()}


def _crops(text):
    """{rank: (x, y, left, top, zoom)} from the PNG's crop geometry."""
    out = {}
    for item in text["hotpixel_shm.crops"].split():
        m = re.fullmatch(r"(\d+):(\d+),(\d+)@(\d+),(\d+),(\d+)", item)
        assert m, item
        n, *rest = (int(v) for v in m.groups())
        out[n] = tuple(rest)
    return out


def _grey_frame(height, width, level=100.0, seed=0, noise=3.0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(level, noise, (height, width, 3)), 0, 255)


def _count_colour(pixels, colour):
    return int(np.all(pixels == np.array(colour, np.uint8), axis=-1).sum())


def test_tiny_frame_is_enlarged_and_every_defect_marked(tmp_path):
    mean = _grey_frame(24, 32)
    defects = [
        Defect(3, 4, [0], "hot", 250, 2, 100, 40.0),
        Defect(20, 10, [0, 1, 2], "dead", 0, 0, 100, 30.0),
        Defect(31, 23, [1], "stuck", 200, 0.1, 100, 25.0),   # corner pixel
        Defect(10, 18, [2], "noisy", 110, 60, 100, 50.0),    # the worst
    ]
    mean[4, 3, 0], mean[10, 20], mean[23, 31, 1] = 250, 0, 200
    path = tmp_path / "pic.png"
    write_picture(path, mean, defects)
    pixels, text = _open(path)
    ov = _overview(text)
    assert (ov["reduce"], ov["enlarge"]) == (1, 25)
    assert (ov["width"], ov["height"]) == (32 * 25, 24 * 25)
    height, width = pixels.shape[:2]
    assert width >= ov["left"] + ov["width"] and height >= ov["top"] + ov["height"]
    for d in defects:
        colour = np.array(KIND_COLOURS[d.kind], np.uint8)
        left, top = ov["left"] + d.x * 25, ov["top"] + d.y * 25
        # The defect's own (enlarged) pixel is painted in its kind's colour...
        assert (pixels[top + 10:top + 15, left + 10:left + 15] == colour).all()
        # ...and a marker of that colour surrounds it.
        around = pixels[top - 20:top + 45, left - 20:left + 45].copy()
        around[20:45, 20:45] = 0
        assert _count_colour(around, colour) > 40, d.kind
    # Ranked by score: the noisy defect (50) is number 1.
    crops = _crops(text)
    assert [crops[n][:2] for n in sorted(crops)] == [(10, 18), (3, 4), (20, 10), (31, 23)]
    assert text["Title"].endswith("4 defect(s) found")


def test_crop_shows_the_mean_image_centred_on_the_defect(tmp_path):
    mean = _grey_frame(60, 80)
    mean[30, 40] = 255.0   # a white hot pixel on grey
    mean[30, 41] = 0.0     # and a black neighbour to its right
    path = tmp_path / "pic.png"
    write_picture(path, mean, [Defect(40, 30, [0, 1, 2], "hot", 255, 0, 100, 9.0)], crop_radius=5)
    pixels, text = _open(path)
    x, y, left, top, zoom = _crops(text)[1]
    assert (x, y) == (40, 30)
    side = 11 * zoom
    tile = pixels[top:top + side, left:left + side].astype(int)
    centre = tile[5 * zoom + zoom // 2, 5 * zoom + zoom // 2]
    right = tile[5 * zoom + zoom // 2, 6 * zoom + zoom // 2]
    background = tile[zoom // 2, zoom // 2]
    assert (centre == 255).all()          # enlarged pixel of the mean, not painted over
    assert (right == 0).all()
    assert 60 < background.mean() < 200   # grey stays grey
    # The centre pixel is outlined in the kind's colour, just outside it.
    ring = tile[5 * zoom - 2, 5 * zoom:6 * zoom]
    assert (ring == np.array(KIND_COLOURS["hot"])).all()


def test_reduction_max_pools_single_pixels(tmp_path):
    height, width = 1000, 1501            # not multiples of the factor
    mean = _grey_frame(height, width, level=120.0, noise=1.0)
    defects = [
        Defect(0, 0, [0], "hot", 255, 0, 120, 5.0),
        Defect(1500, 999, [0], "dead", 0, 0, 120, 6.0),      # last column and row
        Defect(700, 400, [1], "stuck", 255, 0, 120, 7.0),
        Defect(701, 401, [1], "noisy", 200, 50, 120, 8.0),   # same reduced pixel, worse score
        Defect(40, 900, [2], "noisy", 180, 40, 120, 4.0),
    ]
    for d in defects:
        mean[d.y, d.x] = d.mean
    path = tmp_path / "pic.png"
    write_picture(path, mean, defects, max_side=500, crops=2)
    pixels, text = _open(path)
    ov = _overview(text)
    assert (ov["reduce"], ov["enlarge"]) == (4, 1)
    assert (ov["width"], ov["height"]) == (376, 250)
    for d in defects:
        px = pixels[ov["top"] + d.y // 4, ov["left"] + d.x // 4]
        expected = "noisy" if (d.x, d.y) in ((700, 400), (701, 401)) else d.kind
        assert tuple(px) == KIND_COLOURS[expected], (d, tuple(px))
    # Away from defects the overview is the grey frame (shown as grey, not
    # as amplified colour noise), and holds no mark colour.
    patch = pixels[ov["top"] + 100:ov["top"] + 120, ov["left"] + 200:ov["left"] + 220]
    assert np.ptp(patch.astype(int), axis=-1).mean() < 12
    assert not any(_count_colour(patch, c) for c in KIND_COLOURS.values())
    assert len(_crops(text)) == 2


def test_no_defects(tmp_path):
    mean = _grey_frame(24, 32)
    path = tmp_path / "pic.png"
    write_picture(path, mean, [])
    pixels, text = _open(path)
    ov = _overview(text)
    frame = pixels[ov["top"]:ov["top"] + ov["height"], ov["left"]:ov["left"] + ov["width"]]
    for colour in KIND_COLOURS.values():
        assert _count_colour(frame, colour) == 0
    assert text["hotpixel_shm.crops"] == ""
    assert text["Title"].endswith("no defects found")
    # The area below the frame holds the message (green text), nothing else.
    below = pixels[ov["top"] + ov["height"]:]
    assert (below[..., 1].astype(int) - below[..., 0] > 60).any()


def _grey_levels(path):
    pixels, text = _open(path)
    ov = _overview(text)
    frame = pixels[ov["top"]:ov["top"] + ov["height"], ov["left"]:ov["left"] + ov["width"]].astype(int)
    grey = frame[np.ptp(frame, axis=-1) == 0][:, 0]  # unmarked pixels of a one-channel mean are grey
    assert grey.size > 0.9 * frame.shape[0] * frame.shape[1]
    return grey


def test_sixteen_bit_frame_is_stretched(tmp_path):
    # 16-bit data using a small part of the range: shown with full contrast,
    # not squeezed into the bottom 20 levels that 0..65535 would give.
    rng = np.random.default_rng(3)
    mean = np.linspace(1000, 5000, 120)[None, :, None] + rng.normal(0, 20, (90, 120, 1))
    mean[50, 60, 0] = 60000.0
    path = tmp_path / "pic.png"
    write_picture(path, mean, [Defect(60, 50, [0], "hot", 60000, 5, 3000, 80.0)])
    grey = _grey_levels(path)
    # 0..65535 would show this as 16 grey levels; the stretch gives it >120.
    assert np.percentile(grey, 99) - np.percentile(grey, 1) > 120


def test_flat_dark_frame_is_mid_grey_not_noise(tmp_path):
    rng = np.random.default_rng(4)
    mean = rng.normal(2048, 40, (90, 120, 1))      # 16-bit dark frame: bias level and noise
    mean[50, 60, 0] = 65535.0
    path = tmp_path / "pic.png"
    write_picture(path, mean, [Defect(60, 50, [0], "hot", 65535, 5, 2048, 80.0)])
    grey = _grey_levels(path)
    assert 90 < np.median(grey) < 170
    assert np.percentile(grey, 99) - np.percentile(grey, 1) < 60


def test_two_dimensional_mean_and_custom_title(tmp_path):
    mean = _grey_frame(20, 30)[:, :, 0]
    path = tmp_path / "pic.png"
    write_picture(path, mean, [Defect(2, 3, [0], "dead", 0, 0, 100, 3.0)], title="Camera X, 120 photos")
    _, text = _open(path)
    assert text["Title"] == "Camera X, 120 photos"


def test_many_defects_number_only_the_worst(tmp_path):
    rng = np.random.default_rng(5)
    mean = _grey_frame(200, 300)
    xs = rng.choice(300, MAX_NUMBERED + 20, replace=False)
    defects = [Defect(int(x), int(i % 200), [0], "hot", 250, 1, 100, float(i)) for i, x in enumerate(xs)]
    path = tmp_path / "pic.png"
    write_picture(path, mean, defects, crops=3)
    pixels, text = _open(path)
    ov = _overview(text)
    crops = _crops(text)
    assert [crops[n][:2] for n in (1, 2, 3)] == [(d.x, d.y) for d in defects[::-1][:3]]
    e = ov["enlarge"]
    for d in defects:  # all painted, numbered or not, none hidden by a neighbour's marker
        centre = pixels[ov["top"] + d.y * e + e // 2, ov["left"] + d.x * e + e // 2]
        assert tuple(centre) == KIND_COLOURS["hot"]


@pytest.mark.parametrize("mean, defects, match", [
    (np.zeros((10, 10, 2)), [], "shape"),
    (np.zeros((10, 10, 3)), [Defect(10, 0, [0], "hot", 1, 1, 1, 1)], "outside"),
    (np.zeros((10, 10, 3)), [Defect(1, 1, [0], "warm", 1, 1, 1, 1)], "kind"),
])
def test_bad_input_refused_and_nothing_written(tmp_path, mean, defects, match):
    with pytest.raises(HotPixelError, match=match):
        write_picture(tmp_path / "pic.png", mean, defects)
    assert list(tmp_path.iterdir()) == []


def test_write_failure_keeps_previous_picture(tmp_path):
    target = tmp_path / "pic.png"
    target.mkdir()  # a directory where the picture should go: the final rename fails
    with pytest.raises(HotPixelError, match="could not write"):
        write_picture(target, _grey_frame(8, 8), [])
    assert target.is_dir() and list(tmp_path.iterdir()) == [target]


def test_large_float64_frame_without_full_size_copies(tmp_path):
    # 1500 x 2400 x 3 float64 = 86 MB; a float32 copy alone would be 43 MB.
    mean = np.full((1500, 2400, 3), 90.0)
    mean[700, 1200] = 255.0
    tracemalloc.start()
    try:
        write_picture(tmp_path / "pic.png", mean, [Defect(1200, 700, [0], "hot", 255, 0, 90, 9.0)],
                      max_side=800)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < mean.nbytes / 4, f"peak {peak / 1e6:.1f} MB"
    pixels, text = _open(tmp_path / "pic.png")
    ov = _overview(text)
    assert (ov["reduce"], ov["width"], ov["height"]) == (3, 800, 500)
    assert tuple(pixels[ov["top"] + 700 // 3, ov["left"] + 1200 // 3]) == KIND_COLOURS["hot"]


def test_bad_columns_and_rows_are_drawn(tmp_path):
    from hotpixel_shm.lines import LineDefect
    from hotpixel_shm.picture import LINE_COLOUR

    mean = _grey_frame(24, 32)
    lines = [LineDefect("column", 7, 2, 12, [1], 5.0, 20.0), {"kind": "row", "y": 15, "from": 10,
                                                             "to": 30, "offset": -4.0}]
    path = tmp_path / "pic.png"
    write_picture(path, mean, [Defect(20, 5, [0], "hot", 250, 2, 100, 40.0)], lines=lines)
    pixels, text = _open(path)
    ov = _overview(text)
    k, left, top = ov["enlarge"], ov["left"], ov["top"]
    colour = np.array(LINE_COLOUR, np.uint8)
    x = left + 7 * k + k // 2
    column = np.all(pixels[:, x] == colour, axis=-1)
    # over rows 2..12 of the frame, not beyond, and a tick above the frame
    assert column[top + 2 * k:top + 13 * k].all()
    assert not column[top + 13 * k + 1:top + 24 * k].any() and not column[top:top + 2 * k - 1].any()
    assert column[top - 6:top - 3].all()
    y = top + 15 * k + k // 2
    row = np.all(pixels[y] == colour, axis=-1)
    assert row[left + 10 * k:left + 31 * k].all() and not row[left:left + 10 * k - 1].any()
    assert not row[left + 31 * k + 1:left + 32 * k].any()
    assert row[left - 6:left - 3].all()
    assert text["hotpixel_shm.lines"] == "column:7:2-12 row:15:10-30"
    assert text["Title"].endswith("1 defect(s) and 2 bad column(s)/row(s) found")
    with pytest.raises(HotPixelError, match="outside"):
        write_picture(tmp_path / "p2.png", mean, [], lines=[LineDefect("column", 32, 0, 3)])
