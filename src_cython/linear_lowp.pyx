"""Linear products with int8 and bfloat16 weights on oneDNN's matmul (the compiled twin of
fastattn/reference/linear_lowp.py; the weights come from fastattn/_lowp.py).

int8:  y (M, N) = (acc - comp[n]) * sx[m] * sw[n] + b[n], acc = (qx + 128) (M, K) @ qw (N, K)^T in
       int32, comp[n] = 128 * sum_k qw[n, k], so that acc - comp = qx @ qw^T exactly; qx the rows
       of x quantized at run time (lowp_rows.h), given to oneDNN as u8 (qx + 128): u8 x s8 is what
       VNNI and AMX multiply natively (s8 x s8 has oneDNN add a compensation of its own where
       there is no AMX, kept at the end of its packed weights).
bf16:  y = bf16(x) @ w_bf16^T + b, oneDNN accumulating in float32 (AVX512-BF16 / AMX).

Weights are packed once (_Packed, on a weight's first product; fastattn/_lowp.py keeps it) into
the layout oneDNN's matmul picks for them given weights "any" (on AVX512 / AMX for both types:
column blocks of 64 output channels one after another, each K x 64 in VNNI groups of 4 int8 /
2 bfloat16 along K, K padded to whole groups of 16 of those). Every plan is made with "any" too
and checked to pick that same layout, whatever its rows (1 for decode, the panels, the last one).

The output is cut into a grid of blocks, each one oneDNN plan (a primitive made once per block
shape and kept) run on one of fastattn's OpenMP threads with oneDNN serial inside, as
src_cython/linear.pyx does for float32: row panels of PANEL_ROWS, and column blocks (whole
64-column blocks of the packed weight) so that a single row (decode) still gives every thread a
part. bfloat16's grid depends on the shapes only; int8's on the thread count too (see Grid).
"""
import numpy as np

cimport cython
from cython.parallel cimport parallel, prange
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t
from libc.string cimport memcpy

from _dnnl cimport *  # (oneDNN's C API: src_cython/_dnnl.pxd)
from _parts cimport in_part

from fastattn._compiled import _gemm_engine  # (loads libdnnl.so.3, which this module links to)
from fastattn._threads import threads_for

cdef extern from "openmp_info.h":
    void fa_nested_serial() noexcept nogil

cdef extern from "int8_vnni.h" nogil:
    int FA_VNNI_MAX_ROWS
    int fa_int8_vnni_supported()
    void fa_int8_vnni_block(int rows, const uint8_t* u, int64_t ldu, const int8_t* w, int64_t Kp, int32_t* acc)

cdef extern from "lowp_rows.h" nogil:
    float fa_quantize_row_u8(const float* x, int64_t n, uint8_t* u)
    void fa_bf16_row(const float* x, int64_t n, uint16_t* out)
    void fa_int8_epilogue_row(float* y, const int32_t* acc, const int32_t* comp, float sx, const float* sw,
                              const float* b, int64_t n)


# One plan: dst (rows, cols) [ldc] = src (rows, K) @ weights (K, cols) [+ bias (cols)], the weights
# in the packed layout (_Packed). Read by the grid without the GIL.
ctypedef dnnl_plan lowp_plan

cdef dnnl_engine_t _engine = NULL
check(dnnl_engine_create(&_engine, dnnl_cpu, 0), "creating the CPU engine")


