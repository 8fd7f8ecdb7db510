"""Raw input: DNG round trip through rawpy, skip reasons, life without rawpy."""
import sys

import numpy as np
import pytest

from hotpixel_shm import rawio
from hotpixel_shm.dng import BAYER_PATTERNS, XTRANS_PATTERN, cfa_array, write_dng, write_raw_set
from hotpixel_shm.errors import SkipFile

needs_rawpy = pytest.mark.skipif(not rawio.have_rawpy(), reason="rawpy (the raw extra) not installed")


@pytest.fixture
def mosaic():
    rng = np.random.default_rng(7)
    return rng.integers(0, 4096, (36, 52)).astype(np.uint16)


def _libraw_colours_to_rgb(cfa):
    """LibRaw numbers the second Bayer green 3; ``cfa_array`` uses 1 for every green."""
    return np.where(cfa == 3, 1, cfa)


@needs_rawpy
@pytest.mark.parametrize("pattern", list(BAYER_PATTERNS) + [XTRANS_PATTERN])
def test_dng_round_trip_pixels_cfa_and_header(tmp_path, mosaic, pattern):
    path = tmp_path / "frame.dng"
    write_dng(path, mosaic, pattern=pattern, black=64, white=4095, make="Acme", model="Sensor 9")

    info = rawio.probe_raw(path)
    assert info.shape == (36, 52, 1)
    assert info.dtype == "uint16"
    assert (info.make, info.model) == ("Acme", "Sensor 9")
    assert info.white_level == 4095
    assert info.black_level[:3] == [64, 64, 64]
    assert np.array_equal(_libraw_colours_to_rgb(info.cfa), cfa_array(pattern, 36, 52))
    assert info.pattern.shape == ((2, 2) if len(pattern) == 4 else (6, 6))

    pixels = rawio.read_raw(path)
    assert pixels.shape == (36, 52, 1) and pixels.dtype == np.uint16
    assert np.array_equal(pixels[:, :, 0], mosaic)

    # rawpy itself agrees (the file is not only readable by our own reader)
    import rawpy
    with rawpy.imread(str(path)) as raw:
        assert np.array_equal(raw.raw_image_visible, mosaic)


@needs_rawpy
def test_colour_name_follows_the_pattern(tmp_path, mosaic):
    path = tmp_path / "bggr.dng"
    write_dng(path, mosaic, pattern="BGGR")
    info = rawio.probe_raw(path)
    assert rawio.colour_name(info, 0, 0) == "B"
    assert rawio.colour_name(info, 1, 0) == "G"
    assert rawio.colour_name(info, 0, 1) == "G"
    assert rawio.colour_name(info, 1, 1) == "R"
    assert rawio.colour_name(info, 51, 35) == "R"   # odd column, odd row


@needs_rawpy
def test_read_raw_fills_a_preallocated_array(tmp_path, mosaic):
    path = tmp_path / "a.dng"
    write_dng(path, mosaic)
    out = np.zeros((36, 52, 1), dtype=np.uint16)
    got = rawio.read_raw(path, out=out)
    assert got is out
    assert np.array_equal(out[:, :, 0], mosaic)


@needs_rawpy
def test_read_raw_size_mismatch_is_a_skip(tmp_path, mosaic):
    path = tmp_path / "a.dng"
    write_dng(path, mosaic)
    with pytest.raises(SkipFile, match="52x36 differs"):
        rawio.read_raw(path, out=np.zeros((40, 52, 1), dtype=np.uint16))


@needs_rawpy
def test_text_file_named_nef_is_skipped_with_a_reason(tmp_path):
    path = tmp_path / "notes.nef"
    path.write_text("shopping list: eggs, milk\n" * 20)
    for fn in (rawio.probe_raw, rawio.read_raw):
        with pytest.raises(SkipFile, match="not a raw file") as err:
            fn(path)
        assert "Traceback" not in str(err.value)


@needs_rawpy
def test_truncated_dng_is_skipped_when_read(tmp_path, mosaic):
    good = tmp_path / "good.dng"
    write_dng(good, mosaic)
    data = good.read_bytes()
    cut = tmp_path / "cut.dng"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SkipFile, match="truncated or corrupt"):
        rawio.read_raw(cut)


@needs_rawpy
@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"II*\x00" + bytes(range(256)) * 8, "not a raw file"),
])
def test_corrupt_dng_is_skipped(tmp_path, content, reason):
    path = tmp_path / "bad.dng"
    path.write_bytes(content)
    with pytest.raises(SkipFile, match=reason):
        rawio.probe_raw(path)


@needs_rawpy
def test_missing_file_is_skipped(tmp_path):
    with pytest.raises(SkipFile, match="no such file"):
        rawio.read_raw(tmp_path / "nope.dng")


def test_without_rawpy_raw_files_are_skipped_with_the_install_hint(tmp_path, mosaic, monkeypatch):
    path = tmp_path / "a.dng"
    write_dng(path, mosaic)
    monkeypatch.setitem(sys.modules, "rawpy", None)   # makes `import rawpy` fail
    assert rawio.have_rawpy() is False
    assert rawio.is_raw_path(path)                     # still recognised by extension
    for fn in (rawio.probe_raw, rawio.read_raw):
        with pytest.raises(SkipFile) as err:
            fn(path)
        assert str(err.value) == "raw file support needs rawpy: pip install 'hotpixel_shm[raw]'"


