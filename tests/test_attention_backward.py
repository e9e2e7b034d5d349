"""scaled_dot_product_attention_backward (and return_lse) on both backends."""
import math

import numpy as np
import pytest

import oracle
from fastattn import functional as F
from threads import at_thread_counts

DTYPES = [np.float32, np.float64]


def qkv(rng, lead, Tq, Tk, D, Dv, dtype):
    return (rng.standard_normal(lead + (Tq, D)).astype(dtype),
            rng.standard_normal(lead + (Tk, D)).astype(dtype),
            rng.standard_normal(lead + (Tk, Dv)).astype(dtype))


def visible_and_scores(q, k, mask, causal, scale):
    """float64 scores with hidden entries at -inf, written out independently of fastattn."""
    q, k = q.astype(np.float64), k.astype(np.float64)
    Tq, D = q.shape[-2:]
    Tk = k.shape[-2]
    s = np.einsum("...id,...jd->...ij", q, k) * (1 / math.sqrt(D) if scale is None else scale)
    keep = np.ones(s.shape, dtype=bool)
    if causal:
        keep &= np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq)
    if mask is not None:
        if mask.dtype == bool:
            keep &= mask
        else:
            s = s + mask.astype(np.float64)
    return np.where(keep, s, -np.inf)


def oracle_lse(q, k, mask, causal, scale=None):
    s = visible_and_scores(q, k, mask, causal, scale)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(m == -np.inf, 0, m)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(s - m).sum(axis=-1, keepdims=True)) + m)[..., 0]


def oracle_grads(g, q, k, v, mask, causal, scale=None):
    """float64 gradients of sum(g * attention(q, k, v)), from the softmax Jacobian written as
    dS = P * (dP - rowsum(P * dP)) (the kernels use the equal rowsum(dO * O) instead)."""
    g, v = g.astype(np.float64), v.astype(np.float64)
    s = visible_and_scores(q, k, mask, causal, scale)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(m == -np.inf, 0, m))
    total = e.sum(axis=-1, keepdims=True)
    p = np.where(total > 0, e / np.where(total > 0, total, 1), 0)
    dp = np.einsum("...id,...jd->...ij", g, v)
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    c = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    dq = np.einsum("...ij,...jd->...id", ds, k.astype(np.float64)) * c
    dk = np.einsum("...ij,...id->...jd", ds, q.astype(np.float64)) * c
    dv = np.einsum("...ij,...id->...jd", p, g)
    return dq, dk, dv


def run(g, q, k, v, mask=None, causal=False, scale=None):
    out, lse = F.scaled_dot_product_attention(q, k, v, mask, causal, scale, return_lse=True)
    return F.scaled_dot_product_attention_backward(g, q, k, v, out, lse, mask, causal, scale)


def check(rng, q, k, v, mask=None, causal=False, scale=None):
    g = rng.standard_normal(q.shape[:-1] + (v.shape[-1],)).astype(q.dtype)
    got = run(g, q, k, v, mask, causal, scale)
    # Each gradient is judged against the size of the terms it is made of (it can cancel to 0:
    # with one key, grad_query is exactly 0 while its terms are |g| |v| |k|).
    c = 1 / math.sqrt(q.shape[-1]) if scale is None else abs(scale)
    gv = np.abs(g).max() * np.abs(v).max()
    sizes = (gv * np.abs(k).max() * c, gv * np.abs(q).max() * c, np.abs(g).max())
    for name, a, b, want, size in zip(("grad_query", "grad_key", "grad_value"), got, (q, k, v),
                                      oracle_grads(g, q, k, v, mask, causal, scale), sizes):
        assert a.shape == b.shape and a.dtype == q.dtype, name
        oracle.assert_close(a, want, q.dtype, scale=size, rtol_factor=10)
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [((2,), 1, 1, 8, 8), ((2, 2), 7, 7, 16, 5), ((1,), 9, 30, 4, 4),
                                   ((1,), 30, 9, 4, 4), ((1, 2), 130, 130, 32, 32),
                                   ((1,), 200, 700, 16, 8), ((1,), 1, 600, 16, 16)], ids=str)
def test_matches_oracle(backend, rng, dtype, causal, shape):
    check(rng, *qkv(rng, *shape, dtype), causal=causal)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bool", "additive"])
