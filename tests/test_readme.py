"""README.rst is the front door: its commands are the ones CI and users run,
and every option it documents exists (and the other way round)."""
import os
import re

from hotpixel_shm.cli import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as fh:
        return fh.read()


def _quickstart_commands():
    text = _read("README.rst")
    quick = text.split("Quickstart", 1)[1].split("\nUsage\n", 1)[0]
    return re.findall(r"^    (pip install .+)$", quick, flags=re.M)


def test_ci_runs_exactly_the_readme_test_command():
    cmds = _quickstart_commands()
    assert len(cmds) == 2, cmds
    assert cmds[0] == "pip install . && python -m hotpixel_shm --demo"
    ci_lines = [ln.strip() for ln in _read(".ci", "run").splitlines()]
    assert cmds[1] in ci_lines


def test_every_option_is_documented():
    text = _read("README.rst")
    options = {o for a in build_parser()._actions for o in a.option_strings if o.startswith("--")}
    missing = sorted(o for o in options if o not in text)
    assert not missing, f"options missing from README.rst: {missing}"
    # the Performance section documents scripts/bench.py's own options
    documented = set(re.findall(r"``(--[a-z][a-z0-9-]+)", text.split("\nPerformance\n")[0]))
    unknown = sorted(documented - options)
    assert not unknown, f"README.rst documents options that do not exist: {unknown}"


def test_the_demo_runs_and_finds_what_was_planted(capsys):
    assert main(["--demo", "-q"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"found (\d+) of (\d+) planted defects; (\d+) other", out)
    assert m, out
    found, planted, other = map(int, m.groups())
    assert planted > 0 and found == planted and other <= 2
