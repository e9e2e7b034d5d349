/* int8 products on AVX2, for CPUs whose oneDNN has no VNNI (AMD Zen 1-3, Intel before Ice Lake):
   oneDNN's int8 kernels there multiply u8 x s8 with vpmaddubsw, whose int16 pair sums saturate
   (255 * 127 * 2 > 32767: measured on Zen 3, products off by up to 6e5), so they cannot give the
   exact integer sums that fastattn/reference/linear_lowp.py defines. The tiles below widen both
   operands to int16 and multiply with vpmaddwd (pairs of int16 products summed into int32),
   exact with no compensation term.

   acc[i][j] = sum_k a[i, k] * w[j, k] over a tile of up to 2 rows of a (activations, already
   widened to int16, each row padded with zeros to a multiple of 16) and 4 rows of w (the weight's
   plain (N, K) int8 rows, read as they are: no packed copy). A single row (decode) instead meets
   the weight rows one by one, in vpmaddubsw products that cannot saturate (see fa_int8_row).
   Then the epilogue of fa_int8_epilogue_row in the same float32 operations and order:
   y = float(acc) * sx[i] * sw[j] (+ b[j]). The module is built with -ffp-contract=off and these functions target AVX2 without
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

/* The int32 sum of v's 8 lanes. */
FA_AVX2_INLINE int32_t fa_hsum8(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
}

/* Bytes ahead of the weight row being read that the row loop below prefetches. */
#define FA_INT8_AHEAD 4096

/* One activation row x (K int8, not widened) against weight rows c0 .. c1 of q (N, K), one row
   after another, so the weight is read as a single sequential stream (decode). 8 rows side by side
   (their k loops interleaved) read 8 streams of K bytes each; at K = 768 those are too short for
   the hardware prefetcher: one thread read 4.7 GB/s from memory against 7.0 for this loop and 9
   for a plain sum over the array (Zen 3, GPT-2's shapes). Each 32-byte step multiplies |w| (as
   u8, <= 128) by x * sign(w) (|x| <= 127: the quantizer's range) with vpmaddubsw: every int16 pair
   sum is at most 2 * 128 * 127 = 32512, so it never saturates and the int32 sums are exact (the
   same as the widened products, -128 in the weight included). The epilogue is fa_int8_tile's, in
   the same float32 operations and order. */
static FA_AVX2 void fa_int8_row(const int8_t* x, const int8_t* q, int64_t K, int64_t N, float sx,
                                const float* sw, const float* b, float* y, int64_t c0, int64_t c1)
{
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t c = c0; c < c1; c++) {
        const int8_t* w = q + c * K;
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
        int64_t k = 0;
        for (; k + 64 <= K; k += 64) {
            if (c * K + k + FA_INT8_AHEAD < N * K)
                _mm_prefetch((const char*)(w + k + FA_INT8_AHEAD), _MM_HINT_T0);
            __m256i x0 = _mm256_loadu_si256((const __m256i*)(x + k)), w0 = _mm256_loadu_si256((const __m256i*)(w + k));
            __m256i x1 = _mm256_loadu_si256((const __m256i*)(x + k + 32)), w1 = _mm256_loadu_si256((const __m256i*)(w + k + 32));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w0), _mm256_sign_epi8(x0, w0)), ones));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w1), _mm256_sign_epi8(x1, w1)), ones));
        }
        if (k + 32 <= K) {
            __m256i x0 = _mm256_loadu_si256((const __m256i*)(x + k)), w0 = _mm256_loadu_si256((const __m256i*)(w + k));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w0), _mm256_sign_epi8(x0, w0)), ones));
            k += 32;
        }
        int32_t acc = fa_hsum8(_mm256_add_epi32(a0, a1));
        for (; k < K; k++)
            acc += (int32_t)x[k] * (int32_t)w[k];
        float v = (float)acc * sx * sw[c];
        if (b != NULL)
            v = v + b[c];
        y[c] = v;
    }
}

#define FA_INT8_TILE_CASE(mr, nr) \
    case 4 * (mr) + (nr): fa_int8_tile(mr, nr, a, K16, w, K, K, sx + r, sw + c, b, y + r * N + c, N); break;

/* y[r0:r1, c0:c1] of y (M, N) = xq (M, K) int8 @ q (N, K) int8 ^T, scaled: one block, on the
   calling thread. A single row on fa_int8_row (xq); else, on xq widened (a16, (M, K16) int16),
   column tiles of 4 weight rows outer (4 K bytes, in L1 while every row tile of the block
   passes), row tiles of 2 inner. */
static FA_AVX2 void fa_int8_block(const int8_t* xq, const int16_t* a16, int64_t K16, const int8_t* q, int64_t K,
                                  const float* sx, const float* sw, const float* bias, float* y, int64_t N,
                                  int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    if (r1 - r0 == 1) {
        fa_int8_row(xq + r0 * K, q, K, N, sx[r0], sw, bias, y + r0 * N, c0, c1);
        return;
    }
    for (int64_t c = c0; c < c1; c += 4) {
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

static inline void fa_int8_block(const int8_t* xq, const int16_t* a16, int64_t K16, const int8_t* q, int64_t K,
                                 const float* sx, const float* sw, const float* bias, float* y, int64_t N,
                                 int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    (void)xq, (void)a16, (void)K16, (void)q, (void)K, (void)sx, (void)sw, (void)bias, (void)y, (void)N;
    (void)r0, (void)r1, (void)c0, (void)c1;
}

#endif
#endif
