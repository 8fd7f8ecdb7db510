"""hotpixel_shm.quantiles against scipy.stats (which the package no longer imports)."""
import math

import pytest
from scipy import stats

from hotpixel_shm.quantiles import chi2_isf, t_isf

DFS = [1, 2, 3, 7.5, 8, 44, 132, 1000, 19996, 399996, 3999996]
PS = [0.4, 0.1, 1e-3, 2.5e-5, 6.944444444444445e-10, 1e-20]


@pytest.mark.parametrize("df", DFS)
@pytest.mark.parametrize("p", PS)
def test_t_isf(df, p):
    assert t_isf(p, df) == pytest.approx(float(stats.t.isf(p, df)), rel=1e-11)


@pytest.mark.parametrize("df", DFS)
@pytest.mark.parametrize("p", PS + [0.9, 0.6])
def test_chi2_isf(df, p):
    assert chi2_isf(p, df) == pytest.approx(float(stats.chi2.isf(p, df)), rel=1e-11)


@pytest.mark.parametrize("bad", [(0.0, 5), (0.5, 5), (1e-3, 0), (math.nan, 5)])
def test_t_isf_refuses_what_it_cannot_answer(bad):
    with pytest.raises(ValueError):
        t_isf(*bad)


@pytest.mark.parametrize("bad", [(0.0, 5), (1.0, 5), (0.1, -1)])
def test_chi2_isf_refuses_what_it_cannot_answer(bad):
    with pytest.raises(ValueError):
        chi2_isf(*bad)
