"""Linear products with int8 weights on fastattn's own AVX2 kernels (int8_avx2.h): the int8 engine
where oneDNN has no VNNI (src_cython/linear_lowp.pyx runs them on oneDNN where it has), and where
the float32 products are on the BLAS (FASTATTN_GEMM=openblas). No oneDNN here.

y (M, N) = float(qx @ qw^T) * sx[m] * sw[n] + b[n]: qx (M, K) the rows of x quantized at run time
(lowp_rows.h's fa_quantize_row_s8, as fastattn/reference/linear_lowp.py), widened to int16 once;
qw (N, K) the weight's plain int8 rows, read as they are (the weight keeps no other copy). The
integer sums are exact, so the output is that of the reference bit for bit, whatever the threads.

The output is cut into blocks of BLOCK_ROWS x BLOCK_COLS, dealt to the threads in contiguous runs;
a single row (decode) is cut by columns alone, so that every thread streams its share of the
weight.
"""
import numpy as np

cimport cython
from cython.parallel cimport parallel, prange
from libc.stdint cimport int8_t, int16_t, int64_t

from _parts cimport in_part

from fastattn._threads import threads_for

cdef extern from "lowp_rows.h" nogil:
    float fa_quantize_row_s8(const float* x, int64_t n, int8_t* q)

cdef extern from "int8_avx2.h" nogil:
    int fa_int8_avx2_supported()
    void fa_widen_row_s8(const int8_t* a, int64_t n, int16_t* out, int64_t n16)
    void fa_int8_block(const int8_t* xq, const int16_t* a16, int64_t K16, const int8_t* q, int64_t K,
                       const float* sx, const float* sw, const float* bias, float* y, int64_t N,
                       int64_t r0, int64_t r1, int64_t c0, int64_t c1)

SUPPORTED = bool(fa_int8_avx2_supported())

# Blocks: BLOCK_ROWS activation rows (32 x K int16: 24 KiB at K = 384, in L1 while a tile of
# weight rows meets each of them) by BLOCK_COLS weight rows (128 x K bytes, in L2). Zen 3, 2
# threads, in one process: (640, 384) -> 1152 and (640, 1536) -> 384 at 132 and 156 GOP/s
# against 106 and 125 in blocks of 96 x 64 (benchmarks/linear_sweep.py's int8 column times the
# models' products). The integer sums are exact: any blocking gives the same output.
cdef Py_ssize_t BLOCK_ROWS = 32
cdef Py_ssize_t BLOCK_COLS = 128

# |acc| <= 128 * 127 * K must fit int32 (-128 in a weight read from a file, by |x| <= 127)
MAX_K = 2147483647 // (128 * 127)


def _forward(const float[:, ::1] x, const int8_t[:, ::1] q, const float[::1] sw, const float[::1] b,
             float[:, ::1] y, int num_threads):
    # x (M, K), q (N, K) int8, sw (N,), b (N,) or None -> y (M, N)
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = q.shape[0]
    cdef Py_ssize_t K16 = (K + 15) // 16 * 16, r, i, t, nr, nc, nblocks, parts, br, r0, c0
    cdef bint has_bias = b is not None
    if not SUPPORTED:
        raise ValueError("linear: the int8 kernels of fastattn._compiled.linear_int8 need AVX2, which this CPU lacks")
    if q.shape[1] != K or y.shape[0] != M or y.shape[1] != N or sw.shape[0] != N or (has_bias and b.shape[0] != N):
        raise ValueError("linear: x (%d, %d), int8 weight (%d, %d), scales (%d,), out (%d, %d)" % (
            M, K, N, q.shape[1], sw.shape[0], y.shape[0], y.shape[1]))
    if K > MAX_K:
        raise ValueError("linear: int8 products take in_features <= %d (int32 sums), got %d" % (MAX_K, K))
    if M == 0 or N == 0:
        return
    if K == 0:
        y[:, :] = 0
        if has_bias:
            y[:, :] = b
        return
    xq_arr = np.empty((M, K), np.int8)
    a16_arr = np.empty((M, K16), np.int16)
    sx_arr = np.empty(M, np.float32)
    cdef int8_t[:, ::1] xq = xq_arr
    cdef int16_t[:, ::1] a16 = a16_arr
    cdef float[::1] sx = sx_arr
    br = BLOCK_ROWS if M > BLOCK_ROWS else M
    nr = (M + br - 1) // br
    nc = (N + BLOCK_COLS - 1) // BLOCK_COLS
    nblocks = nr * nc
    parts = min(<Py_ssize_t>num_threads, max(nblocks, M))
    with nogil, parallel(num_threads=parts):
        for r in prange(M, schedule="static"):
            sx[r] = fa_quantize_row_s8(&x[r, 0], K, &xq[r, 0])
            fa_widen_row_s8(&xq[r, 0], K, &a16[r, 0], K16)
        for t in prange(parts, schedule="static", chunksize=1):
            for i in range(nblocks):  # (column blocks outer: a block of weights passes once)
                if in_part(i, 1, nblocks, t, parts):
                    r0 = (i % nr) * br
                    c0 = (i // nr) * BLOCK_COLS
                    fa_int8_block(&xq[0, 0], &a16[0, 0], K16, &q[0, 0], K, &sx[0], &sw[0], &b[0] if has_bias else NULL,
                                  &y[0, 0], N, r0, min(r0 + br, M), c0, min(c0 + BLOCK_COLS, N))


@cython.wraparound(True)
def linear_int8(input, weight, scale, bias=None):
    """input (..., K) float32 @ dequantized(weight (N, K) int8, scale (N,))^T + bias, the
    activations quantized per row (see the module docstring); the signature of
    fastattn/reference/linear_lowp.py's. Inputs are validated by fastattn.functional."""
    x = np.ascontiguousarray(input, dtype=np.float32)
    K, N = x.shape[-1], weight.shape[0]
    y = np.empty(x.shape[:-1] + (N,), dtype=np.float32)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    M = x.size // K if K else int(np.prod(x.shape[:-1]))
    _forward(x.reshape(M, K), np.ascontiguousarray(weight), np.ascontiguousarray(scale, dtype=np.float32), b,
             y.reshape(M, N), threads_for(2 * x.size * N))
    return y
