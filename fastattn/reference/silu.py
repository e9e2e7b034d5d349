import numpy as np


def _sigmoid(x):
    # 1 / (1 + exp(-x)) without overflow warnings: exp(-x) of a large negative x is inf, 1/inf = 0
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def silu(x):
    """x * sigmoid(x) (SiLU, swish)."""
    return (x * _sigmoid(x)).astype(x.dtype)


def silu_backward(grad_output, x):
    """grad_output * silu'(x), silu'(x) = s (1 + x (1 - s)), s = sigmoid(x)."""
    s = _sigmoid(x)
    return (grad_output * s * (1 + x * (1 - s))).astype(x.dtype)


def silu_mul(gate, up):
    """silu(gate) * up: the SwiGLU product of a Llama MLP's two projections."""
    return (silu(gate) * up).astype(gate.dtype)


def silu_mul_backward(grad_output, gate, up):
    """(grad_gate, grad_up) of silu_mul(gate, up)."""
    return silu_backward(grad_output * up, gate), (grad_output * silu(gate)).astype(gate.dtype)
