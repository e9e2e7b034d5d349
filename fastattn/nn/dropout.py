"""Dropout: in train mode zeroes each value with probability p and scales the rest by 1/(1-p)."""
import numpy as np

from fastattn.nn.module import Module, _generator, _probability


def _keep_mask(rng, shape, p, dtype):
    """The factor dropout multiplies by: 0 with probability p, else 1 / (1 - p)."""
    if p == 1:
        return np.zeros(shape, dtype)
    # (uniforms drawn in the dtype of the values: float32 draws are twice as fast)
    return (rng.random(shape, dtype=dtype) >= p).astype(dtype) * dtype.type(1 / (1 - p))


class Dropout(Module):
    """Dropout(p=0.5, seed=None): torch.nn.Dropout. In eval mode (or p = 0) the identity. The
    masks are drawn from the module's Generator (seed: an int, None or a Generator)."""

    def __init__(self, p=0.5, inplace=False, seed=None):
        super().__init__()
        self.p = _probability("p", p)
        self._rng = _generator(seed)

    def forward(self, input):
        x = np.asarray(input)
        if not self.training or self.p == 0:
            self._save(x.shape, None)
            return x
        keep = _keep_mask(self._rng, x.shape, self.p, x.dtype)
        self._save(x.shape, keep)
        return x * keep

    def backward(self, grad_output):
        shape, keep = self._take()
        g = np.asarray(grad_output)
        if g.shape != shape:  # (a broadcastable one would silently give the wrong shape)
            raise ValueError(f"Dropout: grad_output must have the output's shape {shape}, got {g.shape}")
        return g if keep is None else g * keep

    def extra_repr(self):
        return f"p={self.p}"