# The grid. Row panels of PANEL_ROWS; column blocks: at most MAX_COLS (a (64, 50257) int32 block
# overflows the caches: 2.3x slower than blocks of 4096, one thread, AMX), and enough of them that
# the blocks number at least MIN_BLOCKS (bfloat16: a decode row on 8 threads; its float32 sums can
# differ with the block width, so its grid depends on the shapes only) or the thread count (int8:
# exact sums; each block run costs about 1.7 us, and a GPT-2 decode step's int8 products took
# 0.88x the time with 2 blocks for 2 threads than with 8), none narrower than MIN_COLS, each a
# whole number of the packed weight's column blocks (n_block), the last one the rest.
cdef Py_ssize_t PANEL_ROWS = 64
cdef Py_ssize_t MAX_COLS = 4096
cdef Py_ssize_t MIN_COLS = 64
cdef Py_ssize_t MIN_BLOCKS = 8
# int8 blocks of fewer rows than AMX_MIN_ROWS run on oneDNN's AVX512-VNNI kernels, not its AMX ones
# (GPT-2 small's layer products, 2 threads, in-process A/B on a loaded machine: one row 0.94x the
# AMX time, 4 rows 1.04x, 16 rows 1.29x). bfloat16 stays on AMX (its AVX512-BF16 kernels took
# 1.10x the time at one row, 2.05x at 16).
cdef Py_ssize_t AMX_MIN_ROWS = 4


# int8 products of up to VNNI_ROWS rows run on int8_vnni.h's kernel where the CPU has AVX512-VNNI
# and the weight is in the layout it reads (_Packed.vnni_rows), not on oneDNN: GPT-2 small's 49
# products of a decode step (125 MB of int8 weights), 2 threads, Intel Xeon with AMX, in turns in
# one process: 1 row in 0.73-0.79x oneDNN's time (28.4 GB/s read against 22.2), 2 rows 0.78x,
# 3 rows 0.81x, 4 rows 0.98-1.01x (oneDNN's AMX kernels from 4 rows).
cdef Py_ssize_t VNNI_ROWS = FA_VNNI_MAX_ROWS
VNNI = bool(fa_int8_vnni_supported())


def _set_vnni_rows(Py_ssize_t rows):
    """Set VNNI_ROWS (0: never int8_vnni.h); returns the previous one. For benchmarks."""
    global VNNI_ROWS
    if not 0 <= rows <= FA_VNNI_MAX_ROWS:
        raise ValueError(f"vnni rows must be in [0, {FA_VNNI_MAX_ROWS}], got {rows}")
    previous = VNNI_ROWS
    VNNI_ROWS = rows
    return previous


def _set_amx_min_rows(Py_ssize_t rows):
    """Set AMX_MIN_ROWS (int8); returns the previous one. For benchmarks."""
    global AMX_MIN_ROWS
    previous = AMX_MIN_ROWS
    AMX_MIN_ROWS = rows
    return previous


cdef class _Plan:
    cdef lowp_plan plan
    cdef readonly str implementation

    def __cinit__(self):
        plan_init(&self.plan)

    def __dealloc__(self):
        plan_free(&self.plan)


cdef void _strided(dnnl_memory_desc_t* md, int64_t d0, int64_t d1, int64_t s0, int64_t s1,
                   dnnl_data_type_t dt) except *:
    cdef dnnl_dims_t dims, strides
    dims[0], dims[1], strides[0], strides[1] = d0, d1, s0, s1
    check(dnnl_memory_desc_create_with_strides(md, 2, dims, dt, strides), "a memory descriptor")


cdef dnnl_memory_desc_t _chosen_weights(bint int8, int64_t rows, int64_t cols, int64_t K,
                                        bint avoid_amx) except NULL:
    """A new descriptor (the caller destroys it) of the weights layout that oneDNN's matmul picks
    for a (rows, K) @ (K, cols) product given weights "any"."""
    cdef dnnl_plan p
    cdef dnnl_primitive_desc_t pd = NULL
    cdef dnnl_memory_desc_t chosen = NULL
    cdef dnnl_dims_t dims
    plan_init(&p)
    try:
        _strided(&p.md[0], rows, K, K, 1, dnnl_u8 if int8 else dnnl_bf16)
        _strided(&p.md[2], rows, cols, cols, 1, dnnl_s32 if int8 else dnnl_f32)
        dims[0], dims[1] = K, cols
        check(dnnl_memory_desc_create_with_tag(&p.md[1], 2, dims, dnnl_s8 if int8 else dnnl_bf16,
                                               dnnl_format_tag_any), "the weights descriptor (any layout)")
        pd = matmul_pd(_engine, &p, avoid_amx)
        check(dnnl_memory_desc_clone(&chosen, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0)),
              "copying the chosen weights descriptor")
    finally:
        if pd != NULL:
            dnnl_primitive_desc_destroy(pd)
        plan_free(&p)
    return chosen


