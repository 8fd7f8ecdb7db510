import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np

from hotpixel_shm import shm


def test_create_attach_unlink_roundtrip():
    seg = shm.Segment.create(4096)
    try:
        assert seg.name.startswith(f"{shm.PREFIX}_{os.getpid()}_")
        path = os.path.join(shm.SHM_DIR, seg.name)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        other = shm.Segment.attach(seg.name)
        a = np.frombuffer(seg.buf, np.uint8)
        b = np.frombuffer(other.buf, np.uint8)
        assert a.sum() == 0  # fresh segments are zero
        a[:10] = 7
        assert b[:10].tolist() == [7] * 10
        seg.unlink()
        assert not os.path.exists(path)
        a[10] = 9  # mappings stay valid after unlink
        assert b[10] == 9
        del a, b
        assert other.close()
    finally:
        seg.unlink()
        seg.close()


def test_names_are_unpredictable():
    a, b = shm.Segment.create(64), shm.Segment.create(64)
    try:
        assert a.name != b.name
        assert len(a.name.split("_")[2]) == 16
    finally:
        for s in (a, b):
            s.unlink()
            s.close()


def test_unlink_all_owned_removes_forgotten_segments():
    seg = shm.Segment.create(64)
    assert seg.name in shm.list_segments(pid=os.getpid())
    removed = shm.unlink_all_owned()
    assert seg.name in removed
    assert seg.name not in shm.list_segments()
    seg.close()


def test_cleanup_stale_removes_segments_of_dead_owner():
    code = ("from hotpixel_shm import shm; import sys, time; s = shm.Segment.create(4096); "
            "print(s.name, flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    name = p.stdout.readline().strip()
    assert name in shm.list_segments()
    alive_before = shm.cleanup_stale()
    assert name not in alive_before  # owner alive: left alone
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    assert name in shm.list_segments()  # a SIGKILL leaves it...
    removed = shm.cleanup_stale()
    assert name in removed  # ...and the next start removes it
    assert name not in shm.list_segments()


def _kernel_at_least(major, minor):
    import platform
    try:
        have = tuple(int(v) for v in platform.release().split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return sys.platform.startswith("linux") and have >= (major, minor)


def test_populate_allocates_the_pages_of_the_range_only():
    import mmap
    page = mmap.PAGESIZE
    seg = shm.Segment.create(8 * page + 100)
    try:
        path = os.path.join(shm.SHM_DIR, seg.name)
        assert os.stat(path).st_blocks == 0          # tmpfs: no page yet
        done = seg.populate(page + 5, 3 * page)       # from the page holding byte page + 5
        if _kernel_at_least(5, 14):
            assert done
        if done:
            assert os.stat(path).st_blocks * 512 == 2 * page
            assert seg.populate(7 * page)             # to the end, a part page included
            assert os.stat(path).st_blocks * 512 == 4 * page
        a = np.frombuffer(seg.buf, np.uint8)
        assert not a.any()                            # still zero, and writable
        a[-1] = 1
        del a
    finally:
        seg.unlink()
        seg.close()


def test_populate_falls_back_quietly_where_the_kernel_refuses():
    import errno
    import types

    def refuse(*args):
        raise OSError(errno.EINVAL, "Invalid argument")
    for buf in (types.SimpleNamespace(madvise=refuse), types.SimpleNamespace()):
        seg = shm.Segment("x", buf, 1 << 20, owner=False)
        assert seg.populate() is False
        assert seg.populate(write=False) is False
