"""Tests of hotpixel_shm.bands: statistics read band by band equal the arrays."""
import numpy as np
import pytest

from hotpixel_shm.bands import ArrayBands, BandArray, BandReader, as_reader, iter_bands


def _reader(mean, var, band_rows=3, cache_bands=2, gather=False):
    calls = []

    def finish(y0, y1, om, ov):
        calls.append((y0, y1))
        om[...] = mean[y0:y1]
        ov[...] = var[y0:y1]

    def values_at(flat, om, ov):     # as a run's reader: scattered values alone
        om[...] = mean.reshape(-1)[flat]
        ov[...] = var.reshape(-1)[flat]
    return BandReader(mean.shape, mean.dtype, finish, band_rows=band_rows, cache_bands=cache_bands,
                      gather=values_at if gather else None), calls


@pytest.fixture
def planes():
    rng = np.random.default_rng(3)
    mean = rng.uniform(0, 255, (11, 7, 3))
    var = rng.uniform(0, 50, (11, 7, 3))
    return mean, var


KEYS = [
    np.s_[:], np.s_[2:9], np.s_[::2], np.s_[1::3, 2:6], np.s_[:, :, 1], np.s_[3:4, ::-1, 0],
    np.s_[..., 2], np.s_[5], np.s_[4, 3], np.s_[:, 6], np.s_[::-1], np.s_[-3:],
]


@pytest.mark.parametrize("key", KEYS)
def test_views_equal_numpy(planes, key):
    mean, var = planes
    reader, _ = _reader(mean, var)
    for which, ref in (("mean", mean), ("var", var)):
        got = BandArray(reader, which)[key]
        assert np.array_equal(np.asarray(got), ref[key])
        assert np.shape(got) == ref[key].shape


def test_nested_views_and_gathers(planes):
    mean, var = planes
    reader, _ = _reader(mean, var)
    plane = BandArray(reader, "var")[:, :, 2][1::2, 1::2]
    ref = var[:, :, 2][1::2, 1::2]
    assert np.array_equal(np.asarray(plane), ref)
    ys = np.array([[0, 4], [2, 1]])
    xs = np.array([[2, 0], [2, 1]])
    assert np.array_equal(plane[ys, xs], ref[ys, xs])
    assert np.array_equal(plane[ys[:, :, None], xs[:, None, :]], ref[ys[:, :, None], xs[:, None, :]])
    assert np.array_equal(plane[2:4], ref[2:4])
    buf = np.empty((2, 3), np.float32)
    np.copyto(buf, plane[2:4], casting="unsafe")
    assert np.allclose(buf, ref[2:4])


def test_cache_finishes_each_band_once(planes):
    mean, var = planes
    reader, calls = _reader(mean, var, band_rows=4, cache_bands=2)
    m = BandArray(reader, "mean")
    v = BandArray(reader, "var")
    np.asarray(m[0:4])
    np.asarray(v[0:4])          # same band: from the cache
    np.asarray(m[1:3])
    assert calls == [(0, 4)]
    np.asarray(m[4:8]), np.asarray(m[8:11]), np.asarray(m[0:2])   # LRU of two: band 0 again
    assert calls == [(0, 4), (4, 8), (8, 11), (0, 4)]
    assert reader.nbytes_cached() == 2 * 2 * 4 * 7 * 3 * 8


def test_rows_through_passes_the_cache_by(planes):
    # issue 10: the line test's pass over the frame beside detection: rows of
    # cached bands copied from the cache, the others finished straight into
    # the caller's arrays (float32 too: the reader's values cast), in one call
    # per run of uncached rows, and the cache neither filled nor reordered
    from hotpixel_shm.bands import frame_reader
    mean, var = planes
    reader, calls = _reader(mean, var, band_rows=3, cache_bands=2)
    np.asarray(BandArray(reader, "mean")[3:5])          # band 1 cached
    np.asarray(BandArray(reader, "mean")[9:10])         # band 3 cached
    assert calls == [(3, 6), (9, 11)]
    for dtype in (np.float32, np.float64):
        del calls[:]
        om = np.full((10, 7, 3), np.nan, dtype)
        ov = np.full((10, 7, 3), np.nan, dtype)
        reader.rows_through(1, 11, om, ov)
        assert np.array_equal(om, mean[1:11].astype(dtype))
        assert np.array_equal(ov, var[1:11].astype(dtype))
        assert calls == [(1, 3), (6, 9)]
        assert list(reader._cache) == [1, 3]
    reader.rows_through(4, 4, om[:0], ov[:0])
    assert calls == [(1, 3), (6, 9)]
    with pytest.raises(Exception, match="not within"):
        reader.rows_through(5, 12, om, ov)
    whole = BandArray(reader, "mean")
    assert frame_reader(whole) is reader and frame_reader(BandArray(reader, "var")) is reader
    assert frame_reader(whole[:, :, 0]) is None and frame_reader(whole[1:]) is None
    assert frame_reader(mean) is None


