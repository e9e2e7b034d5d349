"""Scaled dot-product attention, flash style (the compiled twin of fastattn/reference/attention.py).

For each (batch-head n, block of Bq queries) a thread walks the keys in blocks of Bk:

    S = scale * Q_blk @ K_blk^T              (Bq, Bk)   BLAS
    mask S (causal limit, bool / additive)
    online softmax: m = running row max, l = running sum of exp(S - m),
                    acc is rescaled by exp(m_old - m_new) whenever m grows
    acc += exp(S - m) @ V_blk                (Bq, Dv)   BLAS
    out_blk = acc / l                         (rows that saw no key: 0)

so no (Tq, Tk) buffer exists: a thread holds one (Bq, Bk) score tile and one (Bq, Dv) accumulator.
With is_causal, query i sees keys j <= i + (Tk - Tq) (the queries are the last Tq positions), and
key blocks past the last visible key of a query block are never computed.
"""
import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.limits cimport INT_MAX
from libc.math cimport INFINITY, log, sqrt
from libc.string cimport memset

from _blas cimport blas_threads_enter, blas_threads_exit, blas_threads_fn, gemm_rowmajor
from _row_ops cimport exp, exp_sum_row, mask_row, scale_row

from fastattn._compiled._blas_threads import local_setter_address, serial_blas
from fastattn._compiled._masks import mask_plan
from fastattn._threads import get_num_threads

# Tile sizes (measured, not guessed: benchmarks/tune_attention_tiles.py). A (128, 512) float32
# score tile is 256 KiB; with the K and V blocks it stays in a 1 MiB L2. Fewer query rows (decode:
# 1) get proportionally more keys per tile, so the BLAS calls stay large.
BLOCK_Q = 128
BLOCK_K = 512
TILE_AREA = BLOCK_Q * BLOCK_K

cdef blas_threads_fn _blas_set_local = <blas_threads_fn><size_t>local_setter_address()


