"""ReLU and its backward (the compiled twin of fastattn/reference/relu.py)."""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange

from fastattn._threads import threads_for


def _forward(const floating[::1] x, floating[::1] out, int num_threads):
    cdef Py_ssize_t n = x.shape[0], i
    if out.shape[0] != n or num_threads < 1:
        raise ValueError("relu: out has %d elements, x %d; num_threads %d" % (out.shape[0], n, num_threads))
    for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
        # (x != x: NaN stays NaN, as torch)
        out[i] = x[i] if (x[i] > 0 or x[i] != x[i]) else 0


def relu(x):
    """max(x, 0). Inputs are validated by fastattn.functional."""
    xc = np.ascontiguousarray(x)
    out = np.empty_like(xc)
    _forward(xc.reshape(-1), out.reshape(-1), threads_for(xc.size))
    return out.reshape(np.shape(x))


def _backward(const floating[::1] g, const floating[::1] x, floating[::1] out, int num_threads):
    cdef Py_ssize_t n = x.shape[0], i
    if g.shape[0] != n or out.shape[0] != n or num_threads < 1:
        raise ValueError("relu_backward: grad_output has %d elements, x %d" % (g.shape[0], n))
    for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
        out[i] = g[i] if x[i] > 0 else 0


def relu_backward(grad_output, x):
    """grad_output where x > 0, else 0. Inputs are validated by fastattn.functional."""
    gc = np.ascontiguousarray(grad_output)
    xc = np.ascontiguousarray(x)
    out = np.empty_like(xc)
    _backward(gc.reshape(-1), xc.reshape(-1), out.reshape(-1), threads_for(xc.size))
    return out.reshape(np.shape(x))
