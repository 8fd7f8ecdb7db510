"""Repaired copies: raw files as DNGs, TIFF, PNG and JPEG (issue 12).

Each repaired copy changes the listed defects and nothing else (JPEG: only
the MCUs holding a defect), keeps the metadata, and the repaired set
analysed again shows none of the repaired defects. darktable-cli and
rawtherapee-cli render a repaired DNG, and the defect's neighbourhood in
their output is within the noise of its surroundings, the original's not.
"""
import json
import os

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from hotpixel_shm.cli import main
from hotpixel_shm.dng import XTRANS_PATTERN, cfa_array, write_raw_set
from hotpixel_shm.repair import repair_image, repair_mosaic

import clients


# --------------------------------------------------------------------------- numerics

def test_repair_mosaic_uses_healthy_same_colour_photosites_only():
    rng = np.random.default_rng(0)
    cfa = cfa_array("RGGB", 24, 24).astype(np.int64)
    mosaic = (1000 + 100 * cfa + rng.integers(0, 5, (24, 24))).astype(np.uint16)
    sites = [(10, 10), (12, 10), (11, 11), (3, 0), (23, 23)]   # a cluster and two at the edge
    for x, y in sites:
        mosaic[y, x] = 4000
    fixed, left = repair_mosaic(mosaic, cfa, sites)
    assert left == []
    changed = {(int(x), int(y)) for y, x in zip(*np.nonzero(fixed != mosaic))}
    assert changed == set(sites)
    for x, y in sites:
        same = mosaic[cfa == cfa[y, x]]
        healthy = same[same < 4000]
        assert healthy.min() <= fixed[y, x] <= healthy.max()


def test_repair_mosaic_xtrans_cluster():
    cfa = cfa_array(XTRANS_PATTERN, 36, 36).astype(np.int64)
    mosaic = (500 + 300 * cfa).astype(np.uint16)
    sites = [(x, y) for y in range(14, 17) for x in range(14, 17)]   # a 3x3 block, all colours
    for x, y in sites:
        mosaic[y, x] = 4095
    fixed, left = repair_mosaic(mosaic, cfa, sites)
    assert left == []
    for x, y in sites:
        assert fixed[y, x] == 500 + 300 * cfa[y, x]   # a flat field per colour comes back exact
    other = np.ones(mosaic.shape, bool)
    for x, y in sites:
        other[y, x] = False
    assert (fixed[other] == mosaic[other]).all()


def test_repair_image_footprint_only_and_channels():
    img = np.full((20, 30, 3), 100, np.uint8)
    img[5, 7] = (255, 100, 100)
    img[12:15, 20:23, 1] = 250
    defects = [{"x": 7, "y": 5, "channels": [0], "kind": "hot", "size": 1},
               {"x": 21, "y": 13, "channels": [1], "kind": "hot", "size": 9}]
    fixed, changed, left = repair_image(img, defects)
    assert left == []
    assert (fixed == 100).all()
    assert changed.sum() == 1 + 9
    assert (fixed[~changed] == img[~changed]).all()


# --------------------------------------------------------------------------- raw -> DNG

@pytest.fixture(scope="module", params=["odd-margins", "xtrans"])
def raw_repaired(request, tmp_path_factory):
    rawpy = pytest.importorskip("rawpy")
    root = tmp_path_factory.mktemp("rawrepair")
    pattern = "GRBG" if request.param == "odd-margins" else XTRANS_PATTERN
    paths, truth = write_raw_set(root / "photos", n=8, width=256, height=208, seed=11,
                                 pattern=pattern, margins=(7, 11, 3, 5), n_noisy=0)
    report = root / "report.json"
    assert main([str(root / "photos"), "-q", "--workers", "1", "--json", str(report),
                 "--repair-into", str(root / "fixed")]) == 0
    with open(report) as f:
        defects = json.load(f)["defects"]
    assert len(defects) >= 6
    return dict(root=root, paths=paths, report=report, defects=defects, rawpy=rawpy)


