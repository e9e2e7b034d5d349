"""Grouped-query attention (enable_gqa) and sliding-window attention (window=W), forward,
backward and attention_weights, on both backends, against a float64 oracle that repeats the
key/value heads by hand (and torch's SDPA with enable_gqa when torch is installed)."""
import tracemalloc

import numpy as np
import pytest

import oracle
from fastattn import functional as F
from test_attention_backward import oracle_grads
from threads import at_thread_counts

DTYPES = [np.float32, np.float64]


def visible(Tq, Tk, window):
    """(Tq, Tk) bool: causal bottom-right, and within the last `window` keys (None: all)."""
    i, j = np.arange(Tq)[:, None] + (Tk - Tq), np.arange(Tk)[None, :]
    keep = j <= i
    return keep if window is None else keep & (j > i - window)


def gqa_inputs(rng, B, H, H_kv, Tq, Tk, D, Dv, dtype):
    return (rng.standard_normal((B, H, Tq, D)).astype(dtype),
            rng.standard_normal((B, H_kv, Tk, D)).astype(dtype),
            rng.standard_normal((B, H_kv, Tk, Dv)).astype(dtype))


def repeat_heads(a, H):
    return np.repeat(a, H // a.shape[-3], axis=-3)


def oracle_gqa(q, k, v, causal, window):
    """float64 output and gradients of attention on K/V repeated to H heads by hand."""
    H, Tq, Tk = q.shape[-3], q.shape[-2], k.shape[-2]
    mask = visible(Tq, Tk, window) if causal else None
    return oracle.attention(q, repeat_heads(k, H), repeat_heads(v, H), mask)


# (B, H, H_kv, Tq, Tk, D, Dv, window): odd sizes, decode (Tq = 1), several query/key tiles
CASES = [
    (1, 4, 1, 1, 1, 8, 8, None),         # multi-query, one token
    (2, 6, 2, 37, 53, 16, 19, None),
    (2, 6, 3, 37, 53, 16, 16, 7),
    (1, 4, 2, 1, 301, 32, 32, 64),       # decode against a cache, window shorter than it
    (1, 2, 1, 300, 300, 24, 24, 50),     # several query tiles; window inside them
    (1, 2, 2, 700, 700, 8, 8, 129),      # equal heads, window over key tiles
    (1, 3, 1, 130, 130, 8, 8, 1000),     # window longer than the sequence: plain causal
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_match_oracle(backend, rng, dtype, causal, case):
    B, H, H_kv, Tq, Tk, D, Dv, window = case
    if not causal:
        window = None
    q, k, v = gqa_inputs(rng, B, H, H_kv, Tq, Tk, D, Dv, dtype)
    out, lse = F.scaled_dot_product_attention(q, k, v, is_causal=causal, return_lse=True,
                                              enable_gqa=True, window=window)
    oracle.assert_close(out, oracle_gqa(q, k, v, causal, window), dtype, scale=np.abs(v).max())
    g = rng.standard_normal(out.shape).astype(dtype)
    dq, dk, dv = F.scaled_dot_product_attention_backward(g, q, k, v, out, lse, is_causal=causal,
                                                         enable_gqa=True, window=window)
    mask = visible(Tq, Tk, window) if causal else None
    wq, wk, wv = oracle_grads(g, q, repeat_heads(k, H), repeat_heads(v, H), mask, False)
    group = (B, H_kv, H // H_kv, Tk)
    wk, wv = wk.reshape(group + (D,)).sum(axis=2), wv.reshape(group + (Dv,)).sum(axis=2)
    for got, want in ((dq, wq), (dk, wk), (dv, wv)):
        oracle.assert_close(got, want, dtype, scale=np.abs(want).max() + 1, rtol_factor=10)


@pytest.mark.parametrize("window", [None, 5])
def test_attention_weights(backend, rng, window):
    q, k, _ = gqa_inputs(rng, 2, 6, 2, 9, 13, 8, 8, np.float64)
    w = F.attention_weights(q, k, is_causal=True, enable_gqa=True, window=window)
    want = oracle.attention_weights(q, repeat_heads(k, 6), visible(9, 13, window))
    oracle.assert_close(w, want, np.float64)


def test_torch_twin(backend, rng):
    torch = pytest.importorskip("torch")
    q, k, v = gqa_inputs(rng, 2, 8, 2, 33, 33, 16, 16, np.float64)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    want = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True, enable_gqa=True)
    g = rng.standard_normal(want.shape)
    want.backward(torch.tensor(g))
    out, lse = F.scaled_dot_product_attention(q, k, v, is_causal=True, return_lse=True, enable_gqa=True)
    grads = F.scaled_dot_product_attention_backward(g, q, k, v, out, lse, is_causal=True, enable_gqa=True)
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, t in zip(grads, (tq, tk, tv)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("window", [None, 40])
def test_results_do_not_depend_on_thread_count(rng, window):
    q, k, v = gqa_inputs(rng, 2, 4, 2, 150, 150, 16, 16, np.float64)
    g = rng.standard_normal(q.shape)

    def run():
        out, lse = F.scaled_dot_product_attention(q, k, v, is_causal=True, return_lse=True,
                                                  enable_gqa=True, window=window)
        return (out,) + F.scaled_dot_product_attention_backward(g, q, k, v, out, lse, is_causal=True,
                                                                enable_gqa=True, window=window)

    one, two = at_thread_counts(run)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_non_contiguous_inputs_and_cache_views(backend, rng):
    # q, k, v strided views of one projection (B, T, H + 2 H_kv, D), as a Llama's fused q/k/v is
    B, T, H, H_kv, D = 2, 21, 6, 2, 8
    x = rng.standard_normal((B, T, H + 2 * H_kv, D))
    q = x[:, :, :H].transpose(0, 2, 1, 3)
    k = x[:, :, H:H + H_kv].transpose(0, 2, 1, 3)
    v = x[:, :, H + H_kv:].transpose(0, 2, 1, 3)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, window=6)
    oracle.assert_close(out, oracle_gqa(q, k, v, True, 6), np.float64, scale=np.abs(v).max())
    # a KV cache (B, H_kv, max_len, D) read up to its length, with a padding mask
    cache = np.zeros((B, H_kv, 40, D))
    cache[:, :, :T] = k
    valid = np.ones((B, 1, 1, T), bool)
    valid[0, ..., :3] = False
    got = F.scaled_dot_product_attention(q[:, :, -1:], cache[:, :, :T], cache[:, :, :T], attn_mask=valid,
                                         is_causal=True, enable_gqa=True)
    kk = repeat_heads(k, H)
    want = oracle.attention(q[:, :, -1:], kk, kk, np.broadcast_to(valid, (B, H, 1, T)))
    oracle.assert_close(got, want, np.float64, scale=np.abs(k).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [None, 1, 20, 500])
def test_decode_with_query_heads_apart(backend, rng, dtype, window):
    # one query a head (a decode step, no mask: a group's query heads are one block's rows)
    # with the heads 2 D apart, against a cache read up to its length, and its lse
    B, H, H_kv, T, D = 2, 9, 3, 77, 16
    q = rng.standard_normal((B, 2 * H, 1, D)).astype(dtype)[:, ::2]
    cache = rng.standard_normal((2, B, H_kv, 100, D)).astype(dtype)
    k, v = cache[0, :, :, :T], cache[1, :, :, :T]
    out, lse = F.scaled_dot_product_attention(q, k, v, is_causal=True, return_lse=True,
                                              enable_gqa=True, window=window)
    oracle.assert_close(out, oracle_gqa(q, k, v, True, window), dtype, scale=np.abs(v).max())
    s = np.einsum("bhd,bhkd->bhk", q[:, :, 0].astype(np.float64), repeat_heads(k, H)) / np.sqrt(D)
    s[..., :T - (window or T)] = -np.inf
    want = np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1)) + s.max(-1)
    oracle.assert_close(lse[..., 0], want, dtype, scale=np.abs(want).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [None, 100])
