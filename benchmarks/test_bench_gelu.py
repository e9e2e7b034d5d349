"""GELU, exact (erf) and GPT-2's tanh approximation."""
import numpy as np
import pytest
from scipy.special import erf

from fastattn import functional as F

try:
    import torch
except ImportError:
    torch = None


def oracle(x, approximate):
    x = x.astype(np.float64)
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", [(4096, 3072)], ids=str)
def test_gelu(measure, backend, rng, shape, approximate):
    x = rng.standard_normal(shape, dtype=np.float32) * 3
    theirs = None
    if backend == "torch":
        tx = torch.from_numpy(x)
        theirs = lambda: torch.nn.functional.gelu(tx, approximate=approximate)  # noqa: E731

    y = measure(f"gelu {approximate} {shape}", lambda: F.gelu(x, approximate), theirs)

    assert y.shape == shape and y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y[:16], oracle(x[:16], approximate), rtol=1e-5, atol=1e-6)
