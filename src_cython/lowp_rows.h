/* The row loops around the int8 and bfloat16 products (src_cython/linear_lowp.pyx): quantizing an
   activation row, rounding a row to bfloat16, and the int8 epilogue. Each does exactly the float32
   operations of fastattn/reference/linear_lowp.py, in the same order (SSE2 is part of x86-64; no
   FMA: setup.py builds this module with -ffp-contract=off), so that the two backends agree bit
   for bit. Where the CPU has AVX-512 (F and BW), the same operations run 16 lanes at a time
   (fa_lowp_avx512: chosen at run time; the portable build stays SSE2): MiniLM's int8 products on
   an Intel Xeon with AMX spent more time in these SSE2 loops than in oneDNN's kernels. */
#ifndef FASTATTN_LOWP_ROWS_H
#define FASTATTN_LOWP_ROWS_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FA_LOWP_AVX512 1
#include <immintrin.h>
#define FA_AVX512BW __attribute__((target("avx512f,avx512bw")))

/* Whether this CPU (and OS) runs AVX-512 F and BW: asked once. */
static inline int fa_lowp_avx512(void)
{
    static int supported = -1;
    if (supported < 0) {
        __builtin_cpu_init();
        supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    }
    return supported;
}
#endif

/* A row whose largest |x| is below this quantizes to zeros (scale 0): 127 / amax would overflow
   float32 below ~3.7e-37, and such a row contributes at most K * 2^-100 * max|w| anyway. */
#define FA_INT8_TINY 7.888609052210118e-31f /* 2^-100 */

#ifdef FA_LOWP_AVX512
/* fa_quantize_row's two loops 16 lanes at a time, in the same operations; each returns where it
   stopped. The largest |x[k]| of whole vectors into *amax, with *bad set for NaN or inf. */
static FA_AVX512BW int64_t fa_amax_avx512(const float* x, int64_t n, float* amax, int* bad)
{
    const __m512 big = _mm512_set1_ps(3.4028234663852886e38f);
    __m512 vmax = _mm512_setzero_ps();
    __mmask16 nonfinite = 0;
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + k));
        nonfinite |= _mm512_cmp_ps_mask(a, big, _CMP_NLE_UQ);  /* (NaN or inf: not <= FLT_MAX) */
        vmax = _mm512_max_ps(vmax, a);
    }
    *amax = _mm512_reduce_max_ps(vmax);
    *bad = nonfinite != 0;
    return k;
}

/* q[k] = clip(rint(x[k] * inv), -127, 127) ^ flip over whole vectors (cvtps rounds to nearest,
   ties to even; within +-127 the narrowing cannot saturate). */
static FA_AVX512BW int64_t fa_quantize_avx512(const float* x, int64_t n, float inv, int8_t* q, int8_t flip)
{
    const __m512 vinv = _mm512_set1_ps(inv), hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
    const __m128i vflip = _mm_set1_epi8(flip);
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512i i = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv), lo), hi));
        _mm_storeu_si128((__m128i*)(q + k), _mm_xor_si128(_mm512_cvtsepi32_epi8(i), vflip));
    }
    return k;
}
#endif

/* q[k] = clip(rint(x[k] * (127 / amax)), -127, 127) ^ flip, amax = max_k |x[k]|; returns the
   row's scale amax / 127 (0 for a zero or tiny row, NaN for a row holding NaN or inf: its outputs
   are NaN). flip 0: the s8 values; 0x80: the same as u8 (q + 128). */
static inline float fa_quantize_row(const float* x, int64_t n, int8_t* q, int8_t flip)
{
    float amax = 0.0f;
    int bad = 0;
    int64_t k = 0;
#ifdef FA_LOWP_AVX512
    if (fa_lowp_avx512())
        k = fa_amax_avx512(x, n, &amax, &bad);
#endif
    for (; k < n; k++) {
        float a = fabsf(x[k]);
        bad |= !(a <= 3.4028234663852886e38f);  /* NaN or inf */
        amax = a > amax ? a : amax;
    }
    if (bad || amax < FA_INT8_TINY) {
        memset(q, flip, (size_t)n);
        return bad ? NAN : 0.0f;
    }
    float inv = 127.0f / amax;
    k = 0;
#ifdef FA_LOWP_AVX512
    if (fa_lowp_avx512())
        k = fa_quantize_avx512(x, n, inv, q, flip);
#endif
#ifdef __SSE2__
    __m128 vinv = _mm_set1_ps(inv), hi = _mm_set1_ps(127.0f), lo = _mm_set1_ps(-127.0f);
    __m128i vflip = _mm_set1_epi8(flip);
    for (; k + 16 <= n; k += 16) {
        __m128i i0 = _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(_mm_loadu_ps(x + k), vinv), lo), hi));
        __m128i i1 = _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(_mm_loadu_ps(x + k + 4), vinv), lo), hi));
        __m128i i2 = _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(_mm_loadu_ps(x + k + 8), vinv), lo), hi));
        __m128i i3 = _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(_mm_loadu_ps(x + k + 12), vinv), lo), hi));
        /* (cvtps rounds to nearest, ties to even, as np.rint; the packs cannot saturate here) */
        __m128i b = _mm_packs_epi16(_mm_packs_epi32(i0, i1), _mm_packs_epi32(i2, i3));
        _mm_storeu_si128((__m128i*)(q + k), _mm_xor_si128(b, vflip));
    }
#endif
    for (; k < n; k++) {
        float v = x[k] * inv;
        v = v < -127.0f ? -127.0f : (v > 127.0f ? 127.0f : v);
        q[k] = (int8_t)((int8_t)nearbyintf(v) ^ flip);
    }
    return amax / 127.0f;
}

static inline float fa_quantize_row_s8(const float* x, int64_t n, int8_t* q)
{
    return fa_quantize_row(x, n, q, 0);
}

