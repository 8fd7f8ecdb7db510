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
