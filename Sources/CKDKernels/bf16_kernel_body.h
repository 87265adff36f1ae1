// The blocked bf16 GEMM, written once against a few vector operations and included twice by bf16.c: with AVX512-BF16
// intrinsics and with a portable emulation. Before including, define KD_NAME(x), KD_VF (16 f32 lanes), KD_VB (32 bf16),
// KD_ZERO(), KD_LOAD_B(p) (32 bf16 at p), KD_BCAST_PAIR(p) (the bf16 pair at p in every 32-bit lane),
// KD_DP(acc, a, b) (acc + pairwise dot products, vdpbf16ps), KD_STORE(p, v) (16 f32 to p), and for the epilogue
// KD_LOADF(p) (16 f32), KD_SET1(x), KD_MUL(a, b), KD_FMA(a, b, c) (a·b + c, one rounding).
// Optionally KD_AT and KD_BT (the element types of A and B blocks as the tile loop reads them; default uint16_t, the
// packed bf16 pairs), KD_A_BLOCK(p, count) and KD_B_BLOCK(p, count) (the packed A or B block of `count` bf16 values at
// p as the tile loop reads it — a B block's micro-panels are contiguous, so any run of whole panels is one block;
// default p itself) and KD_TILE_LOOP (the tile's sums; default the vdpbf16ps loop below): bf16.c's FMA variant reads
// both widened to f32, each block widened once and read by every tile that multiplies it; KD_TILE_LOOP_RAW (below).
//
// GotoBLAS blocking: NC columns × KC depth of B packed once per (pc, jc) (or handed in packed: weights packed ahead);
// A packed once (all of it up front when there are several NC blocks, else MC rows at a time), so each element of A
// and B is packed once per call; an MR × NR register tile (8 rows × 32
// columns = 16 accumulators). KD_PACK(x, rs, cs, rows, depth, width, out) is the packing routine (KD_NAME(pack), or a
// vectorized one with the same output). Packed layouts keep k in pairs, as vdpbf16ps
// reads them: A micro-panel [kp][MR][2], B micro-panel [kp][NR][2]; rows, columns and depth past the edge are zero.

#ifndef KD_NO_GENERIC_PACK
/// Packs rows × depth (depth ≤ KD_KC) of X(r, p) = x[r·rs + p·cs] into micro-panels of `width` rows:
/// [panel][kp][width] pairs (bf16 of p = 2q in the low half, 2q + 1 in the high half), zero past `rows` and `depth`.
/// Loops run along memory (a row's depth when cs = 1, the rows of a depth pair otherwise) so they vectorize.
static void KD_NAME(pack)(const float *x, ptrdiff_t rs, ptrdiff_t cs, int rows, int depth, int width, uint16_t *out16) {
    int kp = (depth + 1) / 2, even = depth / 2;
    uint32_t *out = (uint32_t *)(void *)out16;
    uint32_t tmp[KD_KC / 2];
    for (int r0 = 0; r0 < rows; r0 += width) {
        uint32_t *panel = out + (size_t)r0 * kp;
        int w = rows - r0 < width ? rows - r0 : width;
        if (cs == 1) {
            for (int r = 0; r < w; r++) {
                const float *src = x + (ptrdiff_t)(r0 + r) * rs;
                for (int p = 0; p < even; p++) tmp[p] = kd_bf16_pair(src[2 * p], src[2 * p + 1]);
                if (kp > even) tmp[even] = kd_bf16_pair(src[2 * even], 0);
                for (int p = 0; p < kp; p++) panel[(size_t)p * width + r] = tmp[p];
            }
        } else {
            for (int p = 0; p < kp; p++) {
                const float *s0 = x + (ptrdiff_t)r0 * rs + (ptrdiff_t)(2 * p) * cs, *s1 = s0 + cs;
                uint32_t *dst = panel + (size_t)p * width;
                if (2 * p + 1 < depth) for (int r = 0; r < w; r++) dst[r] = kd_bf16_pair(s0[r * rs], s1[r * rs]);
                else for (int r = 0; r < w; r++) dst[r] = kd_bf16_pair(s0[r * rs], 0);
            }
        }
        for (int p = 0; p < kp; p++) for (int r = w; r < width; r++) panel[(size_t)p * width + r] = 0;
    }
}
#endif

#ifndef KD_AT
#define KD_AT uint16_t
#define KD_A_BLOCK(p, count) ((const uint16_t *)(p))
#endif
#ifndef KD_BT
#define KD_BT uint16_t
#define KD_B_BLOCK(p, count) ((const uint16_t *)(p))
#endif

