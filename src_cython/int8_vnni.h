/* int8 products of a few activation rows (decode: 1 to FA_VNNI_MAX_ROWS) on AVX512-VNNI, reading
   the weight in the layout oneDNN packs it in (src_cython/linear_lowp.pyx's _Packed) as one
   sequential stream. oneDNN's own kernels for a single row read that weight at a fraction of what
   the memory gives (Intel Xeon with AMX, GPT-2's decode products, see linear_lowp.pyx); its
   layout is already the one vpdpbusd wants.

   The layout ("BA16a64b4a" in oneDNN's names): the output channels in blocks of 64, one after
   another, each block Kp x 64 bytes (Kp = K padded with zero weights to a multiple of 64) in
   groups of 4 along K: group g of block b is 256 bytes, channel n's 4 weights k = 4g .. 4g + 3 at
   bytes 4n .. 4n + 3. So one group is 4 zmm vectors of 16 channels each, and vpdpbusd adds the 4
   products of a broadcast u8 quadruple of the activation row with each channel's 4 s8 weights to
   that channel's int32 lane. u8 x s8 quadruples sum to at most 4 * 255 * 128 (no saturation: the
   non-saturating form), so acc is exactly what oneDNN's matmul gives for the same u8 row
   (q + 128): the epilogue (fa_int8_epilogue_row) takes 128 * sum_k w off again. */
#ifndef FASTATTN_INT8_VNNI_H
#define FASTATTN_INT8_VNNI_H

#include <stdint.h>
#include <string.h>

#define FA_VNNI_MAX_ROWS 4

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FA_INT8_VNNI 1
#include <immintrin.h>
#define FA_VNNI_INLINE static inline __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
#define FA_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#endif

/* Whether this CPU (and its OS, which must save the zmm registers: part of
   __builtin_cpu_supports' answer for AVX-512 in GCC and clang) runs the kernel below. */
static inline int fa_int8_vnni_supported(void)
{
#ifdef FA_INT8_VNNI
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

#ifdef FA_INT8_VNNI

/* acc (MR, 64) int32 = u (MR rows of Kp u8, stride ldu) @ one packed block w (Kp x 64)^T. */
FA_VNNI_INLINE void fa_vnni_block(int MR, const uint8_t* u, int64_t ldu, const int8_t* w, int64_t Kp,
                                  int32_t* acc)
{
    __m512i a[FA_VNNI_MAX_ROWS][4];
    for (int i = 0; i < FA_VNNI_MAX_ROWS; i++)
        for (int j = 0; j < 4; j++)
            a[i][j] = _mm512_setzero_si512();
    for (int64_t g = 0; g < Kp / 4; g++) {
        const int8_t* wg = w + g * 256;
        __m512i w0 = _mm512_load_si512((const void*)wg), w1 = _mm512_load_si512((const void*)(wg + 64));
        __m512i w2 = _mm512_load_si512((const void*)(wg + 128)), w3 = _mm512_load_si512((const void*)(wg + 192));
        for (int i = 0; i < MR; i++) {
            int32_t quad;
            memcpy(&quad, u + i * ldu + 4 * g, 4);
            __m512i x = _mm512_set1_epi32(quad);
            a[i][0] = _mm512_dpbusd_epi32(a[i][0], x, w0);
            a[i][1] = _mm512_dpbusd_epi32(a[i][1], x, w1);
            a[i][2] = _mm512_dpbusd_epi32(a[i][2], x, w2);
            a[i][3] = _mm512_dpbusd_epi32(a[i][3], x, w3);
        }
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < 4; j++)
            _mm512_storeu_si512((void*)(acc + 64 * i + 16 * j), a[i][j]);
}

/* acc (rows, 64) int32 = u (rows <= FA_VNNI_MAX_ROWS of Kp u8, stride ldu; what lies past K does
   not count: the weights there are zero) @ the packed block at w (64-byte aligned)^T. */
static FA_VNNI void fa_int8_vnni_block(int rows, const uint8_t* u, int64_t ldu, const int8_t* w, int64_t Kp,
                                       int32_t* acc)
{
    switch (rows) {
        case 1: fa_vnni_block(1, u, ldu, w, Kp, acc); break;
        case 2: fa_vnni_block(2, u, ldu, w, Kp, acc); break;
        case 3: fa_vnni_block(3, u, ldu, w, Kp, acc); break;
        default: fa_vnni_block(4, u, ldu, w, Kp, acc); break;
    }
}

#else /* not x86-64: never called (fa_int8_vnni_supported() is 0) */

static inline void fa_int8_vnni_block(int rows, const uint8_t* u, int64_t ldu, const int8_t* w, int64_t Kp,
                                      int32_t* acc)
{
    (void)rows, (void)u, (void)ldu, (void)w, (void)Kp, (void)acc;
}

#endif
#endif