cdef void _flash_forward(const floating* q, const floating* k, const floating* v, floating* out,
                         floating* lse, floating* workspace, Py_ssize_t N, Py_ssize_t Tq, Py_ssize_t Tk,
                         Py_ssize_t D, Py_ssize_t Dv, floating scale, bint causal,
                         const unsigned char* bool_mask, const floating* add_mask,
                         const Py_ssize_t* mask_offsets, Py_ssize_t mask_rs, Py_ssize_t mask_cs,
                         const Py_ssize_t* key_end, const unsigned char* mask_in_use,
                         Py_ssize_t Bq, Py_ssize_t Bk, int num_threads) noexcept nogil:
    # q (N, Tq, D), k (N, Tk, D), v (N, Tk, Dv), out (N, Tq, Dv): contiguous.
    # lse (N, Tq) or NULL: log-sum-exp of each row's scores (-inf: saw no key), for the backward.
    # workspace: per thread, a score tile (Bq, Bk), an accumulator (Bq, Dv), m (Bq) and l (Bq).
    # key_end (N) or NULL: the mask hides every key >= key_end[n] from every query of batch n.
    # mask_in_use (N) or NULL: 0 where the mask hides nothing else (no need to apply it).
    cdef Py_ssize_t n_qblocks = (Tq + Bq - 1) // Bq
    cdef Py_ssize_t per_thread = Bq * Bk + Bq * Dv + 2 * Bq
    cdef Py_ssize_t shift = Tk - Tq
    cdef Py_ssize_t w, n, i0, bq, j0, bk, k_end, r, mask_at
    cdef floating *s
    cdef floating *acc
    cdef floating *m
    cdef floating *l
    cdef floating row_max, m_new, alpha
    cdef const unsigned char* bm
    cdef const floating* am
    cdef int blas_threads = 0

    # BLAS stays serial inside these threads (the caller also holds serial_blas, for the BLAS
    # builds where the "thread-local" setting is process-wide).
    with parallel(num_threads=num_threads):
        blas_threads = blas_threads_enter(_blas_set_local)
        for w in prange(N * n_qblocks, schedule="dynamic"):
            s = workspace + threadid() * per_thread
            acc = s + Bq * Bk
            m = acc + Bq * Dv
            l = m + Bq
            n = w // n_qblocks
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

            j0 = 0
            while j0 < k_end:
                bk = min(Bk, k_end - j0)
                gemm_rowmajor(False, True, bq, bk, D, scale, q + (n * Tq + i0) * D, D,
                              k + (n * Tk + j0) * D, D, 0, s, bk)
                for r in range(bq):
                    bm = NULL
                    am = NULL
                    if mask_offsets != NULL and (mask_in_use == NULL or mask_in_use[n] != 0):
                        mask_at = mask_offsets[n] + (i0 + r) * mask_rs + j0 * mask_cs
                        bm = bool_mask + mask_at if bool_mask else NULL
                        am = add_mask + mask_at if add_mask else NULL
                    row_max = mask_row(s + r * bk, bk, i0 + r + shift + 1 - j0 if causal else bk,
                                       bm, mask_cs, am, mask_cs)
                    if row_max != row_max or m[r] != m[r]:
                        m_new = row_max + m[r]  # NaN: stays NaN for the rest of the row
                    else:
                        m_new = row_max if row_max > m[r] else m[r]
                    if m_new == -INFINITY:  # nothing visible yet: this tile adds zeros
                        exp_sum_row(s + r * bk, bk, m_new)
                        continue
                    alpha = exp(m[r] - m_new)
                    l[r] = l[r] * alpha + exp_sum_row(s + r * bk, bk, m_new)
                    if alpha != 1:
                        scale_row(acc + r * Dv, acc + r * Dv, Dv, alpha)
                    m[r] = m_new
                gemm_rowmajor(False, False, bq, Dv, bk, 1, s, bk, v + (n * Tk + j0) * Dv, Dv,
                              1, acc, Dv)
                j0 = j0 + Bk  # (not +=: inside prange that would declare a reduction)

            for r in range(bq):
                # l == 0: the row could attend to no key, its output is 0 (not 0/0)
                scale_row(out + (n * Tq + i0 + r) * Dv, acc + r * Dv, Dv,
                          1 / l[r] if l[r] != 0 else 0)
                if lse != NULL:
                    lse[n * Tq + i0 + r] = m[r] + log(l[r]) if l[r] != 0 else -INFINITY
        blas_threads_exit(_blas_set_local, blas_threads)


