"""Tests of hotpixel_shm.budget: sizes, CPU and memory detection on fake cgroup
trees, the memory model and the planner's policy (tables)."""
import json
import math
import os

import psutil
import pytest

from hotpixel_shm import budget, tiers
from hotpixel_shm.budget import (
    DEFAULT_BUDGET_FRACTION, MERGE_SCRATCH_BYTES, PARENT_BASELINE_BYTES, WORKER_BASELINE_BYTES,
    WORKER_SCRATCH_BYTES, Plan, Resources, accumulator_nbytes, available_memory, decode_bytes,
    detect_resources, format_bytes, make_plan, memory_model, parse_size, shm_free, usable_cpus,
)
from hotpixel_shm.errors import HotPixelError, PlanError

MiB = 2 ** 20
GiB = 2 ** 30
RGB24 = (4000, 6000, 3)      # a 24 MP colour photo
MONO24 = (4000, 6000)        # a 24 MP 16-bit mono frame
V1_UNLIMITED = "9223372036854771712\n"


# ------------------------------------------------------------------ sizes

@pytest.mark.parametrize("text, expected", [
    ("1000000", 1_000_000),
    ("0", 0),
    ("512k", 512 * 1024),
    ("512K", 512 * 1024),
    ("800M", 800 * MiB),
    ("800 MB", 800 * MiB),
    ("1.5G", 1536 * MiB),
    ("1.5g", 1536 * MiB),
    ("2GiB", 2 * GiB),
    ("2gib", 2 * GiB),
    ("2 GB", 2 * GiB),
    ("1T", 1024 * GiB),
    (".5G", 512 * MiB),
    ("  3G  ", 3 * GiB),
    ("100B", 100),
    ("100b", 100),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "1.5.2G", "12X", "1e9", "one gig", "1GG", "2iB", "1 G B", "inf"])
def test_parse_size_rejects(text):
    with pytest.raises(HotPixelError, match="memory size"):
        parse_size(text)


def test_parse_size_rejects_non_text():
    with pytest.raises(HotPixelError):
        parse_size(1024)


@pytest.mark.parametrize("n, expected", [
    (0, "0 B"),
    (1023, "1023 B"),
    (1024, "1.00 KiB"),
    (1536, "1.50 KiB"),
    (812 * MiB, "812 MiB"),
    (int(1.5 * GiB), "1.50 GiB"),
    (int(23.5 * GiB), "23.5 GiB"),
    (GiB - 1, "1.00 GiB"),       # rounds into the next unit, never "1024 MiB"
    (1023 * MiB, "1023 MiB"),
    (-3 * GiB, "-3.00 GiB"),
])
def test_format_bytes(n, expected):
    assert format_bytes(n) == expected


def test_format_bytes_parse_size_round_trip():
    for text in ("1.50 GiB", "812 MiB", "23.5 GiB"):
        assert format_bytes(parse_size(text)) == text


# ------------------------------------------------------ fake cgroup trees

V1_MEMORY_MOUNT = "35 31 0:32 {root} /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory"
V1_CPU_MOUNT = "32 31 0:29 {root} /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct"
V2_MOUNT = "41 31 0:38 {root} /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"
OTHER_MOUNTS = [
    "22 27 0:21 / /proc rw,relatime - proc proc rw",
    "25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684096k",
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
]


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _fake_system(tmp_path, cgroup_lines, mount_lines, files):
    """A fake /proc/self and cgroup filesystem; returns the roots to pass."""
    proc = tmp_path / "proc"
    cg = tmp_path / "cgroup"
    _write(proc / "self" / "cgroup", "\n".join(cgroup_lines) + "\n")
    if mount_lines is not None:
        _write(proc / "self" / "mountinfo", "\n".join(OTHER_MOUNTS + mount_lines) + "\n")
    cg.mkdir(exist_ok=True)
    for rel, text in files.items():
        assert not os.path.isabs(rel)
        _write(cg / rel, text)
    return {"proc_root": str(proc), "cgroup_root": str(cg)}


def _in(prefix, name):
    # Relative paths only: they are joined under the fake cgroup root.
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def _v1_group(prefix, limit, usage, inactive=0):
    return {
        _in(prefix, "memory.limit_in_bytes"): f"{limit}\n",
        _in(prefix, "memory.usage_in_bytes"): f"{usage}\n",
        _in(prefix, "memory.stat"): f"cache 0\nrss {usage}\ninactive_file 0\ntotal_inactive_file {inactive}\n",
    }


def _v2_group(prefix, limit, usage, high="max", inactive=0):
    return {
        _in(prefix, "memory.max"): f"{limit}\n",
        _in(prefix, "memory.high"): f"{high}\n",
        _in(prefix, "memory.current"): f"{usage}\n",
        _in(prefix, "memory.stat"): f"anon {usage}\nfile 0\ninactive_file {inactive}\n",
    }


def _psutil_like(value):
    """True when value is the system's available memory (which moves a little)."""
    now = psutil.virtual_memory().available
    return abs(value - now) <= 0.1 * now


# Host layout like a cgroup v1 machine: the process in a sub-group of the memory hierarchy.
HOST_V1_LINES = ["9:name=systemd:/", "4:memory:/process_api/abc", "2:cpu,cpuacct:/", "0::/"]