cdef tuple _layout(const_dnnl_memory_desc_t md):
    """A (K, cols) weights descriptor as (padded dims, strides, inner block sizes, their dims, bytes):
    oneDNN's blocked layout, element (k, n) at sum_d (i_d // block_d) * strides[d] + its place in
    the inner blocks (see _Packed.take). None for a layout that is not blocked."""
    cdef int kind = 0, nblks = 0, i
    cdef const dnnl_dim_t* padded = NULL
    cdef const dnnl_dim_t* strides = NULL
    cdef const dnnl_dim_t* blks = NULL
    cdef const dnnl_dim_t* idxs = NULL
    check(dnnl_memory_desc_query(md, dnnl_query_format_kind, &kind), "querying a layout")
    if kind != <int>dnnl_blocked:
        return None
    check(dnnl_memory_desc_query(md, dnnl_query_padded_dims, &padded), "querying a layout")
    check(dnnl_memory_desc_query(md, dnnl_query_strides, &strides), "querying a layout")
    check(dnnl_memory_desc_query(md, dnnl_query_inner_nblks_s32, &nblks), "querying a layout")
    if nblks:
        check(dnnl_memory_desc_query(md, dnnl_query_inner_blks, &blks), "querying a layout")
        check(dnnl_memory_desc_query(md, dnnl_query_inner_idxs, &idxs), "querying a layout")
    return ((padded[0], padded[1]), (strides[0], strides[1]), tuple(blks[i] for i in range(nblks)),
            tuple(idxs[i] for i in range(nblks)), dnnl_memory_desc_get_size(md))


def _block_of(layout, int d):
    """The product of the inner block sizes of dim d (0: K, 1: N) of a layout."""
    b = 1
    for size, dim in zip(layout[2], layout[3]):
        if dim == d:
            b *= size
    return b