#ifndef KD_TILE_LOOP
/// The MR × NR register tile of Σ_p A(i, p)·B(j, p) over kp depth pairs.
#define KD_TILE_LOOP                                                                                    \
    KD_VF acc[KD_MR][2];                                                                                \
    for (int i = 0; i < KD_MR; i++) { acc[i][0] = KD_ZERO(); acc[i][1] = KD_ZERO(); }                   \
    for (int p = 0; p < kp; p++) {                                                                      \
        KD_VB b0 = KD_LOAD_B(bp + (size_t)p * KD_NR * 2), b1 = KD_LOAD_B(bp + (size_t)p * KD_NR * 2 + 32); \
        for (int i = 0; i < KD_MR; i++) {                                                               \
            KD_VB a = KD_BCAST_PAIR(ap + ((size_t)p * KD_MR + i) * 2);                                  \
            acc[i][0] = KD_DP(acc[i][0], a, b0);                                                        \
            acc[i][1] = KD_DP(acc[i][1], a, b1);                                                        \
        }                                                                                               \
    }
#endif

#define KD_TNAME(x) KD_NAME(x)
#define KD_TB KD_BT
#define KD_TLOOP KD_TILE_LOOP
#include "bf16_tile.h"
#undef KD_TNAME
#undef KD_TB
#undef KD_TLOOP
#ifdef KD_TILE_LOOP_RAW
// KD_TILE_LOOP_RAW (optional): the tile's sums on B's packed bf16 pairs as they are, for a call of at most MR rows —
// its one row panel reads each B panel once, so widening the panel first would cost about what its products do.
#define KD_TNAME(x) KD_NAME(x##_raw)
#define KD_TB uint16_t
#define KD_TLOOP KD_TILE_LOOP_RAW
#include "bf16_tile.h"
#undef KD_TNAME
#undef KD_TB
#undef KD_TLOOP
#endif

/// The GEMM with B either packed here or handed in packed (`bpacked`, the layout of kd_bf16_pack_b for a matrix of
/// `bstride` columns, this call's column 0 being its column `bcol0`, a multiple of KD_NR; NULL = pack b), and A either
/// packed here or handed in packed (`apacked`, kd_bf16_pack_a's layout of this call's m rows; NULL = pack a).
void KD_NAME(kd_gemm_bf16_prepacked)(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                                     const uint16_t *apacked, const float *b, ptrdiff_t brs, ptrdiff_t bcs,
                                     const uint16_t *bpacked, int bstride, int bcol0, float beta, float *c, ptrdiff_t ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {  // nothing to multiply: C = beta · C
        for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
        return;
    }
    // A is packed once: all of it up front when B has more than one NC block (else MC rows at a time, as its one pass
    // needs); B per (NC, depth) block, or read from `bpacked`. The depth loop inside keeps C's NC block in cache.
    int fullA = apacked || n > KD_NC;
    size_t mround = (size_t)((m + KD_MR - 1) / KD_MR * KD_MR), bround = (size_t)((bstride + KD_NR - 1) / KD_NR * KD_NR);
    uint16_t *apack, *bpack, *abig = NULL;
    kd_pack_buffers(&apack, &bpack, &abig, fullA && !apacked ? mround * (size_t)((k + 1) / 2 * 2) : 0);
    if (apacked) abig = (uint16_t *)apacked;  // read only
    else if (fullA) {
        for (int pc = 0; pc < k; pc += KD_KC) {
            int kc = k - pc < KD_KC ? k - pc : KD_KC;
            KD_PACK(a + (ptrdiff_t)pc * acs, ars, acs, m, kc, KD_MR, abig + mround * pc);
        }
    }
    for (int jc = 0; jc < n; jc += KD_NC) {
        int nc = n - jc < KD_NC ? n - jc : KD_NC;
        for (int pc = 0; pc < k; pc += KD_KC) {
            int kc = k - pc < KD_KC ? k - pc : KD_KC, kp = (kc + 1) / 2;
            const uint16_t *bblock;
            if (bpacked) bblock = bpacked + bround * pc + (size_t)(bcol0 + jc) * kp * 2;
            else {
                KD_PACK(b + (ptrdiff_t)jc * brs + (ptrdiff_t)pc * bcs, brs, bcs, nc, kc, KD_NR, bpack);
                bblock = bpack;
            }
            // B as the tile loop reads it: the whole block at once when several row blocks read it, else each panel
            // just before its tiles (a small m: the block would leave the core's L1 for nothing)
            const KD_BT *bwide = m > KD_MC ? KD_B_BLOCK(bblock, (size_t)((nc + KD_NR - 1) / KD_NR * KD_NR) * kp * 2) : NULL;
            for (int ic = 0; ic < m; ic += KD_MC) {
                int mc = m - ic < KD_MC ? m - ic : KD_MC;
                const uint16_t *apacked_block;
                if (fullA) apacked_block = abig + mround * pc + (size_t)ic * kp * 2;
                else {
                    KD_PACK(a + (ptrdiff_t)ic * ars + (ptrdiff_t)pc * acs, ars, acs, mc, kc, KD_MR, apack);
                    apacked_block = apack;
                }
                const KD_AT *ablock = KD_A_BLOCK(apacked_block, (size_t)(mc + KD_MR - 1) / KD_MR * KD_MR * kp * 2);
                for (int jr = 0; jr < nc; jr += KD_NR) {
                    int nr = nc - jr < KD_NR ? nc - jr : KD_NR;
#ifdef KD_TILE_LOOP_RAW
                    if (m <= KD_MR) {  // one row panel: B's panel as packed
                        KD_NAME(tile_raw)(kp, ablock, bblock + (size_t)jr * kp * 2, c + (ptrdiff_t)ic * ldc + jc + jr, ldc, mc, nr, alpha,
                                          beta, pc == 0);
                        continue;
                    }
#endif
                    const KD_BT *bpanel = bwide ? bwide + (size_t)jr * kp * 2 : KD_B_BLOCK(bblock + (size_t)jr * kp * 2, (size_t)KD_NR * kp * 2);
                    for (int ir = 0; ir < mc; ir += KD_MR) {
                        int mr = mc - ir < KD_MR ? mc - ir : KD_MR;
                        const KD_AT *apanel = ablock + (size_t)ir * kp * 2;
                        KD_NAME(tile)(kp, apanel, bpanel, c + (ptrdiff_t)(ic + ir) * ldc + jc + jr, ldc, mr, nr, alpha, beta, pc == 0);
                    }
                }
            }
        }
    }
}

