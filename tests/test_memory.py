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
