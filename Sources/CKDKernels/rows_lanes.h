// The 16-lane e^x and sigmoid of rows.c (Softmax.swift's simdExp and SwiGLU.swift's sigmoid16, operation for
// operation), shared with bf16.c's fused epilogues. Include inside a region compiled with target("avx512f").
#ifndef KD_ROWS_LANES_H
#define KD_ROWS_LANES_H
#include <immintrin.h>

static inline __attribute__((always_inline)) __m512 kd_exp16(__m512 x0) {
    const __m512 lo = _mm512_set1_ps(-87.33654f), hi = _mm512_set1_ps(88.72283f);
    __m512 x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x0, lo, _CMP_LT_OQ), x0, lo);
    x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), x, hi);
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 t = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), magic);
    const __m512 k = _mm512_sub_ps(t, magic);
    const __m512 r = _mm512_add_ps(_mm512_sub_ps(x, _mm512_mul_ps(k, _mm512_set1_ps(0.693359375f))),
                                   _mm512_mul_ps(k, _mm512_set1_ps(2.1219444e-4f)));
    __m512 p = _mm512_set1_ps(1.98756915e-4f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.39819995e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.16657959e-2f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.66666655e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001e-1f));
    p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), _mm512_set1_ps(1.0f));
    const __m512i ki = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000));
    const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(ki, _mm512_set1_epi32(127)), 23));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x0, x0, _CMP_NEQ_UQ), _mm512_mul_ps(p, scale), x0);
}

/// σ(g) = 1 / (1 + e^(−g)) as SwiGLU.swift's sigmoid16 (−g by flipping the sign bit, as Swift negates).
static inline __attribute__((always_inline)) __m512 kd_sigmoid16(__m512 g) {
    const __m512 neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32((int)0x80000000u)));
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, kd_exp16(neg)));
}

/// SwiGLU.swift's forward lanes: g·σ(g)·up.
static inline __attribute__((always_inline)) __m512 kd_swiglu16(__m512 g, __m512 up) {
    return _mm512_mul_ps(_mm512_mul_ps(g, kd_sigmoid16(g)), up);
}
#endif
