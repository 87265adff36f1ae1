// The k-quants' per-sub-block scale searches (ggml's make_qx_quants, make_q3_quants, make_qkx2_quants) run on all
// sub-blocks of a super-block at once: the sub-block index is the inner loop, so the compiler vectorizes across
// sub-blocks while each sub-block's arithmetic stays the scalar code's, operation for operation (no contraction, sums
// in element order). Results are bit for bit the one-sub-block-at-a-time reference (KDQuant/KQuants.swift).
// x holds the super-block's `nsub` sub-blocks of `n` one after another; L receives levels in the same order.
#pragma once
#include <stdint.h>

/// make_qx_quants (rmse_type 1) on 16 sub-blocks of 16 weighted by w (laid out as x; NULL: x², as without an
/// importance matrix); levels + nmax into L, scales into scales[16].
void kd_make_qx_16x16(const float *x, int nmax, const float *w, int8_t *L, float *scales);
/// make_q3_quants with RMSE refinement on 16 sub-blocks of 16; levels + nmax into L, scales into scales[16].
void kd_make_q3_16x16(const float *x, int nmax, int8_t *L, float *scales);
/// make_qkx2_quants on nsub (≤ 16) sub-blocks of n (≤ 32) with weights w (laid out as x); levels into L, each
/// sub-block's scale and −min into scales and negmins.
void kd_make_qkx2(int nsub, int n, int nmax, const float *x, const float *w, uint8_t *L, float *scales, float *negmins,
                  float rmin, float rdelta, int nstep, int mad);

/// IQ4_NL's scale search (ggml's quantize_row_iq4_nl_impl for blocks of 32, 7 trials either side) on nb (≤ 16) blocks
/// of 32 at once, each element weighted by x² or, with `qw` (nb × 32 importances, the blocks' columns of an importance
/// matrix), by qw · √(σ² + x²) as ggml weighs them: each block's scale into scales[nb] (0 for a block below 1e-15) and its
/// 32 indices into the 16 levels (from the last pass, against the f32 scale, as ggml picks them) into L[nb × 32].
/// With AVX-512 the levels are looked up by bucket; `portable` (for the tests) takes the vectorized loop that
/// compares with every midpoint, which AVX2 and other CPUs run. Both give the same bytes.
void kd_iq4nl_16(const float *x, int nb, const float *qw, float *scales, uint8_t *L, int portable);
/// The values IQ4_NL blocks read back as: out = d[b] · level(L), d the blocks' F16 scales as floats; and, where mask
/// is not NULL, 0 where an element lay beyond the end of its block's grid (index 0 or 15, x outside the value), else
/// 1. out may be x.
void kd_iq4nl_dequant_16(const float *x, int nb, const float *d, const uint8_t *L, float *out, float *mask);
/// Q4_0's and Q5_0's scale search with an importance matrix (ggml's quantize_row_q4_0_impl / q5_0_impl: make_qx_quants,
/// rmse_type 1, weights qw · √(σ² + x²)) on nb (≤ 16) blocks of 32 at once: `qw` nb × 32 importances (the blocks'
/// columns of the matrix), `sigma2[nb]` the mean square of each block's whole row (summed in order, as ggml does).
/// Each block's scale into scales[nb] (0 for a block below 1e-15) and its levels + nmax (nmax 8 for Q4_0, 16 for
/// Q5_0) into L[nb × 32].
void kd_qx_weighted_16(const float *x, int nb, int nmax, const float *qw, const float *sigma2, float *scales, int8_t *L);
/// The values Q4_0 / Q5_0 blocks read back as: out = (L − nmax) · d[b], d the blocks' F16 scales as floats; and, where
/// mask is not NULL, 0 where an element lay beyond the end of its block's grid (level 0 or 2·nmax − 1, x outside the
/// value), else 1. out may be x.
void kd_qx_dequant_16(const float *x, int nb, int nmax, const float *d, const int8_t *L, float *out, float *mask);
