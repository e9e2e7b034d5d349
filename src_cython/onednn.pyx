"""float32 matrix products on oneDNN's matmul primitive, one block of fastattn's linear grid at a
time (src_cython/linear.pyx deals the blocks to its threads; each block runs here on its thread).

A plan is one primitive for one block shape and layout, created once (a few hundred microseconds:
oneDNN writes its kernel for the CPU) and kept: the linear grid gives the same few block shapes
for a layer whatever the batch (see linear.pyx). Plans use a scratchpad that the caller gives per
thread, and each run has a stream of its own (0.1 us to make), so that any number of threads, of
one call or of several Python threads, can run one plan at once.
The library is loaded by fastattn/_compiled/_gemm_engine.py before this module is imported.
"""
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


cdef _plan(bint trans_a, bint trans_b, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
           int64_t ldc, bint bias):
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
    check(dnnl_memory_desc_create_with_strides(&p.plan.md[1], 2, w_dims, dnnl_f32, w_strides), "a memory descriptor")
    check(dnnl_memory_desc_create_with_strides(&p.plan.md[2], 2, dst_dims, dnnl_f32, dst_strides), "a memory descriptor")
    if bias:
        b_dims[0], b_dims[1], b_strides[0], b_strides[1] = 1, n, n, 1
        check(dnnl_memory_desc_create_with_strides(&p.plan.md[4], 2, b_dims, dnnl_f32, b_strides), "a memory descriptor")
    p.implementation = plan_create(_engine, &p.plan)
    return p


MAX_PLANS = 4096  # then the cache starts again (a plan in use stays alive: its caller holds it)
_plans = {}


def plan(bint trans_a, bint trans_b, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
         int64_t ldc, bint bias):
    """The plan for C (m, n) = op(A) @ op(B) (+ a bias row if `bias`), row-major, leading
    dimensions lda, ldb, ldc: made once, then taken from the cache. None where oneDNN would run
    its reference (slow) code for this layout: the caller uses the BLAS there."""
    key = (trans_a, trans_b, m, n, k, lda, ldb, ldc, bias)
    p = _plans.get(key)
    if p is None:
        if len(_plans) >= MAX_PLANS:
            _plans.clear()
        p = _plan(trans_a, trans_b, m, n, k, lda, ldb, ldc, bias)
        if p.implementation.startswith("ref"):
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
    cdef const fa_matmul_plan* p = <const fa_matmul_plan*>plan_ptr
    cdef int ARGS[5]
    cdef void* handles[5]
    cdef dnnl_memory_t mem[5]
    cdef dnnl_exec_arg_t args[5]
    cdef int i, nargs = 0
    cdef dnnl_stream_t stream = NULL
    cdef dnnl_status_t status = dnnl_stream_create(&stream, _engine, dnnl_stream_default_flags)
    ARGS[0], ARGS[1], ARGS[2], ARGS[3], ARGS[4] = (DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST,
                                                   DNNL_ARG_SCRATCHPAD, DNNL_ARG_BIAS)
    handles[0], handles[1], handles[2], handles[3], handles[4] = (<void*>a, <void*>b, <void*>c,
                                                                  scratch, <void*>bias)
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


def run_address():
    """The address of fa_matmul_run, for linear.pyx (which does not link oneDNN)."""
    return <size_t>&fa_matmul_run
