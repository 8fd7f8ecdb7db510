"""The analysis on a real Dask cluster: a scheduler and two worker processes
on 127.0.0.1 (no dashboard), compared with the local run; a worker killed in
the middle; Ctrl-C on the client; an unreachable scheduler; no Dask at all."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import make_frames, reference_stats, write_images
from hotpixel_shm import cluster
from hotpixel_shm.cli import main
from hotpixel_shm.kernels_numpy import Partial
from hotpixel_shm.residual import residuals_of_frames
from hotpixel_shm.welford import accuracy_bound

distributed = pytest.importorskip("distributed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (40, 40, 3)      # room for a line defect (lines are judged 8 pixels from the edges)
LINE_X = 17


@pytest.fixture(scope="module")
def dask_cluster():
    """One scheduler and two single-threaded worker processes, shared by the tests."""
    lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", memory_limit="1GiB", silence_logs=50,
                                  **cluster.LOCAL_HTTP)
    client = distributed.Client(lc, set_as_default=False)
    yield lc, client
    client.close()
    lc.close()


@pytest.fixture
def address(dask_cluster):
    lc, client = dask_cluster
    client.wait_for_workers(2, timeout=60)  # a killed worker's nanny brings it back
    return lc.scheduler_address


def _photos(tmp_path, n=11, shape=SHAPE, dtype=np.uint8, seed=5):
    os.makedirs(tmp_path, exist_ok=True)
    hi = 255 if dtype == np.uint8 else 65535
    frames = make_frames(n, shape, dtype=dtype, seed=seed, base=np.full(shape, 0.47 * hi))
    for f in frames:          # a hot pixel, a dead one and a bright column, in every photo
        f[3, 4, 0] = hi * 0.96
        f[9, 12, 1] = 0
        f[:, LINE_X] = np.clip(f[:, LINE_X].astype(np.int64) + hi * 20 // 255, 0, hi)
    paths, decoded = write_images(tmp_path, frames)
    return paths, decoded


def _run(paths, out, *extra):
    os.makedirs(out, exist_ok=True)
    args = ["-q", "--save-stats", os.path.join(out, "s.npz"), "--json", os.path.join(out, "r.json"),
            "--csv", os.path.join(out, "d.csv"), "--dcraw", os.path.join(out, "d.txt"),
            "--mask", os.path.join(out, "m.png"), "--picture", os.path.join(out, "p.png"),
            "--siril", os.path.join(out, "s.txt")]
    code = main(args + list(extra) + list(paths))
    return code


def _read(out, name):
    with open(os.path.join(out, name), "rb") as fh:
        return fh.read()


def _stats(out):
    with np.load(os.path.join(out, "s.npz")) as z:
        return {k: z[k] for k in z.files}


def _same_stats(a, b):
    """The statistics files: every array bit for bit, but the residual
    statistics' float32 sums, whose last bits depend on how the files were
    divided (between a local run's workers as between the shards)."""
    with np.load(a) as za, np.load(b) as zb:
        assert sorted(za.files) == sorted(zb.files)
        for k in za.files:
            if k.startswith(("residual_mean", "residual_var", "residual_level")):
                np.testing.assert_allclose(za[k], zb[k], rtol=1e-4, atol=1e-4, err_msg=k)
            else:
                assert np.array_equal(za[k], zb[k]), k


def _same_outputs(a, b):
    for name in ("d.csv", "d.txt", "m.png", "p.png", "s.txt"):
        assert _read(a, name) == _read(b, name), name
    ra, rb = (json.loads(_read(d, "r.json")) for d in (a, b))
    for key in ("shape", "images", "defects", "lines"):
        assert ra[key] == rb[key], key
    assert ra["engine"]["tier"] == rb["engine"]["tier"]


def test_exact_tier_equals_the_local_run_bit_for_bit(tmp_path, address, capsys):
    paths, decoded = _photos(tmp_path / "in")
    local, remote = str(tmp_path / "local"), str(tmp_path / "dask")
    assert _run(paths, local, "--dtype", "exact", "--workers", "2") == 0
    assert _run(paths, remote, "--dtype", "exact", "--dask", address) == 0
    capsys.readouterr()
    _same_stats(os.path.join(local, "s.npz"), os.path.join(remote, "s.npz"))   # file names too
    # a deeper tree: 6 shards merged 2 at a time (three levels)
    from hotpixel_shm import pipeline
    deep = str(tmp_path / "deep.npz")
    settings = cluster_settings(save_stats=deep)
    log = pipeline.LogToLogging()
    with cluster.connect(address, 10, split_every=2) as session:
        group, = pipeline.prepare(paths, settings, log)
        plan = session.plan_group(group, settings, log)
        plan.shards = [2, 2, 2, 2, 2, 1]
        session.analyse_group(group, plan, settings, log).release()
    _same_stats(os.path.join(local, "s.npz"), deep)
    _same_outputs(local, remote)
    st = _stats(remote)
    mean, var = reference_stats(decoded)
    np.testing.assert_allclose(st["mean"], mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(st["var"], var, rtol=1e-12, atol=1e-9)
    report = json.loads(_read(remote, "r.json"))
    assert {(d["x"], d["y"]) for d in report["defects"]} >= {(12, 9)}
    assert [(ln["kind"], ln["x"]) for ln in report["lines"]] == [("column", LINE_X)]
    assert f"C {LINE_X} 0" in _read(remote, "s.txt").decode()


def test_raw_files_and_loaded_statistics_give_the_local_result(tmp_path, address, capsys):
    from hotpixel_shm.dng import write_raw_set
    write_raw_set(str(tmp_path / "raw"), n=7, width=64, height=48, seed=3)
    paths = sorted(str(p) for p in (tmp_path / "raw").iterdir())
    first = str(tmp_path / "first.npz")
    assert main(["-q", "--dtype", "exact", "--save-stats", first] + paths[:3]) == 0
    local, remote = str(tmp_path / "local"), str(tmp_path / "dask")
    assert _run(paths[3:], local, "--dtype", "exact", "--load-stats", first) == 0
    assert _run(paths[3:], remote, "--dtype", "exact", "--load-stats", first,
                "--dask", address) == 0
    capsys.readouterr()
    _same_stats(os.path.join(local, "s.npz"), os.path.join(remote, "s.npz"))
    _same_outputs(local, remote)
    report = json.loads(_read(remote, "r.json"))
    assert report["images"]["used"] == 7
    assert report["defects"] and all(d.get("colour") for d in report["defects"])


@pytest.mark.parametrize("tier,dtype", [("float64", np.uint16), ("float32", np.uint8),
                                        ("float16", np.uint8)])
def test_float_tiers_within_their_bounds(tmp_path, address, capsys, tier, dtype):
    paths, decoded = _photos(tmp_path / "in", n=7, dtype=dtype)
    local, remote = str(tmp_path / "local"), str(tmp_path / "dask")
    assert _run(paths, local, "--dtype", tier) == 0
    assert _run(paths, remote, "--dtype", tier, "--dask", address) == 0
    capsys.readouterr()
    ref_mean, ref_var = reference_stats(decoded)
    bound = accuracy_bound(tier, dtype, len(paths))
    for out in (local, remote):
        st = _stats(out)
        assert int(st["n"]) == len(paths) and str(st["tier"]) == tier
        assert np.max(np.abs(st["mean"] - ref_mean)) <= bound["mean_abs"]
        sure = np.sqrt(ref_var) >= 0.5
        rel = np.abs(st["var"] - ref_var)[sure] / ref_var[sure]
        assert np.max(rel) <= bound["var_rel"]
    a, b = _stats(local), _stats(remote)
    assert list(a["files"]) == list(b["files"])
    assert json.loads(_read(local, "r.json"))["defects"] == \
        json.loads(_read(remote, "r.json"))["defects"] or tier == "float16"


def test_a_file_a_worker_cannot_read_is_skipped_with_its_reason(tmp_path, address, capsys):
    paths, decoded = _photos(tmp_path / "in", n=6)
    with open(paths[2], "r+b") as fh:      # the header probes fine; decoding fails
        fh.truncate(120)
    settings = cluster_settings()
    calls = []
    from hotpixel_shm import pipeline
    log = pipeline.LogToLogging()
    with cluster.connect(address, 10, split_every=2) as session:
        group, = pipeline.prepare(paths, settings, log)
        plan = session.plan_group(group, settings, log)
        assert plan.shards == [3, 3]
        plan.shards = [2, 1, 1, 2]                      # a tree of two levels
        assert plan.task_plan.residual_period == 2
        analysis = session.analyse_group(group, plan, settings, log,
                                         progress=lambda *a: calls.append(a))
        # the residual statistics the detection on the cluster used
        residuals = session.client.submit(lambda f: f.stats.residuals, analysis._finished).result()
        analysis.release()
        off = cluster_settings(residuals=False)
        plan = session.plan_group(group, off, log)
        assert plan.task_plan.residual_period is None
        assert any("turned off" in r for r in plan.task_plan.reasons)
        plain = session.analyse_group(group, plan, off, log)
        assert session.client.submit(lambda f: f.stats.residuals, plain._finished).result() is None
        plain.release()
    assert analysis.stats.n == 5
    (path, reason), = analysis.skipped
    assert path == paths[2]
    assert "on Dask worker tcp://127.0.0.1:" in reason
    assert calls[-1] == (5, 6, 1)                       # progress counts every file
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    keep = [d for i, d in enumerate(decoded) if i != 2]
    mean, _ = reference_stats(keep)
    assert analysis.stats.files == [p for i, p in enumerate(paths) if i != 2]
    assert analysis.stats.lowest_variance(3)
    assert abs(analysis.stats.variance_range()[2] - float(np.var(np.stack(keep).astype(float),
                                                                 axis=0).mean())) < 1e-9
    assert mean.shape == analysis.stats.shape
    # the per-frame residuals of the frames used, accumulated shard by shard
    # and added up the tree: those of a local run (float32 sums in another order)
    ref = residuals_of_frames(keep, SHAPE, 2)
    assert residuals.n == 5 and residuals.layout == ref.layout
    for got, want in zip(residuals.mean + residuals.var, ref.mean + ref.var):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def cluster_settings(**kw):
    from hotpixel_shm.pipeline import Settings
    kw.setdefault("tier", "exact")
    return Settings(**kw)


def test_the_cluster_listens_on_loopback_only(dask_cluster):
    import psutil
    _, client = dask_cluster
    pids = [os.getpid()] + list(client.run(os.getpid).values())
    listening = [c.laddr for p in pids for c in psutil.Process(p).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip == "127.0.0.1" for a in listening), listening


def test_plan_lists_the_workers_their_memory_and_the_shard_size(tmp_path, address, capsys):
    paths, _ = _photos(tmp_path / "in", n=5)
    assert main(["--plan", "--dask", address] + paths) == 0
    err = capsys.readouterr().err
    lc_workers = [line for line in err.splitlines() if line.strip().startswith("tcp://127.0.0.1:")]
    assert len(lc_workers) == 2
    assert all("1.00 GiB" in line for line in lc_workers)
    assert "Shards: 2 of up to 3 file(s) (5 in all)" in err
    assert "planned with a worker's memory limit" in err
    assert "of a 819 MiB budget" in err                   # 80 % of 1 GiB: Dask's pause level
    assert "temporal residual statistics kept beside each accumulator" in err
    assert main(["--plan", "--no-residuals", "--dask", address] + paths) == 0
    assert "no temporal residual statistics (turned off)" in capsys.readouterr().err


def test_a_worker_killed_mid_run_changes_nothing(tmp_path, address, dask_cluster, capsys,
                                                 monkeypatch):
    _, client = dask_cluster
    paths, _ = _photos(tmp_path / "in", n=8)
    local, remote = str(tmp_path / "local"), str(tmp_path / "dask")
    assert _run(paths, local, "--dtype", "exact") == 0
    monkeypatch.setenv("HOTPIXEL_SHM_TEST_DELAY", "0.25")   # read by the client, sent to the tasks
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = {w: ks for w, ks in client.processing().items()
                    if any(str(k).startswith("hotpixel-shard") for k in ks)}
            if busy:
                time.sleep(0.4)           # a file or two into its shard
                worker = sorted(busy)[0]
                pid = client.run(os.getpid, workers=[worker])[worker]
                os.kill(pid, signal.SIGKILL)
                killed.append((worker, pid))
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    try:
        assert _run(paths, remote, "--dtype", "exact", "--dask", address) == 0
    finally:
        t.join()
    capsys.readouterr()
    assert killed, "no shard task was seen running"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0][1], 0)
    _same_stats(os.path.join(local, "s.npz"), os.path.join(remote, "s.npz"))
    _same_outputs(local, remote)


