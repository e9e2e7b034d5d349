"""scaled_dot_product_attention: causal, full, padding mask, decode (one query over a KV cache)."""
import numpy as np
import pytest

from fastattn import functional as F

try:
    import torch
except ImportError:
    torch = None

CASES = [  # label, (B, H, Tq, D), Tk, is_causal, padding mask
    ("causal", (4, 8, 256, 64), 256, True, False),
    ("causal", (1, 8, 1024, 64), 1024, True, False),
    ("full", (1, 8, 1024, 64), 1024, False, False),
    ("padding mask", (4, 8, 256, 64), 256, False, True),
    ("decode", (8, 8, 1, 64), 1024, True, False),
]


def oracle(q, k, v, mask, causal):
    """float64 attention of one (Tq, D) slice."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    Tq, Tk = q.shape[0], k.shape[0]
    s = q @ k.T / np.sqrt(q.shape[1])
    keep = np.ones((Tq, Tk), dtype=bool) if mask is None else np.broadcast_to(mask, (Tq, Tk))
    if causal:  # queries are the last Tq positions
        keep = keep & (np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + Tk - Tq)
    s = np.where(keep, s, -np.inf)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True) @ v


@pytest.mark.parametrize("label, shape, Tk, causal, padding", CASES,
                         ids=[f"{c[0]} {c[1]} kv{c[2]}".replace(" ", "") for c in CASES])
def test_attention(measure, backend, rng, label, shape, Tk, causal, padding):
    B, H, Tq, D = shape
    q = rng.standard_normal((B, H, Tq, D), dtype=np.float32)
    k, v = (rng.standard_normal((B, H, Tk, D), dtype=np.float32) for _ in range(2))
    mask = None
    if padding:  # each sequence keeps a random-length prefix of its keys
        lengths = rng.integers(Tk // 2, Tk + 1, size=B)
        mask = np.arange(Tk)[None, None, None, :] < lengths[:, None, None, None]  # (B, 1, 1, Tk)
    theirs = None
    if backend == "torch":
        tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
        tmask = None if mask is None else torch.from_numpy(mask)
        # torch aligns is_causal top-left; for Tq == 1 fastattn's (bottom-right) causal hides nothing
        theirs = lambda: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
            tq, tk, tv, attn_mask=tmask, is_causal=causal and Tq == Tk)

    out = measure(f"attention {label} {shape} kv {Tk}",
                  lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal),
                  theirs)

    assert out.shape == (B, H, Tq, D) and out.dtype == np.float32
    assert np.isfinite(out).all()
    for b, h in ((0, 0), (B - 1, H - 1)):
        expected = oracle(q[b, h], k[b, h], v[b, h], None if mask is None else mask[b, 0], causal)
        np.testing.assert_allclose(out[b, h], expected, rtol=1e-3, atol=1e-4)