def test_v1_limit_of_own_group(tmp_path):
    files = {}
    files.update(_v1_group("memory", V1_UNLIMITED.strip(), 5 * GiB))
    files.update(_v1_group("memory/process_api", V1_UNLIMITED.strip(), 2 * GiB))
    files.update(_v1_group("memory/process_api/abc", 256 * MiB, 56 * MiB))
    roots = _fake_system(tmp_path, HOST_V1_LINES, [V1_MEMORY_MOUNT.format(root="/")], files)
    got, why = available_memory(**roots)
    assert got == 200 * MiB
    assert "256 MiB" in why and "tighter" in why


def test_v1_parent_group_is_tighter(tmp_path):
    files = {}
    files.update(_v1_group("memory/process_api", 600 * MiB, 500 * MiB))
    files.update(_v1_group("memory/process_api/abc", GiB, 100 * MiB))
    roots = _fake_system(tmp_path, HOST_V1_LINES, [V1_MEMORY_MOUNT.format(root="/")], files)
    assert available_memory(**roots)[0] == 100 * MiB


def test_v1_unlimited_is_the_system_figure(tmp_path):
    files = _v1_group("memory/process_api/abc", V1_UNLIMITED.strip(), 100 * MiB)
    roots = _fake_system(tmp_path, HOST_V1_LINES, [V1_MEMORY_MOUNT.format(root="/")], files)
    got, why = available_memory(**roots)
    assert _psutil_like(got)
    assert "no limit" in why and "tighter" not in why


def test_v1_inactive_file_cache_counts_as_free(tmp_path):
    files = _v1_group("memory/process_api/abc", GiB, 900 * MiB, inactive=400 * MiB)
    roots = _fake_system(tmp_path, HOST_V1_LINES, [V1_MEMORY_MOUNT.format(root="/")], files)
    assert available_memory(**roots)[0] == GiB - 500 * MiB


def test_v1_usage_over_limit_gives_zero(tmp_path):
    files = _v1_group("memory/process_api/abc", 100 * MiB, 120 * MiB)
    roots = _fake_system(tmp_path, HOST_V1_LINES, [V1_MEMORY_MOUNT.format(root="/")], files)
    assert available_memory(**roots)[0] == 0


def test_v1_container_mount_root_is_the_group(tmp_path):
    # Docker without a cgroup namespace: the container's group is mounted as the root.
    files = {}
    files.update(_v1_group("memory", 300 * MiB, 100 * MiB))
    # A decoy where a naive join of mount point and group path would look.
    files.update(_v1_group("memory/docker/abc", 10 * MiB, 0))
    roots = _fake_system(tmp_path, ["4:memory:/docker/abc", "0::/"],
                         [V1_MEMORY_MOUNT.format(root="/docker/abc")], files)
    assert available_memory(**roots)[0] == 200 * MiB


def test_v1_container_nested_group_walks_up_to_mount_root(tmp_path):
    files = {}
    files.update(_v1_group("memory", 300 * MiB, 250 * MiB))          # the container
    files.update(_v1_group("memory/job", 1 * GiB, 10 * MiB))         # a group inside it
    roots = _fake_system(tmp_path, ["4:memory:/docker/abc/job", "0::/"],
                         [V1_MEMORY_MOUNT.format(root="/docker/abc")], files)
    assert available_memory(**roots)[0] == 50 * MiB


def test_v2_limit_of_nested_group(tmp_path):
    files = {}
    files.update(_v2_group("user.slice", "max", 3 * GiB))
    files.update(_v2_group("user.slice/x", 512 * MiB, 128 * MiB))
    roots = _fake_system(tmp_path, ["0::/user.slice/x"], [V2_MOUNT.format(root="/")], files)
    got, why = available_memory(**roots)
    assert got == 384 * MiB
    assert "cgroup v2" in why


def test_v2_parent_limit_applies(tmp_path):
    files = {}
    files.update(_v2_group("user.slice", 400 * MiB, 300 * MiB))
    files.update(_v2_group("user.slice/x", "max", 128 * MiB))
    roots = _fake_system(tmp_path, ["0::/user.slice/x"], [V2_MOUNT.format(root="/")], files)
    assert available_memory(**roots)[0] == 100 * MiB


def test_v2_memory_high_is_a_limit(tmp_path):
    files = _v2_group("user.slice/x", 512 * MiB, 100 * MiB, high=300 * MiB, inactive=20 * MiB)
    roots = _fake_system(tmp_path, ["0::/user.slice/x"], [V2_MOUNT.format(root="/")], files)
    assert available_memory(**roots)[0] == 300 * MiB - 80 * MiB


def test_v2_without_limit(tmp_path):
    files = {}
    files.update(_v2_group("user.slice", "max", 3 * GiB))
    files.update(_v2_group("user.slice/x", "max", 128 * MiB))
    roots = _fake_system(tmp_path, ["0::/user.slice/x"], [V2_MOUNT.format(root="/")], files)
    got, why = available_memory(**roots)
    assert _psutil_like(got)
    assert "no limit" in why


def test_v2_container_namespace(tmp_path):
    # With a cgroup namespace the process sees its group as "/" and the mount root is "/".
    files = _v2_group("", 256 * MiB, 56 * MiB)
    roots = _fake_system(tmp_path, ["0::/"], [V2_MOUNT.format(root="/")], files)
    assert available_memory(**roots)[0] == 200 * MiB


