/* Vectorisable exp and erfc, and the macro that compiles a row loop three times (AVX-512, AVX2+FMA, baseline).
 *
 * libm's exp/erf are scalar calls, which stop the compiler from vectorising the softmax and GELU
 * loops (it only uses libmvec under -ffast-math, and -ffast-math would break inf/NaN handling,
 * which masks depend on). These are branch-free, so a loop over them vectorises.
 */
#ifndef FASTATTN_VECTOR_MATH_H
#define FASTATTN_VECTOR_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* A portable build still runs AVX-512 and AVX2+FMA code: GCC emits an x86-64-v4 (AVX-512), an
 * x86-64-v3 (AVX2+FMA) and a baseline version of each marked function, and the dynamic loader
 * picks one by CPU features (an ifunc). The v4 clone ran the GELU, softmax and layer norm rows
 * 1.1-1.4x faster than the v3 one on an AMD EPYC Zen 4 (which splits 512-bit operations in two);
 * the "arch=" clones need GCC >= 11; other compilers build the baseline only (or use
 * FASTATTN_NATIVE=1). */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define FA_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FA_MULTIVERSION
#endif

static inline float fa_bits_to_f32(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
static inline int32_t fa_f32_to_bits(float f) { int32_t i; memcpy(&i, &f, 4); return i; }
static inline double fa_bits_to_f64(int64_t i) { double f; memcpy(&f, &i, 8); return f; }
static inline int64_t fa_f64_to_bits(double f) { int64_t i; memcpy(&i, &f, 8); return i; }

/* exp(x) = 2^k * e^r, k = round(x / ln 2), |r| <= ln2 / 2, e^r by its Taylor series to r^7
 * (truncation < 6e-9 relative). 2^k is applied as two factors, so k = 128 (x up to ln FLT_MAX)
 * does not overflow on the way. Below -87.3 (under FLT_MIN) it returns 0, which is what masked
 * (-inf) scores need; above ln FLT_MAX it returns inf; NaN stays NaN. */
static inline float fa_exp_f32(float x)
{
    const float round_magic = 12582912.0f;   /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x > 88.7228391116729996f ? 88.7228391116729996f : x;
    xc = xc < -87.3365447504f ? -87.3365447504f : xc;
    float t = xc * 1.44269504088896341f + round_magic;
    int32_t k = fa_f32_to_bits(t) - fa_f32_to_bits(round_magic);
    float kf = t - round_magic;
    float r = xc - kf * 0.693145751953125f - kf * 1.428606765330187045e-6f;   /* ln2 = hi + lo */
    /* the polynomial by Estrin's scheme: 4 dependent steps instead of Horner's 8, so that the
     * out-of-order core overlaps more of the loop's iterations */
    float r2 = r * r, r4 = r2 * r2;
    float p = ((1.0f + r) + r2 * (0.5f + r * (1.0f / 6.0f)))
            + r4 * ((1.0f / 24.0f + r * (1.0f / 120.0f)) + r2 * (1.0f / 720.0f + r * (1.0f / 5040.0f)));
    int32_t k_half = k >> 1;
    float y = p * fa_bits_to_f32((k_half + 127) << 23) * fa_bits_to_f32((k - k_half + 127) << 23);
    y = x > 88.7228391116729996f ? INFINITY : y;
    return x < -87.3365447504f ? 0.0f : y;
}

/* Same scheme in double: Taylor to r^12 (truncation < 2e-16 relative). */
static inline double fa_exp_f64(double x)
{
    const double round_magic = 6755399441055744.0;   /* 1.5 * 2^52 */
    double xc = x > 709.782712893384 ? 709.782712893384 : x;
    xc = xc < -708.3964185322641 ? -708.3964185322641 : xc;
    double t = xc * 1.4426950408889634074 + round_magic;
    int64_t k = fa_f64_to_bits(t) - fa_f64_to_bits(round_magic);
    double kf = t - round_magic;
    double r = xc - kf * 6.93147180369123816490e-01 - kf * 1.90821492927058770002e-10;
    double p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t k_half = k >> 1;
    double y = p * fa_bits_to_f64((k_half + 1023) << 52) * fa_bits_to_f64((k - k_half + 1023) << 52);
    y = x > 709.782712893384 ? INFINITY : y;
    return x < -708.3964185322641 ? 0.0 : y;
}

/* erfc in single precision with a small *relative* error everywhere (< 1.2e-7 for the fit):
 * the Chebyshev fit of Numerical Recipes (erfcc), t = 1 / (1 + z/2), z = |x|. Relative accuracy
 * in the tail is what GELU needs: gelu(x) = x/2 * erfc(-x / sqrt 2) is tiny for x << 0. */
static inline float fa_erfc_f32(float x)
{
    float z = fabsf(x);
    float t = 1.0f / (1.0f + 0.5f * z);
    float t2 = t * t, t4 = t2 * t2;   /* the degree-9 polynomial in t by Estrin's scheme */
    float p = ((-1.26551223f + t * 1.00002368f) + t2 * (0.37409196f + t * 0.09678418f))
            + t4 * ((-0.18628806f + t * 0.27886807f) + t2 * (-1.13520398f + t * 1.48851587f))
            + t4 * t4 * (-0.82215223f + t * 0.17087277f);
    float y = t * fa_exp_f32(p - z * z);
    return x >= 0.0f ? y : 2.0f - y;
}

#endif
