// bf16 GEMM for distill: bf16 operands (rounded to nearest even from f32), f32 accumulation.
//   C(i,j) = alpha · Σ_p A(i,p)·B(j,p) + beta · C(i,j),   A(i,p) = a[i·ars + p·acs],  B(j,p) = b[j·brs + p·bcs]
// Strides express every transpose of a row-major sgemm. beta == 0 never reads C.
#ifndef KD_BF16_H
#define KD_BF16_H
#include <stddef.h>
#include <stdint.h>

/// f32 → bf16 bits, round to nearest even; NaN stays a (quiet) NaN.
uint16_t kd_bf16_from_f32(float x);
/// out[i] = in[i] rounded to bf16 and widened back to f32 (exact); in and out may be the same.
void kd_bf16_round_f32(const float *in, float *out, size_t n);
/// 1 when this CPU and OS run AVX512-BF16 (vdpbf16ps) with ZMM state enabled, else 0.
int kd_cpu_has_avx512bf16(void);

/// The blocked kernel with vdpbf16ps. Only call when kd_cpu_has_avx512bf16() is 1.
void kd_gemm_bf16_avx512(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                         const float *b, ptrdiff_t brs, ptrdiff_t bcs, float beta, float *c, ptrdiff_t ldc);
/// The same kernel source compiled against a portable emulation of the five vector operations it uses
/// (vdpbf16ps as Intel's pseudo-code defines it): slow, runs anywhere; checks the blocking and packing logic.
void kd_gemm_bf16_emulated(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                           const float *b, ptrdiff_t brs, ptrdiff_t bcs, float beta, float *c, ptrdiff_t ldc);

/// bf16 values (uint16) of B [n columns, k deep] packed ahead for the kernels (weights packed once, used by many GEMMs).
size_t kd_bf16_packed_count(int n, int k);
/// Packs columns j0 ..< j1 (j0 a multiple of 32) of B(j, p) = b[j·brs + p·bcs] (j < n, p < k) into their place in `out`
/// (kd_bf16_packed_count(n, k) values for all n columns): per 256-deep block, panels of 32 columns, k in pairs, zeros
/// past n and k. Disjoint column ranges may be packed on different threads.
void kd_bf16_pack_b(int n, int j0, int j1, int k, const float *b, ptrdiff_t brs, ptrdiff_t bcs, uint16_t *out);
/// Columns j0 ..< j1 of a packed B back to f32: out[(j − j0)·ldo + p] = B(j, p) as bf16 (exact).
void kd_bf16_unpack_b(int n, int j0, int j1, int k, const uint16_t *packed, float *out, ptrdiff_t ldo);
/// bf16 values (uint16) of A [m rows, k deep] packed ahead (a matrix multiplied by several packed B blocks).
size_t kd_bf16_packed_a_count(int m, int k);
/// Packs rows i0 ..< i1 (i0 a multiple of 8) of A(i, p) = a[i·ars + p·acs] (i < m, p < k) into their place in `out`
/// (kd_bf16_packed_a_count(m, k) values): per 256-deep block, panels of 8 rows, k in pairs, zeros past m and k.
void kd_bf16_pack_a(int m, int i0, int i1, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, uint16_t *out);
/// B(j, p) = W[j, p] of a row-major GGML matrix (n rows of `rowBytes`, k deep) dequantized as ggml does and packed as
/// kd_bf16_pack_b packs the f32 values, for Q4_0 (type 2), Q4_1 (3) and Q8_0 (8) when n is a multiple of 16 and k of 32,
/// with AVX-512 (only call when kd_cpu_has_avx512bf16() is 1). Returns 0 (nothing written) for any other case.
int kd_bf16_pack_b_ggml(int type, int n, int k, const void *data, size_t rowBytes, uint16_t *out);
/// The kernels with B handed in packed (`bpacked`: kd_bf16_pack_b's layout of a matrix of `bstride` columns, this call's
/// column 0 being its column `bcol0`, a multiple of 32) or, when bpacked is NULL, packed from b as kd_gemm_bf16_* do;
/// and A handed in packed (`apacked`: kd_bf16_pack_a's layout of exactly this call's m rows) or, when NULL, from a.
void kd_gemm_bf16_prepacked_avx512(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                                   const uint16_t *apacked, const float *b, ptrdiff_t brs, ptrdiff_t bcs,
                                   const uint16_t *bpacked, int bstride, int bcol0, float beta, float *c, ptrdiff_t ldc);
