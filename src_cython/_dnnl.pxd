# The part of oneDNN's C API (oneapi/dnnl/dnnl.h, from the onednn-devel-cpu-gomp wheel) that
# fastattn's matmul plans use: src_cython/onednn.pyx (float32) and linear_lowp.pyx (int8, bf16),
# and the plan both keep.
from libc.stdint cimport int64_t

cdef extern from "openmp_info.h":
    int fa_max_threads() noexcept nogil
    void fa_set_max_threads(int n) noexcept nogil

cdef extern from "oneapi/dnnl/dnnl.h" nogil:
    ctypedef int64_t dnnl_dim_t
    ctypedef dnnl_dim_t dnnl_dims_t[12]
    ctypedef enum dnnl_status_t:
        dnnl_success
    ctypedef enum dnnl_engine_kind_t:
        dnnl_cpu
    ctypedef enum dnnl_data_type_t:
        dnnl_f32
        dnnl_bf16
        dnnl_s32
        dnnl_s8
    ctypedef enum dnnl_scratchpad_mode_t:
        dnnl_scratchpad_mode_user
    ctypedef enum dnnl_query_t:
        dnnl_query_impl_info_str
        dnnl_query_scratchpad_md
    ctypedef enum dnnl_stream_flags_t:
        dnnl_stream_default_flags
    ctypedef void* dnnl_engine_t
    ctypedef void* dnnl_stream_t
    ctypedef void* dnnl_memory_desc_t
    ctypedef const void* const_dnnl_memory_desc_t
    ctypedef void* dnnl_memory_t
    ctypedef void* dnnl_primitive_desc_t
    ctypedef const void* const_dnnl_primitive_desc_t
    ctypedef void* dnnl_primitive_t
    ctypedef const void* const_dnnl_primitive_t
    ctypedef void* dnnl_primitive_attr_t
    ctypedef const void* const_dnnl_primitive_attr_t
    ctypedef struct dnnl_exec_arg_t:
        int arg
        dnnl_memory_t memory
    int DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST, DNNL_ARG_SCRATCHPAD

    dnnl_status_t dnnl_engine_create(dnnl_engine_t* engine, dnnl_engine_kind_t kind, size_t index)
    dnnl_status_t dnnl_stream_create(dnnl_stream_t* stream, dnnl_engine_t engine, unsigned flags)
    dnnl_status_t dnnl_stream_destroy(dnnl_stream_t stream)
    dnnl_status_t dnnl_memory_desc_create_with_strides(dnnl_memory_desc_t* md, int ndims,
                                                       const dnnl_dims_t dims, dnnl_data_type_t dt,
                                                       const dnnl_dims_t strides)
    dnnl_status_t dnnl_memory_desc_destroy(dnnl_memory_desc_t md)
    dnnl_status_t dnnl_memory_desc_clone(dnnl_memory_desc_t* md, const_dnnl_memory_desc_t existing)
    size_t dnnl_memory_desc_get_size(const_dnnl_memory_desc_t md)
    dnnl_status_t dnnl_memory_create(dnnl_memory_t* memory, const_dnnl_memory_desc_t md,
                                     dnnl_engine_t engine, void* handle)
    dnnl_status_t dnnl_memory_destroy(dnnl_memory_t memory)
    dnnl_status_t dnnl_primitive_attr_create(dnnl_primitive_attr_t* attr)
    dnnl_status_t dnnl_primitive_attr_destroy(dnnl_primitive_attr_t attr)
    dnnl_status_t dnnl_primitive_attr_set_scratchpad_mode(dnnl_primitive_attr_t attr, dnnl_scratchpad_mode_t mode)
    dnnl_status_t dnnl_matmul_primitive_desc_create(dnnl_primitive_desc_t* pd, dnnl_engine_t engine,
                                                    const_dnnl_memory_desc_t src, const_dnnl_memory_desc_t weights,
                                                    const_dnnl_memory_desc_t bias, const_dnnl_memory_desc_t dst,
                                                    const_dnnl_primitive_attr_t attr)
    dnnl_status_t dnnl_primitive_desc_destroy(dnnl_primitive_desc_t pd)
    dnnl_status_t dnnl_primitive_desc_query(const_dnnl_primitive_desc_t pd, dnnl_query_t what, int index, void* result)
    const_dnnl_memory_desc_t dnnl_primitive_desc_query_md(const_dnnl_primitive_desc_t pd, dnnl_query_t what, int index)
    dnnl_status_t dnnl_primitive_create(dnnl_primitive_t* primitive, const_dnnl_primitive_desc_t pd)
    dnnl_status_t dnnl_primitive_destroy(dnnl_primitive_t primitive)
    dnnl_status_t dnnl_primitive_execute(const_dnnl_primitive_t primitive, dnnl_stream_t stream,
                                         int nargs, const dnnl_exec_arg_t* args)


