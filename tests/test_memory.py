"""The plan is honest: the measured peak of the whole process tree (summed
PSS, shared memory included) stays within the plan's total, which stays
within the budget.  Large frames on purpose: this is where size matters."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from hotpixel_shm.memwatch import PeakMemory
from hotpixel_shm.synth import make_photo_like


@pytest.fixture(scope="module")
def big_jpegs(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    for i in range(5):
        Image.fromarray(make_photo_like(3000, 4000, seed=i)).save(str(d / f"big{i}.jpg"), quality=90)
    return str(d)


def _measured_run(args, tmp_path):
    js = str(tmp_path / "r.json")
    proc = subprocess.Popen([sys.executable, "-m", "hotpixel_shm", "-q", "--json", js, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakMemory(proc.pid, interval=0.01) as pm:
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    with open(js) as fh:
        rep = json.load(fh)
    return pm.peak_bytes, rep["engine"]


@pytest.mark.parametrize("args", [
    ["--workers", "2", "--dtype", "float32"],
    ["--workers", "2", "--dtype", "exact"],
    ["--workers", "1", "--dtype", "float16"],
    ["--auto-workers", "--memory-budget", "1200M"],
])
def test_peak_memory_within_plan(big_jpegs, tmp_path, args):
    peak, eng = _measured_run(args + [big_jpegs], tmp_path)
    print(f"{args}: peak {peak / 2**20:.0f} MiB, planned {eng['planned_bytes'] / 2**20:.0f} MiB, "
          f"budget {eng['budget_bytes'] / 2**20:.0f} MiB, tier {eng['dtype']}, workers {eng['workers']}")
    assert peak <= eng["planned_bytes"] <= eng["budget_bytes"]
    # the plan is an honest estimate, not a blanket over-statement
    assert eng["planned_bytes"] < 3 * peak


@pytest.fixture(scope="module")
def ladder(big_jpegs, tmp_path_factory):
    """Peak and plan of one-worker runs of each tier on the 12 MP frames."""
    tmp = tmp_path_factory.mktemp("ladder")
    out = {}
    for tier in ("float16", "float32", "exact", "float64"):
        d = tmp / tier
        d.mkdir()
        peak, eng = _measured_run(["--workers", "1", "--dtype", tier, big_jpegs], d)
        out[tier] = (peak, eng["planned_bytes"])
        print(f"{tier}: peak {peak / 2**20:.0f} MiB, planned {eng['planned_bytes'] / 2**20:.0f} MiB")
    return out


def test_the_ladder_descends(ladder):
    from hotpixel_shm.budget import accumulator_nbytes
    peak = {t: p for t, (p, _) in ladder.items()}
    acc = {t: accumulator_nbytes((3000, 4000, 3), "uint8", t) for t in ladder}
    assert peak["float16"] < peak["float32"] <= peak["exact"] < peak["float64"] or \
        peak["float16"] < peak["exact"] <= peak["float32"] < peak["float64"]
    # each step down saves at least 80 % of what its accumulator saves
    assert peak["float32"] - peak["float16"] >= 0.8 * (acc["float32"] - acc["float16"])
    assert peak["float64"] - peak["float32"] >= 0.8 * (acc["float64"] - acc["float32"])
    # exact costs what float32 does: its result is read band by band
    assert peak["exact"] <= 1.1 * peak["float32"]


def test_the_plan_is_tight(ladder):
    for tier, (peak, planned) in ladder.items():
        assert peak <= planned <= 1.15 * peak, (tier, peak, planned)


def _own_memory_cgroup():
    """Directory of this process's memory cgroup if we may create a child in it."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _, ctrl, path = line.split(":", 2)
        if ctrl == "memory":  # v1
            base = os.path.join("/sys/fs/cgroup/memory", path.lstrip("/"))
            if not os.path.isdir(base):
                base = "/sys/fs/cgroup/memory"
            return base, "v1"
        if ctrl == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # v2
            base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
            return base, "v2"
    return None, None


