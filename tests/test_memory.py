"""The plan is honest: the measured peak of the whole process tree (summed
PSS, shared memory included) stays within the plan's total, which stays
within the budget.  Large frames on purpose: this is where size matters.

Each expensive run is made once and checked for everything it proves: the
one-worker run of each tier gives the ladder's order and savings and the
plan's tightness; the run under a real 1,100 MiB cgroup is also the
``--auto-workers`` run whose peak is measured against its plan."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hotpixel_shm.memwatch import PeakMemory


def _measured_run(args, tmp_path, preexec_fn=None, verbose=False):
    """Run the command, sampling its process tree's peak; returns (peak, report's engine)."""
    js = str(tmp_path / "r.json")
    proc = subprocess.Popen([sys.executable, "-m", "hotpixel_shm", "-q", *(["-v"] if verbose else []),
                             "--json", js, *args], preexec_fn=preexec_fn,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakMemory(proc.pid, interval=0.01) as pm:
        out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"rc {proc.returncode}: {err[-2000:]}"  # -9 would be the OOM killer
    if verbose:
        print(err)
    with open(js) as fh:
        eng = json.load(fh)["engine"]
    options = [a for a in args if not a.endswith(".jpg")]
    print(f"{options}: peak {pm.peak_bytes / 2**20:.0f} MiB, planned {eng['planned_bytes'] / 2**20:.0f} MiB, "
          f"budget {eng['budget_bytes'] / 2**20:.0f} MiB, tier {eng['dtype']}, workers {eng['workers']}, "
          f"bands {eng.get('bands')}")
    return pm.peak_bytes, eng


@pytest.mark.parametrize("tier", ["float32", "exact"])
def test_two_workers_peak_within_plan(jpegs_12mp, tmp_path, tier):
    """Two photos per worker, each worker's batch full; one worker per tier is in the ladder."""
    peak, eng = _measured_run(["--workers", "2", "--dtype", tier, *jpegs_12mp], tmp_path)
    assert eng["workers"] == 2 and eng["dtype"] == tier
    assert peak <= eng["planned_bytes"] <= eng["budget_bytes"]
    # the plan is an honest estimate, not a blanket over-statement
    assert eng["planned_bytes"] < 3 * peak


@pytest.fixture(scope="module")
def ladder(jpegs_12mp, tmp_path_factory):
    """Peak and engine report of a one-worker run of each tier on 12 MP frames
    (three: the planner's batch of 2 decoded photos, then the last one)."""
    tmp = tmp_path_factory.mktemp("ladder")
    out = {}
    for tier in ("float16", "float32", "exact", "float64"):
        d = tmp / tier
        d.mkdir()
        out[tier] = _measured_run(["--workers", "1", "--dtype", tier, *jpegs_12mp[:3]], d)
    return out


def test_the_ladder_descends(ladder):
    from hotpixel_shm.budget import accumulator_nbytes
    peak = {t: p for t, (p, _) in ladder.items()}
    acc = {t: accumulator_nbytes((3000, 4000, 3), "uint8", t) for t in ladder}
    assert all(eng["dtype"] == t and eng["workers"] == 1 for t, (_, eng) in ladder.items())
    assert peak["float16"] < peak["float32"] <= peak["exact"] < peak["float64"] or \
        peak["float16"] < peak["exact"] <= peak["float32"] < peak["float64"]
    # each step down saves at least 80 % of what its accumulator saves
    assert peak["float32"] - peak["float16"] >= 0.8 * (acc["float32"] - acc["float16"])
    assert peak["float64"] - peak["float32"] >= 0.8 * (acc["float64"] - acc["float32"])
    # exact costs what float32 does: its result is read band by band
    assert peak["exact"] <= 1.1 * peak["float32"]


def test_the_plan_is_tight(ladder):
    for tier, (peak, eng) in ladder.items():
        planned = eng["planned_bytes"]
        assert peak <= planned <= 1.15 * peak, (tier, peak, planned)
        assert planned <= eng["budget_bytes"], (tier, planned, eng["budget_bytes"])


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
    """The command inside ``group``, its process tree's peak sampled as well."""
    procs = os.path.join(group, "cgroup.procs")

    def enter():
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))

    return _measured_run(args, tmp_path, preexec_fn=enter, verbose=True)


def _group_peak(group, version):
    name = "memory.max_usage_in_bytes" if version == "v1" else "memory.peak"
    try:
        with open(os.path.join(group, name)) as fh:
            return int(fh.read())
    except OSError:
        return None


def test_auto_workers_fits_under_a_real_cgroup_limit(jpegs_24mp, tmp_path, memory_cgroup):
    group, version = memory_cgroup
    limit = 1100 * 2**20
    _limit_group(group, version, limit)
    peak, eng = _run_in_group(group, ["--auto-workers", *jpegs_24mp], tmp_path)
    assert eng["budget_bytes"] < limit  # the planner saw the cgroup, not the machine's 24 GiB
    # the plan --auto-workers chose is honest: the tree's peak within it, not a blanket over-statement
    assert peak <= eng["planned_bytes"] <= eng["budget_bytes"]
    assert eng["planned_bytes"] < 3 * peak
    group_peak = _group_peak(group, version)
    assert group_peak is None or group_peak <= limit


def test_band_passes_finish_in_a_600_mib_cgroup(jpegs_24mp, tmp_path, memory_cgroup):
    from hotpixel_shm.inputs import decode
    group, version = memory_cgroup
    limit = 600 * 2**20
    _limit_group(group, version, limit)
    npz = str(tmp_path / "s.npz")
    peak, eng = _run_in_group(group, ["--auto-workers", "--dtype", "exact", "--save-stats", npz,
                                      *jpegs_24mp], tmp_path)
    assert eng["bands"] > 1 and eng["planned_bytes"] <= eng["budget_bytes"] < limit
    assert peak <= eng["planned_bytes"]
    # the statistics equal numpy's float64 ones, band by band
    frames = [decode(p, (4000, 6000, 3), "uint8") for p in jpegs_24mp]
    with np.load(npz) as z:
        for key in ("mean", "var"):
            got = z[key]
            for y0 in range(0, 4000, 500):
                stack = np.stack([f[y0:y0 + 500].astype(np.float64) for f in frames])
                ref = stack.mean(axis=0) if key == "mean" else stack.var(axis=0)
                assert np.allclose(got[y0:y0 + 500], ref, rtol=1e-12, atol=1e-9), (key, y0)
            del got