void KD_NAME(kd_gemm_bf16)(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                           const float *b, ptrdiff_t brs, ptrdiff_t bcs, float beta, float *c, ptrdiff_t ldc) {
    KD_NAME(kd_gemm_bf16_prepacked)(m, n, k, alpha, a, ars, acs, NULL, b, brs, bcs, NULL, n, 0, beta, c, ldc);
}

// ---- one head of causal attention (no window) on K and V packed once: kd_attention_scores / kd_attention_pv ----

/// S(r, j) = scale · Σ_p bf16(q(r, p))·bf16(k(j, p)) for the rows r < rows (query positions pos + r) and the 32-key
/// tiles up to the causal end of each 8-row panel; `kpacked` is kd_bf16_pack_b's layout of the keys (n = tk, depth hs).
/// Entries past a row's causal end inside a computed tile hold scores of keys it does not see (softmax zeroes them).
void KD_NAME(kd_attention_scores)(int rows, int hs, int tk, int pos, float scale, const float *q, ptrdiff_t ldq,
                                  const uint16_t *kpacked, float *s, ptrdiff_t lds) {
    if (rows <= 0 || rows > KD_MC || hs <= 0 || hs > KD_KC) abort();
    uint16_t *apack, *bpack, *abig;
    kd_pack_buffers(&apack, &bpack, &abig, 0);
    const int kp = (hs + 1) / 2;
    KD_PACK(q, ldq, 1, rows, hs, KD_MR, apack);
    const KD_AT *ablock = KD_A_BLOCK(apack, (size_t)(rows + KD_MR - 1) / KD_MR * KD_MR * kp * 2);
    const int keys = pos + rows < tk ? pos + rows : tk;  // the last row's causal end: the keys any tile reads
    // the keys as the tile loop reads them: all at once for several row panels, else each panel as it is read
    const KD_BT *kblock = rows > KD_MR ? KD_B_BLOCK(kpacked, (size_t)((keys + KD_NR - 1) / KD_NR * KD_NR) * kp * 2) : NULL;
    (void)keys;  // unused where KD_B_BLOCK is the identity
    for (int ir = 0; ir < rows; ir += KD_MR) {
        int mr = rows - ir < KD_MR ? rows - ir : KD_MR, end = pos + ir + mr < tk ? pos + ir + mr : tk;
        const KD_AT *ap = ablock + (size_t)ir * kp * 2;
        for (int jr = 0; jr < end; jr += KD_NR) {
            int nr = tk - jr < KD_NR ? tk - jr : KD_NR;
#ifdef KD_TILE_LOOP_RAW
            if (rows <= KD_MR) {  // one row panel: the keys as packed
                KD_NAME(tile_raw)(kp, ap, kpacked + (size_t)jr * kp * 2, s + (ptrdiff_t)ir * lds + jr, lds, mr, nr, scale, 0, 1);
                continue;
            }
#endif
            const KD_BT *bp = kblock ? kblock + (size_t)jr * kp * 2 : KD_B_BLOCK(kpacked + (size_t)jr * kp * 2, (size_t)KD_NR * kp * 2);
            KD_NAME(tile)(kp, ap, bp, s + (ptrdiff_t)ir * lds + jr, lds, mr, nr, scale, 0, 1);
        }
    }
}

