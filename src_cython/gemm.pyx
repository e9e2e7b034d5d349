"""The row-major GEMM that every compiled kernel calls (_blas.pxd), callable from Python so that
tests/test_blas_guards.py can check its promises on whatever BLAS or oneDNN is loaded: alpha = 0,
k = 0 and beta = 0 over NaN give the same result whichever kernels they picked for the CPU."""
from cython cimport floating
from libc.limits cimport INT_MAX

from _blas cimport gemm_rowmajor_on, sgemm_rowmajor_fn

from fastattn._compiled._gemm_engine import sgemm_address


def _gemm(bint trans_a, bint trans_b, const floating[:, ::1] a, const floating[:, ::1] b,
          double alpha, double beta, floating[:, ::1] c, str engine="openblas"):
    # c (m, n) = alpha * op(a) @ op(b) + beta * c, with op(a) (m, k) and op(b) (k, n); float32
    # products of more than one row on `engine`
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef tuple op_a = (a.shape[1], a.shape[0]) if trans_a else (a.shape[0], a.shape[1])
    cdef tuple op_b = (b.shape[1], b.shape[0]) if trans_b else (b.shape[0], b.shape[1])
    if op_a != (m, k) or op_b != (k, n):
        raise ValueError("gemm: op(a) %s, op(b) %s and c %s do not fit" % (op_a, op_b, (m, n)))
    if max(m, n, k) > INT_MAX:
        raise ValueError("gemm: sizes above %d are not supported" % INT_MAX)
    if m == 0 or n == 0:
        return
    # (an operand with no elements is not read: c stands in for its address)
    cdef const floating* pa = &a[0, 0] if k else &c[0, 0]
    cdef const floating* pb = &b[0, 0] if k else &c[0, 0]
    cdef sgemm_rowmajor_fn sgemm = <sgemm_rowmajor_fn><size_t>sgemm_address(engine)
    with nogil:
        gemm_rowmajor_on(sgemm, trans_a, trans_b, m, n, k, <floating>alpha, pa, max(a.shape[1], 1), pb,
                      max(b.shape[1], 1), <floating>beta, &c[0, 0], n)
