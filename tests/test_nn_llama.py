"""nn.RMSNorm, nn.SiLU, nn.RotaryEmbedding and nn.GroupedQueryAttention against torch twins
written here in float64 (forward and every gradient, rel 1e-6), on both backends."""
import numpy as np
import pytest

from fastattn import nn

torch = pytest.importorskip("torch")


def close(got, want):
    np.testing.assert_allclose(got, want.detach().numpy() if hasattr(want, "detach") else want,
                               rtol=1e-6, atol=1e-9)


def test_rms_norm_and_silu(backend, rng):
    x = rng.standard_normal((3, 5, 12))
    g = rng.standard_normal(x.shape)
    ours = nn.RMSNorm(12, eps=1e-5, dtype=np.float64)
    ours.weight.data[...] = rng.standard_normal(12)
    theirs = torch.nn.RMSNorm(12, eps=1e-5, dtype=torch.float64)
    theirs.weight.data[...] = torch.tensor(ours.weight.data)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.tensor(g))
    close(ours(x), ty)
    close(ours.backward(g), tx.grad)
    close(ours.weight.grad, theirs.weight.grad)

    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.SiLU()(tx)
    ty.backward(torch.tensor(g))
    silu = nn.SiLU()
    close(silu(x), ty)
    close(silu.backward(g), tx.grad)


def test_llama3_frequencies_follow_the_formula():
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    inv = nn.RotaryEmbedding(16, 500000.0, scaling).inv_freq
    base = 500000.0 ** -(np.arange(0, 16, 2) / 16)
    wavelen = 2 * np.pi / base
    for b, w, got in zip(base, wavelen, inv):
        if w < 64 / 4:
            assert got == pytest.approx(b)          # high frequencies kept
        elif w > 64 / 1:
            assert got == pytest.approx(b / 8)      # low frequencies divided by the factor
        else:                                       # blended in between
            s = (64 / w - 1) / (4 - 1)
            assert got == pytest.approx((1 - s) * b / 8 + s * b)
    with pytest.raises(ValueError, match="yarn"):
        nn.RotaryEmbedding(16, 1e4, {"rope_type": "yarn", "factor": 2.0})


def torch_gqa(x, wq, bq, wk, bk, wv, bv, wo, H, H_kv, theta, window):
    """Llama attention in torch, written out: K/V repeated to H heads, rotate-half RoPE."""
    B, T, _ = x.shape
    D = wq.shape[0] // H
    inv = theta ** -(torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv
    ang = torch.cat([ang, ang], dim=-1)

    def rope(a):
        rotated = torch.cat([-a[..., D // 2:], a[..., :D // 2]], dim=-1)
        return a * ang.cos() + rotated * ang.sin()

    q = rope((x @ wq.T + bq).view(B, T, H, D).transpose(1, 2))
    k = rope((x @ wk.T + bk).view(B, T, H_kv, D).transpose(1, 2)).repeat_interleave(H // H_kv, dim=1)
    v = (x @ wv.T + bv).view(B, T, H_kv, D).transpose(1, 2).repeat_interleave(H // H_kv, dim=1)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    keep = (j <= i) & ((j > i - window) if window else True)
    s = (q @ k.transpose(-1, -2)) / D ** 0.5
    y = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1) @ v
    return y.transpose(1, 2).reshape(B, T, H * D) @ wo.T


@pytest.mark.parametrize("H, H_kv, bias, window", [(4, 2, False, None), (6, 1, True, 3), (2, 2, False, 4)])
def test_grouped_query_attention(backend, rng, H, H_kv, bias, window):
    E, B, T = 24, 2, 11
    m = nn.GroupedQueryAttention(E, H, H_kv, bias=bias, rope_theta=500.0, window=window,
                                 dtype=np.float64, seed=1)
    x = rng.standard_normal((B, T, E))
    g = rng.standard_normal((B, T, E))
    params = {n: torch.tensor(p.data, requires_grad=True) for n, p in m.named_parameters()}
    zero = torch.zeros(1, dtype=torch.float64)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch_gqa(tx, params["q_proj.weight"], params.get("q_proj.bias", zero), params["k_proj.weight"],
                   params.get("k_proj.bias", zero), params["v_proj.weight"], params.get("v_proj.bias", zero),
                   params["o_proj.weight"], H, H_kv, 500.0, window)
    ty.backward(torch.tensor(g))
    close(m(x), ty)
    close(m.backward(g), tx.grad)
    for name, p in m.named_parameters():
        close(p.grad, params[name].grad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        nn.GroupedQueryAttention(24, 4, 3)
    with pytest.raises(ValueError, match="head_dim"):
        nn.RotaryEmbedding(7)
