"""masked_softmax with a causal boolean mask, and plain softmax."""
import numpy as np
import pytest

from fastattn import functional as F

try:
    import torch
except ImportError:
    torch = None


def oracle(x, keep):
    """float64 softmax over the last axis of the entries where keep is True."""
    s = np.where(keep, x.astype(np.float64), -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("shape", [(16, 512, 512)], ids=str)
def test_masked_softmax_causal(measure, backend, rng, shape):
    x = rng.standard_normal(shape, dtype=np.float32)
    mask = np.tril(np.ones(shape[-2:], dtype=bool))  # (T, T), broadcast over the batch
    theirs = None
    if backend == "torch":
        tx, hidden = torch.from_numpy(x), torch.from_numpy(~mask)
        theirs = lambda: torch.softmax(tx.masked_fill(hidden, float("-inf")), dim=-1)  # noqa: E731

    y = measure(f"masked_softmax causal {shape}", lambda: F.masked_softmax(x, mask), theirs)

    assert y.shape == shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert not y[:, ~mask].any(), "masked entries must be exactly 0"
    np.testing.assert_allclose(y.sum(axis=-1), 1, rtol=1e-5)
    np.testing.assert_allclose(y[0], oracle(x[0], mask), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("shape", [(4096, 1024)], ids=str)
def test_softmax(measure, backend, rng, shape):
    x = rng.standard_normal(shape, dtype=np.float32)
    theirs = None
    if backend == "torch":
        tx = torch.from_numpy(x)
        theirs = lambda: torch.softmax(tx, dim=-1)  # noqa: E731

    y = measure(f"softmax {shape}", lambda: F.softmax(x), theirs)

    assert y.shape == shape and y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y[:64], oracle(x[:64], True), rtol=1e-4, atol=1e-7)
