/* int8 products on AVX2, for CPUs whose oneDNN has no VNNI (AMD Zen 1-3, Intel before Ice Lake):
   oneDNN's int8 kernels there multiply u8 x s8 with vpmaddubsw, whose int16 pair sums saturate
   (255 * 127 * 2 > 32767: measured on Zen 3, products off by up to 6e5), so they cannot give the
   exact integer sums that fastattn/reference/linear_lowp.py defines. These widen both operands
   to int16 and multiply with vpmaddwd (pairs of int16 products summed into int32): exact for the
   symmetric int8 values (|q| <= 127) that fastattn quantizes to, with no compensation term.

   acc[i][j] = sum_k a[i, k] * w[j, k] over a tile of up to 2 rows of a (activations, already
   widened to int16, each row padded with zeros to a multiple of 16) and 4 rows of w (the weight's
   plain (N, K) int8 rows, read as they are: no packed copy), or, for a single row (decode), of
   1 row and 8 rows of w, prefetched ahead. Then the epilogue of
   fa_int8_epilogue_row in the same float32 operations and order: y = float(acc) * sx[i] * sw[j]
   (+ b[j]). The module is built with -ffp-contract=off and these functions target AVX2 without
   FMA, so nothing fuses the multiply and the add. */
#ifndef FASTATTN_INT8_AVX2_H
#define FASTATTN_INT8_AVX2_H

#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FA_INT8_AVX2 1
#include <immintrin.h>
#define FA_AVX2 __attribute__((target("avx2")))
#define FA_AVX2_INLINE static inline __attribute__((target("avx2"), always_inline))
#endif

/* Whether this CPU runs the kernels below (AVX2; the OS saving the ymm registers is part of
   __builtin_cpu_supports' answer in GCC >= 4.8 and clang). */
static inline int fa_int8_avx2_supported(void)
{
#ifdef FA_INT8_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

#ifdef FA_INT8_AVX2

/* a (n) int8 -> out (n16) int16, n16 = n rounded up to a multiple of 16, the rest zeros. */
static FA_AVX2 void fa_widen_row_s8(const int8_t* a, int64_t n, int16_t* out, int64_t n16)
{
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        _mm256_storeu_si256((__m256i*)(out + k), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(a + k))));
    for (; k < n; k++)
        out[k] = a[k];
    for (; k < n16; k++)
        out[k] = 0;
}

/* The four int32 lane sums of v0..v3 (8 lanes each), in one vector. */
FA_AVX2_INLINE __m128i fa_sum4(__m256i v0, __m256i v1, __m256i v2, __m256i v3)
{
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* One tile of MR <= 2 rows x NR <= 4 columns (MR, NR constants once inlined: the loops unroll and
   the 8 accumulators stay in registers; 3 rows, 12 of them, spilled to the stack: Zen 3, (640, 384)
   -> 1152 on 2 threads at 131 GOP/s against 185 for 2 rows, in one process). a: MR rows of int16, row stride lda, K16 long (zeros
   past K); w: NR int8 rows of K, stride ldw; y: MR rows of NR outputs, stride ldy. */
FA_AVX2_INLINE void fa_int8_tile(int MR, int NR, const int16_t* a, int64_t lda, const int8_t* w, int64_t ldw,
                                 int64_t K, const float* sx, const float* sw, const float* b, float* y,
                                 int64_t ldy)
{
    __m256i acc[2][4];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
            acc[i][j] = _mm256_setzero_si256();
    int64_t k = 0, K16 = K / 16 * 16;
    for (; k < K16; k += 16) {
        __m256i av[2];
        for (int i = 0; i < MR; i++)
            av[i] = _mm256_loadu_si256((const __m256i*)(a + i * lda + k));
        for (int j = 0; j < NR; j++) {
            __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(w + j * ldw + k)));
            for (int i = 0; i < MR; i++)
                acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(av[i], wv));
        }
    }
    int32_t tail[2][4] = {{0}};
    for (; k < K; k++)  /* (K not a multiple of 16: the rest one by one, exact all the same) */
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++)
                tail[i][j] += (int32_t)a[i * lda + k] * (int32_t)w[j * ldw + k];
    __m128 vsw = NR == 4 ? _mm_loadu_ps(sw) : _mm_setzero_ps(), vb = _mm_setzero_ps();
    if (NR < 4) {
        float s4[4] = {0}, b4[4] = {0};
        for (int j = 0; j < NR; j++)
            s4[j] = sw[j], b4[j] = b != NULL ? b[j] : 0.0f;
        vsw = _mm_loadu_ps(s4);
        vb = _mm_loadu_ps(b4);
    } else if (b != NULL) {
        vb = _mm_loadu_ps(b);
    }
    for (int i = 0; i < MR; i++) {
        __m128i s = _mm_add_epi32(fa_sum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]),
                                  _mm_loadu_si128((const __m128i*)tail[i]));
        __m128 v = _mm_mul_ps(_mm_mul_ps(_mm_cvtepi32_ps(s), _mm_set1_ps(sx[i])), vsw);
        if (b != NULL)
            v = _mm_add_ps(v, vb);
        if (NR == 4) {
            _mm_storeu_ps(y + i * ldy, v);
        } else {
            float out[4];
            _mm_storeu_ps(out, v);
            for (int j = 0; j < NR; j++)
                y[i * ldy + j] = out[j];
        }
    }
}