@needs_rawpy
def test_have_rawpy_and_extensions():
    assert rawio.have_rawpy() is True
    assert rawio.is_raw_path("IMG_0001.CR2")
    assert rawio.is_raw_path("a/b/DSC01.arw")
    assert not rawio.is_raw_path("photo.jpg")
    assert not rawio.is_raw_path("dng")
    assert all(ext == ext.lower() and ext.startswith(".") for ext in rawio.RAW_EXTENSIONS)


def test_header_make_model_big_endian_tiff(tmp_path):
    # A big-endian TIFF header with Make/Model, as Nikon and Pentax write them:
    # rawpy does not expose make/model, so the header parser is ours to test.
    import struct
    make, model = b"NIKON CORPORATION\0", b"NIKON D750\0"
    entries = [(271, 2, len(make), 8 + 2 + 2 * 12 + 4), (272, 2, len(model), 8 + 2 + 2 * 12 + 4 + len(make))]
    buf = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 2)
    for tag, typ, n, off in entries:
        buf += struct.pack(">HHII", tag, typ, n, off)
    buf += struct.pack(">I", 0) + make + model
    path = tmp_path / "fake.nef"
    path.write_bytes(buf)
    assert rawio._header_make_model(str(path)) == ("NIKON CORPORATION", "NIKON D750")


@needs_rawpy
def test_raw_set_files_carry_the_planted_defects(tmp_path):
    paths, truth = write_raw_set(tmp_path, n=3, width=64, height=48, n_hot=2, n_weak_hot=1,
                                 n_stuck=2, n_dead=1, n_noisy=1, seed=3)
    assert len(paths) == 3 and len(truth) == 7
    stack = np.stack([rawio.read_raw(p)[:, :, 0] for p in paths])
    info = rawio.probe_raw(paths[0])
    for t in truth:
        assert rawio.colour_name(info, t["x"], t["y"]) == t["colour"]
        values = stack[:, t["y"], t["x"]]
        if t["label"] == "stuck_white":
            assert (values == 4095).all()
        elif t["kind"] == "dead":
            assert (values == 64).all()
    # the same seed writes the same files
    paths2, truth2 = write_raw_set(tmp_path / "again", n=3, width=64, height=48, n_hot=2,
                                   n_weak_hot=1, n_stuck=2, n_dead=1, n_noisy=1, seed=3)
    assert truth2 == truth
    assert np.array_equal(rawio.read_raw(paths2[2]), rawio.read_raw(paths[2]))


def _postprocess_with_bad_pixel_file(path, bad_pixel_file):
    """LibRaw's own dcraw -P correction, as rawpy exposes it."""
    import rawpy
    kw = dict(output_bps=16, no_auto_bright=True, gamma=(1, 1), user_flip=0, user_wb=[1, 1, 1, 1])
    with rawpy.imread(str(path)) as raw:
        try:
            return raw.postprocess(bad_pixels_path=bad_pixel_file and str(bad_pixel_file), **kw)
        except TypeError:
            pass
    # rawpy 0.28 takes the path as str but hands LibRaw bytes (a TypeError above)
    params = rawpy.Params(**kw)
    params.bad_pixels = str(bad_pixel_file).encode()
    with rawpy.imread(str(path)) as raw:
        return raw.postprocess(params)


@needs_rawpy
def test_coordinates_are_the_frame_of_dcraw_bad_pixel_files(tmp_path):
    # A sensor with masked margins (DNG ActiveArea): LibRaw's visible area
    # starts 4 rows down and 6 columns in. One hot photosite at visible
    # (x=30, y=20), i.e. (36, 24) in the full raw frame.
    full = np.full((60, 80), 800, dtype=np.uint16)
    full[24, 36] = 4000
    path = tmp_path / "margins.dng"
    write_dng(path, full, black=64, margins=(4, 6, 2, 2))

    info = rawio.probe_raw(path)
    assert info.shape == (54, 72, 1)
    pixels = rawio.read_raw(path)[:, :, 0]
    assert [tuple(p) for p in np.argwhere(pixels == 4000)] == [(20, 30)]     # (y, x)

    # LibRaw's dcraw -P correction fixes the site when given (x, y) of read_raw's
    # frame ("col row time"), and not when given full-raw coordinates.
    before = _postprocess_with_bad_pixel_file(path, None)
    spot = (slice(18, 23), slice(28, 33))
    assert before[spot].max() > 2 * np.median(before)
    visible = tmp_path / "visible.badpixels"
    visible.write_text("30 20 0\n")
    fixed = _postprocess_with_bad_pixel_file(path, visible)
    assert fixed[spot].max() <= 1.01 * np.median(fixed)
    full_frame = tmp_path / "full.badpixels"
    full_frame.write_text("36 24 0\n")
    not_fixed = _postprocess_with_bad_pixel_file(path, full_frame)
    assert not_fixed[spot].max() > 2 * np.median(not_fixed)