/* fa_quantize_row_s8's q + 128 as unsigned bytes (the sign bit flipped): the u8 form that VNNI and
   AMX multiply with s8 weights natively (the 128 * sum_k w[k] it adds comes off in the epilogue). */
static inline float fa_quantize_row_u8(const float* x, int64_t n, uint8_t* u)
{
    return fa_quantize_row(x, n, (int8_t*)u, (int8_t)0x80);
}

/* The bfloat16 nearest to x[k] (ties to even), as its 16 bits; NaN stays a (quiet) NaN. */
static inline uint16_t fa_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

#ifdef FA_LOWP_AVX512
/* fa_bf16_row's integer steps on 16 floats at a time (not vcvtneps2bf16: it takes subnormals as
   zero); returns where it stopped. */
static FA_AVX512BW int64_t fa_bf16_row_avx512(const float* x, int64_t n, uint16_t* out)
{
    const __m512i lsb = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff), quiet = _mm512_set1_epi32(0x40);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512i u = _mm512_loadu_si512((const void*)(x + k));
        __m512i top = _mm512_srli_epi32(u, 16);
        __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, half), _mm512_and_si512(top, lsb)), 16);
        __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs_mask), inf);
        __m512i r = _mm512_mask_or_epi32(rounded, nan, top, quiet);
        _mm256_storeu_si256((__m256i*)(out + k), _mm512_cvtepi32_epi16(r));
    }
    return k;
}
#endif

static inline void fa_bf16_row(const float* x, int64_t n, uint16_t* out)
{
    int64_t k = 0;
#ifdef FA_LOWP_AVX512
    if (fa_lowp_avx512())
        k = fa_bf16_row_avx512(x, n, out);
#endif
#ifdef __SSE2__
    /* fa_bf16 on 8 floats at a time, in the same integer steps (a scalar loop here took as long
       as the bfloat16 product of a (768, 384) x (384, 384) block on AMX) */
    const __m128i lsb = _mm_set1_epi32(1), half = _mm_set1_epi32(0x7fff), quiet = _mm_set1_epi32(0x40);
    const __m128i abs_mask = _mm_set1_epi32(0x7fffffff), inf = _mm_set1_epi32(0x7f800000);
    for (; k + 8 <= n; k += 8) {
        __m128i h[2];
        for (int j = 0; j < 2; j++) {
            __m128i u = _mm_loadu_si128((const __m128i*)(x + k + 4 * j));
            __m128i top = _mm_srli_epi32(u, 16);
            __m128i rounded = _mm_srli_epi32(_mm_add_epi32(_mm_add_epi32(u, half), _mm_and_si128(top, lsb)), 16);
            __m128i nan = _mm_cmpgt_epi32(_mm_and_si128(u, abs_mask), inf);
            __m128i r = _mm_or_si128(_mm_and_si128(nan, _mm_or_si128(top, quiet)), _mm_andnot_si128(nan, rounded));
            h[j] = _mm_srai_epi32(_mm_slli_epi32(r, 16), 16);  /* (sign-extended: packs keeps the 16 bits) */
        }
        _mm_storeu_si128((__m128i*)(out + k), _mm_packs_epi32(h[0], h[1]));
    }
#endif
    for (; k < n; k++)
        out[k] = fa_bf16(x[k]);
}

#ifdef FA_LOWP_AVX512
/* fa_int8_epilogue_row's operations on 16 columns at a time; returns where it stopped. */
static FA_AVX512BW int64_t fa_int8_epilogue_avx512(float* y, const int32_t* acc, const int32_t* comp, float sx,
                                                  const float* sw, const float* b, int64_t n)
{
    const __m512 vs = _mm512_set1_ps(sx);
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        __m512i a = _mm512_sub_epi32(_mm512_loadu_si512((const void*)(acc + c)), _mm512_loadu_si512((const void*)(comp + c)));
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), vs), _mm512_loadu_ps(sw + c));
        if (b != NULL)
            v = _mm512_add_ps(v, _mm512_loadu_ps(b + c));
        _mm512_storeu_ps(y + c, v);
    }
    return c;
}
#endif

/* y[c] = float(acc[c] - comp[c]) * sx * sw[c] + b[c] for c < n: acc is the int32 output of the
   product of the u8 row (q + 128), comp[c] = 128 * sum_k w[c, k] (so acc - comp = q . w exactly),
   acc may be where y is (same size: each element is read before it is overwritten). b may be NULL
   (then no addition). */
static inline void fa_int8_epilogue_row(float* y, const int32_t* acc, const int32_t* comp, float sx,
                                        const float* sw, const float* b, int64_t n)
{
    int64_t c = 0;
#ifdef FA_LOWP_AVX512
    if (fa_lowp_avx512())
        c = fa_int8_epilogue_avx512(y, acc, comp, sx, sw, b, n);
#endif
#ifdef __SSE2__
    __m128 vs = _mm_set1_ps(sx);
    for (; c + 4 <= n; c += 4) {
        __m128i a = _mm_sub_epi32(_mm_loadu_si128((const __m128i*)(acc + c)),
                                  _mm_loadu_si128((const __m128i*)(comp + c)));
        __m128 v = _mm_mul_ps(_mm_mul_ps(_mm_cvtepi32_ps(a), vs), _mm_loadu_ps(sw + c));
        if (b != NULL)
            v = _mm_add_ps(v, _mm_loadu_ps(b + c));
        _mm_storeu_ps(y + c, v);
    }
#endif
    for (; c < n; c++) {
        int32_t a;
        memcpy(&a, acc + c, 4);
        float v = (float)(a - comp[c]) * sx * sw[c];
        y[c] = b != NULL ? v + b[c] : v;
    }
}

#endif
