/* y (M, N) = x (M, K) @ w (N, K)^T (+ b) for a few rows of x (batched decode, beam search), in one
   pass over w: each pair of weight rows is read once from memory and multiplied by up to 4 rows
   of x at a time (x stays in L1). A GEMM packs w first: at M = 2 to 16 the BLAS's and oneDNN's
   sgemm took 1.6-3x the time of a single-row gemv over GPT-2's weights (AMD EPYC Zen 3), where
   the bytes read are the same.

   Each output is one dot product over K, in a fixed order (8 lanes of FMAs, then the lanes summed
   pairwise, then the K % 8 tail), so a block gives the same bits whichever thread runs it. */
#ifndef FASTATTN_GEMV_ROWS_H
#define FASTATTN_GEMV_ROWS_H

#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FA_GEMV_ROWS 1
#include <immintrin.h>
#define FA_AVX2_FMA __attribute__((target("avx2,fma")))
#define FA_AVX2_FMA_INLINE static inline __attribute__((target("avx2,fma"), always_inline))
#endif

/* Whether this CPU runs fa_gemv_rows (AVX2 and FMA). */
static inline int fa_gemv_rows_supported(void)
{
#ifdef FA_GEMV_ROWS
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

#ifdef FA_GEMV_ROWS

FA_AVX2_FMA_INLINE float fa_hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* mr (1-4) rows of x against nr (1-2) rows of w: y[i * ldy + j] = x_i . w_j (+ b[j]). The two
   rows at `ahead` (the next pair, or these nr at the end of the columns) are prefetched a cache line
   at a time. */
FA_AVX2_FMA_INLINE void fa_gemv_tile(int mr, int nr, const float* x, int64_t K, const float* w,
                                     const float* ahead, const float* b, float* y, int64_t ldy)
{
    __m256 acc[4][2];
    for (int i = 0; i < 4; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    int64_t k = 0, K8 = K / 8 * 8;
    for (; k < K8; k += 8) {
        if ((k & 15) == 0) {
            _mm_prefetch((const char*)(ahead + k), _MM_HINT_T0);
            _mm_prefetch((const char*)(ahead + (nr > 1 ? K : 0) + k), _MM_HINT_T0);
        }
        __m256 w0 = _mm256_loadu_ps(w + k);
        __m256 w1 = nr > 1 ? _mm256_loadu_ps(w + K + k) : w0;
        for (int i = 0; i < mr; i++) {
            __m256 xv = _mm256_loadu_ps(x + i * K + k);
            acc[i][0] = _mm256_fmadd_ps(xv, w0, acc[i][0]);
            if (nr > 1)
                acc[i][1] = _mm256_fmadd_ps(xv, w1, acc[i][1]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float s = fa_hsum8(acc[i][j]);
            for (int64_t t = k; t < K; t++)
                s += x[i * K + t] * w[j * K + t];
            y[i * ldy + j] = b != NULL ? s + b[j] : s;
        }
}

#define FA_GEMV_CASE(mr, nr) case 4 * (mr) + (nr): fa_gemv_tile(mr, nr, x + i * K, K, w + c * K, ahead, bc, y + i * ldy + c, ldy); break;

/* Columns c0 <= c < c1 of y (M, N), ldy = N: on the calling thread. */
static FA_AVX2_FMA void fa_gemv_rows(const float* x, int64_t M, int64_t K, const float* w, const float* b,
                                     float* y, int64_t ldy, int64_t c0, int64_t c1)
{
    for (int64_t c = c0; c < c1; c += 2) {
        int nr = c1 - c >= 2 ? 2 : 1;
        const float* bc = b != NULL ? b + c : NULL;
        const float* ahead = w + (c + 4 <= c1 ? c + 2 : c) * K;  /* (never past the columns) */
        for (int64_t i = 0; i < M; i += 4) {
            int mr = M - i >= 4 ? 4 : (int)(M - i);
            switch (4 * mr + nr) {
                FA_GEMV_CASE(1, 1) FA_GEMV_CASE(1, 2) FA_GEMV_CASE(2, 1) FA_GEMV_CASE(2, 2)
                FA_GEMV_CASE(3, 1) FA_GEMV_CASE(3, 2) FA_GEMV_CASE(4, 1) FA_GEMV_CASE(4, 2)
            }
        }
    }
}

#else

/* Other compilers and CPUs: fa_gemv_rows_supported() is 0 and linear.pyx runs these products on
   the GEMM; the definition the module links against computes the same dot products one at a time. */
static void fa_gemv_rows(const float* x, int64_t M, int64_t K, const float* w, const float* b,
                         float* y, int64_t ldy, int64_t c0, int64_t c1)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t c = c0; c < c1; c++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++)
                s += x[i * K + k] * w[c * K + k];
            y[i * ldy + c] = b != NULL ? s + b[c] : s;
        }
}

#endif
#endif
