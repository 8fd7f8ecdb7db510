"""Every kind of bad input is skipped with a one-line reason, on stderr and
in the JSON report, and the run goes on."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

from hotpixel_shm import inputs
from hotpixel_shm.cli import main

from conftest import make_frames, reference_stats, write_images


@pytest.fixture
def messy_dir(tmp_path):
    d = tmp_path / "messy"
    d.mkdir()
    paths, decoded = write_images(d, make_frames(5, (24, 30, 3), seed=3), fmt="jpg")
    good = (d / "img0000.jpg").read_bytes()
    png = tmp_path / "tmp.png"
    Image.fromarray(make_frames(1, (24, 30, 3))[0]).save(str(png))
    bad = {
        "zero.jpg": b"",
        "trunc.jpg": good[: len(good) // 2],
        "trunc.png": png.read_bytes()[: png.stat().st_size // 2],
        "text.jpg": b"this is not a photo\n",
    }
    for name, data in bad.items():
        (d / name).write_bytes(data)
    Image.new("CMYK", (30, 24)).save(str(d / "cmyk.jpg"))
    Image.new("P", (30, 24)).save(str(d / "palette.png"))
    Image.fromarray(make_frames(1, (20, 30, 3))[0]).save(str(d / "other_size.png"))
    Image.new("L", (10000, 9000)).save(str(d / "bomb.png"))  # 90 M pixels, a few KB
    sub = d / "sub"
    sub.mkdir()
    os.symlink(str(d), str(sub / "loop"))
    weird = os.path.join(str(d), os.fsdecode(b"na\xefve.jpg"))  # not UTF-8: a good photo
    shutil.copy(paths[1], weird)
    decoded.append(decoded[1])
    return d, decoded, weird


def test_every_bad_input_is_skipped_with_its_reason(messy_dir, tmp_path, capsys):
    d, decoded, weird = messy_dir
    js, st = str(tmp_path / "r.json"), str(tmp_path / "s.npz")
    missing = str(tmp_path / "missing.jpg")
    code = main(["--workers", "2", "--recursive", "--dtype", "float64", str(d), missing,
                 "--json", js, "--save-stats", st])
    err = capsys.readouterr().err
    assert code == 0
    with open(js, encoding="utf-8") as fh:
        rep = json.load(fh)
    reasons = {os.path.basename(s["path"]): s["reason"] for s in rep["images"]["skipped"]}
    assert "empty" in reasons["zero.jpg"]
    assert "truncated" in reasons["trunc.jpg"].lower()
    assert any(w in reasons["trunc.png"].lower() for w in ("truncated", "corrupt", "cannot decode"))
    assert "not an image" in reasons["text.jpg"]
    assert "CMYK" in reasons["cmyk.jpg"]
    assert "mode P" in reasons["palette.png"]
    assert "differs" in reasons["other_size.png"]
    assert "decompression bomb" in reasons["bomb.png"] and "--max-pixels" in reasons["bomb.png"]
    assert "no such file" in reasons["missing.jpg"]
    assert "loop" in reasons["loop"]
    for name in reasons:  # each on stderr as one "path: reason" line
        assert any(line.endswith(reasons[name]) and name in line for line in err.splitlines())
    assert rep["images"]["used"] == 6  # the 5 photos and the non-UTF-8 named one
    from hotpixel_shm.statsio import load_stats
    stats, _ = load_stats(st)
    assert os.fsencode(weird) in [os.fsencode(f) for f in stats.files] or \
        any("na" in f and "ve.jpg" in f for f in stats.files)
    mean, var = reference_stats(decoded)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-9)


def test_max_pixels_lets_a_big_image_through(messy_dir):
    d, _, _ = messy_dir
    with pytest.raises(Exception) as ei:
        inputs.probe(str(d / "bomb.png"))
    assert "decompression bomb" in str(ei.value)
    h = inputs.probe(str(d / "bomb.png"), max_pixels=100_000_000)
    assert h.shape == (9000, 10000, 1)


def test_ten_thousand_paths_cost_little_before_the_first_decode(tmp_path):
    src, _ = write_images(tmp_path, make_frames(1, (8, 8, 3)))
    d = tmp_path / "many"
    d.mkdir()
    for i in range(10_000):
        os.link(src[0], d / f"p{i:05d}.png")
    import psutil
    me = psutil.Process()
    before = me.memory_info().rss
    files, skipped = inputs.expand_paths([str(d)])
    headers, bad = inputs.probe_all(files)
    shape, dtype, used, other = inputs.reference_shape(headers)
    grown = me.memory_info().rss - before
    assert len(used) == 10_000 and not bad and not other
    assert grown < 40 * 2**20, f"{grown / 2**20:.1f} MiB to list and probe 10,000 files"


def test_unreadable_file_as_an_ordinary_user(tmp_path):
    """Root reads everything, so drop to 'nobody' in a child process."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch user")
    top = tempfile.mkdtemp(prefix="hpx-perm-")
    try:
        os.chmod(top, 0o777)
        paths, _ = write_images(top, make_frames(3, (8, 8, 3)))
        os.chmod(paths[0], 0o000)
        for p in paths[1:]:
            os.chmod(p, 0o644)
        # fork (no exec: the interpreter need not be readable by 'nobody')
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.setgid(65534)
                os.setuid(65534)
                _, skipped = inputs.probe_all(paths)
                os.write(w, repr(skipped).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as fh:
            out = fh.read()
        os.waitpid(pid, 0)
        assert "permission denied" in out and paths[0] in out
        assert paths[1] not in out
    finally:
        shutil.rmtree(top)