@pytest.fixture
def memory_cgroup():
    base, version = _own_memory_cgroup()
    if base is None:
        pytest.skip("no memory cgroup here")
    group = os.path.join(base, f"hotpixel_test_{os.getpid()}")
    try:
        os.mkdir(group)
    except OSError as exc:
        pytest.skip(f"cannot create a memory cgroup here: {exc}")
    try:
        yield group, version
    finally:
        for _ in range(50):
            try:
                os.rmdir(group)
                break
            except OSError:
                import time
                time.sleep(0.1)


@pytest.fixture(scope="module")
def photos24(tmp_path_factory):
    """Three 24 MP JPEGs (6000 x 4000)."""
    d = tmp_path_factory.mktemp("p24")
    for i in range(3):
        Image.fromarray(make_photo_like(4000, 6000, seed=10 + i)).save(str(d / f"p{i}.jpg"), quality=90)
    return str(d)


def _limit_group(group, version, limit):
    try:
        if version == "v1":
            with open(os.path.join(group, "memory.limit_in_bytes"), "w") as fh:
                fh.write(str(limit))
            swap = os.path.join(group, "memory.memsw.limit_in_bytes")
            if os.path.exists(swap):
                with open(swap, "w") as fh:
                    fh.write(str(limit))
        else:
            with open(os.path.join(group, "memory.max"), "w") as fh:
                fh.write(str(limit))
            swap = os.path.join(group, "memory.swap.max")
            if os.path.exists(swap):
                with open(swap, "w") as fh:
                    fh.write("0")
    except OSError as exc:
        pytest.skip(f"cannot set a memory limit here: {exc}")


def _run_in_group(group, args, tmp_path):
    procs = os.path.join(group, "cgroup.procs")

    def enter():
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))

    js = str(tmp_path / "r.json")
    r = subprocess.run([sys.executable, "-m", "hotpixel_shm", "-q", "-v", "--json", js, *args],
                       preexec_fn=enter, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr[-2000:]}"  # -9 would be the OOM killer
    print(r.stderr)
    with open(js) as fh:
        return json.load(fh)["engine"]


def _group_peak(group, version):
    name = "memory.max_usage_in_bytes" if version == "v1" else "memory.peak"
    try:
        with open(os.path.join(group, name)) as fh:
            return int(fh.read())
    except OSError:
        return None


def test_auto_workers_fits_under_a_real_cgroup_limit(photos24, tmp_path, memory_cgroup):
    group, version = memory_cgroup
    limit = 1100 * 2**20
    _limit_group(group, version, limit)
    eng = _run_in_group(group, ["--auto-workers", photos24], tmp_path)
    assert eng["budget_bytes"] < limit  # the planner saw the cgroup, not the machine's 24 GiB
    assert eng["planned_bytes"] <= eng["budget_bytes"]
    peak = _group_peak(group, version)
    assert peak is None or peak <= limit


def test_band_passes_finish_in_a_600_mib_cgroup(photos24, tmp_path, memory_cgroup):
    import numpy as np
    from hotpixel_shm.inputs import decode
    group, version = memory_cgroup
    limit = 600 * 2**20
    _limit_group(group, version, limit)
    npz = str(tmp_path / "s.npz")
    eng = _run_in_group(group, ["--auto-workers", "--dtype", "exact", "--save-stats", npz, photos24],
                        tmp_path)
    assert eng["bands"] > 1 and eng["planned_bytes"] <= eng["budget_bytes"] < limit
    # the statistics equal numpy's float64 ones, band by band
    paths = sorted(os.path.join(photos24, f) for f in os.listdir(photos24))
    frames = [decode(p, (4000, 6000, 3), "uint8") for p in paths]
    with np.load(npz) as z:
        for key in ("mean", "var"):
            got = z[key]
            for y0 in range(0, 4000, 500):
                stack = np.stack([f[y0:y0 + 500].astype(np.float64) for f in frames])
                ref = stack.mean(axis=0) if key == "mean" else stack.var(axis=0)
                assert np.allclose(got[y0:y0 + 500], ref, rtol=1e-12, atol=1e-9), (key, y0)
            del got