# Packed weights (onednn.pyx's float32 ones, linear_lowp.pyx's int8 and bfloat16 ones): weights in
# oneDNN's own layout (the "any" tag, then the layout the primitive chose, queried), made once by
# a reorder primitive.
cdef extern from "oneapi/dnnl/dnnl.h" nogil:
    ctypedef enum dnnl_format_tag_t:
        dnnl_format_tag_any
    ctypedef enum dnnl_format_kind_t:
        dnnl_blocked
    const dnnl_data_type_t dnnl_u8
    const dnnl_query_t dnnl_query_weights_md
    const dnnl_query_t dnnl_query_format_kind
    const dnnl_query_t dnnl_query_padded_dims
    const dnnl_query_t dnnl_query_strides
    const dnnl_query_t dnnl_query_inner_nblks_s32
    const dnnl_query_t dnnl_query_inner_blks
    const dnnl_query_t dnnl_query_inner_idxs
    int DNNL_ARG_FROM, DNNL_ARG_TO
    dnnl_status_t dnnl_memory_desc_create_with_tag(dnnl_memory_desc_t* md, int ndims, const dnnl_dims_t dims,
                                                   dnnl_data_type_t dt, dnnl_format_tag_t tag)
    dnnl_status_t dnnl_memory_desc_query(const_dnnl_memory_desc_t md, dnnl_query_t what, void* result)
    dnnl_status_t dnnl_primitive_desc_next_impl(dnnl_primitive_desc_t pd)  # (matmul_pd's avoid_amx)
    int dnnl_memory_desc_equal(const_dnnl_memory_desc_t lhs, const_dnnl_memory_desc_t rhs)
    dnnl_status_t dnnl_reorder_primitive_desc_create(dnnl_primitive_desc_t* pd, const_dnnl_memory_desc_t src,
                                                     dnnl_engine_t src_engine, const_dnnl_memory_desc_t dst,
                                                     dnnl_engine_t dst_engine, const_dnnl_primitive_attr_t attr)
    dnnl_status_t dnnl_stream_wait(dnnl_stream_t stream)


# One plan of fastattn's: a matmul primitive for one block shape and what running it needs. Read by
# the block runners without the GIL.
ctypedef struct dnnl_plan:
    dnnl_primitive_t primitive
    dnnl_memory_desc_t md[5]  # src, weights, dst, scratchpad, bias (NULL: none needed)
    size_t scratch_bytes


cdef inline void plan_init(dnnl_plan* p) noexcept nogil:
    cdef int i
    p.primitive = NULL
    for i in range(5):
        p.md[i] = NULL


cdef inline void plan_free(dnnl_plan* p) noexcept nogil:
    cdef int i
    if p.primitive != NULL:
        dnnl_primitive_destroy(p.primitive)
    for i in range(5):
        if p.md[i] != NULL:
            dnnl_memory_desc_destroy(p.md[i])


cdef inline check(dnnl_status_t status, what):
    if status != dnnl_success:
        raise RuntimeError("oneDNN: %s failed with status %d" % (what, <int>status))


cdef inline int plan_run(dnnl_engine_t engine, const dnnl_plan* p, const void* a, const void* b,
                         const void* bias, void* c, void* scratch) noexcept nogil:
    """Runs plan p on this thread: src a, weights b, dst c, with this thread's scratchpad of
    p.scratch_bytes (and the bias row, for a plan with one). 0 on success, else oneDNN's status
    (C untouched: the caller computes it otherwise). A stream of its own (0.1 us to make), so that
    any number of threads can run one plan at once."""
    cdef int ARGS[5]
    cdef void* handles[5]
    cdef dnnl_memory_t mem[5]
    cdef dnnl_exec_arg_t args[5]
    cdef int i, nargs = 0
    cdef dnnl_stream_t stream = NULL
    cdef dnnl_status_t status = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags)
    ARGS[0], ARGS[1], ARGS[2], ARGS[3], ARGS[4] = (DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST,
                                                   DNNL_ARG_SCRATCHPAD, DNNL_ARG_BIAS)
    handles[0], handles[1], handles[2], handles[3], handles[4] = (<void*>a, <void*>b, c, scratch, <void*>bias)
    for i in range(5):
        if p.md[i] != NULL and status == dnnl_success:
            status = dnnl_memory_create(&mem[nargs], p.md[i], engine, handles[i])
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


