"""Activations: ReLU, GELU and SiLU (on F.relu, F.gelu and F.silu)."""
import numpy as np

from fastattn import functional as F
from fastattn.nn.module import Module


class ReLU(Module):
    """max(x, 0), elementwise."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, input):
        y = F.relu(input)
        self._save(y)  # (y > 0 exactly where x > 0: what the backward needs)
        return y

    def backward(self, grad_output):
        (y,) = self._take()
        return F.relu_backward(grad_output, y)


class GELU(Module):
    """GELU(approximate="none"): x Phi(x) (erf), or the tanh approximation ("tanh")."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        x = np.asarray(input)
        self._save(x)
        return F.gelu(x, self.approximate)

    def backward(self, grad_output):
        (x,) = self._take()
        return F.gelu_backward(grad_output, x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """SiLU (swish): x * sigmoid(x), elementwise (inplace is accepted, as torch's, and unused)."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, input):
        x = np.asarray(input)
        self._save(x)
        return F.silu(x)

    def backward(self, grad_output):
        (x,) = self._take()
        return F.silu_backward(grad_output, x)
