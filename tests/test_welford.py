"""Tests of the statistics numerics: accumulators, Chan/Pébay merging, tiers'
accuracy against exact and numpy references."""
import math
import mmap
from fractions import Fraction
from multiprocessing import shared_memory

import numpy as np
import pytest

from hotpixel_shm import tiers
from hotpixel_shm.errors import HotPixelError
from hotpixel_shm.model import Stats
from hotpixel_shm.welford import Accumulator, accuracy_bound, combine, merge, merge_stats

#: The accuracy each tier promises up to ``tiers.max_images`` images per worker
#: (mean: absolute, levels; var: relative, for subpixels with std >= 0.5).
CONTRACT = {
    "exact": (1e-9, 1e-9),      # mean relative for these two
    "float64": (1e-9, 1e-9),
    "float32": (0.01, 1e-4),
    "float16": (0.01, 0.05),
}
DTYPES = (np.uint8, np.uint16)
SPLITS = {1: [7], 2: [5, 2], 3: [4, 2, 1]}


def _tier_dtypes():
    return [(t, d) for t in tiers.TIERS for d in DTYPES if tiers.supports(t, d)]


# --------------------------------------------------------------------------- data

def _photos(n, shape, dtype, seed=0, kind="photo"):
    """n photo-like frames: every subpixel its own mean and noise level.

    ``photo``: std 20-60 levels (8-bit scale), clipped; ``low``: std 0.5-2;
    ``high``: 16-bit values near 65000 with std 0.5-3 (ill-conditioned).
    A stuck subpixel and a saturated one are planted in every kind.
    """
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    scale = top / 255.0
    if kind == "photo":
        mu, sig = rng.uniform(20, 235, shape) * scale, rng.uniform(20, 60, shape) * scale
    elif kind == "low":
        mu, sig = rng.uniform(0, 255, shape) * scale, rng.uniform(0.5, 2, shape)
    elif kind == "high":
        mu, sig = rng.uniform(64980, 65020, shape), rng.uniform(0.5, 3, shape)
    else:  # pragma: no cover
        raise ValueError(kind)
    frames = np.clip(np.rint(mu + sig * rng.standard_normal((n,) + shape)), 0, top).astype(dtype)
    frames[:, 0, 0, 0] = top // 3                              # stuck
    frames[:, -1, -1, -1] = top                                # saturated
    return frames


def _dealt(tier, shape, dtype, frames, k):
    """k accumulators of ``tier``, the frames dealt to them in turn (as workers get them)."""
    out = [Accumulator(tier, shape, dtype) for _ in range(k)]
    for i, frame in enumerate(frames):
        out[i % k].update(frame)
    return out


def _exact_ref(frames):
    """Exact mean and population variance (rationals rounded once to float64)."""
    n = len(frames)
    obj = frames.reshape(n, -1).astype(object)
    s = obj.sum(axis=0)
    q = (obj * obj).sum(axis=0)
    mean = np.array([float(Fraction(int(a), n)) for a in s])
    var = np.array([float(Fraction(n * int(b) - int(a) ** 2, n * n)) for a, b in zip(s, q)])
    shape = frames.shape[1:]
    return mean.reshape(shape), var.reshape(shape)


def _run(tier, frames, split, **kw):
    """Accumulate ``frames`` over workers taking ``split`` images each; merge."""
    dtype, shape = frames.dtype, frames.shape[1:]
    accs, i = [], 0
    for count in split:
        acc = Accumulator(tier, shape, dtype, **kw)
        for frame in frames[i:i + count]:
            acc.update(frame)
        i += count
        accs.append(acc)
    assert i == len(frames)
    return merge(accs)


def _errors(mean, var, ref_mean, ref_var):
    ok = ref_var >= 0.25
    err_mean = np.abs(mean.astype(np.float64) - ref_mean).max()
    err_var = (np.abs(var.astype(np.float64) - ref_var)[ok] / ref_var[ok]).max()
    return err_mean, err_var


