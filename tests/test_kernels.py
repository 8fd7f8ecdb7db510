"""The kernel seam: the compiled kernels give the numpy kernels' bits, and the
implementation is chosen as documented."""
import os
import subprocess
import sys

import numpy as np
import pytest

from hotpixel_shm import kernels, kernels_numpy, tiers
from hotpixel_shm.errors import HotPixelError
from hotpixel_shm.welford import Accumulator, finalise_range, merge

from test_welford import _photos, _tier_dtypes

HAVE_COMPILED = not isinstance(kernels.available()["compiled"], str)
needs_compiled = pytest.mark.skipif(not HAVE_COMPILED, reason="compiled kernels not built")


def test_compiled_kernels_are_built_when_required():
    # CI sets HOTPIXEL_SHM_REQUIRE_COMPILED=1 after `pip install .`: a build
    # that silently skipped the extension fails here
    if os.environ.get("HOTPIXEL_SHM_REQUIRE_COMPILED") == "1":
        assert HAVE_COMPILED, kernels.available()["compiled"]
    if HAVE_COMPILED and os.environ.get(kernels.ENV, "auto") in ("auto", "compiled"):
        assert kernels.NAME == "compiled"


def test_environment_forces_numpy_in_a_fresh_process():
    env = dict(os.environ, **{kernels.ENV: "numpy"})
    out = subprocess.run([sys.executable, "-c", "from hotpixel_shm import kernels; print(kernels.NAME)"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "numpy"
    env[kernels.ENV] = "fortran"
    proc = subprocess.run([sys.executable, "-c", "import hotpixel_shm.kernels"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "HOTPIXEL_SHM_KERNELS" in proc.stderr


def test_get_and_use():
    assert kernels.get("numpy") is kernels_numpy
    with pytest.raises(HotPixelError, match="unknown kernels"):
        kernels.get("fortran")
    with kernels.use("numpy"):
        assert kernels.NAME == "numpy"
    assert "kernels:" in kernels.describe()


def _accumulate(name, tier, dtype, frames, batches, **kw):
    with kernels.use(name):
        acc = Accumulator(tier, frames.shape[1:], dtype, **kw)
        i = 0
        for k in batches:
            acc.update_batch(frames[i:i + k])
            i += k
    return acc


@needs_compiled
@pytest.mark.parametrize("batch", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_compiled_update_gives_the_numpy_bits(tier, dtype, batch):
    kind = "high" if dtype == np.uint16 else "low"
    frames = _photos(40, (7, 9, 3), dtype, seed=batch, kind=kind)
    sizes = [batch] * (40 // batch) + ([40 % batch] if 40 % batch else [])
    ref = _accumulate("numpy", tier, dtype, frames, sizes, block_values=50)
    got = _accumulate("compiled", tier, dtype, frames, sizes)
    for name in ref.arrays:
        np.testing.assert_array_equal(got.arrays[name], ref.arrays[name], err_msg=name)
    assert got.n == ref.n == 40


@needs_compiled
def test_compiled_float16_dither_follows_the_flat_index():
    # a band accumulated with its start offset has the bits of the whole frame's rows
    frames = _photos(9, (6, 5, 3), np.uint8, seed=3, kind="low").reshape(9, -1)
    for name in ("numpy", "compiled"):
        impl = kernels.get(name)
        whole = [np.zeros(90, np.uint16), np.zeros(90, np.uint8), np.zeros(90, np.uint16)]
        band = [np.zeros(30, np.uint16), np.zeros(30, np.uint8), np.zeros(30, np.uint16)]
        for n in range(0, 9, 3):
            impl.update("float16", whole, list(frames[n:n + 3]), n, 0, 64, {})
            impl.update("float16", band, [f[45:75] for f in frames[n:n + 3]], n, 45, 64, {})
        for w, b in zip(whole, band):
            np.testing.assert_array_equal(w[45:75], b)


@needs_compiled
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_compiled_merge_gives_the_numpy_bits(tier, dtype, workers):
    frames = _photos(11, (8, 9, 3), dtype, seed=workers)

    def accs():
        out = [Accumulator(tier, (8, 9, 3), dtype) for _ in range(workers)]
        for i, frame in enumerate(frames):
            out[i % workers].update(frame)
        return out

    results = []
    for name in ("numpy", "compiled"):
        with kernels.use(name):
            n, mean, var = merge(accs(), in_place=True, threads=2, block_values=16)
            m32, v32 = np.empty(20, np.float32), np.empty(20, np.float32)
            finalise_range(accs(), 100, 120, m32, v32)
        results.append((n, np.array(mean), np.array(var), m32, v32))
    for a, b in zip(results[0][1:], results[1][1:]):
        np.testing.assert_array_equal(a, b)
    assert results[0][0] == results[1][0] == 11


def _exact_parts(dtype, counts, size, seed):
    """Exact-tier partial results of ``counts`` images each, their sums drawn
    anywhere a part of that many images can reach (sums of squares from the
    sums' own square over n upwards: numerators past 2**53 when counts are large)."""
    rng = np.random.default_rng(seed)
    peak = int(np.iinfo(dtype).max)
    qdt = tiers.fields("exact", dtype)[1][1]
    parts = []
    for n in counts:
        S = rng.integers(0, peak * n + 1, size, dtype=np.uint64)
        low = -(-(S * S) // np.uint64(n))
        spare = np.uint64(peak * peak * n) - low
        Q = low + (rng.random(size) * spare.astype(np.float64)).astype(np.uint64)
        parts.append(kernels_numpy.Partial(int(n), "exact", np.dtype(dtype),
                                           (S.astype(np.uint32), Q.astype(qdt))))
    return parts


@needs_compiled
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("counts", [(5,), (3, 4), (2, 7, 1), (66052,), (30000, 36052), (20000, 1, 45000, 7)])
@pytest.mark.parametrize("out_dtypes", [(np.float64, np.float64), (np.float32, np.float32),
                                        (np.float64, np.float32), (np.float32, np.float64)])
def test_compiled_exact_range_gives_the_numpy_bits(dtype, counts, out_dtypes):
    """The exact tier's own contiguous loops (1 and 2 parts, and the block
    loop of more), every output dtype, ranges that start anywhere and are
    no multiple of a vector or block; 16-bit sums of many images make the
    variance's numerator exceed 2**53, where its rounding to float64 counts."""
    if np.iinfo(dtype).max * sum(counts) >= 2 ** 32:
        # 16-bit: scaled into the exact merge's 65536 images
        counts = tuple(max(1, c * 65000 // sum(counts)) for c in counts)
    assert kernels_numpy._integer_merge(_exact_parts(dtype, counts, 1, 0), sum(counts))
    parts = _exact_parts(dtype, counts, 1500, sum(counts) + np.dtype(dtype).itemsize)
    c = kernels.get("compiled")
    for start, stop in ((0, 1500), (7, 1300), (513, 514)):
        want = [np.empty(stop - start, d) for d in out_dtypes]
        got = [np.empty(stop - start, d) for d in out_dtypes]
        assert kernels_numpy.reduce_range(parts, start, stop, *want, block_values=100) == sum(counts)
        assert c.reduce_range(parts, start, stop, *got) == sum(counts)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b, err_msg=f"[{start}, {stop})")


@needs_compiled
def test_compiled_exact_reduce_over_its_own_sums_gives_the_numpy_bits():
    """Outputs written over the first part's fields (float32 over the 8-bit
    tier's uint32 sums, at the same positions) leave the exact loop for the
    value-by-value one: the bits of an out-of-place numpy reduce."""
    from hotpixel_shm import _ckernels
    parts = _exact_parts(np.uint8, (9, 4), 700, 3)
    want = [np.empty(700, np.float32) for _ in range(2)]
    kernels_numpy.reduce_range(parts, 0, 700, *want)
    first = [f.copy() for f in parts[0].fields]
    out = (first[0].view(np.float32), first[1].view(np.float32))
    _ckernels.reduce(0, 1, (tuple(first), parts[1].fields), (9.0, 4.0), (0.0, 4 / 13), (0.0, 9 * 4 / 13),
                     0, 700, *out, 13)
    for a, b in zip(out, want):
        np.testing.assert_array_equal(a, b)


def test_version_says_which_kernels(capsys):
    from hotpixel_shm.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "kernels: " + kernels.NAME in out


# (shape, period): RGB photos (luma and pooled chroma, odd sizes, planes
# narrower than twice the neighbour distance, one pixel), one-channel mosaics
# (Bayer, X-Trans, monochrome, planes narrower than the distance) and other
# channel counts; RGB photos tall enough for the compiled loop's bands of 32
# chroma rows (each frame runs through a band before the next: 141 rows are
# bands of 32, 32 and 7 chroma rows), and wide enough for the chunks of
# columns in which it adds K frames' rows to the sums (1024 columns of the
# luma sums, 512 of the level sums: 2101 columns are 3 chunks of each)
_RESIDUAL_CASES = [((37, 50, 3), None), ((1, 1, 3), None), ((5, 2, 3), None), ((9, 11, 3), 6),
                   ((3, 7, 3), 4), ((30, 31), 2), ((36, 42), 6), ((20, 22, 1), 1), ((5, 5), 6),
                   ((1, 9), 2), ((11, 8), 7), ((8, 13, 2), 2), ((11, 12, 4), 3),
                   ((141, 7, 3), None), ((130, 9, 3), 6), ((5, 2101, 3), None), ((3, 2050), 2)]


def _residual_sums(name, lay, frames, batch):
    from hotpixel_shm.residual import ResidualAccumulator
    with kernels.use(name):
        acc = ResidualAccumulator(lay)
        for i in range(0, len(frames), batch):
            acc.update_batch(frames[i:i + batch])
    assert acc.n == len(frames)
    return acc._flat.view(np.uint32).copy()


@needs_compiled
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape,period", _RESIDUAL_CASES)
def test_compiled_residual_gives_the_numpy_bits(shape, period, dtype):
    from hotpixel_shm.residual import residual_layout
    rng = np.random.default_rng(sum(shape))
    frames = list(rng.integers(0, np.iinfo(dtype).max + 1, (9,) + shape, dtype=dtype))
    lay = residual_layout(shape, period)
    ref = _residual_sums("numpy", lay, frames, 1)
    for batch in (1, 2, 7):   # 9 frames: a last batch shorter than K
        np.testing.assert_array_equal(_residual_sums("compiled", lay, frames, batch), ref,
                                      err_msg=f"K={batch}")


@needs_compiled
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(37, 50, 3), (18, 9, 3), (40, 26, 3), (9, 1100, 3)])
def test_compiled_level_sums_clip_as_numpy_does(shape, dtype):
    """Bright frames (the level statistics leave out clipped elements) with a
    darker part: the compiled kernel gives the numpy bits, level sums included."""
    from hotpixel_shm.residual import residual_layout
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(sum(shape) + top)
    frames = list(rng.integers(int(0.75 * top), top + 1, (5,) + shape, dtype=dtype))
    for f in frames:
        f[: shape[0] // 3] //= 3
    lay = residual_layout(shape)
    ref = _residual_sums("numpy", lay, frames, 1)
    levels = ref[2 * lay.values:].view(np.float32).reshape(8, -1)
    assert np.any(levels[1] == 0) and np.any(levels[1] > 0)     # some clipped, some not
    for batch in (1, 3):
        np.testing.assert_array_equal(_residual_sums("compiled", lay, frames, batch), ref)


@needs_compiled
def test_compiled_residual_takes_strided_frames_and_leaves_other_dtypes_to_numpy():
    from hotpixel_shm.residual import residual_layout
    rng = np.random.default_rng(5)
    big = rng.integers(0, 256, (4, 21, 30, 3), dtype=np.uint8)
    frames = [f[::2, 1::3] for f in big]          # rows, pixels and channels strided
    lay = residual_layout(frames[0].shape)
    np.testing.assert_array_equal(_residual_sums("compiled", lay, frames, 4),
                                  _residual_sums("numpy", lay, frames, 1))
    assert not kernels.get("compiled").residual_update(
        [f.astype(np.float32) for f in frames], np.zeros(2 * lay.values, np.float32), True, 2,
        (1.0,) * 5)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("tier,dtype", _tier_dtypes())
def test_finalise_at_gives_the_bits_of_the_range_on_both_paths(tier, dtype, workers):
    from hotpixel_shm.welford import finalise_at
    frames = _photos(11, (8, 9, 3), dtype, seed=workers + 7)
    accs = [Accumulator(tier, (8, 9, 3), dtype) for _ in range(workers)]
    for i, frame in enumerate(frames):
        accs[i % workers].update(frame)
    index = np.random.default_rng(workers).integers(0, 216, 90)     # any order, repeats
    want_m, want_v = np.empty(216), np.empty(216)
    finalise_range(accs, 0, 216, want_m, want_v)
    for name in ("numpy", "compiled") if HAVE_COMPILED else ("numpy",):
        with kernels.use(name):
            m, v = np.empty(90), np.empty(90)
            assert finalise_at(accs, index, m, v, block_values=16) == 11
        np.testing.assert_array_equal(m, want_m[index], err_msg=name)
        np.testing.assert_array_equal(v, want_v[index], err_msg=name)
    with pytest.raises(HotPixelError, match="index"):
        finalise_at(accs, np.array([0, 216]), np.empty(2), np.empty(2))


@needs_compiled
def test_compiled_reduce_checks_its_index_and_range():
    acc = Accumulator("exact", (2, 3, 1), np.uint8)
    acc.update(np.arange(6, dtype=np.uint8).reshape(2, 3, 1))
    c = kernels.get("compiled")
    with pytest.raises(IndexError):
        c.reduce_at([acc.as_partial()], np.array([6]), np.empty(1), np.empty(1))
    with pytest.raises(ValueError):
        c.reduce_range([acc.as_partial()], 0, 7, np.empty(7), np.empty(7))
