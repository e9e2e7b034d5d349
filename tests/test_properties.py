"""Property tests: random shapes, masks and broadcast patterns against the float64 oracle."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import fastattn
import oracle
from fastattn import functional as F

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def mask_for(draw, full_shape):
    """None, or a bool/additive mask whose shape broadcasts to full_shape (dims dropped or 1)."""
    kind = draw(st.sampled_from([None, "bool", "additive"]))
    if kind is None:
        return None
    ndim = draw(st.integers(1, len(full_shape)))
    shape = tuple(n if draw(st.booleans()) else 1 for n in full_shape[len(full_shape) - ndim:])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "bool":
        return rng.random(shape) < draw(st.sampled_from([0.0, 0.3, 0.9, 1.0]))
    return np.where(rng.random(shape) < 0.3, -np.inf, rng.standard_normal(shape) * 3)


@st.composite
def attention_case(draw):
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    Tq, Tk = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    D, Dv = draw(st.integers(1, 20)), draw(st.integers(1, 12))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rng.standard_normal(lead + (Tq, D)).astype(dtype)
    k = rng.standard_normal(lead + (Tk, D)).astype(dtype)
    v = rng.standard_normal(lead + (Tk, Dv)).astype(dtype)
    return q, k, v, draw(mask_for(lead + (Tq, Tk))), draw(st.booleans())


@SETTINGS
@given(case=attention_case(), backend=st.sampled_from(fastattn.available_backends()))
def test_attention(case, backend):
    q, k, v, mask, causal = case
    with fastattn.use_backend(backend):
        got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    oracle.assert_close(got, oracle.attention(q, k, v, mask, causal), q.dtype, scale=np.abs(v).max())


@st.composite
def softmax_case(draw):
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return x, draw(mask_for(shape)), draw(st.floats(-3, 3)), axis


@SETTINGS
@given(case=softmax_case(), backend=st.sampled_from(fastattn.available_backends()))
def test_masked_softmax(case, backend):
    x, mask, scale, axis = case
    with fastattn.use_backend(backend):
        got = F.masked_softmax(x, mask, scale, axis)
    oracle.assert_close(got, oracle.softmax(x, mask, scale, axis), x.dtype)


@SETTINGS
@given(shape=st.lists(st.integers(1, 70), min_size=1, max_size=3), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]), affine=st.booleans(),
       backend=st.sampled_from(fastattn.available_backends()))
def test_layer_norm(shape, seed, dtype, affine, backend):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + rng.standard_normal()).astype(dtype)
    C = shape[-1]
    w = rng.standard_normal(C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    with fastattn.use_backend(backend):
        got = F.layer_norm(x, w, b)
    scale = 1 + (np.abs(w).max() + np.abs(b).max() if affine else 0)
    oracle.assert_close(got, oracle.layer_norm(x, w, b), dtype, scale=scale)
