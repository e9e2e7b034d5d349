"""Linear products with int8 and bfloat16 weights on oneDNN's matmul (the compiled twin of
fastattn/reference/linear_lowp.py; the weights come from fastattn/_lowp.py).

int8:  y (M, N) = acc * sx[m] * sw[n] + b[n], acc = qx (M, K) @ qw (N, K)^T in int32 (s8 x s8,
       oneDNN's VNNI / AMX kernels), qx the rows of x quantized at run time (lowp_rows.h).
bf16:  y = bf16(x) @ w_bf16^T + b, oneDNN accumulating in float32 (AVX512-BF16 / AMX).

The output is cut into a grid of blocks, each one oneDNN plan (a primitive made once per block
shape and kept) run on one of fastattn's OpenMP threads with oneDNN serial inside, as
src_cython/linear.pyx does for float32. The grid depends on the shapes only: row panels of
PANEL_ROWS, and column blocks so that a single row (decode) still gives every thread a part.
Weights stay in their plain (N, K) layout; oneDNN packs each block as it goes.
"""
import numpy as np

cimport cython
from cython.parallel cimport parallel, prange
from libc.stdint cimport int8_t, int32_t, int64_t, uint16_t
from libc.string cimport memcpy

from _dnnl cimport *  # (oneDNN's C API: src_cython/_dnnl.pxd)

from fastattn._compiled import _gemm_engine  # (loads libdnnl.so.3, which this module links to)
from fastattn._threads import threads_for

cdef extern from "openmp_info.h":
    void fa_nested_serial() noexcept nogil

cdef extern from "lowp_rows.h" nogil:
    float fa_quantize_row_s8(const float* x, int64_t n, int8_t* q)
    void fa_bf16_row(const float* x, int64_t n, uint16_t* out)
    void fa_int8_epilogue_row(float* y, const int32_t* acc, float sx, const float* sw, const float* b, int64_t n)


# One plan: dst (rows, cols) [ldc] = src (rows, K) @ weights (K, cols) [+ bias (cols)], the weights
# an (N, K) row-major block read transposed. Read by the grid without the GIL.
ctypedef dnnl_plan lowp_plan

cdef dnnl_engine_t _engine = NULL
check(dnnl_engine_create(&_engine, dnnl_cpu, 0), "creating the CPU engine")


cdef class _Plan:
    cdef lowp_plan plan
    cdef readonly str implementation

    def __cinit__(self):
        plan_init(&self.plan)

    def __dealloc__(self):
        plan_free(&self.plan)


cdef _Plan _make_plan(bint int8, int64_t rows, int64_t cols, int64_t K, int64_t ldc, bint bias):
    cdef _Plan p = _Plan()
    cdef dnnl_dims_t src_dims, src_strides, w_dims, w_strides, dst_dims, dst_strides, b_dims, b_strides
    cdef dnnl_data_type_t in_type = dnnl_s8 if int8 else dnnl_bf16
    src_dims[0], src_dims[1], src_strides[0], src_strides[1] = rows, K, K, 1
    w_dims[0], w_dims[1], w_strides[0], w_strides[1] = K, cols, 1, K
    dst_dims[0], dst_dims[1], dst_strides[0], dst_strides[1] = rows, cols, ldc, 1
    check(dnnl_memory_desc_create_with_strides(&p.plan.md[0], 2, src_dims, in_type, src_strides), "a memory descriptor")
    check(dnnl_memory_desc_create_with_strides(&p.plan.md[1], 2, w_dims, in_type, w_strides), "a memory descriptor")
    check(dnnl_memory_desc_create_with_strides(&p.plan.md[2], 2, dst_dims, dnnl_s32 if int8 else dnnl_f32,
                                                       dst_strides), "a memory descriptor")
    if bias:
        b_dims[0], b_dims[1], b_strides[0], b_strides[1] = 1, cols, cols, 1
        check(dnnl_memory_desc_create_with_strides(&p.plan.md[4], 2, b_dims, dnnl_f32, b_strides), "a memory descriptor")
    p.implementation = plan_create(_engine, &p.plan)
    return p


MAX_PLANS = 4096  # then the cache starts again (a plan in use stays alive: its grid holds it)
_plans = {}


def _plan(bint int8, int64_t rows, int64_t cols, int64_t K, int64_t ldc, bint bias):
    """The plan for one block shape, made once. ValueError where oneDNN has only its reference
    (slow) code for it: no silent slow path."""
    key = (int8, rows, cols, K, ldc, bias)
    p = _plans.get(key)
    if p is None:
        if len(_plans) >= MAX_PLANS:
            _plans.clear()
        p = _make_plan(int8, rows, cols, K, ldc, bias)
        if p.implementation.startswith("ref"):
            raise ValueError("linear (%s): oneDNN has no fast kernel on this CPU (oneDNN's ISA: %s) for a "
                             "(%d, %d) @ (%d, %d) product, only its reference code %s" % (
                                 "int8" if int8 else "bfloat16", _gemm_engine.onednn_isa(), rows, K, K, cols,
                                 p.implementation))
        _plans[key] = p
    return p


