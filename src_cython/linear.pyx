"""Linear layer forward and backward (the compiled twin of fastattn/reference/linear.py).

The products go to the GEMM engine (oneDNN's matmul and sgemm, or scipy's BLAS), split into
blocks over fastattn's own OpenMP threads with the engine serial inside each: a model then runs
on one thread pool. (Calling a threaded BLAS between
the OpenMP kernels made two pools spin against each other on 2 cores: a GPT training step took
4x longer than with either pool alone.)
"""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.limits cimport INT_MAX
from libc.string cimport memset

from _blas cimport (blas_threads_enter, blas_threads_exit, blas_threads_fn, gemm_rowmajor,
                   gemm_rowmajor_on, sgemm_rowmajor_fn)
from _parts cimport in_part
from _row_ops cimport add_row, gelu_row, scale_row

from fastattn import _frozen
from fastattn._compiled import _gemm_engine
from fastattn._compiled._blas_threads import local_setter_address
from fastattn._compiled.gelu import gelu as _gelu
from fastattn._compiled.serial_blas import serial_blas
from fastattn._threads import threads_for

cdef extern from "openmp_info.h":
    void fa_nested_serial() noexcept nogil

cdef extern from "gemv_rows.h":
    int fa_gemv_rows_supported()
    void fa_gemv_rows(const float* x, Py_ssize_t M, Py_ssize_t K, const float* w, const float* b,
                      float* y, Py_ssize_t ldy, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil

# Products of 1 to GEMV_MAX_ROWS rows (decode, batched decode, beam search) read the weight once,
# on gemv_rows.h's kernel (AVX2 + FMA), not through a GEMM that packs it first. AMD EPYC Zen 3, 2
# threads, GPT-2's LM head (M, 768) @ (768, 50257): 8.0-8.9 ms for M = 2, 4, 8 (one row on the
# BLAS's gemv: 8.3), 18-22 ms on either engine's sgemm; past 8 rows the sgemm catches up (M = 16:
# level within the host's noise, M = 32: the sgemm ahead). One row, on weights of at least
# ONE_ROW_MIN_WEIGHTS values: Intel Xeon with AMX, GPT-2 small's 49 decode products, in turns in
# one process, 0.92x OpenBLAS's gemv (SkylakeX kernels) on 2 threads, 0.94x on one; single
# weights of 1.3-9.4 MB 0.88-0.99x, read from cache or not. A smaller weight stays on the gemv:
# there it is in cache, where the gemv's 512-bit FMAs run ahead (0.2-0.26 MB, called over and
# over: the kernel 1.09-1.18x the gemv's time).
cdef Py_ssize_t GEMV_MAX_ROWS = 8
cdef Py_ssize_t ONE_ROW_MIN_WEIGHTS = 1 << 18
cdef bint _GEMV_ROWS = fa_gemv_rows_supported()


cdef inline bint _few_rows(Py_ssize_t rows, Py_ssize_t weights) noexcept nogil:
    """Whether a float32 product of `rows` rows with a weight of `weights` values (N K) runs on
    the few-row kernel."""
    return _GEMV_ROWS and 1 <= rows <= GEMV_MAX_ROWS and (rows > 1 or weights >= ONE_ROW_MIN_WEIGHTS)

# int run(plan, a, b, bias, c, scratch): one oneDNN matmul plan on this thread (onednn.pyx)
ctypedef int (*matmul_run_fn)(const void*, const float*, const float*, const float*, float*,
                              void*) noexcept nogil

cdef blas_threads_fn _blas_set_local = <blas_threads_fn><size_t>local_setter_address()
# The float32 engine (fastattn/_compiled/_gemm_engine.py). On oneDNN: y and dx as panels of
# full-width rows on its matmul primitive (_run), which needs a dense output to use its best
# kernels (brgemm); dW (whose inner dimension is the rows) as grid blocks on its sgemm (_sgemm).
# A single row runs on the few-row kernel (see ONE_ROW_MIN_WEIGHTS), else on the BLAS's gemv.
# NULL for the BLAS.
cdef matmul_run_fn _run = NULL
cdef sgemm_rowmajor_fn _sgemm = NULL
_engine = "openblas"
_onednn = None
# Rows a panel, by CPU at run time. AMD EPYC Zen 4: 64-row panels ran at 92-114 GFLOP/s a thread
# on every model product measured, 128 rows within 5% of that, and fewer rows a panel give two
# threads work from 128 rows on. Intel Xeon with AMX (family 6, model 167): 128 rows took
# 0.86-0.90x the time of 64 on the MiniLM and Shakespeare products, 0.99-1.01x on GPT-2 prefill's;
# 256 rows 1.07-1.13x (2 threads, F.linear forward, medians of 15).
cdef Py_ssize_t PANEL_ROWS = 128 if (_gemm_engine.onednn_isa() or "").startswith("avx512_core_amx") else 64
# dx of fewer rows than this runs as sgemm blocks, not panels (see _Panels)
cdef Py_ssize_t DX_PANEL_MIN_ROWS = 256


def _use_engine(str engine):
    """Run the float32 products on `engine` ("onednn" or "openblas") from now on; returns the
    previous one. For tests and benchmarks that compare the two in one process."""
    global _sgemm, _run, _engine, _onednn
    address = _gemm_engine.sgemm_address(engine)  # (ValueError for an engine that is not here)
    if engine == "onednn" and _onednn is None:
        from fastattn._compiled import onednn as module  # (needs _gemm_engine's library first)

        _onednn = module
    previous, _engine = _engine, engine
    _sgemm = <sgemm_rowmajor_fn><size_t>address
    _run = <matmul_run_fn><size_t>(_onednn.run_address() if engine == "onednn" else 0)
    return previous


def _current_engine():
    return _engine


_use_engine(_gemm_engine.ENGINE)


# Each product's output is cut into a grid of blocks, at most BLOCK_ROWS x BLOCK_COLS, each one
# BLAS call over the whole inner dimension. The grid depends on the shapes only, never on the
# thread count: a BLAS call's rounding may depend on where its edges fall, and the results must not
# depend on the thread count. The blocks (of the forward product, or of dx's and dW's together in
# the backward) are dealt to the threads in order, in contiguous runs of even cost.
# Why these sizes (benchmarks/linear_blocks.py --threads 1 [--backward]: every product of the
# project's models, the block shapes taking turns; AMD EPYC family 25 model 1): OpenBLAS packs the
# operands again for every call, so fewer, larger calls cost less. Over all the products,
# 384 x 128 took 2.4% more time than 768 x 256 forward and 4.1% more backward; one call per
# product (1536 x 4096) took 0.8% and 3.5% less, but leaves no blocks to share between threads.
cdef Py_ssize_t BLOCK_ROWS = 768
cdef Py_ssize_t BLOCK_COLS = 256
cdef Py_ssize_t MIN_BLOCK_COLS = 32
# The backward's blocks (dW's, and dx's where it runs as blocks) on oneDNN's AVX2 kernels, whose
# sgemm (gemm:jit) packs its operands at every call: at most 4096 x 4096, so that a product is
# one block a thread. AMD EPYC Zen 3 (family 25, model 1), 2 threads, backward of (128, 768) ->
# 3072: 20.2 ms in blocks of 768 x 256, 9.9 ms in these (OpenBLAS's: 10.0); (128, 576) -> 3072
# 16.3 and 6.6 ms; MiniLM's and Shakespeare's within 5% either way. On AVX-512 and AMX (its
# brgemm kernels) the backward keeps the blocks above.
cdef bint _AVX2_ONEDNN = not (_gemm_engine.onednn_isa() or "avx512").startswith("avx512")
cdef Py_ssize_t BACKWARD_BLOCK = 4096


def _set_panel_rows(Py_ssize_t rows):
    """Set the rows of a oneDNN panel; returns the previous value. For benchmarks (a test hook)."""
    global PANEL_ROWS
    if rows < 1:
        raise ValueError("panel rows must be >= 1")
    previous = PANEL_ROWS
    PANEL_ROWS = rows
    return previous


def _set_gemv_max_rows(Py_ssize_t rows):
    """Set the most rows the few-row kernel takes (0: none, every product on the GEMM or the
    BLAS's gemv); returns the previous value. For benchmarks/batched_decode.py."""
    global GEMV_MAX_ROWS
    if rows < 0:
        raise ValueError("rows must be >= 0")
    previous, GEMV_MAX_ROWS = GEMV_MAX_ROWS, rows
    return previous


def _set_block_shape(Py_ssize_t rows, Py_ssize_t cols):
    """Set the largest block (rows, cols); returns the previous one. For benchmarks/linear_blocks.py."""
    global BLOCK_ROWS, BLOCK_COLS
    if rows < 1 or cols < 1:
        raise ValueError("block sizes must be >= 1")
    previous = (BLOCK_ROWS, BLOCK_COLS)
    BLOCK_ROWS, BLOCK_COLS = rows, cols
    return previous


cdef struct Grid:
    # an output (rows, cols) = (rows, inner) @ (inner, cols), in nr x nc blocks of br x bc
    Py_ssize_t rows, cols, inner, br, bc, nr, nc
    # panels (oneDNN): nc = 1, br = PANEL_ROWS; the plans of a full panel and of the last one
    # (rows % br rows, NULL if none); NULL plans: the blocks are BLAS / sgemm calls
    const void* full_plan
    const void* last_plan
    const float* packed_b  # B in oneDNN's packed layout for the plans, or NULL (B as it is)


cdef inline Py_ssize_t _even_block(Py_ssize_t n, Py_ssize_t most) noexcept nogil:
    """The size of ceil(n / most) equal blocks that cover n (the last may be shorter): n = 385
    with most = 384 gives 193 + 192, not 384 + 1, so that the two blocks cost the same."""
    cdef Py_ssize_t count = (n + most - 1) // most
    return (n + count - 1) // count


cdef inline Grid _grid(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t inner, bint backward=False) noexcept nogil:
    cdef Grid g
    cdef bint big = backward and _AVX2_ONEDNN and _sgemm != NULL
    g.rows, g.cols, g.inner = rows, cols, inner
    g.br = _even_block(rows, BACKWARD_BLOCK if big else BLOCK_ROWS)
    g.bc = _even_block(cols, BACKWARD_BLOCK if big else BLOCK_COLS)
    g.nr = (rows + g.br - 1) // g.br
    g.nc = (cols + g.bc - 1) // g.bc
    if (g.nr * g.nc) % 2 == 1 and cols >= 2 * MIN_BLOCK_COLS:
        # An odd number of equal blocks leaves one of two threads idle for a block's time: (64,
        # 128) -> 384 in 3 blocks ran as 1 + 2. One more column block evens it (4 of 96 columns).
        g.bc = (cols + g.nc) // (g.nc + 1)
        g.nc = (cols + g.bc - 1) // g.bc
    g.full_plan = g.last_plan = NULL
    return g


cdef class _Panels:
    """The oneDNN plans and per-thread scratchpads of one product cut into row panels (or, where
    oneDNN has no fast kernel for it, nothing: the grid of blocks on the engine's sgemm runs)."""
    cdef object plans, scratch, packed
    cdef Grid grid
    cdef char* scratch_base
    cdef Py_ssize_t scratch_stride

    def __cinit__(self, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t inner, bint trans_b,
                  Py_ssize_t lda, Py_ssize_t ldb, bint bias, int parts, packed=None, bint dx=False):
        # Panels of PANEL_ROWS rows or fewer, an even number of them (two threads then share
        # them evenly: (606, 384) -> 1152 as 5 panels ran at 264 GFLOP/s on 2 threads, as 6 at
        # 315); the count depends on the rows only, never on the threads (see _grid). A plan is
        # made for each new panel height once (about 0.1 ms).
        cdef Py_ssize_t count = max(2, (rows + PANEL_ROWS - 1) // PANEL_ROWS)
        count += count % 2
        cdef Py_ssize_t height = (rows + count - 1) // count if rows else 0
        cdef Py_ssize_t last = rows % height if height else 0
        self.grid = _grid(rows, cols, inner, dx)
        self.grid.packed_b = NULL
        self.plans = None
        if _run == NULL or rows < 2:  # (one row: the BLAS's gemv streams the weights faster)
            return
        if dx and rows < DX_PANEL_MIN_ROWS:
            # dx = dy w reads w as it is, (N, K): each panel copies all of it into the kernel's
            # layout, which short panels cannot pay for. Intel Xeon with AMX, 2 threads,
            # (128, 768) @ (768, 3072): panels of 64 rows took 1.43x the time of sgemm blocks;
            # from 2 x 128 rows on, within 6% either way (Shakespeare's and MiniLM's products).
            # AMD EPYC Zen 3 (64-row panels, oneDNN's gemm:jit): GPT-2 prefill's c_fc backward's
            # dx as two panels of (64, 3072) @ (3072, 768) took 7.4-8.6 ms each, as four blocks
            # of (128, 3072) @ (3072, 192) 2.4 ms each (ONEDNN_VERBOSE=1's times).
            return
        full = part = None
        if packed is not None:  # (B packed: a plan may refuse it, then B as it is)
            full = _onednn.plan(False, trans_b, height, cols, inner, lda, ldb, cols, bias, True)
            part = _onednn.plan(False, trans_b, last, cols, inner, lda, ldb, cols, bias, True) if last else None
            if full is None or (last and part is None):
                full = part = None
            else:
                self.grid.packed_b = <const float*><size_t>packed.address
                self.packed = packed  # (alive while the product runs)
        if full is None:
            full = _onednn.plan(False, trans_b, height, cols, inner, lda, ldb, cols, bias)
            part = _onednn.plan(False, trans_b, last, cols, inner, lda, ldb, cols, bias) if last else None
        if full is None or (last and part is None):
            return
        self.plans = (full, part)  # (alive while the product runs)
        self.grid.br, self.grid.nr = height, (rows + height - 1) // height
        self.grid.bc, self.grid.nc = cols, 1
        self.grid.full_plan = <const void*><size_t>_onednn.plan_address(full)
        self.grid.last_plan = <const void*><size_t>_onednn.plan_address(part) if last else NULL
        # a scratchpad per thread, 4 KiB aligned
        self.scratch_stride = (max(p.scratch_bytes for p in self.plans if p is not None) + 4095) // 4096 * 4096
        self.scratch = np.empty(parts * self.scratch_stride + 4096, dtype=np.uint8)
        self.scratch_base = <char*><size_t>((self.scratch.ctypes.data + 4095) // 4096 * 4096)


cdef inline bint _run_panel(const Grid* g, Block k, const float* a, const float* b,
                            const float* bias, float* c, char* scratch_base, Py_ssize_t scratch_stride,
                            Py_ssize_t t) noexcept nogil:
    """Block k of a panel grid on its oneDNN plan, by part t; False if oneDNN refused (then C is
    as it was, and the caller computes the block on the engine's sgemm)."""
    return _run(g.full_plan if k.rows == g.br else g.last_plan, a, g.packed_b if g.packed_b != NULL else b,
                bias, c, scratch_base + t * scratch_stride) == 0


cdef struct Block:
    Py_ssize_t r0, rows, c0, cols, cost  # first row, row count, first column, column count


cdef inline Block _block(const Grid* g, Py_ssize_t i) noexcept nogil:
    """Block i of the grid (row-major order); its cost is its multiply-adds."""
    cdef Block k
    k.r0 = (i // g.nc) * g.br
    k.c0 = (i % g.nc) * g.bc
    k.rows = min(g.br, g.rows - k.r0)
    k.cols = min(g.bc, g.cols - k.c0)
    k.cost = k.rows * k.cols * g.inner
    return k


def _check(Py_ssize_t M, Py_ssize_t K, Py_ssize_t N, int num_threads):
    if max(M, K, N) > INT_MAX:  # BLAS takes 32-bit sizes
        raise ValueError("linear: sizes above %d are not supported" % INT_MAX)
    if num_threads < 1:
        raise ValueError("linear: num_threads must be >= 1")


def _forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
             floating[:, ::1] y, int num_threads, int gelu=0, floating[:, ::1] act=None, packed=None):
    # x (M, K), w (N, K), b (N,) or None -> y (M, N) = x w^T + b.
    # gelu: 0 none, 1 erf form, 2 tanh form: then act (M, N) = GELU(y), each block as soon as
    # its product is done, while it is still in cache (act may be y itself: in place).
    # packed: w packed by onednn.pack (its panels read that; w itself where a block falls back).
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.shape[0]
    cdef Py_ssize_t t, i, r, c, done, parts
    cdef int blas_threads = 0
    cdef bint has_bias = b is not None
    cdef Grid g
    cdef Block k
    if w.shape[1] != K or y.shape[0] != M or y.shape[1] != N or (b is not None and b.shape[0] != N):
        raise ValueError("linear: x (%d, %d), weight (%d, %d), out (%d, %d)" % (
            M, K, w.shape[0], w.shape[1], y.shape[0], y.shape[1]))
    if gelu and (act is None or act.shape[0] != M or act.shape[1] != N):
        raise ValueError("linear: the GELU output must have shape (%d, %d)" % (M, N))
    _check(M, K, N, num_threads)
    if M == 0 or N == 0:
        return
    if K == 0:
        y[:, :] = 0
        if b is not None:
            y[:, :] = b
        if gelu:
            for r in range(M):
                gelu_row(&act[r, 0], &y[r, 0], N, gelu == 2)
        return
    if floating is float and _few_rows(M, N * K):
        _forward_few_rows(&x[0, 0], M, K, &w[0, 0], &b[0] if has_bias else NULL, &y[0, 0], N, num_threads,
                          gelu, &act[0, 0] if gelu else NULL)
        return
    cdef _Panels panels = _Panels(M, N, K, True, K, K, has_bias, num_threads, packed) if floating is float else None
    g = panels.grid if floating is float else _grid(M, N, K)
    cdef char* scratch = panels.scratch_base if floating is float else NULL
    cdef Py_ssize_t scratch_stride = panels.scratch_stride if floating is float else 0
    parts = min(<Py_ssize_t>num_threads, g.nr * g.nc)
    with serial_blas, nogil, parallel(num_threads=parts):
        blas_threads = blas_threads_enter(_blas_set_local)
        fa_nested_serial()
        for t in prange(parts, schedule="static", chunksize=1):
            done = 0
            for i in range(g.nr * g.nc):
                k = _block(&g, i)
                if in_part(done, k.cost, M * N * K, t, parts):
                    # y[r0:, c0:] (rows, cols) = x[r0:] (rows, K) @ w[c0:]^T (K, cols) + b[c0:]
                    if floating is double or g.full_plan == NULL or not _run_panel(
                            &g, k, &x[k.r0, 0], &w[0, 0], &b[0] if has_bias else NULL, &y[k.r0, 0],
                            scratch, scratch_stride, t):
                        if has_bias:  # start from the bias, then add x w^T (beta = 1)
                            for r in range(k.r0, k.r0 + k.rows):
                                for c in range(k.c0, k.c0 + k.cols):
                                    y[r, c] = b[c]
                        gemm_rowmajor_on(_sgemm, False, True, k.rows, k.cols, K, 1, &x[k.r0, 0], K, &w[k.c0, 0], K,
                                      1 if has_bias else 0, &y[k.r0, k.c0], N)
                    if gelu:
                        for r in range(k.r0, k.r0 + k.rows):
                            gelu_row(&act[r, k.c0], &y[r, k.c0], k.cols, gelu == 2)
                done = done + k.cost
        blas_threads_exit(_blas_set_local, blas_threads)


cdef void _forward_few_rows(const float* x, Py_ssize_t M, Py_ssize_t K, const float* w, const float* b,
                            float* y, Py_ssize_t N, int num_threads, int gelu, float* act) noexcept nogil:
    # y (M, N) = x (M, K) @ w (N, K)^T + b, M <= GEMV_MAX_ROWS: each thread a contiguous run of
    # columns (multiples of 8), then the GELU over it. Every output is one dot product computed
    # the same way wherever the runs start (gemv_rows.h), so the thread count changes no bit.
    cdef Py_ssize_t t, r, c0, c1, parts = max(1, min(<Py_ssize_t>num_threads, (N + 63) // 64))
    with parallel(num_threads=parts):
        for t in prange(parts, schedule="static", chunksize=1):
            c0 = (N * t // parts) // 8 * 8
            c1 = N if t == parts - 1 else (N * (t + 1) // parts) // 8 * 8
            fa_gemv_rows(x, M, K, w, b, y, N, c0, c1)
            if gelu:
                for r in range(M):
                    gelu_row(act + r * N + c0, y + r * N + c0, c1 - c0, gelu == 2)


def _backward(const floating[:, ::1] dy, const floating[:, ::1] x, const floating[:, ::1] w,
              floating[:, ::1] dx, floating[:, ::1] dw, floating[::1] db, int num_threads):
    # dy (M, N), x (M, K), w (N, K) -> dx (M, K) = dy w; dw (N, K) = dy^T x; db (N) = sum_rows dy.
    # The blocks of dx, then those of dw, are one list dealt to the threads: no two threads write
    # one element, and each sum over M is in one BLAS call (no reduction across threads).
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.shape[0]
    cdef Py_ssize_t t, i, r, done, parts, n_dx, total
    cdef int blas_threads = 0
    cdef Grid gx, gw
    cdef Block k
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
    cdef _Panels panels = _Panels(M, K, N, False, N, K, False, num_threads, None, True) if floating is float else None
    gx = panels.grid if floating is float else _grid(M, K, N, True)
    cdef char* scratch = panels.scratch_base if floating is float else NULL
    cdef Py_ssize_t scratch_stride = panels.scratch_stride if floating is float else 0
    gw = _grid(N, K, M, True)
    n_dx = gx.nr * gx.nc
    total = 2 * M * N * K
    parts = min(<Py_ssize_t>num_threads, n_dx + gw.nr * gw.nc)
    with serial_blas, nogil, parallel(num_threads=parts):
        blas_threads = blas_threads_enter(_blas_set_local)
        fa_nested_serial()
        for t in prange(parts, schedule="static", chunksize=1):
            done = 0
            for i in range(n_dx + gw.nr * gw.nc):
                k = _block(&gx, i) if i < n_dx else _block(&gw, i - n_dx)
                if in_part(done, k.cost, total, t, parts):
                    if i < n_dx:
                        # dx[r0:, c0:] (rows, cols) = dy[r0:] (rows, N) @ w[:, c0:] (N, cols)
                        if floating is double or gx.full_plan == NULL or not _run_panel(
                                &gx, k, &dy[k.r0, 0], &w[0, 0], NULL, &dx[k.r0, 0], scratch, scratch_stride, t):
                            gemm_rowmajor_on(_sgemm, False, False, k.rows, k.cols, N, 1, &dy[k.r0, 0], N, &w[0, k.c0], K,
                                          0, &dx[k.r0, k.c0], K)
                    else:
                        # dw[r0:, c0:] (rows, cols) = dy[:, r0:]^T (rows, M) @ x[:, c0:] (M, cols);
                        # one row (decode): the outer product, a row at a time (a GEMM of inner
                        # dimension 1 runs far below the speed of writing dw)
                        if M == 1:
                            for r in range(k.r0, k.r0 + k.rows):
                                scale_row(&dw[r, k.c0], &x[0, k.c0], k.cols, dy[0, r])
                        else:
                            gemm_rowmajor_on(_sgemm, True, False, k.rows, k.cols, M, 1, &dy[0, k.r0], N,
                                             &x[0, k.c0], K, 0, &dw[k.r0, k.c0], K)
                        if k.c0 == 0:  # the first column block of a row block also sums db
                            memset(&db[k.r0], 0, k.rows * sizeof(floating))
                            for r in range(M):
                                add_row(&db[k.r0], &dy[r, k.r0], k.rows)
                done = done + k.cost
        blas_threads_exit(_blas_set_local, blas_threads)
def _lowp():
    """fastattn._compiled.linear_lowp (built with oneDNN's headers only), or ValueError."""
    try:
        from fastattn._compiled import linear_lowp
    except ImportError as exc:
        raise ValueError(f"int8 and bfloat16 weights need oneDNN (fastattn._compiled.linear_lowp: {exc})")
    return linear_lowp


def int8_engine():
    """What runs the int8 products now: "onednn" (its VNNI / AMX kernels, src_cython/linear_lowp.pyx)
    where the float32 products are on oneDNN and its instruction set has VNNI; else "avx2"
    (fastattn's own kernels, src_cython/linear_int8.pyx: oneDNN's int8 kernels without VNNI
    saturate) where the CPU has AVX2; else None."""
    if _engine == "onednn" and _gemm_engine.onednn_has_vnni():
        try:
            _lowp()
            return "onednn"
        except ValueError:
            pass
    from fastattn._compiled import linear_int8

    return "avx2" if linear_int8.SUPPORTED else None


def _linear_lowp(input, weight, bias):
    """linear with an int8 or bfloat16 weight (fastattn/_lowp.py) on the engine for its type."""
    if weight.compute_type == "int8" and int8_engine() == "avx2":
        from fastattn._compiled import linear_int8

        return linear_int8.linear_int8(input, weight.q, weight.scale, bias)  # (q: the plain rows, never packed)
    return _lowp().linear_lowp(input, weight, bias)


def _packed_weight(w, Py_ssize_t rows):
    """The packed copy of a weight frozen by Module.freeze (made on its first product of more
    rows than the few-row kernel takes, kept by fastattn/_frozen.py until it is unfrozen), or
    None: w is read as it is."""
    if _run == NULL or rows < 2 or _few_rows(rows, w.size) or w.dtype != np.float32 or not w.flags.c_contiguous:
        return None
    return _frozen.kept(w, _onednn.pack)


@cython.wraparound(True)
def linear(input, weight, bias=None):
    """input (..., in) @ weight.T + bias. Inputs are validated by fastattn.functional."""
    if not isinstance(weight, np.ndarray):  # int8 / bfloat16 (fastattn/_lowp.py)
        return _linear_lowp(input, weight, bias)
    x = np.ascontiguousarray(input)
    K, N = x.shape[-1], weight.shape[0]
    y = np.empty(x.shape[:-1] + (N,), dtype=x.dtype)
    w = np.ascontiguousarray(weight)
    _forward(x.reshape(-1, K), w, None if bias is None else np.ascontiguousarray(bias), y.reshape(-1, N),
             threads_for(2 * x.size * N), packed=_packed_weight(w, x.size // K if K else 0))
    return y


@cython.wraparound(True)
def linear_gelu(input, weight, bias=None, approximate="none", return_pre=False):
    """gelu(input @ weight.T + bias), fused; with return_pre also the linear output. Inputs are
    validated by fastattn.functional."""
    if not isinstance(weight, np.ndarray):  # int8 / bfloat16: the product, then GELU in place
        y = _linear_lowp(input, weight, bias)
        act = _gelu(y, approximate)
        return (act, y) if return_pre else act
    x = np.ascontiguousarray(input)
    K, N = x.shape[-1], weight.shape[0]
    y = np.empty(x.shape[:-1] + (N,), dtype=x.dtype)
    act = np.empty_like(y) if return_pre else y
    w = np.ascontiguousarray(weight)
    # (work: the product, and some 20 operations per GELU)
    _forward(x.reshape(-1, K), w, None if bias is None else np.ascontiguousarray(bias), y.reshape(-1, N),
             threads_for(2 * x.size * N + 20 * y.size), 2 if approximate == "tanh" else 1,
             act.reshape(-1, N), _packed_weight(w, x.size // K if K else 0))
    return (act, y) if return_pre else act


@cython.wraparound(True)
def linear_backward(grad_output, input, weight):
    """(grad_input, grad_weight, grad_bias) of linear. Inputs are validated by fastattn.functional."""
    x = np.ascontiguousarray(input)
    K, N = x.shape[-1], weight.shape[0]
    dx = np.empty_like(x)
    dw = np.empty((N, K), dtype=x.dtype)
    db = np.empty(N, dtype=x.dtype)
    _backward(np.ascontiguousarray(grad_output).reshape(-1, N), x.reshape(-1, K),
              np.ascontiguousarray(weight), dx.reshape(-1, K), dw, db, threads_for(4 * x.size * N))
    return dx, dw, db
