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
/// ln x as Softmax.swift's simdLog, operation for operation (Cephes logf: x = 2^e·m, m in [√½, √2); denormals scaled by
/// 2^25 first; 0 → −∞, negative and NaN → NaN, +∞ → +∞).
static inline __attribute__((always_inline)) __m512 kd_log16(__m512 x0) {
    const __mmask16 tiny = _mm512_cmp_ps_mask(x0, _mm512_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    const __m512 x = _mm512_mask_blend_ps(tiny, x0, _mm512_mul_ps(x0, _mm512_set1_ps(33554432.0f)));
    const __m512i bits = _mm512_castps_si512(x);
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512i eb = _mm512_add_epi32(_mm512_and_si512(_mm512_srai_epi32(bits, 23), _mm512_set1_epi32(0xFF)),
                                        _mm512_set1_epi32(0x4B400000 - 126));
    __m512 e = _mm512_sub_ps(_mm512_castsi512_ps(eb), magic);
    e = _mm512_mask_blend_ps(tiny, e, _mm512_add_ps(e, _mm512_set1_ps(-25.0f)));
    __m512 m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x007FFFFF)), _mm512_set1_epi32(0x3F000000)));
    const __mmask16 low = _mm512_cmp_ps_mask(m, _mm512_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
    e = _mm512_mask_blend_ps(low, e, _mm512_add_ps(e, _mm512_set1_ps(-1.0f)));
    m = _mm512_add_ps(_mm512_mask_blend_ps(low, m, _mm512_add_ps(m, m)), _mm512_set1_ps(-1.0f));
    const __m512 z = _mm512_mul_ps(m, m);
    __m512 p = _mm512_set1_ps(7.0376836292e-2f);
    p = _mm512_add_ps(_mm512_mul_ps(p, m), _mm512_set1_ps(-1.1514610310e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, m), _mm512_set1_ps(1.1676998740e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, m), _mm512_set1_ps(-1.2420140846e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, m), _mm512_set1_ps(1.4249322787e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, m), _mm512_set1_ps(-1.6668057665e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, m), _mm512_set1_ps(2.0000714765e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, m), _mm512_set1_ps(-2.4999993993e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, m), _mm512_set1_ps(3.3333331174e-1f));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(m, z), p);
    y = _mm512_add_ps(y, _mm512_mul_ps(e, _mm512_set1_ps(-2.12194440e-4f)));
    y = _mm512_add_ps(y, _mm512_mul_ps(z, _mm512_set1_ps(-0.5f)));
    __m512 r = _mm512_add_ps(m, y);
    r = _mm512_add_ps(r, _mm512_mul_ps(e, _mm512_set1_ps(0.693359375f)));
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x0, _mm512_setzero_ps(), _CMP_EQ_OQ), r, _mm512_set1_ps(-__builtin_inff()));
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x0, _mm512_setzero_ps(), _CMP_LT_OQ), r, _mm512_set1_ps(__builtin_nanf("")));
    const __mmask16 keep = _mm512_cmp_ps_mask(x0, x0, _CMP_NEQ_UQ) | _mm512_cmp_ps_mask(x0, _mm512_set1_ps(__builtin_inff()), _CMP_EQ_OQ);
    return _mm512_mask_blend_ps(keep, r, x0);
}
#endif
