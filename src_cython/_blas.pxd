# Row-major GEMM on top of scipy's Fortran (column-major) BLAS.
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


cdef inline void gemm_rowmajor(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                               const floating* a, int lda, const floating* b, int ldb,
                               floating beta, floating* c, int ldc) noexcept nogil:
    """C (m, n) = alpha * op(A) @ op(B) + beta * C, all row-major with leading dimensions ld*.

    A row-major matrix is its transpose in column-major order, so this asks BLAS for
    C^T = op(B)^T @ op(A)^T: swap the operands, keep the transpose flags."""
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    cdef int one = 1
    cdef int a_step = lda if trans_a else 1
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
