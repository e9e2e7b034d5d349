"""RMSNorm, forward and backward (the compiled twin of fastattn/reference/rms_norm.py).

y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps), one row per task. The sum of squares
is accumulated in double, as the reference takes it in float64.
"""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport prange

from _row_ops cimport rms_norm_row

from fastattn._threads import threads_for

# The weight gradient is a sum over rows: rows are cut into at most MAX_CHUNKS chunks, each
# summed into its own (double) partial buffer, then the buffers are added in chunk order, so the
# result does not depend on the thread count.
cdef Py_ssize_t MAX_CHUNKS = 64


def _forward(const floating[:, ::1] x, floating[:, ::1] out, const floating[::1] weight,
             double eps, floating[::1] rstd, int num_threads):
    # x, out (rows, C); weight (C,) or None; rstd (rows,) or None
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], r
    cdef const floating* w = &weight[0] if weight is not None and C else NULL
    cdef double rs
    if out.shape[0] != rows or out.shape[1] != C or (weight is not None and weight.shape[0] != C) \
            or (rstd is not None and rstd.shape[0] != rows) or num_threads < 1:
        raise ValueError("rms_norm: inconsistent shapes or num_threads < 1")
    for r in prange(rows, nogil=True, schedule="static", num_threads=num_threads):
        rs = rms_norm_row(&out[r, 0] if C else NULL, &x[r, 0] if C else NULL, C, w, eps)
        if rstd is not None:
            rstd[r] = <floating>rs


@cython.wraparound(True)
def rms_norm(x, weight=None, eps=1e-6, return_rstd=False):
    """x (..., C) -> y [, rstd (...)]. Inputs are validated by fastattn.functional."""
    shape = np.shape(x)
    x2 = np.ascontiguousarray(x).reshape(-1, shape[-1])
    out = np.empty_like(x2)
    rstd = np.empty(x2.shape[0], dtype=x2.dtype) if return_rstd else None
    _forward(x2, out, None if weight is None else np.ascontiguousarray(weight), eps, rstd,
             threads_for(4 * x2.size))
    y = out.reshape(shape)
    return (y, rstd.reshape(shape[:-1])) if return_rstd else y


def _backward(const floating[:, ::1] g, const floating[:, ::1] x, const floating[::1] rstd,
              const floating[::1] weight, floating[:, ::1] dx, double[:, ::1] partial,
              int num_threads):
    # g, x, dx (rows, C); rstd (rows,); weight (C,) or None; partial (n_chunks, C) zeroed, or
    # (0, C) without a weight
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], n_chunks = partial.shape[0]
    cdef Py_ssize_t ch, r, c, r0, r1
    cdef const floating* w = &weight[0] if weight is not None and C else NULL
    cdef double rs, dot, gw, xh
    if g.shape[0] != rows or g.shape[1] != C or dx.shape[0] != rows or dx.shape[1] != C \
            or rstd.shape[0] != rows or (w != NULL and n_chunks < 1) or num_threads < 1:
        raise ValueError("rms_norm_backward: inconsistent shapes or num_threads < 1")
    if n_chunks == 0:
        n_chunks = 1
    for ch in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        r0 = ch * rows // n_chunks
        r1 = (ch + 1) * rows // n_chunks
        for r in range(r0, r1):
            rs = rstd[r]
            dot = 0
            for c in range(C):
                gw = g[r, c] * w[c] if w else g[r, c]
                dot = dot + gw * x[r, c] * rs
            dot = dot / C
            for c in range(C):
                xh = x[r, c] * rs
                gw = g[r, c] * w[c] if w else g[r, c]
                dx[r, c] = <floating>(rs * (gw - xh * dot))
                if w:
                    partial[ch, c] += g[r, c] * xh


@cython.wraparound(True)
def rms_norm_backward(grad_output, x, rstd, weight=None):
    """(grad_x, grad_weight or None). Inputs are validated by fastattn.functional."""
    shape = np.shape(x)
    x2 = np.ascontiguousarray(x).reshape(-1, shape[-1])
    g2 = np.ascontiguousarray(grad_output).reshape(x2.shape)
    r1 = np.ascontiguousarray(rstd).reshape(-1)
    dx = np.empty_like(x2)
    n_chunks = min(MAX_CHUNKS, max(x2.shape[0], 1)) if weight is not None else 0
    partial = np.zeros((n_chunks, x2.shape[1]))
    _backward(g2, x2, r1, None if weight is None else np.ascontiguousarray(weight), dx, partial,
              threads_for(8 * x2.size))
    dw = None if weight is None else partial.sum(axis=0).astype(x2.dtype)
    return dx.reshape(shape), dw
