// A frozen quantized matrix times activations in 8-bit integers, as llama.cpp multiplies a GGUF model on a CPU: each row
// of activations is quantized per block of 32 (scale amax/127, round to nearest even, and the block's sum), the weights'
// blocks of 32 are read as unsigned integers u with a scale d and an offset m (w = d·u + m: Q8_0 u = q + 128, m = −128d;
// Q4_0 u = q, m = −8d; Q4_1 u = q and its own m; Q5_0 m = −16d; Q5_1 its own m; Q4_K / Q5_K per sub-block of 32), and each block contributes
// d·da·Σ u·qa + m·(da·Σ qa) — Σ u·qa by VNNI's vpdpbusd, 64 byte products per instruction where vdpbf16ps does 32 pairs.
// Dims: C [m, n] = A [m, k] · Wᵀ, W [n, k] in GGUF rows; k a multiple of 32.
#ifndef KD_Q8_H
#define KD_Q8_H
#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU and OS run AVX-512 F/BW with VNNI, else 0.
int kd_cpu_has_avx512vnni(void);

/// Bytes of the panels of an n × k matrix (n rounded up to 32 columns): per 32-column panel and block of 32 deep,
/// 1,024 bytes of u [8 quads][32 columns][4], then 32 Float d and 32 Float m (1,280 bytes).
size_t kd_q8_panel_bytes(int n, int k);

/// Packs rows 0 ..< n of a GGUF matrix (type Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8, Q4_K 12 or Q5_K 13 — the k-quants'
/// sub-blocks of 32 are affine too: d = d_block·scale, m = −dmin·min; rowBytes apart) into panels; columns past n are
/// zero (u, d and m). Returns 0 (nothing written) for another type or a k its blocks do not divide.
int kd_q8_pack_ggml(int type, int n, int k, const void *data, size_t rowBytes, uint8_t *out);

/// 1 for the GGUF types kd_q8_pack_ggml packs, else 0.
int kd_q8_supported(int type);

/// Rows of A [m, k] (row stride lda) quantized per block of 32: qa [m, k] (row stride k), da and sa [m, k/32]:
/// da = amax/127, qa = round-to-nearest-even(x · (1/da)), sa = da · Σ qa; qa = 0 where 1/da is not finite (da 0 or
/// subnormal). The portable loop (`_ref`) and
/// the AVX-512 one (only where kd_cpu_has_avx512vnni() is 1) give the same bits.
void kd_q8_quantize_rows_ref(int m, int k, const float *a, ptrdiff_t lda, int8_t *qa, float *da, float *sa);
void kd_q8_quantize_rows_avx512(int m, int k, const float *a, ptrdiff_t lda, int8_t *qa, float *da, float *sa);

/// C [m, n] (row stride ldc) = (accumulate ? C : 0) + Σ_blocks d·da·Σ u·qa + m·sa, from kd_q8_quantize_rows' A and
/// kd_q8_pack_ggml's panels of n columns; each element's blocks are added in order, so any split of rows or columns gives
/// the same bits. Only where kd_cpu_has_avx512vnni() is 1.
void kd_gemm_q8_avx512vnni(int m, int n, int k, const int8_t *qa, const float *da, const float *sa, const uint8_t *panels,
                           float *c, ptrdiff_t ldc, int accumulate);
#endif