@pytest.mark.parametrize("additive", [False, True])
def test_decode_with_masks_that_differ_within_a_group(backend, rng, dtype, window, additive):
    """One query a head against 700 keys, each
    query head of a group with a mask of its own: keys hidden from 300 on (the mask ends them
    early and hides nothing else), none, a random third, all (the row's output is 0 and its lse
    -inf), and from 650 on; with a window of 100 the first sees none either. D and Dv not multiples of 8."""
    B, H, H_kv, T, D, Dv = 2, 6, 2, 700, 20, 36
    q, k, v = gqa_inputs(rng, B, H, H_kv, 1, T, D, Dv, dtype)
    keep = np.ones((B, H, 1, T), bool)
    keep[:, 0, :, 300:] = False
    keep[:, 2] = rng.random((B, 1, T)) < 0.67
    keep[0, 3] = False
    keep[:, 5, :, 650:] = False
    mask = np.where(keep, rng.standard_normal(keep.shape), -np.inf) if additive else keep
    out, lse = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True, return_lse=True,
                                              enable_gqa=True, window=window)
    allowed = keep & visible(1, T, window)
    want = oracle.attention(q, repeat_heads(k, H), repeat_heads(v, H),
                            np.where(allowed, mask, -np.inf) if additive else allowed)
    none = ~allowed.any(-1)  # (B, H, 1): the rows that see no key (with the window: row 0 too)
    want[np.broadcast_to(none[..., None], want.shape)] = 0
    oracle.assert_close(out, want, dtype, scale=np.abs(v).max(), rtol_factor=10)
    s = np.einsum("bhd,bhkd->bhk", q[:, :, 0].astype(np.float64), repeat_heads(k, H)) / np.sqrt(D)
    s = np.where(allowed[:, :, 0], s + (mask[:, :, 0] if additive else 0), -np.inf)
    top = np.where(np.isfinite(s.max(-1)), s.max(-1), 0)
    with np.errstate(divide="ignore"):
        want_lse = np.log(np.exp(s - top[..., None]).sum(-1)) + top
    assert none[0, 3, 0] and (np.isneginf(lse) == none).all() and np.isfinite(lse[~none]).all()
    fin = np.isfinite(want_lse)
    oracle.assert_close(lse[..., 0][fin], want_lse[fin], dtype, scale=np.abs(want_lse[fin]).max())