def _assert_contract(tier, dtype, per_worker, mean, var, frames):
    """Within the documented bound of the exact statistics, and within the
    tier's contract of numpy's float64 mean/var."""
    ref_mean, ref_var = _exact_ref(frames)
    bound = accuracy_bound(tier, dtype, per_worker)
    err_mean, err_var = _errors(mean, var, ref_mean, ref_var)
    assert err_mean <= bound["mean_abs"], (tier, err_mean, bound)
    assert err_var <= bound["var_rel"], (tier, err_var, bound)
    # constant subpixels: variance within the bound of 0.25 in absolute terms
    low = ref_var < 0.25
    assert np.all(np.abs(var[low] - ref_var[low]) <= bound["var_rel"] * 0.25 + 1e-12)

    f = frames.astype(np.float64)
    np_mean, np_var = f.mean(axis=0), f.var(axis=0)
    c_mean, c_var = CONTRACT[tier]
    if tier in ("exact", "float64"):
        np.testing.assert_allclose(mean, np_mean, rtol=c_mean, atol=1e-9)
    else:
        np.testing.assert_allclose(mean, np_mean, rtol=0, atol=c_mean)
    ok = np_var >= 0.25
    np.testing.assert_allclose(var[ok], np_var[ok], rtol=c_var, atol=0)


# --------------------------------------------------------------------------- layout

@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_layout_header_and_aligned_fields(tier, dtype):
    shape = (3, 5, 3)
    nb = Accumulator.nbytes(tier, shape, dtype)
    buf = bytearray(nb)
    acc = Accumulator(tier, shape, dtype, buf)
    assert acc.n == 0
    names = [name for name, _ in tiers.fields(tier, dtype)]
    assert list(acc.arrays) == names
    base = np.frombuffer(buf, np.uint8).ctypes.data
    expected = tiers.HEADER_BYTES
    for name, fdt in tiers.fields(tier, dtype):
        arr = acc.arrays[name]
        assert arr.shape == shape and arr.dtype == fdt
        assert arr.ctypes.data - base == expected
        assert expected % 64 == 0
        expected += -(-arr.nbytes // 64) * 64
    assert expected == nb
    acc.update(np.full(shape, 7, dtype))
    acc.update(np.full(shape, 9, dtype))
    # n is an int64 at offset 0 of the buffer
    assert int(np.frombuffer(buf, np.int64, 1)[0]) == 2 == acc.n


def test_all_zero_buffer_is_empty_and_reset_empties():
    shape = (2, 3, 1)
    for tier, dtype in _tier_dtypes():
        acc = Accumulator(tier, shape, dtype, bytearray(Accumulator.nbytes(tier, shape, dtype)))
        n, mean, m2 = acc.partial(0, 6)
        assert n == 0 and not mean.any() and not m2.any()
        with pytest.raises(HotPixelError, match="no image"):
            merge([acc])
        acc.update(np.full(shape, 3, dtype))
        acc.reset()
        assert acc.n == 0
        assert all(not a.any() for a in acc.arrays.values())


def test_two_objects_over_one_file_mapping_see_the_same_data(tmp_path):
    shape = (4, 5, 3)
    frames = _photos(6, shape, np.uint16, seed=1)
    nb = Accumulator.nbytes("float32", shape, np.uint16)
    path = tmp_path / "acc.bin"
    path.write_bytes(bytes(nb))
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), nb) as mm:
        writer = Accumulator("float32", shape, np.uint16, mm)
        for frame in frames:
            writer.update(frame)
        reader = Accumulator("float32", shape, np.uint16, mm)
        assert reader.n == 6
        n, mean, var = merge([reader], in_place=False)
        np.testing.assert_allclose(mean, frames.mean(axis=0), atol=0.01)
        writer.close()
        reader.close()
        del mean, var
    # the mapping was flushed to the file: a third accumulator reads it back
    again = Accumulator("float32", shape, np.uint16, bytearray(path.read_bytes()))
    assert again.n == 6


def test_shared_memory_buffer_can_be_closed_after_close():
    shape = (8, 8, 3)
    nb = Accumulator.nbytes("exact", shape, np.uint8)
    seg = shared_memory.SharedMemory(create=True, size=nb)
    try:
        acc = Accumulator("exact", shape, np.uint8, seg.buf)
        acc.update(np.full(shape, 200, np.uint8))
        other = Accumulator("exact", shape, np.uint8, seg.buf)
        assert other.n == 1
        n, mean, var = merge([other])
        assert n == 1 and np.all(mean == 200.0) and np.all(var == 0.0)
        acc.close()
        other.close()
        with pytest.raises(HotPixelError, match="closed"):
            acc.update(np.zeros(shape, np.uint8))
    finally:
        seg.close()  # raises BufferError if a view of seg.buf were still alive
        seg.unlink()


