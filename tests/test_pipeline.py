"""The pipeline's steps: statistics that know what they are, raw statistics
loaded again judged as the run that made them, each output written once."""
import json
import os

import numpy as np
import pytest

from hotpixel_shm import export, pipeline, statsio
from hotpixel_shm.cli import main
from hotpixel_shm.model import Mosaic, Stats
from hotpixel_shm.welford import merge_stats

from conftest import make_frames, write_images


def _defects(path):
    with open(path) as fh:
        rep = json.load(fh)
    return rep, [(d["x"], d["y"], d["kind"], d.get("colour")) for d in rep["defects"]]


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    pytest.importorskip("rawpy")
    from hotpixel_shm.dng import write_raw_set
    d = tmp_path_factory.mktemp("raw")
    write_raw_set(str(d), n=10, width=128, height=96, pattern="GRBG", white=4095)
    return d


def test_loaded_raw_statistics_give_the_same_defects_colours_included(raw_dir, tmp_path, capsys):
    st, js = str(tmp_path / "s.npz"), str(tmp_path / "a.json")
    assert main(["-q", "--workers", "2", str(raw_dir), "--save-stats", st, "--json", js]) == 0
    rep_a, first = _defects(js)
    assert first and all(c in ("R", "G", "B") for *_, c in first)
    # the statistics file says what it holds
    stats, dtype = statsio.load_stats(st)
    assert dtype == "uint16" and stats.sample_dtype == "uint16" and stats.tier == rep_a["engine"]["tier"]
    assert stats.mosaic is not None and stats.mosaic.describe() == "2x2 CFA GRBG"
    assert stats.mosaic.white_level == 4095
    # loaded with no new raw file among the inputs: the same raw detector
    empty = tmp_path / "empty"
    empty.mkdir()
    js2 = str(tmp_path / "b.json")
    assert main(["-q", "--load-stats", st, str(empty), "--json", js2]) == 0
    rep_b, again = _defects(js2)
    assert again == first
    js3 = str(tmp_path / "c.json")
    assert main(["-q", "--resume", st, str(raw_dir), "--json", js3]) == 0
    assert _defects(js3)[1] == first


def test_the_run_does_not_unpack_a_raw_file_to_learn_its_colours(raw_dir, tmp_path, monkeypatch):
    from hotpixel_shm import rawio
    calls = []
    real = rawio._read_detail
    monkeypatch.setattr(rawio, "_read_detail", lambda *a: calls.append(a) or real(*a))
    js = str(tmp_path / "r.json")
    assert main(["-q", "--workers", "1", str(raw_dir), "--json", js]) == 0
    assert calls == []  # the probe's open-time layout was enough
    assert all("colour" in d for d in _defects(js)[0]["defects"])


def test_raw_files_of_another_colour_filter_are_skipped(raw_dir, tmp_path, capsys):
    from hotpixel_shm.dng import write_raw_set
    d = tmp_path / "mixed"
    d.mkdir()
    for p in sorted(os.listdir(raw_dir)):
        os.link(raw_dir / p, d / p)
    write_raw_set(str(d / "other"), n=2, width=128, height=96, pattern="RGGB")
    for p in os.listdir(d / "other"):
        os.rename(d / "other" / p, d / ("z" + p))
    assert main(["-q", str(d)]) == 0
    err = capsys.readouterr().err
    assert err.count("colour filter 2x2 CFA RGGB differs from the reference 2x2 CFA GRBG") == 2


def test_statistics_files_round_trip_their_metadata_and_older_files_still_load(tmp_path):
    rng = np.random.default_rng(0)
    mean = rng.random((6, 8, 1))
    mosaic = Mosaic(tile=np.array([[0, 1], [3, 2]], np.uint8), colour_desc="RGBG", white_level=None)
    st = Stats(n=3, mean=mean, var=mean / 2, tier="float64", files=["a", "b", "c"],
               sample_dtype="uint16", mosaic=mosaic)
    p = str(tmp_path / "s.npz")
    statsio.save_stats(p, st)
    back, dt = statsio.load_stats(p)
    assert dt == "uint16" and back.mosaic.same_as(mosaic) and back.mosaic.white_level is None
    np.testing.assert_array_equal(back.mosaic.cfa((6, 8)), np.tile([[0, 1], [3, 2]], (3, 4)))
    # a file of an earlier version: no mosaic keys; loads as photo statistics
    with np.load(p) as z:
        old = {k: z[k] for k in statsio.STATS_KEYS}
    q = str(tmp_path / "old.npz")
    np.savez(q, **old)
    back, dt = statsio.load_stats(q)
    assert back.mosaic is None and back.sample_dtype == "uint16"
    # merging takes the known description from either side, refuses a different one
    merged = merge_stats(back, st)
    assert merged.mosaic.same_as(mosaic) and merged.sample_dtype == "uint16"
    other = Stats(n=1, mean=mean, var=mean, tier="float64", sample_dtype="uint16",
                  mosaic=Mosaic(tile=np.array([[2, 1], [3, 0]], np.uint8)))
    with pytest.raises(ValueError, match="CFA BGGR"):
        merge_stats(st, other)
    # an incomplete description is refused
    partial = dict(old, cfa_tile=np.zeros((2, 2), np.uint8))
    np.savez(q, **partial)
    with pytest.raises(ValueError, match="incomplete raw mosaic"):
        statsio.load_stats(q)