cdef inline dnnl_primitive_desc_t matmul_pd(dnnl_engine_t engine, dnnl_plan* p, bint avoid_amx) except NULL:
    """The matmul primitive descriptor of p's md[0] (src), md[1] (weights), md[2] (dst) and md[4]
    (bias, or NULL), made for one thread (each block runs on the thread its grid gave it) with a
    user scratchpad; with avoid_amx, oneDNN's first implementation of these that is not an AMX
    one, where it has one. The caller destroys it."""
    cdef dnnl_primitive_attr_t attr = NULL
    cdef dnnl_primitive_desc_t pd = NULL
    cdef const char* impl = NULL
    cdef int saved_threads = fa_max_threads()
    fa_set_max_threads(1)
    try:
        check(dnnl_primitive_attr_create(&attr), "creating attributes")
        check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "the scratchpad mode")
        check(dnnl_matmul_primitive_desc_create(&pd, engine, p.md[0], p.md[1], p.md[4], p.md[2], attr),
              "the matmul primitive descriptor")
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl)
        while avoid_amx and impl != NULL and b"amx" in <bytes>impl and dnnl_primitive_desc_next_impl(pd) == dnnl_success:
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl)
    finally:
        fa_set_max_threads(saved_threads)
        if attr != NULL:
            dnnl_primitive_attr_destroy(attr)
    return pd


cdef inline str plan_create(dnnl_engine_t engine, dnnl_plan* p, bint avoid_amx):
    """p's primitive and scratchpad (md[3], scratch_bytes) from its descriptors (see matmul_pd);
    returns oneDNN's name of the implementation."""
    cdef dnnl_primitive_desc_t pd = matmul_pd(engine, p, avoid_amx)
    cdef const char* impl = NULL
    cdef const_dnnl_memory_desc_t scratch_md
    cdef int saved_threads = fa_max_threads()
    fa_set_max_threads(1)
    try:
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl)
        scratch_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0)
        p.scratch_bytes = dnnl_memory_desc_get_size(scratch_md) if scratch_md != NULL else 0
        if p.scratch_bytes:
            check(dnnl_memory_desc_clone(&p.md[3], scratch_md), "copying the scratchpad descriptor")
        check(dnnl_primitive_create(&p.primitive, pd), "the matmul primitive")
        return impl.decode() if impl != NULL else "?"
    finally:
        fa_set_max_threads(saved_threads)
        dnnl_primitive_desc_destroy(pd)


cdef inline reorder(dnnl_engine_t engine, const_dnnl_memory_desc_t src_md, const void* src,
                    const_dnnl_memory_desc_t dst_md, void* dst):
    """Copies src (laid out as src_md) into dst (as dst_md) with a reorder primitive: a weight
    into its packed layout. On this thread alone (oneDNN runs on fastattn's threads only: see
    fastattn/_compiled/_gemm_engine.py's fork notes), and waited for."""
    cdef dnnl_primitive_desc_t pd = NULL
    cdef dnnl_primitive_t primitive = NULL
    cdef dnnl_memory_t mem[2]
    cdef dnnl_exec_arg_t args[2]
    cdef dnnl_stream_t stream = NULL
    cdef dnnl_status_t status
    cdef int i, saved_threads = fa_max_threads()
    mem[0] = mem[1] = NULL
    fa_set_max_threads(1)
    try:
        check(dnnl_reorder_primitive_desc_create(&pd, src_md, engine, dst_md, engine, NULL), "the reorder descriptor")
        check(dnnl_primitive_create(&primitive, pd), "the reorder primitive")
        check(dnnl_memory_create(&mem[0], src_md, engine, <void*>src), "a memory object")
        check(dnnl_memory_create(&mem[1], dst_md, engine, dst), "a memory object")
        check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "a stream")
        args[0].arg, args[0].memory = DNNL_ARG_FROM, mem[0]
        args[1].arg, args[1].memory = DNNL_ARG_TO, mem[1]
        with nogil:
            status = dnnl_primitive_execute(primitive, stream, 2, args)
            if status == dnnl_success:
                status = dnnl_stream_wait(stream)
        check(status, "the reorder")
    finally:
        fa_set_max_threads(saved_threads)
        if stream != NULL:
            dnnl_stream_destroy(stream)
        for i in range(2):
            if mem[i] != NULL:
                dnnl_memory_destroy(mem[i])
        if primitive != NULL:
            dnnl_primitive_destroy(primitive)
        if pd != NULL:
            dnnl_primitive_desc_destroy(pd)