void kd_gemm_bf16_prepacked_emulated(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                                     const uint16_t *apacked, const float *b, ptrdiff_t brs, ptrdiff_t bcs,
                                     const uint16_t *bpacked, int bstride, int bcol0, float beta, float *c, ptrdiff_t ldc);
/// One head of causal attention without a window, in the bf16 kernels' arithmetic, on keys and values packed once by
/// kd_bf16_pack_b (keys: n = tk, depth hs, brs = the key row stride, bcs = 1; values: n = hs, depth tk, brs = 1,
/// bcs = the value row stride). For `rows` ≤ 96 queries at positions pos ..< pos + rows (hs ≤ 256):
/// scores: s[r·lds + j] = scale · q_r·k_j for every key j of a row's 8-row panel's 32-key tiles up to its causal end;
/// pv: out[r·ldo + d] = Σ_j P(r, j)·v(j, d) with P(r, j) = p[r·ldp + j], which must be exactly 0 from the row's causal
/// end to tk. Each gives bit for bit what kd_gemm_bf16_* gives for the same product over the block's keys.
void kd_attention_scores_avx512(int rows, int hs, int tk, int pos, float scale, const float *q, ptrdiff_t ldq,
                                const uint16_t *kpacked, float *s, ptrdiff_t lds);
void kd_attention_scores_emulated(int rows, int hs, int tk, int pos, float scale, const float *q, ptrdiff_t ldq,
                                  const uint16_t *kpacked, float *s, ptrdiff_t lds);
void kd_attention_pv_avx512(int rows, int hs, int tk, int pos, const float *p, ptrdiff_t ldp, const uint16_t *vpacked,
                            float *out, ptrdiff_t ldo);
void kd_attention_pv_emulated(int rows, int hs, int tk, int pos, const float *p, ptrdiff_t ldp, const uint16_t *vpacked,
                              float *out, ptrdiff_t ldo);
/// h[i·ldh + j] = SwiGLU(g, u) = g·σ(g)·u (kd_rows.h's lanes) of g = Σ_p A(i, p)·G(j, p) and u = Σ_p A(i, p)·U(j, p),
/// A(i, p) = a[i·lda + p] (i < m, j < f, p < k), G and U packed by kd_bf16_pack_b (n = f, depth k): bit for bit
/// kd_gemm_bf16 of each followed by the SwiGLU lanes, without writing g and u out. `apacked`: A in kd_bf16_pack_a's layout
/// of exactly these m rows, or NULL to pack it from a. AVX512-BF16 only.
void kd_gemm_bf16_swiglu_avx512(int m, int f, int k, const float *a, ptrdiff_t lda, const uint16_t *apacked,
                                const uint16_t *gate, const uint16_t *up, float *h, ptrdiff_t ldh);
// The same kernels with the bf16 values widened to f32 and multiplied by FMAs (bf16.c: the same bits as vdpbf16ps's);
// any AVX512-BF16 CPU runs them. kd_bf16_fma_is_faster: whether this CPU's vdpbf16ps is the slower way (Intel's).
void kd_gemm_bf16_fma(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                      const float *b, ptrdiff_t brs, ptrdiff_t bcs, float beta, float *c, ptrdiff_t ldc);
void kd_gemm_bf16_prepacked_fma(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                                const uint16_t *apacked, const float *b, ptrdiff_t brs, ptrdiff_t bcs,
                                const uint16_t *bpacked, int bstride, int bcol0, float beta, float *c, ptrdiff_t ldc);
void kd_attention_scores_fma(int rows, int hs, int tk, int pos, float scale, const float *q, ptrdiff_t ldq,
                             const uint16_t *kpacked, float *s, ptrdiff_t lds);
void kd_attention_pv_fma(int rows, int hs, int tk, int pos, const float *p, ptrdiff_t ldp, const uint16_t *vpacked,
                         float *out, ptrdiff_t ldo);
void kd_gemm_bf16_swiglu_fma(int m, int f, int k, const float *a, ptrdiff_t lda, const uint16_t *apacked,
                             const uint16_t *gate, const uint16_t *up, float *h, ptrdiff_t ldh);
int kd_bf16_fma_is_faster(void);
#endif