def test_hybrid_host_reads_the_v1_memory_controller(tmp_path):
    # Like this project's machine: v1 controllers plus an empty v2 hierarchy.
    files = _v1_group("memory/process_api/abc", 256 * MiB, 6 * MiB)
    files["unified/cgroup.controllers"] = "\n"
    mounts = [V1_MEMORY_MOUNT.format(root="/"),
              "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw"]
    roots = _fake_system(tmp_path, HOST_V1_LINES, mounts, files)
    assert available_memory(**roots)[0] == 250 * MiB


def test_escaped_mount_point(tmp_path):
    files = _v1_group("mem ory/g", 256 * MiB, 6 * MiB)
    mount = "35 31 0:32 / /sys/fs/cgroup/mem\\040ory rw - cgroup cgroup rw,memory"
    roots = _fake_system(tmp_path, ["4:memory:/g"], [mount], files)
    assert available_memory(**roots)[0] == 250 * MiB


def test_without_mountinfo_the_usual_layout_is_assumed(tmp_path):
    files = _v1_group("memory/g", 256 * MiB, 6 * MiB)
    roots = _fake_system(tmp_path, ["4:memory:/g"], None, files)
    assert available_memory(**roots)[0] == 250 * MiB


def test_not_in_any_cgroup(tmp_path):
    roots = {"proc_root": str(tmp_path / "none"), "cgroup_root": str(tmp_path / "none")}
    got, why = available_memory(**roots)
    assert _psutil_like(got)
    assert usable_cpus(**roots) == len(os.sched_getaffinity(0))


AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize("cpu_max, expected", [
    ("max 100000\n", AFFINITY),
    ("100000 100000\n", 1),
    ("50000 100000\n", 1),           # half a CPU still needs one worker
    ("150000 100000\n", min(AFFINITY, 2)),
    ("6400000 100000\n", AFFINITY),  # a quota above the affinity does not add CPUs
])
def test_cpus_v2_quota(tmp_path, cpu_max, expected):
    roots = _fake_system(tmp_path, ["0::/app"], [V2_MOUNT.format(root="/")], {"app/cpu.max": cpu_max})
    assert usable_cpus(**roots) == expected


@pytest.mark.parametrize("own, parent, expected", [
    ((-1, 100000), (-1, 100000), AFFINITY),
    ((50000, 100000), (-1, 100000), 1),
    ((-1, 100000), (100000, 100000), 1),      # the parent's quota applies too
    ((400000, 100000), (100000, 50000), min(AFFINITY, 2)),
])
def test_cpus_v1_quota(tmp_path, own, parent, expected):
    files = {
        "cpu,cpuacct/job/task/cpu.cfs_quota_us": f"{own[0]}\n",
        "cpu,cpuacct/job/task/cpu.cfs_period_us": f"{own[1]}\n",
        "cpu,cpuacct/job/cpu.cfs_quota_us": f"{parent[0]}\n",
        "cpu,cpuacct/job/cpu.cfs_period_us": f"{parent[1]}\n",
    }
    roots = _fake_system(tmp_path, ["2:cpu,cpuacct:/job/task", "0::/"],
                         [V1_CPU_MOUNT.format(root="/")], files)
    assert usable_cpus(**roots) == expected


def test_cpus_v1_container_mount_root(tmp_path):
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "100000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    roots = _fake_system(tmp_path, ["2:cpu,cpuacct:/docker/abc"],
                         [V1_CPU_MOUNT.format(root="/docker/abc")], files)
    assert usable_cpus(**roots) == 1


def test_detect_resources_on_fake_tree(tmp_path):
    files = _v1_group("memory/process_api/abc", 256 * MiB, 56 * MiB)
    roots = _fake_system(tmp_path, HOST_V1_LINES, [V1_MEMORY_MOUNT.format(root="/")], files)
    shm_dir = tmp_path / "shm"
    shm_dir.mkdir()
    res = detect_resources(shm_path=str(shm_dir), **roots)
    assert isinstance(res, Resources)
    assert res.available_bytes == 200 * MiB
    assert res.cpus == AFFINITY
    assert res.shm_free_bytes == pytest.approx(shm_free(str(shm_dir)), rel=0.01)
    assert len(res.notes) == 3 and all(isinstance(n, str) and n for n in res.notes)
    # the cgroup is the bound: its exact limit allows the larger fraction
    assert res.cgroup_limited
    assert res.default_budget() == int(200 * MiB * budget.CGROUP_BUDGET_FRACTION)
    machine = Resources(res.cpus, res.available_bytes, res.shm_free_bytes, res.notes)
    assert machine.default_budget() == int(200 * MiB * DEFAULT_BUDGET_FRACTION)
    with pytest.raises(TypeError):
        detect_resources(proc=str(tmp_path))


def test_real_machine_sanity():
    cpus = usable_cpus()
    assert 1 <= cpus <= (os.cpu_count() or 1)
    avail, why = available_memory()
    assert 0 < avail <= psutil.virtual_memory().total
    assert "available" in why
    assert shm_free() > 0
    res = detect_resources()
    assert res.cpus == cpus and res.available_bytes > 0


def test_shm_free_missing_path_is_unbounded(tmp_path):
    assert shm_free(str(tmp_path / "no-such-dir")) >= 2 ** 60
    st = os.statvfs(tmp_path)
    assert shm_free(str(tmp_path)) == pytest.approx(st.f_bavail * st.f_frsize, rel=0.01)


