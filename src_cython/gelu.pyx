"""GELU, exact (erf) or tanh form (the compiled twin of fastattn/reference/gelu.py)."""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange

from _row_ops cimport gelu_backward_row, gelu_row

from fastattn._threads import threads_for

# Elements per parallel chunk: large enough to amortise scheduling, small enough to balance.
cdef Py_ssize_t CHUNK = 16384


def _forward(const floating[::1] x, floating[::1] out, bint tanh_form, int num_threads):
    cdef Py_ssize_t n = x.shape[0], n_chunks = (n + CHUNK - 1) // CHUNK, c, start
    if out.shape[0] != n:
        raise ValueError("gelu: out has %d elements, x %d" % (out.shape[0], n))
    if num_threads < 1:
        raise ValueError("gelu: num_threads must be >= 1")
    for c in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        start = c * CHUNK
        gelu_row(&out[start], &x[start], min(CHUNK, n - start), tanh_form)


def gelu(x, approximate="none"):
    """x/2 * (1 + erf(x / sqrt 2)), or the tanh form. Inputs are validated by fastattn.functional."""
    xc = np.ascontiguousarray(x)
    out = np.empty_like(xc)
    _forward(xc.reshape(-1), out.reshape(-1), approximate == "tanh", threads_for(20 * xc.size))
    return out.reshape(np.shape(x))  # (ascontiguousarray makes a 0-d input 1-d)


def _backward(const floating[::1] grad_output, const floating[::1] x, floating[::1] grad_input,
              bint tanh_form, int num_threads):
    # grad_output, x, grad_input: (n,), flattened
    cdef Py_ssize_t n = x.shape[0], n_chunks = (n + CHUNK - 1) // CHUNK, c, start
    if grad_output.shape[0] != n or grad_input.shape[0] != n:
        raise ValueError("gelu_backward: grad_output has %d elements, grad_input %d, x %d" % (
            grad_output.shape[0], grad_input.shape[0], n))
    if num_threads < 1:
        raise ValueError("gelu_backward: num_threads must be >= 1")
    for c in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        start = c * CHUNK
        gelu_backward_row(&grad_input[start], &grad_output[start], &x[start], min(CHUNK, n - start),
                          tanh_form)


def gelu_backward(grad_output, x, approximate="none"):
    """grad_output * GELU'(x). Inputs are validated by fastattn.functional."""
    gc = np.ascontiguousarray(grad_output)
    xc = np.ascontiguousarray(x)
    out = np.empty_like(xc)
    _backward(gc.reshape(-1), xc.reshape(-1), out.reshape(-1), approximate == "tanh", threads_for(30 * xc.size))
    return out.reshape(np.shape(x))
