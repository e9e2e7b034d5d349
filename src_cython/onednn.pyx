"""float32 matrix products on oneDNN's matmul primitive, one block of fastattn's linear grid at a
time (src_cython/linear.pyx deals the blocks to its threads; each block runs here on its thread).

A weight that does not change can be packed once into the layout oneDNN's kernel reads (pack):
the kernel then skips copying the weight into that layout on every block, which it does for a
weight in plain layout (Intel Xeon with AMX, 2 threads, (606, 384) -> 1152: 276 -> 315 GFLOP/s).

A plan is one primitive for one block shape and layout, created once (a few hundred microseconds:
oneDNN writes its kernel for the CPU) and kept: the linear grid gives the same few block shapes
for a layer whatever the batch (see linear.pyx). Plans use a scratchpad that the caller gives per
thread, and each run has a stream of its own (0.1 us to make), so that any number of threads, of
one call or of several Python threads, can run one plan at once.
The library is loaded by fastattn/_compiled/_gemm_engine.py before this module is imported.
"""
import numpy as np

from libc.stdint cimport int64_t

from _dnnl cimport *  # (oneDNN's C API: src_cython/_dnnl.pxd)

from fastattn._compiled import _gemm_engine  # (loads libdnnl.so.3, which this module links to)


# One plan (a dnnl_plan): C (m, n) = op(A) (m, k) @ op(B) (k, n) [+ bias (n)], all row-major with
# the leading dimensions of its key.
ctypedef dnnl_plan fa_matmul_plan

cdef dnnl_engine_t _engine = NULL
check(dnnl_engine_create(&_engine, dnnl_cpu, 0), "creating the CPU engine")


cdef class MatmulPlan:
    cdef fa_matmul_plan plan
    cdef readonly str implementation

    def __cinit__(self):
        plan_init(&self.plan)

    def __dealloc__(self):
        plan_free(&self.plan)

    cdef size_t address(self):
        return <size_t>&self.plan

    @property
    def scratch_bytes(self):
        return self.plan.scratch_bytes


cdef class PackedLayout:
    """oneDNN's own layout for a (k, n) float32 weight of the matmul primitive (blocked, chosen by
    its kernel for this CPU). The same for any row count: made once for PACK_ROWS rows."""
    cdef dnnl_memory_desc_t md
    cdef readonly int64_t k, n
    cdef readonly size_t nbytes

    def __cinit__(self):
        self.md = NULL

    def __dealloc__(self):
        if self.md != NULL:
            dnnl_memory_desc_destroy(self.md)


PACK_ROWS = 128
_layouts = {}


def packed_layout(int64_t k, int64_t n):
    """The PackedLayout of a (k, n) weight, or None where packing gains nothing (oneDNN reads
    the plain layout as it is, or has only its reference code for the shape)."""
    key = (k, n)
    if key not in _layouts:
        _layouts[key] = _make_layout(k, n)
    return _layouts[key]


# Where oneDNN has no blocked layout for the weights (its matmul on AVX2 is gemm:jit, which takes
# them as a plain (k, n) row-major matrix and copies panels of it on every call), rows of a multiple
# of 1 KiB put the rows that the copy reads together in the same few cache sets. AMD EPYC Zen 3
# (family 25, model 1), 2 threads, frozen (128, 576) @ (576, 3072): 1.65x the time of the unpacked
# weight with rows of 3072 floats, 0.87x with rows padded by 16 floats; (605, 384) -> 1536 1.32x
# and 0.92x; (128, 3072) -> 768 1.01x and 0.84x (benchmarks/linear_sweep.py: its frozen column).
cdef int64_t ROW_PAD = 16


