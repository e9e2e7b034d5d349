"""Fused scaled + masked softmax (the compiled twin of fastattn/reference/softmax.py).

One pass per row, in place in the output row: y = x * scale, masked (bool -> -inf, float added),
y = exp(y - max), y /= sum. A row with nothing visible is all zeros (not 0/0).
Backward, from the output alone: dx = scale * y * (g - sum(g * y)) per row.
"""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport prange

from _row_ops cimport exp_sum_row, mask_row, scale_row, softmax_backward_row

from fastattn._compiled._masks import mask_plan
from fastattn._threads import threads_for


cdef void _softmax_rows(const floating* x, floating* y, Py_ssize_t n_rows, Py_ssize_t rows_per_batch,
                        Py_ssize_t C, floating scale, const unsigned char* bool_mask,
                        const floating* add_mask, const Py_ssize_t* mask_offsets,
                        Py_ssize_t mask_rs, Py_ssize_t mask_cs, int num_threads) noexcept nogil:
    # x, y (n_rows, C) contiguous; row r is row r % rows_per_batch of batch r // rows_per_batch.
    cdef Py_ssize_t r, mask_at
    cdef floating total
    for r in prange(n_rows, schedule="static", num_threads=num_threads):
        scale_row(y + r * C, x + r * C, C, scale)
        mask_at = (mask_offsets[r // rows_per_batch] + (r % rows_per_batch) * mask_rs
                   if mask_offsets else 0)
        total = exp_sum_row(y + r * C, C, mask_row(
            y + r * C, C, C, bool_mask + mask_at if bool_mask else NULL, mask_cs,
            add_mask + mask_at if add_mask else NULL, mask_cs))
        scale_row(y + r * C, y + r * C, C, 1 / total if total != 0 else 0)


def _forward(const floating[:, ::1] x, floating[:, ::1] out, Py_ssize_t rows_per_batch,
             double scale, const unsigned char[::1] bool_mask, const floating[::1] add_mask,
             const Py_ssize_t[::1] mask_offsets, Py_ssize_t mask_rs, Py_ssize_t mask_cs,
             int num_threads):
    cdef Py_ssize_t n_rows = x.shape[0], C = x.shape[1]
    # The nogil code trusts these: check them while an exception can still be raised.
    if out.shape[0] != n_rows or out.shape[1] != C:
        raise ValueError("softmax: out has shape (%d, %d), x (%d, %d)" % (
            out.shape[0], out.shape[1], n_rows, C))
    if rows_per_batch < 1 or n_rows % rows_per_batch or num_threads < 1:
        raise ValueError("softmax: bad rows_per_batch %d or num_threads %d" % (rows_per_batch, num_threads))
    mask_len = bool_mask.shape[0] if bool_mask is not None else (
        add_mask.shape[0] if add_mask is not None else 0)
    if mask_len and n_rows and C:
        if (mask_offsets is None or mask_offsets.shape[0] != n_rows // rows_per_batch
                or mask_rs < 0 or mask_cs < 0 or min(mask_offsets) < 0
                or max(mask_offsets) + (rows_per_batch - 1) * mask_rs + (C - 1) * mask_cs >= mask_len):
            raise ValueError("softmax: mask plan does not cover x")
    if n_rows == 0 or C == 0:
        return
    with nogil:
        _softmax_rows(&x[0, 0], &out[0, 0], n_rows, rows_per_batch, C, <floating>scale,
                      &bool_mask[0] if mask_len and bool_mask is not None else NULL,
                      &add_mask[0] if mask_len and add_mask is not None else NULL,
                      &mask_offsets[0] if mask_len else NULL, mask_rs, mask_cs, num_threads)


@cython.wraparound(True)
def masked_softmax(x, mask=None, scale=1.0, axis=-1):
    """softmax(x * scale + mask) along `axis`. Inputs are validated by fastattn.functional."""
    x = np.asarray(x)
    if mask is not None:  # align the mask's dimensions with x's, then move the same axis
        mask = np.asarray(mask)
        mask = np.moveaxis(mask.reshape((1,) * (x.ndim - mask.ndim) + mask.shape), axis, -1)
    xc = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    lead, rows, C = xc.shape[:-2], (xc.shape[-2] if xc.ndim > 1 else 1), xc.shape[-1]
    out = np.empty_like(xc)
    plan = mask_plan(mask, lead, rows, C, xc.dtype)
    _forward(xc.reshape(-1, C), out.reshape(-1, C), rows, float(scale),
             plan.bool_base if plan is not None else None,
             plan.add_base if plan is not None else None,
             plan.offsets if plan is not None else None,
             plan.row_stride if plan is not None else 0,
             plan.col_stride if plan is not None else 0,
             threads_for(10 * xc.size))
    return np.moveaxis(out, -1, axis)


def _backward(const floating[:, ::1] grad_output, const floating[:, ::1] y, floating[:, ::1] grad_x,
              double scale, int num_threads):
    # grad_output, y (the forward's output), grad_x: (rows, C), softmax along C
    cdef Py_ssize_t rows = y.shape[0], C = y.shape[1], r
    if (grad_output.shape[0] != rows or grad_output.shape[1] != C
            or grad_x.shape[0] != rows or grad_x.shape[1] != C):
        raise ValueError("masked_softmax_backward: grad_output (%d, %d), grad_x (%d, %d) and output "
                         "(%d, %d) must have the same shape" % (
                             grad_output.shape[0], grad_output.shape[1], grad_x.shape[0],
                             grad_x.shape[1], rows, C))
    if num_threads < 1:
        raise ValueError("masked_softmax_backward: num_threads must be >= 1")
    if rows == 0 or C == 0:
        return
    for r in prange(rows, nogil=True, schedule="static", num_threads=num_threads):
        softmax_backward_row(&grad_x[r, 0], &grad_output[r, 0], &y[r, 0], C, <floating>scale)


@cython.wraparound(True)
def masked_softmax_backward(grad_output, output, scale=1.0, axis=-1):
    """scale * y * (g - sum(g * y, axis)), y = output. Inputs are validated by fastattn.functional."""
    gc = np.ascontiguousarray(np.moveaxis(np.asarray(grad_output), axis, -1))
    yc = np.ascontiguousarray(np.moveaxis(np.asarray(output), axis, -1))
    C = yc.shape[-1]
    out = np.empty_like(yc)
    _backward(gc.reshape(-1, C), yc.reshape(-1, C), out.reshape(-1, C), float(scale), threads_for(6 * yc.size))
    return np.moveaxis(out, -1, axis)
