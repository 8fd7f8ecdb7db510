"""Exports: each format line by line on a known defect list, atomic writing,
output path checks, the mask's exact pixels and non-UTF-8 file names."""
import csv
import errno
import json
import math
import os
import re
import stat

import numpy as np
import pytest
from PIL import Image

from hotpixel_shm import __version__, export
from hotpixel_shm.errors import HotPixelError
from hotpixel_shm.model import Defect

# (x, y) = (5, 2) appears twice: per-pixel formats keep it once, with the
# kind of the higher score (hot, 9.0).
DEFECTS = [
    Defect(x=5, y=2, channels=[0], kind="noisy", mean=120.5, std=40.25, neighbour_mean=118.0, score=4.5),
    Defect(x=1, y=0, channels=[0, 2], kind="hot", mean=250.0, std=1.5, neighbour_mean=90.0, score=30.0,
           size=3, colour="R"),
    Defect(x=6, y=4, channels=[1], kind="dead", mean=0.0, std=0.0, neighbour_mean=130.0, score=25.0),
    Defect(x=0, y=4, channels=[2], kind="stuck", mean=200.0, std=float("nan"), neighbour_mean=80.0,
           score=12.0),
    Defect(x=5, y=2, channels=[1], kind="hot", mean=220.0, std=3.0, neighbour_mean=118.0, score=9.0),
]
# Each pixel once, by row then column, with the kind that wins.
PIXELS = [(1, 0, "hot"), (5, 2, "hot"), (0, 4, "stuck"), (6, 4, "dead")]
SHAPE = (5, 7, 3)  # height, width, channels


def _lines(path):
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    assert text.endswith("\n")
    assert "\r" not in text
    return text[:-1].split("\n")


def _split(lines):
    comments = [line for line in lines if line.startswith("#")]
    data = [line for line in lines if not line.startswith("#")]
    return comments, data


def _check_header(comments):
    assert comments, "no header comment"
    assert comments[0].startswith(f"# hotpixel_shm {__version__}")
    assert any("column x, row y, 0-based" in c and "EXIF orientation not applied" in c for c in comments)


# --------------------------------------------------------------------------- #
# Per-pixel text formats
# --------------------------------------------------------------------------- #

def test_dcraw_lines_are_col_row_zero(tmp_path):
    path = tmp_path / "bad.txt"
    export.write_dcraw(path, DEFECTS)
    comments, data = _split(_lines(path))
    _check_header(comments)
    # dcraw cuts each line at '#', then needs exactly "col row time".
    assert all(re.fullmatch(r"\d+ \d+ 0", line) for line in data), data
    assert [tuple(int(v) for v in line.split()[:2]) for line in data] == [(x, y) for x, y, _ in PIXELS]
    assert lines_before_data_are_comments(_lines(path))


def lines_before_data_are_comments(lines):
    first_data = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return all(line.startswith("#") for line in lines[:first_data])


def _rawtherapee_parse(path):
    """What RawTherapee's reader takes: a first line holding one integer is an
    offset; afterwards every line starting with two integers is "x y"."""
    lines = _lines(path)
    offset, pixels = 0, []
    first = re.match(r"\s*([+-]?\d+)(?:\s+([+-]?\d+))?", lines[0])
    if first and first.group(2) is None:
        offset = int(first.group(1))
    for line in lines:
        m = re.match(r"\s*([+-]?\d+)\s+([+-]?\d+)", line)
        if m:
            pixels.append((int(m.group(1)) + offset, int(m.group(2)) + offset))
    return pixels


def test_rawtherapee_file(tmp_path):
    path = tmp_path / "Nikon D750.badpixels"
    written = export.write_rawtherapee(path, DEFECTS)
    assert written == str(path)
    comments, data = _split(_lines(path))
    _check_header(comments)
    assert all(re.fullmatch(r"\d+ \d+", line) for line in data), data
    assert _rawtherapee_parse(path) == [(x, y) for x, y, _ in PIXELS]