# ------------------------------------------------------------ memory model

def test_accumulator_nbytes_layout():
    v = 4000 * 6000 * 3
    assert accumulator_nbytes(RGB24, "uint8", "float32") == tiers.HEADER_BYTES + 2 * v * 4
    assert accumulator_nbytes(RGB24, "uint8", "float64") == tiers.HEADER_BYTES + 2 * v * 8
    assert accumulator_nbytes(RGB24, "uint8", "exact") == tiers.HEADER_BYTES + 2 * v * 4
    assert accumulator_nbytes(MONO24, "uint16", "exact") == tiers.HEADER_BYTES + 24_000_000 * (4 + 8)
    # 15 values: every array starts on a 64-byte boundary.
    assert accumulator_nbytes((3, 5, 1), "uint8", "float16") == 64 + 64 + 64 + 64
    assert accumulator_nbytes((3, 5), "uint8", "float64") == 64 + 128 + 128
    for tier in tiers.TIERS:
        n = accumulator_nbytes((7, 11, 3), "uint8", tier)
        assert n % 64 == 0 and n >= 64 + 231 * tiers.bytes_per_value(tier, "uint8")


def test_accumulator_nbytes_matches_welford():
    # The planner must reserve exactly what the numerics allocate.
    welford = pytest.importorskip("hotpixel_shm.welford")
    for shape in (RGB24, (4000, 6000, 1), (7, 11, 3), (3, 5, 1)):
        for dtype in ("uint8", "uint16"):
            for tier in tiers.TIERS:
                if tiers.supports(tier, dtype):
                    assert accumulator_nbytes(shape, dtype, tier) == welford.Accumulator.nbytes(tier, shape, dtype)


def test_decode_bytes():
    p = 4000 * 6000
    assert decode_bytes(RGB24, "uint8") == p * 4 + 2 * p * 3
    assert decode_bytes((4000, 6000, 1), "uint8") == p + 2 * p
    assert decode_bytes(MONO24, "uint16") == p * 4 + 2 * p * 2
    assert decode_bytes((10, 10, 3), "uint16") == 100 * 8 + 2 * 300 * 2


@pytest.mark.parametrize("tier, kept", [("exact", "all"), ("float64", 1), ("float32", 1), ("float16", "all")])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_memory_model_formula(tier, kept, workers):
    from hotpixel_shm.bands import cache_bands_for, reader_cache_bytes
    seg = accumulator_nbytes(RGB24, "uint8", tier)
    work = seg + decode_bytes(RGB24, "uint8") + 5 * MiB + WORKER_SCRATCH_BYTES
    if workers > 1:
        work += WORKER_BASELINE_BYTES
    # detection reads the finished bands on a thread per worker: a cache for each
    results = 0 if kept == 1 else reader_cache_bytes(RGB24, tiers.result_dtype(tier),
                                                     cache_bands_for(workers))
    kept = workers if kept == "all" else 1
    accumulate = workers * work + PARENT_BASELINE_BYTES + 7 * MiB
    finish = kept * seg + PARENT_BASELINE_BYTES + MERGE_SCRATCH_BYTES + results + 7 * MiB
    got = memory_model(RGB24, "uint8", tier, workers, max_file_bytes=5 * MiB, extra_parent_bytes=7 * MiB)
    assert (got.accumulate_bytes, got.finish_bytes) == (accumulate, finish)
    assert got.total_bytes == max(accumulate, finish)
    assert got.bytes_per_worker == work and got.shm_bytes_per_worker == (seg if workers > 1 else 0)
    assert got.total_bytes == workers * got.bytes_per_worker + got.parent_bytes
    assert got.segment_bytes == seg and got.result_bytes == results
    # no image-sized result: the finished statistics are a few bands at most
    assert results < 64 * MiB
    d = got.to_dict()
    assert json.loads(json.dumps(d)) == d and d["total_bytes"] == got.total_bytes


def test_decoders():
    frame = 4000 * 6000 * 3
    assert decode_bytes(RGB24, "uint8", "simplejpeg") == frame + 2 * MiB
    assert decode_bytes(RGB24, "uint8", "simplejpeg") < decode_bytes(RGB24, "uint8", "pillow")
    assert budget.decoder_for(["PNG"], "uint8") == "pillow"
    assert budget.decoder_for(["JPEG", "PNG"], "uint8") == "pillow"
    assert budget.decoder_for(["RAW"], "uint16") == "raw"
    with pytest.raises(HotPixelError):
        decode_bytes(RGB24, "uint8", "gif")


