import numpy as np


def _rotate_half(x):
    """[x1, x2] -> [-x2, x1] over the last axis, split in halves (Hugging Face's rotate_half)."""
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def _per_head(table):
    """cos or sin (T, D) as is, or x.shape[:-3] + (T, D) with a heads axis inserted before T."""
    return table if table.ndim == 2 else table[..., None, :, :]


def rotary_embedding(x, cos, sin):
    """x * cos + rotate_half(x) * sin: rotary position embedding, Hugging Face's convention
    (the two halves of each head, not interleaved pairs). x (..., H, T, D); cos, sin (T, D) or
    x.shape[:-3] + (T, D) (a position table per batch row), shared by the heads."""
    return np.ascontiguousarray(x * _per_head(cos) + _rotate_half(x) * _per_head(sin), dtype=x.dtype)


def rotary_embedding_backward(grad_output, cos, sin):
    """The gradient of rotary_embedding with respect to x: the transpose of the rotation,
    g * cos + R^T (g * sin), R^T [a, b] = [b, -a] = -rotate_half."""
    return (grad_output * _per_head(cos) - _rotate_half(grad_output * _per_head(sin))).astype(grad_output.dtype)
