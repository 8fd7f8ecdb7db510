"""scripts/accuracy.py, the command behind README's accuracy figures."""
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "scripts", "accuracy.py")


def test_every_measured_error_is_within_its_bound():
    r = subprocess.run([sys.executable, SCRIPT, "--counts", "10,200", "--size", "12", "--sixteen"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [ln.strip("|").split("|") for ln in r.stdout.splitlines()[2:]]
    tiers = {row[0].strip() for row in rows}
    assert tiers == {"exact", "float64", "float32", "float16"}
    for row in rows:
        err_mean, bound_mean, err_var, bound_var = (float(row[i]) for i in (3, 4, 5, 6))
        assert err_mean <= bound_mean and err_var <= bound_var, row
