"""linear and linear_backward on both backends, against float64 oracles."""
import numpy as np
import pytest

import oracle
from fastattn import functional as F
from threads import at_thread_counts


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [((1,), 1, 1), ((7,), 5, 3), ((3, 129), 64, 384), ((300,), 257, 1000),
                                   ((1700,), 33, 530)], ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_oracle(backend, rng, dtype, shape, with_bias):
    lead, n_in, n_out = shape
    x = rng.standard_normal(lead + (n_in,)).astype(dtype)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype) if with_bias else None
    g = rng.standard_normal(lead + (n_out,)).astype(dtype)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    want = x64 @ w64.T + (0 if b is None else b)
    # sums of n_in (or n rows) products of unit-size values: judged against sqrt of the count
    oracle.assert_close(F.linear(x, w, b), want, dtype, scale=np.sqrt(n_in), rtol_factor=10)
    dx, dw, db = F.linear_backward(g, x, w)
    rows = int(np.prod(lead))
    oracle.assert_close(dx, g64 @ w64, dtype, scale=np.sqrt(n_out), rtol_factor=10)
    oracle.assert_close(dw, g64.reshape(-1, n_out).T @ x64.reshape(-1, n_in), dtype,
                        scale=np.sqrt(rows), rtol_factor=10)
    oracle.assert_close(db, g64.reshape(-1, n_out).sum(axis=0), dtype, scale=np.sqrt(rows), rtol_factor=10)


def test_non_contiguous(backend, rng):
    x = rng.standard_normal((40, 20)).T[::2]  # (10, 40) view
    w = rng.standard_normal((40, 30)).T       # (30, 40) view
    np.testing.assert_allclose(F.linear(x, w), x @ w.T, rtol=1e-12)
    dx, dw, db = F.linear_backward(np.ones((10, 30)), x, w)
    np.testing.assert_allclose(dw, np.ones((30, 10)) @ x, rtol=1e-12)


@pytest.mark.parametrize("M, K, N", [(700, 96, 300), (768, 128, 65), (1700, 40, 600), (64, 128, 384), (5, 7, 3)])
def test_thread_count_does_not_change_results(rng, M, K, N):
    # the compiled kernel cuts the products into blocks by shape only, never by thread count
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    g = rng.standard_normal((M, N)).astype(np.float32)
    out = at_thread_counts(lambda: (F.linear(x, w), *F.linear_backward(g, x, w)), (1, 2, 3))
    assert all(np.array_equal(a, b) for a, b in zip(out[0], out[1]))
    assert all(np.array_equal(a, b) for a, b in zip(out[0], out[2]))


@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 8, 9])  # (1-8 rows: the compiled few-row kernel; 9: past it)
@pytest.mark.parametrize("K, N", [(13, 7), (768, 130), (1, 3), (40, 1), (768, 343)])
@pytest.mark.parametrize("approximate", [None, "none", "tanh"])
def test_few_rows(backend, rng, M, K, N, approximate):
    # batched decode's products: every row, column, the K % 8 tail and the bias, with the GELU
    # fused or not, float32 against float64; at 1 and 2 threads the same bits
    x, w = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    pre = x.astype(np.float64) @ w.T.astype(np.float64) + b
    run = (lambda: F.linear(x, w, b)) if approximate is None else (lambda: F.linear_gelu(x, w, b, approximate))
    want = pre if approximate is None else oracle.gelu(pre, approximate)
    oracle.assert_close(run(), want, np.float32, scale=np.sqrt(K), rtol_factor=10)
    if backend == "compiled":
        one, two = at_thread_counts(run)
        np.testing.assert_array_equal(one, two)
        if M <= 8 and K * N >= 1 << 18:  # (a single row of a weight this large runs on the kernel too:
            # one summation order per output, so a row alone gives the bits it gets among others)
            for r in range(M):
                alone = F.linear(x[r:r + 1], w, b) if approximate is None else F.linear_gelu(x[r:r + 1], w, b, approximate)
                np.testing.assert_array_equal(alone[0], one[r])