def test_bad_construction_and_updates_raise_clear_errors():
    shape = (2, 3, 3)
    with pytest.raises(HotPixelError, match="unknown accumulator tier"):
        Accumulator("float128", shape, np.uint8)
    with pytest.raises(HotPixelError, match="not offered"):
        Accumulator("float16", shape, np.uint16)
    with pytest.raises(HotPixelError, match="uint8 or uint16"):
        Accumulator("exact", shape, np.float32)
    with pytest.raises(HotPixelError, match="height, width, channels"):
        Accumulator("exact", (2, 3), np.uint8)
    with pytest.raises(HotPixelError, match="needs"):
        Accumulator("exact", shape, np.uint8, bytearray(10))
    with pytest.raises(HotPixelError, match="read-only"):
        Accumulator("exact", shape, np.uint8, bytes(Accumulator.nbytes("exact", shape, np.uint8)))
    acc = Accumulator("float32", shape, np.uint8)
    with pytest.raises(HotPixelError, match="shape"):
        acc.update(np.zeros((3, 2, 3), np.uint8))
    with pytest.raises(HotPixelError, match="dtype"):
        acc.update(np.zeros(shape, np.uint16))
    assert acc.n == 0


@pytest.mark.parametrize("tier,dtype", [(t, d) for t, d in _tier_dtypes() if t != "float16"])
def test_full_accumulator_refuses_more_images(tier, dtype):
    acc = Accumulator(tier, (1, 1, 1), dtype)
    assert acc.capacity >= tiers.max_images(tier, dtype)
    acc.n = acc.capacity
    with pytest.raises(HotPixelError, match="full"):
        acc.update(np.zeros((1, 1, 1), dtype))
    assert acc.n == acc.capacity


@pytest.mark.parametrize("dtype,n", [(np.uint8, 66052), (np.uint16, 65534)])
def test_exact_tier_finishes_without_overflow_at_capacity(dtype, n):
    # half the images 0, half the top value: the largest sums the tier holds
    top = int(np.iinfo(dtype).max)
    acc = Accumulator("exact", (1, 1, 1), dtype)
    acc.arrays["sum"][...] = n // 2 * top
    acc.arrays["sumsq"][...] = n // 2 * top * top
    acc.n = n
    got_n, mean, var = merge([acc])
    assert got_n == n
    assert mean[0, 0, 0] == top / 2
    assert var[0, 0, 0] == top * top / 4


# --------------------------------------------------------------------------- accuracy

@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_contract_every_tier_dtype_and_worker_count(tier, dtype, workers):
    kind = "high" if dtype == np.uint16 else "photo"
    frames = _photos(7, (6, 7, 3), dtype, seed=workers, kind=kind)
    n, mean, var = _run(tier, frames, SPLITS[workers])
    assert n == 7
    assert mean.dtype == var.dtype == tiers.result_dtype(tier)
    assert mean.shape == var.shape == (6, 7, 3)
    _assert_contract(tier, dtype, max(SPLITS[workers]), mean, var, frames)


@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_worker_count_does_not_change_the_result(tier, dtype):
    frames = _photos(7, (5, 4, 3), dtype, seed=11)
    results = [_run(tier, frames, SPLITS[w]) for w in (1, 2, 3)]
    rdt = tiers.result_dtype(tier)
    for n, mean, var in results[1:]:
        c_mean, c_var = CONTRACT[tier]
        if tier in ("exact", "float64"):
            np.testing.assert_allclose(mean, results[0][1], rtol=1e-12)
            np.testing.assert_allclose(var, results[0][2], rtol=1e-12, atol=1e-9)
        else:
            # each is within its bound of the exact result, so within twice of
            # each other
            np.testing.assert_allclose(mean, results[0][1], atol=2 * c_mean)
            ok = results[0][2] >= 0.25
            np.testing.assert_allclose(var[ok], results[0][2][ok], rtol=2 * c_var)
        assert n == 7 and mean.dtype == var.dtype == rdt


