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