def test_ctrl_c_cancels_the_run_and_leaves_the_cluster_usable(tmp_path, address, dask_cluster):
    _, client = dask_cluster
    paths, _ = _photos(tmp_path / "in", n=8)
    env = dict(os.environ, HOTPIXEL_SHM_TEST_DELAY="0.5",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "hotpixel_shm", "-q", "--dask", address] + paths,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(str(k).startswith("hotpixel-shard") for ks in client.processing().values()
                   for k in ks):
                break
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "cancelled" in err and "Traceback" not in err

    def ours():
        return client.run_on_scheduler(
            lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks
                                    if str(k).startswith("hotpixel-")])

    deadline = time.monotonic() + 20
    while ours() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ours() == []
    assert main(["-q", "--dask", address] + paths) == 0     # still usable


def _closed_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_a_clear_error_within_the_timeout(tmp_path, capsys):
    paths, _ = _photos(tmp_path / "in", n=2)
    port = _closed_port()
    t0 = time.monotonic()
    assert main(["--dask", f"tcp://127.0.0.1:{port}", "--dask-timeout", "2"] + paths) == 1
    assert time.monotonic() - t0 < 2 + 3
    err = capsys.readouterr().err
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 2 s" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_without_dask_the_option_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    paths, _ = _photos(tmp_path / "in", n=2)
    monkeypatch.setitem(sys.modules, "distributed", None)     # import fails as if absent
    with pytest.raises(SystemExit) as exc:
        main(["--dask", "local"] + paths)
    assert exc.value.code == 2
    assert "pip install 'hotpixel_shm[dask]'" in capsys.readouterr().err


