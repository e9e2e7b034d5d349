"""ReLU and its backward (the compiled twin of fastattn/reference/relu.py)."""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange

from fastattn._threads import threads_for

# The loops in C, written without branches (a select the compiler vectorises): a branch on the
# sign of random data mispredicts half the time, which made a Cython loop 10x slower than this.
cdef extern from *:
    """
    static void fa_relu_f32(float* y, const float* x, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = x[i] <= 0 ? 0.0f : x[i];  /* NaN <= 0 is false: NaN stays */
    }
    static void fa_relu_f64(double* y, const double* x, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = x[i] <= 0 ? 0.0 : x[i];
    }
    static void fa_relu_backward_f32(float* dx, const float* g, const float* x, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) { float gi = g[i]; dx[i] = x[i] > 0 ? gi : 0.0f; }  /* (g read always: a select) */
    }
    static void fa_relu_backward_f64(double* dx, const double* g, const double* x, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) { double gi = g[i]; dx[i] = x[i] > 0 ? gi : 0.0; }
    }
    """
    void fa_relu_f32(float* y, const float* x, Py_ssize_t n) nogil
    void fa_relu_f64(double* y, const double* x, Py_ssize_t n) nogil
    void fa_relu_backward_f32(float* dx, const float* g, const float* x, Py_ssize_t n) nogil
    void fa_relu_backward_f64(double* dx, const double* g, const double* x, Py_ssize_t n) nogil

# Elements per parallel chunk, as src_cython/gelu.pyx.
cdef Py_ssize_t CHUNK = 16384


def _forward(const floating[::1] x, floating[::1] out, int num_threads):
    cdef Py_ssize_t n = x.shape[0], n_chunks = (n + CHUNK - 1) // CHUNK, c, start
    if out.shape[0] != n or num_threads < 1:
        raise ValueError("relu: out has %d elements, x %d; num_threads %d" % (out.shape[0], n, num_threads))
    for c in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        start = c * CHUNK
        if floating is float:
            fa_relu_f32(&out[start], &x[start], min(CHUNK, n - start))
        else:
            fa_relu_f64(&out[start], &x[start], min(CHUNK, n - start))


def relu(x):
    """max(x, 0). Inputs are validated by fastattn.functional."""
    xc = np.ascontiguousarray(x)
    out = np.empty_like(xc)
    _forward(xc.reshape(-1), out.reshape(-1), threads_for(xc.size))
    return out.reshape(np.shape(x))


def _backward(const floating[::1] g, const floating[::1] x, floating[::1] out, int num_threads):
    cdef Py_ssize_t n = x.shape[0], n_chunks = (n + CHUNK - 1) // CHUNK, c, start
    if g.shape[0] != n or out.shape[0] != n or num_threads < 1:
        raise ValueError("relu_backward: grad_output has %d elements, x %d" % (g.shape[0], n))
    for c in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        start = c * CHUNK
        if floating is float:
            fa_relu_backward_f32(&out[start], &g[start], &x[start], min(CHUNK, n - start))
        else:
            fa_relu_backward_f64(&out[start], &g[start], &x[start], min(CHUNK, n - start))


def relu_backward(grad_output, x):
    """grad_output where x > 0, else 0. Inputs are validated by fastattn.functional."""
    gc = np.ascontiguousarray(grad_output)
    xc = np.ascontiguousarray(x)
    out = np.empty_like(xc)
    _backward(gc.reshape(-1), xc.reshape(-1), out.reshape(-1), threads_for(xc.size))
    return out.reshape(np.shape(x))
