"""Rotary position embedding, Hugging Face's rotate-half convention, and its backward (the
compiled twin of fastattn/reference/rotary.py). With h = D / 2 and x = [x1, x2] (halves):

    forward   y = [x1 cos1 - x2 sin1,  x2 cos2 + x1 sin2]     (x cos + rotate_half(x) sin)
    backward dx = [g1 cos1 + g2 sin2,  g2 cos2 - g1 sin1]     (the transposed rotation)

x is read where it lies when its rows are contiguous (any other strides: a head view of a fused
projection; rows of strided elements are copied first), the result is new and contiguous, so a
(B, T, H, D) projection comes out rotated in (B, H, T, D) order at once. Each row runs on
row_ops_template.h's fa_rotary_row.
"""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport prange

from _row_ops cimport rotary_row

from fastattn._threads import threads_for


def _rotate(const floating[:, :, :, :] x, const floating[:, :, ::1] cos, const floating[:, :, ::1] sin,
            floating[:, :, :, ::1] out, bint backward, int num_threads):
    # x, out (P, Q, T, D), rows contiguous; cos, sin (Pc, T, D) with Pc = 1 (shared) or P (per
    # batch row)
    cdef Py_ssize_t P = x.shape[0], Q = x.shape[1], T = x.shape[2], D = x.shape[3], h = D // 2
    cdef Py_ssize_t Pc = cos.shape[0], w, p, qh, t, pc
    if (D % 2 or (Pc != 1 and Pc != P) or cos.shape[1] != T or cos.shape[2] != D
            or sin.shape[0] != Pc or sin.shape[1] != T or sin.shape[2] != D or out.shape[0] != P
            or out.shape[1] != Q or out.shape[2] != T or out.shape[3] != D or num_threads < 1
            or (D > 1 and x.strides[3] != sizeof(floating))):
        raise ValueError("rotary_embedding: inconsistent shapes x (%d, %d, %d, %d), cos (%d, %d, %d), or rows of x "
                         "not contiguous"
                         % (P, Q, T, D, Pc, cos.shape[1], cos.shape[2]))
    if h == 0:
        return
    for w in prange(P * Q * T, nogil=True, schedule="static", num_threads=num_threads):
        p = w // (Q * T)
        qh = (w // T) % Q
        t = w % T
        pc = p if Pc > 1 else 0
        rotary_row(&out[p, qh, t, 0], &x[p, qh, t, 0], &cos[pc, t, 0], &sin[pc, t, 0], h, backward)


@cython.wraparound(True)
def _run(x, cos, sin, backward):
    # x (..., T, D) as (P, Q, T, D): (B, H, T, D) -> P = B, Q = H; cos, sin (T, D) or (B, T, D)
    shape = x.shape
    if x.ndim == 2:
        x4 = x[None, None]
    elif x.ndim == 3:
        x4 = x[None]
    else:
        x4 = x.reshape((-1,) + shape[-3:]) if x.ndim > 4 else x
    if x4.strides[-1] != x4.itemsize:  # (rows of strided elements: the row loop reads a copy)
        x4 = np.ascontiguousarray(x4)
    c = np.ascontiguousarray(cos, dtype=x.dtype)
    s = np.ascontiguousarray(sin, dtype=x.dtype)
    c3 = c.reshape((-1,) + c.shape[-2:])
    s3 = s.reshape(c3.shape)
    out = np.empty(x4.shape, dtype=x.dtype)
    _rotate(x4, c3, s3, out, backward, threads_for(6 * out.size))
    return out.reshape(shape)


def rotary_embedding(x, cos, sin):
    """x (..., T, D) rotated by cos, sin (T, D) or x.shape[:-3] + (T, D). Inputs are validated
    by fastattn.functional."""
    return _run(x, cos, sin, False)


def rotary_embedding_backward(grad_output, cos, sin):
    return _run(grad_output, cos, sin, True)