def test_nothing_else_imports_dask(tmp_path):
    paths, _ = _photos(tmp_path / "in", n=3)
    code = ("import sys\n"
            "from hotpixel_shm.cli import main\n"
            f"assert main(['-q', '--json', {str(tmp_path / 'r.json')!r}] + {paths!r}) == 0\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
            "assert not bad, bad\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)


def test_dask_options_are_checked(tmp_path, capsys):
    paths, _ = _photos(tmp_path / "in", n=2)
    for extra in (["--checkpoint", str(tmp_path / "c.npz")], ["--workers", "2"],
                  ["--dask-timeout", "0"], ["--dask-split-every", "1"]):
        with pytest.raises(SystemExit) as exc:
            main(["--dask", "tcp://127.0.0.1:1"] + extra + paths)
        assert exc.value.code == 2


# --------------------------------------------------------------------------- the tree's algebra

def _exact_partial(n, sums, sqs, dtype=np.uint8):
    return Partial(n, "exact", np.dtype(dtype), (np.asarray(sums, np.uint32),
                                                 np.asarray(sqs, np.uint32)))


def test_exact_partials_add_exactly_and_widen_before_they_overflow():
    # 40000 images of 255 each side: the sums of squares pass 2**32 together
    n = 40000
    a = _exact_partial(n, [255 * n, 0], [255 * 255 * n, 0])
    b = _exact_partial(n, [255 * n, 7], [255 * 255 * n, 49])
    c = cluster.combine_partials([a, b], "exact")
    assert c.n == 2 * n and c.tier == "exact"
    assert c.fields[0].dtype == np.uint32                 # 2n * 255 still fits
    assert c.fields[1].dtype == np.uint64
    assert c.fields[1].tolist() == [2 * n * 255 * 255, 49]
    assert c.fields[0].tolist() == [2 * n * 255, 7]
    small = cluster.combine_partials([_exact_partial(2, [3, 4], [5, 8]),
                                      _exact_partial(0, [0, 0], [0, 0]),
                                      _exact_partial(1, [1, 1], [1, 1])], "exact")
    assert small.n == 3 and small.fields[1].dtype == np.uint32
    assert small.fields[0].tolist() == [4, 5] and small.fields[1].tolist() == [6, 9]


def test_exact_partials_past_the_integer_finish_are_combined_in_float64():
    # 16-bit: n * sumsq - sum**2 would pass 2**64 beyond 65,536 images
    n = 40000
    a = Partial(n, "exact", np.dtype(np.uint16), (np.full(2, 1000 * n, np.uint32),
                                                  np.full(2, 1000 ** 2 * n, np.uint64)))
    b = Partial(n, "exact", np.dtype(np.uint16), (np.full(2, 3000 * n, np.uint32),
                                                  np.full(2, 3000 ** 2 * n, np.uint64)))
    c = cluster.combine_partials([a, b], "exact")
    assert c.n == 2 * n and c.tier == "finished" and c.fields[0].dtype == np.float64
    np.testing.assert_allclose(c.fields[0], 2000.0, rtol=1e-15)
    np.testing.assert_allclose(c.fields[1], 1000.0 ** 2, rtol=1e-12)


def test_float_partials_combine_to_the_numpy_statistics():
    from hotpixel_shm.welford import Accumulator
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(3, 4, 1), dtype=np.uint8) for _ in range(9)]
    parts = []
    for chunk in (frames[:2], frames[2:5], frames[5:]):
        acc = Accumulator("float32", (3, 4, 1), np.uint8)
        for f in chunk:
            acc.update(f)
        parts.append(acc.as_partial())
    c = cluster.combine_partials(parts, "float32")
    assert c.n == 9 and c.fields[0].dtype == np.float32
    mean, var = reference_stats(frames)
    np.testing.assert_allclose(c.fields[0], mean.reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(c.fields[1], var.reshape(-1), rtol=1e-5)


def test_shard_sizes_are_even_and_respect_the_cap():
    assert cluster.shard_sizes(11, 2) == [6, 5]
    assert cluster.shard_sizes(3, 4) == [1, 1, 1]
    assert cluster.shard_sizes(0, 4) == []
    assert cluster.shard_sizes(10, 1, cap=3) == [3, 3, 2, 2]
    sizes = cluster.shard_sizes(1000, 3, cap=7)
    assert sum(sizes) == 1000 and max(sizes) <= 7 and min(sizes) >= 6
    sizes = cluster.shard_sizes(1000, 3)
    assert sum(sizes) == 1000 and max(sizes) <= cluster.MAX_SHARD_FILES
    assert len(sizes) == -(-1000 // cluster.MAX_SHARD_FILES)


def test_residual_partials_add_up_the_tree_as_the_local_merge_adds_them(tmp_path):
    from hotpixel_shm.residual import ResidualAccumulator, residual_layout, sum_residuals
    frames = make_frames(7, (12, 14, 3), seed=2)
    paths, decoded = write_images(tmp_path, frames)
    spec = cluster._Spec("exact", (12, 14, 3), "uint8", 10 ** 8, 1, residual_period=2)
    files = list(enumerate(paths))
    shards = [cluster._shard_task(spec, files[a:b]) for a, b in ((0, 3), (3, 5), (5, 7))]
    before = [s.residuals[1].copy() for s in shards]
    for s in shards:                  # as they may arrive from another process
        s.residuals[1].flags.writeable = False
    root = cluster._combine_task("exact", cluster._combine_task("exact", *shards[:2]), shards[2])
    got = cluster._finish_task(root, "exact", (12, 14, 3), {}).stats.residuals
    # the local merge: one accumulator per worker, added in order and finished
    layout = residual_layout((12, 14, 3), 2)
    accs = []
    for a, b in ((0, 3), (3, 5), (5, 7)):
        acc = ResidualAccumulator(layout)
        for f in decoded[a:b]:
            acc.update(f)
        accs.append(acc)
    want = sum_residuals(accs)
    assert got.n == want.n == 7
    for g, w in zip(got.mean + got.var, want.mean + want.var):
        assert g.dtype == np.float32 and np.array_equal(g, w)
    assert all(np.array_equal(s.residuals[1], b) for s, b in zip(shards, before))
    plain = cluster._Spec("exact", (12, 14, 3), "uint8", 10 ** 8, 1)
    assert cluster._shard_task(plain, files[:2]).residuals is None


def test_the_api_runs_on_the_cluster_as_the_command_line_does(tmp_path, address):
    """``analyse``/``iter_analyses`` with ``dask=``: the same defects, lines and
    outputs as the API's local run; a picture needs the open session."""
    import hotpixel_shm
    from hotpixel_shm.errors import HotPixelError

    paths, _ = _photos(tmp_path / "in")
    local = hotpixel_shm.analyse(paths, workers=1, tier="exact")[0]
    local.write(picture=tmp_path / "local.png", csv=tmp_path / "local.csv")
    seen = []
    for a in hotpixel_shm.iter_analyses(paths, dask=address, tier="exact", dask_timeout=30):
        a.write(picture=tmp_path / "dask.png")
        seen.append(a)
    (a,) = seen
    assert a.stats.n == local.stats.n == len(paths)
    assert a.defects == local.defects and a.lines == local.lines
    assert any(ln for ln in a.lines)
    assert _read(tmp_path, "dask.png") == _read(tmp_path, "local.png")
    a.write(csv=tmp_path / "dask.csv")          # written from the defects: any time
    assert _read(tmp_path, "dask.csv") == _read(tmp_path, "local.csv")
    with pytest.raises(HotPixelError, match="session is closed"):
        a.write(picture=tmp_path / "late.png")
    assert not os.path.exists(tmp_path / "late.png")
    (b,) = hotpixel_shm.analyse(paths, dask=address, tier="exact", dask_split_every=2)
    assert b.defects == local.defects


@pytest.mark.parametrize("options,message", [
    ({"dask": "local", "workers": 2}, "workers does not apply"),
    ({"dask": "local", "checkpoint": "c.npz"}, "checkpoint and resume"),
    ({"dask": "local", "resume": "c.npz"}, "checkpoint and resume"),
    ({"dask": "local", "dask_timeout": 0}, "dask_timeout must be positive"),
    ({"dask": "local", "dask_split_every": 1}, "at least 2"),
    ({"dask": ""}, "scheduler's address"),
    ({"dask_timeout": 5}, "need dask"),
])
def test_the_apis_dask_options_are_checked_before_anything_runs(tmp_path, options, message):
    import hotpixel_shm
    from hotpixel_shm.errors import HotPixelError

    with pytest.raises(HotPixelError, match=message):
        hotpixel_shm.analyse([str(tmp_path / "none.png")], **options)
