"""Backward kernels: gelu_backward, layer_norm_backward (and layer_norm's stats), masked_softmax_backward.

Three independent checks: central differences of a random scalar loss sum(G * f(x)) in float64,
analytic float64 oracles written here (no fastattn code), and torch autograd when it is installed.
"""
import importlib
import math

import numpy as np
import pytest

import fastattn
import oracle
from fastattn import functional as F
from threads import at_thread_counts

DTYPES = [np.float32, np.float64]


# ---- analytic float64 oracles ----------------------------------------------------------------

def gelu_grad_oracle(g, x, approximate):
    """g * GELU'(x), element by element in double with math's erfc/exp/tanh."""
    def one(t):
        if approximate == "none":
            return 0.5 * math.erfc(-t / math.sqrt(2)) + t * math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
        k = math.sqrt(2 / math.pi)
        u = k * (t + 0.044715 * t**3)
        du = k * (1 + 3 * 0.044715 * t * t)
        if abs(u) < 1:  # d/dt [t/2 (1 + tanh u)], as written
            return 0.5 * (1 + math.tanh(u)) + 0.5 * t * (1 - math.tanh(u) ** 2) * du
        # the same with 1 + tanh u = 2 / (1 + e^(-2u)) and 1 - tanh^2 u = 4 e^(-2|u|) / (1 + e^(-2|u|))^2,
        # which neither cancel nor overflow for large |u|
        e = math.exp(-2 * abs(u))
        half_one_plus_tanh = 1 / (1 + e) if u > 0 else e / (1 + e)
        return half_one_plus_tanh + 2 * t * e / (1 + e) ** 2 * du
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(g, dtype=np.float64) * np.vectorize(one, otypes=[np.float64])(x)


def layer_norm_grad_oracle(g, x, mean, rstd, weight):
    """From the given mean and rstd: dx = rstd (dy - mean(dy) - xhat mean(dy xhat)), dy = g w."""
    g, x = np.asarray(g, np.float64), np.asarray(x, np.float64)
    xhat = (x - np.asarray(mean, np.float64)[..., None]) * np.asarray(rstd, np.float64)[..., None]
    w = np.ones(x.shape[-1]) if weight is None else np.asarray(weight, np.float64)
    dy = g * w
    dx = np.asarray(rstd, np.float64)[..., None] * (
        dy - dy.mean(-1, keepdims=True) - xhat * (dy * xhat).mean(-1, keepdims=True))
    C = x.shape[-1]
    return dx, (g * xhat).reshape(-1, C).sum(0), g.reshape(-1, C).sum(0)


def softmax_grad_oracle(g, y, scale, axis):
    g, y = np.asarray(g, np.float64), np.asarray(y, np.float64)
    return scale * y * (g - (g * y).sum(axis=axis, keepdims=True))


# ---- finite differences ----------------------------------------------------------------------