def test_few_rows_carry_nan_and_inf_to_their_outputs_only(backend):
    x = np.ones((3, 20), np.float32)
    x[1, 17] = np.nan  # (in the K % 8 tail of row 1)
    w = np.ones((9, 20), np.float32)
    w[4, 2] = np.inf
    y = F.linear(x, w)
    assert np.isnan(y[1]).all()
    np.testing.assert_array_equal(y[[0, 2], 4], [np.inf, np.inf])
    np.testing.assert_array_equal(np.delete(y[[0, 2]], 4, axis=1), 20)


def test_bad_input(backend):
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"weight must have shape \(5, 3\) for input of shape \(4, 3\), got \(5, 2\)"):
        F.linear(x, np.ones((5, 2), np.float32))
    with pytest.raises(TypeError, match=r"weight must have the dtype of input \(float32\), got float64"):
        F.linear(x, np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        F.linear(x, np.ones((5, 3), np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(4, 5\)"):
        F.linear_backward(np.ones((4, 4), np.float32), x, np.ones((5, 3), np.float32))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 7), (5, 3, 17), (385, 130)])
def test_linear_gelu_is_gelu_of_linear(backend, approximate, dtype, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    w = (rng.standard_normal((131, shape[-1])) * 2).astype(dtype)
    b = rng.standard_normal(131).astype(dtype)
    pre64 = x.astype(np.float64) @ w.T.astype(np.float64) + b
    want = oracle.gelu(pre64, approximate)
    out, pre = F.linear_gelu(x, w, b, approximate, return_pre=True)
    assert out.dtype == pre.dtype == dtype and out.shape == pre.shape == shape[:-1] + (131,)
    oracle.assert_close(pre, pre64, dtype, scale=np.sqrt(shape[-1]), rtol_factor=10)
    oracle.assert_close(out, want, dtype, scale=np.sqrt(shape[-1]), rtol_factor=10)
    np.testing.assert_array_equal(F.linear_gelu(x, w, b, approximate), out)
    np.testing.assert_array_equal(F.linear_gelu(x, w, None, approximate), F.gelu(F.linear(x, w), approximate))


def test_linear_gelu_does_not_depend_on_the_thread_count():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((700, 96)).astype(np.float32)
    w = rng.standard_normal((300, 96)).astype(np.float32)
    out = at_thread_counts(lambda: F.linear_gelu(x, w, return_pre=True), (1, 2, 3))
    for got in out[1:]:
        np.testing.assert_array_equal(got[0], out[0][0])
        np.testing.assert_array_equal(got[1], out[0][1])


def test_linear_gelu_bad_input(backend):
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="approximate"):
        F.linear_gelu(x, np.ones((5, 3), np.float32), approximate="fast")
    with pytest.raises(TypeError, match="weight"):
        F.linear_gelu(x, np.ones((5, 3)))
    with pytest.raises(ValueError, match="bias"):
        F.linear_gelu(x, np.ones((5, 3), np.float32), np.ones(4, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lead, K, N", [((0,), 3, 4), ((2, 3), 0, 4), ((5,), 3, 0), ((0,), 0, 0),
                                        ((2, 0), 3, 4), ((3,), 0, 0)], ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_zero_size_dimension(backend, rng, dtype, lead, K, N, with_bias):
    # M, K or N = 0: no product, but defined results (K = 0: the bias in every row)
    x = rng.standard_normal(lead + (K,)).astype(dtype)
    w = rng.standard_normal((N, K)).astype(dtype)
    b = rng.standard_normal(N).astype(dtype) if with_bias else None
    g = rng.standard_normal(lead + (N,)).astype(dtype)
    want = np.zeros(lead + (N,)) + (0 if b is None else b)
    y = F.linear(x, w, b)
    oracle.assert_close(y, want, dtype)
    act, pre = F.linear_gelu(x, w, b, return_pre=True)
    oracle.assert_close(pre, want, dtype)
    oracle.assert_close(act, oracle.gelu(want), dtype)
    dx, dw, db = F.linear_backward(g, x, w)
    oracle.assert_close(dx, np.zeros(x.shape), dtype)
    oracle.assert_close(dw, np.zeros(w.shape), dtype)
    oracle.assert_close(db, g.astype(np.float64).reshape(-1, N).sum(axis=0) if N else np.zeros(0), dtype,
                        scale=10)
