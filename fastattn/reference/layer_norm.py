import numpy as np


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance)."""
    # Statistics in float64: in float32, a mean of size 1e4 is off by half an ulp (5e-4), and so is
    # every x - mean, which is all that layer norm keeps.
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)  # two-pass: no E[x^2] - E[x]^2 cancellation
    y = ((x64 - mean) / np.sqrt(var + eps)).astype(x.dtype)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