def numerical_grad(loss, a, h=1e-6):
    """Central differences of the scalar loss() with respect to each entry of a (changed in place)."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        up = loss()
        a[i] = old - h
        down = loss()
        a[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def assert_fd_close(got, want):
    # central differences with h = 1e-6 are good to ~1e-8 here (O(1) data and derivatives)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_finite_differences(backend, rng, approximate):
    x = rng.standard_normal((3, 5)) * 2.5
    G = rng.standard_normal(x.shape)
    want = numerical_grad(lambda: np.sum(G * F.gelu(x, approximate)), x)
    assert_fd_close(F.gelu_backward(G, x, approximate), want)


@pytest.mark.parametrize("use_weight", [False, True])
def test_layer_norm_backward_finite_differences(backend, rng, use_weight):
    x = rng.standard_normal((2, 3, 6)) + 1.5
    w = rng.standard_normal(6) if use_weight else None
    b = rng.standard_normal(6)
    G = rng.standard_normal(x.shape)

    def loss():
        return np.sum(G * F.layer_norm(x, w, b, eps=1e-5))

    y, mean, rstd = F.layer_norm(x, w, b, eps=1e-5, return_stats=True)
    dx, dw, db = F.layer_norm_backward(G, x, mean, rstd, w)
    assert_fd_close(dx, numerical_grad(loss, x))
    assert_fd_close(db, numerical_grad(loss, b))
    if use_weight:
        assert_fd_close(dw, numerical_grad(loss, w))
    else:
        assert dw is None


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("mask_kind", [None, "bool", "additive"])
def test_masked_softmax_backward_finite_differences(backend, rng, axis, mask_kind):
    x = rng.standard_normal((4, 3, 5))
    G = rng.standard_normal(x.shape)
    scale = 0.7
    mask = None
    if mask_kind is not None:
        keep = rng.random(x.shape) < 0.7
        line = [1, 2, 3]
        line[axis] = slice(None)
        keep[tuple(line)] = False  # one fully masked row along `axis`
        mask = keep if mask_kind == "bool" else np.where(keep, rng.standard_normal(x.shape), -np.inf)
    y = F.masked_softmax(x, mask, scale, axis)
    got = F.masked_softmax_backward(G, y, scale, axis)
    want = numerical_grad(lambda: np.sum(G * F.masked_softmax(x, mask, scale, axis)), x)
    assert_fd_close(got, want)
    if mask is not None:  # masked entries get no gradient; at least one row along `axis` is all masked
        hidden = ~keep
        assert np.all(got[hidden] == 0)
        assert np.any(np.all(hidden, axis=axis))


# ---- against the analytic oracles, both dtypes ------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("C", [1, 7, 768, 1000])
def test_gelu_backward_matches_oracle(backend, rng, dtype, approximate, C):
    x = (rng.standard_normal((5, C)) * 3).astype(dtype)
    g = rng.standard_normal((5, C)).astype(dtype)
    got = F.gelu_backward(g, x, approximate)
    oracle.assert_close(got, gelu_grad_oracle(g, x, approximate), dtype, scale=np.abs(g).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_backward_non_contiguous(backend, rng, dtype):
    x = (rng.standard_normal((40, 7, 3)) * 3).astype(dtype).transpose(2, 0, 1)[:, ::3]
    g = rng.standard_normal((9, 40, 7)).astype(dtype)[::3].transpose(0, 2, 1)[..., ::3].transpose(0, 2, 1)
    assert not x.flags.c_contiguous and not g.flags.c_contiguous and g.shape == x.shape
    for approximate in ("none", "tanh"):
        oracle.assert_close(F.gelu_backward(g, x, approximate), gelu_grad_oracle(g, x, approximate), dtype,
                            scale=np.abs(g).max())


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_tails(backend, approximate):
    # Relative accuracy in the negative tail, where GELU' is tiny (both terms have one sign there,
    # nothing cancels), exactly 1 / 0 far out, and never NaN for huge or infinite x.
    x = np.linspace(-25, -3, 2201)
    got = F.gelu_backward(np.ones_like(x), x, approximate)
    want = gelu_grad_oracle(np.ones_like(x), x, approximate)
    # Relative accuracy is asked above 1e-290 only: the compiled tanh form takes exp(-2|u|) = 0
    # below exp(-708.4) (the normal range), and multiplies it by 2 x du/dx (~ -3000 at x = -20), so
    # it returns 0 where the true values are ~1e-305 .. 1e-302.
    ok = np.abs(want) > 1e-290
    assert ok.sum() > 1500
    rel = np.abs(got[ok] - want[ok]) / np.abs(want[ok])
    assert rel.max() < 1e-11
    for dtype in DTYPES:
        big = np.array([-np.inf, -1e30, -100, -40, 40, 100, 1e30, np.inf], dtype=dtype)
        out = F.gelu_backward(np.ones_like(big), big, approximate)
        np.testing.assert_array_equal(out, [0, 0, 0, 0, 1, 1, 1, 1])
        assert np.isnan(F.gelu_backward(np.ones(1, dtype), np.array([np.nan], dtype), approximate)[0])
    x32 = np.linspace(-12, 12, 4001).astype(np.float32)
    out32 = F.gelu_backward(np.ones_like(x32), x32, approximate)
    assert np.all(np.isfinite(out32))
    oracle.assert_close(out32, gelu_grad_oracle(np.ones_like(x32), x32, approximate), np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 7, 768, 1000])
@pytest.mark.parametrize("use_weight", [False, True])
def test_layer_norm_backward_matches_oracle(backend, rng, dtype, C, use_weight):
    x = (rng.standard_normal((3, 5, C)) * 2 + 0.5).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    w = rng.standard_normal(C).astype(dtype) if use_weight else None
    _, mean, rstd = F.layer_norm(x, w, None, return_stats=True)
    dx, dw, db = F.layer_norm_backward(g, x, mean, rstd, w)
    want_dx, want_dw, want_db = layer_norm_grad_oracle(g, x, mean, rstd, w)
    gw = np.abs(g) * (1 if w is None else np.abs(w))
    oracle.assert_close(dx, want_dx, dtype, scale=(np.abs(rstd)[..., None] * gw).max())
    xhat = np.abs((x.astype(np.float64) - mean[..., None]) * rstd[..., None])
    if use_weight:
        oracle.assert_close(dw, want_dw, dtype, scale=(np.abs(g) * xhat).reshape(-1, C).sum(0).max())
    else:
        assert dw is None
    oracle.assert_close(db, want_db, dtype, scale=np.abs(g).reshape(-1, C).sum(0).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_return_stats(backend, rng, dtype):
    x = (rng.standard_normal((4, 3, 257)) * 3 + 100).astype(dtype)
    w, b = (rng.standard_normal(257).astype(dtype) for _ in range(2))
    y, mean, rstd = F.layer_norm(x, w, b, eps=1e-3, return_stats=True)
    x64 = x.astype(np.float64)
    assert mean.shape == rstd.shape == (4, 3) and mean.dtype == rstd.dtype == dtype
    oracle.assert_close(mean, x64.mean(-1), dtype)
    oracle.assert_close(rstd, 1 / np.sqrt(x64.var(-1) + 1e-3), dtype)
    assert np.array_equal(y, F.layer_norm(x, w, b, eps=1e-3))  # the same forward
    plain = F.layer_norm(x, w, b)
    assert isinstance(plain, np.ndarray) and plain.shape == x.shape  # default unchanged


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_backward_non_contiguous(backend, rng, dtype):
    base = (rng.standard_normal((7, 40, 11)) + 1).astype(dtype)
    x = base.transpose(1, 0, 2)[::2, :, ::2]  # (20, 7, 6)
    g = rng.standard_normal((6, 7, 20)).astype(dtype).T
    w = rng.standard_normal(12).astype(dtype)[::2]
    _, mean, rstd = F.layer_norm(x, w, return_stats=True)
    mean, rstd = mean.T.copy().T, rstd.T.copy().T  # non-contiguous stats too
    assert not (x.flags.c_contiguous or g.flags.c_contiguous or w.flags.c_contiguous or mean.flags.c_contiguous)
    dx, dw, db = F.layer_norm_backward(g, x, mean, rstd, w)
    want_dx, want_dw, want_db = layer_norm_grad_oracle(g, x, mean, rstd, w)
    oracle.assert_close(dx, want_dx, dtype, scale=np.abs(want_dx).max())
    oracle.assert_close(dw, want_dw, dtype, scale=np.abs(want_dw).max() + 10)
    oracle.assert_close(db, want_db, dtype, scale=np.abs(g).reshape(-1, 6).sum(0).max())


@pytest.mark.skipif("compiled" not in fastattn.available_backends(), reason="compiled backend not built")
def test_layer_norm_backward_same_for_1_and_2_threads(rng):
    x = rng.standard_normal((1003, 129)).astype(np.float32)  # more rows than row chunks, odd sizes
    g = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(129).astype(np.float32)
    with fastattn.use_backend("compiled"):
        _, mean, rstd = F.layer_norm(x, w, return_stats=True)
    results = at_thread_counts(lambda: F.layer_norm_backward(g, x, mean, rstd, w))
    for a, b in zip(*results):
        assert np.array_equal(a, b)
    np.testing.assert_allclose(results[0][2], g.astype(np.float64).sum(0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 7, 768, 1000])
def test_masked_softmax_backward_matches_oracle(backend, rng, dtype, C):
    x = rng.standard_normal((6, C)).astype(dtype)
    g = rng.standard_normal((6, C)).astype(dtype)
    mask = rng.random((6, C)) < 0.8
    mask[2] = False  # a fully masked row: zero gradient
    y = F.masked_softmax(x, mask, 1.3)
    got = F.masked_softmax_backward(g, y, 1.3)
    oracle.assert_close(got, softmax_grad_oracle(g, y, 1.3, -1), dtype, scale=1.3 * np.abs(g).max())
    assert np.all(got[2] == 0) and np.all(got[~mask] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -2])
def test_masked_softmax_backward_axis_non_contiguous(backend, rng, dtype, axis):
    x = rng.standard_normal((9, 8, 7)).astype(dtype).transpose(1, 2, 0)[:, ::2]  # (8, 4, 9)
    g = rng.standard_normal((4, 8, 9)).astype(dtype).transpose(1, 0, 2)
    y = F.softmax(x, axis=axis)
    y = y.T.copy().T  # non-contiguous output too
    got = F.masked_softmax_backward(g, y, axis=axis)
    assert not g.flags.c_contiguous and not y.flags.c_contiguous
    oracle.assert_close(got, softmax_grad_oracle(g, y, 1.0, axis), dtype, scale=np.abs(g).max())


def test_empty_inputs(backend):
    for dtype in DTYPES:
        e = np.zeros((0, 5), dtype)
        assert F.gelu_backward(e, e).shape == (0, 5)
        assert F.masked_softmax_backward(e, e, axis=0).shape == (0, 5)
        y, mean, rstd = F.layer_norm(e, return_stats=True)
        assert y.shape == (0, 5) and mean.shape == rstd.shape == (0,)
        dx, dw, db = F.layer_norm_backward(e, e, mean, rstd, np.ones(5, dtype))
        assert dx.shape == (0, 5) and dx.dtype == dtype
        assert np.array_equal(dw, np.zeros(5)) and np.array_equal(db, np.zeros(5)) and db.dtype == dtype


# ---- bad input -------------------------------------------------------------------------------

def test_bad_input(backend):
    x = np.ones((3, 4))
    x32 = x.astype(np.float32)
    mean, rstd = np.zeros(3), np.ones(3)
    with pytest.raises(TypeError, match="grad_output"):
        F.gelu_backward(np.ones((3, 4), np.int64), x)
    with pytest.raises(TypeError, match="x"):
        F.gelu_backward(x, np.ones((3, 4), np.int32))
    with pytest.raises(TypeError, match="grad_output.*dtype of x"):
        F.gelu_backward(x32, x)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(3, 4\).*\(4, 3\)"):
        F.gelu_backward(x.T, x)
    with pytest.raises(ValueError, match="approximate"):
        F.gelu_backward(x, x, "sigmoid")
    with pytest.raises(TypeError, match="output"):
        F.masked_softmax_backward(x, x.astype(np.float16))
    with pytest.raises(TypeError, match="grad_output"):
        F.masked_softmax_backward(x32, x)
    with pytest.raises(ValueError, match="grad_output"):
        F.masked_softmax_backward(x[:2], x)
    with pytest.raises(np.exceptions.AxisError):
        F.masked_softmax_backward(x, x, axis=2)
    with pytest.raises(TypeError, match="axis"):
        F.masked_softmax_backward(x, x, axis=1.0)
    with pytest.raises(TypeError, match="scale"):
        F.masked_softmax_backward(x, x, scale="2")
    with pytest.raises(TypeError, match="mean"):
        F.layer_norm_backward(x, x, mean.astype(np.float32), rstd)
    with pytest.raises(TypeError, match="rstd"):
        F.layer_norm_backward(x, x, mean, rstd.astype(int))
    with pytest.raises(ValueError, match=r"mean must have shape \(3,\)"):
        F.layer_norm_backward(x, x, np.zeros((3, 1)), rstd)
    with pytest.raises(ValueError, match="rstd"):
        F.layer_norm_backward(x, x, mean, np.ones(4))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        F.layer_norm_backward(x, x, mean, rstd, np.ones(3))
    with pytest.raises(TypeError, match="weight"):
        F.layer_norm_backward(x, x, mean, rstd, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="grad_output"):
        F.layer_norm_backward(np.ones((3, 5)), x, mean, rstd)
    with pytest.raises(TypeError, match="x"):
        F.layer_norm_backward(x, x.astype(int), mean, rstd)
    with pytest.raises(TypeError, match="return_stats"):
        F.layer_norm(x, return_stats="yes")


@pytest.mark.skipif("compiled" not in fastattn.available_backends(), reason="compiled backend not built")
def test_compiled_kernels_check_shapes_themselves():
    # called directly (past fastattn.functional), mismatched shapes raise instead of reading out of bounds
    cg, cl, cs = (importlib.import_module(f"fastattn._compiled.{m}") for m in ("gelu", "layer_norm", "softmax"))

    a, b = np.ones(8), np.ones(7)
    with pytest.raises(ValueError, match="gelu_backward"):
        cg._backward(a, b, np.empty(7), False, 1)
    with pytest.raises(ValueError, match="masked_softmax_backward"):
        cs._backward(np.ones((2, 4)), np.ones((2, 3)), np.empty((2, 3)), 1.0, 1)
    with pytest.raises(ValueError, match="layer_norm_backward"):
        cl._backward(np.ones((2, 3)), np.ones((2, 3)), np.ones(1), np.ones(2), None, np.empty((2, 3)),
                     None, np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match="layer_norm_backward"):
        cl._backward(np.ones((2, 3)), np.ones((2, 3)), np.ones(2), np.ones(2), np.ones(3), np.empty((2, 3)),
                     np.zeros((2, 3)), np.zeros((1, 3)), 1)


# ---- torch autograd --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_against_torch_autograd(backend, rng, dtype):
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    tol = 1e-5 if dtype == np.float32 else 1e-10
    x = rng.standard_normal((6, 33)).astype(dtype) * 2
    g = rng.standard_normal(x.shape).astype(dtype)
    w, b = (rng.standard_normal(33).astype(dtype) for _ in range(2))

    def grads(fn, *arrays):
        ts = [torch.tensor(a, requires_grad=True) for a in arrays]
        fn(*ts).backward(torch.from_numpy(g))
        return [t.grad.numpy() for t in ts]

    for approximate in ("none", "tanh"):
        (want,) = grads(lambda t: TF.gelu(t, approximate=approximate), x)
        np.testing.assert_allclose(F.gelu_backward(g, x, approximate), want, rtol=tol, atol=tol)

    want_dx, want_dw, want_db = grads(lambda t, tw, tb: TF.layer_norm(t, (33,), tw, tb, eps=1e-5), x, w, b)
    _, mean, rstd = F.layer_norm(x, w, b, return_stats=True)
    dx, dw, db = F.layer_norm_backward(g, x, mean, rstd, w)
    np.testing.assert_allclose(dx, want_dx, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(dw, want_dw, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(db, want_db, rtol=tol, atol=tol * 10)

    for axis in (-1, 0):
        (want,) = grads(lambda t: torch.softmax(t * 0.5, dim=axis), x)
        y = F.masked_softmax(x, None, 0.5, axis)
        np.testing.assert_allclose(F.masked_softmax_backward(g, y, 0.5, axis), want, rtol=tol, atol=tol)