def _offsets(layout, int d, idx):
    """The element offsets of coordinates idx (int64 array) of dim d: the layout's offset of
    element (k, n) is _offsets(layout, 0, k) + _offsets(layout, 1, n)."""
    idx = np.asarray(idx, dtype=np.int64)
    off = np.zeros(idx.shape, np.int64)
    step, below = 1, 1  # (the inner blocks, innermost first: each a digit of its dim's index)
    for size, dim in zip(reversed(layout[2]), reversed(layout[3])):
        if dim == d:
            off += (idx // below) % size * step
            below *= size
        step *= size
    return off + idx // below * layout[1][d]


cdef class _Packed:
    """An (N, K) weight (int8 q or bfloat16 bits) in the layout oneDNN's matmul picks for it
    (weights "any": on AVX512 / AMX a blocked one of n_block = 64 output columns a block, the
    blocks one after another), made once by a reorder primitive. Every plan that reads it is made
    with weights "any" too and must pick the same layout (see _plan), so that the grid's column
    block at c0 (a multiple of n_block) is the weights at c0 // n_block * block_bytes.
    int8: comp (N,) int32 = 128 * sum_k q[n, k], what the u8 activations (q + 128) add; vnni_rows:
    whether int8_vnni.h reads it (an AVX512-VNNI CPU, and the layout that kernel knows)."""
    cdef dnnl_memory_desc_t md
    cdef readonly object data, comp, layout
    cdef readonly Py_ssize_t N, K, n_block, block_bytes
    cdef readonly bint int8, vnni_rows
    cdef char* base

    def __cinit__(self):
        self.md = NULL

    def __dealloc__(self):
        if self.md != NULL:
            dnnl_memory_desc_destroy(self.md)

    @property
    def shape(self):
        return (self.N, self.K)

    @property
    def nbytes(self):
        return self.data.nbytes + (self.comp.nbytes if self.comp is not None else 0)

    def take(self, rows):
        """The plain (len(rows), K) values (int8 or bfloat16 bits) of weight rows `rows` (int array)."""
        rows = np.asarray(rows, dtype=np.int64)
        k_off = _offsets(self.layout, 0, np.arange(self.K))
        return self.data[_offsets(self.layout, 1, rows)[..., None] + k_off]


def pack(w):
    """w (N, K): int8 q or uint16 bfloat16 bits, C-contiguous -> _Packed."""
    cdef bint int8 = w.dtype == np.int8
    cdef Py_ssize_t N = w.shape[0], K = w.shape[1], elt = 1 if int8 else 2
    cdef _Packed p = _Packed()
    cdef dnnl_memory_desc_t plain = NULL
    if w.dtype not in (np.int8, np.uint16) or w.ndim != 2 or not w.flags.c_contiguous or N == 0 or K == 0:
        raise ValueError("linear_lowp.pack: a non-empty C-contiguous (N, K) int8 or uint16 array, got "
                         f"{w.dtype} {w.shape}")
    p.int8, p.N, p.K = int8, N, K
    p.md = _chosen_weights(int8, PANEL_ROWS, N, K, False)
    p.layout = _layout(p.md)
    if p.layout is None:
        raise ValueError(f"linear_lowp.pack: oneDNN picked a layout that is not blocked for a {w.shape} weight")
    p.n_block = _block_of(p.layout, 1)
    p.block_bytes = p.layout[1][1] * elt
    # (64-byte aligned: oneDNN's kernels load whole cache lines of it)
    raw = np.zeros(p.layout[4] + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    p.data = raw[start:start + p.layout[4]].view(np.int8 if int8 else np.uint16)
    p.base = <char*><size_t>p.data.ctypes.data
    if int8:
        p.comp = (w.sum(axis=1, dtype=np.int32) * 128).astype(np.int32)
        Kp = p.layout[0][0]
        p.vnni_rows = VNNI and p.layout[1:4] == ((4096, Kp * 64), (16, 64, 4), (0, 1, 0)) and Kp % 64 == 0
    try:
        _strided(&plain, K, N, 1, K, dnnl_s8 if int8 else dnnl_bf16)  # (w read as (K, N): transposed)
        reorder(_engine, plain, <void*><size_t>w.ctypes.data, p.md, p.base)
    finally:
        if plain != NULL:
            dnnl_memory_desc_destroy(plain)
    return p


cdef _Plan _make_plan(bint int8, int64_t rows, int64_t cols, int64_t K, bint bias, layout):
    cdef _Plan p = _Plan()
    cdef int64_t ldc = cols  # (a dense output: see _Blocks)
    _strided(&p.plan.md[0], rows, K, K, 1, dnnl_u8 if int8 else dnnl_bf16)
    cdef bint avoid_amx = int8 and rows < AMX_MIN_ROWS
    p.plan.md[1] = _chosen_weights(int8, rows, cols, K, avoid_amx)
    _strided(&p.plan.md[2], rows, cols, ldc, 1, dnnl_s32 if int8 else dnnl_f32)
    if bias:
        _strided(&p.plan.md[4], 1, cols, cols, 1, dnnl_f32)
    # the packed weights' layout, cut at the block's columns: the same padded K, strides and
    # inner blocks, and no more bytes than the block's columns (padded to whole blocks) take
    mine = _layout(p.plan.md[1])
    n_block = _block_of(layout, 1)
    full_blocks = (cols + n_block - 1) // n_block
    if (mine is None or mine[1:4] != layout[1:4] or mine[0][0] != layout[0][0]
            or mine[4] != full_blocks * layout[1][1] * (1 if int8 else 2)):
        raise ValueError("linear (%s): oneDNN picks the weights layout %s for a (%d, %d) @ (%d, %d) product, "
                         "not the packed weight's %s" % ("int8" if int8 else "bfloat16", mine, rows, K, K, cols,
                                                         layout))
    p.implementation = plan_create(_engine, &p.plan, avoid_amx)
    return p


MAX_PLANS = 4096  # then the cache starts again (a plan in use stays alive: its grid holds it)
_plans = {}


def _plan(bint int8, int64_t rows, int64_t cols, int64_t K, bint bias, layout):
    """The plan for one block shape on weights packed in `layout`, made once. ValueError where
    oneDNN has only its reference (slow) code for it, or picks another layout: no silent slow path."""
    key = (int8, rows, cols, K, bias, layout, int8 and rows < AMX_MIN_ROWS)
    p = _plans.get(key)
    if p is None:
        if len(_plans) >= MAX_PLANS:
            _plans.clear()
        p = _make_plan(int8, rows, cols, K, bias, layout)
        if p.implementation.startswith("ref"):
            raise ValueError("linear (%s): oneDNN has no fast kernel on this CPU (oneDNN's ISA: %s) for a "
                             "(%d, %d) @ (%d, %d) product, only its reference code %s" % (
                                 "int8" if int8 else "bfloat16", _gemm_engine.onednn_isa(), rows, K, K, cols,
                                 p.implementation))
        _plans[key] = p
    return p


def implementation(bint int8, int64_t rows, int64_t cols, int64_t K):
    """oneDNN's name for the kernel of one block shape (e.g. "brg:avx512_core_amx") on packed weights."""
    cdef dnnl_memory_desc_t md = _chosen_weights(int8, PANEL_ROWS, cols, K, False)
    try:
        layout = _layout(md)
    finally:
        dnnl_memory_desc_destroy(md)
    return _plan(int8, rows, cols, K, False, layout).implementation


def _set_grid(Py_ssize_t panel_rows, Py_ssize_t max_cols, Py_ssize_t min_blocks):
    """Set PANEL_ROWS, MAX_COLS and MIN_BLOCKS; returns the previous ones. For benchmarks."""
    global PANEL_ROWS, MAX_COLS, MIN_BLOCKS
    if min(panel_rows, max_cols, min_blocks) < 1:
        raise ValueError("grid sizes must be >= 1")
    previous = (PANEL_ROWS, MAX_COLS, MIN_BLOCKS)
    PANEL_ROWS, MAX_COLS, MIN_BLOCKS = panel_rows, max_cols, min_blocks
    return previous


cdef struct Grid:
    Py_ssize_t rows, cols, inner, br, bc, nr, nc, last_cols
    const char* weights  # the packed weights; the column block at c0 starts c0 // n_block * block_bytes on
    Py_ssize_t n_block, block_bytes
    const lowp_plan* plan[4]  # [full rows / last rows][full cols / last cols]


cdef inline Py_ssize_t _ceil(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef class _Blocks:
    """The grid of one product: its plans (kept alive here) and per-thread scratchpads."""
    cdef object plans, scratch
    cdef Grid grid
    cdef char* scratch_base
    cdef Py_ssize_t scratch_stride, out_offset

    def __cinit__(self, _Packed w, Py_ssize_t M, bint bias, int parts, Py_ssize_t min_blocks):
        cdef Grid* g = &self.grid
        cdef Py_ssize_t nc, N = w.N
        g.rows, g.cols, g.inner = M, N, w.K
        g.weights, g.n_block, g.block_bytes = w.base, w.n_block, w.block_bytes
        g.br = PANEL_ROWS if M >= 2 * PANEL_ROWS else M
        g.nr = _ceil(M, g.br)
        nc = max(_ceil(N, MAX_COLS), min(_ceil(min_blocks, g.nr), max(1, N // MIN_COLS)))
        g.bc = min(_ceil(_ceil(N, nc), g.n_block) * g.n_block, N)
        g.nc = _ceil(N, g.bc)
        if g.nc > 1 and N - (g.nc - 1) * g.bc < g.n_block:
            g.nc -= 1  # (the last block no narrower than n_block: oneDNN picks narrower blocks below)
        g.last_cols = N - (g.nc - 1) * g.bc
        plans = []
        for i, rows in enumerate((g.br, M - (g.nr - 1) * g.br)):
            for j, cols in enumerate((g.bc, g.last_cols)):
                p = _plan(w.int8, rows, cols, w.K, bias, w.layout)
                plans.append(p)
                g.plan[2 * i + j] = &(<_Plan>p).plan
        self.plans = plans
        # per thread: oneDNN's scratchpad, then (column blocks) a dense (br, cols) output: oneDNN
        # picks its brgemm kernels for a dense output only (a (1, 384) block of a 3072-wide one
        # ran on its older gemm:jit, 2x slower)
        self.out_offset = (max((<_Plan>p).plan.scratch_bytes for p in plans) + 4095) // 4096 * 4096
        self.scratch_stride = self.out_offset + (
            (g.br * max(g.bc, g.last_cols) * 4 + 4095) // 4096 * 4096 if g.nc > 1 else 0)
        self.scratch = np.empty(parts * self.scratch_stride + 4096, dtype=np.uint8)
        self.scratch_base = <char*><size_t>((self.scratch.ctypes.data + 4095) // 4096 * 4096)


cdef struct Block:
    Py_ssize_t r0, rows, c0, cols
    const lowp_plan* plan
    const char* weights


cdef inline Block _block(const Grid* g, Py_ssize_t i) noexcept nogil:
    """Block i of the grid, column blocks outer (a block of weights is read by its row panels in
    turn, while it is in cache)."""
    cdef Block k
    cdef Py_ssize_t j = i // g.nr
    cdef bint last_rows
    k.c0 = j * g.bc
    k.r0 = (i % g.nr) * g.br
    k.rows = min(g.br, g.rows - k.r0)
    k.cols = g.last_cols if j == g.nc - 1 else g.bc
    last_rows = k.r0 + g.br > g.rows
    k.plan = g.plan[2 * last_rows + (j == g.nc - 1)]
    k.weights = g.weights + (k.c0 // g.n_block) * g.block_bytes
    return k


def _sizes(x, _Packed w, b, y):
    M, K = x.shape[0], x.shape[1]
    N = w.N
    if w.K != K or y.shape[0] != M or y.shape[1] != N or (b is not None and b.shape[0] != N):
        raise ValueError("linear: x (%d, %d), weight (%d, %d), out (%d, %d)" % (
            M, K, N, w.K, y.shape[0], y.shape[1]))
    if M == 0:
        raise ValueError("linear: empty products are handled by fastattn.functional")
    return M, K, N


# |acc| <= 255 * 127 * K (u8 x s8) must fit int32
MAX_INT8_K = 2147483647 // (255 * 127)


def _forward_int8(const float[:, ::1] x, _Packed w, const float[::1] sw, const float[::1] b,
                  float[:, ::1] y, int num_threads):
    # x (M, K), w packed int8 (N, K), sw (N,), b (N,) or None -> y (M, N)
    cdef Py_ssize_t M, K, N, t, i, r, parts, nblocks
    cdef bint has_bias = b is not None
    cdef int failed = 0, status
    M, K, N = _sizes(x, w, b, y)
    if not w.int8:
        raise TypeError("linear: _forward_int8 takes an int8 weight")
    if sw.shape[0] != N:
        raise ValueError("linear: weight scales (%d,) for a (%d, %d) weight" % (sw.shape[0], N, K))
    if K > MAX_INT8_K:
        raise ValueError("linear: int8 products take in_features <= %d (int32 sums), got %d" % (MAX_INT8_K, K))
    if M <= VNNI_ROWS and w.vnni_rows:
        _forward_int8_rows(x, w, sw, b, y, num_threads)
        return
    xq_arr = np.empty((M, K), np.uint8)
    sx_arr = np.empty(M, np.float32)
    cdef uint8_t[:, ::1] xq = xq_arr
    cdef float[::1] sx = sx_arr
    cdef const int32_t[::1] comp = w.comp
    # (int8: a block a thread, the fewest runs: its integer sums are exact, the same whatever the grid)
    cdef _Blocks blocks = _Blocks(w, M, False, num_threads, num_threads)
    cdef Grid g = blocks.grid
    cdef Block k
    cdef char* scratch
    cdef int32_t* acc
    nblocks = g.nr * g.nc
    parts = min(<Py_ssize_t>num_threads, max(nblocks, M))
    with nogil, parallel(num_threads=parts):
        fa_nested_serial()
        for r in prange(M, schedule="static"):
            sx[r] = fa_quantize_row_u8(&x[r, 0], K, &xq[r, 0])
        for t in prange(parts, schedule="static", chunksize=1):
            for i in range(nblocks):
                if in_part(i, 1, nblocks, t, parts):
                    k = _block(&g, i)
                    # acc (rows, cols) int32 = xq[r0:] (rows, K) @ w[c0:]^T (K, cols): in y's
                    # place when the block is full width, else in this thread's buffer
                    scratch = blocks.scratch_base + t * blocks.scratch_stride
                    acc = <int32_t*>&y[k.r0, 0] if g.nc == 1 else <int32_t*>(scratch + blocks.out_offset)
                    status = plan_run(_engine, k.plan, &xq[k.r0, 0], k.weights, NULL, acc, scratch)
                    if status != 0:
                        failed += 1
                    else:
                        for r in range(k.r0, k.r0 + k.rows):
                            fa_int8_epilogue_row(&y[r, k.c0], acc + (r - k.r0) * k.cols, &comp[k.c0], sx[r],
                                                 &sw[k.c0], &b[k.c0] if has_bias else NULL, k.cols)
    if failed:
        raise RuntimeError("oneDNN: the int8 matmul failed on %d blocks" % failed)


def _forward_int8_rows(const float[:, ::1] x, _Packed w, const float[::1] sw, const float[::1] b,
                       float[:, ::1] y, int num_threads):
    # x (M <= FA_VNNI_MAX_ROWS, K), w packed int8 (N, K) with vnni_rows -> y (M, N): the weight's
    # 64-column blocks dealt to the threads in contiguous runs (each thread one sequential stream)
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.N, Kp = w.layout[0][0]
    cdef Py_ssize_t nb = (N + 63) // 64, parts = min(<Py_ssize_t>num_threads, nb), t, i, r, c0
    cdef bint has_bias = b is not None
    xu_arr = np.empty((M, Kp), np.uint8)  # (past K: read, multiplied by zero weights)
    acc_arr = np.empty((parts, FA_VNNI_MAX_ROWS * 64), np.int32)
    sx_arr = np.empty(M, np.float32)
    cdef uint8_t[:, ::1] xu = xu_arr
    cdef int32_t[:, ::1] acc = acc_arr
    cdef float[::1] sx = sx_arr
    cdef const int32_t[::1] comp = w.comp
    cdef const int8_t* base = <const int8_t*>w.base
    with nogil, parallel(num_threads=parts):
        for r in prange(M, schedule="static"):
            sx[r] = fa_quantize_row_u8(&x[r, 0], K, &xu[r, 0])
        for t in prange(parts, schedule="static", chunksize=1):
            for i in range(nb):
                if in_part(i, 1, nb, t, parts):
                    fa_int8_vnni_block(<int>M, &xu[0, 0], Kp, base + i * w.block_bytes, Kp, &acc[t, 0])
                    c0 = i * 64
                    for r in range(M):
                        fa_int8_epilogue_row(&y[r, c0], &acc[t, r * 64], &comp[c0], sx[r], &sw[c0],
                                             &b[c0] if has_bias else NULL, min(64, N - c0))


def _forward_bf16(const float[:, ::1] x, _Packed w, const float[::1] b, float[:, ::1] y, int num_threads):
    # x (M, K), w packed bfloat16 (N, K), b (N,) or None -> y (M, N)
    cdef Py_ssize_t M, K, N, t, i, r, parts, nblocks
    cdef bint has_bias = b is not None
    cdef int failed = 0, status
    M, K, N = _sizes(x, w, b, y)
    if w.int8:
        raise TypeError("linear: _forward_bf16 takes a bfloat16 weight")
    xb_arr = np.empty((M, K), np.uint16)
    cdef uint16_t[:, ::1] xb = xb_arr
    cdef _Blocks blocks = _Blocks(w, M, has_bias, num_threads, MIN_BLOCKS)
    cdef Grid g = blocks.grid
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
                if in_part(i, 1, nblocks, t, parts):
                    k = _block(&g, i)
                    scratch = blocks.scratch_base + t * blocks.scratch_stride
                    out = &y[k.r0, 0] if g.nc == 1 else <float*>(scratch + blocks.out_offset)
                    status = plan_run(_engine, k.plan, &xb[k.r0, 0], k.weights, &b[k.c0] if has_bias else NULL, out, scratch)
                    if status != 0:
                        failed += 1
                    elif g.nc > 1:
                        for r in range(k.r0, k.r0 + k.rows):
                            memcpy(&y[r, k.c0], out + (r - k.r0) * k.cols, k.cols * sizeof(float))
    if failed:
        raise RuntimeError("oneDNN: the bfloat16 matmul failed on %d blocks" % failed)


@cython.wraparound(True)
def _product(forward, input, _Packed w, extra, bias):
    x = np.ascontiguousarray(input, dtype=np.float32)
    K, N = x.shape[-1], w.N
    y = np.empty(x.shape[:-1] + (N,), dtype=np.float32)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    if extra is None:
        forward(x.reshape(-1, K), w, b, y.reshape(-1, N), threads_for(2 * x.size * N))
    else:
        forward(x.reshape(-1, K), w, extra, b, y.reshape(-1, N), threads_for(2 * x.size * N))
    return y


@cython.wraparound(True)
def linear_int8(input, weight, scale, bias=None):
    """input (..., K) float32 @ dequantized(weight (N, K) int8, scale (N,))^T + bias, the
    activations quantized per row (see the module docstring); weight plain (packed here: a model's
    weights are packed once, see linear_lowp) or a _Packed. Inputs are validated by
    fastattn.functional."""
    w = weight if isinstance(weight, _Packed) else pack(np.ascontiguousarray(weight))
    return _product(_forward_int8, input, w, np.ascontiguousarray(scale), bias)


@cython.wraparound(True)
def linear_bf16(input, weight, bias=None):
    """input (..., K) float32, rounded to bfloat16, @ weight (N, K) (bfloat16 bits, uint16, plain or
    a _Packed)^T + bias, summed in float32. Inputs are validated by fastattn.functional."""
    w = weight if isinstance(weight, _Packed) else pack(np.ascontiguousarray(weight))
    return _product(_forward_bf16, input, w, None, bias)


def _rounded_to_bf16(const float[::1] x):
    """x (n,) -> its bfloat16 bits (uint16) from fa_bf16_row, the row loop before every bfloat16
    product (for tests: the products cannot show subnormals or NaN payloads)."""
    out = np.empty(x.shape[0], np.uint16)
    cdef uint16_t[::1] o = out
    if x.shape[0]:
        fa_bf16_row(&x[0], x.shape[0], &o[0])
    return out


def linear_lowp(input, weight, bias=None):
    """linear with an Int8Weight or BFloat16Weight (fastattn/_lowp.py) as the weight: packed on
    its first product and kept in it (weight._packed_for)."""
    w = weight._packed_for(pack)
    if weight.compute_type == "int8":
        return linear_int8(input, w, weight.scale, bias)
    return linear_bf16(input, w, bias)