cdef void _flash_backward(const floating* q, const floating* k, const floating* v,
                          const floating* out, const floating* dout, const floating* lse,
                          floating* dq, floating* dk, floating* dv, floating* workspace,
                          Py_ssize_t N, Py_ssize_t Tq, Py_ssize_t Tk, Py_ssize_t D, Py_ssize_t Dv,
                          floating scale, bint causal,
                          const unsigned char* bool_mask, const floating* add_mask,
                          const Py_ssize_t* mask_offsets, Py_ssize_t mask_rs, Py_ssize_t mask_cs,
                          const Py_ssize_t* key_end, const unsigned char* mask_in_use,
                          Py_ssize_t Bq, Py_ssize_t Bk, int num_threads) noexcept nogil:
    # q, dq (N, Tq, D); k, dk (N, Tk, D); v, dv (N, Tk, Dv); out, dout (N, Tq, Dv); lse (N, Tq).
    # One batch-head per task, so a thread owns its dq, dk, dv. Per query block and key block:
    #   P  = exp(S - lse)             (Bq, Bk)  the forward's weights, S recomputed (BLAS)
    #   dV += P^T dO                  (Bk, Dv)  BLAS
    #   dP = dO V^T                   (Bq, Bk)  BLAS
    #   dS = P * (dP - D)             D = rowsum(dO * O), per query row
    #   dQ += scale dS K,  dK += scale dS^T Q   BLAS
    # workspace: per thread, P and dS tiles (Bq, Bk) and D (Tq).
    cdef Py_ssize_t per_thread = 2 * Bq * Bk + Tq
    cdef Py_ssize_t shift = Tk - Tq
    cdef Py_ssize_t n, i, i0, bq, j0, bk, k_end, r, c, t, mask_at
    cdef floating *p
    cdef floating *ds
    cdef floating *row_dot
    cdef floating acc
    cdef const unsigned char* bm
    cdef const floating* am
    cdef int blas_threads = 0

    with parallel(num_threads=num_threads):
        blas_threads = blas_threads_enter(_blas_set_local)
        for n in prange(N, schedule="dynamic"):
            p = workspace + threadid() * per_thread
            ds = p + Bq * Bk
            row_dot = ds + Bq * Bk
            memset(dq + n * Tq * D, 0, Tq * D * sizeof(floating))
            memset(dk + n * Tk * D, 0, Tk * D * sizeof(floating))
            memset(dv + n * Tk * Dv, 0, Tk * Dv * sizeof(floating))
            for i in range(Tq):
                acc = 0
                for t in range(Dv):
                    acc = acc + dout[(n * Tq + i) * Dv + t] * out[(n * Tq + i) * Dv + t]
                row_dot[i] = acc

            i0 = 0  # (a while loop: range() with a run-time step is not a C loop)
            while i0 < Tq:
                bq = min(Bq, Tq - i0)
                k_end = min(Tk, i0 + bq + shift) if causal else Tk
                if key_end:
                    k_end = min(k_end, key_end[n])
                j0 = 0
                while j0 < k_end:
                    bk = min(Bk, k_end - j0)
                    gemm_rowmajor(False, True, bq, bk, D, scale, q + (n * Tq + i0) * D, D,
                                  k + (n * Tk + j0) * D, D, 0, p, bk)
                    for r in range(bq):
                        bm = NULL
                        am = NULL
                        if mask_offsets != NULL and (mask_in_use == NULL or mask_in_use[n] != 0):
                            mask_at = mask_offsets[n] + (i0 + r) * mask_rs + j0 * mask_cs
                            bm = bool_mask + mask_at if bool_mask else NULL
                            am = add_mask + mask_at if add_mask else NULL
                        mask_row(p + r * bk, bk, i0 + r + shift + 1 - j0 if causal else bk,
                                 bm, mask_cs, am, mask_cs)
                        exp_sum_row(p + r * bk, bk, lse[n * Tq + i0 + r])  # (-inf lse: zeros)
                    gemm_rowmajor(True, False, bk, Dv, bq, 1, p, bk, dout + (n * Tq + i0) * Dv, Dv,
                                  1, dv + (n * Tk + j0) * Dv, Dv)
                    gemm_rowmajor(False, True, bq, bk, Dv, 1, dout + (n * Tq + i0) * Dv, Dv,
                                  v + (n * Tk + j0) * Dv, Dv, 0, ds, bk)
                    for r in range(bq):
                        for c in range(bk):
                            ds[r * bk + c] = p[r * bk + c] * (ds[r * bk + c] - row_dot[i0 + r])
                    gemm_rowmajor(False, False, bq, D, bk, scale, ds, bk, k + (n * Tk + j0) * D, D,
                                  1, dq + (n * Tq + i0) * D, D)
                    gemm_rowmajor(True, False, bk, D, bq, scale, ds, bk, q + (n * Tq + i0) * D, D,
                                  1, dk + (n * Tk + j0) * D, D)
                    j0 = j0 + Bk  # (not +=: inside prange that would declare a reduction)
                i0 = i0 + Bq
        blas_threads_exit(_blas_set_local, blas_threads)


cdef tuple _shape(const floating[:, :, ::1] a):
    return (a.shape[0], a.shape[1], a.shape[2])


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


