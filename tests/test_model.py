import numpy as np
import pytest

from hotpixel_shm.model import Stats


@pytest.mark.parametrize("make", [
    lambda rng: rng.random((40, 50, 3)),
    lambda rng: np.zeros((40, 50, 3)),                       # all ties
    lambda rng: rng.integers(0, 4, (300, 500, 3)).astype(np.float32),  # ties across chunks
    lambda rng: np.arange(6.0).reshape(1, 2, 3),              # fewer values than k
])
def test_lowest_variance_matches_a_stable_sort(make):
    var = make(np.random.default_rng(0))
    st = Stats(n=3, mean=np.zeros_like(var), var=var, tier="float64")
    got = st.lowest_variance(10)
    order = np.argsort(var.reshape(-1), kind="stable")[:10]
    h, w, c = var.shape
    want = [(int(i) // c % w, int(i) // (w * c), int(i) % c, float(var.reshape(-1)[i])) for i in order]
    assert got == want
    assert st.variance_range() == (float(var.min()), float(var.max()), float(var.mean(dtype=np.float64)))


def test_summary_reads_statistics_finished_band_by_band_once():
    from hotpixel_shm.bands import BandArray, BandReader
    var = np.random.default_rng(1).random((30, 8, 3))
    finished = []

    def finish(y0, y1, out_mean, out_var):
        finished.append(y0)
        out_mean[...] = 0
        out_var[...] = var[y0:y1]

    reader = BandReader(var.shape, np.float64, finish, band_rows=4, cache_bands=1)
    st = Stats(n=3, mean=BandArray(reader, "mean"), var=BandArray(reader, "var"), tier="exact")
    plain = Stats(n=3, mean=np.zeros_like(var), var=var, tier="exact")
    assert st.variance_range() == plain.variance_range()
    assert st.lowest_variance(10) == plain.lowest_variance(10)
    assert st.lowest_variance(3) == plain.lowest_variance(3)
    assert sorted(finished) == list(range(0, 30, 4))      # every band once
    assert st.lowest_variance(12) == plain.lowest_variance(12)   # more than kept: another pass
