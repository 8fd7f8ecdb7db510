"""Smoke tests of the benchmark scripts (``scripts/bench.py``, ``scripts/article_baseline.py``).

They run the scripts end to end on tiny sets; nothing here asserts a timing.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hotpixel_shm.tiers import TIERS

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
BENCH = os.path.join(SCRIPTS, "bench.py")
ARTICLE = os.path.join(SCRIPTS, "article_baseline.py")


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is made
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench_mod():
    return _load(BENCH, "hotpixel_bench_script")


@pytest.fixture(scope="module")
def article_mod():
    return _load(ARTICLE, "hotpixel_article_script")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """The whole default benchmark on 4 images of 64x48, one round."""
    out = tmp_path_factory.mktemp("bench-out")
    result, stdout = _run_bench(out, "bench.json", "--count", "4", "--small-count", "2")
    return out, result, stdout


def _run_bench(out, json_name, *args):
    """``scripts/bench.py`` in a new interpreter on 64x48 images, one round,
    writing into ``out``: the JSON file ``json_name`` it wrote, and its stdout."""
    proc = subprocess.run(
        [sys.executable, BENCH, "--width", "64", "--height", "48", "--rounds", "1",
         "--out", str(out), *args],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(os.path.join(out, json_name), encoding="utf-8") as fh:
        return json.load(fh), proc.stdout


def _numbers(v):
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_every_row_and_ratio_in_json(bench_run, bench_mod):
    _, result, _ = bench_run
    names = [r["name"] for r in result["rows"]]
    expected = (["article", "decode-pillow", "decode-simplejpeg"]
                + [f"hps-{t}" for t in TIERS]
                + ["hps-auto-workers", "hps-auto-numpy", "hps-auto-k1"])
    assert names == expected
    for row in result["rows"]:
        for key in bench_mod.ROW_FIELDS:
            assert key in row, (row["name"], key)
        assert row["ok"], row
        assert len(row["seconds"]) == 1 and len(row["peak_bytes"]) == 1
        for key in ("median_seconds", "images_per_s", "megapixels_per_s", "peak_bytes_max",
                    "time_vs_article", "time_vs_decode", "peak_vs_article"):
            assert _numbers(row[key]), (row["name"], key, row[key])
    by = {r["name"]: r for r in result["rows"]}
    assert by["article"]["time_vs_article"] == pytest.approx(1.0)
    fastest = by[result["fastest_decode"]]
    assert fastest["time_vs_decode"] == pytest.approx(1.0)
    for t in TIERS:
        assert by[f"hps-{t}"]["tier"] == t
        assert by[f"hps-{t}"]["engine"]["workers"] == 2
    assert result["default_tier"] in TIERS
    # both kernel paths and the batch size are in the rows
    from hotpixel_shm import kernels
    assert by["hps-auto-numpy"]["kernels"] == "numpy" and by["hps-auto-k1"]["batch"] == 1
    assert by["hps-auto-workers"]["kernels"] == kernels.NAME
    small = result["small"]
    assert small["count"] == 2
    assert [r["name"] for r in small["rows"]] == ["decode-pillow", "decode-simplejpeg",
                                                  "hps-auto-workers", "hps-auto-numpy", "hps-auto-k1"]
    assert all(r["ok"] for r in small["rows"])
    assert result["set"]["count"] == 4
    assert (result["set"]["width"], result["set"]["height"]) == (64, 48)
    for key in ("cpu", "cores", "ram_bytes", "python", "numpy"):
        assert result["machine"][key]


def test_only_filters_the_small_set_too(tmp_path):
    result, _ = _run_bench(tmp_path / "out", "bench.json", "--count", "3", "--small-count", "2",
                           "--only", "decode-pillow", "hps-float32")
    assert [r["name"] for r in result["rows"]] == ["decode-pillow", "hps-float32"]
    # the small set has no tier rows: only the decode bound asked for
    assert [r["name"] for r in result["small"]["rows"]] == ["decode-pillow"]


def test_targets_reported(bench_run):
    _, result, stdout = bench_run
    targets = {t["name"]: t for t in result["targets"]}
    assert set(targets) == {"vs_decode", "vs_article", "float32_memory", "small_vs_decode"}
    for t in targets.values():
        assert _numbers(t["value"])
        assert isinstance(t["passed"], bool)
    assert stdout.count("PASS") + stdout.count("FAIL") >= 3


def test_markdown_has_every_row(bench_run):
    out, result, _ = bench_run
    text = (out / "bench.md").read_text(encoding="utf-8")
    table = [line for line in text.splitlines() if line.startswith("| ")]
    # header + one line per command, for the whole set and the small one
    assert len(table) == 2 + len(result["rows"]) + len(result["small"]["rows"])
    for row in result["rows"]:
        assert row["label"] in text
    assert "t / article" in table[0] and "t / decode" in table[0] and "peak / article" in table[0]
    assert result["machine"]["cpu"] in text


def test_image_set_is_cached(bench_run, bench_mod):
    out, _, _ = bench_run
    set_dir = out / "set-64x48-q90-n4"
    files = sorted(p.name for p in set_dir.glob("*.jpg"))
    assert len(files) == 4
    stamp = {f: os.stat(set_dir / f).st_mtime_ns for f in files}
    again = bench_mod.make_image_set(str(set_dir), 4, 64, 48, 90, processes=1)
    assert [os.path.basename(p) for p in again] == files
    assert {f: os.stat(set_dir / f).st_mtime_ns for f in files} == stamp  # not rewritten
    with Image.open(again[0]) as im:
        assert im.size == (64, 48) and im.format == "JPEG"


def test_failed_command_is_reported_not_hidden(tmp_path, bench_mod):
    cmd = bench_mod.Command("broken", "a failing command", "article",
                            [sys.executable, "-c", "raise SystemExit(3)"], 1)
    bench_mod.run_commands([cmd], 1, str(tmp_path), count=1)
    summary = bench_mod.summarise([cmd], 1, 1.0)
    row = summary["rows"][0]
    assert not row["ok"] and "exit code 3" in row["error"]
    assert row["median_seconds"] is None
    targets = bench_mod.check_targets(summary)
    assert [t["passed"] for t in targets] == [False, False, False]


def test_measure_sees_the_memory_of_children(tmp_path, bench_mod):
    # a child process that holds 200 MB for a moment: the tree's peak must include it
    script = tmp_path / "child.py"
    script.write_text(
        "import multiprocessing as mp, time\n"
        "def hold():\n"
        "    b = bytearray(200 * 2**20)\n"
        "    b[::4096] = b'x' * len(b[::4096])  # touch every page\n"
        "    time.sleep(0.6)\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=hold)\n"
        "    p.start(); p.join()\n"
        "    raise SystemExit(p.exitcode)\n")
    run = bench_mod.measure([sys.executable, str(script)], str(tmp_path / "log"), interval=0.02)
    assert run["returncode"] == 0
    assert run["peak_bytes"] > 200 * 2**20
    assert run["cpu_seconds"] is not None and run["cpu_seconds"] > 0


def test_kernels_mode_writes_every_tier(tmp_path, bench_mod):
    assert bench_mod.main(["--kernels", "--width", "96", "--height", "64", "--rounds", "1",
                           "--out", str(tmp_path)]) == 0
    with open(tmp_path / "bench-kernels.json", encoding="utf-8") as fh:
        result = json.load(fh)
    impls = sorted({r["kernels"] for r in result["rows"]})
    assert [r["tier"] for r in result["rows"]] == [t for t in TIERS for _ in impls for _ in (1, 4)]
    assert "numpy" in impls and {r["batch"] for r in result["rows"]} == {1, 4}
    for r in result["rows"]:
        assert _numbers(r["update_vs_copy"]) and _numbers(r["update_seconds"])
    assert [(r["kernels"], r["batch"]) for r in result["residual_rows"]] == \
        [(i, k) for i in sorted(impls, key=[r["kernels"] for r in result["rows"]].index)
         for k in (1, 4)]
    assert all(_numbers(r["seconds"]) for r in result["residual_rows"])
    assert "simplejpeg" in result["decode_seconds"]


def test_scaling_mode(tmp_path):
    result, _ = _run_bench(tmp_path, "bench-scaling.json", "--scaling", "--scaling-counts", "2,3",
                           "--only", "decode-simplejpeg", "hps-default")
    assert result["scaling"]["counts"] == [2, 3]
    assert [(r["count"], r["name"]) for r in result["rows"]] == [
        (2, "decode-simplejpeg"), (2, "hps-default"), (3, "decode-simplejpeg"), (3, "hps-default")]
    for cells in result["scaling"]["per_image"].values():
        assert [c["count"] for c in cells] == [2, 3]
        assert all(_numbers(c["seconds_per_image"]) for c in cells)
    assert (tmp_path / "bench-scaling.md").is_file()


# --------------------------------------------------------------------------- the baseline

def _frames(tmp_path, n, seed=0):
    rng = np.random.default_rng(seed)
    paths, arrays = [], []
    for i in range(n):
        # PNG: lossless, so the script's input equals what numpy sees here;
        # a brightness that drifts across the set makes the chunks' means differ.
        a = np.clip(rng.normal(60 + 12 * i, 20, (12, 16, 3)), 0, 255).astype(np.uint8)
        p = tmp_path / f"f{i:02d}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
        arrays.append(a.astype(np.float64))
    return paths, np.stack(arrays)


def test_article_worker_is_welford(tmp_path, article_mod):
    paths, stack = _frames(tmp_path, 7)
    count, mean, m2 = article_mod.worker(paths)
    assert count == 7
    np.testing.assert_allclose(mean, stack.mean(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(m2 / count, stack.var(axis=0), rtol=1e-10, atol=1e-9)


def test_article_split_is_static_and_complete(article_mod):
    files = [f"f{i}" for i in range(7)]
    chunks = article_mod.split(files, 3)
    assert chunks == [["f0", "f1", "f2"], ["f3", "f4"], ["f5", "f6"]]
    assert article_mod.split(files[:1], 2) == [["f0"], []]


def test_article_combination_keeps_the_bug(tmp_path, article_mod):
    # The baseline sums M2 over the workers: with drifting brightness, its
    # variance is smaller than the true one.  The bug is the point of the baseline.
    paths, stack = _frames(tmp_path, 6)
    proc = subprocess.run([sys.executable, ARTICLE, "--processes", "2", *paths],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("variance:"))
    printed_mean_var = float(line.rsplit("mean", 1)[1])
    true_mean_var = float(stack.var(axis=0).mean())
    halves = [stack[:3], stack[3:]]
    buggy = float((sum(h.var(axis=0) * 3 for h in halves) / 6).mean())
    assert printed_mean_var == pytest.approx(buggy, rel=1e-3)
    assert printed_mean_var < 0.9 * true_mean_var
    assert "lowest-variance subpixels" in proc.stdout


def test_kernels_ab_compares_builds_and_their_bits(capsys):
    """scripts/kernels_ab.py on a tiny frame, the built kernels against themselves."""
    pytest.importorskip("hotpixel_shm._ckernels")
    from hotpixel_shm import _ckernels
    ab = _load(os.path.join(SCRIPTS, "kernels_ab.py"), "hotpixel_kernels_ab_script")
    assert ab.main([f"a={_ckernels.__file__}", f"b={_ckernels.__file__}", "--size", "40x30",
                    "--tiers", "exact,float16", "--batch", "1,3", "--reps", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6      # exact, float16, residual; K = 1 and 3
    assert all(" a " in ln and " b " in ln and ln.endswith("same bits") for ln in lines)


def test_kernels_ab_times_the_reduce_and_tells_other_bits(capsys):
    """--reduce: a line per tier, part count and output dtype; a build whose
    finish is a unit off in the last place is told."""
    pytest.importorskip("hotpixel_shm._ckernels")
    import types
    from hotpixel_shm import _ckernels
    from hotpixel_shm.welford import Accumulator
    ab = _load(os.path.join(SCRIPTS, "kernels_ab.py"), "hotpixel_kernels_ab_script")
    assert ab.main([f"a={_ckernels.__file__}", f"b={_ckernels.__file__}", "--size", "40x30",
                    "--batch", "2", "--reps", "1", "--no-residual", "--reduce", "1,2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "reduce" in ln]
    assert len(lines) == 4 and all(ln.endswith("same bits") for ln in lines)

    def off(*args):     # the reduce, then one mean a unit in the last place off
        total = _ckernels.reduce(*args)
        args[8][0] = np.nextafter(args[8][0], np.inf)
        return total
    acc = Accumulator("exact", (4, 5, 3), np.uint8)
    acc.update(np.full((4, 5, 3), 9, np.uint8))
    med, same = ab.compare_reduce({"a": _ckernels, "b": types.SimpleNamespace(reduce=off)},
                                  [acc.as_partial()], np.float64, 1, band=16)
    assert not same and set(med) == {"a", "b"}


def test_kernels_ab_tells_a_build_that_gives_other_bits():
    pytest.importorskip("hotpixel_shm._ckernels")
    import types
    from hotpixel_shm import _ckernels
    from hotpixel_shm.welford import Accumulator
    ab = _load(os.path.join(SCRIPTS, "kernels_ab.py"), "hotpixel_kernels_ab_script")

    def off_by_one(*args):     # the update, then one sum a unit off
        _ckernels.update(*args)
        args[2][0][0] += 1
    other = types.SimpleNamespace(update=off_by_one)
    frames = [np.full((4, 5, 3), v, np.uint8) for v in (10, 20)]
    med, same = ab.compare({"a": _ckernels, "b": other}, frames,
                           lambda: Accumulator("exact", (4, 5, 3), np.uint8),
                           lambda acc, fs: acc.update_batch(fs), 2, 1)
    assert not same and set(med) == {"a", "b"}
    from hotpixel_shm import _kernels_c
    assert _kernels_c._ckernels is _ckernels      # the build in use is put back


def test_startup_ab_times_each_checkout_and_the_first_decoded_photo(tmp_path, capsys):
    """scripts/startup_ab.py: this checkout against itself (the second with an
    environment variable), one round on a tiny set."""
    from conftest import make_frames, write_images
    write_images(tmp_path, make_frames(4, (16, 20, 3), seed=3))
    ab = _load(os.path.join(SCRIPTS, "startup_ab.py"), "hotpixel_startup_ab_script")
    here = os.path.dirname(SCRIPTS)
    assert ab.main([f"a={here}", f"b={here}:OPENBLAS_NUM_THREADS=1", "--set", "tiny",
                    str(tmp_path / "*.png"), "--rounds", "1"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [("tiny", "a"), ("tiny", "b"), ("--plan", "a"),
                                            ("--plan", "b")]
    for r in rows[:2]:
        wall, first, last = float(r[2]), float(r[4]), float(r[5])
        assert 0 < first <= last < wall      # the photos were decoded, in the command's time
    assert all(r[4] == "-" for r in rows[2:])   # --plan decodes nothing


def test_startup_ab_can_stop_each_command_after_the_first_decoded_photos(tmp_path, capsys):
    from conftest import make_frames, write_images
    write_images(tmp_path, make_frames(3, (16, 20, 3), seed=4))
    ab = _load(os.path.join(SCRIPTS, "startup_ab.py"), "hotpixel_startup_ab_script")
    here = os.path.dirname(SCRIPTS)
    assert ab.main([f"a={here}", "--set", "tiny", str(tmp_path / "*.png"), "--rounds", "2",
                    "--extra", "--workers 1", "--stop-after", "1"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [("tiny", "a")]     # no --plan row
    assert len(rows[0]) == 8 and 0 < float(rows[0][4]) <= float(rows[0][2])


def test_parent_ab_times_each_stage_and_compares_the_results(tmp_path, capsys):
    """scripts/parent_ab.py: this checkout against itself with the numpy
    kernels, one round on the statistics of a tiny set."""
    from conftest import make_frames, write_images
    paths, _ = write_images(tmp_path, make_frames(4, (24, 32, 3), seed=5))
    stats = tmp_path / "stats.npz"
    proc = subprocess.run([sys.executable, "-m", "hotpixel_shm", "--workers", "1", "-q",
                           "--save-stats", str(stats), *paths],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ab = _load(os.path.join(SCRIPTS, "parent_ab.py"), "hotpixel_parent_ab_script")
    here = os.path.dirname(SCRIPTS)
    assert ab.main([str(stats), f"c={here}", f"n={here}:HOTPIXEL_SHM_KERNELS=numpy",
                    "--rounds", "1"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["detect", "residual", "lines"]
    for r in rows:
        assert float(r[1]) > 0 and float(r[2]) > 0 and r[3] == "yes"
