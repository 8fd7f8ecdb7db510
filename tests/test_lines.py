"""Bad columns and rows: found once, at the right place, in photos, raw mosaics
and dark frames; none in defect-free sets."""
import io

import numpy as np
import pytest
from PIL import Image

from hotpixel_shm.dng import cfa_array, simulate_raw_frames
from hotpixel_shm.lines import LineDefect, find_lines
from hotpixel_shm.synth import simulate_frames

NONE = {k: 0 for k in ("hot", "weak_hot", "stuck", "dead", "noisy")}


def _moments(frames, shape):
    a = np.stack([np.asarray(f).reshape(shape).astype(np.float64) for f in frames])
    return a.mean(0), a.var(0)


def _jpeg(frame):
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=85, subsampling="4:2:0")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_columns_and_rows_in_photos(fmt):
    lines = [("column", 101, 7.0), ("row", 150, -6.0), ("column", 300, 8.0, 96, 250)]
    frames, _ = simulate_frames(20, 256, 400, seed=3, defects=NONE, lines=lines)
    if fmt == "jpeg":
        frames = [_jpeg(f) for f in frames]
    mean, var = _moments(frames, (256, 400, 3))
    found = {(d.kind, d.index): d for d in find_lines(mean, var)}
    assert set(found) == {("column", 101), ("row", 150), ("column", 300)}
    assert found[("row", 150)].offset < 0 < found[("column", 101)].offset
    part = found[("column", 300)]
    # from/to within one JPEG block (its 8x8 blocks, and 4:2:0 chroma's 16x16, blur them)
    assert abs(part.start - 96) <= 8 and abs(part.stop - 250) <= 8
    d = found[("column", 101)].to_dict()
    # (a sky clipped in most photos hides an offset: the top band may not show it)
    assert d["kind"] == "column" and d["x"] == 101 and d["from"] <= 32 and d["to"] == 255
    assert "y" not in d


def test_no_lines_in_defect_free_photos():
    frames, _ = simulate_frames(20, 256, 400, seed=4, defects=NONE)
    frames = [_jpeg(f) for f in frames]
    assert find_lines(*_moments(frames, (256, 400, 3))) == []


def test_dark_frames_and_raw_mosaics():
    frames, _ = simulate_frames(16, 128, 160, seed=5, darks=True, defects=NONE,
                                lines=[("column", 40, 12.0), ("row", 77, 9.0)])
    got = find_lines(*_moments(frames, (128, 160, 1)))
    assert [(d.kind, d.index) for d in sorted(got, key=lambda d: d.kind)] == \
        [("column", 40), ("row", 77)]
    frames, _ = simulate_raw_frames(16, width=192, height=128, seed=6, n_hot=0, n_weak_hot=0,
                                    n_stuck=0, n_dead=0, n_noisy=0,
                                    lines=[("column", 61, 100.0), ("row", 90, -100.0)])
    mean, var = _moments(list(frames), (128, 192, 1))
    got = {(d.kind, d.index): d for d in find_lines(mean, var, cfa=cfa_array("RGGB", 128, 192))}
    assert set(got) == {("column", 61), ("row", 90)}
    assert got[("column", 61)].colour == "GB" and got[("row", 90)].colour == "RG"
    assert list(got[("row", 90)].pixels())[:2] == [(0, 90), (1, 90)]


def test_line_defect_pixels():
    d = LineDefect("column", 5, 2, 4, [0], 3.0, 9.0)
    assert list(d.pixels()) == [(5, 2), (5, 3), (5, 4)]


