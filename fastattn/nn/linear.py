"""Linear: y = x W^T + b, torch.nn.Linear's parameters and initialisation."""
import math

import numpy as np

from fastattn import functional as F
from fastattn.nn.module import Module, Parameter, _dtype, _generator, _init_default, _positive_int


def _uniform(rng, bound, shape, dtype):
    return rng.uniform(-bound, bound, shape).astype(dtype)


class Linear(Module):
    """Linear(in_features, out_features, bias=True, dtype=np.float32, seed=None).

    weight (out_features, in_features) and bias (out_features,), both U(-1/sqrt(in), 1/sqrt(in))
    as torch (kaiming_uniform_ with a = sqrt(5)). input (..., in) -> (..., out)."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, seed=None):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features, zero=True)
        self.out_features = _positive_int("out_features", out_features, zero=True)
        dtype = _dtype(dtype)
        self._rng = _generator(seed)
        self.weight = Parameter(np.zeros((self.out_features, self.in_features), dtype))
        self.bias = Parameter(np.zeros(self.out_features, dtype)) if bias else None
        if _init_default():
            self.reset_parameters()

    def reset_parameters(self, rng=None):
        rng = self._rng if rng is None else rng
        bound = 1 / math.sqrt(self.in_features) if self.in_features else 0.0
        self.weight.data[...] = _uniform(rng, bound, self.weight.data.shape, self.weight.data.dtype)
        if self.bias is not None:
            self.bias.data[...] = _uniform(rng, bound, self.bias.data.shape, self.bias.data.dtype)

    def forward(self, input):  # (..., in) -> (..., out)
        x = np.asarray(input)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: input must have shape (..., {self.in_features}), got {x.shape}")
        self._save(x)
        return F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)

    def backward(self, grad_output):  # (..., out) -> (..., in)
        (x,) = self._take()
        dx, dw, db = F.linear_backward(grad_output, x, self.weight.data)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def _quantize_own(self, compute_type):
        self._quantize_param("weight", "bfloat16" if compute_type == "bfloat16" else "int8")

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