@pytest.mark.parametrize("make, model, name", [
    ("NIKON CORPORATION", "NIKON D750 ", "Nikon D750.badpixels"),
    ("Canon", "Canon EOS 6D", "Canon EOS 6D.badpixels"),
    ("SONY", "ILCE-7M3", "Sony ILCE-7M3.badpixels"),
    ("OLYMPUS IMAGING CORP.  ", "E-M5", "Olympus E-M5.badpixels"),
    ("RICOH IMAGING COMPANY, LTD.", "PENTAX K-1", "Pentax K-1.badpixels"),
    ("Acme  Optical", "Model\tX/2", "Acme Optical Model X_2.badpixels"),
])
def test_rawtherapee_directory_names_file_after_camera(tmp_path, make, model, name):
    written = export.write_rawtherapee(tmp_path, DEFECTS, make=make, model=model)
    assert written == os.path.join(str(tmp_path), name)
    assert os.listdir(tmp_path) == [name]
    assert _rawtherapee_parse(written) == [(x, y) for x, y, _ in PIXELS]


@pytest.mark.parametrize("make, model", [(None, "D750"), ("Nikon", None), ("  ", "D750"), (None, None)])
def test_rawtherapee_directory_without_camera_asks_for_a_file_name(tmp_path, make, model):
    with pytest.raises(HotPixelError, match="give a file name"):
        export.write_rawtherapee(tmp_path, DEFECTS, make=make, model=model)
    assert os.listdir(tmp_path) == []


def test_siril_lines(tmp_path):
    path = tmp_path / "bad.lst"
    export.write_siril(path, DEFECTS)
    lines = _lines(path)
    comments, data = _split(lines)
    _check_header(comments)
    # Siril reports any line that is neither a '#' comment nor P/L/C as an error.
    assert all(line and line[0] in "#P" for line in lines)
    assert all(re.fullmatch(r"P \d+ \d+ [HC]", line) for line in data), data
    expected = [f"P {x} {y} {'C' if kind == 'dead' else 'H'}" for x, y, kind in PIXELS]
    assert data == expected


def test_siril_rows_are_not_flipped(tmp_path):
    # Siril's reader flips y itself (FITS is bottom-up), so row 0 = top row stays 0.
    path = tmp_path / "top.lst"
    export.write_siril(path, [Defect(3, 0, [0], "hot", 1, 1, 1, 1), Defect(3, 9, [0], "dead", 1, 1, 1, 1)])
    assert _split(_lines(path))[1] == ["P 3 0 H", "P 3 9 C"]


@pytest.mark.parametrize("writer", [export.write_dcraw, export.write_rawtherapee, export.write_siril])
def test_empty_lists_have_only_the_header(tmp_path, writer):
    path = tmp_path / "empty.txt"
    writer(path, [])
    comments, data = _split(_lines(path))
    _check_header(comments)
    assert data == []


def test_defects_as_dicts_from_a_report(tmp_path):
    # A report read back from JSON gives dicts; the writers take those too.
    dicts = [d.to_dict() for d in DEFECTS]
    export.write_dcraw(tmp_path / "a.txt", DEFECTS)
    export.write_dcraw(tmp_path / "b.txt", dicts)
    assert _lines(tmp_path / "a.txt") == _lines(tmp_path / "b.txt")


@pytest.mark.parametrize("bad", [Defect(-1, 0, [0], "hot", 1, 1, 1, 1), {"x": 1.5, "y": 0, "kind": "hot"}])
def test_bad_coordinates_are_refused_and_nothing_written(tmp_path, bad):
    with pytest.raises(HotPixelError, match="coordinates|integer"):
        export.write_dcraw(tmp_path / "bad.txt", [bad])
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- #
# CSV and JSON
# --------------------------------------------------------------------------- #

def test_csv_rows(tmp_path):
    path = tmp_path / "defects.csv"
    export.write_csv(path, DEFECTS)
    lines = _lines(path)
    assert lines[0] == "x,y,kind,channels,mean,std,neighbour_mean,score,size,from,to"
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(DEFECTS)  # one row per defect, duplicates of a pixel included
    for row, d in zip(rows, DEFECTS):
        assert (int(row["x"]), int(row["y"]), row["kind"]) == (d.x, d.y, d.kind)
        assert row["channels"] == ";".join(str(c) for c in d.channels)
        assert float(row["mean"]) == pytest.approx(d.mean)
        assert float(row["neighbour_mean"]) == pytest.approx(d.neighbour_mean)
        assert float(row["score"]) == pytest.approx(d.score)
        assert int(row["size"]) == d.size
        if math.isnan(d.std):
            assert row["std"] == ""
        else:
            assert float(row["std"]) == pytest.approx(d.std)
    assert lines[2] == "1,0,hot,0;2,250,1.5,90,30,3,,"


