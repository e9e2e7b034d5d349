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
