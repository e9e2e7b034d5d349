"""Backend differences decided (issue 13, item 12): rows that see no key are 0 on both backends
whatever q or the hidden mask entries hold; a lone surrogate in a text is a clear ValueError."""
import numpy as np
import pytest

import oracle
from fastattn import functional as F


def visible_rows_oracle(q, k, v, mask, causal, empty):
    """The oracle on q with the rows that see no key zeroed (their output is 0 anyway)."""
    q = q.copy()
    q[..., empty, :] = 0
    want = oracle.attention(q, k, v, mask, causal)
    want[..., empty, :] = 0
    return want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how", ["bool", "float", "causal"])
def test_a_row_that_sees_no_key_is_zero_even_when_q_is_nan(backend, rng, dtype, how):
    Tq, Tk = (3, 2) if how == "causal" else (3, 5)
    q, k, v = (rng.standard_normal((2, 2, T, 8)).astype(dtype) for T in (Tq, Tk, Tk))
    empty = 0 if how == "causal" else 1  # causal with Tq > Tk: query 0 sees keys j <= -1, none
    q[..., empty, :] = np.nan
    mask = None
    if how == "bool":
        mask = rng.standard_normal((Tq, Tk)) > -1
        mask[empty] = False
        mask[:, 0] = mask[:, 0] | (np.arange(Tq) != empty)
    elif how == "float":
        mask = rng.standard_normal((Tq, Tk)).astype(dtype)
        mask[empty] = -np.inf
    out, lse = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=how == "causal", return_lse=True)
    assert np.all(out[..., empty, :] == 0) and np.all(lse[..., empty] == -np.inf)
    safe = np.where(np.isnan(q), 0, q)
    oracle.assert_close(out, visible_rows_oracle(safe, k, v, mask, how == "causal", empty), dtype,
                        scale=np.abs(v).max())
    grads = F.scaled_dot_product_attention_backward(np.ones_like(out), q, k, v, out, lse, attn_mask=mask,
                                                    is_causal=how == "causal")
    assert np.all(grads[0][..., empty, :] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_in_a_float_mask_entry_that_causality_hides(backend, rng, dtype):
    # the causal limit hides the key: what the mask adds there does not matter
    q, k, v = (rng.standard_normal((1, 2, 6, 4)).astype(dtype) for _ in range(3))
    mask = rng.standard_normal((6, 6)).astype(dtype)
    hidden = np.triu(np.ones((6, 6), bool), k=1)
    with_nan = np.where(hidden, np.nan, mask).astype(dtype)
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=with_nan, is_causal=True)
    oracle.assert_close(got, oracle.attention(q, k, v, np.where(hidden, 0, mask), causal=True), dtype,
                        scale=np.abs(v).max())


@pytest.mark.parametrize("g0", [1e-30, 1e-20, 3.0])
def test_float32_adamw_with_eps_0_agrees_across_backends(g0):
    # in float32 a tiny gradient's square underflows: both backends compute in double, so the
    # step is about lr (not m / 0 = inf, which the reference gave)
    import fastattn
    want = None
    for name in fastattn.available_backends():
        with fastattn.use_backend(name):
            p, g, m, v = np.ones(3, np.float32), np.full(3, g0, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32)
            F.adamw_step(p, g, m, v, 1, lr=1e-3, eps=0.0)
        # step 1: m_hat = g, v_hat = g^2 exactly, so the step is lr * g / |g| = lr
        np.testing.assert_allclose(p, 1 - 1e-3, rtol=1e-6)
        if want is not None:
            np.testing.assert_allclose((p, m, v), want, rtol=1e-6)
        want = (p, m, v)


tokenizers = pytest.importorskip("tokenizers")
from test_encoder import model_dir  # noqa: E402,F401


def test_a_lone_surrogate_is_a_value_error(model_dir):
    from fastattn import SentenceEncoder
    enc = SentenceEncoder(str(model_dir))
    with pytest.raises(ValueError, match=r"texts\[1\] is not valid Unicode: a lone surrogate '\\ud800' at position 3"):
        enc.encode(["the king", "the\ud800"])
    with pytest.raises(ValueError, match="text is not valid Unicode"):
        enc.tokenizer.encode("\udcff")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("broadcast", [False, True])
def test_masked_softmax_hides_nan_under_an_added_minus_inf(backend, rng, dtype, broadcast):
    x = rng.standard_normal((3, 4, 6)).astype(dtype)
    x[:, 1] = np.nan  # row 1 is hidden entirely below: zeros, not NaN
    x[:, 2, 5] = np.nan  # one hidden entry of row 2
    mask = np.zeros((4, 6), dtype)
    mask[1] = -np.inf
    mask[2, 5] = -np.inf
    if broadcast:  # (4, 1): a mask value per row, the same for every column (stride 0)
        mask, x = mask[:, :1].copy(), x.copy()
        x[:, 2, 5] = 0.5
    got = F.masked_softmax(x, mask)
    want = oracle.softmax(np.where(np.isnan(x), 0, x), mask)
    oracle.assert_close(got, want, dtype)
    assert np.all(got[:, 1] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("Tq", [1, 5])  # (1: the matrix-vector path)
def test_scale_0_makes_the_scores_0_whatever_q_and_k_hold(backend, rng, dtype, Tq):
    q, k, v = (rng.standard_normal((2, T, 4)).astype(dtype) for T in (Tq, 6, 6))
    q[0, 0, 1], k[1, 2, 3], q[1, -1, 0] = np.inf, -np.inf, np.nan
    out, lse = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.0, return_lse=True)
    # uniform weights over the visible keys: query i (of the last Tq positions) sees 6 - Tq + i + 1
    want = oracle.attention(np.zeros_like(q), np.zeros_like(k), v, causal=True, scale=0.0)
    oracle.assert_close(out, want, dtype, scale=np.abs(v).max())
    g = rng.standard_normal(out.shape).astype(dtype)
    dq, dk, dv = F.scaled_dot_product_attention_backward(g, q, k, v, out, lse, is_causal=True, scale=0.0)
    assert np.all(dq == 0) and np.all(dk == 0)
    weights = oracle.attention_weights(np.zeros_like(q), np.zeros_like(k), causal=True, scale=0.0)
    oracle.assert_close(F.attention_weights(q, k, is_causal=True, scale=0.0), weights, dtype)
    oracle.assert_close(dv, np.swapaxes(weights, -1, -2) @ g.astype(np.float64), dtype, scale=np.abs(g).max())