def test_iter_bands_and_rows_cover_the_frame(planes):
    mean, var = planes
    reader, _ = _reader(mean, var, band_rows=2, cache_bands=1)
    got_m = np.concatenate([m for _, _, m, _ in iter_bands(reader, band_rows=4)])
    assert np.array_equal(got_m, mean)
    om = np.empty((11, 7, 3), np.float32)
    ov = np.empty((11, 7, 3), np.float32)
    reader.rows(0, 11, om, ov)          # longer than the cache: straight through
    assert np.allclose(ov, var)
    assert as_reader(BandArray(reader, "mean"), BandArray(reader, "var")) is reader
    arr = as_reader(mean, var)
    assert isinstance(arr, ArrayBands)
    m, v = arr.rows(2, 5)
    assert np.shares_memory(m, mean) and np.array_equal(v, var[2:5])


def test_detection_and_picture_read_bands_and_find_the_same(planes):
    from hotpixel_shm.detect import detect
    from hotpixel_shm.picture import render_picture
    from hotpixel_shm.synth import make_photo_like
    frames = np.stack([make_photo_like(200, 260, seed=i).astype(np.float64) for i in range(5)])
    mean, var = frames.mean(0), frames.var(0)
    mean[100, 120, 1] += 90
    mean[40, 70, 0] += 40
    var[40, 70, 0] = 0
    reader, calls = _reader(mean, var, band_rows=32, cache_bands=3)
    ref = detect(mean, var, 5)
    got = detect(BandArray(reader, "mean"), BandArray(reader, "var"), 5)
    assert ref and got == ref
    assert calls and max(e - s for s, e in calls) == 32       # never the whole frame at once
    # the channels take turns on each band: every band of rows is finished
    # once for all of them (issue 10), not once per channel
    fresh, calls = _reader(mean, var, band_rows=32, cache_bands=3, gather=True)
    assert detect(BandArray(fresh, "mean"), BandArray(fresh, "var"), 5) == ref
    assert sorted(calls) == [(y, min(200, y + 32)) for y in range(0, 200, 32)]
    a, _ = render_picture(mean, ref)
    b, _ = render_picture(BandArray(reader, "mean"), ref)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_stats_summary_and_file_from_bands(planes, tmp_path):
    from hotpixel_shm import statsio
    from hotpixel_shm.model import Stats
    mean, var = planes
    reader, calls = _reader(mean, var, band_rows=2, cache_bands=1)
    plain = Stats(n=4, mean=mean, var=var, tier="exact", files=["a"])
    banded = Stats(n=4, mean=BandArray(reader, "mean"), var=BandArray(reader, "var"), tier="exact",
                   files=["a"])
    assert banded.shape == plain.shape
    assert banded.variance_range() == pytest.approx(plain.variance_range(), rel=1e-15)
    assert banded.lowest_variance(5) == plain.lowest_variance(5)
    path = str(tmp_path / "s.npz")
    statsio.save_stats(path, banded, "uint8")
    with np.load(path, allow_pickle=False) as z:      # the same keys as numpy.savez writes
        assert sorted(z.files) == sorted(statsio.STATS_KEYS)
        assert np.array_equal(z["mean"], mean) and np.array_equal(z["var"], var)
    loaded, dt = statsio.load_stats(path)
    assert dt == "uint8" and loaded.n == 4 and loaded.files == ["a"]
    # a file written by numpy.savez, as before this change, still loads
    old = str(tmp_path / "old.npz")
    np.savez(old, n=np.asarray(4), mean=mean, var=var, shape=np.asarray(mean.shape), tier=np.asarray("exact"),
             dtype=np.asarray("uint8"), files=np.asarray(["a"]), version=np.asarray("0"))
    again, _ = statsio.load_stats(old)
    assert np.array_equal(again.var, var)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_summary_noted_as_bands_are_read(dtype):
    # the summary's min, max, mean and lowest variances are noted as each band
    # is first finished (issue 10): after a read of the frame it finishes
    # nothing more, and equals the full pass over the bands bit for bit
    from hotpixel_shm.bands import default_band_rows
    from hotpixel_shm.model import Stats
    rng = np.random.default_rng(7)
    shape = (300, 3000, 3)              # six bands, three cached
    var = rng.integers(0, 4, shape).astype(dtype)      # many ties
    var[77, 5, 1] = -0.5
    mean = rng.uniform(0, 255, shape).astype(dtype)
    reader, calls = _reader(mean, var, band_rows=default_band_rows(shape), cache_bands=3)
    assert reader.band_rows < 65                         # several bands
    banded = Stats(n=4, mean=BandArray(reader, "mean"), var=BandArray(reader, "var"),
                   tier="exact", files=[])
    for y in (250, 0, 120):                              # any order, as a reader reads
        np.asarray(banded.mean[y:y + 3])
    np.asarray(banded.var)
    done = len(calls)
    got = (banded.variance_range(), banded.lowest_variance(10))
    assert len(calls) == done
    full = Stats(n=4, mean=mean, var=var, tier="exact", files=[])._variance_pass(11)
    assert got == (full[0], full[1][:10])
    assert got[1][0] == (5, 77, 1, -0.5)