def implementation(bint int8, int64_t rows, int64_t cols, int64_t K):
    """oneDNN's name for the kernel of one block shape (e.g. "brg:avx512_core_amx")."""
    return _plan(int8, rows, cols, K, cols, False).implementation


cdef int _run(const lowp_plan* p, const void* a, const void* b, const float* bias, void* c,
              void* scratch) noexcept nogil:
    """Run a plan on this thread; 0 on success, else oneDNN's status."""
    cdef int ARGS[5]
    cdef void* handles[5]
    cdef dnnl_memory_t mem[5]
    cdef dnnl_exec_arg_t args[5]
    cdef int i, nargs = 0
    cdef dnnl_stream_t stream = NULL
    cdef dnnl_status_t status = dnnl_stream_create(&stream, _engine, dnnl_stream_default_flags)
    ARGS[0], ARGS[1], ARGS[2], ARGS[3], ARGS[4] = (DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST,
                                                   DNNL_ARG_SCRATCHPAD, DNNL_ARG_BIAS)
    handles[0], handles[1], handles[2], handles[3], handles[4] = (<void*>a, <void*>b, c, scratch, <void*>bias)
    for i in range(5):
        if p.md[i] != NULL and status == dnnl_success:
            status = dnnl_memory_create(&mem[nargs], p.md[i], _engine, handles[i])
            if status == dnnl_success:
                args[nargs].arg, args[nargs].memory = ARGS[i], mem[nargs]
                nargs += 1
    if status == dnnl_success:
        status = dnnl_primitive_execute(p.primitive, stream, nargs, args)
    for i in range(nargs):
        dnnl_memory_destroy(mem[i])
    if stream != NULL:
        dnnl_stream_destroy(stream)
    return <int>status


# The grid. PANEL_ROWS as the float32 panels (src_cython/linear.pyx); column blocks: at most
# MAX_COLS (a (64, 50257) int32 block overflows the caches: 2.3x slower than blocks of 4096, one
# thread, AMX), and enough of them that the blocks number at least MIN_BLOCKS (a decode row on 8
# threads), none narrower than MIN_COLS.
cdef Py_ssize_t PANEL_ROWS = 64
cdef Py_ssize_t MAX_COLS = 4096
cdef Py_ssize_t MIN_COLS = 64
cdef Py_ssize_t MIN_BLOCKS = 8


def _set_grid(Py_ssize_t panel_rows, Py_ssize_t max_cols, Py_ssize_t min_blocks):
    """Set PANEL_ROWS, MAX_COLS and MIN_BLOCKS; returns the previous ones. For benchmarks."""
    global PANEL_ROWS, MAX_COLS, MIN_BLOCKS
    if min(panel_rows, max_cols, min_blocks) < 1:
        raise ValueError("grid sizes must be >= 1")
    previous = (PANEL_ROWS, MAX_COLS, MIN_BLOCKS)
    PANEL_ROWS, MAX_COLS, MIN_BLOCKS = panel_rows, max_cols, min_blocks
    return previous


cdef struct Grid:
    Py_ssize_t rows, cols, inner, br, bc, nr, nc
    const lowp_plan* plan[4]  # [full rows / last rows][full cols / last cols]


