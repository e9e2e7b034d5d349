"""Float64 oracles, written independently of fastattn (no code of the library is used here)."""
import math

import numpy as np

EPS = {np.float32: 1e-5, np.float64: 1e-12}  # relative tolerance of a kernel result


def rtol(dtype):
    return EPS[np.dtype(dtype).type]


def attention(q, k, v, mask=None, causal=False, scale=None):
    v = np.asarray(v, dtype=np.float64)
    return np.einsum("...ij,...jd->...id", attention_weights(q, k, mask, causal, scale), v)


def attention_weights(q, k, mask=None, causal=False, scale=None):
    q, k = (np.asarray(a, dtype=np.float64) for a in (q, k))
    Tq, D = q.shape[-2:]
    Tk = k.shape[-2]
    scale = 1 / math.sqrt(D) if scale is None else scale
    s = np.einsum("...id,...jd->...ij", q, k) * scale
    allowed = np.ones(s.shape, dtype=bool)
    if causal:
        i = np.arange(Tq)[:, None]
        j = np.arange(Tk)[None, :]
        allowed = allowed & (j <= i + (Tk - Tq))
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == bool:
            allowed = allowed & mask
        else:
            s = s + mask.astype(np.float64)
    return _softmax_rows(np.where(allowed, s, -np.inf))


def softmax(x, mask=None, scale=1.0, axis=-1):
    x = np.asarray(x, dtype=np.float64) * scale
    if mask is not None:
        mask = np.asarray(mask)
        x = np.where(mask, x, -np.inf) if mask.dtype == bool else x + mask.astype(np.float64)
    return np.moveaxis(_softmax_rows(np.moveaxis(x, axis, -1)), -1, axis)


def _softmax_rows(s):
    """Softmax over the last axis; a row with no finite entry (all -inf) is all zeros."""
    m = s.max(axis=-1, keepdims=True)
    empty = m == -np.inf
    with np.errstate(invalid="ignore"):
        e = np.exp(s - np.where(empty, 0.0, m))
        return np.where(empty, 0.0, e / np.where(empty, 1.0, e.sum(axis=-1, keepdims=True)))


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * np.asarray(weight, dtype=np.float64)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y


def gelu(x, approximate="none"):
    x = np.asarray(x, dtype=np.float64)
    if approximate == "tanh":
        # tanh form from its definition, with math.tanh in double precision; 1 + tanh(u) loses
        # digits for u << 0, so use 1 + tanh(u) = 2 / (1 + exp(-2u)) there (exact identity), and
        # for -2u > 700 (x < -20.4), where 1 + exp(-2u) == exp(-2u) in double and exp(-2u)
        # overflows, t * exp(2u), which underflows to the right value (0 below ~1e-308).
        def one(t):
            u = math.sqrt(2 / math.pi) * (t + 0.044715 * t**3)
            if u > -1:
                return t * 0.5 * (1 + math.tanh(u))
            return t / (1 + math.exp(-2 * u)) if -2 * u <= 700 else t * math.exp(2 * u)
    else:
        def one(t):
            return 0.5 * t * math.erfc(-t / math.sqrt(2))  # erfc keeps the tail exact for t << 0
    return np.vectorize(one, otypes=[np.float64])(x)


def assert_close(got, want, dtype, scale=1.0, rtol_factor=1.0):
    """got (a kernel result of `dtype`) against the float64 oracle `want`.

    Relative tolerance rtol(dtype) (1e-5 for float32, 1e-12 for float64) and an absolute one of
    rtol * scale, `scale` being the magnitude of the data the result is made of (for attention:
    max |value|), so that entries near 0 are judged against the size of their inputs."""
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), f"dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == np.shape(want), f"shape {got.shape}, expected {np.shape(want)}"
    tol = rtol(dtype) * rtol_factor
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)