def test_memory_model_counts_detection_checkpoints_and_loaded_statistics():
    from hotpixel_shm.detect import detect_memory_bytes
    values = math.prod(RGB24)
    base = memory_model(RGB24, "uint8", "float32", 2)
    assert (base.detection_bytes, base.checkpoint_bytes, base.loaded_bytes) == (0, 0, 0)
    full = memory_model(RGB24, "uint8", "float32", 2, detection=True, checkpoints=True,
                        loaded_dtype="float32")
    # 2 workers: detection on one thread, the line test beside it (issue 10), and their imports
    from hotpixel_shm.lines import lines_memory_bytes
    assert full.detection_bytes == detect_memory_bytes(RGB24) + lines_memory_bytes(RGB24) + 24 * MiB
    one = memory_model(RGB24, "uint8", "float32", 1, detection=True)
    assert one.detection_bytes == detect_memory_bytes(RGB24) + 24 * MiB
    from hotpixel_shm.bands import reader_cache_bytes
    cache = reader_cache_bytes(RGB24, "float32")
    assert full.checkpoint_bytes == 2 * cache      # snapshot read band by band, merged with the loaded
    assert full.loaded_bytes == 2 * values * 4               # loaded
    assert full.loaded_merge_bytes == 2 * values * 8 + 40 * MiB   # merged into float64, in blocks
    assert full.accumulate_bytes - base.accumulate_bytes == full.checkpoint_bytes + full.loaded_bytes
    assert full.finish_bytes - base.finish_bytes == (full.detection_bytes + full.loaded_bytes
                                                     + full.loaded_merge_bytes)
    # the command line asks the planner for these, it does not add them itself
    plan = make_plan(RGB24, "uint8", 40, 2, parse_size("16G"), detection=True, checkpoints=True,
                     loaded_dtype="float32")
    assert plan.memory.loaded_bytes == full.loaded_bytes and plan.parent_bytes == plan.memory.parent_bytes


def test_run_budget():
    res = Resources(cpus=2, available_bytes=1000 * MiB, shm_free_bytes=GiB, notes=())
    assert budget.run_budget(res) == res.default_budget()
    assert budget.run_budget(res, "300M") == 300 * MiB
    assert budget.run_budget(res, 12345) == 12345


def test_memory_model_rejects_bad_input():
    with pytest.raises(HotPixelError):
        memory_model(RGB24, "float32", "float32", 2)
    with pytest.raises(HotPixelError):
        memory_model(RGB24, "uint8", "float8", 2)
    with pytest.raises(HotPixelError):
        memory_model(RGB24, "uint8", "float32", 0)
    with pytest.raises(HotPixelError):
        memory_model((0, 10, 3), "uint8", "float32", 1)
    with pytest.raises(HotPixelError):
        memory_model((10, 10, 5), "uint8", "float32", 1)


# ------------------------------------------------------------ plan policy

# (shape, dtype, n_files, cpus, budget, kwargs) -> (workers, tier[, bands])
PLAN_TABLE = [
    # 24 MP 8-bit RGB, Pillow decoding, no detection: totals 1 worker exact
    # and float32 834 MiB, float64 1.35 GiB, float16 628 MiB; 2 workers exact
    # 1.66 GiB, float16 1.26 GiB; 3 workers exact 2.47 GiB, float16 1.86 GiB;
    # 8 workers exact 6.50 GiB, float16 4.89 GiB.  Exact costs what float32 does (its result
    # is read band by band), so float32 is taken only past exact's image limit.
    (RGB24, "uint8", 40, 2, "16G", {}, (2, "exact")),
    (RGB24, "uint8", 40, 2, "2G", {}, (2, "exact")),
    (RGB24, "uint8", 40, 2, "1.5G", {}, (2, "float16")),
    (RGB24, "uint8", 40, 2, "1G", {}, (1, "exact")),
    (RGB24, "uint8", 40, 2, "800M", {}, (1, "float16")),
    (RGB24, "uint8", 40, 1, "2G", {}, (1, "exact")),
    (RGB24, "uint8", 40, 8, "16G", {}, (8, "exact")),
    (RGB24, "uint8", 40, 8, "6G", {}, (8, "float16")),
    # nothing fits in one pass: the fewest band passes that fit
    (RGB24, "uint8", 40, 2, "600M", {}, (1, "exact", 2)),
    (RGB24, "uint8", 40, 2, "400M", {}, (1, "float16", 3)),
    (MONO24, "uint16", 40, 2, "300M", {}, (1, "float32", 4)),
    # few photos: never more workers than photos
    (RGB24, "uint8", 1, 8, "16G", {}, (1, "exact")),
    (RGB24, "uint8", 3, 8, "16G", {}, (3, "exact")),
    (RGB24, "uint8", 3, 8, "2.2G", {}, (3, "float16")),
    (RGB24, "uint8", 3, 2, "16G", {}, (2, "exact")),
    # very many photos: exact holds for 66052 per worker, float16 for 4900
    (RGB24, "uint8", 100000, 1, "16G", {}, (1, "float64")),
    (RGB24, "uint8", 100000, 2, "16G", {}, (2, "exact")),
    (RGB24, "uint8", 100000, 8, "16G", {}, (8, "exact")),
    # 16-bit mono 24 MP: 2 workers exact 1028 MiB, float64 1.18 GiB, float32 844 MiB;
    # 1 worker exact 514 MiB, float64 605 MiB, float32 422 MiB; float16 never.
    (MONO24, "uint16", 40, 2, "16G", {}, (2, "exact")),
    (MONO24, "uint16", 40, 2, "1G", {}, (2, "float32")),
    (MONO24, "uint16", 40, 2, "820M", {}, (1, "exact")),
    (MONO24, "uint16", 40, 2, "500M", {}, (1, "float32")),
    (MONO24, "uint16", 100000, 1, "16G", {}, (1, "float64")),
    (MONO24, "uint16", 100000, 2, "16G", {}, (2, "exact")),
    (MONO24, "uint16", 3, 8, "16G", {}, (3, "exact")),
    # forced worker counts, tiers and bands
    (RGB24, "uint8", 40, 2, "16G", {"workers": 1}, (1, "exact")),
    (RGB24, "uint8", 40, 2, "16G", {"workers": 3}, (3, "exact")),
    (RGB24, "uint8", 40, 2, "2.2G", {"workers": 3}, (3, "float16")),
    (RGB24, "uint8", 2, 8, "16G", {"workers": 5}, (2, "exact")),
    (RGB24, "uint8", 40, 2, "16G", {"tier": "float16"}, (2, "float16")),
    (RGB24, "uint8", 40, 2, "16G", {"tier": "float32", "workers": 1}, (1, "float32")),
    (RGB24, "uint8", 40, 2, "1.5G", {"tier": "exact"}, (1, "exact")),   # fewer workers keep the tier
    (RGB24, "uint8", 40, 2, "16G", {"workers": 1, "bands": 4}, (1, "exact", 4)),
    (MONO24, "uint16", 40, 8, "16G", {"tier": "float64"}, (8, "float64")),
    (MONO24, "uint16", 40, 2, "16G", {"tier": "exact", "workers": 2}, (2, "exact")),
]