@pytest.mark.parametrize("tier", ["exact", "float64", "float32"])
def test_ill_conditioned_16bit_near_65000_thousands_of_images(tier):
    # 4000 images of values near 65000 with 0.5-3 levels of noise: a plain
    # float32 running mean (0.004 ulp there) drifts by more than 0.01 level
    # within a hundred images.  Three workers, uneven.
    frames = _photos(4000, (4, 5, 3), np.uint16, seed=5, kind="high")
    split = [2100, 1300, 600]
    n, mean, var = _run(tier, frames, split)
    assert n == 4000
    ref_mean, ref_var = _exact_ref(frames)
    err_mean, err_var = _errors(mean, var, ref_mean, ref_var)
    bound = accuracy_bound(tier, np.uint16, max(split))
    assert err_mean <= bound["mean_abs"] and err_var <= bound["var_rel"]
    # the contract holds here too, beyond float32's proven range (1675)
    c_mean, c_var = CONTRACT[tier]
    f = frames.astype(np.float64)
    if tier == "float32":
        assert err_mean <= c_mean and err_var <= c_var
    else:
        np.testing.assert_allclose(mean, f.mean(axis=0), rtol=c_mean)
        np.testing.assert_allclose(var, f.var(axis=0), rtol=c_var)


def test_constant_offset_does_not_change_the_variance():
    # the same noise on top of 0 and of 65000: identical variances (to the
    # tier's accuracy), unlike a naive sum-of-squares formula in float64
    base = _photos(300, (3, 4, 2), np.uint16, seed=8, kind="low")
    base[:, 0, 0, 0] = 5  # keep the offset copy in range
    high = (base.astype(np.int64) + 60000).clip(0, 65535).astype(np.uint16)
    keep = (base.astype(np.int64) + 60000 <= 65535).all(axis=0)
    for tier in ("exact", "float64", "float32"):
        _, _, v_low = _run(tier, base, [200, 100])
        _, _, v_high = _run(tier, high, [200, 100])
        tol = CONTRACT[tier][1] * 2
        np.testing.assert_allclose(v_high[keep], v_low[keep], rtol=tol, atol=1e-12)


@pytest.mark.parametrize("kind", ["photo", "low"])
@pytest.mark.parametrize("n_images", [10, 100, 1000, 4900])
def test_float16_tier_on_photo_like_8bit_data(kind, n_images):
    frames = _photos(n_images, (6, 8, 3), np.uint8, seed=n_images, kind=kind)
    n, mean, var = _run("float16", frames, [n_images])
    ref_mean, ref_var = _exact_ref(frames)
    err_mean, err_var = _errors(mean, var, ref_mean, ref_var)
    bound = accuracy_bound("float16", np.uint8, n_images)
    assert err_mean <= bound["mean_abs"], (err_mean, bound)
    assert err_var <= bound["var_rel"], (err_var, bound)
    # the planted stuck subpixel stays exact
    assert mean[0, 0, 0] == 85 and var[0, 0, 0] == 0
    assert mean[-1, -1, -1] == 255 and var[-1, -1, -1] == 0


def test_float16_rounding_is_unbiased():
    # Round-to-nearest storage drops the small updates and drifts: +20 % in
    # the variance and 0.1 level in low-noise means after 5000 images
    # (measured).  Stochastic rounding keeps the average error near zero.
    frames = _photos(3000, (8, 8, 3), np.uint8, seed=21, kind="low")
    _, mean, var = _run("float16", frames, [3000])
    ref_mean, ref_var = _exact_ref(frames)
    ok = ref_var >= 0.25
    signed_var = ((var - ref_var)[ok] / ref_var[ok]).mean()
    signed_mean = (mean - ref_mean).mean()
    # standard errors of these averages are ~4e-4 and ~1e-5
    assert abs(signed_var) < 2e-3
    assert abs(signed_mean) < 1e-4


@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_merge_is_not_the_naive_sum_of_m2(tier, dtype):
    shape = (2, 2, 1)
    a = Accumulator(tier, shape, dtype)
    b = Accumulator(tier, shape, dtype)
    for _ in range(3):
        a.update(np.full(shape, 10, dtype))
    b.update(np.full(shape, 20, dtype))
    # each partial has zero spread; together: mean 12.5, var 18.75
    n, mean, var = merge([a, b])
    assert n == 4
    bound = accuracy_bound(tier, dtype, 3)
    np.testing.assert_allclose(mean, 12.5, rtol=0, atol=bound["mean_abs"])
    np.testing.assert_allclose(var, 18.75, rtol=bound["var_rel"])


