import io
import os

import numpy as np
import pytest
from PIL import Image

from hotpixel_shm import inputs
from hotpixel_shm.errors import SkipFile

from conftest import make_frames, write_images


def _rgb(h=16, w=20, seed=0):
    return make_frames(1, (h, w, 3), seed=seed)[0]


def test_expand_files_dirs_globs_sorted_unique(tmp_path):
    paths, _ = write_images(tmp_path, make_frames(3, (8, 8, 3)), prefix="b")
    sub = tmp_path / "sub"
    sub.mkdir()
    deep, _ = write_images(sub, make_frames(2, (8, 8, 3)), prefix="a")
    (tmp_path / "notes.txt").write_text("x")
    files, skipped = inputs.expand_paths([str(tmp_path), paths[0], str(tmp_path / "*.png")])
    assert files == sorted(paths) and not skipped
    files, _ = inputs.expand_paths([str(tmp_path)], recursive=True)
    assert sorted(files) == sorted(paths + deep)
    files, skipped = inputs.expand_paths([str(tmp_path / "nothing*.jpg"), str(tmp_path / "nope.jpg")])
    assert files == []
    assert [r for _, r in skipped] == ["no file matches this pattern", "no such file or directory"]


def test_symlink_loop_is_reported_not_followed(tmp_path):
    write_images(tmp_path, make_frames(1, (8, 8, 3)))
    os.symlink(str(tmp_path), str(tmp_path / "loop"))
    files, skipped = inputs.expand_paths([str(tmp_path)], recursive=True)
    assert len(files) == 1
    assert any("loop" in r for _, r in skipped)


@pytest.mark.parametrize("mode,shape,dtype", [
    ("RGB", (16, 20, 3), "uint8"), ("RGBA", (16, 20, 3), "uint8"),
    ("L", (16, 20, 1), "uint8"), ("I;16", (16, 20, 1), "uint16"),
])
def test_probe_and_decode_modes(tmp_path, mode, shape, dtype):
    rng = np.random.default_rng(3)
    if mode == "I;16":
        arr = rng.integers(0, 65536, (16, 20), dtype=np.uint16)
        im = Image.fromarray(arr)
    else:
        bands = len(mode)
        arr = rng.integers(0, 256, (16, 20, bands), dtype=np.uint8)
        im = Image.fromarray(arr[..., 0] if bands == 1 else arr, mode)
    for ext in ("png", "tif"):
        p = str(tmp_path / f"x.{ext}")
        im.save(p)
        h = inputs.probe(p)
        assert h.shape == shape and h.dtype == dtype
        out = inputs.decode(p, shape, dtype)
        want = arr.reshape(16, 20, -1)[:, :, :shape[2]]
        np.testing.assert_array_equal(out, want)


def test_jpeg_fast_path_matches_pillow(tmp_path):
    for sub, q in ((0, 95), (1, 90), (2, 80)):  # 4:4:4, 4:2:2, 4:2:0
        p = str(tmp_path / f"s{sub}.jpg")
        Image.fromarray(_rgb(37, 51)).save(p, quality=q, subsampling=sub)
        fast = inputs.decode(p, (37, 51, 3), "uint8")
        with Image.open(p) as im:
            slow = np.asarray(im)
        np.testing.assert_array_equal(fast, slow)
    p = str(tmp_path / "g.jpg")
    Image.fromarray(_rgb()[..., 0], "L").save(p)
    with Image.open(p) as im:
        np.testing.assert_array_equal(inputs.decode(p, (16, 20, 1), "uint8")[..., 0], np.asarray(im))


def test_exif_orientation_is_not_applied(tmp_path):
    arr = _rgb(10, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW" for display
    exif[0x010F] = "Cam Co"
    exif[0x0110] = "Model 1"
    p = str(tmp_path / "o.jpg")
    Image.fromarray(arr).save(p, exif=exif, quality=95)
    h = inputs.probe(p)
    assert h.shape == (10, 30, 3)
    assert (h.make, h.model) == ("Cam Co", "Model 1")
    assert inputs.decode(p, (10, 30, 3), "uint8").shape == (10, 30, 3)


def _reason(path, **kw):
    with pytest.raises(SkipFile) as ei:
        h = inputs.probe(path, **kw)
        inputs.decode(path, h.shape, h.dtype, **kw)
    return str(ei.value)


def test_bad_inputs_give_reasons(tmp_path):
    good = str(tmp_path / "good.jpg")
    Image.fromarray(_rgb(64, 64)).save(good, quality=90)
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("hello, not a photo\n")
    png = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(png, "PNG")
    (tmp_path / "trunc.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    Image.new("CMYK", (8, 8)).save(str(tmp_path / "cmyk.jpg"))
    Image.new("P", (8, 8)).save(str(tmp_path / "pal.png"))
    assert "empty" in _reason(str(tmp_path / "empty.jpg"))
    assert "truncated" in _reason(str(tmp_path / "trunc.jpg")).lower()
    assert "not an image" in _reason(str(tmp_path / "text.jpg"))
    r = _reason(str(tmp_path / "trunc.png")).lower()
    assert "truncated" in r or "cannot decode" in r or "corrupt" in r
    assert "CMYK" in _reason(str(tmp_path / "cmyk.jpg"))
    assert "mode P" in _reason(str(tmp_path / "pal.png"))
    assert "no such file" in _reason(str(tmp_path / "missing.jpg"))
    assert "over 100 pixels" in _reason(good, max_pixels=100)
    assert "differs" in str(pytest.raises(SkipFile, inputs.decode, good, (32, 32, 3), "uint8").value)


def test_non_utf8_file_name_is_used(tmp_path):
    name = os.fsdecode(b"caf\xe9_photo.png")
    p = os.path.join(str(tmp_path), name)
    Image.fromarray(_rgb()).save(p)
    files, skipped = inputs.expand_paths([str(tmp_path)])
    assert files == [p] and not skipped
    assert inputs.decode(p, (16, 20, 3), "uint8").shape == (16, 20, 3)


def test_reference_shape_is_the_most_common(tmp_path):
    a, _ = write_images(tmp_path, make_frames(3, (8, 10, 3)), prefix="a")
    b, _ = write_images(tmp_path, make_frames(2, (10, 8, 3)), prefix="b")
    headers, skipped = inputs.probe_all(sorted(a + b))
    shape, dtype, used, other = inputs.reference_shape(headers)
    assert (shape, dtype) == ((8, 10, 3), "uint8")
    assert [h.path for h in used] == a
    assert sorted(p for p, _ in other) == b
    assert all("differs" in r for _, r in other)


@pytest.mark.parametrize("ext,kw", [("bmp", {}), ("webp", {"lossless": True})])
def test_other_pillow_formats(tmp_path, ext, kw):
    arr = _rgb(12, 17)
    p = str(tmp_path / f"x.{ext}")
    Image.fromarray(arr).save(p, **kw)
    h = inputs.probe(p)
    assert h.shape == (12, 17, 3) and h.dtype == "uint8"
    np.testing.assert_array_equal(inputs.decode(p, h.shape, h.dtype), arr)
