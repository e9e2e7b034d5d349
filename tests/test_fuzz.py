"""Random cases for every kernel and its backward, against float64 oracles, on both backends and
(compiled) at 1 and 2 threads, whose results must also be bitwise equal (issue 13, "keep it so").

Shapes include sizes 0 and 1 and Tq != Tk; masks come in every broadcastable shape, bool or
float; values are ordinary, tiny, huge or sprinkled with subnormals; inputs come in odd layouts
(Fortran order, negative strides, read-only, unaligned, strided). NaN and inf are fuzzed where a
result is defined for them (NaN stays in the rows it is in; -inf logits and masks).

A few hundred cases by default; `pytest --fuzz-long tests/test_fuzz.py` (or FASTATTN_FUZZ_LONG=1)
runs 1500 per test, over 10,000 in all.
Each case draws its shapes and kinds from hypothesis and its values from a seed it draws."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastattn
import oracle
from fastattn import _threads
from fastattn import functional as F
from test_cross_entropy import oracle_loss_and_grad
from test_row_backward import gelu_grad_oracle, layer_norm_grad_oracle, softmax_grad_oracle

LONG = os.environ.get("FASTATTN_FUZZ_LONG", "").strip() not in ("", "0")
fuzz = settings(max_examples=1500 if LONG else 50, deadline=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = ("c", "fortran", "negative", "readonly", "unaligned", "strided")


def runs(fn):
    """[(label, fn())] on the reference backend and on the compiled one at 1 and 2 threads (every
    call threaded, however small); the compiled results must be bitwise equal across counts."""
    out = []
    with fastattn.use_backend("reference"):
        out.append(("reference", fn()))
    if "compiled" not in fastattn.available_backends():
        return out
    before, min_work, adaptive = fastattn.get_num_threads(), _threads.MIN_WORK_PER_THREAD, _threads.ADAPTIVE
    _threads.MIN_WORK_PER_THREAD = 1
    try:
        with fastattn.use_backend("compiled"):
            for n in (1, 2):
                fastattn.set_num_threads(n, adaptive=False)
                out.append((f"compiled-{n}", fn()))
    finally:
        fastattn.set_num_threads(before, adaptive=adaptive)
        _threads.MIN_WORK_PER_THREAD = min_work
    compiled = [r for label, r in out if label.startswith("compiled")]
    for a, b in zip(compiled, compiled[1:]):
        for x, y in zip(_flat(a), _flat(b)):
            np.testing.assert_array_equal(x, y, err_msg="the result depends on the thread count")
    return out


def _flat(r):
    if r is None:
        return []
    if isinstance(r, (tuple, list)):
        return [x for y in r for x in _flat(y)]
    return [np.asarray(r)]


def in_layout(a, kind):
    """a's values in another memory layout (same shape, dtype and values)."""
    a = np.asarray(a)
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "negative" and a.ndim:
        flip = (slice(None, None, -1),) * a.ndim
        return a[flip].copy()[flip]
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if kind == "unaligned" and a.size and a.itemsize > 1:
        b = np.frombuffer(bytearray(a.nbytes + 1), dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
        b[...] = a
        return b
    if kind == "strided" and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    return a.copy()


def values(rng, shape, dtype, kind):
    """Random values of a kind: ordinary, tiny, huge, or with subnormals sprinkled in."""
    x = rng.standard_normal(shape)
    if kind == "tiny":
        x = x * 1e-20
    elif kind == "huge":
        x = x * (1e30 if dtype == np.float64 else 1e15)
    elif kind == "subnormal":
        tiny = np.finfo(dtype).smallest_subnormal
        x = np.where(rng.random(shape) < 0.3, tiny * rng.integers(-3, 4, shape), x)
    return x.astype(dtype)


def mask_shape(draw, full):
    """A shape that broadcasts to `full`: some leading dims dropped, each other dim 1 or full."""
    drop = draw(st.integers(0, len(full)))
    return tuple(n if draw(st.booleans()) else 1 for n in full[drop:])


def max_abs(a):
    a = np.asarray(a, np.float64)
    return float(np.abs(a).max()) if a.size else 1.0


# ---- attention ---------------------------------------------------------------------------

def attention_grads_oracle(g, q, k, v, mask, causal, scale):
    """float64 gradients of softmax(q k^T scale + mask) v: P, dV = P^T g, dP = g v^T,
    dS = P (dP - rowsum(P dP)), dq = dS k scale, dk = dS^T q scale."""
    g, q, k, v = (np.asarray(a, np.float64) for a in (g, q, k, v))
    P = oracle.attention_weights(q, k, mask, causal, scale)
    dV = np.swapaxes(P, -1, -2) @ g
    dP = g @ np.swapaxes(v, -1, -2)
    dS = P * (dP - (P * dP).sum(-1, keepdims=True))
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, dV


@fuzz
@given(data=st.data(), dtype=DTYPES, causal=st.booleans(), seed=st.integers(0, 2 ** 32 - 1),
       mask_kind=st.sampled_from([None, "bool", "float"]), layout=st.sampled_from(LAYOUTS),
       q_kind=st.sampled_from(["normal", "tiny", "subnormal"]), v_kind=st.sampled_from(["normal", "huge"]))
def test_attention(data, dtype, causal, seed, mask_kind, layout, q_kind, v_kind):
    draw = data.draw
    lead = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    Tq, Tk, D, Dv = draw(st.integers(0, 9)), draw(st.integers(0, 9)), draw(st.integers(1, 8)), draw(st.integers(0, 8))
    rng = np.random.default_rng(seed)
    q, k = values(rng, lead + (Tq, D), dtype, q_kind), values(rng, lead + (Tk, D), dtype, q_kind)
    v, g = values(rng, lead + (Tk, Dv), dtype, v_kind), values(rng, lead + (Tq, Dv), dtype, "normal")
    mask = None
    if mask_kind is not None:
        shape = mask_shape(draw, lead + (Tq, Tk))
        mask = rng.random(shape) < 0.7 if mask_kind == "bool" else \
            np.where(rng.random(shape) < 0.2, -np.inf, rng.standard_normal(shape)).astype(dtype)
        if draw(st.booleans()):  # a stride-0 view of the full shape (read in place)
            mask = np.broadcast_to(mask, lead + (Tq, Tk))
    scale = draw(st.sampled_from([None, 0.3, 2.0]))
    s = 1 / np.sqrt(D) if scale is None else scale
    qs, ks, vs = (in_layout(a, layout) for a in (q, k, v))
    if q.size and k.size:
        want = oracle.attention(q, k, v, mask, causal, s)
        want_grads = attention_grads_oracle(g, q, k, v, mask, causal, s)
    else:  # no query or no key: zeros (the oracle's reductions take no empty row)
        want = np.zeros(lead + (Tq, Dv))
        want_grads = (np.zeros(q.shape), np.zeros(k.shape), np.zeros(v.shape))
    for label, (out, lse, grads) in runs(lambda: _attention_fwd_bwd(qs, ks, vs, g, mask, causal, scale)):
        oracle.assert_close(out, want, dtype, scale=max_abs(v), rtol_factor=20)
        for got, ref in zip(grads, want_grads):
            oracle.assert_close(got, ref, dtype, scale=max_abs(ref) + max_abs(v) * max_abs(g), rtol_factor=100)


def _attention_fwd_bwd(q, k, v, g, mask, causal, scale):
    out, lse = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale,
                                              return_lse=True)
    return out, lse, F.scaled_dot_product_attention_backward(g, q, k, v, out, lse, attn_mask=mask,
                                                             is_causal=causal, scale=scale)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (the reference's NaN arithmetic)
@fuzz
@given(dtype=DTYPES, causal=st.booleans(), seed=st.integers(0, 2 ** 32 - 1),
       Tq=st.integers(1, 9), Tk=st.integers(1, 9), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_attention_nan_stays_in_its_row(dtype, causal, seed, Tq, Tk, bad):
    # a NaN or inf in query row r reaches output row r only (NaN there, or 0 if r sees no key);
    # the backends may differ in that row for inf, but not elsewhere
    rng = np.random.default_rng(seed)
    q, k, v = (values(rng, (2, T, 4), dtype, "normal") for T in (Tq, Tk, Tk))
    r = int(rng.integers(0, Tq))
    q[1, r, int(rng.integers(0, 4))] = bad
    clean = q.copy()
    clean[1, r] = 0
    want = oracle.attention(clean, k, v, causal=causal)
    sees_a_key = not causal or r + Tk - Tq >= 0
    for label, out in runs(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)):
        rows = np.ones(Tq, bool)
        rows[r] = False
        oracle.assert_close(out[1, rows], want[1, rows], dtype, scale=max_abs(v), rtol_factor=20)
        oracle.assert_close(out[0], want[0], dtype, scale=max_abs(v), rtol_factor=20)
        if not sees_a_key:
            assert (out[1, r] == 0).all(), label
        elif np.isnan(bad):  # (an inf score may be -inf: that key is then hidden, not NaN)
            assert np.isnan(out[1, r]).all(), label


# ---- softmax, layer norm, gelu -----------------------------------------------------------

@fuzz
@given(data=st.data(), dtype=DTYPES, seed=st.integers(0, 2 ** 32 - 1), layout=st.sampled_from(LAYOUTS),
       mask_kind=st.sampled_from([None, "bool", "float"]), kind=st.sampled_from(["normal", "tiny", "subnormal"]))
def test_masked_softmax(data, dtype, seed, layout, mask_kind, kind):
    draw = data.draw
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    scale = draw(st.sampled_from([1.0, 0.5, 3.0]))
    rng = np.random.default_rng(seed)
    x = values(rng, shape, dtype, kind) * dtype(4)
    g = values(rng, shape, dtype, "normal")
    mask = None
    if mask_kind is not None:
        ms = mask_shape(draw, shape)
        mask = rng.random(ms) < 0.7 if mask_kind == "bool" else \
            np.where(rng.random(ms) < 0.2, -np.inf, rng.standard_normal(ms)).astype(dtype)
    want = oracle.softmax(x, mask, scale, axis) if x.size else np.zeros(shape)
    xs = in_layout(x, layout)
    for label, (y, dx) in runs(lambda: _softmax_fwd_bwd(xs, g, mask, scale, axis)):
        oracle.assert_close(y, want, dtype, rtol_factor=10)
        if y.size:
            oracle.assert_close(dx, softmax_grad_oracle(g, y, scale, axis), dtype, scale=scale * max_abs(g),
                                rtol_factor=10)


def _softmax_fwd_bwd(x, g, mask, scale, axis):
    y = F.masked_softmax(x, mask, scale, axis)
    return y, F.masked_softmax_backward(g, y, scale, axis)


@fuzz
@given(data=st.data(), dtype=DTYPES, seed=st.integers(0, 2 ** 32 - 1), layout=st.sampled_from(LAYOUTS),
       kind=st.sampled_from(["normal", "huge", "subnormal"]), affine=st.booleans())
def test_layer_norm(data, dtype, seed, layout, kind, affine):
    draw = data.draw
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=2))) + (draw(st.integers(1, 40)),)
    rng = np.random.default_rng(seed)
    x = values(rng, shape, dtype, kind) + dtype(draw(st.sampled_from([0, 3])))
    C = shape[-1]
    w = values(rng, (C,), dtype, "normal") if affine else None
    b = values(rng, (C,), dtype, "normal") if affine else None
    g = values(rng, shape, dtype, "normal")
    want = oracle.layer_norm(x, w, b) if x.size else np.zeros(shape)
    xs = in_layout(x, layout)
    for label, (y, mean, rstd, grads) in runs(lambda: _layer_norm_fwd_bwd(xs, w, b, g)):
        # judged against how much one rounding of x moves xhat: |x| / std
        spread = max_abs(np.abs(x.astype(np.float64)) * np.asarray(rstd, np.float64)[..., None]) if x.size else 1
        oracle.assert_close(y, want, dtype, scale=spread * (1 if w is None else max_abs(w)) + (0 if b is None else max_abs(b)),
                            rtol_factor=50)
        want_dx, want_dw, want_db = layer_norm_grad_oracle(g, x, mean, rstd, w)
        # (dx is rstd times differences of dy = g w and xhat-weighted means: judged against both)
        oracle.assert_close(grads[0], want_dx, dtype, scale=max_abs(rstd) * max_abs(g) * (1 + spread)
                            * (1 if w is None else max_abs(w)), rtol_factor=50)
        oracle.assert_close(grads[2], want_db, dtype, scale=max_abs(g) * max(1, x.size // C), rtol_factor=50)


def _layer_norm_fwd_bwd(x, w, b, g):
    y, mean, rstd = F.layer_norm(x, w, b, return_stats=True)
    return y, mean, rstd, F.layer_norm_backward(g, x, mean, rstd, w)


@fuzz
@given(data=st.data(), dtype=DTYPES, seed=st.integers(0, 2 ** 32 - 1), layout=st.sampled_from(LAYOUTS),
       kind=st.sampled_from(["normal", "tiny", "huge", "subnormal"]), approximate=st.sampled_from(["none", "tanh"]))
def test_gelu(data, dtype, seed, layout, kind, approximate):
    shape = tuple(data.draw(st.lists(st.integers(0, 6), min_size=1, max_size=3)))
    rng = np.random.default_rng(seed)
    x = values(rng, shape, dtype, kind) * dtype(3)
    g = values(rng, shape, dtype, "normal")
    want, want_dx = oracle.gelu(x, approximate), gelu_grad_oracle(g, x, approximate)
    xs = in_layout(x, layout)
    for label, (y, dx) in runs(lambda: (F.gelu(xs, approximate), F.gelu_backward(g, xs, approximate))):
        # absolute: a few subnormal steps (a result below the normal range is rounded to them)
        sub = 4 * float(np.finfo(dtype).smallest_subnormal) / oracle.rtol(dtype) / 20
        oracle.assert_close(y, want, dtype, scale=sub, rtol_factor=20)
        oracle.assert_close(dx, want_dx, dtype, scale=max_abs(g) * sub, rtol_factor=20)


# ---- linear, cross-entropy, adamw ----------------------------------------------------------

@fuzz
@given(data=st.data(), dtype=DTYPES, seed=st.integers(0, 2 ** 32 - 1), layout=st.sampled_from(LAYOUTS),
       with_bias=st.booleans())
def test_linear(data, dtype, seed, layout, with_bias):
    draw = data.draw
    lead = tuple(draw(st.lists(st.integers(0, 5), max_size=2)))
    K, N = draw(st.integers(0, 70)), draw(st.integers(0, 70))
    rng = np.random.default_rng(seed)
    x, w = values(rng, lead + (K,), dtype, "normal"), values(rng, (N, K), dtype, "normal")
    b = values(rng, (N,), dtype, "normal") if with_bias else None
    g = values(rng, lead + (N,), dtype, "normal")
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    want = x64 @ w64.T + (0 if b is None else b)
    M = int(np.prod(lead))
    xs, ws = in_layout(x, layout), in_layout(w, layout)
    for label, (y, (dx, dw, db)) in runs(lambda: (F.linear(xs, ws, b), F.linear_backward(g, xs, ws))):
        oracle.assert_close(y, want, dtype, scale=np.sqrt(K) + 1, rtol_factor=20)
        oracle.assert_close(dx, g64 @ w64, dtype, scale=np.sqrt(N) + 1, rtol_factor=20)
        oracle.assert_close(dw, g64.reshape(M, N).T @ x64.reshape(M, K), dtype, scale=np.sqrt(M) + 1, rtol_factor=20)
        oracle.assert_close(db, g64.reshape(M, N).sum(0), dtype, scale=np.sqrt(M) + 1, rtol_factor=20)


def ce_oracle(z, t, eps):
    """(mean loss, gradient) in float64, row by row, with -inf logits (probability 0) and any
    logits on ignored rows: test_cross_entropy's oracle on finite rows, a term of weight 0 left
    out, and the smoothing term inf when a logit is -inf (it puts mass on that class)."""
    z = np.asarray(z, np.float64)
    ok = t != -100
    finite = np.where(np.isneginf(z) | ~ok[:, None], -1e300, z)  # exp(-1e300 - m) = 0 exactly
    loss, grad = oracle_loss_and_grad(finite, t, eps=eps)
    grad = np.where(ok[:, None], grad, 0)
    if eps > 0 and np.isneginf(z[ok]).any():
        loss = np.inf
    return loss, grad


@fuzz
@given(data=st.data(), dtype=DTYPES, seed=st.integers(0, 2 ** 32 - 1), layout=st.sampled_from(LAYOUTS),
       eps=st.sampled_from([0.0, 0.1, 1.0]), minus_inf=st.booleans())
def test_cross_entropy(data, dtype, seed, layout, eps, minus_inf):
    draw = data.draw
    N, V = draw(st.integers(1, 8)), draw(st.integers(1, 40))
    rng = np.random.default_rng(seed)
    z = values(rng, (N, V), dtype, "normal") * dtype(3)
    t = rng.integers(0, V, N)
    t[rng.random(N) < 0.3] = -100
    if minus_inf and V > 1:  # impossible classes (never the target), and bad logits on ignored rows
        z[:, 0] = -np.inf
        t[t == 0] = 1
        z[t == -100, -1] = np.nan
    grad_output = draw(st.sampled_from([1.0, 0.5]))
    ok = t != -100
    want_loss, want_grad = ce_oracle(z, t, eps)
    zs = in_layout(z, layout)
    for label, (loss, grad) in runs(lambda: (F.cross_entropy(zs, t, label_smoothing=eps),
                                             F.cross_entropy_backward(zs, t, grad_output, label_smoothing=eps))):
        if np.isnan(want_loss) or np.isinf(want_loss):
            assert np.isnan(loss) if np.isnan(want_loss) else loss == want_loss, (label, loss)
        else:
            finite = z[np.isfinite(z)]
            oracle.assert_close(loss, want_loss, dtype, scale=max_abs(finite) + 1, rtol_factor=20)
        assert np.all(grad[~ok] == 0), label
        oracle.assert_close(grad, want_grad * grad_output, dtype, scale=1 / max(ok.sum(), 1), rtol_factor=20)


@fuzz
@given(dtype=DTYPES, seed=st.integers(0, 2 ** 32 - 1), n=st.integers(0, 300), step=st.integers(1, 50),
       weight_decay=st.sampled_from([0.0, 0.1]), layout=st.sampled_from(LAYOUTS))
def test_adamw_step(dtype, seed, n, step, weight_decay, layout):
    rng = np.random.default_rng(seed)
    p, g, m = (values(rng, (n,), dtype, "normal") for _ in range(3))
    v = np.abs(values(rng, (n,), dtype, "normal"))
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    p64, g64, m64, v64 = (a.astype(np.float64) for a in (p, g, m, v))
    m_want = b1 * m64 + (1 - b1) * g64
    v_want = b2 * v64 + (1 - b2) * g64 ** 2
    p_want = p64 * (1 - lr * weight_decay) - lr * (m_want / (1 - b1 ** step)) / (
        np.sqrt(v_want / (1 - b2 ** step)) + eps)
    gs = in_layout(g, layout)

    def one():
        state = [a.copy() for a in (p, m, v)]
        F.adamw_step(state[0], gs, state[1], state[2], step, lr, b1, b2, eps, weight_decay)
        return state
    for label, (p1, m1, v1) in runs(one):
        oracle.assert_close(m1, m_want, dtype, scale=1, rtol_factor=10)
        oracle.assert_close(v1, v_want, dtype, scale=1, rtol_factor=10)
        oracle.assert_close(p1, p_want, dtype, scale=1, rtol_factor=10)