def test_merge_ignores_empty_accumulators_and_checks_compatibility():
    shape = (3, 3, 3)
    frames = _photos(5, shape, np.uint8, seed=3)
    empty = Accumulator("float32", shape, np.uint8)
    full = Accumulator("float32", shape, np.uint8)
    for frame in frames:
        full.update(frame)
    n, mean, var = merge([empty, full, Accumulator("float32", shape, np.uint8)])
    assert n == 5
    np.testing.assert_allclose(mean, frames.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(var, frames.astype(float).var(axis=0), rtol=1e-5, atol=1e-5)
    with pytest.raises(HotPixelError, match="cannot merge"):
        merge([full, Accumulator("float64", shape, np.uint8)])
    with pytest.raises(HotPixelError, match="cannot merge"):
        merge([full, Accumulator("float32", (3, 3, 1), np.uint8)])
    with pytest.raises(HotPixelError, match="cannot merge"):
        merge([full, Accumulator("float32", shape, np.uint16)])
    with pytest.raises(HotPixelError, match="no accumulator"):
        merge([])


@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_in_place_merge_reuses_the_first_buffer_only_when_it_can(tier, dtype):
    shape = (5, 6, 3)
    frames = _photos(9, shape, dtype, seed=4)

    def accs():
        return _dealt(tier, shape, dtype, frames, 2)

    ref = merge(accs(), in_place=False)
    first, second = accs()
    buf = first._raw
    n, mean, var = merge([first, second], in_place=True, block_values=7)
    assert n == ref[0] == 9
    np.testing.assert_array_equal(mean, ref[1])
    np.testing.assert_array_equal(var, ref[2])
    reused = tier in ("float64", "float32")
    assert np.shares_memory(mean, buf) == reused
    assert np.shares_memory(var, buf) == reused
    assert not np.shares_memory(ref[1], buf)
    if reused:
        assert first.n == -1  # its buffer now holds results, not statistics
        with pytest.raises(HotPixelError, match="merged results"):
            first.update(frames[0])
        with pytest.raises(HotPixelError, match="merged results"):
            merge([first, second])
        first.reset()
        first.update(frames[0])
        assert first.n == 1
    else:
        assert first.n == 5


@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_block_size_does_not_change_the_bits(tier, dtype):
    shape = (5, 7, 3)
    frames = _photos(12, shape, dtype, seed=6, kind="low")
    small = Accumulator(tier, shape, dtype, block_values=8)
    big = Accumulator(tier, shape, dtype)
    for frame in frames:
        small.update(frame)
        big.update(frame)
    for name in small.arrays:
        np.testing.assert_array_equal(small.arrays[name], big.arrays[name])


def test_non_contiguous_images_are_accepted():
    frames = _photos(4, (6, 5, 3), np.uint8, seed=2)
    acc = Accumulator("exact", (5, 6, 3), np.uint8)
    for frame in frames:
        acc.update(frame.transpose(1, 0, 2))
    _, mean, _ = merge([acc])
    np.testing.assert_array_equal(mean, frames.astype(float).mean(axis=0).transpose(1, 0, 2))


@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_partial_matches_numpy_for_a_flat_range(tier, dtype):
    shape = (4, 4, 3)
    frames = _photos(6, shape, dtype, seed=9)
    acc = Accumulator(tier, shape, dtype)
    for frame in frames:
        acc.update(frame)
    flat = frames.reshape(6, -1).astype(np.float64)
    n, mean, m2 = acc.partial(5, 29)
    assert n == 6 and mean.dtype == m2.dtype == np.float64 and mean.shape == (24,)
    atol = accuracy_bound(tier, dtype, 6)["mean_abs"]
    np.testing.assert_allclose(mean, flat[:, 5:29].mean(axis=0), rtol=0, atol=atol)
    ref_m2 = flat[:, 5:29].var(axis=0) * 6
    ok = ref_m2 >= 6 * 0.25
    np.testing.assert_allclose(m2[ok], ref_m2[ok], rtol=CONTRACT[tier][1])


# --------------------------------------------------------------------------- combine, merge_stats

def test_combine_matches_the_whole_and_handles_empty_sides():
    rng = np.random.default_rng(0)
    x = rng.normal(1000.0, 3.0, (50, 8))
    a, b = x[:13], x[13:]
    n, mean, m2 = combine(13, a.mean(0), a.var(0) * 13, 37, b.mean(0), b.var(0) * 37)
    assert n == 50
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(m2, x.var(0) * 50, rtol=1e-12)
    # an empty side contributes nothing, whatever its (meaningless) mean
    n, mean, m2 = combine(0, np.full(8, 1e300), np.zeros(8), 37, b.mean(0), b.var(0) * 37)
    assert n == 37
    np.testing.assert_array_equal(mean, b.mean(0))
    np.testing.assert_array_equal(m2, b.var(0) * 37)
    # per-element counts
    na = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    n, mean, m2 = combine(na, np.zeros(8), np.zeros(8), 1, np.full(8, 8.0), np.zeros(8))
    np.testing.assert_array_equal(n, na + 1)
    np.testing.assert_allclose(mean, 8.0 / (na + 1))
    np.testing.assert_allclose(m2, 64.0 * na / (na + 1))


def _stats(tier, frames, files):
    n, mean, var = _run(tier, frames, [len(frames)])
    return Stats(n=n, mean=np.array(mean), var=np.array(var), tier=tier, files=files)


def test_merge_stats_combines_runs_and_takes_the_less_accurate_tier():
    frames = _photos(11, (4, 6, 3), np.uint8, seed=12)
    old = _stats("exact", frames[:8], ["a.jpg"])
    new = _stats("float32", frames[8:], ["b.jpg"])
    both = merge_stats(old, new)
    assert both.n == 11 and both.tier == "float32" and both.files == ["a.jpg", "b.jpg"]
    assert both.mean.dtype == np.float32
    _assert_contract("float32", np.uint8, 8, both.mean, both.var, frames)
    exact = merge_stats(old, _stats("float64", frames[8:], []))
    assert exact.tier == "float64" and exact.mean.dtype == np.float64
    _assert_contract("float64", np.uint8, 8, exact.mean, exact.var, frames)
    with pytest.raises(HotPixelError, match="shape"):
        merge_stats(old, _stats("exact", _photos(3, (4, 6, 1), np.uint8), []))


# --------------------------------------------------------------------------- bounds

@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_documented_bound_meets_the_contract_up_to_max_images(tier, dtype):
    limit = tiers.max_images(tier, dtype)
    c_mean, c_var = CONTRACT[tier]
    at = accuracy_bound(tier, dtype, limit)
    # (for exact and float64 the mean contract is relative: this checks it
    # for means of at least one level)
    assert at["mean_abs"] <= c_mean and at["var_rel"] <= c_var, (at, limit)
    previous = accuracy_bound(tier, dtype, 1)
    for n in (10, 100, 1000, limit):
        b = accuracy_bound(tier, dtype, n)
        assert b["mean_abs"] >= previous["mean_abs"] and b["var_rel"] >= previous["var_rel"]
        previous = b
    if tier != "exact":
        # the limit is where the bound stops holding, not an arbitrary number
        past = accuracy_bound(tier, dtype, int(limit * 1.05) + 1)
        assert past["var_rel"] > c_var or past["mean_abs"] > c_mean
    else:
        assert math.isinf(accuracy_bound(tier, dtype, limit + 1)["var_rel"])


@pytest.mark.parametrize("tier", ["exact", "float64", "float32", "float16"])
def test_threaded_merge_is_identical(tier):
    """Threads split the work by range; the result must be bit-identical."""
    shape = (37, 41, 3)
    rng = np.random.default_rng(12)
    imgs = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(9)]
    out = []
    for threads in (1, 3):
        n, mean, var = merge(_dealt(tier, shape, np.uint8, imgs, 2), block_values=256,
                             threads=threads)
        out.append((n, mean.copy(), var.copy()))
    assert out[0][0] == out[1][0] == 9
    np.testing.assert_array_equal(out[0][1], out[1][1])
    np.testing.assert_array_equal(out[0][2], out[1][2])


