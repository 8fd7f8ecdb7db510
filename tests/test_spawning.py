"""How workers are spawned: numpy loaded without OpenBLAS's thread pool
(issue 10, fixed costs: no BLAS routine is called, and the pool's threads
spun at start-up in every process), unless the user set it."""
import os
import subprocess
import sys

import psutil
import pytest

from hotpixel_shm import engine

from conftest import make_frames, reference_stats, write_images


def test_workers_load_numpy_without_blas_threads(tmp_path):
    paths, decoded = write_images(tmp_path, make_frames(5, (20, 24, 3), seed=5))
    seen = []

    def progress(done, total, skipped):
        # a photo is done: every worker has loaded numpy, and its thread count is final
        for k in psutil.Process().children():
            try:
                if "spawn_main" in " ".join(k.cmdline()):
                    seen.append(k.num_threads())
            except psutil.Error:
                pass

    job = engine.Job(files=paths, shape=(20, 24, 3), sample_dtype="uint8", tier="float64",
                     workers=2)
    res = engine.run(job, progress=progress)
    assert res.stats.n == 5 and seen and set(seen) == {1}
    mean, _ = reference_stats(decoded)
    assert abs(res.stats.mean - mean).max() < 1e-9


@pytest.mark.parametrize("given", [None, "2"])
def test_the_command_loads_numpy_without_blas_threads_unless_told(tmp_path, given):
    write_images(tmp_path, make_frames(3, (20, 24, 3), seed=6))
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given:
        env["OPENBLAS_NUM_THREADS"] = given
    code = ("import os, psutil\n"
            "from hotpixel_shm.cli import main\n"
            f"main(['--plan', '-q', {str(tmp_path)!r}])\n"
            "print(os.environ['OPENBLAS_NUM_THREADS'], psutil.Process().num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    setting, threads = out.stdout.strip().splitlines()[-1].split()
    if given:
        assert setting == given      # the user's setting is kept
    else:
        assert (setting, threads) == ("1", "1")
