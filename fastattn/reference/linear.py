import numpy as np

from fastattn.reference.gelu import gelu
from fastattn.reference.linear_lowp import linear_lowp

def linear(input, weight, bias=None):
    """input (..., in) @ weight.T + bias: weight (out, in), bias (out,) -> (..., out). weight may
    be an int8 or bfloat16 weight of fastattn/_lowp.py (see linear_lowp.py)."""
    if not isinstance(weight, np.ndarray):
        return linear_lowp(input, weight, bias)
    y = input @ weight.T
    return y if bias is None else y + bias


def linear_gelu(input, weight, bias=None, approximate="none", return_pre=False):
    """gelu(linear(input, weight, bias)); with return_pre, (that, the linear output)."""
    y = linear(input, weight, bias)
    return (gelu(y, approximate), y) if return_pre else gelu(y, approximate)


def linear_backward(grad_output, input, weight):
    """(grad_input (..., in), grad_weight (out, in), grad_bias (out,)) of linear, given grad_output (..., out).

        dX = dY W,   dW = dY^T X (summed over every leading index),   db = sum of dY over rows
    """
    dy = grad_output.reshape(-1, grad_output.shape[-1])
    x = input.reshape(-1, input.shape[-1])
    return grad_output @ weight, dy.T @ x, dy.sum(axis=0)
