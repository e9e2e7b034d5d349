"""rms_norm, silu, swiglu and rotary_embedding, forward and backward, on both backends, against
float64 oracles written here (and torch's twins, float64, rel 1e-6, when torch is installed)."""
import numpy as np
import pytest

import oracle
from fastattn import functional as F
from threads import at_thread_counts

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (3, 7), (2, 5, 33), (4, 1000)]


def oracle_rms_norm(x, w, eps):
    x = x.astype(np.float64)
    y = x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps)
    return y if w is None else y * w


def oracle_rms_norm_grads(g, x, w, eps):
    """float64 (dx, dw) of sum(g * rms_norm(x)), from the chain rule written out:
    y = x r w, r = (mean(x^2) + eps)^-1/2, dr/dx = -r^3 x / C."""
    g, x = g.astype(np.float64), x.astype(np.float64)
    C = x.shape[-1]
    r = 1 / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps)
    gw = g if w is None else g * w
    dx = gw * r - x * (r ** 3) * (gw * x).sum(axis=-1, keepdims=True) / C
    dw = None if w is None else (g * x * r).reshape(-1, C).sum(axis=0)
    return dx, dw


def sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x.astype(np.float64)))  # (no overflow at either end)


def oracle_rope(x, cos, sin):
    """x (..., H, T, D) rotated pair by pair: (x_d, x_{d+h}) by the angle whose cos/sin are given."""
    x = x.astype(np.float64)
    h = x.shape[-1] // 2
    c = cos if cos.ndim == 2 else cos[..., None, :, :]
    s = sin if sin.ndim == 2 else sin[..., None, :, :]
    y = np.empty_like(x)
    y[..., :h] = x[..., :h] * c[..., :h] - x[..., h:] * s[..., :h]
    y[..., h:] = x[..., h:] * c[..., h:] + x[..., :h] * s[..., h:]
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_weight", [False, True])
def test_rms_norm(backend, rng, dtype, shape, with_weight):
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(shape[-1]).astype(dtype) if with_weight else None
    y, rstd = F.rms_norm(x, shape[-1], w, 1e-6, return_rstd=True)
    oracle.assert_close(y, oracle_rms_norm(x, w, 1e-6), dtype, scale=np.abs(y).max(), rtol_factor=10)
    g = rng.standard_normal(shape).astype(dtype)
    dx, dw = F.rms_norm_backward(g, x, rstd, shape[-1], w)
    wdx, wdw = oracle_rms_norm_grads(g, x, w, 1e-6)
    # (judged against the size of its terms, g w r: with C = 1 they cancel to nearly 0)
    terms = np.abs(g * (1 if w is None else w)).max() / np.sqrt((x.astype(np.float64) ** 2).mean(-1) + 1e-6).min()
    oracle.assert_close(dx, wdx, dtype, scale=terms, rtol_factor=10)
    if with_weight:
        oracle.assert_close(dw, wdw, dtype, scale=np.abs(wdw).max(), rtol_factor=100)
    else:
        assert dw is None


def test_rms_norm_strided_input(backend, rng):
    x = rng.standard_normal((16, 6)).T[:, ::2]  # (6, 8), neither C nor F order
    w = rng.standard_normal(8)
    oracle.assert_close(F.rms_norm(x, 8, w, 1e-6), oracle_rms_norm(x, w, 1e-6), np.float64)


def test_rms_norm_several_dims_and_default_eps(backend, rng):
    x = rng.standard_normal((3, 4, 5))
    w = rng.standard_normal((4, 5))
    want = oracle_rms_norm(x.reshape(3, 20), w.reshape(20), np.finfo(np.float64).eps).reshape(3, 4, 5)
    oracle.assert_close(F.rms_norm(x, (4, 5), w), want, np.float64)


