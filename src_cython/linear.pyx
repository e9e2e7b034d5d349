"""Linear layer forward and backward (the compiled twin of fastattn/reference/linear.py).

The products go to scipy's BLAS, but split into blocks over fastattn's own OpenMP threads with
BLAS serial inside each: a model then runs on one thread pool. (Calling a threaded BLAS between
the OpenMP kernels made two pools spin against each other on 2 cores: a GPT training step took
4x longer than with either pool alone.)
"""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.limits cimport INT_MAX
from libc.string cimport memset

from _blas cimport blas_threads_enter, blas_threads_exit, blas_threads_fn, gemm_rowmajor
from _row_ops cimport add_row

from fastattn._compiled._blas_threads import local_setter_address, serial_blas
from fastattn._threads import get_num_threads

cdef blas_threads_fn _blas_set_local = <blas_threads_fn><size_t>local_setter_address()

# The products are cut into blocks whose size depends on the shapes only, never on the thread
# count (a BLAS call's rounding can depend on where the call's edges fall, and the results must
# not depend on the thread count); each thread takes one contiguous, even run of blocks (static).
# Before, blocks of 128 scheduled dynamically gave the GPT's 768 x 128 products 6 row blocks and a
# single dW block, and the threads spent much of their time waiting for one another.
cdef Py_ssize_t BLOCK_M = 128  # at most this many rows of x / dy per BLAS call (forward, dx)
cdef Py_ssize_t BLOCK_N = 64   # at most this many output features per BLAS call (dw, db)


cdef inline Py_ssize_t _even_block(Py_ssize_t n, Py_ssize_t most) noexcept nogil:
    """The size of ceil(n / most) equal blocks that cover n (the last may be shorter): n = 65
    with most = 64 gives 33 + 32, not 64 + 1, so that the two blocks can go to two threads."""
    cdef Py_ssize_t count = (n + most - 1) // most
    return (n + count - 1) // count


cdef inline Py_ssize_t _first(Py_ssize_t n_blocks, Py_ssize_t t, Py_ssize_t parts) noexcept nogil:
    """First block of part t when n_blocks blocks go to `parts` contiguous, even parts."""
    return n_blocks * t // parts


def _check(Py_ssize_t M, Py_ssize_t K, Py_ssize_t N, int num_threads):
    if max(M, K, N) > INT_MAX:  # BLAS takes 32-bit sizes
        raise ValueError("linear: sizes above %d are not supported" % INT_MAX)
    if num_threads < 1:
        raise ValueError("linear: num_threads must be >= 1")


def _forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
             floating[:, ::1] y, int num_threads):
    # x (M, K), w (N, K), b (N,) or None -> y (M, N) = x w^T + b, in blocks of bm <= BLOCK_M rows
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.shape[0], t, blk, r0, rows, r, c
    cdef Py_ssize_t bm, n_blocks, parts
    cdef int blas_threads = 0
    cdef bint has_bias = b is not None
    if w.shape[1] != K or y.shape[0] != M or y.shape[1] != N or (b is not None and b.shape[0] != N):
        raise ValueError("linear: x (%d, %d), weight (%d, %d), out (%d, %d)" % (
            M, K, w.shape[0], w.shape[1], y.shape[0], y.shape[1]))
    _check(M, K, N, num_threads)
    if M == 0 or N == 0:
        return
    if K == 0:
        y[:, :] = 0
        if b is not None:
            y[:, :] = b
        return
    bm = _even_block(M, BLOCK_M)
    n_blocks = (M + bm - 1) // bm
    parts = min(<Py_ssize_t>num_threads, n_blocks)
    with serial_blas, nogil, parallel(num_threads=parts):
        blas_threads = blas_threads_enter(_blas_set_local)
        for t in prange(parts, schedule="static", chunksize=1):
            for blk in range(_first(n_blocks, t, parts), _first(n_blocks, t + 1, parts)):
                r0 = blk * bm
                rows = min(bm, M - r0)
                if has_bias:  # start from the bias, then add x w^T (beta = 1)
                    for r in range(rows):
                        for c in range(N):
                            y[r0 + r, c] = b[c]
                gemm_rowmajor(False, True, rows, N, K, 1, &x[r0, 0], K, &w[0, 0], K,
                              1 if has_bias else 0, &y[r0, 0], N)
        blas_threads_exit(_blas_set_local, blas_threads)