@pytest.mark.parametrize("shapes", [
    ((2, 6, 5, 8), (2, 4, 5, 8)),     # 6 heads are not a multiple of 4
    ((2, 6, 5, 8), (3, 2, 5, 8)),     # batch differs
    ((6, 5, 8), (2, 2, 5, 8)),        # dims differ
])
def test_bad_gqa_shapes(backend, shapes):
    q, k = np.zeros(shapes[0]), np.zeros(shapes[1])
    with pytest.raises(ValueError, match=r"enable_gqa.*%s" % str(shapes[0]).replace("(", r"\(").replace(")", r"\)")):
        F.scaled_dot_product_attention(q, k, k, enable_gqa=True)


def test_unequal_heads_need_enable_gqa(backend):
    with pytest.raises(ValueError, match="enable_gqa=True"):
        F.scaled_dot_product_attention(np.zeros((1, 4, 3, 8)), np.zeros((1, 2, 3, 8)), np.zeros((1, 2, 3, 8)))


def test_bad_window(backend):
    q = np.zeros((1, 2, 3, 8))
    with pytest.raises(ValueError, match="is_causal"):
        F.scaled_dot_product_attention(q, q, q, window=2)
    with pytest.raises(ValueError, match="window must be >= 1"):
        F.scaled_dot_product_attention(q, q, q, is_causal=True, window=0)
    with pytest.raises(TypeError, match="window"):
        F.scaled_dot_product_attention(q, q, q, is_causal=True, window=2.0)


def test_no_repeated_copy_of_k_or_v(rng):
    """H = 32, H_kv = 4: the compiled forward and backward allocate no more than they do for K/V of
    32 heads (their tile workspaces, per thread), far less than one (B, 32, T, D) repeat of K
    (numpy's allocations are traced by tracemalloc)."""
    if "compiled" not in __import__("fastattn").available_backends():
        pytest.skip("compiled backend not built")
    import fastattn
    from fastattn import _threads
    if "compiled" not in fastattn.available_backends():
        pytest.skip("compiled backend not built")
    B, H, H_kv, T, D = 1, 32, 4, 1024, 64
    q, k, v = gqa_inputs(rng, B, H, H_kv, T, T, D, D, np.float32)
    repeat_bytes = B * H * T * D * 4

    def peak_bytes(k, v, gqa):
        out = np.empty_like(q)
        grads = tuple(np.empty_like(a) for a in (q, k, v))
        _, lse = F.scaled_dot_product_attention(q, k, v, is_causal=True, return_lse=True, enable_gqa=gqa, out=out)
        grad_out = out.copy()
        tracemalloc.start()
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa, out=out)
        F.scaled_dot_product_attention_backward(grad_out, q, k, v, out, lse, is_causal=True,
                                                enable_gqa=gqa, out=grads)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    with fastattn.use_backend("compiled"):
        full = peak_bytes(np.repeat(k, H // H_kv, axis=1), np.repeat(v, H // H_kv, axis=1), False)
        peak = peak_bytes(k, v, True)
    assert peak <= full + repeat_bytes // 16, (peak, full, repeat_bytes)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [20, 100, 128, 300])
def test_window_with_masks_over_several_tiles(backend, rng, dtype, window):
    """The window's leading edge (computed in row groups on the compiled backend) with a padding
    mask that ends the keys early (row 0) and an additive mask with -inf entries (row 1)."""
    B, H, H_kv, T, D = 2, 4, 2, 400, 16
    q, k, v = gqa_inputs(rng, B, H, H_kv, T, T, D, D, dtype)
    mask = rng.standard_normal((B, 1, T, T))
    mask[rng.random(mask.shape) < 0.1] = -np.inf
    mask[0, :, :, 350:] = -np.inf  # padding: the last 50 keys of row 0
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True, enable_gqa=True, window=window)
    keep = visible(T, T, window)
    kk, vv = repeat_heads(k, H), repeat_heads(v, H)
    want = oracle.attention(q, kk, vv, np.where(keep, mask, -np.inf))
    oracle.assert_close(got, want, dtype, scale=np.abs(v).max(), rtol_factor=10)
