import numpy as np


def rms_norm(x, weight=None, eps=1e-6, return_rstd=False):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (Llama's RMSNorm, no mean, no bias).

    x (..., C), weight (C,) or None. return_rstd: also return rstd = 1 / sqrt(mean(x^2) + eps),
    shape x.shape[:-1], for the backward. The mean of squares is taken in float64.
    """
    x64 = x.astype(np.float64)
    rstd = 1 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + eps)
    y = (x64 * rstd).astype(x.dtype)
    if weight is not None:
        y = y * weight
    return (y, rstd[..., 0].astype(x.dtype)) if return_rstd else y


def rms_norm_backward(grad_output, x, rstd, weight=None):
    """Gradients of rms_norm given its forward's rstd: (grad_x (..., C), grad_weight (C,) or None).

        x_hat = x * rstd,  g' = grad_output * weight
        dx = rstd * (g' - x_hat * mean(g' * x_hat))      dweight = sum over rows of grad_output * x_hat
    """
    r = rstd[..., None].astype(np.float64)
    x_hat = x.astype(np.float64) * r
    g = grad_output.astype(np.float64)
    gw = g if weight is None else g * weight
    dx = r * (gw - x_hat * (gw * x_hat).mean(axis=-1, keepdims=True))
    dw = None if weight is None else (g * x_hat).reshape(-1, x.shape[-1]).sum(axis=0).astype(x.dtype)
    return dx.astype(x.dtype), dw