def _forward(const floating[:, :, ::1] q, const floating[:, :, ::1] k, const floating[:, :, ::1] v,
             floating[:, :, ::1] out, double scale, bint causal,
             const unsigned char[::1] bool_mask, const floating[::1] add_mask,
             const Py_ssize_t[::1] mask_offsets, Py_ssize_t mask_rs, Py_ssize_t mask_cs,
             Py_ssize_t block_q, Py_ssize_t block_k, int num_threads,
             const Py_ssize_t[::1] key_end=None, const unsigned char[::1] mask_in_use=None,
             floating[:, ::1] lse=None):
    cdef Py_ssize_t N = q.shape[0], Tq = q.shape[1], D = q.shape[2]
    cdef Py_ssize_t Tk = k.shape[1], Dv = v.shape[2]
    if (k.shape[0] != N or v.shape[0] != N or k.shape[2] != D or v.shape[1] != Tk
            or out.shape[0] != N or out.shape[1] != Tq or out.shape[2] != Dv):
        raise ValueError("attention: inconsistent shapes q %s, k %s, v %s, out %s" % (
            _shape(q), _shape(k), _shape(v), _shape(out)))
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
        out[:, :, :] = 0
        if lse is not None:
            lse[:, :] = -INFINITY
        return
    workspace = np.empty(num_threads * (block_q * block_k + block_q * Dv + 2 * block_q),
                         dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] ws = workspace
    with serial_blas, nogil:
        _flash_forward(&q[0, 0, 0], &k[0, 0, 0], &v[0, 0, 0], &out[0, 0, 0],
                       &lse[0, 0] if lse is not None else NULL, &ws[0],
                       N, Tq, Tk, D, Dv, <floating>scale, causal,
                       &bool_mask[0] if mask_len and bool_mask is not None else NULL,
                       &add_mask[0] if mask_len and add_mask is not None else NULL,
                       &mask_offsets[0] if mask_len else NULL, mask_rs, mask_cs,
                       &key_end[0] if key_end is not None else NULL,
                       &mask_in_use[0] if mask_in_use is not None else NULL,
                       block_q, block_k, num_threads)


def _backward(const floating[:, :, ::1] q, const floating[:, :, ::1] k, const floating[:, :, ::1] v,
              const floating[:, :, ::1] out, const floating[:, :, ::1] dout, const floating[:, ::1] lse,
              floating[:, :, ::1] dq, floating[:, :, ::1] dk, floating[:, :, ::1] dv,
              double scale, bint causal,
              const unsigned char[::1] bool_mask, const floating[::1] add_mask,
              const Py_ssize_t[::1] mask_offsets, Py_ssize_t mask_rs, Py_ssize_t mask_cs,
              Py_ssize_t block_q, Py_ssize_t block_k, int num_threads,
              const Py_ssize_t[::1] key_end=None, const unsigned char[::1] mask_in_use=None):
    cdef Py_ssize_t N = q.shape[0], Tq = q.shape[1], D = q.shape[2]
    cdef Py_ssize_t Tk = k.shape[1], Dv = v.shape[2]
    if (k.shape[0] != N or v.shape[0] != N or k.shape[2] != D or v.shape[1] != Tk
            or _shape(out) != (N, Tq, Dv) or _shape(dout) != (N, Tq, Dv)
            or lse.shape[0] != N or lse.shape[1] != Tq or _shape(dq) != (N, Tq, D)
            or _shape(dk) != (N, Tk, D) or _shape(dv) != (N, Tk, Dv)):
        raise ValueError("attention backward: inconsistent shapes q %s, k %s, v %s, out %s, dout %s, "
                         "dq %s, dk %s, dv %s" % (_shape(q), _shape(k), _shape(v), _shape(out),
                                                  _shape(dout), _shape(dq), _shape(dk), _shape(dv)))
    mask_len = bool_mask.shape[0] if bool_mask is not None else (
        add_mask.shape[0] if add_mask is not None else 0)
    _check_mask_plan(N, Tq, Tk, D, Dv, mask_len, mask_offsets, mask_rs, mask_cs, key_end,
                     mask_in_use, block_q, block_k, num_threads)
    if N == 0 or Tq == 0 or Tk == 0 or D == 0 or Dv == 0:  # nothing flows: all gradients are 0
        dq[:, :, :] = 0
        dk[:, :, :] = 0
        dv[:, :, :] = 0
        return
    workspace = np.empty(num_threads * (2 * block_q * block_k + Tq),
                         dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] ws = workspace
    with serial_blas, nogil:
        _flash_backward(&q[0, 0, 0], &k[0, 0, 0], &v[0, 0, 0], &out[0, 0, 0], &dout[0, 0, 0],
                        &lse[0, 0], &dq[0, 0, 0], &dk[0, 0, 0], &dv[0, 0, 0], &ws[0],
                        N, Tq, Tk, D, Dv, <floating>scale, causal,
                        &bool_mask[0] if mask_len and bool_mask is not None else NULL,
                        &add_mask[0] if mask_len and add_mask is not None else NULL,
                        &mask_offsets[0] if mask_len else NULL, mask_rs, mask_cs,
                        &key_end[0] if key_end is not None else NULL,
                        &mask_in_use[0] if mask_in_use is not None else NULL,
                        block_q, block_k, num_threads)