def test_each_output_is_written_once(tmp_path, monkeypatch, capsys):
    d = tmp_path / "shots"
    d.mkdir()
    write_images(d, make_frames(5, (16, 20, 3), seed=3))
    calls = []
    for name in ("write_json", "write_csv", "write_dcraw", "write_siril", "write_mask",
                 "write_rawtherapee"):
        real = getattr(export, name)

        def counted(path, *a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(path, *a, **k)
        monkeypatch.setattr(export, name, counted)
    outs = {o: str(tmp_path / f"out.{o}") for o in ("json", "csv", "dcraw", "siril", "mask")}
    outs["rawtherapee"] = str(tmp_path / "x.badpixels")
    outs["picture"] = str(tmp_path / "pic.png")
    argv = [str(d)] + [a for o, p in outs.items() for a in (f"--{o}", p)]
    assert main(argv) == 0
    assert sorted(calls) == sorted(["write_json", "write_csv", "write_dcraw", "write_siril",
                                    "write_mask", "write_rawtherapee"])
    wrote = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("wrote ")]
    assert sorted(wrote) == sorted(f"wrote {p}" for p in outs.values())


def test_report_has_engine_tier_beside_dtype(tmp_path):
    d = tmp_path / "shots"
    d.mkdir()
    write_images(d, make_frames(4, (12, 14, 3), seed=5))
    js = str(tmp_path / "r.json")
    assert main(["-q", "--dtype", "float32", str(d), "--json", js]) == 0
    eng = _defects(js)[0]["engine"]
    assert eng["dtype"] == eng["tier"] == "float32"


def test_detect_is_chosen_from_the_statistics(raw_dir):
    """The same numbers as photo statistics and as raw ones: two detectors."""
    from hotpixel_shm.inputs import probe_all
    headers, _ = probe_all(sorted(str(raw_dir / p) for p in os.listdir(raw_dir)))
    settings = pipeline.Settings(workers=1)
    group = pipeline.Group(headers=headers, shape=headers[0].shape, sample_dtype="uint16")
    stats, _ = pipeline.run_group(group, _plan(group, settings), settings, pipeline.LogToLogging())
    raw = pipeline.detect_defects(stats)
    assert raw and all(d.colour in ("R", "G", "B") for d in raw)
    photo = pipeline.detect_defects(Stats(n=stats.n, mean=stats.mean, var=stats.var,
                                          tier=stats.tier, sample_dtype="uint16"))
    assert all(d.colour is None for d in photo)


def _plan(group, settings):
    return pipeline.plan_group(group, settings, pipeline.LogToLogging())


def test_line_test_beside_detection_gives_the_same_report(tmp_path, monkeypatch):
    # issue 10: with more than one worker the line test runs on a thread of
    # its own beside detection (budget.finish_threads); one worker, one
    # after the other.  The same statistics (one worker) give the same report
    # either way, and with detection's bands on three threads.
    import threading
    from hotpixel_shm import budget, detect, pipeline as pl
    from hotpixel_shm.synth import write_sample_set
    write_sample_set(tmp_path / "set", n=12, seed=31)
    seen = {}
    real_lines, real_map = pl.detect_lines, detect.map_ordered

    def lines_spy(*a, **k):
        seen["lines thread"] = threading.current_thread() is threading.main_thread()
        return real_lines(*a, **k)

    def map_spy(fn, items, threads=1):
        seen["detect threads"] = threads
        return real_map(fn, items, threads)
    monkeypatch.setattr(pl, "detect_lines", lines_spy)
    monkeypatch.setattr(detect, "map_ordered", map_spy)

    def run(name, workers):
        seen.clear()
        js = str(tmp_path / f"{name}.json")
        assert main(["-q", "--workers", str(workers), "--dtype", "exact",
                     str(tmp_path / "set"), "--json", js]) == 0
        with open(js) as fh:
            rep = json.load(fh)
        assert rep["engine"]["workers"] == workers
        return {k: v for k, v in rep.items() if k not in ("engine", "created")}, dict(seen)
    _, how = run("two", 2)
    assert how == {"lines thread": False, "detect threads": 1}
    one, how = run("one", 1)
    assert how == {"lines thread": True, "detect threads": 1}
    assert len(one["defects"]) >= 5
    monkeypatch.setattr(budget, "finish_threads", lambda workers: (3, True))
    again, how = run("beside", 1)
    assert how == {"lines thread": False, "detect threads": 3}
    assert again == one