def test_repaired_dng_changes_only_the_listed_photosites(raw_repaired):
    rawpy = raw_repaired["rawpy"]
    listed = {(d["x"], d["y"]) for d in raw_repaired["defects"]}
    for path in raw_repaired["paths"]:
        fixed = os.path.join(raw_repaired["root"], "fixed", os.path.basename(path))
        with rawpy.imread(path) as a, rawpy.imread(fixed) as b:
            assert a.sizes == b.sizes            # same frame, margins and orientation
            assert (a.raw_colors == b.raw_colors).all()
            assert a.black_level_per_channel == b.black_level_per_channel
            assert a.white_level == b.white_level
            va, vb = a.raw_image_visible, b.raw_image_visible
            changed = {(int(x), int(y)) for y, x in zip(*np.nonzero(va != vb))}
            # every other photosite bit-identical; a listed one may by chance
            # keep its value (the median of its neighbours equals it)
            assert changed <= listed and len(changed) >= len(listed) - 1
            # the masked margins are kept too
            assert (a.raw_image[:7] == b.raw_image[:7]).all()


def test_repaired_dng_keeps_the_metadata(tmp_path):
    pytest.importorskip("rawpy")
    from hotpixel_shm.dng import write_dng
    from hotpixel_shm.tiffmeta import TAG, read_ifds
    src = tmp_path / "in" / "shot.dng"
    src.parent.mkdir()
    mosaic = (np.arange(64 * 80).reshape(64, 80) % 3000 + 100).astype(np.uint16)
    matrix = [[0.9, -0.2, -0.1], [-0.4, 1.3, 0.1], [-0.05, 0.2, 0.6]]
    write_dng(src, mosaic, pattern="BGGR", black=[60, 61, 62, 63], white=4000, make="Maker",
              model="Body 2", colour_matrix=matrix, as_shot_neutral=(0.5, 1, 0.7), orientation=6,
              datetime="2026:01:02 03:04:05", exposure_time=1 / 250, f_number=5.6, iso=800,
              margins=(2, 4, 0, 0))
    from hotpixel_shm.repairfiles import repair_photo
    repair_photo(src, tmp_path / "shot.dng", [{"x": 10, "y": 10, "kind": "hot", "channels": [0]}])
    a, b = read_ifds(src)[0], read_ifds(tmp_path / "shot.dng")[0]
    for name in ("Make", "Model", "Orientation", "DateTimeOriginal", "ExposureTime", "FNumber",
                 "ISO", "ColorMatrix1", "AsShotNeutral", "BlackLevel", "WhiteLevel",
                 "CFAPattern", "ActiveArea"):
        assert a[TAG[name]] == b[TAG[name]], name


def test_repaired_raw_set_analysed_again_shows_none(raw_repaired, tmp_path):
    report = tmp_path / "again.json"
    assert main([str(raw_repaired["root"] / "fixed"), "-q", "--workers", "1",
                 "--json", str(report)]) == 0
    with open(report) as f:
        again = {(d["x"], d["y"]) for d in json.load(f)["defects"]}
    assert not again & {(d["x"], d["y"]) for d in raw_repaired["defects"]}


# --------------------------------------------------------------------------- TIFF, PNG, JPEG

