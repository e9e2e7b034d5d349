"""cross_entropy and cross_entropy_backward on both backends, against a float64 oracle."""
import math

import numpy as np
import pytest

import oracle
from fastattn import functional as F

DTYPES = [np.float32, np.float64]


def oracle_loss_and_grad(z, t, ignore_index=-100, eps=0.0):
    """Row by row in float64 with math.fsum: (mean loss, d mean loss / dz)."""
    z = np.asarray(z, dtype=np.float64).reshape(-1, np.shape(z)[-1])
    t = np.asarray(t).reshape(-1)
    V = z.shape[1]
    losses, grad = [], np.zeros_like(z)
    valid = [i for i in range(len(t)) if t[i] != ignore_index]
    for i in valid:
        m = max(z[i])
        lse = m + math.log(math.fsum(math.exp(x - m) for x in z[i]))
        losses.append((1 - eps) * (lse - z[i, t[i]]) + eps * (lse - math.fsum(z[i]) / V))
        grad[i] = np.exp(z[i] - lse) - eps / V
        grad[i, t[i]] -= 1 - eps
    n = len(valid)
    return (math.fsum(losses) / n if n else math.nan), grad / max(n, 1)


def check(z, t, ignore_index=-100, eps=0.0, grad_output=1.0):
    loss = F.cross_entropy(z, t, ignore_index, eps)
    grad = F.cross_entropy_backward(z, t, grad_output, ignore_index, eps)
    want_loss, want_grad = oracle_loss_and_grad(z, t, ignore_index, eps)
    assert loss.shape == () and loss.dtype == z.dtype and grad.shape == z.shape and grad.dtype == z.dtype
    if math.isnan(want_loss):
        assert np.isnan(loss)
    else:
        oracle.assert_close(loss, want_loss, z.dtype, scale=1.0)
    # gradient entries are probabilities / n: judged against 1 / n
    oracle.assert_close(grad.reshape(want_grad.shape), want_grad * grad_output, z.dtype,
                        scale=abs(grad_output) / max(np.count_nonzero(np.asarray(t) != ignore_index), 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 65), (3, 5, 257), (4, 50257)], ids=str)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_matches_oracle(backend, rng, dtype, shape, eps):
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, shape[-1], size=shape[:-1])
    check(z, t, eps=eps, grad_output=0.7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ignore_index(backend, rng, dtype):
    z = rng.standard_normal((10, 30)).astype(dtype)
    t = rng.integers(0, 30, size=10)
    t[[2, 5, 6]] = -100
    check(z, t)
    grad = F.cross_entropy_backward(z, t)
    assert np.all(grad[[2, 5, 6]] == 0)
    check(z, np.where(t == -100, -1, t), ignore_index=-1, eps=0.2)  # another ignored value


def test_every_target_ignored(backend, rng):
    z = rng.standard_normal((4, 6))
    t = np.full(4, -100)
    assert np.isnan(F.cross_entropy(z, t))
    assert np.all(F.cross_entropy_backward(z, t) == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits(backend, rng, dtype):
    z = rng.standard_normal((5, 40)).astype(dtype)
    z[:, 3] = 1e4  # exp(1e4) overflows in any float: the max must be subtracted
    t = np.array([3, 0, 3, 1, 3])
    loss = F.cross_entropy(z, t)
    grad = F.cross_entropy_backward(z, t)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    if dtype == np.float64:
        check(z, t)


def test_finite_differences(backend, rng):
    z = rng.standard_normal((4, 9))
    t = np.array([1, -100, 8, 0])
    grad = F.cross_entropy_backward(z, t, 1.3, label_smoothing=0.15)
    numeric = np.zeros_like(z)
    h = 1e-6
    for idx in np.ndindex(z.shape):
        old = z[idx]
        z[idx] = old + h
        up = F.cross_entropy(z, t, label_smoothing=0.15)
        z[idx] = old - h
        down = F.cross_entropy(z, t, label_smoothing=0.15)
        z[idx] = old
        numeric[idx] = 1.3 * (up - down) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_non_contiguous_and_int_dtypes(backend, rng):
    z = rng.standard_normal((60, 8)).astype(np.float32).T[:, ::2]  # (8, 30) view
    for t in (rng.integers(0, 30, 8).astype(np.int32), rng.integers(0, 30, 8).astype(np.uint8)):
        check(z, t)


def test_bad_input(backend):
    z = np.zeros((3, 5), np.float32)
    with pytest.raises(TypeError, match="target must be an integer array of class indices, got dtype float64"):
        F.cross_entropy(z, np.zeros(3))
    with pytest.raises(ValueError, match=r"target must have shape \(3,\) for input \(3, 5\), got \(4,\)"):
        F.cross_entropy(z, np.zeros(4, int))
    with pytest.raises(ValueError, match=r"target has class 5 at index \(1,\), outside \[0, 5\)"):
        F.cross_entropy(z, np.array([0, 5, 1]))
    with pytest.raises(ValueError, match=r"target has class -3"):
        F.cross_entropy_backward(z, np.array([0, -3, 1]))
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        F.cross_entropy(z, np.zeros(3, int), label_smoothing=1.5)
    with pytest.raises(TypeError, match="input must be a float32 or float64 array, got dtype int64"):
        F.cross_entropy(np.zeros((3, 5), int), np.zeros(3, int))
    with pytest.raises(ValueError, match="V >= 1"):
        F.cross_entropy(np.zeros((3, 0)), np.zeros(3, int))


def test_against_torch(backend, rng):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((2, 9, 40))
    t = rng.integers(0, 40, (2, 9))
    t[0, 3] = -100
    tz = torch.tensor(z.reshape(-1, 40), requires_grad=True)
    want = torch.nn.functional.cross_entropy(tz, torch.tensor(t.reshape(-1)), label_smoothing=0.1)
    want.backward()
    np.testing.assert_allclose(F.cross_entropy(z, t, label_smoothing=0.1), want.item(), rtol=1e-12)
    np.testing.assert_allclose(F.cross_entropy_backward(z, t, label_smoothing=0.1).reshape(-1, 40),
                               tz.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_minus_inf_logits(backend, dtype, eps):
    # -inf logits are classes that cannot occur (a masked vocabulary): their probability is 0.
    # Without smoothing the loss is finite (PyTorch: 0.0 for [[-inf, 0]], target 1); the
    # smoothing term puts mass on every class, so with eps > 0 it is inf, never NaN.
    z = np.array([[-np.inf, 0.0], [-np.inf, 1.0]], dtype)
    t = np.array([1, 1])
    loss = F.cross_entropy(z, t, label_smoothing=eps)
    assert loss == (0.0 if eps == 0 else np.inf)
    grad = F.cross_entropy_backward(z, t, label_smoothing=eps)
    # softmax is [0, 1] in each row: grad = (p - (1 - eps) onehot - eps / V) / 2
    want = (np.array([[0.0, 1.0], [0.0, 1.0]]) - (1 - eps) * np.array([[0, 1], [0, 1]]) - eps / 2) / 2
    oracle.assert_close(grad, want, dtype)
    # the target's own logit is -inf: the loss is inf (as PyTorch), not NaN
    assert F.cross_entropy(z, np.array([0, 1])) == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_ignored_rows_ignore_their_logits(backend, dtype, bad):
    # An ignored row's logits do not matter: NaN or inf there gives a 0 gradient row, and leaves
    # the loss (the mean over the other rows) alone.
    z = np.array([[0.5, -1.0, 2.0], [bad, bad, bad], [1.0, bad, 0.0]], dtype)
    t = np.array([2, -100, -100])
    grad = F.cross_entropy_backward(z, t, label_smoothing=0.1)
    assert np.all(grad[1:] == 0)
    want_loss, want_grad = oracle_loss_and_grad(z[:1], t[:1], eps=0.1)
    oracle.assert_close(F.cross_entropy(z, t, label_smoothing=0.1), want_loss, dtype)
    oracle.assert_close(grad[:1], want_grad, dtype)


@pytest.mark.parametrize("ignore_index", [2 ** 63, 2 ** 64 + 5, -2 ** 63 - 1])
def test_ignore_index_beyond_int64(backend, ignore_index):
    # No int64 target can equal it: nothing is ignored (not an OverflowError)
    z = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    t = np.array([1, 0])
    want_loss, want_grad = oracle_loss_and_grad(z, t)
    oracle.assert_close(F.cross_entropy(z, t, ignore_index=ignore_index), want_loss, np.float64)
    oracle.assert_close(F.cross_entropy_backward(z, t, ignore_index=ignore_index), want_grad, np.float64)


def test_ignore_index_2_to_63_in_a_uint64_target(backend):
    # a uint64 target can hold 2**63: those rows are ignored
    z = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    t = np.array([1, 2 ** 63], dtype=np.uint64)
    want_loss, want_grad = oracle_loss_and_grad(z[:1], np.array([1]))
    oracle.assert_close(F.cross_entropy(z, t, ignore_index=2 ** 63), want_loss, np.float64)
    grad = F.cross_entropy_backward(z, t, ignore_index=2 ** 63)
    oracle.assert_close(grad[:1], want_grad, np.float64)
    assert np.all(grad[1] == 0)
    with pytest.raises(ValueError, match=r"target has class 9223372036854775808 at index \(1,\)"):
        F.cross_entropy(z, t)
