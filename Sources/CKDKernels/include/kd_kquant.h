// The k-quants' per-sub-block scale searches (ggml's make_qx_quants, make_q3_quants, make_qkx2_quants) run on all
// sub-blocks of a super-block at once: the sub-block index is the inner loop, so the compiler vectorizes across
// sub-blocks while each sub-block's arithmetic stays the scalar code's, operation for operation (no contraction, sums
// in element order). Results are bit for bit the one-sub-block-at-a-time reference (KDQuant/KQuants.swift).
// x holds the super-block's `nsub` sub-blocks of `n` one after another; L receives levels in the same order.
#pragma once
#include <stdint.h>

/// make_qx_quants (rmse_type 1: weights x²) on 16 sub-blocks of 16; levels + nmax into L, scales into scales[16].
void kd_make_qx_16x16(const float *x, int nmax, int8_t *L, float *scales);
/// make_q3_quants with RMSE refinement on 16 sub-blocks of 16; levels + nmax into L, scales into scales[16].
void kd_make_q3_16x16(const float *x, int nmax, int8_t *L, float *scales);
/// make_qkx2_quants on nsub (≤ 16) sub-blocks of n (≤ 32) with weights w (laid out as x); levels into L, each
/// sub-block's scale and −min into scales and negmins.
void kd_make_qkx2(int nsub, int n, int nmax, const float *x, const float *w, uint8_t *L, float *scales, float *negmins,
                  float rmin, float rdelta, int nstep, int mad);
