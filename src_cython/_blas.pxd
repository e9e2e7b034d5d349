# Row-major GEMM on top of scipy's Fortran (column-major) BLAS.
from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memset
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


cdef inline void _scale_rows(int m, int n, floating beta, floating* c, int ldc) noexcept nogil:
    """C (m, n) = beta * C, without a BLAS; beta = 0 writes zeros (never 0 * NaN)."""
    cdef int i, j
    if beta == 1:
        return
    for i in range(m):
        if beta == 0:
            memset(c + <Py_ssize_t>i * ldc, 0, n * sizeof(floating))
        else:
            for j in range(n):
                c[<Py_ssize_t>i * ldc + j] *= beta


# A row-major sgemm (oneDNN's dnnl_sgemm: transa, transb, M, N, K, alpha, A, lda, B, ldb, beta,
# C, ldc; returns a status, 0 for success), or NULL for the BLAS's.
ctypedef int (*sgemm_rowmajor_fn)(char, char, int64_t, int64_t, int64_t, float, const float*,
                                  int64_t, const float*, int64_t, float, float*, int64_t) noexcept nogil


cdef inline void gemm_rowmajor(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                               const floating* a, int lda, const floating* b, int ldb,
                               floating beta, floating* c, int ldc) noexcept nogil:
    gemm_rowmajor_on(NULL, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef inline void gemm_rowmajor_on(sgemm_rowmajor_fn row_sgemm, bint trans_a, bint trans_b, int m,
                                  int n, int k, floating alpha, const floating* a, int lda,
                                  const floating* b, int ldb, floating beta, floating* c,
                                  int ldc) noexcept nogil:
    """C (m, n) = alpha * op(A) @ op(B) + beta * C, all row-major with leading dimensions ld*;
    float products of more than one row on `row_sgemm` when it is not NULL (it must run on the
    calling thread alone: see fastattn/_compiled/_gemm_engine.py), everything else on the BLAS.

    The BLAS sees only calls whose result every kernel agrees on, whatever the CPU it picked
    kernels for (OpenBLAS chooses at run time):
    - never alpha = 0 or k = 0: C = beta * C is done here. (A kernel may skip a product scaled by
      0 or compute it: OpenBLAS's SkylakeX kernels give 0 * inf = NaN where its Haswell ones skip.)
    - never beta = 0, which leaves to the BLAS whether C is read (the standard says it is not, but
      OpenBLAS 0.3.27's gemv scaled y by 0, keeping NaN): C is zeroed here and added to (beta = 1).
      oneDNN's sgemm gets beta = 0 as it is: it does not read C then (tests/test_blas_guards.py
      checks it on C filled with NaN).
    - never m = 0 or n = 0: nothing to do. (OpenBLAS's gemv with k = 0 returns at once, leaving
      y as it was whatever beta is.)

    A row-major matrix is its transpose in column-major order, so this asks BLAS for
    C^T = op(B)^T @ op(A)^T: swap the operands, keep the transpose flags."""
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    cdef int one = 1
    cdef int a_step = lda if trans_a else 1
    if m <= 0 or n <= 0:
        return
    if alpha == 0 or k <= 0:
        _scale_rows(m, n, beta, c, ldc)
        return
    if floating is float:
        # oneDNN takes beta = 0 as the standard says, never reading C (so no pass that zeroes C
        # first, and none that reads it back: an attention score tile is written once); a status
        # other than 0 is an argument oneDNN refused before touching C: the BLAS does it
        if row_sgemm != NULL and m > 1 and row_sgemm(b'T' if trans_a else b'N', b'T' if trans_b else b'N',
                                                     m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) == 0:
            return
    if beta == 0:  # (then beta = 1 below: the BLAS skips its own pass over C)
        _scale_rows(m, n, beta, c, ldc)
        beta = 1
    if m == 1:
        # A single output row is a matrix-vector product: gemv streams op(B) once, where gemm
        # would first copy (pack) it. c (n) = alpha * op(B)^T @ a (k) + beta * c.
        if floating is float:
            sgemv(&ta, &k if trans_b else &n, &n if trans_b else &k, &alpha, <float*>b, &ldb,
                  <float*>a, &a_step, &beta, c, &one)
        else:
            dgemv(&ta, &k if trans_b else &n, &n if trans_b else &k, &alpha, <double*>b, &ldb,
                  <double*>a, &a_step, &beta, c, &one)
        return
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


# int f(int n): the BLAS's thread-local thread count setter, returning the previous value
# (see fastattn/_compiled/_blas_threads.py). NULL when the BLAS has none.
ctypedef int (*blas_threads_fn)(int) noexcept nogil


cdef inline int blas_threads_enter(blas_threads_fn set_local) noexcept nogil:
    """Make BLAS calls from this thread serial; returns what blas_threads_exit restores."""
    return set_local(1) if set_local != NULL else 0


cdef inline void blas_threads_exit(blas_threads_fn set_local, int previous) noexcept nogil:
    if set_local != NULL:
        set_local(previous)