def test_mosaic_detection_and_lines_read_each_band_once():
    # a raw mosaic's CFA positions take turns band by band (issue 10): every
    # band of rows is finished once for all of them, in detection and in
    # the line test alike, and both find what the arrays give
    from hotpixel_shm.detect import detect
    from hotpixel_shm.lines import find_lines
    rng = np.random.default_rng(5)
    h, w = 200, 150
    yy, xx = np.mgrid[0:h, 0:w]
    mean = (300 + 40 * np.sin(xx / 9.0) + 30 * np.cos(yy / 13.0) + rng.normal(0, 2, (h, w)))[..., None]
    var = (20 + rng.normal(0, 0.5, (h, w)))[..., None] ** 2
    mean[60, 41, 0] += 400
    mean[:, 90, 0] += 25
    cfa = np.tile(np.array([[0, 1], [3, 2]], np.uint8), (h // 2, w // 2))
    ref = (detect(mean, var, 16, cfa=cfa), find_lines(mean, var, cfa=cfa))
    assert ref[0] and ref[1]
    bands = [(y, min(h, y + 40)) for y in range(0, h, 40)]
    reader, calls = _reader(mean, var, band_rows=40, cache_bands=3, gather=True)
    assert detect(BandArray(reader, "mean"), BandArray(reader, "var"), 16, cfa=cfa) == ref[0]
    assert calls == bands
    reader, calls = _reader(mean, var, band_rows=40, cache_bands=3, gather=True)
    assert find_lines(BandArray(reader, "mean"), BandArray(reader, "var"), cfa=cfa) == ref[1]
    # one pass for the offsets of all four positions (it was two per
    # position), past the cache, each row finished once; then the found
    # column's checks along its length, band by band through the cache
    through = [c for c in calls if c not in bands]
    assert through[0][0] == 0 and through[-1][1] == h
    assert all(a[1] == b[0] for a, b in zip(through, through[1:]))
    assert len(calls) - len(through) <= 2 * len(bands)


def test_map_ordered_in_order_on_distinct_slots():
    import threading
    from hotpixel_shm.bands import map_ordered
    busy, lock, seen = set(), threading.Lock(), []

    def fn(item, slot):
        with lock:
            assert slot not in busy         # no two calls in flight share a slot
            busy.add(slot)
            seen.append(slot)
        out = np.arange(item + 1).sum()
        with lock:
            busy.discard(slot)
        return item, out
    for threads in (1, 2, 3):
        seen.clear()
        assert list(map_ordered(fn, range(10), threads)) == [(i, i * (i + 1) // 2) for i in range(10)]
        assert set(seen) <= set(range(threads))

    def boom(item, slot):
        if item == 3:
            raise ValueError("band 3")
        return item
    with pytest.raises(ValueError, match="band 3"):
        list(map_ordered(boom, range(10), 2))


def test_a_band_two_threads_want_is_finished_once(monkeypatch):
    # the second thread waits for the first one's finishing instead of
    # finishing the band again (issue 10: detection's bands on threads)
    import threading
    from hotpixel_shm import bands as bands_mod
    waiting = threading.Event()

    class Event(threading.Event):
        def wait(self, timeout=None):
            waiting.set()
            return super().wait(timeout)
    monkeypatch.setattr(bands_mod, "_Event", Event)
    mean = np.arange(6 * 4 * 3, dtype=np.float64).reshape(6, 4, 3)
    started, calls = threading.Event(), []

    def finish(y0, y1, out_mean, out_var):
        calls.append(y0)
        started.set()
        waiting.wait(10)        # the other thread waits for this band
        out_mean[...] = mean[y0:y1]
        out_var[...] = 2 * mean[y0:y1]
    reader = BandReader(mean.shape, np.float64, finish, band_rows=3)
    got = {}
    first = threading.Thread(target=lambda: got.setdefault("a", reader.rows(0, 3)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: got.setdefault("b", reader.rows(1, 3)))
    second.start()
    first.join(20)
    second.join(20)
    assert calls == [0] and waiting.is_set()
    assert np.array_equal(got["a"][0], mean[:3]) and np.array_equal(got["b"][1], 2 * mean[1:3])