cdef inline Py_ssize_t _ceil(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef class _Blocks:
    """The grid of one product: its plans (kept alive here) and per-thread scratchpads."""
    cdef object plans, scratch
    cdef Grid grid
    cdef char* scratch_base
    cdef Py_ssize_t scratch_stride, out_offset

    def __cinit__(self, bint int8, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, bint bias, int parts):
        cdef Grid* g = &self.grid
        cdef Py_ssize_t nc
        g.rows, g.cols, g.inner = M, N, K
        g.br = PANEL_ROWS if M >= 2 * PANEL_ROWS else M
        g.nr = _ceil(M, g.br)
        nc = max(_ceil(N, MAX_COLS), min(_ceil(MIN_BLOCKS, g.nr), max(1, N // MIN_COLS)))
        g.bc = _ceil(_ceil(N, nc), 16) * 16  # (whole 16-column groups: oneDNN's vector width)
        g.bc = min(g.bc, N)
        g.nc = _ceil(N, g.bc)
        plans = []
        for i, rows in enumerate((g.br, M - (g.nr - 1) * g.br)):
            for j, cols in enumerate((g.bc, N - (g.nc - 1) * g.bc)):
                p = _plan(int8, rows, cols, K, cols, bias)
                plans.append(p)
                g.plan[2 * i + j] = &(<_Plan>p).plan
        self.plans = plans
        # per thread: oneDNN's scratchpad, then (column blocks) a dense (br, bc) output: oneDNN
        # picks its brgemm kernels for a dense output only (a (1, 384) block of a 3072-wide one
        # ran on its older gemm:jit, 2x slower)
        self.out_offset = (max((<_Plan>p).plan.scratch_bytes for p in plans) + 4095) // 4096 * 4096
        self.scratch_stride = self.out_offset + ((g.br * g.bc * 4 + 4095) // 4096 * 4096 if g.nc > 1 else 0)
        self.scratch = np.empty(parts * self.scratch_stride + 4096, dtype=np.uint8)
        self.scratch_base = <char*><size_t>((self.scratch.ctypes.data + 4095) // 4096 * 4096)


cdef struct Block:
    Py_ssize_t r0, rows, c0, cols


cdef inline Block _block(const Grid* g, Py_ssize_t i) noexcept nogil:
    """Block i of the grid, column blocks outer (a block of weights is read by its row panels in
    turn, while it is in cache)."""
    cdef Block k
    k.c0 = (i // g.nr) * g.bc
    k.r0 = (i % g.nr) * g.br
    k.rows = min(g.br, g.rows - k.r0)
    k.cols = min(g.bc, g.cols - k.c0)
    return k


cdef inline bint _mine(Py_ssize_t i, Py_ssize_t n, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    """Whether block i of n (of nearly equal cost) falls in part `part` of `parts`: contiguous runs."""
    return (2 * i + 1) * parts // (2 * n) == part


def _sizes(x, w, b, y):
    M, K = x.shape[0], x.shape[1]
    N = w.shape[0]
    if w.shape[1] != K or y.shape[0] != M or y.shape[1] != N or (b is not None and b.shape[0] != N):
        raise ValueError("linear: x (%d, %d), weight (%d, %d), out (%d, %d)" % (
            M, K, w.shape[0], w.shape[1], y.shape[0], y.shape[1]))
    return M, K, N


# |acc| <= 127 * 127 * K must fit int32
MAX_INT8_K = 2147483647 // (127 * 127)


def _forward_int8(const float[:, ::1] x, const int8_t[:, ::1] w, const float[::1] sw,
                  const float[::1] b, float[:, ::1] y, int num_threads):
    # x (M, K), w (N, K) int8, sw (N,), b (N,) or None -> y (M, N)
    cdef Py_ssize_t M, K, N, t, i, r, parts, nblocks
    cdef bint has_bias = b is not None
    cdef int failed = 0, status
    M, K, N = _sizes(x, w, b, y)
    if sw.shape[0] != N:
        raise ValueError("linear: weight scales (%d,) for a (%d, %d) weight" % (sw.shape[0], N, K))
    if K > MAX_INT8_K:
        raise ValueError("linear: int8 products take in_features <= %d (int32 sums), got %d" % (MAX_INT8_K, K))
    if M == 0 or N == 0 or K == 0:
        raise ValueError("linear: empty products are handled by fastattn.functional")
    xq_arr = np.empty((M, K), np.int8)
    sx_arr = np.empty(M, np.float32)
    cdef int8_t[:, ::1] xq = xq_arr
    cdef float[::1] sx = sx_arr
    cdef _Blocks blocks = _Blocks(True, M, N, K, False, num_threads)
    cdef Grid g = blocks.grid
    cdef const lowp_plan* p
    cdef Block k
    cdef char* scratch
    cdef int32_t* acc
    nblocks = g.nr * g.nc
    parts = min(<Py_ssize_t>num_threads, max(nblocks, M))
    with nogil, parallel(num_threads=parts):
        fa_nested_serial()
        for r in prange(M, schedule="static"):
            sx[r] = fa_quantize_row_s8(&x[r, 0], K, &xq[r, 0])
        for t in prange(parts, schedule="static", chunksize=1):
            for i in range(nblocks):
                if _mine(i, nblocks, t, parts):
                    k = _block(&g, i)
                    p = g.plan[2 * (k.r0 + g.br > M) + (k.c0 + g.bc > N)]
                    # acc (rows, cols) int32 = xq[r0:] (rows, K) @ w[c0:]^T (K, cols): in y's
                    # place when the block is full width, else in this thread's buffer
                    scratch = blocks.scratch_base + t * blocks.scratch_stride
                    acc = <int32_t*>&y[k.r0, 0] if g.nc == 1 else <int32_t*>(scratch + blocks.out_offset)
                    status = _run(p, &xq[k.r0, 0], &w[k.c0, 0], NULL, acc, scratch)
                    if status != 0:
                        failed += 1
                    else:
                        for r in range(k.r0, k.r0 + k.rows):
                            fa_int8_epilogue_row(&y[r, k.c0], acc + (r - k.r0) * k.cols, sx[r], &sw[k.c0],
                                                 &b[k.c0] if has_bias else NULL, k.cols)
    if failed:
        raise RuntimeError("oneDNN: the int8 matmul failed on %d blocks" % failed)


def _forward_bf16(const float[:, ::1] x, const uint16_t[:, ::1] w, const float[::1] b,
                  float[:, ::1] y, int num_threads):
    # x (M, K), w (N, K) bfloat16 bits, b (N,) or None -> y (M, N)
    cdef Py_ssize_t M, K, N, t, i, r, parts, nblocks
    cdef bint has_bias = b is not None
    cdef int failed = 0, status
    M, K, N = _sizes(x, w, b, y)
    if M == 0 or N == 0 or K == 0:
        raise ValueError("linear: empty products are handled by fastattn.functional")
    xb_arr = np.empty((M, K), np.uint16)
    cdef uint16_t[:, ::1] xb = xb_arr
    cdef _Blocks blocks = _Blocks(False, M, N, K, has_bias, num_threads)
    cdef Grid g = blocks.grid
    cdef const lowp_plan* p
    cdef Block k
    cdef char* scratch
    cdef float* out
    nblocks = g.nr * g.nc
    parts = min(<Py_ssize_t>num_threads, max(nblocks, M))
    with nogil, parallel(num_threads=parts):
        fa_nested_serial()
        for r in prange(M, schedule="static"):
            fa_bf16_row(&x[r, 0], K, &xb[r, 0])
        for t in prange(parts, schedule="static", chunksize=1):
            for i in range(nblocks):
                if _mine(i, nblocks, t, parts):
                    k = _block(&g, i)
                    p = g.plan[2 * (k.r0 + g.br > M) + (k.c0 + g.bc > N)]
                    scratch = blocks.scratch_base + t * blocks.scratch_stride
                    out = &y[k.r0, 0] if g.nc == 1 else <float*>(scratch + blocks.out_offset)
                    status = _run(p, &xb[k.r0, 0], &w[k.c0, 0], &b[k.c0] if has_bias else NULL, out, scratch)
                    if status != 0:
                        failed += 1
                    elif g.nc > 1:
                        for r in range(k.r0, k.r0 + k.rows):
                            memcpy(&y[r, k.c0], out + (r - k.r0) * k.cols, k.cols * sizeof(float))
    if failed:
        raise RuntimeError("oneDNN: the bfloat16 matmul failed on %d blocks" % failed)


@cython.wraparound(True)
def linear_int8(input, weight, scale, bias=None):
    """input (..., K) float32 @ dequantized(weight (N, K) int8, scale (N,))^T + bias, the
    activations quantized per row (see the module docstring). Inputs are validated by
    fastattn.functional."""
    x = np.ascontiguousarray(input, dtype=np.float32)
    K, N = x.shape[-1], weight.shape[0]
    y = np.empty(x.shape[:-1] + (N,), dtype=np.float32)
    _forward_int8(x.reshape(-1, K), np.ascontiguousarray(weight), np.ascontiguousarray(scale),
                  None if bias is None else np.ascontiguousarray(bias, dtype=np.float32),
                  y.reshape(-1, N), threads_for(2 * x.size * N))
    return y


@cython.wraparound(True)
def linear_bf16(input, weight, bias=None):
    """input (..., K) float32, rounded to bfloat16, @ weight (N, K) (bfloat16 bits, uint16)^T +
    bias, summed in float32. Inputs are validated by fastattn.functional."""
    x = np.ascontiguousarray(input, dtype=np.float32)
    K, N = x.shape[-1], weight.shape[0]
    y = np.empty(x.shape[:-1] + (N,), dtype=np.float32)
    _forward_bf16(x.reshape(-1, K), np.ascontiguousarray(weight),
                  None if bias is None else np.ascontiguousarray(bias, dtype=np.float32),
                  y.reshape(-1, N), threads_for(2 * x.size * N))
    return y


def linear_lowp(input, weight, bias=None):
    """linear with an Int8Weight or BFloat16Weight (fastattn/_lowp.py) as the weight."""
    if weight.compute_type == "int8":
        return linear_int8(input, weight.q, weight.scale, bias)
    return linear_bf16(input, weight.bits, bias)
