import numpy as np


def layer_norm(x, weight=None, bias=None, eps=1e-5, return_stats=False):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance).

    return_stats: also return mean and rstd = 1 / sqrt(var + eps), shape x.shape[:-1], for the backward.
    """
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
    if return_stats:
        rstd = 1 / np.sqrt(var[..., 0] + eps)
        return y, mean[..., 0].astype(x.dtype), rstd.astype(x.dtype)
    return y


def layer_norm_backward(grad_output, x, mean, rstd, weight=None):
    """Gradients of layer_norm, given the mean and rstd of its forward.

    grad_output, x (..., C); mean, rstd (...); weight (C,) or None
    -> grad_x (..., C), grad_weight (C,) or None, grad_bias (C,)

      xhat = (x - mean) * rstd,  dy = grad_output * weight
      grad_x = rstd * (dy - mean(dy) - xhat * mean(dy * xhat))   (means over the last axis)
    In float64, as the forward.
    """
    g = grad_output.astype(np.float64)
    mean = mean.astype(np.float64)[..., None]
    rstd = rstd.astype(np.float64)[..., None]
    xhat = (x.astype(np.float64) - mean) * rstd
    dy = g if weight is None else g * weight.astype(np.float64)
    grad_x = rstd * (dy - dy.mean(axis=-1, keepdims=True) - xhat * (dy * xhat).mean(axis=-1, keepdims=True))
    C = x.shape[-1]
    grad_weight = None if weight is None else (g * xhat).reshape(-1, C).sum(axis=0).astype(x.dtype)
    grad_bias = g.reshape(-1, C).sum(axis=0).astype(x.dtype)
    return grad_x.astype(x.dtype), grad_weight, grad_bias
