// Row kernels for distill on AVX-512: the vectorized e^x of KDOps (Softmax.swift's simdExp) and SwiGLU on 16-lane registers,
// the same float operations in the same order (no fused multiply-adds), so every element is bit-identical to the
// Swift lanes; the Swift side keeps the tails and the horizontal sums. Only call when kd_cpu_has_avx512() is 1.
#ifndef KD_ROWS_H
#define KD_ROWS_H
#include <stddef.h>

/// 1 when this CPU and OS run AVX-512 F with ZMM state enabled, else 0.
int kd_cpu_has_avx512(void);
/// out[i] = e^(x[i] − shift) for i < n (n a multiple of 16); lanes[l] = Σ over i ≡ l (mod 16) of out[i], added in
/// order of i as a 16-lane accumulator starting at zero. `out` may be `x`.
void kd_exp_shift_avx512(float *out, const float *x, size_t n, float shift, float *lanes);
/// out[i] = e^x[i] for i < n (n a multiple of 16). `out` may be `x`.
void kd_exp_avx512(float *out, const float *x, size_t n);
/// SwiGLU.swift's lanes: out[i] = g·σ(g)·up[i], g = gate[i] (n a multiple of 16).
void kd_swiglu_forward_avx512(float *out, const float *gate, const float *up, size_t n);
/// SwiGLU.swift's backward lanes: dgate[i] += dout·up·σ(g)·(1 + g·(1 − σ(g))), dup[i] += dout·g·σ(g) (n a multiple of 16).
void kd_swiglu_backward_avx512(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);
/// Divergence.swift's skewLanes over i < n (n a multiple of 16) with p = e^lp[i] (the exp above): kind 0 skew forward
/// KL, 1 skew reverse KL, 2 JSD, with λ (β) = l. Writes a[i] (unless a is NULL); terms[16] and qa[16] are LaneSum's lanes
/// from zero: Σ over i ≡ l (mod 16), in order, of the terms and of q·a, each where its weight (q for qa) is not ≤ 0.
void kd_skew_lanes_avx512(int kind, float l, const float *lp, const float *q, const float *lq, size_t n, float *a,
                          float *terms, float *qa);
#endif