# --------------------------------------------------------------------------- batches, band-wise finish

@pytest.mark.parametrize("batch", [1, 2, 3, 7])
@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_batches_keep_the_contract_and_exact_keeps_its_bits(tier, dtype, batch):
    kind = "high" if dtype == np.uint16 else "photo"
    frames = _photos(17, (5, 6, 3), dtype, seed=batch, kind=kind)   # 17: no K divides it
    acc = Accumulator(tier, (5, 6, 3), dtype, block_values=7)
    for i in range(0, len(frames), batch):
        acc.update_batch(frames[i:i + batch])
    assert acc.n == 17
    n, mean, var = merge([acc])
    _assert_contract(tier, dtype, 17, mean, var, frames)
    if tier == "exact":
        ref = Accumulator(tier, (5, 6, 3), dtype)
        for frame in frames:
            ref.update(frame)
        for name in acc.arrays:
            np.testing.assert_array_equal(acc.arrays[name], ref.arrays[name])


def test_batch_size_is_checked():
    acc = Accumulator("float32", (2, 2, 1), np.uint8)
    with pytest.raises(HotPixelError, match="batch"):
        acc.update_batch([])
    with pytest.raises(HotPixelError, match="batch"):
        acc.update_batch([np.zeros((2, 2, 1), np.uint8)] * 17)