cdef dnnl_memory_desc_t _unaliased(const_dnnl_memory_desc_t wmd, int64_t k, int64_t n) except NULL:
    """A new descriptor (the caller destroys it): the weights layout wmd that oneDNN picked, or,
    where that is the plain (k, n) row-major one with rows of a multiple of 1 KiB, the same with
    rows ROW_PAD floats longer."""
    cdef dnnl_memory_desc_t md = NULL
    cdef int kind = 0, nblks = 0
    cdef const dnnl_dim_t* strides = NULL
    cdef dnnl_dims_t dims, padded
    check(dnnl_memory_desc_query(wmd, dnnl_query_format_kind, &kind), "querying a layout")
    check(dnnl_memory_desc_query(wmd, dnnl_query_inner_nblks_s32, &nblks), "querying a layout")
    if kind == <int>dnnl_blocked and nblks == 0:
        check(dnnl_memory_desc_query(wmd, dnnl_query_strides, &strides), "querying a layout")
        if strides[1] == 1 and strides[0] == n and (n * 4) % 1024 == 0:
            dims[0], dims[1], padded[0], padded[1] = k, n, n + ROW_PAD, 1
            check(dnnl_memory_desc_create_with_strides(&md, 2, dims, dnnl_f32, padded), "a memory descriptor")
            return md
    check(dnnl_memory_desc_clone(&md, wmd), "copying the weights descriptor")
    return md


cdef _make_layout(int64_t k, int64_t n):
    cdef PackedLayout layout = PackedLayout()
    cdef dnnl_plan p  # (its descriptors: src, weights "any", dst)
    cdef dnnl_memory_desc_t plain = NULL
    cdef dnnl_dims_t dims, strides
    cdef dnnl_primitive_desc_t pd = NULL
    cdef const char* impl = NULL
    cdef const_dnnl_memory_desc_t wmd
    plan_init(&p)
    layout.k, layout.n = k, n
    try:
        dims[0], dims[1], strides[0], strides[1] = PACK_ROWS, k, k, 1
        check(dnnl_memory_desc_create_with_strides(&p.md[0], 2, dims, dnnl_f32, strides), "a memory descriptor")
        dims[0], dims[1] = k, n
        check(dnnl_memory_desc_create_with_tag(&p.md[1], 2, dims, dnnl_f32, dnnl_format_tag_any), "a memory descriptor")
        strides[0], strides[1] = 1, k
        check(dnnl_memory_desc_create_with_strides(&plain, 2, dims, dnnl_f32, strides), "a memory descriptor")
        dims[0], dims[1], strides[0], strides[1] = PACK_ROWS, n, n, 1
        check(dnnl_memory_desc_create_with_strides(&p.md[2], 2, dims, dnnl_f32, strides), "a memory descriptor")
        try:
            pd = matmul_pd(_engine, &p, False)
        except RuntimeError:
            return None
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl)
        if impl == NULL or impl.decode().startswith("ref"):
            return None
        wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0)
        if wmd == NULL or dnnl_memory_desc_equal(wmd, plain):
            return None
        layout.md = _unaliased(wmd, k, n)
        layout.nbytes = dnnl_memory_desc_get_size(layout.md)
        return layout
    finally:
        if pd != NULL:
            dnnl_primitive_desc_destroy(pd)
        if plain != NULL:
            dnnl_memory_desc_destroy(plain)
        plan_free(&p)


cdef class PackedWeight:
    """A (n, k) row-major float32 weight w, packed for products x @ w^T: its PackedLayout and
    the packed values (64-byte aligned, in .buffer)."""
    cdef readonly PackedLayout layout
    cdef readonly object buffer
    cdef size_t data

    @property
    def address(self):
        return self.data


def pack(const float[:, ::1] w):
    """w (n, k) float32 packed into oneDNN's layout for x @ w^T, or None where packing gains
    nothing (see packed_layout)."""
    cdef int64_t n = w.shape[0], k = w.shape[1]
    cdef PackedLayout layout = packed_layout(k, n) if n and k else None
    if layout is None:
        return None
    cdef PackedWeight packed = PackedWeight()
    packed.layout = layout
    packed.buffer = np.empty(layout.nbytes + 64, np.uint8)
    packed.data = (<size_t>packed.buffer.ctypes.data + 63) // 64 * 64
    cdef dnnl_memory_desc_t plain = NULL
    cdef dnnl_dims_t dims, strides
    dims[0], dims[1], strides[0], strides[1] = k, n, 1, k  # (w read as (k, n): transposed)
    try:
        check(dnnl_memory_desc_create_with_strides(&plain, 2, dims, dnnl_f32, strides), "a memory descriptor")
        reorder(_engine, plain, &w[0, 0], layout.md, <void*>packed.data)
    finally:
        if plain != NULL:
            dnnl_memory_desc_destroy(plain)
    return packed