def _engine(**more):
    return dict({"workers": 2, "dtype": "float32", "budget_bytes": 8 << 30, "planned_bytes": 123456789,
                 "seconds": 12.5}, **more)


def test_report_schema(tmp_path):
    report = export.build_report(version=__version__, shape=(5, 7, 3), used=40,
                                 skipped=[("a.jpg", "truncated JPEG")],
                                 engine=_engine(start_method="spawn"), defects=DEFECTS,
                                 extra={"tool": "hotpixel_shm"})
    path = tmp_path / "report.json"
    export.write_json(path, report)
    with open(path, encoding="utf-8") as f:
        data = json.load(f, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert list(data)[:5] == ["version", "shape", "images", "engine", "defects"]
    assert data["version"] == __version__
    assert data["shape"] == [5, 7, 3]
    assert data["images"] == {"used": 40, "skipped": [{"path": "a.jpg", "reason": "truncated JPEG"}]}
    assert data["engine"] == {"workers": 2, "dtype": "float32", "budget_bytes": 8 << 30,
                              "planned_bytes": 123456789, "seconds": 12.5, "start_method": "spawn"}
    assert data["tool"] == "hotpixel_shm"
    assert len(data["defects"]) == len(DEFECTS)
    for entry, d in zip(data["defects"], DEFECTS):
        assert set(export.DEFECT_KEYS) <= set(entry)
        assert (entry["x"], entry["y"], entry["channels"], entry["kind"]) == (d.x, d.y, d.channels, d.kind)
        assert isinstance(entry["x"], int) and isinstance(entry["score"], float)
        assert entry["size"] == d.size
    assert data["defects"][1]["colour"] == "R"
    assert "colour" not in data["defects"][0]
    # NaN is not JSON: written as null.
    assert data["defects"][3]["std"] is None
    assert "NaN" not in path.read_text(encoding="utf-8")


def test_report_converts_numpy_and_non_finite_values():
    d = Defect(np.int64(2), np.int32(3), [np.int64(1)], "hot", np.float32(7.5), np.float64("inf"),
               np.float32(1.0), np.float64(4.0))
    report = export.build_report(version="1", shape=np.array([4, 4, 3]), used=np.int64(2), skipped=[],
                                 engine=_engine(seconds=np.float64("nan"), extra_array=np.arange(3)),
                                 defects=[d])
    text = json.dumps(report, allow_nan=False)  # raises on NaN/inf or numpy types
    back = json.loads(text)
    assert back["defects"][0] == {"x": 2, "y": 3, "channels": [1], "kind": "hot", "mean": 7.5, "std": None,
                                  "neighbour_mean": 1.0, "score": 4.0, "size": 1}
    assert back["engine"]["seconds"] is None
    assert back["engine"]["extra_array"] == [0, 1, 2]
    assert back["shape"] == [4, 4, 3]


def test_report_refuses_missing_engine_keys_and_schema_overrides():
    with pytest.raises(ValueError, match="planned_bytes"):
        export.build_report(version="1", shape=(2, 2, 1), used=1, skipped=[],
                            engine={"workers": 1, "dtype": "float64", "budget_bytes": 1, "seconds": 0.0},
                            defects=[])
    with pytest.raises(ValueError, match="defects"):
        export.build_report(version="1", shape=(2, 2, 1), used=1, skipped=[], engine=_engine(), defects=[],
                            extra={"defects": []})
    with pytest.raises(ValueError, match="kind"):
        export.build_report(version="1", shape=(2, 2, 1), used=1, skipped=[], engine=_engine(),
                            defects=[{"x": 0, "y": 0, "kind": "warm", "score": 1.0}])


def test_non_utf8_file_name_in_report(tmp_path):
    raw_name = b"caf\xe9 \xff.jpg"          # Latin-1 bytes: not UTF-8
    as_str = os.fsdecode(raw_name)          # how Python hands it over on Linux (surrogates)
    report = export.build_report(version="1", shape=(2, 2, 3), used=1,
                                 skipped=[(as_str, "not a JPEG"), {"path": raw_name, "reason": "empty"},
                                          (tmp_path / as_str, "gone")],
                                 engine=_engine(), defects=[])
    path = tmp_path / "report.json"
    export.write_json(path, report)
    raw = path.read_bytes()
    raw.decode("utf-8")  # valid UTF-8 throughout
    data = json.loads(raw)
    paths = [s["path"] for s in data["images"]["skipped"]]
    assert paths[0] == paths[1] == "caf\\xe9 \\xff.jpg"
    assert paths[2].endswith("caf\\xe9 \\xff.jpg")
    # And the same name passed to write_json directly, outside build_report.
    export.write_json(path, {"odd": as_str})
    assert json.loads(path.read_bytes())["odd"] == "caf\\xe9 \\xff.jpg"


def test_csv_and_json_to_non_utf8_output_names(tmp_path):
    name = os.fsdecode(b"r\xe9sultat")
    export.write_csv(os.path.join(str(tmp_path), name + ".csv"), DEFECTS)
    export.write_json(os.path.join(str(tmp_path), name + ".json"), {"a": 1})
    assert sorted(os.listdir(os.fsencode(str(tmp_path)))) == [b"r\xe9sultat.csv", b"r\xe9sultat.json"]


# --------------------------------------------------------------------------- #
# Mask
# --------------------------------------------------------------------------- #

def test_mask_pixels_exact(tmp_path):
    path = tmp_path / "mask.png"
    export.write_mask(path, DEFECTS, SHAPE)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L"
        assert im.size == (SHAPE[1], SHAPE[0])
        got = np.asarray(im)
    expected = np.zeros(SHAPE[:2], np.uint8)
    for x, y, _ in PIXELS:
        expected[y, x] = 255
    np.testing.assert_array_equal(got, expected)


def test_mask_without_defects_is_black(tmp_path):
    path = tmp_path / "mask.png"
    export.write_mask(path, [], (3, 4))
    with Image.open(path) as im:
        assert im.size == (4, 3)
        assert not np.asarray(im).any()


def test_mask_refuses_defect_outside_frame_and_keeps_old_file(tmp_path):
    path = tmp_path / "mask.png"
    path.write_bytes(b"old")
    with pytest.raises(HotPixelError, match="outside"):
        export.write_mask(path, [Defect(7, 0, [0], "hot", 1, 1, 1, 1)], SHAPE)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["mask.png"]


# --------------------------------------------------------------------------- #
# Atomic writing
# --------------------------------------------------------------------------- #

def test_full_disk_midway_keeps_previous_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("previous content\n")

    def fill_disk(f):
        f.write("half of the new content")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(HotPixelError) as info:
        export.atomic_write(path, fill_disk)
    message = str(info.value)
    assert message.startswith(f"could not write {path}: No space left on device")
    assert message.endswith("the previous file, if any, is unchanged")
    assert isinstance(info.value.__cause__, OSError)
    assert path.read_text() == "previous content\n"
    assert os.listdir(tmp_path) == ["report.json"]  # no temporary file left


def test_failing_writer_leaves_no_file_when_there_was_none(tmp_path):
    def broken(f):
        f.write("x")
        raise ValueError("bad value")

    with pytest.raises(HotPixelError, match="bad value"):
        export.atomic_write(tmp_path / "new.txt", broken)
    assert os.listdir(tmp_path) == []


def test_interrupt_removes_temporary_file(tmp_path):
    def interrupted(f):
        f.write("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export.atomic_write(tmp_path / "new.txt", interrupted)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "out.txt").write_text("old")
    ro.chmod(0o555)
    try:
        with pytest.raises(HotPixelError, match="Permission denied.*unchanged"):
            export.write_dcraw(ro / "out.txt", DEFECTS)
        assert (ro / "out.txt").read_text() == "old"
        assert os.listdir(ro) == ["out.txt"]
    finally:
        ro.chmod(0o755)


def test_real_os_errors_as_root_or_not(tmp_path):
    # Failures the OS gives even to root: a parent that is a file, a missing
    # directory, and a target that is a directory (fails at the final rename).
    plain = tmp_path / "plain"
    plain.write_text("keep")
    with pytest.raises(HotPixelError, match="Not a directory"):
        export.write_csv(plain / "out.csv", DEFECTS)
    with pytest.raises(HotPixelError, match="No such file or directory"):
        export.write_csv(tmp_path / "missing" / "out.csv", DEFECTS)
    target = tmp_path / "adir"
    target.mkdir()
    (target / "inside").write_text("keep")
    with pytest.raises(HotPixelError, match="directory"):
        export.write_dcraw(target, DEFECTS)
    assert os.listdir(target) == ["inside"]
    assert sorted(os.listdir(tmp_path)) == ["adir", "plain"]  # no temporary file left
    assert plain.read_text() == "keep"


@pytest.mark.parametrize("write", [
    lambda p: export.write_json(p, {"a": 1}),
    lambda p: export.write_csv(p, DEFECTS),
    lambda p: export.write_dcraw(p, DEFECTS),
    lambda p: export.write_rawtherapee(p, DEFECTS),
    lambda p: export.write_siril(p, DEFECTS),
    lambda p: export.write_mask(p, DEFECTS, SHAPE),
])
def test_every_writer_reports_errors_the_same_way(tmp_path, write):
    with pytest.raises(HotPixelError, match=r"could not write .*; the previous file, if any, is unchanged"):
        write(tmp_path / "missing" / "out")


def test_permissions_like_a_normal_file(tmp_path):
    old = os.umask(0o027)
    try:
        export.write_dcraw(tmp_path / "new.txt", DEFECTS)
        with open(tmp_path / "plain.txt", "w"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == stat.S_IMODE(
        os.stat(tmp_path / "plain.txt").st_mode)
    # Replacing a file keeps its permissions.
    os.chmod(tmp_path / "new.txt", 0o604)
    export.write_dcraw(tmp_path / "new.txt", [])
    assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == 0o604


def test_symlink_target_is_replaced_and_link_kept(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    export.atomic_write(link, lambda f: f.write("new"))
    assert link.is_symlink()
    assert real.read_text() == "new"


def test_binary_and_text_modes(tmp_path):
    export.atomic_write(tmp_path / "b.bin", lambda f: f.write(b"\x00\xff"), mode="wb")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    export.atomic_write(tmp_path / "t.txt", lambda f: f.write("é\n"), encoding="latin-1")
    assert (tmp_path / "t.txt").read_bytes() == b"\xe9\n"
    with pytest.raises(ValueError):
        export.atomic_write(tmp_path / "a.txt", lambda f: None, mode="a")


# --------------------------------------------------------------------------- #
# Output path checks
# --------------------------------------------------------------------------- #

@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    paths = []
    for i in range(3):
        p = d / f"IMG_{i}.JPG"
        p.write_bytes(b"jpeg")
        paths.append(str(p))
    return paths


def test_output_that_is_an_input_is_refused(tmp_path, photos):
    with pytest.raises(HotPixelError, match="input photo"):
        export.check_output_paths([photos[1]], photos)
    # The same file spelled differently.
    other_spelling = os.path.join(os.path.dirname(photos[1]), "..", "photos", "IMG_1.JPG")
    with pytest.raises(HotPixelError, match="input photo"):
        export.check_output_paths({"--csv": other_spelling}, photos)
    link = tmp_path / "link.jpg"
    link.symlink_to(photos[2])
    with pytest.raises(HotPixelError, match=r"--mask .*link\.jpg is the input photo"):
        export.check_output_paths({"--mask": str(link)}, photos)
    hard = tmp_path / "hard.jpg"
    os.link(photos[0], hard)
    with pytest.raises(HotPixelError, match="input photo"):
        export.check_output_paths([str(hard)], photos)


def test_two_outputs_on_one_file_are_refused(tmp_path, photos):
    out = str(tmp_path / "out.txt")
    with pytest.raises(HotPixelError, match=r"--dcraw .* and --siril .* are the same file"):
        export.check_output_paths({"--siril": out, "--dcraw": os.path.join(str(tmp_path), ".", "out.txt")},
                                  photos)
    existing = tmp_path / "existing.txt"
    existing.write_text("x")
    (tmp_path / "alias.txt").symlink_to(existing)
    with pytest.raises(HotPixelError, match="same file"):
        export.check_output_paths([str(existing), str(tmp_path / "alias.txt")], photos)


def test_distinct_outputs_pass(tmp_path, photos):
    export.check_output_paths({"--json": str(tmp_path / "r.json"), "--csv": str(tmp_path / "r.csv"),
                               "--picture": None}, photos)
    export.check_output_paths([], photos)
    export.check_output_paths([str(tmp_path / "r.json")], [])
