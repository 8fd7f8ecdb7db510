"""The command line, run in-process with main([...]) and, where it matters
(the front door, quoted globs), as a real subprocess."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hotpixel_shm import __version__
from hotpixel_shm.cli import main
from hotpixel_shm.statsio import load_stats

from conftest import make_frames, reference_stats, write_images


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "shots"
    d.mkdir()
    paths, decoded = write_images(d, make_frames(9, (24, 30, 3), seed=7), fmt="png")
    return d, paths, decoded


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for opt in ("--auto-workers", "--memory-budget", "--dtype", "--plan", "--json", "--dcraw",
                "--rawtherapee", "--siril", "--mask", "--picture", "--checkpoint", "--resume",
                "--load-stats", "--save-stats", "--darks", "--top", "--demo", "exit codes"):
        assert opt in out


@pytest.mark.parametrize("argv", [[], ["--workers", "0", "x"], ["--dtype", "float8", "x"],
                                  ["--checkpoint-every", "5", "x"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_full_run_json_stats_and_summary(photos, tmp_path, capsys):
    d, paths, decoded = photos
    bad = d / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    js, st = str(tmp_path / "r.json"), str(tmp_path / "s.npz")
    code = main(["--workers", "2", "--dtype", "float64", str(d), "--json", js, "--save-stats", st])
    cap = capsys.readouterr()
    assert code == 0
    assert f"{bad}: " in cap.err  # one line: path: reason
    assert "lowest-variance subpixels" in cap.out and "images used: 9" in cap.out
    with open(js) as fh:
        rep = json.load(fh)
    assert rep["version"] == __version__
    assert rep["shape"] == [24, 30, 3]
    assert rep["images"]["used"] == 9
    assert [s["path"] for s in rep["images"]["skipped"]] == [str(bad)]
    eng = rep["engine"]
    assert eng["workers"] == 2 and eng["dtype"] == "float64"
    assert 0 < eng["planned_bytes"] <= eng["budget_bytes"] and eng["seconds"] > 0
    assert isinstance(rep["defects"], list)
    stats, dtype = load_stats(st)
    with np.load(st, allow_pickle=False) as z:
        assert z["mean"].shape == (24, 30, 3) and int(z["n"]) == 9
    mean, var = reference_stats(decoded)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(stats.var, var, rtol=1e-9, atol=1e-9)
    assert dtype == "uint8" and sorted(stats.files) == sorted(paths)


def test_plan_only_does_not_decode(photos, capsys):
    d, _, _ = photos
    assert main(["--auto-workers", "--plan", str(d)]) == 0
    err = capsys.readouterr().err
    assert "Plan:" in err and "Why:" in err


def test_too_few_images_exit_3(tmp_path, capsys):
    paths, _ = write_images(tmp_path, make_frames(1, (8, 8, 3)))
    assert main([paths[0]]) == 3
    assert main([str(tmp_path / "nothing-here.jpg")]) == 3
    assert "no such file" in capsys.readouterr().err


def test_no_plan_fits_exit_4_and_forced_over_budget(photos, capsys):
    d, _, _ = photos
    assert main(["--auto-workers", "--memory-budget", "1M", str(d)]) == 4
    err = capsys.readouterr().err
    assert "MiB" in err or "KiB" in err
    assert main(["--workers", "2", "--dtype", "float64", "--memory-budget", "1M", str(d)]) == 4
    assert main(["-q", "--workers", "2", "--dtype", "float64", "--memory-budget", "1M",
                 "--force", str(d)]) == 0


def test_output_that_is_an_input_is_refused(photos, capsys):
    d, paths, _ = photos
    assert main([str(d), "--mask", paths[0]]) == 1
    assert "input" in capsys.readouterr().err
    assert os.path.getsize(paths[0]) > 0


def test_load_stats_equals_one_run(photos, tmp_path, capsys):
    d, paths, decoded = photos
    old = tmp_path / "old"
    new = tmp_path / "new"
    old.mkdir()
    new.mkdir()
    for p in paths[:4]:
        os.link(p, old / os.path.basename(p))
    for p in paths[4:]:
        os.link(p, new / os.path.basename(p))
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    assert main(["-q", "--dtype", "float64", str(old), "--save-stats", a]) == 0
    assert main(["-q", "--workers", "2", "--load-stats", a, str(new), "--save-stats", b]) == 0
    st, _ = load_stats(b)
    mean, var = reference_stats(decoded)
    assert st.n == 9 and st.tier == "float64"
    np.testing.assert_allclose(st.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(st.var, var, rtol=1e-9, atol=1e-9)
    # another shape is refused with a clear message
    other = tmp_path / "other"
    other.mkdir()
    write_images(other, make_frames(3, (10, 10, 3)))
    assert main(["-q", "--load-stats", a, str(other)]) == 1
    assert "cannot be merged with the loaded statistics (30x24 8-bit RGB)" in capsys.readouterr().err
    assert main(["-q", "--load-stats", a, "--dtype", "float32", str(new)]) == 1


def test_load_stats_rejects_bad_files(photos, tmp_path, capsys):
    d, _, _ = photos
    evil = tmp_path / "evil.npz"
    np.savez(str(evil), n=np.array(3), mean=np.zeros((2, 2, 3)), var=np.zeros((2, 2)))
    assert main(["--load-stats", str(evil), str(d)]) == 1
    assert "not a hotpixel_shm statistics file" in capsys.readouterr().err
    pick = tmp_path / "pickle.npz"
    np.savez(str(pick), n=np.array([object()], dtype=object))
    assert main(["--load-stats", str(pick), str(d)]) == 1


def test_quoted_glob_through_the_console(photos):
    d, paths, _ = photos
    r = subprocess.run([sys.executable, "-m", "hotpixel_shm", "-q", "--auto-workers",
                        os.path.join(str(d), "*.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "images used: 9" in r.stdout


def test_other_sizes_and_modes_are_skipped_with_reasons(photos, capsys):
    d, paths, _ = photos
    Image.new("CMYK", (30, 24)).save(str(d / "cmyk.jpg"))
    Image.fromarray(make_frames(1, (40, 30, 3))[0]).save(str(d / "big.png"))
    (d / "empty.jpg").write_bytes(b"")
    assert main(["-q", str(d)]) == 0
    err = capsys.readouterr().err
    assert "cmyk.jpg: unsupported colour mode CMYK" in err
    assert "big.png: size 30x40 8-bit RGB differs" in err
    assert "empty.jpg: empty file" in err


def test_raw_dng_end_to_end(tmp_path):
    pytest.importorskip("rawpy")
    from hotpixel_shm.dng import write_raw_set
    d = tmp_path / "raw"
    d.mkdir()
    paths, truth = write_raw_set(str(d), n=12)
    js, dc = str(tmp_path / "r.json"), str(tmp_path / "bad.txt")
    assert main(["-q", "--workers", "2", str(d), "--json", js, "--dcraw", dc]) == 0
    with open(js) as fh:
        rep = json.load(fh)
    assert rep["shape"] == [192, 256, 1]
    found = {(f["x"], f["y"]): f for f in rep["defects"]}
    strong = [t for t in truth if t["label"] in ("hot", "stuck", "stuck_white", "dead")]
    for t in strong:  # raw defects are single photosites, at exact coordinates
        assert (t["x"], t["y"]) in found, t
        assert found[(t["x"], t["y"])]["colour"] == t["colour"]
    with open(dc) as fh:
        lines = [ln.split() for ln in fh if not ln.startswith("#")]
    assert {(int(c), int(r)) for c, r, _ in lines} == set(found)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB file system (root only; skipped elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_keeps_the_earlier_file_and_says_so(photos, tiny_disk, capsys):
    d, _, _ = photos
    mask = tiny_disk / "mask.png"
    mask.write_bytes(b"earlier mask")
    (tiny_disk / "filler").write_bytes(b"\0" * (60 * 1024))  # leave less than the report needs
    code = main(["-q", str(d), "--json", str(tiny_disk / "r.json"), "--csv", str(tiny_disk / "r.csv")])
    err = capsys.readouterr().err
    assert code == 1
    assert "No space left on device" in err and "unchanged" in err
    assert mask.read_bytes() == b"earlier mask"
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "mask.png"]  # no temporary left


def test_periodic_checkpoint_from_the_command_line(photos, tmp_path):
    d, paths, decoded = photos
    ck = str(tmp_path / "ck.npz")
    assert main(["-q", "--workers", "2", "--dtype", "float64", "--checkpoint", ck,
                 "--checkpoint-every", "3", str(d)]) == 0
    st, _ = load_stats(ck)
    assert 3 <= st.n < len(paths) and len(st.files) == st.n
    mean, var = reference_stats([decoded[paths.index(f)] for f in st.files])
    np.testing.assert_allclose(st.mean, mean, rtol=1e-9)