def test_finish_threads():
    from hotpixel_shm.budget import finish_threads
    assert finish_threads(1) == (1, False)
    assert finish_threads(2) == (1, True)
    assert finish_threads(3) == (2, True)


def _cancellable_line_test(monkeypatch, seen, before=lambda: None):
    """Put in place of ``lines.find_lines``: it calls ``before()``, waits (up
    to 10 s) to be cancelled, then runs the real search, noting in ``seen``
    how long it waited and whether it ended with ``lines.Cancelled``."""
    import time
    from hotpixel_shm import lines
    real = lines.find_lines

    def slow_lines(*a, cancel=None, **k):
        t0 = time.monotonic()
        before()
        while not cancel() and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        seen["waited"] = time.monotonic() - t0
        try:
            return real(*a, cancel=cancel, **k)
        except lines.Cancelled:
            seen["cancelled"] = True
            raise
    monkeypatch.setattr(lines, "find_lines", slow_lines)


def test_an_interrupt_in_detection_stops_the_line_test_beside_it(tmp_path, monkeypatch):
    # issue 13: Ctrl-C is obeyed within a second at any moment.  With two
    # workers the line test runs on a thread beside detection; when
    # detection is interrupted, the pool must not wait for the whole line
    # test (about a second at 24 MP): it stops at its next band.  Here the
    # line test waits (up to 10 s) for the cancel, then runs: it must end
    # with lines.Cancelled, and the interrupt must come through.
    import threading
    import time
    from hotpixel_shm.synth import write_sample_set
    write_sample_set(tmp_path / "set", n=6, seed=32)
    started, seen = threading.Event(), {}
    _cancellable_line_test(monkeypatch, seen, started.set)

    def interrupted_detection(*a, **k):
        assert started.wait(10)
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline, "detect_defects", interrupted_detection)
    settings = pipeline.Settings(workers=2)
    log = pipeline.LogToLogging()
    group = pipeline.prepare([str(tmp_path / "set")], settings, log)[0]
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pipeline.analyse_group(group, _plan(group, settings), settings, log)
    assert seen.get("cancelled") and seen["waited"] < 5, seen
    assert time.monotonic() - t0 < 30


def test_the_line_test_obeys_its_cancel():
    from hotpixel_shm import lines
    rng = np.random.default_rng(3)
    mean = rng.normal(100, 1, (96, 80, 3))
    var = np.ones_like(mean)
    assert lines.find_lines(mean, var, cancel=lambda: False) == lines.find_lines(mean, var)
    asked = []

    def after(k):
        def cancel():
            asked.append(1)
            return len(asked) > k
        return cancel
    for k in (0, 2):
        asked.clear()
        with pytest.raises(lines.Cancelled):
            lines.find_lines(mean, var, cancel=after(k))


def test_an_interrupt_while_waiting_for_the_line_test_stops_it(tmp_path, monkeypatch):
    # issue 13 again: detection may end first (its bands on several
    # threads); a Ctrl-C that comes while the main thread waits for the
    # line test must stop that too, not wait for its end.  The SIGINT is
    # sent once the main thread is seen waiting in the line test's result.
    import signal
    import sys
    import threading
    import time
    from hotpixel_shm.synth import write_sample_set
    write_sample_set(tmp_path / "set", n=6, seed=32)
    main_thread = threading.main_thread().ident
    seen = {}

    def waiting_in_result():
        frame = sys._current_frames().get(main_thread)
        while frame is not None:
            if frame.f_code.co_name == "result" and "concurrent" in frame.f_code.co_filename:
                return True
            frame = frame.f_back
        return False

    def interrupt_once_waited_for():
        t0 = time.monotonic()
        while not waiting_in_result() and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        signal.pthread_kill(main_thread, signal.SIGINT)
    _cancellable_line_test(monkeypatch, seen, interrupt_once_waited_for)
    monkeypatch.setattr(pipeline, "detect_defects", lambda *a, **k: [])
    settings = pipeline.Settings(workers=2)
    log = pipeline.LogToLogging()
    group = pipeline.prepare([str(tmp_path / "set")], settings, log)[0]
    plan = _plan(group, settings)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.analyse_group(group, plan, settings, log)
    finally:
        signal.signal(signal.SIGINT, before)
    assert seen.get("cancelled") and seen["waited"] < 5, seen