def _photo_set(tmp_path, n=6, shape=(48, 64, 3), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = (0.4 + 0.2 * np.sin(xx / 6.0 + yy / 9.0))[..., None] * hi * np.ones(shape[2])
    frames = []
    for _ in range(n):
        f = base * rng.uniform(0.7, 1.3, size=(1, 1, shape[2])) + rng.normal(0, hi / 60, shape)
        f = np.clip(np.rint(f), 0, hi).astype(dtype)
        f[10, 20] = hi                 # hot in every channel
        f[30, 41] = 0                  # dead in every channel
        frames.append(f)
    return frames


def test_png_repair_keeps_other_pixels_and_text(tmp_path):
    frames = _photo_set(tmp_path)
    src = tmp_path / "photos"
    src.mkdir()
    for i, f in enumerate(frames):
        info = PngImagePlugin.PngInfo()
        info.add_text("Author", "someone")
        Image.fromarray(f).save(src / f"p{i}.png", pnginfo=info)
    assert main([str(src), "-q", "--workers", "1", "--json", str(tmp_path / "r.json"),
                 "--repair-into", str(tmp_path / "fixed")]) == 0
    for i, f in enumerate(frames):
        with Image.open(tmp_path / "fixed" / f"p{i}.png") as im:
            assert im.text.get("Author") == "someone"
            out = np.asarray(im)
        diff = (out != f).any(axis=2)
        assert diff[10, 20] and diff[30, 41]
        ys, xs = np.nonzero(diff)
        # only the two defects' footprints moved
        assert all(abs(x - 20) <= 3 and abs(y - 10) <= 3 or abs(x - 41) <= 3 and abs(y - 30) <= 3
                   for x, y in zip(xs, ys))
        assert out[10, 20].max() < 255 and out[30, 41, 1] < 255


def test_tiff16_repair_patches_pixels_and_keeps_tags(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    frames = _photo_set(tmp_path, dtype=np.uint16, seed=3)
    src = tmp_path / "photos"
    src.mkdir()
    for i, f in enumerate(frames):
        tifffile.imwrite(src / f"t{i}.tif", f, photometric="rgb", description="scene",
                         software="camera fw 1.2", extratags=[(271, "s", 0, "Maker", True)])
    assert main([str(src), "-q", "--workers", "1", "--json", str(tmp_path / "r.json"),
                 "--repair-into", str(tmp_path / "fixed")]) == 0
    for i, f in enumerate(frames):
        path = tmp_path / "fixed" / f"t{i}.tif"
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            out = page.asarray()
            assert page.description == "scene"
            assert page.tags["Software"].value == "camera fw 1.2"
            assert page.tags["Make"].value == "Maker"
        diff = (out != f).any(axis=2)
        assert diff[10, 20] and diff[30, 41]
        assert diff.sum() <= 2 * 49
        # the file is the input byte for byte outside the repaired pixels
        a, b = _bytes(src / f"t{i}.tif"), _bytes(path)
        assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) <= diff.sum() * 6


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
def test_jpeg_repair_changes_only_defective_mcus(tmp_path, subsampling):
    jpeglib = pytest.importorskip("jpeglib")
    from hotpixel_shm.synth import write_sample_set
    sample = write_sample_set(tmp_path / "photos", n=10, subsampling=subsampling, seed=4)
    report = tmp_path / "r.json"
    assert main([str(tmp_path / "photos"), "-q", "--workers", "1", "--json", str(report),
                 "--repair-into", str(tmp_path / "fixed")]) == 0
    with open(report) as f:
        defects = json.load(f)["defects"]
    assert len(defects) >= len(sample.truth) - 2
    from hotpixel_shm.jpegblocks import decode_rgb
    means, maxes = [], []
    for path in sample.paths:
        fixed = tmp_path / "fixed" / os.path.basename(path)
        a, b = jpeglib.read_dct(path), jpeglib.read_dct(str(fixed))
        assert (a.qt == b.qt).all() and (a.samp_factor == b.samp_factor).all()
        v, h = int(a.samp_factor[:, 0].max()), int(a.samp_factor[:, 1].max())
        # blocks of MCUs without a defect: coefficients bit for bit
        mcu_hit = set()
        for d in defects:
            for yy in range(d["y"] - 4, d["y"] + 5):
                for xx in range(d["x"] - 4, d["x"] + 5):
                    mcu_hit.add((yy // (8 * v), xx // (8 * h)))
        for comp, (cv, ch) in zip(("Y", "Cb", "Cr"), a.samp_factor):
            ca, cb = getattr(a, comp), getattr(b, comp)
            differ = np.argwhere((ca != cb).any(axis=(2, 3)))
            for by, bx in differ:
                assert (by // cv, bx // ch) in mcu_hit
        # decoded pixels outside the repaired MCUs: decoder rounding only
        pa, pb = decode_rgb(path).astype(int), decode_rgb(fixed).astype(int)
        inside = np.zeros(pa.shape[:2], bool)
        for my, mx in mcu_hit:
            inside[my * 8 * v:(my + 1) * 8 * v, mx * 8 * h:(mx + 1) * 8 * h] = True
        out = np.abs(pa - pb)[~inside]
        means.append(out.mean())
        maxes.append(out.max())
        with Image.open(path) as ia, Image.open(fixed) as ib:
            assert ia.getexif() == ib.getexif()
    assert max(means) <= 1.0 and max(maxes) <= 8, (means, maxes)
    again = tmp_path / "again.json"
    assert main([str(tmp_path / "fixed"), "-q", "--workers", "1", "--json", str(again)]) == 0
    with open(again) as f:
        left = json.load(f)["defects"]
    assert not {(d["x"], d["y"]) for d in left} & {(d["x"], d["y"]) for d in defects}


# --------------------------------------------------------------------------- command line

def test_apply_repairs_with_an_earlier_report_and_refuses_other_shapes(tmp_path, capsys):
    frames = _photo_set(tmp_path)
    src = tmp_path / "photos"
    src.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(src / f"p{i}.png")
    report = tmp_path / "r.json"
    assert main([str(src), "-q", "--workers", "1", "--json", str(report)]) == 0
    assert main([str(src / "p0.png"), "--apply", str(report), "--repair-into",
                 str(tmp_path / "fixed"), "-q"]) == 0
    assert (tmp_path / "fixed" / "p0.png").exists()
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(frames[0][:40]).save(other / "small.png")
    Image.fromarray(frames[1]).save(other / "good.png")
    capsys.readouterr()
    assert main([str(other), "--apply", str(report), "--repair-into", str(tmp_path / "none"),
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert "small.png" in err and "differs from the report" in err and "nothing written" in err
    assert not (tmp_path / "none").exists()
    with pytest.raises(SystemExit):
        main([str(src), "--apply", str(report)])          # needs --repair-into


def test_apply_refuses_photos_of_another_body(tmp_path, capsys):
    frames = _photo_set(tmp_path)
    src, other = tmp_path / "photos", tmp_path / "other"
    src.mkdir()
    other.mkdir()

    def save(path, arr, model):
        exif = Image.Exif()
        exif[271], exif[272] = "Maker", model
        Image.fromarray(arr).save(path, exif=exif, quality=95)

    for i, f in enumerate(frames):
        save(src / f"p{i}.jpg", f, "Body A")
    report = tmp_path / "r.json"
    assert main([str(src), "-q", "--workers", "1", "--json", str(report)]) == 0
    with open(report) as f:
        camera = json.load(f).get("camera") or {}
    if not camera.get("model"):
        pytest.fail(f"the report names no camera body: {camera}")
    save(other / "b.jpg", frames[0], "Body B")
    capsys.readouterr()
    assert main([str(other), "--apply", str(report), "--repair-into", str(tmp_path / "none"),
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert "b.jpg" in err and "Body B" in err and "nothing written" in err
    assert not (tmp_path / "none").exists()


def test_repair_into_never_overwrites_an_input(tmp_path, capsys):
    frames = _photo_set(tmp_path)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"p{i}.png")
    before = {p: _bytes(tmp_path / p) for p in os.listdir(tmp_path)}
    assert main([str(tmp_path), "-q", "--workers", "1", "--repair-into", str(tmp_path)]) == 1
    assert "would overwrite an input photo" in capsys.readouterr().err
    assert {p: _bytes(tmp_path / p) for p in os.listdir(tmp_path)} == before


# --------------------------------------------------------------------------- real developers

def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _spot_contrast(render, x, y, inner=1, outer=7):
    """How far the (x, y) neighbourhood stands out from its surroundings: the
    largest deviation of a pixel within ``inner`` from the median of the
    ring beyond ``inner + 1``, in robust standard deviations of that ring,
    the most of any channel."""
    v = render if render.ndim == 3 else render[:, :, None]
    ya, yb, xa, xb = max(0, y - outer), y + outer + 1, max(0, x - outer), x + outer + 1
    patch = v[ya:yb, xa:xb]
    yy, xx = np.mgrid[ya:ya + patch.shape[0], xa:xa + patch.shape[1]]
    dist = np.maximum(abs(yy - y), abs(xx - x))
    ring, centre = dist > inner + 1, dist <= inner
    worst = 0.0
    for c in range(v.shape[2]):
        p = patch[:, :, c]
        med = np.median(p[ring])
        # a floor of 0.2% of the 16-bit range: flat or clipped surroundings
        mad = max(1.4826 * np.median(np.abs(p[ring] - med)), 130.0)
        worst = max(worst, float(np.abs(p[centre] - med).max() / mad))
    return worst


@pytest.fixture(scope="module", params=["odd-margins", "xtrans"])
def smooth_dng(request, tmp_path_factory):
    """A DNG of a smooth scene with photosite noise and planted defects, and
    its repaired copy (the scene has no edges, so a defect's surroundings
    show the noise alone)."""
    from hotpixel_shm.dng import write_dng
    from hotpixel_shm.repairfiles import repair_photo
    root = tmp_path_factory.mktemp("smooth")
    pattern = "GRBG" if request.param == "odd-margins" else XTRANS_PATTERN
    height, width, margins = 208, 256, (7, 11, 3, 5)
    rng = np.random.default_rng(5)
    cfa = cfa_array(pattern, height, width, origin=margins[:2])
    yy, xx = np.mgrid[0:height, 0:width]
    signal = (900 + 300 * np.sin(xx / 60.0) + 200 * np.cos(yy / 45.0)) * np.array([1.0, 1.3, 0.8])[cfa]
    mosaic = np.clip(np.rint(64 + signal + rng.normal(0, 1, signal.shape) * np.sqrt(signal / 4 + 9)),
                     0, 4095).astype(np.uint16)
    sites, kinds = [], ["hot", "hot", "hot", "stuck", "dead", "dead", "hot", "stuck"]
    for i, kind in enumerate(kinds):
        y, x = 30 + 20 * i, 40 + 22 * i
        mosaic[y, x] = {"hot": min(4095, int(mosaic[y, x]) + 1800), "stuck": 4095, "dead": 64}[kind]
        sites.append((x - margins[1], y - margins[0]))      # in LibRaw's frame (margins even?)
    src = root / "shot.dng"
    write_dng(src, mosaic, pattern=pattern, black=64, white=4095, margins=margins,
              colour_matrix=[[0.8, -0.2, -0.05], [-0.4, 1.2, 0.15], [-0.1, 0.2, 0.6]],
              as_shot_neutral=(0.5, 1.0, 0.6))
    rawpy = pytest.importorskip("rawpy")
    with rawpy.imread(str(src)) as raw:
        top, left = raw.sizes.top_margin, raw.sizes.left_margin
    listed = [{"x": x + margins[1] - left, "y": y + margins[0] - top, "kind": "hot",
               "channels": [0]} for x, y in sites]
    res = repair_photo(src, root / "fixed.dng", listed)
    assert res.repaired == len(listed)
    return dict(src=src, fixed=root / "fixed.dng", mosaic=mosaic,
                full=[(x + margins[1], y + margins[0]) for x, y in sites])


@pytest.mark.parametrize("render", ["darktable", "rawtherapee"])
def test_developers_render_the_repaired_dng_clean(smooth_dng, render, tmp_path):
    fn = {"darktable": clients.render_darktable,
          "rawtherapee": lambda dng, work, name: clients.render_rawtherapee(dng, work, name=name)}[render]
    before = fn(smooth_dng["src"], tmp_path, name="before.tif")
    after = fn(smooth_dng["fixed"], tmp_path, name="after.tif")
    assert before.shape == after.shape
    # where the render sits in the mosaic: found from the renders' difference,
    # which is nonzero only around the repaired photosites
    diff = np.abs(before - after).sum(axis=2)
    assert diff.any()
    dy, dx = max(((dy, dx) for dy in range(0, 25) for dx in range(0, 25)),
                 key=lambda o: sum(diff[fy - o[0], fx - o[1]]
                                   for fx, fy in smooth_dng["full"]
                                   if 0 <= fy - o[0] < diff.shape[0] and 0 <= fx - o[1] < diff.shape[1]))
    spots = [(fx - dx, fy - dy) for fx, fy in smooth_dng["full"]
             if 8 <= fx - dx < before.shape[1] - 8 and 8 <= fy - dy < before.shape[0] - 8]
    assert len(spots) >= 6
    # the noise: the same measure at healthy places of the repaired render
    healthy = [_spot_contrast(after, x, y) for y in range(10, after.shape[0] - 10, 9)
               for x in range(10, after.shape[1] - 10, 9)
               if min(max(abs(x - sx), abs(y - sy)) for sx, sy in spots) > 10]
    noise = float(np.percentile(healthy, 99))
    for x, y in spots:
        b, a = _spot_contrast(before, x, y), _spot_contrast(after, x, y)
        where = f"{render}: defect at ({x + dx}, {y + dy}) of the mosaic"
        assert b > 1.5 * noise, f"{where} should stand out in the original's render ({b:.1f} vs {noise:.1f})"
        assert a <= noise, f"{where} still stands out after the repair ({a:.1f} vs {noise:.1f})"
