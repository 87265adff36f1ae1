// Row kernels on AVX-512 (kd_rows.h): simdExp of KDOps/Softmax.swift on one 16-lane register instead of two AVX2
// halves. Each step below is the Swift expression's, operation for operation: mul and add stay separate (the Swift
// code has no fused multiply-adds), comparisons are ordered where Swift's .< and .> are, unordered for .!=.
#include "kd_rows.h"
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

int kd_cpu_has_avx512(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // OSXSAVE
    unsigned int xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & 0xe6u) != 0xe6u) return 0;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM state enabled by the OS
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b >> 16) & 1u;  // AVX512F
}

#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#include "rows_lanes.h"
void kd_exp_shift_avx512(float *out, const float *x, size_t n, float shift, float *lanes) {
    const __m512 sh = _mm512_set1_ps(shift);
    __m512 acc = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        const __m512 e = kd_exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh));
        _mm512_storeu_ps(out + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    _mm512_storeu_ps(lanes, acc);
}

void kd_exp_avx512(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) _mm512_storeu_ps(out + i, kd_exp16(_mm512_loadu_ps(x + i)));
}
void kd_swiglu_forward_avx512(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        const __m512 g = _mm512_loadu_ps(gate + i);
        _mm512_storeu_ps(out + i, kd_swiglu16(g, _mm512_loadu_ps(up + i)));
    }
}

void kd_swiglu_backward_avx512(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        const __m512 g = _mm512_loadu_ps(gate + i), sg = kd_sigmoid16(g), d = _mm512_loadu_ps(dout + i);
        // dgate + ((d·up)·σ)·(1 + g·(1 − σ)); dup + (d·g)·σ
        const __m512 slope = _mm512_add_ps(one, _mm512_mul_ps(g, _mm512_sub_ps(one, sg)));
        const __m512 dg = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, _mm512_loadu_ps(up + i)), sg), slope);
        _mm512_storeu_ps(dgate + i, _mm512_add_ps(_mm512_loadu_ps(dgate + i), dg));
        _mm512_storeu_ps(dup + i, _mm512_add_ps(_mm512_loadu_ps(dup + i), _mm512_mul_ps(_mm512_mul_ps(d, g), sg)));
    }
}
void kd_skew_lanes_avx512(int kind, float l, const float *lp, const float *q, const float *lq, size_t n, float *a,
                          float *terms, float *qa) {
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), vl = _mm512_set1_ps(l), vl1 = _mm512_set1_ps(1 - l);
    __m512 tsum = zero, qsum = zero;
    for (size_t i = 0; i < n; i += 16) {
        const __m512 lpv = _mm512_loadu_ps(lp + i), qv = _mm512_loadu_ps(q + i), lqv = _mm512_loadu_ps(lq + i);
        const __m512 p = kd_exp16(lpv);
        __m512 t, av, w;
        if (kind == 0) {  // skew forward KL: m = λp + (1−λ)q; a = −(1−λ)p/m; terms p(lp − ln m), weight p
            const __m512 m = _mm512_add_ps(_mm512_mul_ps(vl, p), _mm512_mul_ps(vl1, qv));
            const __mmask16 on = _mm512_cmp_ps_mask(m, zero, _CMP_GT_OQ);
            av = _mm512_maskz_mov_ps(on, _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(-(1 - l)), p), m));
            t = _mm512_mul_ps(p, _mm512_sub_ps(lpv, kd_log16(m)));
            w = _mm512_maskz_mov_ps(on, p);
        } else if (kind == 1) {  // skew reverse KL: m = λq + (1−λ)p; a = lq + 1 − ln m − λq/m; terms q(lq − ln m), weight q
            const __m512 m = _mm512_add_ps(_mm512_mul_ps(vl, qv), _mm512_mul_ps(vl1, p));
            const __mmask16 on = _mm512_cmp_ps_mask(m, zero, _CMP_GT_OQ);
            const __m512 lm = kd_log16(m);
            av = _mm512_sub_ps(_mm512_sub_ps(_mm512_add_ps(lqv, one), lm), _mm512_div_ps(_mm512_mul_ps(vl, qv), m));
            av = _mm512_maskz_mov_ps(on, av);
            t = _mm512_mul_ps(qv, _mm512_sub_ps(lqv, lm));
            w = _mm512_maskz_mov_ps(on, qv);
        } else {  // JSD(β = l): m = βp + (1−β)q; terms βp(lp − ln m) + (1−β)q(lq − ln m), a = (1−β)(lq − ln m), weight m
            const __m512 m = _mm512_add_ps(_mm512_mul_ps(vl, p), _mm512_mul_ps(vl1, qv));
            const __mmask16 on = _mm512_cmp_ps_mask(m, zero, _CMP_GT_OQ);
            const __m512 lm = kd_log16(m), dq = _mm512_sub_ps(lqv, lm);
            const __m512 tp = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p, zero, _CMP_GT_OQ), _mm512_mul_ps(_mm512_mul_ps(vl, p), _mm512_sub_ps(lpv, lm)));
            const __m512 tq = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(qv, zero, _CMP_GT_OQ), _mm512_mul_ps(_mm512_mul_ps(vl1, qv), dq));
            t = _mm512_add_ps(tp, tq);
            av = _mm512_maskz_mov_ps(on, _mm512_mul_ps(vl1, dq));
            w = _mm512_maskz_mov_ps(on, m);
        }
        if (a) _mm512_storeu_ps(a + i, av);
        // LaneSum.add: the lanes whose weight is > 0 or NaN (not ≤ 0)
        tsum = _mm512_add_ps(tsum, _mm512_mask_blend_ps(_mm512_cmp_ps_mask(w, zero, _CMP_LE_OQ), t, zero));
        qsum = _mm512_add_ps(qsum, _mm512_mask_blend_ps(_mm512_cmp_ps_mask(qv, zero, _CMP_LE_OQ), _mm512_mul_ps(qv, av), zero));
    }
    _mm512_storeu_ps(terms, tsum);
    _mm512_storeu_ps(qa, qsum);
}
#pragma clang attribute pop
#else
#include <stdlib.h>
int kd_cpu_has_avx512(void) { return 0; }
void kd_exp_shift_avx512(float *out, const float *x, size_t n, float shift, float *lanes) { abort(); }
void kd_exp_avx512(float *out, const float *x, size_t n) { abort(); }
void kd_swiglu_forward_avx512(float *out, const float *gate, const float *up, size_t n) { abort(); }
void kd_swiglu_backward_avx512(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) { abort(); }
void kd_skew_lanes_avx512(int kind, float l, const float *lp, const float *q, const float *lq, size_t n, float *a,
                          float *terms, float *qa) { abort(); }
#endif