@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_finalise_range_by_bands_gives_the_merge_bits(tier, dtype):
    from hotpixel_shm.welford import finalise_range, finalise_rows
    shape = (9, 5, 3)
    frames = _photos(8, shape, dtype, seed=13)

    def accs():
        return _dealt(tier, shape, dtype, frames, 3)

    n, mean, var = merge(accs(), in_place=False)
    sources = accs()
    rdt = tiers.result_dtype(tier)
    got_m, got_v = np.empty(shape, rdt), np.empty(shape, rdt)
    for y0, y1 in [(0, 2), (2, 3), (3, 9)]:
        assert finalise_rows(sources, y0, y1, got_m[y0:y1], got_v[y0:y1], threads=2,
                             block_values=4) == 8
    np.testing.assert_array_equal(got_m, mean)
    np.testing.assert_array_equal(got_v, var)
    # the accumulators were only read
    assert [a.n for a in sources] == [3, 3, 2]
    # a float32 buffer for a float64 tier: the same values rounded once
    m32, v32 = np.empty(15, np.float32), np.empty(15, np.float32)
    finalise_range(sources, 30, 45, m32, v32)
    np.testing.assert_array_equal(m32, mean.reshape(-1)[30:45].astype(np.float32))
    with pytest.raises(HotPixelError, match="range"):
        finalise_range(sources, 10, 10_000, np.empty(9990), np.empty(9990))
    with pytest.raises(HotPixelError, match="out_mean"):
        finalise_range(sources, 0, 10, np.empty(9, np.float64), np.empty(10))


def test_partial_results_of_any_origin_merge_alike():
    from hotpixel_shm.welford import finalise_range
    shape = (4, 6, 3)
    frames = _photos(12, shape, np.uint8, seed=14)
    a = Accumulator("float64", shape, np.uint8)
    for frame in frames[:5]:
        a.update(frame)
    saved = _stats("float64", frames[5:9], ["saved"])
    b = Accumulator("float64", shape, np.uint8)
    for frame in frames[9:]:
        b.update(frame)
    mean, var = np.empty(shape), np.empty(shape)
    assert finalise_range([saved, a, b], 0, mean.size, mean, var) == 12
    _assert_contract("float64", np.uint8, 5, mean, var, frames)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_fold_exact_gives_the_bits_of_the_unfolded_merge(dtype):
    from hotpixel_shm.welford import finalise_range, fold_exact
    frames = _photos(7, (5, 6, 3), dtype, seed=11)

    def accs():
        return _dealt("exact", (5, 6, 3), dtype, frames, 3)

    m, v = np.empty(90), np.empty(90)
    finalise_range(accs(), 0, 90, m, v)
    for threads in (1, 2, 3):     # blocks of 7 values: some threads get several
        folded = fold_exact(accs(), block_values=7, threads=threads)
        assert len(folded) == 1 and folded[0].n == 7
        fm, fv = np.empty(90), np.empty(90)
        finalise_range(folded, 0, 90, fm, fv)
        np.testing.assert_array_equal(fm, m, err_msg=f"{threads} threads")
        np.testing.assert_array_equal(fv, v, err_msg=f"{threads} threads")
    floats = [Accumulator("float32", (5, 6, 3), dtype) for _ in range(2)]
    assert fold_exact(floats) == floats
    full = accs()
    full[0].capacity = 6          # the total, 7, would overflow the first one's sums
    before = [a.arrays["sum"].copy() for a in full]
    assert fold_exact(full) == full
    for a, b in zip(full, before):
        np.testing.assert_array_equal(a.arrays["sum"], b)