@pytest.mark.parametrize("shape, dtype, n_files, cpus, budget_text, kwargs, expected", PLAN_TABLE)
def test_plan_table(shape, dtype, n_files, cpus, budget_text, kwargs, expected):
    b = parse_size(budget_text)
    plan = make_plan(shape, dtype, n_files, cpus, b, **kwargs)
    assert (plan.workers, plan.tier, plan.bands) == tuple(expected) + (1,) * (3 - len(expected))
    _check_plan_invariants(plan, shape, dtype, n_files, b)
    assert plan.fits


def _check_plan_invariants(plan, shape, dtype, n_files, b):
    shape3 = tuple(shape) + (1,) * (3 - len(shape))
    assert plan.shape == shape3
    assert plan.sample_dtype == dtype
    assert plan.n_files == n_files and plan.budget_bytes == b
    assert plan.images_per_worker == math.ceil(n_files / plan.workers)
    assert plan.images_per_worker <= tiers.max_images(plan.tier, dtype)
    assert tiers.supports(plan.tier, dtype)
    model = memory_model(shape, dtype, plan.tier, plan.workers, batch=plan.batch, bands=plan.bands)
    assert plan.memory == model
    # the batch's decoded photos fit in what the budget left
    assert 1 <= plan.batch <= max(1, plan.images_per_worker)
    assert (plan.shm_bytes_per_worker, plan.bytes_per_worker, plan.parent_bytes, plan.total_bytes) == (
        model.shm_bytes_per_worker, model.bytes_per_worker, model.parent_bytes, model.total_bytes)
    assert [c.verdict for c in plan.candidates].count("chosen") == 1
    chosen = next(c for c in plan.candidates if c.verdict == "chosen")
    assert (chosen.workers, chosen.tier, chosen.total_bytes) == (plan.workers, plan.tier, plan.total_bytes)
    if plan.workers > 1:
        assert plan.total_bytes == plan.workers * plan.bytes_per_worker + plan.parent_bytes
    assert plan.reasons and all(isinstance(r, str) and r for r in plan.reasons)
    text = plan.describe()
    assert plan.tier in text and format_bytes(plan.total_bytes) in text and format_bytes(b) in text
    d = plan.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["memory"]["total_bytes"] == plan.total_bytes
    assert len(d["candidates"]) == len(plan.candidates)
    rebuilt = {k: v for k, v in d.items() if k not in ("memory", "candidates")}
    assert Plan(**{**rebuilt, "shape": tuple(d["shape"]), "reasons": tuple(d["reasons"])}) == plan


def test_auto_plan_takes_most_accurate_fitting_tier_and_says_why():
    b = parse_size("1.5G")
    plan = make_plan(RGB24, "uint8", 40, 2, b)
    assert (plan.workers, plan.tier) == (2, "float16")
    # Every more accurate tier at this worker count must be over the budget...
    for tier in ("exact", "float64", "float32"):
        assert memory_model(RGB24, "uint8", tier, 2).total_bytes > b
    text = " ".join(plan.reasons)
    assert "not exact" in text and "not float64" in text and "not float32" in text
    assert format_bytes(b) in text


def test_auto_plan_explains_fewer_workers():
    plan = make_plan(RGB24, "uint8", 40, 2, parse_size("1G"))
    assert plan.workers == 1
    assert any("instead of 2" in r for r in plan.reasons)


def test_plan_reduces_workers_to_file_count_with_reason():
    plan = make_plan(RGB24, "uint8", 2, 8, parse_size("16G"), workers=5)
    assert plan.workers == 2
    assert any("5 workers" in r and "2 photo" in r for r in plan.reasons)


@pytest.mark.parametrize("shape, dtype, budget_text", [
    (RGB24, "uint8", "250M"),
    (MONO24, "uint16", "120M"),
    ((8000, 12000, 3), "uint8", "500M"),
])
def test_no_plan_fits_even_in_bands(shape, dtype, budget_text):
    b = parse_size(budget_text)
    most = budget.max_bands(shape[0])
    smallest = min(memory_model(shape, dtype, t, 1, bands=most).total_bytes
                   for t in tiers.TIERS if tiers.supports(t, dtype))
    with pytest.raises(PlanError) as info:
        make_plan(shape, dtype, 40, 2, b)
    msg = str(info.value)
    assert format_bytes(smallest) in msg and f"{most} band passes" in msg
    assert format_bytes(b) in msg
    assert "--memory-budget" in msg


