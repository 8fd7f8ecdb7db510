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
