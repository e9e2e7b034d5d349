"""The compiled kernels' one GEMM (src_cython/_blas.pxd) promises what the BLAS standard leaves to
the kernel the BLAS picks for the CPU: alpha = 0 and k = 0 never multiply (0 * inf would be NaN
on some kernels, skipped on others), beta = 0 never keeps what C held (NaN included), m = 1 (the
gemv path) behaves as m > 1. Checked here on C pre-filled with NaN and operands holding inf and
NaN, against NumPy in float64, with the float32 products on each engine (the BLAS's sgemm, and
oneDNN's where it is installed)."""
import numpy as np
import pytest

import fastattn

pytestmark = pytest.mark.skipif("compiled" not in fastattn.available_backends(),
                                reason="compiled backend not built")


def _gemm(*args, engine="openblas"):
    from fastattn._compiled.gemm import _gemm

    return _gemm(*args, engine)


def _operands(rng, dtype, m, n, k, trans_a, trans_b, poison=False):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    if poison and a.size and b.size:
        a.flat[0], b.flat[-1] = np.inf, np.nan
    return a, b


def _op(x, trans):
    return x.T.astype(np.float64) if trans else x.astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 3])  # (1: the matrix-vector path)
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False)])
def test_alpha_0_gives_beta_c_whatever_a_and_b_hold(rng, gemm_engine, dtype, m, trans_a, trans_b):
    a, b = _operands(rng, dtype, m, 5, 4, trans_a, trans_b, poison=True)
    for beta in (0.0, 1.0, 0.5):
        c0 = rng.standard_normal((m, 5)).astype(dtype)
        c = c0.copy()
        _gemm(trans_a, trans_b, a, b, 0.0, beta, c, engine=gemm_engine)
        assert np.array_equal(c, (beta * c0).astype(dtype)), beta


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False)])
def test_beta_0_overwrites_nan_in_c(rng, gemm_engine, dtype, m, trans_a, trans_b):
    a, b = _operands(rng, dtype, m, 7, 6, trans_a, trans_b)
    c = np.full((m, 7), np.nan, dtype)
    _gemm(trans_a, trans_b, a, b, 1.5, 0.0, c, engine=gemm_engine)
    want = 1.5 * _op(a, trans_a) @ _op(b, trans_b)
    np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 3])
def test_k_0_gives_beta_c(rng, gemm_engine, dtype, m):
    a, b = np.empty((m, 0), dtype), np.empty((0, 4), dtype)
    c = np.full((m, 4), np.nan, dtype)
    _gemm(False, False, a, b, 1.0, 0.0, c, engine=gemm_engine)
    assert np.array_equal(c, np.zeros((m, 4), dtype))
    c = np.full((m, 4), 2.0, dtype)
    _gemm(False, False, a, b, 1.0, 1.0, c, engine=gemm_engine)
    assert np.array_equal(c, np.full((m, 4), 2.0, dtype))


def test_an_empty_output_is_left_alone(rng):
    a, b = np.ones((0, 3)), np.ones((3, 4))
    c = np.empty((0, 4))
    _gemm(False, False, a, b, 1.0, 0.0, c)
    assert c.shape == (0, 4)


def test_operands_that_do_not_fit_are_a_value_error():
    with pytest.raises(ValueError, match=r"op\(a\) \(2, 3\), op\(b\) \(4, 5\) and c \(2, 5\) do not fit"):
        _gemm(False, False, np.ones((2, 3)), np.ones((4, 5)), 1.0, 0.0, np.ones((2, 5)))