def test_line_defects_in_every_output(tmp_path):
    import csv
    import json

    from hotpixel_shm import export

    lines = [LineDefect("column", 7, 0, 3, [1], 5.0, 20.0),
             LineDefect("row", 2, 5, 6, [0, 2], -4.0, 12.0, colour="RG")]
    report = export.build_report(version="x", shape=(10, 12, 3), used=3, skipped=[],
                                 engine={"workers": 1, "dtype": "float32", "budget_bytes": 1,
                                         "planned_bytes": 1, "seconds": 0.0},
                                 defects=[], lines=lines)
    assert report["lines"] == [
        {"kind": "column", "x": 7, "from": 0, "to": 3, "channels": [1], "offset": 5.0,
         "score": 20.0},
        {"kind": "row", "y": 2, "from": 5, "to": 6, "channels": [0, 2], "offset": -4.0,
         "score": 12.0, "colour": "RG"}]
    export.write_json(tmp_path / "r.json", report)
    again = json.loads((tmp_path / "r.json").read_text())["lines"]
    assert [export.line_fields(e)[:4] for e in again] == [("column", 7, 0, 3), ("row", 2, 5, 6)]

    export.write_csv(tmp_path / "d.csv", [], lines)
    rows = list(csv.DictReader((tmp_path / "d.csv").read_text().splitlines()))
    assert [(r["x"], r["y"], r["kind"], r["from"], r["to"], r["size"]) for r in rows] == \
        [("7", "", "column", "0", "3", "4"), ("", "2", "row", "5", "6", "2")]

    export.write_siril(tmp_path / "s.lst", [], lines=lines)
    body = [t for t in (tmp_path / "s.lst").read_text().splitlines() if not t.startswith("#")]
    assert body == ["C 7 0 H", "L 2 0 C"]

    export.write_dcraw(tmp_path / "d.txt", [], lines=lines)
    body = [t for t in (tmp_path / "d.txt").read_text().splitlines() if not t.startswith("#")]
    assert body == ["7 0 0", "7 1 0", "5 2 0", "6 2 0", "7 2 0", "7 3 0"]
    path = export.write_rawtherapee(tmp_path / "x.badpixels", [], lines=lines)
    with open(path) as fh:
        assert len([t for t in fh.read().splitlines() if not t.startswith("#")]) == 6
    export.write_mask(tmp_path / "m.png", [], (10, 12), lines=lines)
    mask = np.asarray(Image.open(tmp_path / "m.png"))
    assert mask.sum() == 6 * 255 and mask[0:4, 7].all() and mask[2, 5:7].all()


def test_siril_corrects_a_listed_column(tmp_path):
    """Siril itself reads ``C x 0 H`` and ``L y 0 H`` and repairs those lines."""
    import os
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from clients import develop_siril

    from hotpixel_shm import export
    from hotpixel_shm.dng import write_dng

    rng = np.random.default_rng(0)
    mosaic = (1000 + rng.normal(0, 20, (48, 64))).astype(np.uint16)
    mosaic[:, 30] += 400
    mosaic[20, :] += 400
    write_dng(tmp_path / "a.dng", mosaic, white=4095)
    export.write_siril(tmp_path / "l.lst", [], lines=[LineDefect("column", 30, 0, 47),
                                                       LineDefect("row", 20, 0, 63)])
    out = develop_siril(tmp_path / "a.dng", tmp_path / "l.lst", tmp_path)
    assert abs(out[:, 30].mean() - out[:, 28].mean()) < 30
    assert abs(out[20, :].mean() - out[22, :].mean()) < 30


def test_band_reader_input_gives_the_same_lines():
    from hotpixel_shm.bands import ArrayBands, BandArray

    frames, _ = simulate_frames(12, 128, 160, seed=5, darks=True, defects=NONE,
                                lines=[("column", 40, 12.0), ("row", 77, 9.0)])
    mean, var = _moments(frames, (128, 160, 1))
    reader = ArrayBands(mean, var)
    got = find_lines(BandArray(reader, "mean"))
    assert [(d.kind, d.index, d.start, d.stop) for d in got] == \
        [(d.kind, d.index, d.start, d.stop) for d in find_lines(mean)]


