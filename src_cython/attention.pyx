"""Scaled dot-product attention, flash style (the compiled twin of fastattn/reference/attention.py).

For each (batch-head n, block of Bq queries) a thread walks the keys in blocks of Bk:

    S = scale * Q_blk @ K_blk^T              (Bq, Bk)   GEMM engine (oneDNN's sgemm, or the BLAS)
    mask S (causal limit, bool / additive)
    online softmax: m = running row max, l = running sum of exp(S - m),
                    acc is rescaled by exp(m_old - m_new) whenever m grows
    acc += exp(S - m) @ V_blk                (Bq, Dv)   GEMM engine
    out_blk = acc / l                         (rows that saw no key: 0)

so no (Tq, Tk) buffer exists: a thread holds one (Bq, Bk) score tile and one (Bq, Dv) accumulator.
With is_causal, query i sees keys j <= i + (Tk - Tq) (the queries are the last Tq positions), and
key blocks past the last visible key of a query block are never computed.

Grouped-query attention (enable_gqa): k and v have H_kv heads, q has H = group * H_kv; query head
h reads kv head h // group in place (no repeated copy), and the backward sums dk, dv over the
group. Sliding window (window = W, causal only): query i sees keys i + shift - W < j <= i + shift;
key tiles wholly before a query block's first visible key are never computed (cost ~ Tq * W).
"""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.limits cimport INT_MAX
from libc.math cimport INFINITY, log, sqrt
from libc.string cimport memset

from _blas cimport blas_threads_enter, blas_threads_exit, blas_threads_fn, gemm_rowmajor_on, sgemm_rowmajor_fn
from _row_ops cimport exp, exp_sum_row, mask_row, scale_row

from fastattn._compiled import _gemm_engine
from fastattn._compiled._blas_threads import local_setter_address
from fastattn._compiled.serial_blas import serial_blas
from fastattn._compiled._masks import mask_plan
from fastattn._threads import threads_for

# Tile sizes (measured, not guessed: benchmarks/tune_attention_tiles.py). A (128, 512) float32
# score tile is 256 KiB; with the K and V blocks it stays in a 1 MiB L2. Fewer query rows (decode:
# 1) get proportionally more keys per tile, so the BLAS calls stay large.
BLOCK_Q = 128
BLOCK_K = 512
TILE_AREA = BLOCK_Q * BLOCK_K
# Full (not causal) attention has no diagonal to skip: taller query blocks share each K and V
# block among more rows. 256 x 512 took 5% less time than 128 x 512 at T = 1024 and 2048 on one
# thread (AMD EPYC Zen 3, tune_attention_tiles.py); causal shapes were level or slower with it.
BLOCK_Q_FULL = 256
# Rows per product on a sliding window's leading edge (a triangle of the score tile): fewer rows
# skip more of the hidden triangle, but make smaller products.
cdef Py_ssize_t EDGE_ROWS = 32


def _set_edge_rows(Py_ssize_t rows):
    """Sets EDGE_ROWS (>= 1), returns the previous value: for measuring it (a tuner's knob)."""
    global EDGE_ROWS
    if rows < 1:
        raise ValueError("EDGE_ROWS must be >= 1")
    previous, EDGE_ROWS = EDGE_ROWS, rows
    return previous

cdef blas_threads_fn _blas_set_local = <blas_threads_fn><size_t>local_setter_address()

cdef extern from "openmp_info.h":
    void fa_nested_serial() noexcept nogil

# The float32 tile products of two rows or more run on the GEMM engine's sgemm (oneDNN's, on the
# calling thread alone; NULL: the BLAS). On the Intel Xeon with AMX (family 6, model 167; 2
# threads, benchmarks/tune_attention_tiles.py --engines) oneDNN's took 0.84-0.90x OpenBLAS's
# time over full and causal attention at T = 256 to 4096, D = 64, and the same at decode.
cdef sgemm_rowmajor_fn _tile_sgemm = NULL
_tile_engine = "openblas"
# The forward's tiles of fewer than SMALL_TILE products (query rows x keys x D) run on the BLAS
# whatever the engine: oneDNN's sgemm costs more a call there. Intel Xeon with AMX, 2 threads,
# (32, 12, T, 32) with a key mask (MiniLM's attention), in turns in one process: the BLAS's tiles
# took 0.82x / 0.89x oneDNN's time at T = 16 / 24 (8192 / 18432 products), 1.00x at T = 40,
# 1.05x at 64 and 1.10x at 128.
cdef Py_ssize_t SMALL_TILE = 32768


def _use_tile_engine(str engine):
    """Run the float32 tile products on `engine` ("onednn" or "openblas"); returns the previous
    one. For benchmarks/tune_attention_tiles.py and the tests."""
    global _tile_sgemm, _tile_engine
    address = _gemm_engine.sgemm_address(engine)  # (ValueError for an engine that is not here)
    previous, _tile_engine = _tile_engine, engine
    _tile_sgemm = <sgemm_rowmajor_fn><size_t>address
    return previous


_use_tile_engine(_gemm_engine.ENGINE)


