"""Layer norm over the last axis (the compiled twin of fastattn/reference/layer_norm.py)."""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport prange

from _row_ops cimport layer_norm_backward_row, layer_norm_row

from fastattn._threads import threads_for

# The backward sums grad_weight and grad_bias over rows in at most this many row chunks, each into
# its own partial buffer, then adds the buffers in chunk order: the result does not depend on
# the number of threads. (Also at most PARTIAL_MAX doubles per buffer in all, to bound memory.)
cdef Py_ssize_t MAX_CHUNKS = 64
cdef Py_ssize_t PARTIAL_MAX = 1 << 22


def _forward(const floating[:, ::1] x, floating[:, ::1] out, const floating[::1] weight,
             const floating[::1] bias, double eps, floating[::1] mean, floating[::1] rstd,
             int num_threads):
    # x, out (rows, C); weight, bias (C,) or None; mean, rstd (rows,) or None (not wanted)
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], r
    cdef const floating* w = NULL
    cdef const floating* b = NULL
    cdef floating* m = NULL
    cdef floating* s = NULL
    if out.shape[0] != rows or out.shape[1] != C:
        raise ValueError("layer_norm: out has shape (%d, %d), x (%d, %d)" % (
            out.shape[0], out.shape[1], rows, C))
    if (weight is not None and weight.shape[0] != C) or (bias is not None and bias.shape[0] != C):
        raise ValueError("layer_norm: weight and bias must have shape (%d,)" % C)
    if (mean is None) != (rstd is None) or (mean is not None and (
            mean.shape[0] != rows or rstd.shape[0] != rows)):
        raise ValueError("layer_norm: mean and rstd must both be None or have shape (%d,)" % rows)
    if num_threads < 1:
        raise ValueError("layer_norm: num_threads must be >= 1")
    if rows == 0 or C == 0:
        return
    if weight is not None:
        w = &weight[0]
    if bias is not None:
        b = &bias[0]
    if mean is not None:
        m = &mean[0]
        s = &rstd[0]
    for r in prange(rows, nogil=True, schedule="static", num_threads=num_threads):
        layer_norm_row(&out[r, 0], &x[r, 0], C, w, b, <floating>eps,
                       m + r if m != NULL else NULL, s + r if s != NULL else NULL)


@cython.wraparound(True)
def layer_norm(x, weight=None, bias=None, eps=1e-5, return_stats=False):
    """Normalise over the last axis. Inputs are validated by fastattn.functional.

    return_stats: also return mean and rstd = 1 / sqrt(var + eps), shape x.shape[:-1]."""
    xc = np.ascontiguousarray(x)
    C = xc.shape[-1]
    out = np.empty_like(xc)
    mean = rstd = None
    if return_stats:
        mean = np.empty(xc.shape[:-1], dtype=xc.dtype)
        rstd = np.empty(xc.shape[:-1], dtype=xc.dtype)
    _forward(xc.reshape(-1, C), out.reshape(-1, C),
             None if weight is None else np.ascontiguousarray(weight),
             None if bias is None else np.ascontiguousarray(bias), float(eps),
             None if mean is None else mean.reshape(-1), None if rstd is None else rstd.reshape(-1),
             threads_for(10 * xc.size))
    return (out, mean, rstd) if return_stats else out


def _backward(const floating[:, ::1] grad_output, const floating[:, ::1] x, const floating[::1] mean,
              const floating[::1] rstd, const floating[::1] weight, floating[:, ::1] grad_x,
              double[:, ::1] partial_w, double[:, ::1] partial_b, int num_threads):
    # grad_output, x, grad_x (rows, C); mean, rstd (rows,); weight (C,) or None
    # partial_w (n_chunks, C) or None (no weight), partial_b (n_chunks, C): zeroed; chunk c adds
    # its rows [c * per_chunk, (c + 1) * per_chunk) into row c of each
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], n_chunks = partial_b.shape[0]
    cdef Py_ssize_t per_chunk, c, r, stop
    cdef const floating* w = NULL
    cdef double* pw = NULL
    if (grad_output.shape[0] != rows or grad_output.shape[1] != C
            or grad_x.shape[0] != rows or grad_x.shape[1] != C):
        raise ValueError("layer_norm_backward: grad_output (%d, %d), grad_x (%d, %d) and x (%d, %d) "
                         "must have the same shape" % (grad_output.shape[0], grad_output.shape[1],
                                                       grad_x.shape[0], grad_x.shape[1], rows, C))
    if mean.shape[0] != rows or rstd.shape[0] != rows:
        raise ValueError("layer_norm_backward: mean (%d,) and rstd (%d,) must have shape (%d,)" % (
            mean.shape[0], rstd.shape[0], rows))
    if (weight is None) != (partial_w is None):
        raise ValueError("layer_norm_backward: partial_w must be given exactly when weight is")
    if (weight is not None and weight.shape[0] != C) or partial_b.shape[1] != C or (
            partial_w is not None and (partial_w.shape[0] != n_chunks or partial_w.shape[1] != C)):
        raise ValueError("layer_norm_backward: weight and the partial sums must have %d columns" % C)
    if n_chunks < 1 or num_threads < 1:
        raise ValueError("layer_norm_backward: need >= 1 chunk and >= 1 thread")
    if rows == 0 or C == 0:
        return
    if weight is not None:
        w = &weight[0]
        pw = &partial_w[0, 0]
    per_chunk = (rows + n_chunks - 1) // n_chunks
    for c in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        stop = min(rows, (c + 1) * per_chunk)
        for r in range(c * per_chunk, stop):
            layer_norm_backward_row(&grad_x[r, 0], pw + c * C if pw != NULL else NULL,
                                    &partial_b[c, 0], &grad_output[r, 0], &x[r, 0], C, w,
                                    mean[r], rstd[r])


@cython.wraparound(True)
def layer_norm_backward(grad_output, x, mean, rstd, weight=None):
    """(grad_x, grad_weight or None, grad_bias). Inputs are validated by fastattn.functional."""
    xc = np.ascontiguousarray(x)
    rows, C = xc.size // xc.shape[-1], xc.shape[-1]
    grad_x = np.empty_like(xc)
    n_chunks = max(1, min(MAX_CHUNKS, rows, PARTIAL_MAX // C))
    partial_w = None if weight is None else np.zeros((n_chunks, C))
    partial_b = np.zeros((n_chunks, C))
    _backward(np.ascontiguousarray(grad_output).reshape(rows, C), xc.reshape(rows, C),
              np.ascontiguousarray(mean).reshape(-1), np.ascontiguousarray(rstd).reshape(-1),
              None if weight is None else np.ascontiguousarray(weight), grad_x.reshape(rows, C),
              partial_w, partial_b, threads_for(15 * xc.size))
    # the order of this sum depends on n_chunks alone, never on the threads
    grad_weight = None if weight is None else partial_w.sum(axis=0).astype(xc.dtype)
    return grad_x, grad_weight, partial_b.sum(axis=0).astype(xc.dtype)
