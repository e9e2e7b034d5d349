"""nn.MultiheadAttention against torch.nn.MultiheadAttention (weights copied, float64) and finite
differences: every mask kind, both layouts, bias on and off, self / cross / separate inputs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastattn
import oracle
from fastattn import nn
from nn_check import assert_param_grads_match, copy_to_torch, gradcheck

E, H, N, L, S = 8, 2, 3, 5, 4
TOL = dict(rtol=1e-9, atol=1e-11)


def _masks(kind, L, S, rng):
    """(our kwargs, torch's kwargs) for a mask kind; every query keeps key 0 visible (torch
    gives NaN for a row that sees nothing)."""
    blocked = rng.random((L, S)) < 0.4
    blocked[:, 0] = False
    pad = np.zeros((N, S), bool)
    pad[0, -1] = pad[2, 1:] = True
    causal = ~np.tri(L, S, dtype=bool)
    if kind == "none":
        return {}, {}
    if kind == "key_padding":
        return dict(key_padding_mask=pad), dict(key_padding_mask=pad)
    if kind == "key_padding_float":
        f = np.where(pad, -np.inf, rng.standard_normal(pad.shape))
        return dict(key_padding_mask=f), dict(key_padding_mask=f)
    if kind == "bool":
        return dict(attn_mask=blocked), dict(attn_mask=blocked)
    if kind == "float":
        f = np.where(blocked, -np.inf, rng.standard_normal((L, S)))
        return dict(attn_mask=f), dict(attn_mask=f)
    if kind == "bool3d":
        b = rng.random((N * H, L, S)) < 0.4
        b[..., 0] = False
        return dict(attn_mask=b), dict(attn_mask=b)
    if kind == "causal":  # torch needs the mask with its is_causal hint; we need none
        return dict(is_causal=True), dict(attn_mask=causal, is_causal=True)
    if kind == "causal+bool+padding":
        p = pad.copy()
        p[:, 0] = False
        return (dict(is_causal=True, attn_mask=blocked, key_padding_mask=p),
                dict(attn_mask=blocked | causal, key_padding_mask=p))
    raise AssertionError(kind)


def _compare(torch, ours, q, k, v, our_kw, their_kw, inputs, batch_first, need_weights=False, average=True):
    theirs = torch.nn.MultiheadAttention(ours.embed_dim, ours.num_heads, bias=ours.in_proj_bias is not None,
                                         add_bias_kv=ours.bias_k is not None, add_zero_attn=ours.add_zero_attn,
                                         kdim=ours.kdim, vdim=ours.vdim, batch_first=batch_first,
                                         dtype=torch.float64)
    copy_to_torch(ours, theirs)
    ours.zero_grad()
    tq = torch.tensor(q, requires_grad=True)
    tk = tq if inputs == "self" else torch.tensor(k, requires_grad=True)
    tv = tk if inputs in ("self", "cross") else torch.tensor(v, requires_grad=True)
    their_kw = {name: torch.tensor(m) for name, m in their_kw.items() if name != "is_causal"} | (
        {"is_causal": True} if their_kw.get("is_causal") else {})
    if inputs == "self":
        k = v = q
    elif inputs == "cross":
        v = k
    out, w = ours(q, k, v, need_weights=need_weights, average_attn_weights=average, **our_kw)
    tout, tw = theirs(tq, tk, tv, need_weights=need_weights, average_attn_weights=average, **their_kw)
    np.testing.assert_allclose(out, tout.detach().numpy(), **TOL)
    if need_weights:
        np.testing.assert_allclose(w, tw.detach().numpy(), **TOL)
    else:
        assert w is None
    g = np.random.default_rng(7).standard_normal(out.shape)
    dq, dk, dv = ours.backward(g)
    tout.backward(torch.tensor(g))
    if inputs == "self":
        np.testing.assert_allclose(dq + dk + dv, tq.grad.numpy(), **TOL)
    elif inputs == "cross":
        np.testing.assert_allclose(dq, tq.grad.numpy(), **TOL)
        np.testing.assert_allclose(dk + dv, tk.grad.numpy(), **TOL)
    else:
        for ours_g, t in ((dq, tq), (dk, tk), (dv, tv)):
            np.testing.assert_allclose(ours_g, t.grad.numpy(), **TOL)
    assert_param_grads_match(ours, theirs)


def _inputs(rng, batch_first, L, S, kdim=E, vdim=E):
    def make(T, D):
        return rng.standard_normal((N, T, D) if batch_first else (T, N, D))
    return make(L, E), make(S, kdim), make(S, vdim)


MASKS = ["none", "key_padding", "key_padding_float", "bool", "float", "bool3d", "causal", "causal+bool+padding"]


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("inputs", ["self", "cross", "separate"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_against_torch(backend, mask, inputs, batch_first):
    _against_torch(mask, inputs, batch_first, True)


@pytest.mark.parametrize("mask", ["none", "causal+bool+padding"])
@pytest.mark.parametrize("inputs", ["self", "cross", "separate"])
def test_without_bias_against_torch(backend, mask, inputs):
    _against_torch(mask, inputs, False, False)


def _against_torch(mask, inputs, batch_first, bias):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(hash((mask, inputs, batch_first, bias)) % 2**32)
    Lk = L if inputs == "self" else S
    q, k, v = _inputs(rng, batch_first, L, Lk)
    our_kw, their_kw = _masks(mask, L, Lk, rng)
    ours = nn.MultiheadAttention(E, H, bias=bias, batch_first=batch_first, dtype=np.float64, seed=1)
    if bias:  # (torch initialises them to 0: make them count)
        ours.in_proj_bias.data[...] = rng.standard_normal(3 * E)
    _compare(torch, ours, q, k, v, our_kw, their_kw, inputs, batch_first)


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("mask", ["none", "key_padding", "causal"])
def test_weights_against_torch(backend, average, mask, rng):
    torch = pytest.importorskip("torch")
    q, _, _ = _inputs(rng, True, L, L)
    our_kw, their_kw = _masks(mask, L, L, rng)
    ours = nn.MultiheadAttention(E, H, batch_first=True, dtype=np.float64, seed=2)
    _compare(torch, ours, q, q, q, our_kw, their_kw, "self", True, need_weights=True, average=average)


@pytest.mark.parametrize("options", [dict(kdim=3, vdim=5), dict(kdim=3), dict(add_bias_kv=True),
                                     dict(add_zero_attn=True), dict(add_bias_kv=True, add_zero_attn=True)])
@pytest.mark.parametrize("mask", ["none", "key_padding", "bool", "causal+bool+padding"])
def test_options_against_torch(backend, options, mask, rng):
    torch = pytest.importorskip("torch")
    kdim, vdim = options.get("kdim", E), options.get("vdim", E)
    q, k, v = _inputs(rng, False, L, S, kdim, vdim)
    our_kw, their_kw = _masks(mask, L, S, rng)
    ours = nn.MultiheadAttention(E, H, dtype=np.float64, seed=3, **options)
    ours.in_proj_bias.data[...] = rng.standard_normal(3 * E)
    names = [n for n, _ in ours.named_parameters()]
    if "kdim" in options:
        assert names[:3] == ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    _compare(torch, ours, q, k, v, our_kw, their_kw, "separate", False, need_weights=True)


@pytest.mark.parametrize("need_weights", [True, False])
def test_unbatched_against_torch(backend, need_weights, rng):
    torch = pytest.importorskip("torch")
    ours = nn.MultiheadAttention(E, H, dtype=np.float64, seed=4)
    x = rng.standard_normal((L, E))
    pad = np.zeros(L, bool)
    pad[-2:] = True
    for average in (True, False):
        _compare(torch, ours, x, x, x, dict(key_padding_mask=pad), dict(key_padding_mask=pad), "self", False,
                 need_weights=need_weights, average=average)
    m3 = rng.random((H, L, S)) < 0.3
    m3[..., 0] = False
    k = rng.standard_normal((S, E))
    _compare(torch, ours, x, k, k, dict(attn_mask=m3), dict(attn_mask=m3), "cross", False, need_weights=need_weights)


def test_dropout_path_against_torch_when_nothing_drops(backend, rng):
    # p = 1e-300 takes the unfused dropout path, but drops nothing (and scales by 1): it must
    # then agree with torch without dropout, gradients included
    torch = pytest.importorskip("torch")
    ours = nn.MultiheadAttention(E, H, dropout=1e-300, batch_first=True, dtype=np.float64, seed=5).train()
    q, k, _ = _inputs(rng, True, L, S)
    our_kw, their_kw = _masks("causal+bool+padding", L, S, rng)
    _compare(torch, ours, q, k, k, our_kw, their_kw, "cross", True, need_weights=True)


def test_dropout_drops_in_train_mode_and_not_in_eval(rng):
    m = nn.MultiheadAttention(E, H, dropout=0.5, dtype=np.float64, seed=6)
    x = rng.standard_normal((L, N, E))
    _, w = m(x, x, x, average_attn_weights=False)
    assert (w == 0).mean() > 0.3 and np.allclose(w.sum(-1).mean(), 1, atol=0.3)
    m.eval()
    out, w = m(x, x, x, average_attn_weights=False)
    assert not (w == 0).any() and np.allclose(w.sum(-1), 1)
    out2, _ = nn.MultiheadAttention(E, H, dtype=np.float64, seed=6)(x, x, x)
    np.testing.assert_allclose(out, out2, rtol=1e-12)  # eval = no dropout


def test_finite_differences_reference(rng):
    with fastattn.use_backend("reference"):
        x = rng.standard_normal((L, N, E))
        k = rng.standard_normal((S, N, 3))
        v = rng.standard_normal((S, N, 5))
        pad = np.zeros((N, L), bool)
        pad[1, -1] = True
        m = nn.MultiheadAttention(E, H, dtype=np.float64, seed=0)
        gradcheck(m, [x, x, x], call=lambda m, q, k, v: m(q, k, v, key_padding_mask=pad, is_causal=True))
        m = nn.MultiheadAttention(E, H, kdim=3, vdim=5, add_bias_kv=True, add_zero_attn=True, dtype=np.float64, seed=1)
        gradcheck(m, [x, k, v], call=lambda m, q, k, v: m(q, k, v, attn_mask=np.tri(L, S) - 1))
        m = nn.MultiheadAttention(E, H, dropout=0.3, dtype=np.float64, seed=2)  # the unfused path

        def reseed():
            m._rng = np.random.default_rng(9)
        gradcheck(m, [x, x, x], reseed=reseed)


def test_fully_masked_rows_give_zeros_and_no_nan(backend, rng):
    m = nn.MultiheadAttention(E, H, batch_first=True, dtype=np.float64, seed=0)
    m.out_proj.bias.data[...] = rng.standard_normal(E)
    x = rng.standard_normal((N, L, E))
    pad = np.zeros((N, L), bool)
    pad[0] = True  # batch 0 sees no key at all
    blocked = np.zeros((L, L), bool)
    blocked[2] = True  # and query 2 of every batch sees none
    out, w = m(x, x, x, key_padding_mask=pad, attn_mask=blocked)
    assert np.isfinite(out).all() and np.isfinite(w).all()
    np.testing.assert_allclose(out[0], np.broadcast_to(m.out_proj.bias.data, (L, E)), rtol=1e-12)
    np.testing.assert_allclose(out[:, 2], np.broadcast_to(m.out_proj.bias.data, (N, E)), rtol=1e-12)
    assert not w[0].any() and not w[:, 2].any()
    dq, dk, dv = m.backward(np.ones_like(out))
    assert all(np.isfinite(d).all() for d in (dq, dk, dv))
    assert not dq[0].any() and not dk[0].any() and not dv[0].any() and not dq[:, 2].any()
    assert all(np.isfinite(p.grad).all() for p in m.parameters())
    torch = pytest.importorskip("torch")  # and the rows that see something agree with torch
    keep = np.ones((L, L), bool)
    keep[2] = False
    theirs = copy_to_torch(m, torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64))
    tx = torch.tensor(x[1:])
    tout, _ = theirs(tx, tx, tx, key_padding_mask=torch.tensor(pad[1:]), attn_mask=torch.tensor(blocked))
    np.testing.assert_allclose(out[1:][:, keep[:, 0]], tout.detach().numpy()[:, keep[:, 0]], **TOL)


def test_float32_runs_close_to_float64(backend, rng):
    m32 = nn.MultiheadAttention(E, H, seed=0)
    m64 = nn.MultiheadAttention(E, H, dtype=np.float64, seed=0)
    x = rng.standard_normal((L, N, E))
    out32, _ = m32(x.astype(np.float32), x.astype(np.float32), x.astype(np.float32), is_causal=True)
    out64, _ = m64(x, x, x, is_causal=True)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    d32 = m32.backward(np.ones_like(out32))
    assert all(d.dtype == np.float32 for d in d32)


def test_sizes_one(backend, rng):
    m = nn.MultiheadAttention(4, 4, dtype=np.float64, seed=0)  # head size 1
    x = rng.standard_normal((1, 1, 4))
    out, w = m(x, x, x, is_causal=True)
    assert out.shape == (1, 1, 4) and w.shape == (1, 1, 1) and np.allclose(w, 1)
    assert m.backward(np.ones_like(out))[0].shape == x.shape


def test_bad_input():
    m = nn.MultiheadAttention(E, H, dtype=np.float64, seed=0)
    x = np.zeros((L, N, E))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        nn.MultiheadAttention(6, 4)
    with pytest.raises(ValueError, match="embed_dim must be >= 1"):
        nn.MultiheadAttention(0, 1)
    with pytest.raises(ValueError, match="query must be 3-D"):
        m(x[None], x[None], x[None])
    with pytest.raises(ValueError, match="query must have last dimension 8"):
        m(x[..., :4], x, x)
    with pytest.raises(ValueError, match="key has 2 dims"):
        m(x, x[0], x[0])
    with pytest.raises(ValueError, match="one batch size"):
        m(x, x[:, :2], x[:, :2])
    with pytest.raises(ValueError, match="must have one length"):
        m(x, x, x[:2])
    with pytest.raises(TypeError, match="query has dtype float32, the module float64"):
        m(x.astype(np.float32), x, x)
    with pytest.raises(TypeError, match="key_padding_mask must be bool.*integer mask is ambiguous"):
        m(x, x, x, key_padding_mask=np.zeros((N, L), np.int64))
    with pytest.raises(TypeError, match="attn_mask must be bool"):
        m(x, x, x, attn_mask=np.zeros((L, L), np.int32))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(3, 5\)"):
        m(x, x, x, key_padding_mask=np.zeros((N, L + 1), bool))
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(5, 5\) or \(6, 5, 5\)"):
        m(x, x, x, attn_mask=np.zeros((L, L + 1), bool))
    with pytest.raises(RuntimeError, match="needs a forward"):
        m.backward(x)


@pytest.mark.parametrize("shapes", [((5, 0, E), (4, 0, E)), ((0, 3, E), (4, 3, E)), ((5, 3, E), (0, 3, E))],
                         ids=["no batch", "no query", "no key"])
def test_sizes_zero(backend, shapes):
    m = nn.MultiheadAttention(E, H, dtype=np.float64, seed=0)
    m.out_proj.bias.data[...] = 1
    q, k = np.ones(shapes[0]), np.ones(shapes[1])
    out, w = m(q, k, k)
    assert out.shape == q.shape and w.shape == (q.shape[1], q.shape[0], k.shape[0])
    assert np.all(out == 1)  # no key: the attention is 0, the output out_proj.bias
    grads = m.backward(np.ones_like(out))
    assert [g.shape for g in grads] == [q.shape, k.shape, k.shape]
    assert all(np.isfinite(p.grad).all() for p in m.parameters())


# -- a property test against an independent float64 oracle (no torch) ---------------------------
@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 3), L=st.integers(1, 7), S=st.integers(1, 7), H=st.sampled_from([1, 2, 4]),
       batch_first=st.booleans(), causal=st.booleans(), padded=st.booleans(), seed=st.integers(0, 2**31),
       backend=st.sampled_from(fastattn.available_backends()))
def test_matches_a_float64_oracle(N, L, S, H, batch_first, causal, padded, seed, backend):
    rng = np.random.default_rng(seed)
    E = 4 * H
    m = nn.MultiheadAttention(E, H, batch_first=batch_first, dtype=np.float64, seed=seed)
    m.in_proj_bias.data[...] = rng.standard_normal(3 * E)
    q_in = rng.standard_normal((N, L, E))  # batch-first here; transposed for the module if not
    kv_in = rng.standard_normal((N, S, E))
    pad = (rng.random((N, S)) < 0.3) if padded else np.zeros((N, S), bool)
    W, b = m.in_proj_weight.data, m.in_proj_bias.data

    def heads(x, rows):  # (N, T, E) -> (N, H, T, hs)
        p = x @ W[rows].T + b[rows]
        return p.reshape(x.shape[0], x.shape[1], H, 4).transpose(0, 2, 1, 3)

    q, k, v = heads(q_in, slice(0, E)), heads(kv_in, slice(E, 2 * E)), heads(kv_in, slice(2 * E, 3 * E))
    allowed = ~pad[:, None, None, :]
    if causal:  # top-left: query i sees keys j <= i
        allowed = allowed & np.tri(L, S, dtype=bool)
    att = oracle.attention(q, k, v, np.broadcast_to(allowed, (N, H, L, S)))
    att = np.where(np.broadcast_to(allowed, (N, H, L, S)).any(-1, keepdims=True), att, 0)  # rows that see nothing
    want = att.transpose(0, 2, 1, 3).reshape(N, L, E) @ m.out_proj.weight.data.T + m.out_proj.bias.data
    if not batch_first:
        q_in, kv_in, want = (a.transpose(1, 0, 2) for a in (q_in, kv_in, want))
    with fastattn.use_backend(backend):
        out, _ = m(q_in, kv_in, kv_in, key_padding_mask=pad, is_causal=causal, need_weights=False)
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)


def test_non_contiguous_inputs(backend, rng):
    m = nn.MultiheadAttention(E, H, batch_first=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((L, N, E)).transpose(1, 0, 2)  # (N, L, E), strided
    kv = rng.standard_normal((N, 2 * S, E))[:, ::2]  # every other row
    out, w = m(x, kv, kv, is_causal=False)
    grads = m.backward(np.ones_like(out))
    m.zero_grad()
    out2, w2 = m(x.copy(), kv.copy(), kv.copy())
    grads2 = m.backward(np.ones_like(out))
    np.testing.assert_allclose(out, out2, rtol=1e-13)
    np.testing.assert_allclose(w, w2, rtol=1e-13)
    for a, b in zip(grads, grads2):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