# Where the rows of q, k, v, out, ... are. The kernels see each array as (P, Q, T, D), the two
# leading dims flattened to n = p * Q + q_, and read it in place, strided: a GPT's q, k and v are
# views of one (B, T, 3, H, hs) projection, and its attention output goes straight into a
# (B, T, H, hs) buffer, with no copy either way. Only the rows themselves must be contiguous.
cdef struct Layout:
    Py_ssize_t inner   # Q, the size of the second leading dim
    Py_ssize_t s0, s1  # element strides of the two leading dims
    Py_ssize_t rs      # element stride from one row to the next (a BLAS leading dimension)


cdef inline Py_ssize_t at(Layout L, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """Element offset of row i of matrix n."""
    return (n // L.inner) * L.s0 + (n % L.inner) * L.s1 + i * L.rs


cdef inline Py_ssize_t kv_head(Layout lq, Layout lk, Py_ssize_t n, Py_ssize_t group) noexcept nogil:
    """The flat kv matrix that query matrix n reads: same batch, head (n % H) // group."""
    return (n // lq.inner) * lk.inner + (n % lq.inner) // group


cdef inline Py_ssize_t visible(bint causal, Py_ssize_t limit, Py_ssize_t bk) noexcept nogil:
    """The keys of a tile row of bk that causality leaves visible, the first `limit` (clamped to
    [0, bk]). Only those go through the mask and exp; the rest of the row is set to 0 (what exp
    gives a hidden key), so the diagonal tile of a causal product computes half its exps."""
    if not causal:
        return bk
    return min(max(limit, 0), bk)


cdef inline Py_ssize_t group_keys(Py_ssize_t i0, Py_ssize_t g0, Py_ssize_t gr, Py_ssize_t shift, Py_ssize_t j0,
                                  Py_ssize_t bk) noexcept nogil:
    """Causal: the keys from j0 (at most bk) that the last of query rows i0 + g0 .. + gr - 1 sees."""
    return min(bk, i0 + g0 + gr + shift - j0)


cdef inline void hide_before(floating* s, Py_ssize_t bk, Py_ssize_t first) noexcept nogil:
    """Sliding window: the first `first` scores of a tile row (keys before the window) -> -inf."""
    cdef Py_ssize_t c
    for c in range(min(bk, first)):
        s[c] = -INFINITY


cdef Layout _layout(str name, const Py_ssize_t* shape, const Py_ssize_t* strides, Py_ssize_t itemsize) except *:
    """The Layout of a (P, Q, T, D) array, or ValueError if the kernels cannot read it in place.
    shape, strides: a typed memoryview's own C arrays (taken as Py_ssize_t[:] memoryviews, each
    call made two new array objects: 38 us of a 68 us decode attention call, SmolLM2's shapes)."""
    cdef Layout L
    cdef Py_ssize_t d
    for d in range(4):
        if strides[d] % itemsize:
            raise ValueError("attention: %s is not aligned to its elements" % name)
    if shape[3] > 1 and strides[3] != itemsize:
        raise ValueError("attention: the rows of %s must be contiguous" % name)
    L.inner = max(shape[1], 1)
    L.s0 = strides[0] // itemsize
    L.s1 = strides[1] // itemsize
    L.rs = strides[2] // itemsize
    if shape[2] <= 1:
        L.rs = max(shape[3], 1)  # one row: any stride, but BLAS wants lda >= the row length
    elif L.rs < max(shape[3], 1):
        raise ValueError("attention: the rows of %s overlap" % name)
    if L.rs > INT_MAX:  # BLAS takes its leading dimension as a C int (_view4 copies such arrays)
        raise ValueError("attention: the row stride of %s, %d elements, is above %d" % (name, L.rs, INT_MAX))
    return L


cdef void _flash_forward(const floating* q, const floating* k, const floating* v, floating* out,
                         Layout lq, Layout lk, Layout lv, Layout lo,
                         floating* lse, floating* workspace, Py_ssize_t N, Py_ssize_t Tq, Py_ssize_t Tk,
                         Py_ssize_t D, Py_ssize_t Dv, floating scale, bint causal,
                         const unsigned char* bool_mask, const floating* add_mask,
                         const Py_ssize_t* mask_offsets, Py_ssize_t mask_rs, Py_ssize_t mask_cs,
                         const Py_ssize_t* key_end, const unsigned char* mask_in_use,
                         Py_ssize_t group, Py_ssize_t window,
                         Py_ssize_t Bq, Py_ssize_t Bk, int num_threads) noexcept nogil:
    # q (N, Tq, D), k (N / group, Tk, D), v (N / group, Tk, Dv), out (N, Tq, Dv): rows where lq,
    # lk, lv, lo say; query matrix n reads kv matrix kv_head(n). window: 0 (none) or W >= 1.
    # lse (N, Tq) or NULL: log-sum-exp of each row's scores (-inf: saw no key), for the backward.
    # workspace: per thread, a score tile (Bq, Bk), an accumulator (Bq, Dv), m (Bq) and l (Bq).
    # key_end (N) or NULL: the mask hides every key >= key_end[n] from every query of batch n.
    # mask_in_use (N) or NULL: 0 where the mask hides nothing else (no need to apply it).
    cdef Py_ssize_t n_qblocks = (Tq + Bq - 1) // Bq
    cdef Py_ssize_t per_thread = Bq * Bk + Bq * Dv + 2 * Bq
    cdef Py_ssize_t shift = Tk - Tq
    cdef Py_ssize_t w, n, nk, i0, bq, j0, bk, k_end, r, mask_at, g0, gr, nv, ge
    cdef bint edge, diagonal
    cdef floating *s
    cdef floating *acc
    cdef floating *m
    cdef floating *l
    cdef floating row_max, m_new, alpha
    cdef const unsigned char* bm
    cdef const floating* am
    cdef int blas_threads = 0
    cdef sgemm_rowmajor_fn tile = _tile_sgemm if min(Bq, Tq) * min(Bk, Tk) * D >= SMALL_TILE else NULL

    # BLAS stays serial inside these threads (the caller also holds serial_blas, for the BLAS
    # builds where the "thread-local" setting is process-wide).
    with parallel(num_threads=num_threads):
        blas_threads = blas_threads_enter(_blas_set_local)
        fa_nested_serial()
        for w in prange(N * n_qblocks, schedule="dynamic"):
            s = workspace + threadid() * per_thread
            acc = s + Bq * Bk
            m = acc + Bq * Dv
            l = m + Bq
            n = w // n_qblocks
            nk = kv_head(lq, lk, n, group)
            # the last query blocks see the most keys under causality: start them first
            i0 = (n_qblocks - 1 - w % n_qblocks) * Bq
            bq = min(Bq, Tq - i0)
            k_end = min(Tk, i0 + bq + shift) if causal else Tk
            if key_end:
                k_end = min(k_end, key_end[n])
            for r in range(bq):
                m[r] = -INFINITY
                l[r] = 0
            memset(acc, 0, bq * Dv * sizeof(floating))

            # the window of the block's first query starts here: earlier keys are never computed
            j0 = max(0, i0 + shift - window + 1) if window else 0
            edge = window != 0 and j0 > 0
            while j0 < k_end:
                if edge:
                    # the window's leading edge: row r's first key is j0 + r, so a (bq, bq) tile
                    # there is a triangle. Its products run per group of EDGE_ROWS rows, each from
                    # the group's first visible key; the columns left of it are hidden below.
                    bk = min(bq, k_end - j0)
                    g0 = 0
                    while g0 < bq and g0 < bk:
                        gr = min(EDGE_ROWS, bq - g0)
                        gemm_rowmajor_on(tile, False, True, gr, bk - g0, D, scale, q + at(lq, n, i0 + g0), lq.rs,
                                      k + at(lk, nk, j0 + g0), lk.rs, 0, s + g0 * bk + g0, bk)
                        g0 = g0 + EDGE_ROWS
                else:
                    bk = min(Bk, k_end - j0)
                    # a sliding window's diagonal tile (its first row sees fewer keys than it has):
                    # the products run per group of EDGE_ROWS rows, each up to its last row's
                    # last visible key; the rest of each row is hidden below, never read. (With a
                    # window of W keys this tile is Bq / W of the work; causal without a window
                    # ran 1.05-1.08x slower at (1, 12, 1024, 64) in the smaller products.)
                    diagonal = window != 0 and bq > EDGE_ROWS and j0 + bk > i0 + shift + 1
                    if diagonal:
                        g0 = 0
                        while g0 < bq:
                            gr = min(EDGE_ROWS, bq - g0)
                            ge = group_keys(i0, g0, gr, shift, j0, bk)
                            if ge > 0:
                                gemm_rowmajor_on(tile, False, True, gr, ge, D, scale, q + at(lq, n, i0 + g0),
                                                 lq.rs, k + at(lk, nk, j0), lk.rs, 0, s + g0 * bk, bk)
                            g0 = g0 + EDGE_ROWS
                    else:
                        gemm_rowmajor_on(tile, False, True, bq, bk, D, scale, q + at(lq, n, i0), lq.rs,
                                      k + at(lk, nk, j0), lk.rs, 0, s, bk)
                for r in range(bq):
                    if window:
                        hide_before(s + r * bk, bk, i0 + r + shift - window + 1 - j0)
                    bm = NULL
                    am = NULL
                    if mask_offsets != NULL and (mask_in_use == NULL or mask_in_use[n] != 0):
                        mask_at = mask_offsets[n] + (i0 + r) * mask_rs + j0 * mask_cs
                        bm = bool_mask + mask_at if bool_mask else NULL
                        am = add_mask + mask_at if add_mask else NULL
                    nv = visible(causal, i0 + r + shift + 1 - j0, bk)
                    row_max = mask_row(s + r * bk, nv, nv, bm, mask_cs, am, mask_cs)
                    if row_max != row_max or m[r] != m[r]:
                        m_new = row_max + m[r]  # NaN: stays NaN for the rest of the row
                    else:
                        m_new = row_max if row_max > m[r] else m[r]
                    if m_new == -INFINITY:  # nothing visible yet: this tile adds zeros
                        exp_sum_row(s + r * bk, bk, m_new)
                        continue
                    alpha = exp(m[r] - m_new)
                    l[r] = l[r] * alpha + exp_sum_row(s + r * bk, nv, m_new)
                    memset(s + r * bk + nv, 0, (bk - nv) * sizeof(floating))  # (the hidden keys' weights)
                    if alpha != 1:
                        scale_row(acc + r * Dv, acc + r * Dv, Dv, alpha)
                    m[r] = m_new
                if edge:  # (the weights left of each group's first key are 0: skipped)
                    g0 = 0
                    while g0 < bq and g0 < bk:
                        gr = min(EDGE_ROWS, bq - g0)
                        gemm_rowmajor_on(tile, False, False, gr, Dv, bk - g0, 1, s + g0 * bk + g0, bk,
                                      v + at(lv, nk, j0 + g0), lv.rs, 1, acc + g0 * Dv, Dv)
                        g0 = g0 + EDGE_ROWS
                    edge = False
                elif diagonal:  # (each group's weights past its last visible key are 0: skipped)
                    g0 = 0
                    while g0 < bq:
                        gr = min(EDGE_ROWS, bq - g0)
                        ge = group_keys(i0, g0, gr, shift, j0, bk)
                        if ge > 0:
                            gemm_rowmajor_on(tile, False, False, gr, Dv, ge, 1, s + g0 * bk, bk,
                                             v + at(lv, nk, j0), lv.rs, 1, acc + g0 * Dv, Dv)
                        g0 = g0 + EDGE_ROWS
                else:
                    gemm_rowmajor_on(tile, False, False, bq, Dv, bk, 1, s, bk, v + at(lv, nk, j0), lv.rs,
                                  1, acc, Dv)
                j0 = j0 + bk  # (not +=: inside prange that would declare a reduction)

            for r in range(bq):
                # l == 0: the row could attend to no key, its output is 0 (not 0/0)
                scale_row(out + at(lo, n, i0 + r), acc + r * Dv, Dv,
                          1 / l[r] if l[r] != 0 else 0)
                if lse != NULL:
                    lse[n * Tq + i0 + r] = m[r] + log(l[r]) if l[r] != 0 else -INFINITY
        blas_threads_exit(_blas_set_local, blas_threads)


cdef void _flash_backward(const floating* q, const floating* k, const floating* v,
                          const floating* out, const floating* dout, const floating* lse,
                          floating* dq, floating* dk, floating* dv,
                          Layout lq, Layout lk, Layout lv, Layout lo, Layout ldo,
                          Layout ldq, Layout ldk, Layout ldv, floating* workspace,
                          Py_ssize_t N, Py_ssize_t Tq, Py_ssize_t Tk, Py_ssize_t D, Py_ssize_t Dv,
                          floating scale, bint causal,
                          const unsigned char* bool_mask, const floating* add_mask,
                          const Py_ssize_t* mask_offsets, Py_ssize_t mask_rs, Py_ssize_t mask_cs,
                          const Py_ssize_t* key_end, const unsigned char* mask_in_use,
                          Py_ssize_t group, Py_ssize_t window,
                          Py_ssize_t Bq, Py_ssize_t Bk, int num_threads) noexcept nogil:
    # q, dq (N, Tq, D); k, dk (N / group, Tk, D); v, dv (N / group, Tk, Dv); out, dout (N, Tq, Dv),
    # each strided as its Layout says; lse (N, Tq) contiguous.
    # One kv matrix per task, with the `group` query heads that read it, so a thread owns its dk,
    # dv (summed over the group) and their dq. Per query head, query block and key block:
    #   P  = exp(S - lse)             (Bq, Bk)  the forward's weights, S recomputed (BLAS)
    #   dV += P^T dO                  (Bk, Dv)  BLAS
    #   dP = dO V^T                   (Bq, Bk)  BLAS
    #   dS = P * (dP - D)             D = rowsum(dO * O), per query row
    #   dQ += scale dS K,  dK += scale dS^T Q   BLAS
    # workspace: per thread, P and dS tiles (Bq, Bk) and D (Tq).
    cdef Py_ssize_t per_thread = 2 * Bq * Bk + Tq
    cdef Py_ssize_t shift = Tk - Tq
    cdef Py_ssize_t n, nk, g, i, i0, bq, j0, bk, k_end, r, c, t, mask_at, nv
    cdef floating *p
    cdef floating *ds
    cdef floating *row_dot
    cdef floating acc
    cdef const unsigned char* bm
    cdef const floating* am
    cdef int blas_threads = 0

    with parallel(num_threads=num_threads):
        blas_threads = blas_threads_enter(_blas_set_local)
        fa_nested_serial()
        for nk in prange(N // group, schedule="dynamic"):
            p = workspace + threadid() * per_thread
            ds = p + Bq * Bk
            row_dot = ds + Bq * Bk
            for i in range(Tk):
                memset(dk + at(ldk, nk, i), 0, D * sizeof(floating))
                memset(dv + at(ldv, nk, i), 0, Dv * sizeof(floating))
            for g in range(group):
                # the g-th query head of kv matrix nk (same batch, head (nk % H_kv) * group + g)
                n = (nk // lk.inner) * lq.inner + (nk % lk.inner) * group + g
                for i in range(Tq):
                    memset(dq + at(ldq, n, i), 0, D * sizeof(floating))
                for i in range(Tq):
                    acc = 0
                    for t in range(Dv):
                        acc = acc + dout[at(ldo, n, i) + t] * out[at(lo, n, i) + t]
                    row_dot[i] = acc

                i0 = 0  # (a while loop: range() with a run-time step is not a C loop)
                while i0 < Tq:
                    bq = min(Bq, Tq - i0)
                    k_end = min(Tk, i0 + bq + shift) if causal else Tk
                    if key_end:
                        k_end = min(k_end, key_end[n])
                    j0 = max(0, i0 + shift - window + 1) if window else 0
                    while j0 < k_end:
                        bk = min(Bk, k_end - j0)
                        gemm_rowmajor_on(_tile_sgemm, False, True, bq, bk, D, scale, q + at(lq, n, i0), lq.rs,
                                      k + at(lk, nk, j0), lk.rs, 0, p, bk)
                        for r in range(bq):
                            if window:
                                hide_before(p + r * bk, bk, i0 + r + shift - window + 1 - j0)
                            bm = NULL
                            am = NULL
                            if mask_offsets != NULL and (mask_in_use == NULL or mask_in_use[n] != 0):
                                mask_at = mask_offsets[n] + (i0 + r) * mask_rs + j0 * mask_cs
                                bm = bool_mask + mask_at if bool_mask else NULL
                                am = add_mask + mask_at if add_mask else NULL
                            nv = visible(causal, i0 + r + shift + 1 - j0, bk)
                            mask_row(p + r * bk, nv, nv, bm, mask_cs, am, mask_cs)
                            exp_sum_row(p + r * bk, nv, lse[n * Tq + i0 + r])  # (-inf lse: zeros)
                            memset(p + r * bk + nv, 0, (bk - nv) * sizeof(floating))
                        gemm_rowmajor_on(_tile_sgemm, True, False, bk, Dv, bq, 1, p, bk, dout + at(ldo, n, i0), ldo.rs,
                                      1, dv + at(ldv, nk, j0), ldv.rs)
                        gemm_rowmajor_on(_tile_sgemm, False, True, bq, bk, Dv, 1, dout + at(ldo, n, i0), ldo.rs,
                                      v + at(lv, nk, j0), lv.rs, 0, ds, bk)
                        for r in range(bq):
                            for c in range(bk):
                                ds[r * bk + c] = p[r * bk + c] * (ds[r * bk + c] - row_dot[i0 + r])
                        gemm_rowmajor_on(_tile_sgemm, False, False, bq, D, bk, scale, ds, bk, k + at(lk, nk, j0), lk.rs,
                                      1, dq + at(ldq, n, i0), ldq.rs)
                        gemm_rowmajor_on(_tile_sgemm, True, False, bk, D, bq, scale, ds, bk, q + at(lq, n, i0), lq.rs,
                                      1, dk + at(ldk, nk, j0), ldk.rs)
                        j0 = j0 + Bk  # (not +=: inside prange that would declare a reduction)
                    i0 = i0 + Bq
        blas_threads_exit(_blas_set_local, blas_threads)


cdef tuple _shape4(const floating[:, :, :, :] a):
    return (a.shape[0], a.shape[1], a.shape[2], a.shape[3])


def _check_mask_plan(Py_ssize_t N, Py_ssize_t Tq, Py_ssize_t Tk, Py_ssize_t D, Py_ssize_t Dv,
                     Py_ssize_t mask_len, mask_offsets, Py_ssize_t mask_rs, Py_ssize_t mask_cs,
                     key_end, mask_in_use, Py_ssize_t block_q, Py_ssize_t block_k, int num_threads):
    """What the nogil code trusts beyond the array shapes: checked while it can still raise."""
    if block_q < 1 or block_k < 1 or num_threads < 1:
        raise ValueError("attention: block sizes and num_threads must be >= 1")
    if max(D, Dv, block_q, block_k) > INT_MAX:  # BLAS takes 32-bit sizes
        raise ValueError("attention: D = %d, Dv = %d: sizes above %d are not supported" % (D, Dv, INT_MAX))
    if mask_len and N and Tq and Tk:
        if (mask_offsets is None or len(mask_offsets) != N or mask_rs < 0 or mask_cs < 0
                or min(mask_offsets) < 0
                or max(mask_offsets) + (Tq - 1) * mask_rs + (Tk - 1) * mask_cs >= mask_len):
            raise ValueError("attention: mask plan does not cover the scores")
    if (key_end is not None and len(key_end) != N) or (mask_in_use is not None and len(mask_in_use) != N):
        raise ValueError("attention: key_end and mask_in_use need %d entries (one per batch-head)" % N)


def _forward4(const floating[:, :, :, :] q, const floating[:, :, :, :] k, const floating[:, :, :, :] v,
             floating[:, :, :, :] out, double scale, bint causal,
             const unsigned char[::1] bool_mask, const floating[::1] add_mask,
             const Py_ssize_t[::1] mask_offsets, Py_ssize_t mask_rs, Py_ssize_t mask_cs,
             Py_ssize_t block_q, Py_ssize_t block_k, int num_threads,
             const Py_ssize_t[::1] key_end=None, const unsigned char[::1] mask_in_use=None,
             floating[:, ::1] lse=None, Py_ssize_t window=0):
    # q (P, Q, Tq, D), k (P, Qk, Tk, D), v (P, Qk, Tk, Dv) -> out (P, Q, Tq, Dv), lse (P * Q, Tq):
    # any strides with contiguous rows (see Layout); N = P * Q matrices; Q a multiple of Qk
    # (grouped-query attention when Qk < Q). window: 0, or W >= 1 keys per query (with causal).
    cdef Py_ssize_t P = q.shape[0], Q = q.shape[1], Tq = q.shape[2], D = q.shape[3]
    cdef Py_ssize_t N = P * Q, Tk = k.shape[2], Dv = v.shape[3], Qk = k.shape[1]
    cdef Layout lq, lk, lv, lo
    if (Qk < 1 or Q % Qk or _shape4(k) != (P, Qk, Tk, D) or _shape4(v) != (P, Qk, Tk, Dv)
            or _shape4(out) != (P, Q, Tq, Dv) or window < 0 or (window and not causal)):
        raise ValueError("attention: inconsistent shapes q %s, k %s, v %s, out %s" % (
            _shape4(q), _shape4(k), _shape4(v), _shape4(out)))
    if lse is not None and (lse.shape[0] != N or lse.shape[1] != Tq):
        raise ValueError("attention: lse must have shape (%d, %d)" % (N, Tq))
    mask_len = bool_mask.shape[0] if bool_mask is not None else (
        add_mask.shape[0] if add_mask is not None else 0)
    _check_mask_plan(N, Tq, Tk, D, Dv, mask_len, mask_offsets, mask_rs, mask_cs, key_end,
                     mask_in_use, block_q, block_k, num_threads)
    if Dv == 0 and lse is not None:  # (BLAS cannot take Dv = 0; fastattn.functional handles it)
        raise ValueError("attention: lse with Dv = 0 is not computed here")
    if N == 0 or Tq == 0 or Dv == 0:
        return
    if Tk == 0:  # no key at all: every row is fully masked
        out[:, :, :, :] = 0
        if lse is not None:
            lse[:, :] = -INFINITY
        return
    lq = _layout("q", q.shape, q.strides, sizeof(floating))
    lk = _layout("k", k.shape, k.strides, sizeof(floating))
    lv = _layout("v", v.shape, v.strides, sizeof(floating))
    lo = _layout("out", out.shape, out.strides, sizeof(floating))
    workspace = np.empty(num_threads * (block_q * block_k + block_q * Dv + 2 * block_q),
                         dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] ws = workspace
    with serial_blas, nogil:
        _flash_forward(&q[0, 0, 0, 0], &k[0, 0, 0, 0], &v[0, 0, 0, 0], &out[0, 0, 0, 0],
                       lq, lk, lv, lo, &lse[0, 0] if lse is not None else NULL, &ws[0],
                       N, Tq, Tk, D, Dv, <floating>scale, causal,
                       &bool_mask[0] if mask_len and bool_mask is not None else NULL,
                       &add_mask[0] if mask_len and add_mask is not None else NULL,
                       &mask_offsets[0] if mask_len else NULL, mask_rs, mask_cs,
                       &key_end[0] if key_end is not None else NULL,
                       &mask_in_use[0] if mask_in_use is not None else NULL,
                       Q // Qk, window, block_q, block_k, num_threads)


def _backward4(const floating[:, :, :, :] q, const floating[:, :, :, :] k, const floating[:, :, :, :] v,
              const floating[:, :, :, :] out, const floating[:, :, :, :] dout,
              const floating[:, ::1] lse,
              floating[:, :, :, :] dq, floating[:, :, :, :] dk, floating[:, :, :, :] dv,
              double scale, bint causal,
              const unsigned char[::1] bool_mask, const floating[::1] add_mask,
              const Py_ssize_t[::1] mask_offsets, Py_ssize_t mask_rs, Py_ssize_t mask_cs,
              Py_ssize_t block_q, Py_ssize_t block_k, int num_threads,
              const Py_ssize_t[::1] key_end=None, const unsigned char[::1] mask_in_use=None,
              Py_ssize_t window=0):
    # as _forward4: (P, Q, T, D) arrays with contiguous rows, k, v, dk, dv (P, Qk, Tk, .);
    # dq, dk, dv must not overlap.
    cdef Py_ssize_t P = q.shape[0], Q = q.shape[1], Tq = q.shape[2], D = q.shape[3]
    cdef Py_ssize_t N = P * Q, Tk = k.shape[2], Dv = v.shape[3], Qk = k.shape[1]
    if (Qk < 1 or Q % Qk or window < 0 or (window and not causal)
            or _shape4(k) != (P, Qk, Tk, D) or _shape4(v) != (P, Qk, Tk, Dv)
            or _shape4(out) != (P, Q, Tq, Dv) or _shape4(dout) != (P, Q, Tq, Dv)
            or lse.shape[0] != N or lse.shape[1] != Tq or _shape4(dq) != (P, Q, Tq, D)
            or _shape4(dk) != (P, Qk, Tk, D) or _shape4(dv) != (P, Qk, Tk, Dv)):
        raise ValueError("attention backward: inconsistent shapes q %s, k %s, v %s, out %s, dout %s, "
                         "dq %s, dk %s, dv %s" % (_shape4(q), _shape4(k), _shape4(v), _shape4(out),
                                                  _shape4(dout), _shape4(dq), _shape4(dk), _shape4(dv)))
    mask_len = bool_mask.shape[0] if bool_mask is not None else (
        add_mask.shape[0] if add_mask is not None else 0)
    _check_mask_plan(N, Tq, Tk, D, Dv, mask_len, mask_offsets, mask_rs, mask_cs, key_end,
                     mask_in_use, block_q, block_k, num_threads)
    if N == 0 or Tq == 0 or Tk == 0 or D == 0 or Dv == 0:  # nothing flows: all gradients are 0
        dq[:, :, :, :] = 0
        dk[:, :, :, :] = 0
        dv[:, :, :, :] = 0
        return
    cdef Layout lq = _layout("q", q.shape, q.strides, sizeof(floating))
    cdef Layout lk = _layout("k", k.shape, k.strides, sizeof(floating))
    cdef Layout lv = _layout("v", v.shape, v.strides, sizeof(floating))
    cdef Layout lo = _layout("out", out.shape, out.strides, sizeof(floating))
    cdef Layout ldo = _layout("dout", dout.shape, dout.strides, sizeof(floating))
    cdef Layout ldq = _layout("dq", dq.shape, dq.strides, sizeof(floating))
    cdef Layout ldk = _layout("dk", dk.shape, dk.strides, sizeof(floating))
    cdef Layout ldv = _layout("dv", dv.shape, dv.strides, sizeof(floating))
    workspace = np.empty(num_threads * (2 * block_q * block_k + Tq),
                         dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] ws = workspace
    with serial_blas, nogil:
        _flash_backward(&q[0, 0, 0, 0], &k[0, 0, 0, 0], &v[0, 0, 0, 0], &out[0, 0, 0, 0],
                        &dout[0, 0, 0, 0], &lse[0, 0], &dq[0, 0, 0, 0], &dk[0, 0, 0, 0],
                        &dv[0, 0, 0, 0], lq, lk, lv, lo, ldo, ldq, ldk, ldv, &ws[0],
                        N, Tq, Tk, D, Dv, <floating>scale, causal,
                        &bool_mask[0] if mask_len and bool_mask is not None else NULL,
                        &add_mask[0] if mask_len and add_mask is not None else NULL,
                        &mask_offsets[0] if mask_len else NULL, mask_rs, mask_cs,
                        &key_end[0] if key_end is not None else NULL,
                        &mask_in_use[0] if mask_in_use is not None else NULL,
                        Q // Qk, window, block_q, block_k, num_threads)


def _forward(q, k, v, out, *args, **kwargs):
    """_forward4 on (N, T, D) arrays (as benchmarks/tune_attention_tiles.py calls it)."""
    _forward4(q[None], k[None], v[None], out[None], *args, **kwargs)


@cython.wraparound(True)
def _view4(a, bint writable=False):
    """a (..., T, D) as a (P, Q, T, D) array the kernels can use in place (a view of a when
    possible, else a contiguous copy): contiguous rows, rows that do not overlap, and, to write
    to, no leading dim repeating the same memory (a broadcast view), and a row stride that BLAS
    can take as a leading dimension (a C int: a view whose rows are more than INT_MAX elements
    apart, e.g. of a huge memory map, would otherwise be read wrong)."""
    lead = a.shape[:-2]
    if len(lead) == 0:
        a = a.reshape((1, 1) + a.shape)
    elif len(lead) == 1:
        a = a.reshape((1,) + a.shape)
    elif len(lead) > 2:  # (a view when the leading dims merge, else a copy)
        a = a.reshape((int(np.prod(lead[:-1], dtype=np.int64)), lead[-1]) + a.shape[-2:])
    it = a.itemsize
    s = a.strides
    if (any(x % it for x in s) or (a.shape[3] > 1 and s[3] != it)
            or (a.shape[2] > 1 and s[2] < a.shape[3] * it)
            or (a.shape[2] > 1 and s[2] // it > INT_MAX)
            or (writable and ((a.shape[0] > 1 and s[0] == 0) or (a.shape[1] > 1 and s[1] == 0)))):
        a = np.ascontiguousarray(a)
    return a


@cython.wraparound(True)
def _prepare(query, key, value, attn_mask, bint full=False, window=None):
    """(P, Q, T, D) views of q, k, v, the mask arguments of _forward/_backward, and the tile
    sizes and thread count for this problem (full: a forward that is not causal; window: the
    sliding window, None or W, which bounds the keys a query block computes)."""
    lead, (Tq, D), Tk = query.shape[:-2], query.shape[-2:], key.shape[-2]
    q4, k4, v4 = _view4(query), _view4(key), _view4(value)
    N = q4.shape[0] * q4.shape[1]
    plan = mask_plan(attn_mask, lead, Tq, Tk, q4.dtype)
    if plan is None:
        mask_args, extent = (None, None, None, 0, 0), (None, None)
    else:
        mask_args = (plan.bool_base, plan.add_base, plan.offsets, plan.row_stride, plan.col_stride)
        extent = plan.key_extent()
    block_q = min(BLOCK_Q_FULL if full else BLOCK_Q, max(Tq, 1))
    block_k = min(max(BLOCK_K, TILE_AREA // block_q), max(Tk, 1))
    # (work: the forward's two products, causal or not: an upper bound; or the bytes of K and V
    # when more, as at decode: one query a head reads each key once. GPT-2's decode step of 12
    # heads against 160 keys (983 KB, from memory after the layer's weights passed): one thread
    # 137 us, two 69 us, AMD EPYC Zen 3)
    keys = Tk if window is None else min(Tk, window + block_q)
    row = D + value.shape[-1]  # (a key's and its value's elements)
    work = max(2 * N * Tq * keys * row, k4.shape[0] * k4.shape[1] * keys * row * k4.itemsize)
    tiles = (block_q, block_k, max(1, min(threads_for(work), N * Tq)))
    return lead, q4, k4, v4, mask_args, tiles, extent


@cython.wraparound(True)
def _output(out, shape, dtype):
    """(the array to return, its (P, Q, T, D) view the kernel writes): out itself when given and
    writable in place, else a new array (copied into out at the end, see _finish)."""
    if out is None:
        result = np.empty(shape, dtype=dtype)
        return result, _view4(result)
    return out, _view4(out, True)


cdef _finish(result, target4):
    """Copy what the kernel wrote to a stand-in for `result` back into it."""
    if not np.may_share_memory(result, target4):
        result[...] = target4.reshape(result.shape)


@cython.wraparound(True)
def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None,
                                 return_lse=False, out=None, enable_gqa=False, window=None):
    """query (..., Tq, D), key (..., Tk, D), value (..., Tk, Dv) -> out (..., Tq, Dv) [, lse (..., Tq)].
    enable_gqa: key and value have H_kv heads (dim -3), query H = group * H_kv.

    Inputs (and out, if given: written in place and returned) are validated by
    fastattn.functional; here they are only viewed (P, Q, T, D), copied where they must be."""
    lead, q4, k4, v4, mask_args, tiles, (key_end, in_use) = _prepare(query, key, value, attn_mask,
                                                                     not is_causal, window)
    Tq, D, Dv = q4.shape[2], q4.shape[3], v4.shape[3]
    N = q4.shape[0] * q4.shape[1]
    result, o4 = _output(out, lead + (Tq, Dv), q4.dtype)
    lse = np.empty((N, Tq), dtype=q4.dtype) if return_lse else None
    _forward4(q4, k4, v4, o4, 1.0 / sqrt(D) if scale is None else float(scale), bool(is_causal),
             *mask_args, *tiles, key_end, in_use, lse, window or 0)
    _finish(result, o4)
    return (result, lse.reshape(lead + (Tq,))) if return_lse else result


@cython.wraparound(True)
def scaled_dot_product_attention_backward(grad_output, query, key, value, output, lse,
                                          attn_mask=None, is_causal=False, scale=None, out=None,
                                          enable_gqa=False, window=None):
    """Gradients (grad_query, grad_key, grad_value) of scaled_dot_product_attention, given the
    forward's output and lse; written into out = (dq, dk, dv) if given (with enable_gqa, dk and
    dv summed over each group of query heads). Inputs are validated by fastattn.functional."""
    lead, q4, k4, v4, mask_args, tiles, (key_end, in_use) = _prepare(query, key, value, attn_mask,
                                                                     False, window)
    Tq, D = q4.shape[2], q4.shape[3]
    N = q4.shape[0] * q4.shape[1]
    outs = [_output(None if out is None else out[i], a.shape, q4.dtype)
            for i, a in enumerate((query, key, value))]
    _backward4(q4, k4, v4, _view4(output), _view4(grad_output),
              np.ascontiguousarray(lse).reshape(N, Tq), outs[0][1], outs[1][1], outs[2][1],
              1.0 / sqrt(D) if scale is None else float(scale), bool(is_causal),
              *mask_args, *tiles, key_end, in_use, window or 0)
    for result, target in outs:
        _finish(result, target)
    return tuple(result for result, _ in outs)