def test_compare_lines_new_persisting_gone():
    from hotpixel_shm import export
    from hotpixel_shm.history import compare_lines

    old = {"created": "2026-01-05T10:00:00Z", "lines": [
        {"kind": "column", "x": 101, "from": 0, "to": 255, "first_seen": "2025-12-01"},
        {"kind": "row", "y": 40, "from": 0, "to": 99},
        {"kind": "column", "x": 300, "from": 0, "to": 50}]}
    now = [LineDefect("column", 102, 10, 255, [1], 5.0, 20.0),   # 1 px off: same line (photo)
           LineDefect("row", 41, 0, 99, [0], 3.0, 12.0),          # row 41 is not row 40 ...
           LineDefect("column", 300, 60, 90, [0], 4.0, 11.0)]     # ... nor rows 60-90 rows 0-50
    got, summary = compare_lines(now, old, raw=False, date="2026-02-01")
    assert [(d.status, d.first_seen) for d in got] == [
        ("persisting", "2025-12-01"), ("persisting", "2026-01-05"), ("new", "2026-02-01")]
    assert (summary["new"], summary["persisting"]) == (1, 2)
    assert [(g["kind"], g["x"]) for g in summary["gone"]] == [("column", 300)]
    got, summary = compare_lines(now, old, raw=True, date="2026-02-01")
    assert [d.status for d in got] == ["new", "new", "new"] and len(summary["gone"]) == 3
    assert now[0].status is None                   # copies: the caller's lines are unchanged
    entry = export.build_report(version="x", shape=(256, 400, 3), used=3, skipped=[],
                                engine={"workers": 1, "dtype": "float32", "budget_bytes": 1,
                                        "planned_bytes": 1, "seconds": 0.0},
                                defects=[], lines=got[:1])["lines"][0]
    assert (entry["status"], entry["first_seen"]) == ("new", "2026-02-01")
    # a report of an older version has no lines: every line is new
    assert compare_lines(now, {"defects": []}, raw=False, date="d")[1]["new"] == 3


def _frames_with(seed, column, rows, frames_hit, amount):
    """16 flat-scene photos (120 x 160 RGB), ``amount`` added to ``column``
    over ``rows`` (inclusive) in the frames ``frames_hit``."""
    from conftest import make_frames
    out = []
    for i, f in enumerate(make_frames(16, (120, 160, 3), seed=seed,
                                      base=np.full((120, 160, 3), 110.0))):
        f = f.astype(np.float64)
        if i in frames_hit:
            f[rows[0]:rows[1] + 1, column] += amount
        out.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
    return out


def _lines_with_residuals(frames):
    from hotpixel_shm.residual import residuals_of_frames
    mean = np.stack(frames).astype(np.float64).mean(0)
    return find_lines(mean, residuals=residuals_of_frames(frames, frames[0].shape)), \
        find_lines(mean)


def test_partial_column_found_with_residual_statistics():
    # 51 of 120 rows: less than half the height, so the mean alone (whose
    # line offset must show in most bands) does not report it
    frames = _frames_with(3, 57, (10, 60), range(16), 25.0)
    with_res, mean_only = _lines_with_residuals(frames)
    assert mean_only == []
    assert [(d.kind, d.index) for d in with_res] == [("column", 57)]
    d = with_res[0]
    # the CUSUM's precision: a photosite or two against noise of 20 units
    assert abs(d.start - 10) <= 3 and abs(d.stop - 60) <= 3 and d.offset > 20


@pytest.mark.parametrize("rows", [(10, 60), (0, 119)])
def test_transient_pole_in_three_photos_is_not_a_line(rows):
    # a dark pole in 3 of 16 photos offsets the mean as a column of -17
    # would (without the residual variance test both are reported); the
    # residual statistics say it is not in every frame
    frames = _frames_with(3, 57, rows, (2, 7, 11), -90.0)
    with_res, mean_only = _lines_with_residuals(frames)
    assert with_res == []
    if rows == (0, 119):     # the mean alone cannot tell: the check can fail
        assert [(d.kind, d.index) for d in mean_only] == [("column", 57)]


