"""LayerNorm and RMSNorm over the trailing dims, torch.nn's arguments (on F.layer_norm, F.rms_norm)."""
import numbers

import numpy as np

from fastattn import functional as F
from fastattn.nn.module import Module, Parameter, _dtype


class LayerNorm(Module):
    """LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=np.float32).

    Normalises over the last len(normalized_shape) dims (biased variance, as torch); weight = 1,
    bias = 0 (seed is accepted as every module's, and unused: nothing is random here).
    input (..., *normalized_shape) -> same shape."""

    _optional = ("weight", "bias")

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=np.float32,
                 seed=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        shape = tuple(normalized_shape)
        if not shape or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in shape):
            raise ValueError(f"normalized_shape must be a positive int or a tuple of them, got {normalized_shape!r}")
        self.normalized_shape = tuple(int(n) for n in shape)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        dtype = _dtype(dtype)
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype)) if elementwise_affine and bias else None

    def reset_parameters(self, rng=None):
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def forward(self, input):
        x = np.asarray(input)
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k:] != self.normalized_shape:
            raise ValueError(f"LayerNorm: input must have shape (..., {', '.join(map(str, self.normalized_shape))}), "
                             f"got {x.shape}")
        x2 = x.reshape(x.shape[:x.ndim - k] + (-1,)) if k > 1 else x  # (..., C)
        w = None if self.weight is None else self.weight.data.reshape(-1)
        b = None if self.bias is None else self.bias.data.reshape(-1)
        y, mean, rstd = F.layer_norm(x2, w, b, self.eps, return_stats=True)
        self._save(x2, mean, rstd, x.shape)
        return y.reshape(x.shape)

    def backward(self, grad_output):
        x2, mean, rstd, shape = self._take()
        g = np.asarray(grad_output)
        if g.shape != shape:
            raise ValueError(f"LayerNorm: grad_output must have the output's shape {shape}, got {g.shape}")
        g = g.reshape(x2.shape)
        w = None if self.weight is None else self.weight.data.reshape(-1)
        dx, dw, db = F.layer_norm_backward(g, x2, mean, rstd, w)
        if self.weight is not None:
            self.weight.grad += dw.reshape(self.normalized_shape)
        if self.bias is not None:
            self.bias.grad += db.reshape(self.normalized_shape)
        return dx.reshape(shape)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RMSNorm(Module):
    """RMSNorm(normalized_shape, eps=None, elementwise_affine=True, dtype=np.float32), torch's
    arguments: input / sqrt(mean(input^2) + eps) * weight over the last len(normalized_shape)
    dims (eps None: the machine epsilon of the input's dtype, as torch); weight = 1.
    input (..., *normalized_shape) -> same shape."""

    _optional = ("weight",)

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, dtype=np.float32, seed=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        shape = tuple(normalized_shape)
        if not shape or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in shape):
            raise ValueError(f"normalized_shape must be a positive int or a tuple of them, got {normalized_shape!r}")
        self.normalized_shape = tuple(int(n) for n in shape)
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0):
            raise ValueError(f"eps must be None or a number >= 0, got {eps!r}")
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = Parameter(np.ones(self.normalized_shape, _dtype(dtype))) if elementwise_affine else None

    def reset_parameters(self, rng=None):
        if self.weight is not None:
            self.weight.data[...] = 1

    def forward(self, input):
        x = np.asarray(input)
        w = None if self.weight is None else self.weight.data
        y, rstd = F.rms_norm(x, self.normalized_shape, w, self.eps, return_rstd=True)
        self._save(x, rstd)
        return y

    def backward(self, grad_output):
        x, rstd = self._take()
        w = None if self.weight is None else self.weight.data
        dx, dw = F.rms_norm_backward(grad_output, x, rstd, self.normalized_shape, w)
        if self.weight is not None:
            self.weight.grad += dw
        return dx

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