@cython.wraparound(True)
def _prepare(query, key, value, attn_mask):
    """Contiguous (N, T, D) views of q, k, v, the mask arguments of _forward/_backward, and the
    tile sizes and thread count for this problem."""
    q = np.ascontiguousarray(query)
    lead, (Tq, D), Tk, Dv = q.shape[:-2], q.shape[-2:], key.shape[-2], value.shape[-1]
    N = int(np.prod(lead, dtype=np.int64))
    q3 = q.reshape(N, Tq, D)
    k3 = np.ascontiguousarray(key).reshape(N, Tk, D)
    v3 = np.ascontiguousarray(value).reshape(N, Tk, Dv)
    plan = mask_plan(attn_mask, lead, Tq, Tk, q.dtype)
    if plan is None:
        mask_args, extent = (None, None, None, 0, 0), (None, None)
    else:
        mask_args = (plan.bool_base, plan.add_base, plan.offsets, plan.row_stride, plan.col_stride)
        extent = plan.key_extent()
    block_q = min(BLOCK_Q, max(Tq, 1))
    block_k = min(max(BLOCK_K, TILE_AREA // block_q), max(Tk, 1))
    tiles = (block_q, block_k, max(1, min(get_num_threads(), N * Tq)))
    return lead, q3, k3, v3, mask_args, tiles, extent


@cython.wraparound(True)
def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None,
                                 return_lse=False):
    """query (..., Tq, D), key (..., Tk, D), value (..., Tk, Dv) -> out (..., Tq, Dv) [, lse (..., Tq)].

    Inputs are validated by fastattn.functional; here they are only made contiguous."""
    lead, q3, k3, v3, mask_args, tiles, (key_end, in_use) = _prepare(query, key, value, attn_mask)
    N, Tq, D = q3.shape
    out = np.empty((N, Tq, v3.shape[2]), dtype=q3.dtype)
    lse = np.empty((N, Tq), dtype=q3.dtype) if return_lse else None
    _forward(q3, k3, v3, out, 1.0 / sqrt(D) if scale is None else float(scale), bool(is_causal),
             *mask_args, *tiles, key_end, in_use, lse)
    out = out.reshape(lead + (Tq, v3.shape[2]))
    return (out, lse.reshape(lead + (Tq,))) if return_lse else out


@cython.wraparound(True)
def scaled_dot_product_attention_backward(grad_output, query, key, value, output, lse,
                                          attn_mask=None, is_causal=False, scale=None):
    """Gradients (grad_query, grad_key, grad_value) of scaled_dot_product_attention, given the
    forward's output and lse. Inputs are validated by fastattn.functional."""
    lead, q3, k3, v3, mask_args, tiles, (key_end, in_use) = _prepare(query, key, value, attn_mask)
    N, Tq, D = q3.shape
    Dv = v3.shape[2]
    dq, dk, dv = np.empty_like(q3), np.empty_like(k3), np.empty_like(v3)
    _backward(q3, k3, v3, np.ascontiguousarray(output).reshape(N, Tq, Dv),
              np.ascontiguousarray(grad_output).reshape(N, Tq, Dv),
              np.ascontiguousarray(lse).reshape(N, Tq), dq, dk, dv,
              1.0 / sqrt(D) if scale is None else float(scale), bool(is_causal),
              *mask_args, *tiles, key_end, in_use)
    return dq.reshape(np.shape(query)), dk.reshape(np.shape(key)), dv.reshape(np.shape(value))
