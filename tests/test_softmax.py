import numpy as np
import pytest

import oracle
from fastattn import functional as F

DTYPES = [np.float32, np.float64]


def check(x, mask=None, scale=1.0, axis=-1):
    got = F.masked_softmax(x, mask, scale, axis)
    oracle.assert_close(got, oracle.softmax(x, mask, scale, axis), x.dtype)
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 1), (4, 65), (2, 3, 257), (2, 1000)], ids=str)
def test_softmax_matches_oracle(backend, rng, dtype, shape):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    got = F.softmax(x)
    oracle.assert_close(got, oracle.softmax(x), dtype)
    np.testing.assert_allclose(got.sum(-1), 1, rtol=oracle.rtol(dtype) * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -2, 2, -1])
def test_axes(backend, rng, dtype, axis):
    x = rng.standard_normal((5, 6, 7)).astype(dtype)
    check(x, axis=axis)
    mask = rng.random((5, 6, 7)) < 0.7
    check(x, mask, 0.5, axis)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bool", "additive"])
@pytest.mark.parametrize("mask_shape", [(33,), (5, 33), (4, 1, 33), (4, 5, 33), (5, 1), (1,)], ids=str)
def test_masks_broadcast(backend, rng, dtype, kind, mask_shape):
    x = rng.standard_normal((4, 5, 33)).astype(dtype)
    if kind == "bool":
        mask = rng.random(mask_shape) < 0.7
    else:
        mask = np.where(rng.random(mask_shape) < 0.3, -np.inf, rng.standard_normal(mask_shape))
    check(x, mask, 1.7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_rows_are_zero(backend, rng, dtype):
    x = rng.standard_normal((6, 20)).astype(dtype)
    mask = rng.random((6, 20)) < 0.5
    mask[[1, 4]] = False
    out = check(x, mask)
    assert np.all(out[[1, 4]] == 0)
    add = np.where(mask, 0.0, -np.inf)
    assert np.all(check(x, add)[[1, 4]] == 0)
    assert np.all(F.masked_softmax(x, np.zeros(20, bool)) == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_values_do_not_overflow(backend, rng, dtype):
    x = rng.standard_normal((3, 50)).astype(dtype)
    x[:, 7] = 1e4  # exp(1e4) overflows in any float: the max must be subtracted first
    out = F.softmax(x)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, 7], 1, rtol=oracle.rtol(dtype))
    if dtype == np.float64:  # spread-out large values: compare with the oracle
        check(rng.standard_normal((3, 50)) * 1e3)


def test_nan_propagates(backend, rng):
    x = rng.standard_normal((3, 8))
    x[1, 2] = np.nan
    out = F.softmax(x)
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[[0, 2]]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous(backend, rng, dtype):
    x = rng.standard_normal((40, 30)).astype(dtype).T[::2, ::-1]
    mask = (rng.random((30, 40)) < 0.8)[::-2].T[:, ::-1].T
    check(x, mask, 2.0)
    check(x, axis=0)


def test_result_dtype_and_shape(backend, rng):
    for dtype in DTYPES:
        x = rng.standard_normal((2, 3)).astype(dtype)
        out = F.masked_softmax(x, np.ones((2, 3), np.float64), 1.0)  # float64 mask, cast to x's dtype
        assert out.dtype == dtype and out.shape == (2, 3)
    assert F.softmax(np.zeros((0, 4), np.float32)).shape == (0, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [2, 3, 8, 9, 15, 16, 17, 31, 33, 64, 65])
def test_row_lengths_around_vector_widths(backend, rng, dtype, C):
    x = (3 * rng.standard_normal((5, C))).astype(dtype)
    check(x)
    check(x, rng.random((5, C)) < 0.6, 0.7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_values_near_ties(backend, rng, dtype):
    # values of size 1e4 that differ by O(1): x - max is exact (the inputs are the same numbers
    # for the oracle), so the usual tolerance holds, in float32 too; also +-1e4 rows and masks
    x = (1e4 + rng.standard_normal((4, 50))).astype(dtype)
    check(x)
    check(-x)
    check(x, np.where(rng.random(50) < 0.3, -np.inf, 0.0))
    out = F.softmax(np.stack([x[0], -x[0]]).T, axis=0)  # along axis 0, +-1e4 columns
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=0), 1, rtol=10 * oracle.rtol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagation_along_any_axis(backend, rng, dtype):
    x = rng.standard_normal((4, 5, 6)).astype(dtype)
    x[1, 2, 3] = np.nan
    for axis, nan_slice in ((-1, (1, 2, slice(None))), (0, (slice(None), 2, 3)), (1, (1, slice(None), 3))):
        out = F.softmax(x, axis=axis)
        expect_nan = np.zeros(x.shape, bool)
        expect_nan[nan_slice] = True
        np.testing.assert_array_equal(np.isnan(out), expect_nan)
        oracle.assert_close(np.where(expect_nan, 0, out), np.where(expect_nan, 0, oracle.softmax(x, axis=axis)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_under_a_mask(backend, rng, dtype):
    x = rng.standard_normal((3, 8)).astype(dtype)
    x[:, 5] = np.nan
    keep = np.ones(8, bool)
    keep[5] = False
    out = check(x, keep)  # a NaN that a bool mask excludes does not leak
    assert np.all(np.isfinite(out))
    # an added -inf hides its entry as False does, NaN included (not NaN + -inf = NaN): the
    # compiled attention skips the keys a mask hides, so the result could not depend on them
    np.testing.assert_array_equal(F.masked_softmax(x, np.where(keep, 0.0, -np.inf)), out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_rows_sum_to_one_along_a_middle_axis(backend, rng, dtype):
    x = rng.standard_normal((3, 40, 4)).astype(dtype)
    mask = rng.random((3, 40, 1)) < 0.5  # broadcast along the last axis
    mask[1] = False  # nothing visible in batch 1: zeros
    out = check(x, mask, 2.0, axis=1)
    np.testing.assert_allclose(out[[0, 2]].sum(axis=1), 1, rtol=10 * oracle.rtol(dtype))
    assert np.all(out[1] == 0)


def test_input_not_modified_and_result_new(backend, rng):
    x = rng.standard_normal((4, 9))
    mask = rng.random((4, 9)) < 0.5
    before, mask_before = x.copy(), mask.copy()
    for axis in (-1, 0):
        out = F.masked_softmax(x, mask, 2.0, axis)
        assert not np.shares_memory(out, x)
    assert np.array_equal(x, before) and np.array_equal(mask, mask_before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_shapes(backend, dtype):
    for shape, axis in (((0, 5), -1), ((0, 5), 0), ((5, 0), -1), ((2, 0, 3), 1)):
        out = F.masked_softmax(np.zeros(shape, dtype), np.ones(shape[-1:], bool), 1.0, axis)
        assert out.shape == shape and out.dtype == dtype