def test_band_passes_are_the_last_resort_and_say_so():
    b = parse_size("600M")
    plan = make_plan(RGB24, "uint8", 40, 2, b)
    assert plan.bands == 2 and plan.fits
    # nothing fits in one pass, whatever the workers and tier
    for w in (1, 2):
        for t in tiers.TIERS:
            assert memory_model(RGB24, "uint8", t, w).total_bytes > b
    assert memory_model(RGB24, "uint8", plan.tier, 1, bands=2).segment_bytes == \
        accumulator_nbytes((2000, 6000, 3), "uint8", plan.tier)
    text = " ".join(plan.reasons)
    assert "2 band passes" in text and "decoded 2 times" in text
    assert {c.bands for c in plan.candidates} == {1, 2}
    assert "bands" in plan.describe() and plan.to_dict()["bands"] == 2
    # asked for, they are used even when one pass would fit
    assert make_plan(RGB24, "uint8", 40, 2, parse_size("16G"), bands=3).bands == 3


def test_forced_plan_over_budget():
    b = parse_size("1.5G")
    needed = memory_model(RGB24, "uint8", "float64", 2).total_bytes
    with pytest.raises(PlanError) as info:
        make_plan(RGB24, "uint8", 40, 2, b, workers=2, tier="float64", bands=1)
    assert format_bytes(needed) in str(info.value) and format_bytes(b) in str(info.value)
    plan = make_plan(RGB24, "uint8", 40, 2, b, workers=2, tier="float64", force=True, bands=1)
    assert (plan.workers, plan.tier, plan.total_bytes) == (2, "float64", needed)
    assert not plan.fits
    assert any("EXCEEDS THE BUDGET" in r for r in plan.reasons)


def test_forced_auto_plan_over_budget_is_the_smallest():
    plan = make_plan(RGB24, "uint8", 40, 2, parse_size("100M"), force=True)
    most = budget.max_bands(RGB24[0])
    smallest = min(memory_model(RGB24, "uint8", t, w, bands=most).total_bytes
                   for t in tiers.TIERS for w in (1, 2))
    assert plan.total_bytes == smallest
    assert any("EXCEEDS THE BUDGET" in r for r in plan.reasons)


def test_forced_plan_within_budget_has_no_warning():
    plan = make_plan(RGB24, "uint8", 40, 2, parse_size("16G"), workers=2, tier="float64", force=True)
    assert plan.fits and not any("EXCEEDS" in r for r in plan.reasons)


def test_float16_refused_for_16_bit():
    with pytest.raises(PlanError, match="float16"):
        make_plan(MONO24, "uint16", 40, 2, parse_size("16G"), tier="float16")
    with pytest.raises(PlanError, match="float16"):
        make_plan(MONO24, "uint16", 40, 2, parse_size("16G"), tier="float16", force=True)


@pytest.mark.parametrize("dtype, limit", [("uint8", 66052), ("uint16", 65535)])
def test_exact_limit_per_worker(dtype, limit):
    shape = (4, 6, 3) if dtype == "uint8" else (4, 6)
    b = parse_size("1G")
    assert make_plan(shape, dtype, limit, 1, b, tier="exact").tier == "exact"
    assert make_plan(shape, dtype, 2 * limit, 2, b, tier="exact").images_per_worker == limit
    for n, kwargs in ((limit + 1, {"tier": "exact"}), (2 * limit + 1, {"tier": "exact", "workers": 2})):
        with pytest.raises(PlanError, match=str(limit)):
            make_plan(shape, dtype, n, 1, b, force=True, **kwargs)
    # Left to choose, the planner moves on to float64 instead.
    assert make_plan(shape, dtype, limit + 1, 1, b).tier == "float64"


@pytest.mark.parametrize("tier", ["float32", "float16"])
def test_float_tier_limit_per_worker(tier):
    b = parse_size("1G")
    small = (4, 6, 3)
    limit = tiers.max_images(tier, "uint8")
    assert make_plan(small, "uint8", 2 * limit, 2, b, tier=tier).images_per_worker == limit
    with pytest.raises(PlanError, match=str(limit)):
        make_plan(small, "uint8", 2 * limit + 1, 2, b, tier=tier, workers=2)


def test_many_photos_give_up_workers_before_accuracy():
    # 100000 photos on 8 CPUs with 5.5 GiB: the compact tiers would be cheap
    # enough for 8 workers but cannot stay accurate for 12500 photos each.
    b = parse_size("5.5G")
    plan = make_plan(RGB24, "uint8", 100000, 8, b)
    assert plan.fits and plan.images_per_worker <= tiers.max_images(plan.tier, "uint8")
    for k in range(plan.workers + 1, 9):
        per = math.ceil(100000 / k)
        for tier in tiers.TIERS:
            ok = per <= tiers.max_images(tier, "uint8")
            assert not ok or memory_model(RGB24, "uint8", tier, k).total_bytes > b, (k, tier)
    order = tiers.ACCURACY_ORDER
    for tier in order[:order.index(plan.tier)]:
        per = plan.images_per_worker
        assert per > tiers.max_images(tier, "uint8") or memory_model(RGB24, "uint8", tier, plan.workers).total_bytes > b
    assert any("instead of 8" in r for r in plan.reasons)