/// out(r, d) = Σ_j bf16(P(r, j))·bf16(v(j, d)) over the keys j < pos + r + 1 (P(r, j) = p[r·ldp + j], exactly 0 from the
/// row's causal end to tk); `vpacked` is kd_bf16_pack_b's layout of the values (n = hs columns, depth tk keys). The depth
/// runs in blocks of KD_KC keys from key 0, each 8-row panel only to its causal end: the GEMM of the same operands
/// gives the same sums (the products it adds past that end are zeros).
void KD_NAME(kd_attention_pv)(int rows, int hs, int tk, int pos, const float *p, ptrdiff_t ldp, const uint16_t *vpacked,
                              float *out, ptrdiff_t ldo) {
    if (rows <= 0 || rows > KD_MC || hs <= 0) abort();
    uint16_t *apack, *bpack, *abig;
    kd_pack_buffers(&apack, &bpack, &abig, 0);
    const int end = pos + rows < tk ? pos + rows : tk;
    const size_t hround = (size_t)((hs + KD_NR - 1) / KD_NR * KD_NR);
    for (int pc = 0; pc < end; pc += KD_KC) {
        int kcv = tk - pc < KD_KC ? tk - pc : KD_KC, kpv = (kcv + 1) / 2;  // V's depth block as packed
        int kc = end - pc < KD_KC ? end - pc : KD_KC, kpa = (kc + 1) / 2;  // the probabilities this block reads
        KD_PACK(p + pc, ldp, 1, rows, kc, KD_MR, apack);
        const KD_AT *ablock = KD_A_BLOCK(apack, (size_t)(rows + KD_MR - 1) / KD_MR * KD_MR * kpa * 2);
        const uint16_t *vpc = vpacked + hround * pc;
        const KD_BT *vblock = rows > KD_MR ? KD_B_BLOCK(vpc, hround * kpv * 2) : NULL;  // as the keys, above
        for (int ir = 0; ir < rows; ir += KD_MR) {
            int mr = rows - ir < KD_MR ? rows - ir : KD_MR, pend = pos + ir + mr < tk ? pos + ir + mr : tk;
            if (pend <= pc) continue;  // this panel's probabilities in the block are all 0
            int kpp = ((pend - pc < KD_KC ? pend - pc : KD_KC) + 1) / 2;
            const KD_AT *ap = ablock + (size_t)ir * kpa * 2;
            for (int jr = 0; jr < hs; jr += KD_NR) {
                int nr = hs - jr < KD_NR ? hs - jr : KD_NR;
#ifdef KD_TILE_LOOP_RAW
                if (rows <= KD_MR) {  // one row panel: the values as packed
                    KD_NAME(tile_raw)(kpp, ap, vpc + (size_t)jr * kpv * 2, out + (ptrdiff_t)ir * ldo + jr, ldo, mr, nr, 1, 0, pc == 0);
                    continue;
                }
#endif
                const KD_BT *bp = vblock ? vblock + (size_t)jr * kpv * 2 : KD_B_BLOCK(vpc + (size_t)jr * kpv * 2, (size_t)KD_NR * kpv * 2);
                KD_NAME(tile)(kpp, ap, bp, out + (ptrdiff_t)ir * ldo + jr, ldo, mr, nr, 1, 0, pc == 0);
            }
        }
    }
}
