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


def test_auto_workers_fits_under_a_real_cgroup_limit(big_jpegs, tmp_path, memory_cgroup):
    group, version = memory_cgroup
    limit = 1100 * 2**20  # an unplanned exact/2-worker run of these frames peaks above 1.2 GB
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
    except OSError as exc:
        pytest.skip(f"cannot set a memory limit here: {exc}")
    procs = os.path.join(group, "cgroup.procs")

    def enter():
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))

    js = str(tmp_path / "r.json")
    r = subprocess.run([sys.executable, "-m", "hotpixel_shm", "-q", "-v", "--auto-workers",
                        "--json", js, big_jpegs], preexec_fn=enter, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr[-2000:]}"  # -9 would be the OOM killer
    with open(js) as fh:
        eng = json.load(fh)["engine"]
    print(r.stderr)
    assert eng["budget_bytes"] < limit  # the planner saw the cgroup, not the machine's 24 GiB
    assert eng["planned_bytes"] <= eng["budget_bytes"]
    if version == "v1":
        with open(os.path.join(group, "memory.max_usage_in_bytes")) as fh:
            assert int(fh.read()) <= limit
        with open(os.path.join(group, "memory.failcnt")) as fh:
            print("failcnt", fh.read().strip())