@pytest.mark.parametrize("mask_shape", [(600,), (2, 1, 1, 600), (40, 600), (40, 1)], ids=str)
def test_masks(backend, rng, dtype, kind, mask_shape):
    q, k, v = qkv(rng, (2, 3), 40, 600, 8, 8, dtype)
    mask = rng.random(mask_shape) < 0.7
    if kind == "additive":
        mask = np.where(mask, rng.standard_normal(mask_shape), -np.inf)
    check(rng, q, k, v, mask, causal=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_and_fully_masked_rows_have_zero_gradients(backend, rng, dtype):
    q, k, v = qkv(rng, (3, 2), 12, 40, 8, 8, dtype)
    lengths = np.array([0, 17, 40])  # batch 0 sees no key at all
    mask = np.arange(40)[None, None, None, :] < lengths[:, None, None, None]
    dq, dk, dv = check(rng, q, k, v, mask)
    assert np.all(dq[0] == 0) and np.all(dk[0] == 0) and np.all(dv[0] == 0)
    assert np.all(dk[1, :, 17:] == 0) and np.all(dv[1, :, 17:] == 0)  # keys nobody saw


def test_finite_differences(backend, rng):
    # the loss sum(g * out) differentiated numerically, float64, through masks and causality
    q, k, v = qkv(rng, (1, 2), 5, 7, 3, 4, np.float64)
    mask = np.where(rng.random((5, 7)) < 0.8, rng.standard_normal((5, 7)), -np.inf)
    g = rng.standard_normal((1, 2, 5, 4))
    grads = run(g, q, k, v, mask, True, 0.6)
    h = 1e-6
    for a, grad in zip((q, k, v), grads):
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + h
            up = np.sum(g * F.scaled_dot_product_attention(q, k, v, mask, True, 0.6))
            a[idx] = old - h
            down = np.sum(g * F.scaled_dot_product_attention(q, k, v, mask, True, 0.6))
            a[idx] = old
            numeric[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lse(backend, rng, dtype):
    q, k, v = qkv(rng, (2,), 30, 20, 8, 8, dtype)
    mask = rng.random((30, 20)) < 0.6
    mask[3] = False
    out, lse = F.scaled_dot_product_attention(q, k, v, mask, True, return_lse=True)
    assert lse.shape == (2, 30) and lse.dtype == dtype
    want = oracle_lse(q, k, mask, True)
    # causal with Tq > Tk: query i sees keys j <= i - 10, so the first 10 see nothing
    assert np.all(lse[:, :10] == -np.inf) and np.all(np.isfinite(lse[:, 10]) | (want[:, 10] == -np.inf))
    assert np.all(lse[:, 3] == -np.inf)  # (also hidden entirely by the mask)
    finite = np.isfinite(want)
    oracle.assert_close(lse[finite], want[finite], dtype, scale=1.0)
    np.testing.assert_array_equal(out, F.scaled_dot_product_attention(q, k, v, mask, True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous(backend, rng, dtype):
    q = rng.standard_normal((2, 50, 3, 8)).astype(dtype).transpose(0, 2, 1, 3)
    k = rng.standard_normal((2, 3, 100, 8)).astype(dtype)[:, :, ::2]
    v = rng.standard_normal((2, 3, 50, 12)).astype(dtype)[..., ::-2]
    check(rng, q, k, v, rng.random((50, 50)).T < 0.8, causal=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_in_place_and_out(backend, rng, dtype):
    # a GPT's layout: q, k, v are views of one (B, T, 3, H, hs) projection, the output goes into
    # a (B, T, H, hs) buffer and the gradients into a (B, T, 3, H, hs) one (the compiled kernel
    # reads and writes those in place); the results must be those of contiguous arrays
    B, T, H, hs = 2, 37, 3, 8
    qkv5 = rng.standard_normal((B, T, 3, H, hs)).astype(dtype)
    q, k, v = qkv5.transpose(2, 0, 3, 1, 4)  # (B, H, T, hs) each
    g = rng.standard_normal((B, T, H, hs)).astype(dtype).transpose(0, 2, 1, 3)
    want_out, want_lse = F.scaled_dot_product_attention(*(a.copy() for a in (q, k, v)),
                                                        is_causal=True, return_lse=True)
    want = F.scaled_dot_product_attention_backward(g.copy(), q.copy(), k.copy(), v.copy(), want_out,
                                                   want_lse, is_causal=True)
    y = np.full((B, T, H, hs), np.nan, dtype)
    out, lse = F.scaled_dot_product_attention(q, k, v, is_causal=True, return_lse=True,
                                              out=y.transpose(0, 2, 1, 3))
    assert np.shares_memory(out, y)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(lse, want_lse)
    d5 = np.full((B, T, 3, H, hs), np.nan, dtype)
    grads = F.scaled_dot_product_attention_backward(g, q, k, v, out, lse, is_causal=True,
                                                    out=tuple(d5.transpose(2, 0, 3, 1, 4)))
    for a, b in zip(grads, want):
        assert np.shares_memory(a, d5)
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(d5.transpose(2, 0, 3, 1, 4), np.stack(want))


def test_out_that_cannot_be_written_in_place(backend, rng):
    # three leading dims that do not merge, and a broadcast key: the results still land in out
    q = rng.standard_normal((3, 2, 2, 9, 4)).astype(np.float32)
    k = np.broadcast_to(rng.standard_normal((1, 2, 1, 9, 4)).astype(np.float32), q.shape)
    want = F.scaled_dot_product_attention(q, np.ascontiguousarray(k), q)
    out = np.zeros((2, 3, 2, 9, 8), np.float32)[..., ::2].transpose(1, 0, 2, 3, 4)
    assert F.scaled_dot_product_attention(q, k, q, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    lse = F.scaled_dot_product_attention(q, k, q, return_lse=True)[1]
    outs = tuple(np.empty(q.shape, np.float32) for _ in range(3))
    got = F.scaled_dot_product_attention_backward(out, q, k, q, out, lse, out=outs)
    assert all(a is b for a, b in zip(got, outs))
    for a, b in zip(got, F.scaled_dot_product_attention_backward(out, q, k, q, out, lse)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_out(backend):
    q = np.ones((2, 4, 8), np.float32)
    with pytest.raises(ValueError, match=r"out must have shape \(2, 4, 8\), got \(2, 4, 7\)"):
        F.scaled_dot_product_attention(q, q, q, out=np.empty((2, 4, 7), np.float32))
    with pytest.raises(TypeError, match="out must have dtype float32, got float64"):
        F.scaled_dot_product_attention(q, q, q, out=np.empty((2, 4, 8)))
    with pytest.raises(ValueError, match="out is read-only"):
        F.scaled_dot_product_attention(q, q, q, out=np.broadcast_to(np.empty(8, np.float32), q.shape))
    out, lse = F.scaled_dot_product_attention(q, q, q, return_lse=True)
    with pytest.raises(TypeError, match="tuple of three arrays"):
        F.scaled_dot_product_attention_backward(out, q, q, q, out, lse, out=np.empty_like(q))
    with pytest.raises(ValueError, match=r"out\[2\] must have shape"):
        F.scaled_dot_product_attention_backward(out, q, q, q, out, lse,
                                                out=(np.empty_like(q), np.empty_like(q), q[:1].copy()))
    k = np.ones_like(q)
    with pytest.raises(ValueError, match="out overlaps key"):  # would read keys it has overwritten
        F.scaled_dot_product_attention(q, k, q.copy(), out=k)
    buf = np.empty((3,) + q.shape, np.float32)
    with pytest.raises(ValueError, match=r"out\[1\] overlaps grad_output"):
        F.scaled_dot_product_attention_backward(buf[0], q, q, q, out, lse, out=(buf[1], buf[0], buf[2]))
    with pytest.raises(ValueError, match=r"out\[2\] overlaps out\[0\]"):
        F.scaled_dot_product_attention_backward(out, q, q, q, out, lse, out=(buf[1], buf[2], buf[1]))


def test_empty(backend):
    z = np.zeros
    dq, dk, dv = F.scaled_dot_product_attention_backward(
        z((2, 4, 3)), np.ones((2, 4, 8)), z((2, 0, 8)), z((2, 0, 3)), z((2, 4, 3)), np.full((2, 4), -np.inf))
    assert dq.shape == (2, 4, 8) and dk.shape == (2, 0, 8) and dv.shape == (2, 0, 3) and np.all(dq == 0)
    out, lse = F.scaled_dot_product_attention(np.ones((2, 4, 8)), np.ones((2, 5, 8)), z((2, 5, 0)),
                                              return_lse=True)
    assert out.shape == (2, 4, 0)
    np.testing.assert_allclose(lse, np.log(5) + 8 / math.sqrt(8))


def test_bad_input(backend):
    q = np.ones((2, 4, 8), np.float32)
    out, lse = F.scaled_dot_product_attention(q, q, q, return_lse=True)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 4, 8\)"):
        F.scaled_dot_product_attention_backward(out[:, :3], q, q, q, out, lse)
    with pytest.raises(TypeError, match=r"lse must have the dtype of query \(float32\), got float64"):
        F.scaled_dot_product_attention_backward(out, q, q, q, out, lse.astype(np.float64))
    with pytest.raises(ValueError, match=r"lse must have shape \(2, 4\)"):
        F.scaled_dot_product_attention_backward(out, q, q, q, out, lse[:, :, None])
    with pytest.raises(TypeError, match="output must be a float32 or float64 array, got dtype int64"):
        F.scaled_dot_product_attention_backward(out, q, q, q, np.ones((2, 4, 8), np.int64), lse)


def test_results_do_not_depend_on_thread_count(rng):
    q, k, v = qkv(rng, (3, 2), 150, 300, 16, 16, np.float32)
    g = rng.standard_normal((3, 2, 150, 16)).astype(np.float32)
    results = at_thread_counts(lambda: run(g, q, k, v, causal=True))
    for a, b in zip(*results):  # one batch-head per thread: bitwise identical
        assert np.array_equal(a, b)


@pytest.mark.parametrize("causal", [False, True])
def test_against_torch_autograd(backend, rng, causal):
    torch = pytest.importorskip("torch")
    q, k, v = qkv(rng, (2, 3), 33, 33, 16, 8, np.float64)
    mask = rng.random((2, 1, 33, 33)) < 0.8
    mask[..., 0] = True  # keep every row non-empty, where torch's math path would give NaN
    g = rng.standard_normal((2, 3, 33, 8))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tmask = torch.tensor(mask & np.tril(np.ones((33, 33), bool)) if causal else mask)
    torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask).backward(torch.tensor(g))
    for got, t in zip(run(g, q, k, v, mask, causal), (tq, tk, tv)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-9, atol=1e-11)
