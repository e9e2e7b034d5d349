"""Softmax cross-entropy over a vocabulary, fused (the compiled twin of
fastattn/reference/cross_entropy.py). One row of logits at a time: its log-sum-exp is computed
without writing anything, so no (N, V) probability array exists; the backward writes the
gradient row directly.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memset

from _row_ops cimport logsumexp_row, softmax_affine_row

from fastattn._threads import threads_for


def _check(z, target, out_rows):
    if target.shape[0] != z.shape[0] or out_rows != z.shape[0]:
        raise ValueError("cross_entropy: %d logit rows, %d targets, %d outputs" % (
            z.shape[0], target.shape[0], out_rows))


def _forward(const floating[:, ::1] z, const int64_t[::1] target, int64_t ignore_index,
             double label_smoothing, double[::1] row_loss, int num_threads):
    # z (N, V) logits, target (N,) in [0, V) or ignore_index -> row_loss (N,), 0 for ignored rows
    cdef Py_ssize_t N = z.shape[0], V = z.shape[1], i
    cdef floating lse, sum_z
    cdef double loss
    _check(z, target, row_loss.shape[0])
    for i in range(N):  # the kernel indexes with the targets: check them first
        if target[i] != ignore_index and not 0 <= target[i] < V:
            raise ValueError("cross_entropy: target %d outside [0, %d)" % (target[i], V))
    for i in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        if target[i] == ignore_index:
            row_loss[i] = 0
            continue
        sum_z = 0  # (assigned here, so that prange makes it private: the call writes it by address)
        lse = logsumexp_row(&z[i, 0], V, &sum_z)
        # A term of weight 0 is left out, not multiplied by 0: a -inf logit makes the smoothing
        # term inf, and 0 * inf would be NaN (PyTorch gives 0 for [[-inf, 0]] with target 1).
        loss = 0
        if label_smoothing != 1:
            loss = (1 - label_smoothing) * (lse - z[i, target[i]])
        if label_smoothing != 0:
            loss = loss + label_smoothing * (lse - sum_z / V)
        row_loss[i] = loss


def _backward(const floating[:, ::1] z, const int64_t[::1] target, int64_t ignore_index,
              double label_smoothing, double row_scale, floating[:, ::1] grad, int num_threads):
    # grad (N, V) = row_scale * (softmax(z) - (1 - eps) onehot(target) - eps / V), 0 for ignored rows
    cdef Py_ssize_t N = z.shape[0], V = z.shape[1], i
    cdef floating lse, sum_z
    _check(z, target, grad.shape[0])
    if grad.shape[1] != V:
        raise ValueError("cross_entropy: grad has %d columns for %d classes" % (grad.shape[1], V))
    for i in range(N):
        if target[i] != ignore_index and not 0 <= target[i] < V:
            raise ValueError("cross_entropy: target %d outside [0, %d)" % (target[i], V))
    for i in prange(N, nogil=True, schedule="static", num_threads=num_threads):
        if target[i] == ignore_index:
            memset(&grad[i, 0], 0, V * sizeof(floating))
            continue
        sum_z = 0  # (private to the thread, see _forward)
        lse = logsumexp_row(&z[i, 0], V, &sum_z)
        softmax_affine_row(&grad[i, 0], &z[i, 0], V, lse, <floating>row_scale,
                           <floating>(row_scale * label_smoothing / V))
        grad[i, target[i]] -= <floating>(row_scale * (1 - label_smoothing))


def cross_entropy(input, target, ignore_index=-100, label_smoothing=0.0):
    """Mean smoothed negative log-likelihood of the non-ignored rows: input (N, V), target (N,).
    Inputs are validated by fastattn.functional."""
    z = np.ascontiguousarray(input)
    t = np.ascontiguousarray(target, dtype=np.int64)
    row_loss = np.empty(z.shape[0], dtype=np.float64)
    if z.shape[0]:
        _forward(z, t, ignore_index, label_smoothing, row_loss, threads_for(10 * z.size))
    n_valid = np.count_nonzero(t != ignore_index)
    with np.errstate(invalid="ignore"):  # 0 / 0 when nothing is valid: NaN, as in PyTorch
        return np.asarray(row_loss.sum() / n_valid, dtype=z.dtype)


def cross_entropy_backward(input, target, grad_output=1.0, ignore_index=-100, label_smoothing=0.0):
    """d(grad_output * cross_entropy) / d input, (N, V). Inputs are validated by fastattn.functional."""
    z = np.ascontiguousarray(input)
    t = np.ascontiguousarray(target, dtype=np.int64)
    grad = np.empty_like(z)
    if z.shape[0]:
        n_valid = max(np.count_nonzero(t != ignore_index), 1)
        _backward(z, t, ignore_index, label_smoothing, grad_output / n_valid, grad, threads_for(10 * z.size))
    return grad
