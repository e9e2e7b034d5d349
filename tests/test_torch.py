"""Cross-check against torch.nn.functional when PyTorch is installed (it is never required)."""
import numpy as np
import pytest

from fastattn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask_kind", [None, "bool", "additive"])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa(backend, rng, dtype, mask_kind, causal):
    q, k, v = (rng.standard_normal((2, 3, 37, 16)).astype(dtype) for _ in range(3))
    mask = None
    if mask_kind == "bool":
        mask = rng.random((2, 1, 37, 37)) < 0.8
        mask[..., 0] = True  # torch's math path gives NaN for fully masked rows when causal is combined
    elif mask_kind == "additive":
        mask = rng.standard_normal((37, 37)).astype(dtype)
    if causal and mask is not None:  # torch does not accept both: fold the causal mask in
        tri = np.tril(np.ones((37, 37), bool))
        tmask = (mask & tri) if mask.dtype == bool else np.where(tri, mask, -np.inf).astype(dtype)
        want = TF.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=t(tmask)).numpy()
    else:
        want = TF.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=None if mask is None else t(mask),
                                               is_causal=causal).numpy()
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_fully_masked_rows_give_zeros_like_torch(backend, rng):
    q, k, v = (rng.standard_normal((1, 2, 6, 8)).astype(np.float32) for _ in range(3))
    mask = rng.random((6, 6)) < 0.7
    mask[2] = False
    want = TF.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=t(mask)).numpy()
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(got[..., 2, :] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_layer_norm_gelu(backend, rng, dtype):
    x = (rng.standard_normal((16, 300)) * 3).astype(dtype)
    w, b = rng.standard_normal(300).astype(dtype), rng.standard_normal(300).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(F.softmax(x, axis=0), torch.softmax(t(x), 0).numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(F.layer_norm(x, w, b), TF.layer_norm(t(x), (300,), t(w), t(b)).numpy(),
                               rtol=tol, atol=tol * 10)
    for approximate in ("none", "tanh"):
        np.testing.assert_allclose(F.gelu(x, approximate), TF.gelu(t(x), approximate=approximate).numpy(),
                                   rtol=tol, atol=tol)
