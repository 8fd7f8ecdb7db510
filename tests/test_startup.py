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


def test_a_run_imports_neither_scipy_stats_nor_ndimage(tmp_path):
    # a photo run's thresholds and line test need neither (issue 10: their
    # imports were 0.9 s of a 24 MP run's fixed costs)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    paths = []
    for i in range(5):
        f = (120 + 60 * np.sin(xx / 5 + i) + 40 * np.cos(yy / 7 - i))[..., None] \
            + rng.normal(0, 8, (48, 64, 3))
        p = tmp_path / f"p{i}.jpg"
        Image.fromarray(np.clip(f, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(str(p))
    report = str(tmp_path / "r.json")
    code = ("import sys\n"
            "from hotpixel_shm.cli import main\n"
            f"rc = main(['-q', '--json', {report!r}] + {paths!r})\n"
            "heavy = sorted(m for m in ('scipy.stats', 'scipy.ndimage', 'tqdm',"
            " 'hotpixel_shm.picture') if m in sys.modules)\n"
            "print(rc, 'hotpixel_shm.temporal' in sys.modules, heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 True []", out.stdout + out.stderr
