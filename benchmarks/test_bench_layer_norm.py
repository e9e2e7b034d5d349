"""layer_norm over the last axis, with weight and bias."""
import numpy as np
import pytest

from fastattn import functional as F

try:
    import torch
except ImportError:
    torch = None


def oracle(x, w, b, eps=1e-5):
    x = x.astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


@pytest.mark.parametrize("shape", [(8192, 768), (2048, 4096)], ids=str)
def test_layer_norm(measure, backend, rng, shape):
    C = shape[-1]
    x = rng.standard_normal(shape, dtype=np.float32) * 3 + 1
    w, b = (rng.standard_normal(C, dtype=np.float32) for _ in range(2))
    theirs = None
    if backend == "torch":
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
        theirs = lambda: torch.nn.functional.layer_norm(tx, (C,), tw, tb)  # noqa: E731

    y = measure(f"layer_norm {shape}", lambda: F.layer_norm(x, w, b), theirs)

    assert y.shape == shape and y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y[:64], oracle(x[:64], w, b), rtol=1e-4, atol=1e-4)
