"""Fixed costs: a plan-only run imports only what it needs (issue 10, item 3)."""
import subprocess
import sys

import numpy as np
import pytest
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


# Every Python process of the command (this test's site hook runs in each,
# the spawned workers too) notes the BLAS variable as numpy starts to load.
_NOTE_BLAS = '''
import os, sys
class _NoteBlas:
    # the command line as started (a spawned worker's is replaced by its parent's later)
    role = "worker" if "--multiprocessing-fork" in sys.argv else "main"

    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            sys.meta_path.remove(self)
            role = self.role
            with open(os.path.join(os.environ["HPS_TEST_NOTES"], f"{role}-{os.getpid()}"), "w") as f:
                f.write(os.environ.get("OPENBLAS_NUM_THREADS", "unset"))
        return None
sys.meta_path.insert(0, _NoteBlas())
'''


@pytest.mark.parametrize("how,user", [("module", None), ("script", "3")])
def test_the_command_and_its_workers_load_numpy_with_one_blas_thread(tmp_path, how, user):
    """python -m hotpixel_shm and the hotpixel-shm script (cli.main) load
    numpy with OPENBLAS_NUM_THREADS=1 in their own process and in every
    worker of a real run (issue 10: each BLAS thread spun ~0.1 s of CPU at
    start-up; ``_early.single_threaded_blas``); a value the user set is kept."""
    import os
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NOTE_BLAS)
    notes = tmp_path / "notes"
    notes.mkdir()
    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(np.full((12, 16, 3), 30 * i, np.uint8)).save(p)
        paths.append(str(p))
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in sys.path if p])
    env["HPS_TEST_NOTES"] = str(notes)
    if user is not None:
        env["OPENBLAS_NUM_THREADS"] = user
    start = (["-m", "hotpixel_shm"] if how == "module" else
             ["-c", "import sys\nfrom hotpixel_shm.cli import main\nsys.exit(main())"])
    subprocess.run([sys.executable] + start + ["-q", "--workers", "2", "--min-images", "1"] + paths,
                   env=env, capture_output=True, text=True, check=True, timeout=300)
    seen = {f.name.split("-")[0]: f.read_text() for f in notes.iterdir()}
    assert sorted(seen) == ["main", "worker"], sorted(f.name for f in notes.iterdir())
    assert set(seen.values()) == {user or "1"}, seen


def test_a_program_that_has_numpy_keeps_its_environment(monkeypatch, capsys):
    """main() called by a program that loaded numpy already (too late for
    its BLAS threads) leaves the program's environment as it was."""
    import os
    from hotpixel_shm.cli import main
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "5")
    with pytest.raises(SystemExit):
        main(["--version"])
    assert os.environ["OPENBLAS_NUM_THREADS"] == "5"
