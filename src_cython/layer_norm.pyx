"""Layer norm over the last axis (the compiled twin of fastattn/reference/layer_norm.py)."""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport prange

from _row_ops cimport layer_norm_row

from fastattn._threads import get_num_threads


def _forward(const floating[:, ::1] x, floating[:, ::1] out, const floating[::1] weight,
             const floating[::1] bias, double eps, int num_threads):
    # x, out (rows, C); weight, bias (C,) or None
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], r
    cdef const floating* w = NULL
    cdef const floating* b = NULL
    if out.shape[0] != rows or out.shape[1] != C:
        raise ValueError("layer_norm: out has shape (%d, %d), x (%d, %d)" % (
            out.shape[0], out.shape[1], rows, C))
    if (weight is not None and weight.shape[0] != C) or (bias is not None and bias.shape[0] != C):
        raise ValueError("layer_norm: weight and bias must have shape (%d,)" % C)
    if num_threads < 1:
        raise ValueError("layer_norm: num_threads must be >= 1")
    if rows == 0 or C == 0:
        return
    if weight is not None:
        w = &weight[0]
    if bias is not None:
        b = &bias[0]
    for r in prange(rows, nogil=True, schedule="static", num_threads=num_threads):
        layer_norm_row(&out[r, 0], &x[r, 0], C, w, b, <floating>eps)


@cython.wraparound(True)
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Normalise over the last axis. Inputs are validated by fastattn.functional."""
    xc = np.ascontiguousarray(x)
    C = xc.shape[-1]
    out = np.empty_like(xc)
    _forward(xc.reshape(-1, C), out.reshape(-1, C),
             None if weight is None else np.ascontiguousarray(weight),
             None if bias is None else np.ascontiguousarray(bias), float(eps), get_num_threads())
    return out
