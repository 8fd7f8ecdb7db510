"""Shared fixtures: seeded synthetic photo sets written as real files, and a
check that no test leaves a shared-memory segment of ours behind."""
import os
import time

import numpy as np
import pytest
from PIL import Image

from hotpixel_shm import shm


@pytest.fixture(autouse=True)
def no_leaked_segments():
    """Every test must leave /dev/shm as it found it (our segments, this process)."""
    before = set(shm.list_segments(pid=os.getpid()))
    yield
    deadline = time.monotonic() + 3
    while True:
        left = set(shm.list_segments(pid=os.getpid())) - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"shared memory left behind: {sorted(left)}"


def make_frames(n, shape, dtype=np.uint8, seed=0, base=None, noise=20.0):
    """n seeded photo-like frames of (h, w, c) with per-pixel variation."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    hi = 255 if np.dtype(dtype) == np.uint8 else 65535
    if base is None:
        yy, xx = np.mgrid[0:h, 0:w]
        base = (0.5 + 0.4 * np.sin(xx / 7.0 + yy / 11.0))[..., None] * hi * np.ones(c)
    out = []
    for _ in range(n):
        f = base + rng.normal(0, noise * hi / 255.0, size=shape) + rng.uniform(-30, 30) * hi / 255.0
        out.append(np.clip(np.rint(f), 0, hi).astype(dtype))
    return out


def write_images(tmp_path, frames, fmt="png", prefix="img", quality=95):
    """Write frames as real files; returns the paths (sorted) and the arrays as decoded."""
    paths, decoded = [], []
    for i, f in enumerate(frames):
        p = os.path.join(str(tmp_path), f"{prefix}{i:04d}.{fmt}")
        if f.dtype == np.uint16:
            Image.fromarray(f[:, :, 0]).save(p)  # I;16
        elif f.shape[2] == 1:
            Image.fromarray(f[:, :, 0], "L").save(p, **({"quality": quality} if fmt == "jpg" else {}))
        else:
            Image.fromarray(f, "RGB").save(p, **({"quality": quality} if fmt == "jpg" else {}))
        paths.append(p)
        with Image.open(p) as im:
            a = np.asarray(im)
        if a.ndim == 2:
            a = a[:, :, None]
        decoded.append(a.astype(f.dtype))
    return paths, decoded


def reference_stats(frames):
    """numpy float64 mean and population variance: the contract's reference."""
    stack = np.stack([f.astype(np.float64) for f in frames])
    return stack.mean(axis=0), stack.var(axis=0)


def _photo_like_jpegs(directory, n, height, width, seed):
    from hotpixel_shm.synth import make_photo_like
    paths = []
    for i in range(n):
        p = str(directory / f"p{i}.jpg")
        Image.fromarray(make_photo_like(height, width, seed=seed + i)).save(p, quality=90)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def jpegs_12mp(tmp_path_factory):
    """Four photo-like 12 MP JPEGs (4000 x 3000), written once per session:
    two per worker for two workers (the planner's default batch of 2)."""
    return _photo_like_jpegs(tmp_path_factory.mktemp("jpegs_12mp"), 4, 3000, 4000, seed=0)


@pytest.fixture(scope="session")
def jpegs_24mp(tmp_path_factory):
    """Three photo-like 24 MP JPEGs (6000 x 4000), written once per session."""
    return _photo_like_jpegs(tmp_path_factory.mktemp("jpegs_24mp"), 3, 4000, 6000, seed=10)


@pytest.fixture
def small_set(tmp_path):
    """7 PNG photos 24x32 RGB (7 does not divide over 2 or 3 workers)."""
    frames = make_frames(7, (24, 32, 3), seed=1)
    paths, decoded = write_images(tmp_path, frames)
    return paths, decoded