def _backward(const floating[:, ::1] dy, const floating[:, ::1] x, const floating[:, ::1] w,
              floating[:, ::1] dx, floating[:, ::1] dw, floating[::1] db, int num_threads):
    # dy (M, N), x (M, K), w (N, K) -> dx (M, K) = dy w; dw (N, K) = dy^T x; db (N) = sum_rows dy.
    # Thread t computes part t of dx's row blocks and part t of dw's feature blocks: the two
    # products cost the same, so the threads stay even, and no two write one element (no
    # reduction across threads: each sum over M is in one BLAS call).
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.shape[0], t, blk, r0, rows, n0, cols, r
    cdef Py_ssize_t bm, bn, m_blocks, n_blocks, parts
    cdef int blas_threads = 0
    if (dy.shape[0] != M or dy.shape[1] != N or w.shape[1] != K or dx.shape[0] != M
            or dx.shape[1] != K or dw.shape[0] != N or dw.shape[1] != K or db.shape[0] != N):
        raise ValueError("linear backward: inconsistent shapes")
    _check(M, K, N, num_threads)
    if M == 0 or N == 0 or K == 0:
        dx[:, :] = 0
        dw[:, :] = 0
        db[:] = 0
        if M and N:
            db[:] = np.asarray(dy).sum(axis=0)
        return
    bm = _even_block(M, BLOCK_M)
    bn = _even_block(N, BLOCK_N)
    m_blocks = (M + bm - 1) // bm
    n_blocks = (N + bn - 1) // bn
    parts = min(<Py_ssize_t>num_threads, max(m_blocks, n_blocks))
    with serial_blas, nogil, parallel(num_threads=parts):
        blas_threads = blas_threads_enter(_blas_set_local)
        for t in prange(parts, schedule="static", chunksize=1):
            for blk in range(_first(m_blocks, t, parts), _first(m_blocks, t + 1, parts)):
                r0 = blk * bm
                rows = min(bm, M - r0)
                # dx[r0:r0+rows] (rows, K) = dy[r0:r0+rows] (rows, N) @ w (N, K)
                gemm_rowmajor(False, False, rows, K, N, 1, &dy[r0, 0], N, &w[0, 0], K,
                              0, &dx[r0, 0], K)
            for blk in range(_first(n_blocks, t, parts), _first(n_blocks, t + 1, parts)):
                n0 = blk * bn
                cols = min(bn, N - n0)
                # dw[n0:n0+cols] (cols, K) = dy[:, n0:n0+cols]^T (cols, M) @ x (M, K)
                gemm_rowmajor(True, False, cols, K, M, 1, &dy[0, n0], N, &x[0, 0], K,
                              0, &dw[n0, 0], K)
                memset(&db[n0], 0, cols * sizeof(floating))
                for r in range(M):
                    add_row(&db[n0], &dy[r, n0], cols)
        blas_threads_exit(_blas_set_local, blas_threads)


@cython.wraparound(True)
def linear(input, weight, bias=None):
    """input (..., in) @ weight.T + bias. Inputs are validated by fastattn.functional."""
    x = np.ascontiguousarray(input)
    K, N = x.shape[-1], weight.shape[0]
    y = np.empty(x.shape[:-1] + (N,), dtype=x.dtype)
    _forward(x.reshape(-1, K), np.ascontiguousarray(weight),
             None if bias is None else np.ascontiguousarray(bias), y.reshape(-1, N), get_num_threads())
    return y


@cython.wraparound(True)
def linear_backward(grad_output, input, weight):
    """(grad_input, grad_weight, grad_bias) of linear. Inputs are validated by fastattn.functional."""
    x = np.ascontiguousarray(input)
    K, N = x.shape[-1], weight.shape[0]
    dx = np.empty_like(x)
    dw = np.empty((N, K), dtype=x.dtype)
    db = np.empty(N, dtype=x.dtype)
    _backward(np.ascontiguousarray(grad_output).reshape(-1, N), x.reshape(-1, K),
              np.ascontiguousarray(weight), dx.reshape(-1, K), dw, db, get_num_threads())
    return dx, dw, db