def test_partial_column_through_the_command_line(tmp_path):
    # the run keeps residual statistics by default and the report has the
    # partial column; --no-residuals falls back to the mean-only rule
    import json

    from conftest import write_images
    from hotpixel_shm.cli import main

    frames = _frames_with(3, 57, (20, 100), range(16), 25.0)
    d = tmp_path / "photos"
    d.mkdir()
    write_images(str(d), frames)
    reports = {}
    for name, extra in (("res", []), ("mean", ["--no-residuals"])):
        out = str(tmp_path / f"{name}.json")
        assert main(["-q", "--workers", "1", "--json", out, *extra, str(d)]) == 0
        with open(out) as fh:
            reports[name] = json.load(fh)["lines"]
    assert [(ln["kind"], ln["x"]) for ln in reports["res"]] == [("column", 57)]
    assert abs(reports["res"][0]["from"] - 20) <= 3 and abs(reports["res"][0]["to"] - 100) <= 3
    # 81 of 120 rows: in 2 of the 4 bands, not more than half of them
    assert reports["mean"] == []


@pytest.mark.parametrize("reach", [0, 1, 4, 9])
def test_max_filter_is_ndimage_maximum_filter1d(reach):
    # the numpy twin that spares a run scipy.ndimage's import (issue 10)
    from scipy import ndimage

    from hotpixel_shm.lines import _max_filter_rows
    rng = np.random.default_rng(reach)
    for shape in ((3, 1), (2, 2), (5, 7), (4, 61)):
        a = rng.standard_normal(shape).astype(np.float32)
        want = ndimage.maximum_filter1d(a, 2 * reach + 1, axis=1, mode="nearest")
        assert np.array_equal(_max_filter_rows(a, reach), want)


def test_threads_give_the_same_lines():
    # issue 10: the pass over the rows spread over threads, photos (one read
    # of every channel per band, band by band through a reader) and mosaics
    from hotpixel_shm.bands import BandArray, BandReader, ArrayBands, cache_bands_for

    lines = [("column", 101, 7.0), ("row", 150, -6.0), ("column", 300, 8.0, 96, 250)]
    frames, _ = simulate_frames(12, 256, 400, seed=3, defects=NONE, lines=lines)
    mean, var = _moments(frames, (256, 400, 3))

    def key(found):
        return [(d.kind, d.index, d.start, d.stop, d.channels, d.offset, d.score) for d in found]
    one = key(find_lines(mean, var))
    assert {k[:2] for k in one} == {("column", 101), ("row", 150), ("column", 300)}
    for threads in (2, 3):
        assert key(find_lines(mean, var, threads=threads)) == one
        arrays = ArrayBands(mean, var)
        reader = BandReader(mean.shape, np.float64, arrays._copy, band_rows=29,
                            cache_bands=cache_bands_for(threads))
        assert key(find_lines(BandArray(reader, "mean"), BandArray(reader, "var"),
                              threads=threads)) == one
    frames, _ = simulate_raw_frames(8, width=192, height=128, seed=6, n_hot=0, n_weak_hot=0,
                                    n_stuck=0, n_dead=0, n_noisy=0,
                                    lines=[("column", 61, 100.0), ("row", 90, -100.0)])
    mean, var = _moments(list(frames), (128, 192, 1))
    cfa = cfa_array("RGGB", 128, 192)
    one = key(find_lines(mean, var, cfa=cfa))
    assert {k[:2] for k in one} == {("column", 61), ("row", 90)}
    assert key(find_lines(mean, var, cfa=cfa, threads=2)) == one