def test_shared_memory_space():
    b = parse_size("16G")
    seg = accumulator_nbytes(RGB24, "uint8", "exact")
    # Room for one segment only: the automatic plan falls back to the serial path.
    plan = make_plan(RGB24, "uint8", 40, 2, b, shm_free_bytes=seg + 1)
    assert plan.workers == 1 and plan.tier == "exact"
    plan = make_plan(RGB24, "uint8", 40, 2, b, shm_free_bytes=2 * seg)
    assert plan.workers == 2
    # A forced worker count that does not fit is refused, even with force.
    with pytest.raises(PlanError, match="shared memory"):
        make_plan(RGB24, "uint8", 40, 2, b, workers=2, tier="exact", shm_free_bytes=seg, force=True)


def test_file_and_extra_parent_bytes_are_planned():
    b = parse_size("16G")
    base = make_plan(RGB24, "uint8", 40, 2, b)
    more = make_plan(RGB24, "uint8", 40, 2, b, max_file_bytes=20 * MiB, extra_parent_bytes=300 * MiB)
    assert (more.workers, more.tier) == (base.workers, base.tier)
    assert more.total_bytes == base.total_bytes + base.workers * 20 * MiB + 300 * MiB
    # The working set can push a plan to a smaller tier.
    tight = make_plan(RGB24, "uint8", 40, 2, parse_size("1.9G"), extra_parent_bytes=300 * MiB)
    assert (tight.workers, tight.tier) == (2, "float16")


@pytest.mark.parametrize("args, kwargs", [
    ((RGB24, "uint8", -1, 2, GiB), {}),
    ((RGB24, "uint8", 40, 0, GiB), {}),
    ((RGB24, "uint8", 40, 2, 0), {}),
    ((RGB24, "uint8", 40, 2, GiB), {"workers": 0}),
    ((RGB24, "uint8", 40, 2, GiB), {"tier": "float8"}),
    ((RGB24, "int16", 40, 2, GiB), {}),
    (((4000,), "uint8", 40, 2, GiB), {}),
])
def test_make_plan_rejects_bad_arguments(args, kwargs):
    with pytest.raises(HotPixelError):
        make_plan(*args, **kwargs)


def test_zero_files_still_plans():
    plan = make_plan(RGB24, "uint8", 0, 4, parse_size("16G"))
    assert plan.workers == 1 and plan.images_per_worker == 0


def test_module_exports():
    for name in budget.__all__:
        assert hasattr(budget, name)
    assert 0 < DEFAULT_BUDGET_FRACTION < 1


def test_batch_comes_from_what_the_budget_leaves():
    from hotpixel_shm.budget import DEFAULT_BATCH
    roomy = make_plan(RGB24, "uint8", 40, 2, parse_size("16G"))
    assert roomy.batch == DEFAULT_BATCH
    assert roomy.memory.batch_bytes == (DEFAULT_BATCH - 1) * math.prod(roomy.shape)
    assert f"{DEFAULT_BATCH} photo(s) folded per accumulator pass" in roomy.describe()
    # a budget that holds the plan with K = 1 and not one more decoded photo
    tight_total = memory_model(RGB24, "uint8", roomy.tier, roomy.workers).total_bytes
    tight = make_plan(RGB24, "uint8", 40, 2, tight_total, workers=roomy.workers, tier=roomy.tier)
    assert tight.batch == 1 and tight.total_bytes == tight_total
    # the batch never costs a worker or a tier
    assert (tight.workers, tight.tier) == (roomy.workers, roomy.tier)
    # never more than the photos per worker; as asked when asked
    assert make_plan(RGB24, "uint8", 3, 2, parse_size("16G")).batch == 2
    asked = make_plan(RGB24, "uint8", 40, 2, parse_size("16G"), batch=7)
    assert asked.batch == 7 and asked.memory.batch_bytes == 6 * math.prod(asked.shape)
    with pytest.raises(HotPixelError, match="batch"):
        make_plan(RGB24, "uint8", 40, 2, parse_size("16G"), batch=17)


def test_a_forced_band_plan_is_among_the_plans_considered():
    """--force when only band passes come near: the table lists the plan chosen."""
    p = make_plan((4000, 6000, 3), "uint8", 20, 2, 200 * 2**20, force=True)
    assert p.bands > 1
    chosen = [c for c in p.candidates if c.verdict == "chosen"]
    assert len(chosen) == 1
    assert (chosen[0].workers, chosen[0].tier, chosen[0].bands) == (p.workers, p.tier, p.bands)


def test_bands_asked_are_the_passes_the_engine_makes():
    """4000 rows in 124 bands of equal height (33 rows) are 122 passes: the
    plan says 122, and its rows are the asked split's."""
    from hotpixel_shm.bands import band_rows
    p = make_plan((4000, 6000, 3), "uint8", 20, 2, 20 * 2**30, bands=124)
    assert p.bands == 122 == len(band_rows(4000, 124))
    assert band_rows(4000, p.bands) == band_rows(4000, 124)
    (text,) = [r for r in p.reasons if "band passes" in r]
    assert "122 band passes (--bands 124 in bands of equal height)" in text
    assert "decoded 122 times" in text
    assert make_plan((4000, 6000, 3), "uint8", 20, 2, 20 * 2**30, bands=125).bands == 125
