import numpy as np
import pytest

import oracle
from fastattn import functional as F

DTYPES = [np.float32, np.float64]


def check(x, weight=None, bias=None, eps=1e-5, rtol_factor=1.0):
    got = F.layer_norm(x, weight, bias, eps)
    want = oracle.layer_norm(x, weight, bias, eps)
    scale = (1 if weight is None else np.abs(weight).max()) + (0 if bias is None else np.abs(bias).max())
    oracle.assert_close(got, want, x.dtype, scale=scale, rtol_factor=rtol_factor)
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 7, 768, 1000])
@pytest.mark.parametrize("affine", ["none", "weight", "bias", "both"])
def test_matches_oracle(backend, rng, dtype, C, affine):
    x = (rng.standard_normal((2, 5, C)) * 3 + 1).astype(dtype)
    w = rng.standard_normal(C).astype(dtype) if affine in ("weight", "both") else None
    b = rng.standard_normal(C).astype(dtype) if affine in ("bias", "both") else None
    check(x, w, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_mean_offset(backend, rng, dtype):
    # |mean| = 1e4 with std 1: E[x^2] - E[x]^2 would cancel away every digit, and a float32 mean
    # rounded to float32 is off by up to 5e-4, which x - mean passes on to every output. The
    # oracle sees the same float32 inputs; the kernels must keep full precision anyway. (float64
    # keeps 1e-16 * 1e4 absolute in x - mean: 1e-12 relative to std 1, at the bound, hence 10x.)
    x = (1e4 + rng.standard_normal((8, 300))).astype(dtype)
    check(x, rtol_factor=1 if dtype == np.float32 else 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.0, 1e-5, 1e-2, 10.0])
def test_eps(backend, rng, dtype, eps):
    check(rng.standard_normal((4, 33)).astype(dtype), eps=eps)


def test_constant_rows(backend):
    x = np.full((3, 16), 2.5, np.float32)
    out = F.layer_norm(x, eps=1e-5)
    assert np.all(out == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_and_shapes(backend, rng, dtype):
    x = rng.standard_normal((50, 4, 3)).astype(dtype).transpose(2, 1, 0)[:, ::-1, ::2]  # (3, 4, 25)
    w = rng.standard_normal(50).astype(dtype)[::2]
    check(x, w, None)
    check(rng.standard_normal(9).astype(dtype))  # 1-d input: one row


def test_nan_propagates_per_row(backend, rng):
    x = rng.standard_normal((3, 10))
    x[1, 4] = np.nan
    out = F.layer_norm(x)
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[[0, 2]]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [2, 3, 8, 9, 15, 16, 17, 33])
def test_row_lengths_around_vector_widths(backend, rng, dtype, C):
    x = (rng.standard_normal((3, C)) * 2 + 5).astype(dtype)
    check(x, rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_mean_offset_with_affine(backend, rng, dtype):
    # as test_large_mean_offset, negative mean, with weight and bias; odd C
    x = (-1e4 + rng.standard_normal((5, 769))).astype(dtype)
    w = rng.standard_normal(769).astype(dtype)
    b = rng.standard_normal(769).astype(dtype)
    check(x, w, b, rtol_factor=1 if dtype == np.float32 else 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_magnitudes(backend, rng, dtype):
    # the statistics must neither overflow nor underflow: (x - mean)^2 of x ~ 1e19 is ~1e38,
    # at the float32 limit; x ~ 1e-19 with eps = 0 gives variances of ~1e-38
    big = 1e19 if dtype == np.float32 else 1e150
    for scale in (big, 1 / big):
        x = (rng.standard_normal((4, 33)) * scale).astype(dtype)
        out = check(x, eps=0.0)
        assert np.all(np.isfinite(out))


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_variance_rows(backend, dtype):
    # constant rows normalise to 0 (then + bias) for eps > 0; C = 1 rows are constant
    x = np.array([[3.0] * 5, [-1e4] * 5], dtype)
    b = np.arange(5, dtype=dtype)
    np.testing.assert_array_equal(F.layer_norm(x, None, b), np.stack([b, b]))
    np.testing.assert_array_equal(F.layer_norm(np.full((4, 1), 7.0, dtype)), np.zeros((4, 1)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_shapes_and_leading_dims(backend, rng, dtype):
    for shape in ((0, 5), (2, 0, 5), (3, 0)):
        out = F.layer_norm(np.zeros(shape, dtype))
        assert out.shape == shape and out.dtype == dtype
    x = rng.standard_normal((2, 3, 4, 10)).astype(dtype)
    assert check(x, np.ones(10, dtype), np.zeros(10, dtype)).shape == (2, 3, 4, 10)


def test_inputs_not_modified_and_result_new(backend, rng):
    x = rng.standard_normal((4, 9)).astype(np.float32)
    w = rng.standard_normal(9).astype(np.float32)
    copies = (x.copy(), w.copy())
    out = F.layer_norm(x, w, w)
    assert np.array_equal(x, copies[0]) and np.array_equal(w, copies[1])
    assert not np.shares_memory(out, x) and not np.shares_memory(out, w)