def test_rms_norm_thread_count(rng):
    x, g = rng.standard_normal((300, 64)), rng.standard_normal((300, 64))
    w = rng.standard_normal(64)

    def run():
        y, r = F.rms_norm(x, 64, w, 1e-5, return_rstd=True)
        return (y,) + F.rms_norm_backward(g, x, r, 64, w)

    for a, b in zip(*at_thread_counts(run)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu(backend, rng, dtype):
    x = np.concatenate([rng.standard_normal(1001) * 5, [-800.0, 800.0, 0.0]]).astype(dtype)
    s = sigmoid(x)
    oracle.assert_close(F.silu(x), x * s, dtype, scale=1)
    g = rng.standard_normal(x.shape).astype(dtype)
    oracle.assert_close(F.silu_backward(g, x), g * s * (1 + x * (1 - s)), dtype, scale=np.abs(g).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_on_two_halves_of_one_product(backend, rng, dtype):
    both = (rng.standard_normal((3, 7, 2 * 13)) * 4).astype(dtype)  # (..., 2I): gate | up, views
    gate, up = both[..., :13], both[..., 13:]
    g = rng.standard_normal(gate.shape).astype(dtype)
    x, u = gate.astype(np.float64), up.astype(np.float64)
    s = sigmoid(x)
    oracle.assert_close(F.silu_mul(gate, up), x * s * u, dtype, scale=np.abs(u).max())
    dgate, dup = F.silu_mul_backward(g, gate, up)
    oracle.assert_close(dgate, g * u * s * (1 + x * (1 - s)), dtype, scale=np.abs(g * u).max())
    oracle.assert_close(dup, g * x * s, dtype, scale=np.abs(g).max())
    assert F.silu_mul(gate[:0], up[:0]).shape == (0, 7, 13)
    with pytest.raises(ValueError, match="up"):
        F.silu_mul(gate, up[:, :3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu(backend, rng, dtype):
    x = rng.standard_normal((2, 9, 24)).astype(dtype)[:, ::2]  # non-contiguous rows
    wg, wu = (rng.standard_normal((37, 24)).astype(dtype) * 0.3 for _ in range(2))
    y, (gate, up) = F.swiglu(x, wg, wu, return_pre=True)
    x64 = x.astype(np.float64)
    a, b = x64 @ wg.T, x64 @ wu.T
    s = sigmoid(a)
    oracle.assert_close(y, a * s * b, dtype, scale=np.abs(a * s * b).max(), rtol_factor=10)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx, dwg, dwu = F.swiglu_backward(g, x, wg, wu, gate, up)
    da = g * b * s * (1 + a * (1 - s))
    db = g * a * s
    for got, want in ((dx, da @ wg + db @ wu), (dwg, da.reshape(-1, 37).T @ x64.reshape(-1, 24)),
                      (dwu, db.reshape(-1, 37).T @ x64.reshape(-1, 24))):
        oracle.assert_close(got, want, dtype, scale=np.abs(want).max(), rtol_factor=100)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("strided_elements", [False, True])
def test_rotary_embedding(backend, rng, dtype, per_row, strided_elements):
    B, H, T, D = 2, 3, 11, 10
    x = rng.standard_normal((B, T, H, D)).astype(dtype).transpose(0, 2, 1, 3)  # a head view
    if strided_elements:  # (its rows not contiguous either: every other element)
        x = rng.standard_normal((B, H, T, 2 * D)).astype(dtype)[..., ::2]
    angles = rng.standard_normal((B, T, D // 2) if per_row else (T, D // 2))
    angles = np.concatenate([angles, angles], axis=-1)
    cos, sin = np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
    y = F.rotary_embedding(x, cos, sin)
    oracle.assert_close(y, oracle_rope(x, cos, sin), dtype, scale=np.abs(x).max())
    assert y.flags.c_contiguous
    # the backward is the transposed rotation: <rope(x), g> == <x, rope_backward(g)>
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = F.rotary_embedding_backward(g, cos, sin)
    oracle.assert_close(dx, oracle_rope(g, cos, -sin), dtype, scale=np.abs(g).max())


def test_rotary_thread_count(rng):
    x = rng.standard_normal((2, 4, 50, 16))
    cos, sin = np.cos(rng.standard_normal((50, 16))), np.sin(rng.standard_normal((50, 16)))
    one, two = at_thread_counts(lambda: F.rotary_embedding(x, cos, sin))
    np.testing.assert_array_equal(one, two)


def test_bad_arguments(backend):
    x = np.zeros((2, 3, 4, 6))
    with pytest.raises(ValueError, match=r"normalized_shape \(5,\).*\(2, 3, 4, 6\)"):
        F.rms_norm(x, 5)
    with pytest.raises(ValueError, match="weight must have shape"):
        F.rms_norm(x, 6, np.zeros(5))
    with pytest.raises(ValueError, match="D even"):
        F.rotary_embedding(np.zeros((2, 4, 5)), np.zeros((4, 5)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"cos must have shape \(4, 6\) or \(2, 4, 6\)"):
        F.rotary_embedding(x, np.zeros((3, 6)), np.zeros((4, 6)))
    with pytest.raises(ValueError, match="weight_up"):
        F.swiglu(np.zeros((2, 6)), np.zeros((4, 6)), np.zeros((5, 6)))
    with pytest.raises(TypeError, match="input"):
        F.silu(np.zeros(3, np.int32))


def test_torch_twins(backend, rng):
    """Gradients equal torch's (float64, rel 1e-6)."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 6, 16))
    w = rng.standard_normal(16)
    g = rng.standard_normal(x.shape)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    torch.nn.functional.rms_norm(tx, (16,), tw, 1e-5).backward(torch.tensor(g))
    _, r = F.rms_norm(x, 16, w, 1e-5, return_rstd=True)
    dx, dw = F.rms_norm_backward(g, x, r, 16, w)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-6, atol=1e-12)

    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.silu(tx).backward(torch.tensor(g))
    np.testing.assert_allclose(F.silu_backward(g, x), tx.grad.numpy(), rtol=1e-6, atol=1e-12)

    wg, wu = rng.standard_normal((20, 16)), rng.standard_normal((20, 16))
    tx, twg, twu = (torch.tensor(a, requires_grad=True) for a in (x, wg, wu))
    g2 = rng.standard_normal((3, 6, 20))
    (torch.nn.functional.silu(tx @ twg.T) * (tx @ twu.T)).backward(torch.tensor(g2))
    _, (gate, up) = F.swiglu(x, wg, wu, return_pre=True)
    for got, t in zip(F.swiglu_backward(g2, x, wg, wu, gate, up), (tx, twg, twu)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-6, atol=1e-10)

    q = rng.standard_normal((2, 3, 6, 16))
    angles = np.concatenate([rng.standard_normal((6, 8))] * 2, axis=-1)
    cos, sin = np.cos(angles), np.sin(angles)
    tq = torch.tensor(q, requires_grad=True)
    rotated = torch.cat([-tq[..., 8:], tq[..., :8]], dim=-1)
    g3 = rng.standard_normal(q.shape)
    (tq * torch.tensor(cos) + rotated * torch.tensor(sin)).backward(torch.tensor(g3))
    np.testing.assert_allclose(F.rotary_embedding_backward(g3, cos, sin), tq.grad.numpy(), rtol=1e-6, atol=1e-12)

