"""Fixed costs: a plan-only run imports only what it needs (issue 10, item 3)."""
import subprocess
import sys

import numpy as np
from PIL import Image


def test_plan_imports_no_scipy_tqdm_picture_or_statistics_file_code(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.jpg"
        Image.fromarray(np.full((16, 24, 3), 40 * i, np.uint8)).save(p)
        paths.append(str(p))
    code = ("import sys\n"
            "from hotpixel_shm.cli import main\n"
            f"rc = main(['--plan', '-q'] + {paths!r})\n"
            "heavy = sorted(m for m in ('scipy', 'tqdm', 'hotpixel_shm.picture',"
            " 'hotpixel_shm.temporal', 'hotpixel_shm.statsio', 'hotpixel_shm.welford')"
            " if m in sys.modules)\n"
            "print(rc, heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr


def test_a_photo_run_imports_no_scipy(tmp_path):
    # thresholds, line test and clusters computed without scipy (issue 10:
    # scipy.stats alone was 0.9 s of a 24 MP run's fixed costs); a hot pixel
    # planted so that defects are clustered
    from hotpixel_shm.synth import simulate_frames
    frames, _ = simulate_frames(8, 160, 200, seed=2)
    paths = []
    for i, f in enumerate(frames):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(f).save(p)
        paths.append(str(p))
    assert _run_in_a_fresh_process(tmp_path, paths, "hotpixel_shm.temporal") == "0 True True []"


def test_a_raw_run_imports_no_scipy(tmp_path):
    # the clipped-highlight zone is a numpy dilation (issue 10): a raw run,
    # clipped highlights included, imports no scipy either
    from hotpixel_shm.dng import write_raw_set
    paths, _ = write_raw_set(str(tmp_path / "raw"), n=6, width=160, height=128, seed=3)
    assert _run_in_a_fresh_process(tmp_path, list(paths), "hotpixel_shm.rawdetect") == \
        "0 True True []"


def _run_in_a_fresh_process(tmp_path, paths, used):
    """The command on ``paths`` in a new interpreter: ``"rc found used heavy"``
    -- its exit code, whether it found defects, whether it imported the
    module ``used`` (the run was the one meant), and which heavy modules it
    imported."""
    report = str(tmp_path / "r.json")
    code = ("import json, sys\n"
            "from hotpixel_shm.cli import main\n"
            f"rc = main(['-q', '--json', {report!r}] + {paths!r})\n"
            f"found = len(json.load(open({report!r}))['defects'])\n"
            "heavy = sorted(m for m in ('scipy', 'tqdm', 'hotpixel_shm.picture') if m in sys.modules)\n"
            f"print(rc, found > 0, {used!r} in sys.modules, heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]