def test_memory_bound_of_the_line_test():
    import tracemalloc
    from hotpixel_shm.bands import ArrayBands, BandArray
    from hotpixel_shm.lines import lines_memory_bytes
    lines = [("column", 101, 7.0), ("row", 150, -6.0)]
    frames, _ = simulate_frames(8, 256, 400, seed=3, defects=NONE, lines=lines)
    mean, var = _moments(frames, (256, 400, 3))
    find_lines(mean[:64, :64], var[:64, :64])         # imports and first-use caches
    for shape in ((256, 400, 3), (256, 400, 1)):
        m, v = mean[:, :, :shape[2]], var[:, :, :shape[2]]
        reader = ArrayBands(m, v)
        tracemalloc.start()
        try:
            got = find_lines(BandArray(reader, "mean"), BandArray(reader, "var"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert got and peak <= lines_memory_bytes(shape)
    assert lines_memory_bytes((4000, 6000, 3)) < 96 * 2 ** 20


def _counting_reader(mean, var, band_rows):
    """A reader like a run's (band by band, and value by value when asked),
    with the rows each ``finish`` call wrote."""
    from hotpixel_shm.bands import BandReader
    calls = []

    def finish(y0, y1, om, ov):
        calls.append((y0, y1))
        om[...] = mean[y0:y1]
        ov[...] = var[y0:y1]

    def values_at(flat, om, ov):
        om[...] = mean.reshape(-1)[flat]
        ov[...] = var.reshape(-1)[flat]
    return BandReader(mean.shape, np.float64, finish, band_rows=band_rows, cache_bands=3,
                      gather=values_at), calls


def test_line_test_reads_each_row_once_past_the_readers_cache():
    # issue 10: beside detection, which reads the same reader through its
    # cache, the line test finishes every row of the frame once (float32,
    # its own buffers: not a band kept in the cache), and a candidate line's
    # checks read its window of columns value by value: the same lines, to
    # the last bit, as from the arrays
    from hotpixel_shm.bands import BandArray
    from hotpixel_shm.residual import residuals_of_frames
    frames = _frames_with(3, 57, (10, 60), range(16), 25.0)
    frames = [f.copy() for f in frames]
    for f in frames:
        f[:, 101] = np.clip(f[:, 101].astype(int) + 12, 0, 255)
    mean = np.stack(frames).astype(np.float64).mean(0)
    var = np.stack(frames).astype(np.float64).var(0)
    res = residuals_of_frames(frames, frames[0].shape)

    def key(found):
        return [(d.kind, d.index, d.start, d.stop, d.channels, d.offset, d.score) for d in found]
    want = key(find_lines(mean, var, residuals=res))
    assert {k[:2] for k in want} == {("column", 57), ("column", 101)}
    for threads in (1, 2):
        reader, calls = _counting_reader(mean, var, band_rows=29)
        got = find_lines(BandArray(reader, "mean"), BandArray(reader, "var"), residuals=res,
                         threads=threads)
        assert key(got) == want
        rows = sorted(calls)
        assert rows[0][0] == 0 and rows[-1][1] == mean.shape[0]
        if threads == 1:
            assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))      # each row once
        else:       # a thread keeps the halo of its own last band only
            assert all(a[1] - 2 <= b[0] <= a[1] for a, b in zip(rows, rows[1:]))
        assert not reader._cache