/* One activation row against 8 weight rows (decode: the weights streamed once from memory). a: K16
   int16; w: 8 int8 rows of K, stride ldw; y: 8 outputs. The 8 rows at `ahead` (the next ones, or
   these at the end of the weight) are prefetched a cache line at a time: without that one thread
   streamed 6 GB/s of GPT-2's LM head (Zen 3), with it 13 GB/s, what a plain sum over the array
   reads. */
FA_AVX2_INLINE void fa_int8_row8(const int16_t* a, const int8_t* w, const int8_t* ahead, int64_t ldw, int64_t K,
                                 float sx, const float* sw, const float* b, float* y)
{
    __m256i acc[8];
    for (int j = 0; j < 8; j++)
        acc[j] = _mm256_setzero_si256();
    int64_t k = 0, K16 = K / 16 * 16;
    for (; k < K16; k += 16) {
        __m256i av = _mm256_loadu_si256((const __m256i*)(a + k));
        if ((k & 63) == 0)
            for (int j = 0; j < 8; j++)
                _mm_prefetch((const char*)(ahead + j * ldw + k), _MM_HINT_T0);
        for (int j = 0; j < 8; j++)
            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(
                av, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(w + j * ldw + k)))));
    }
    int32_t tail[8] = {0};
    for (; k < K; k++)
        for (int j = 0; j < 8; j++)
            tail[j] += (int32_t)a[k] * (int32_t)w[j * ldw + k];
    for (int h = 0; h < 2; h++) {
        __m128i s = _mm_add_epi32(fa_sum4(acc[4 * h], acc[4 * h + 1], acc[4 * h + 2], acc[4 * h + 3]),
                                  _mm_loadu_si128((const __m128i*)(tail + 4 * h)));
        __m128 v = _mm_mul_ps(_mm_mul_ps(_mm_cvtepi32_ps(s), _mm_set1_ps(sx)), _mm_loadu_ps(sw + 4 * h));
        if (b != NULL)
            v = _mm_add_ps(v, _mm_loadu_ps(b + 4 * h));
        _mm_storeu_ps(y + 4 * h, v);
    }
}

#define FA_INT8_TILE_CASE(mr, nr) \
    case 4 * (mr) + (nr): fa_int8_tile(mr, nr, a, K16, w, K, K, sx + r, sw + c, b, y + r * N + c, N); break;

/* y[r0:r1, c0:c1] of y (M, N) = a16 (M, K16) int16 @ q (N, K) int8 ^T, scaled: one block, on the
   calling thread. A single row by 8 weight rows at a time; else column tiles of 4 weight rows
   outer (4 K bytes, in L1 while every row tile of the block passes), row tiles of 2 inner. */
static FA_AVX2 void fa_int8_block(const int16_t* a16, int64_t K16, const int8_t* q, int64_t K, const float* sx,
                                  const float* sw, const float* bias, float* y, int64_t N, int64_t r0, int64_t r1,
                                  int64_t c0, int64_t c1)
{
    int64_t c = c0;
    if (r1 - r0 == 1)
        for (; c + 8 <= c1; c += 8)
            fa_int8_row8(a16 + r0 * K16, q + c * K, q + (c + 16 <= N ? c + 8 : c) * K, K, K, sx[r0], sw + c,
                         bias != NULL ? bias + c : NULL, y + r0 * N + c);
    for (; c < c1; c += 4) {
        int nr = c1 - c < 4 ? (int)(c1 - c) : 4;
        const int8_t* w = q + c * K;
        const float* b = bias != NULL ? bias + c : NULL;
        for (int64_t r = r0; r < r1; r += 2) {
            const int16_t* a = a16 + r * K16;
            switch (4 * (r + 2 <= r1 ? 2 : 1) + nr) {
                FA_INT8_TILE_CASE(1, 1) FA_INT8_TILE_CASE(1, 2) FA_INT8_TILE_CASE(1, 3) FA_INT8_TILE_CASE(1, 4)
                FA_INT8_TILE_CASE(2, 1) FA_INT8_TILE_CASE(2, 2) FA_INT8_TILE_CASE(2, 3) FA_INT8_TILE_CASE(2, 4)
            }
        }
    }
}

#undef FA_INT8_TILE_CASE

#else /* not x86-64: never called (fa_int8_avx2_supported() is 0) */

static inline void fa_widen_row_s8(const int8_t* a, int64_t n, int16_t* out, int64_t n16)
{
    (void)a, (void)n, (void)out, (void)n16;
}

static inline void fa_int8_block(const int16_t* a16, int64_t K16, const int8_t* q, int64_t K, const float* sx,
                                 const float* sw, const float* bias, float* y, int64_t N, int64_t r0, int64_t r1,
                                 int64_t c0, int64_t c1)
{
    (void)a16, (void)K16, (void)q, (void)K, (void)sx, (void)sw, (void)bias, (void)y, (void)N;
    (void)r0, (void)r1, (void)c0, (void)c1;
}

#endif
#endif