cdef _plan(bint trans_a, bint trans_b, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
           int64_t ldc, bint bias, PackedLayout packed):
    cdef MatmulPlan p = MatmulPlan()
    cdef dnnl_dims_t src_dims, src_strides, w_dims, w_strides, dst_dims, dst_strides, b_dims, b_strides
    src_dims[0], src_dims[1] = m, k
    src_strides[0] = 1 if trans_a else lda
    src_strides[1] = lda if trans_a else 1
    w_dims[0], w_dims[1] = k, n
    w_strides[0] = 1 if trans_b else ldb
    w_strides[1] = ldb if trans_b else 1
    dst_dims[0], dst_dims[1] = m, n
    dst_strides[0], dst_strides[1] = ldc, 1
    check(dnnl_memory_desc_create_with_strides(&p.plan.md[0], 2, src_dims, dnnl_f32, src_strides), "a memory descriptor")
    if packed is not None:  # (its k and n: those of the product, by plan's key)
        check(dnnl_memory_desc_clone(&p.plan.md[1], packed.md), "copying the weights descriptor")
    else:
        check(dnnl_memory_desc_create_with_strides(&p.plan.md[1], 2, w_dims, dnnl_f32, w_strides), "a memory descriptor")
    check(dnnl_memory_desc_create_with_strides(&p.plan.md[2], 2, dst_dims, dnnl_f32, dst_strides), "a memory descriptor")
    if bias:
        b_dims[0], b_dims[1], b_strides[0], b_strides[1] = 1, n, n, 1
        check(dnnl_memory_desc_create_with_strides(&p.plan.md[4], 2, b_dims, dnnl_f32, b_strides), "a memory descriptor")
    p.implementation = plan_create(_engine, &p.plan, False)
    return p


MAX_PLANS = 4096  # then the cache starts again (a plan in use stays alive: its caller holds it)
_plans = {}


def plan(bint trans_a, bint trans_b, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
         int64_t ldc, bint bias, bint packed=False):
    """The plan for C (m, n) = op(A) @ op(B) (+ a bias row if `bias`), row-major, leading
    dimensions lda, ldb, ldc (packed: B in packed_layout(k, n), trans_b and ldb unused): made
    once, then taken from the cache. None where oneDNN would run its reference (slow) code for
    this layout, or takes no packed B for it: the caller uses the BLAS or plain B there."""
    key = (trans_a, trans_b and not packed, m, n, k, lda, 0 if packed else ldb, ldc, bias, packed)
    p = _plans.get(key)
    if p is None:
        if len(_plans) >= MAX_PLANS:
            _plans.clear()
        layout = packed_layout(k, n) if packed else None
        if packed and layout is None:
            p = False
        else:
            try:
                p = _plan(trans_a, trans_b, m, n, k, lda, ldb, ldc, bias, layout)
            except RuntimeError:
                if not packed:
                    raise
                p = False  # (oneDNN refused the packed layout for this shape)
            if p and p.implementation.startswith("ref"):
                p = False
        _plans[key] = p
    return p or None


def plan_address(MatmulPlan p):
    return p.address()


cdef int fa_matmul_run(const void* plan_ptr, const float* a, const float* b, const float* bias,
                       float* c, void* scratch) noexcept nogil:
    """Run a plan on this thread, with this thread's scratchpad of plan.scratch_bytes (and the
    bias row, for a plan with one). 0 on success, else oneDNN's status (C untouched: the caller
    computes it otherwise)."""
    return plan_run(_engine, <const fa_matmul_plan*>plan_ptr, a, b, bias, c, scratch)


def run_address():
    """The address of fa_matmul_run, for linear.pyx (which does not link oneDNN)."""
    return <size_t>&fa_matmul_run