def test_shared_rows_keep_the_halo_of_the_last_read():
    from hotpixel_shm.bands import BandArray
    from hotpixel_shm.lines import _SharedRows
    rng = np.random.default_rng(2)
    mean = rng.uniform(0, 255, (70, 9, 3))
    reader, calls = _counting_reader(mean, mean ** 2, band_rows=29)
    rows = _SharedRows(BandArray(reader, "mean"))
    for y0, y1 in ((0, 34), (32, 66), (64, 70), (10, 20)):
        got = rows.block(y0, y1)
        assert got.dtype == np.float32 and np.array_equal(got, mean[y0:y1].astype(np.float32))
        assert rows.block(y0, y1) is got                 # every channel from one read
    assert calls == [(0, 34), (34, 66), (66, 70), (10, 20)]
    plain = _SharedRows(mean[:, :, 0])
    assert np.array_equal(plain.block(3, 8), mean[3:8, :, :1].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_by_sorting_is_numpy_median(dtype):
    from hotpixel_shm.lines import _median
    rng = np.random.default_rng(4)
    for shape, axis in (((32, 50), 0), ((7, 33), 1), ((5, 6, 32), 2), ((31,), 0), ((4, 1), 1)):
        a = rng.standard_normal(shape).astype(dtype)
        a[0] = a[-1]                                      # ties
        want = np.median(a, axis=axis)
        assert np.array_equal(_median(a, axis), want)
        b = a.copy()
        assert np.array_equal(_median(b, axis, overwrite=True), want)


def test_plane_windows_are_the_plane_sliced():
    # a candidate line's checks read a window of columns of one plane: the
    # values of the whole plane's rows, for a channel of a photo read band
    # by band or value by value, and for a CFA sub-grid of a mosaic
    from hotpixel_shm.bands import BandArray
    from hotpixel_shm.lines import _Plane
    rng = np.random.default_rng(6)
    photo = rng.uniform(0, 255, (40, 30, 3))
    mosaic = rng.uniform(0, 4095, (41, 31, 1))
    for arr, kw in ((photo, {"ch": 2}), (mosaic, {"dy": 1, "dx": 0, "p": 2}),
                    (mosaic[:, :, 0], {"dy": 0, "dx": 1, "p": 2})):
        full = _Plane(arr, **kw)
        whole = full.rows(0, full.height)
        a3 = arr if arr.ndim == 3 else arr[:, :, None]
        reader, _ = _counting_reader(a3, a3, band_rows=7)
        view = BandArray(reader, "mean") if arr.ndim == 3 else BandArray(reader, "mean")[:, :, 0]
        banded = _Plane(view, **kw)
        for y0, y1, x0, x1 in ((0, 5, 0, 4), (3, 17, 6, 15), (9, 10, 0, full.width), (5, 5, 1, 2)):
            want = whole[y0:y1, x0:x1]
            for plane in (full, banded):
                got = plane.rows(y0, y1, x0, x1)
                assert got.dtype == np.float32 and np.array_equal(got, want)


def test_mosaic_positions_read_at_once_give_each_positions_offsets():
    # a mosaic whose sides are multiples of the CFA period: every position's
    # rows from one read of the frame's rows (issue 10), the offsets of the
    # sub-grids read one by one to the bit; other sides: one read per size
    from hotpixel_shm.bands import BandArray
    from hotpixel_shm.lines import _offsets, _mosaic_rows, _Plane, _plane_rows, _SharedRows
    frames, _ = simulate_raw_frames(8, width=192, height=128, seed=6, n_hot=0, n_weak_hot=0,
                                    n_stuck=0, n_dead=0, n_noisy=0,
                                    lines=[("column", 61, 100.0), ("row", 90, -100.0)])
    mean, var = _moments(list(frames), (128, 192, 1))
    planes = [_Plane(mean, 0, dy, dx, 2).rows for dy in range(2) for dx in range(2)]
    want = _offsets(64, 96, 1, _plane_rows(planes), 4)
    reader, _ = _counting_reader(mean, var, band_rows=29)
    for source in (mean, BandArray(reader, "mean")):
        got = _offsets(64, 96, 1, _mosaic_rows(_SharedRows(source), 2), 4, threads=2)
        for a, b in zip(got, want):
            for kind in ("column", "row"):
                assert all(np.array_equal(x, y) for x, y in zip(a[kind], b[kind]))
    cfa = cfa_array("RGGB", 128, 192)
    odd = find_lines(mean[:127, :191], var[:127, :191], cfa=cfa[:127, :191])
    assert {(d.kind, d.index) for d in odd} == {("column", 61), ("row", 90)}
