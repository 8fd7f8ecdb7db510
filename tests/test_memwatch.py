"""Tests of hotpixel_shm.memwatch with real child processes."""
import os
import subprocess
import sys
from multiprocessing import shared_memory

import numpy as np
import psutil
import pytest

from hotpixel_shm.memwatch import PeakMemory, tree_bytes

MiB = 2 ** 20

# A child that attaches to a shared block, touches every page and waits.
_ATTACH_CHILD = r"""
import sys
from multiprocessing import resource_tracker, shared_memory
shm = shared_memory.SharedMemory(name=sys.argv[1])
# Attaching registers the block with this interpreter's resource tracker, which
# would unlink it at exit (python/cpython#82300); the test process owns it.
resource_tracker.unregister(shm._name, "shared_memory")
buf = shm.buf
total = 0
for i in range(0, len(buf), 4096):
    total += buf[i]
print("ready", total, flush=True)
sys.stdin.readline()
buf.release()
shm.close()
"""

# A child that allocates private memory (touched), optionally through a grandchild.
_ALLOC_CHILD = r"""
import subprocess, sys
n = int(sys.argv[1])
depth = int(sys.argv[2])
if depth > 0:
    p = subprocess.Popen([sys.executable, "-c", sys.argv[3], sys.argv[1], str(depth - 1), sys.argv[3]],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    print(p.stdout.readline().strip(), flush=True)
    sys.stdin.readline()
    p.stdin.close()
    p.wait()
else:
    block = bytes(range(256)) * (n // 256)
    print("ready", len(block), flush=True)
    sys.stdin.readline()
"""


def _start(code, *args):
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _finish(proc):
    proc.stdin.close()
    proc.wait(timeout=60)
    proc.stdout.close()


def _rss_tree(pid):
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def test_shared_block_mapped_twice_is_counted_once():
    size = 200 * MiB
    before = tree_bytes(os.getpid())
    rss_before = _rss_tree(os.getpid())
    shm = shared_memory.SharedMemory(create=True, size=size)
    child = None
    try:
        view = np.ndarray((size,), np.uint8, buffer=shm.buf)
        view[:] = 1                     # the parent's pages are resident
        child = _start(_ATTACH_CHILD, shm.name)
        line = child.stdout.readline().split()
        assert line == ["ready", str(size // 4096)]
        with PeakMemory() as peak:
            both = peak.sample()
            rss_both = _rss_tree(os.getpid())
        del view
    finally:
        if child is not None:
            _finish(child)
        shm.close()
        shm.unlink()
    grown = both - before
    # Counted once: 200 MiB plus a small interpreter, far from the 400 MiB of counting it twice.
    assert 195 * MiB <= grown <= 300 * MiB, grown / MiB
    assert peak.peak_bytes >= both
    # RSS would count the block in both processes: the test can tell the difference.
    assert rss_both - rss_before >= 390 * MiB


@pytest.mark.parametrize("depth", [0, 1])
def test_children_and_grandchildren_are_included(depth):
    size = 120 * MiB
    with PeakMemory(interval=0.01) as peak:
        before = peak.sample()
        child = _start(_ALLOC_CHILD, str(size), str(depth), _ALLOC_CHILD)
        try:
            assert child.stdout.readline().split()[0] == "ready"
            during = peak.sample()
        finally:
            _finish(child)
        after = peak.sample()
    assert during - before >= size
    assert peak.peak_bytes >= during
    assert after < during - size // 2        # the child's memory is gone once it exits
    assert peak.samples >= 3


def test_watching_another_process_by_pid():
    size = 100 * MiB
    child = _start(_ALLOC_CHILD, str(size), "0", _ALLOC_CHILD)
    try:
        assert child.stdout.readline().split()[0] == "ready"
        watcher = PeakMemory(pid=child.pid)
        reading = watcher.sample()
    finally:
        _finish(child)
    assert reading >= size
    # This process's own memory is not included.
    assert reading < size + tree_bytes(os.getpid())
    # Once the process has exited there is nothing to read, and no error.
    assert watcher.sample() == 0
    assert watcher.peak_bytes == reading


def test_processes_that_come_and_go_do_not_break_sampling():
    with PeakMemory(interval=0.001) as peak:
        for _ in range(15):
            subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert peak.samples >= 2
    assert peak.peak_bytes > 0


def test_sample_of_this_process():
    peak = PeakMemory()
    now = peak.sample()
    assert now > 5 * MiB
    assert peak.peak_bytes == now and peak.samples == 1
    assert peak.pid == os.getpid()
    assert "PeakMemory(" in repr(peak)


def test_gone_pid_reads_zero():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert tree_bytes(proc.pid) == 0


def test_bad_interval_and_reentry():
    with pytest.raises(ValueError):
        PeakMemory(interval=0)
    peak = PeakMemory()
    with peak:
        with pytest.raises(RuntimeError):
            peak.__enter__()
    # Reusable once finished; the peak carries over.
    first = peak.peak_bytes
    with peak:
        pass
    assert peak.peak_bytes >= first
