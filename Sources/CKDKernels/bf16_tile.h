// One register tile's entry points, included by bf16_kernel_body.h once per tile loop it has: KD_TNAME(x) names them,
// KD_TB is the element type of the B panel as KD_TLOOP (the tile's sums, over kp depth pairs into acc[MR][2]) reads it.

/// An edge tile: the sums to `tile` [MR][NR], for the scalar epilogue.
static void KD_TNAME(micro)(int kp, const KD_AT *ap, const KD_TB *bp, float *tile /* [MR][NR] */) {
    KD_TLOOP
    for (int i = 0; i < KD_MR; i++) {
        KD_STORE(tile + i * KD_NR, acc[i][0]);
        KD_STORE(tile + i * KD_NR + 16, acc[i][1]);
    }
}

/// A whole tile, its epilogue in registers: C = fma(alpha, S, C) for a later depth block (`first` 0), else
/// C = alpha·S (beta 0, C not read) or fma(alpha, S, beta·C) — the scalar epilogue's arithmetic exactly.
static void KD_TNAME(micro_c)(int kp, const KD_AT *ap, const KD_TB *bp, float *c, ptrdiff_t ldc, float alpha,
                             float beta, int first) {
    KD_TLOOP
    KD_VF va = KD_SET1(alpha), vb = KD_SET1(beta);
    for (int i = 0; i < KD_MR; i++) {
        for (int h = 0; h < 2; h++) {
            float *cp = c + i * ldc + 16 * h;
            KD_VF r;
            if (!first) r = KD_FMA(va, acc[i][h], KD_LOADF(cp));
            else if (beta == 0) r = KD_MUL(va, acc[i][h]);
            else r = KD_FMA(va, acc[i][h], KD_MUL(vb, KD_LOADF(cp)));
            KD_STORE(cp, r);
        }
    }
}

/// The mr × nr tile (mr ≤ MR, nr ≤ NR) of C at c: a whole one through micro_c, an edge one through micro and the same
/// epilogue in scalars (the first depth block applies beta, never reading C when beta is 0; later blocks add).
static void KD_TNAME(tile)(int kp, const KD_AT *ap, const KD_TB *bp, float *c, ptrdiff_t ldc, int mr, int nr,
                          float alpha, float beta, int first) {
    if (mr == KD_MR && nr == KD_NR) {
        KD_TNAME(micro_c)(kp, ap, bp, c, ldc, alpha, beta, first);
        return;
    }
    float tile[KD_MR * KD_NR];
    KD_TNAME(micro)(kp, ap, bp, tile);
    for (int i = 0; i < mr; i++) {
        float *crow = c + (ptrdiff_t)i * ldc;
        const float *t = tile + i * KD_NR;
        if (!first) for (int j = 0; j < nr; j++) crow[j] = fmaf(alpha, t[j], crow[j]);
        else if (beta == 0) for (int j = 0; j < nr; j++) crow[j] = alpha * t[j];
        else for (int j = 0; j < nr; j++) crow[j] = fmaf(alpha, t[j], beta * crow[j]);
    }
}
