// kd_kquant.h: the k-quants' scale searches across sub-blocks. Each statement is the scalar reference's for one
// sub-block j; the j loops are innermost and branch-free so that they vectorize.
#pragma STDC FP_CONTRACT OFF
#include "kd_kquant.h"
#include <math.h>
#include <string.h>

#define NS 16  /* lanes: sub-blocks at most */
// one build per vector width, picked at load time by the CPU (ifunc): the j loops become 16-lane AVX-512 or 8-lane AVX2
#if defined(__x86_64__)
#define KD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KD_CLONES
#endif
#define NE 32  /* elements per sub-block at most */

// ggml's nearest_int: round half to even through 1.5·2²³ (|x| < 2²²)
static inline int nearest(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}
static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// 16 sub-blocks of 16 → xt[element][sub-block], and each sub-block's value of largest magnitude (signed, the first
// of equal magnitudes) and that magnitude, as the symmetric searches start from
static inline void transpose_signed_max(const float *x, float xt[16][NS], float *mx, float *amax) {
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < NS; ++j) xt[i][j] = x[j * 16 + i];
    for (int j = 0; j < NS; ++j) { mx[j] = 0; amax[j] = 0; }
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < NS; ++j) {
            float ax = fabsf(xt[i][j]);
            int bigger = ax > amax[j];
            amax[j] = bigger ? ax : amax[j];
            mx[j] = bigger ? xt[i][j] : mx[j];
        }
}

KD_CLONES void kd_make_qx_16x16(const float *x, int nmax, int8_t *L, float *scales) {
    float xt[16][NS], mx[NS], amax[NS], sumlx[NS], suml2[NS], scale[NS], best[NS];
    int8_t lev[16][NS];
    transpose_signed_max(x, xt, mx, amax);
    for (int j = 0; j < NS; ++j) { sumlx[j] = 0; suml2[j] = 0; }
    float iscale[NS];
    for (int j = 0; j < NS; ++j) iscale[j] = -nmax / mx[j];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < NS; ++j) {
            int l = clampi(nearest(iscale[j] * xt[i][j]), -nmax, nmax - 1);
            lev[i][j] = (int8_t)(l + nmax);
            float w = xt[i][j] * xt[i][j];
            sumlx[j] += w * xt[i][j] * l;
            suml2[j] += w * l * l;
        }
    for (int j = 0; j < NS; ++j) {
        scale[j] = suml2[j] != 0 ? sumlx[j] / suml2[j] : 0.0f;
        best[j] = scale[j] * sumlx[j];
    }
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        for (int j = 0; j < NS; ++j) { iscale[j] = -(nmax + 0.1f * is) / mx[j]; sumlx[j] = 0; suml2[j] = 0; }
        for (int i = 0; i < 16; ++i)
            for (int j = 0; j < NS; ++j) {
                int l = clampi(nearest(iscale[j] * xt[i][j]), -nmax, nmax - 1);
                float w = xt[i][j] * xt[i][j];
                sumlx[j] += w * xt[i][j] * l;
                suml2[j] += w * l * l;
            }
        int take[NS], any = 0;
        for (int j = 0; j < NS; ++j) { take[j] = suml2[j] > 0 && sumlx[j] * sumlx[j] > best[j] * suml2[j]; any |= take[j]; }
        if (!any) continue;
        for (int i = 0; i < 16; ++i)
            for (int j = 0; j < NS; ++j) {
                int8_t l = (int8_t)(nmax + clampi(nearest(iscale[j] * xt[i][j]), -nmax, nmax - 1));
                lev[i][j] = take[j] ? l : lev[i][j];
            }
        for (int j = 0; j < NS; ++j) {
            if (take[j]) { scale[j] = sumlx[j] / suml2[j]; best[j] = scale[j] * sumlx[j]; }
        }
    }
    for (int j = 0; j < NS; ++j) {
        int zero = amax[j] < 1e-15f;
        scales[j] = zero ? 0.0f : scale[j];
        for (int i = 0; i < 16; ++i) L[j * 16 + i] = zero ? 0 : lev[i][j];
    }
}

KD_CLONES void kd_make_q3_16x16(const float *x, int nmax, int8_t *L, float *scales) {
    float xt[16][NS], mx[NS], amax[NS], sumlx[NS], suml2[NS], iscale[NS];
    int lev[16][NS];
    transpose_signed_max(x, xt, mx, amax);
    for (int j = 0; j < NS; ++j) { sumlx[j] = 0; suml2[j] = 0; }
    for (int j = 0; j < NS; ++j) iscale[j] = -nmax / mx[j];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < NS; ++j) {
            int l = clampi(nearest(iscale[j] * xt[i][j]), -nmax, nmax - 1);
            lev[i][j] = l;
            float w = xt[i][j] * xt[i][j];
            sumlx[j] += w * xt[i][j] * l;
            suml2[j] += w * l * l;
        }
    for (int itry = 0; itry < 5; ++itry) {
        int changed = 0;
        for (int i = 0; i < 16; ++i)
            for (int j = 0; j < NS; ++j) {
                float w = xt[i][j] * xt[i][j];
                int li = lev[i][j];
                float slx = sumlx[j] - w * xt[i][j] * li;
                float sl2 = suml2[j] - w * li * li;
                // a sub-block whose slx ≤ 0 keeps its level (the reference skips it); guard the division's lane
                int live = slx > 0;
                int newl = clampi(nearest(xt[i][j] * sl2 / (live ? slx : 1.0f)), -nmax, nmax - 1);
                float slx2 = slx + w * xt[i][j] * newl;
                float sl22 = sl2 + w * newl * newl;
                int take = live && newl != li && sl22 > 0 && slx2 * slx2 * suml2[j] > sumlx[j] * sumlx[j] * sl22;
                lev[i][j] = take ? newl : li;
                sumlx[j] = take ? slx2 : sumlx[j];
                suml2[j] = take ? sl22 : suml2[j];
                changed |= take;
            }
        // a sub-block without a change keeps its state, so further passes change nothing in it: stopping when none
        // changed is the reference's per-sub-block stop
        if (!changed) break;
    }
    for (int j = 0; j < NS; ++j) {
        int zero = amax[j] < 1e-15f;
        scales[j] = zero ? 0.0f : suml2[j] > 0 ? sumlx[j] / suml2[j] : 0.0f;
        for (int i = 0; i < 16; ++i) L[j * 16 + i] = zero ? 0 : (int8_t)(lev[i][j] + nmax);
    }
}

KD_CLONES void kd_make_qkx2(int nsub, int n, int nmax, const float *x, const float *w, uint8_t *L, float *scales, float *negmins,
                  float rmin, float rdelta, int nstep, int mad) {
    float xt[NE][NS], wt[NE][NS], lo[NS], hi[NS], sumw[NS], sumx[NS], iscale[NS], scale[NS], best[NS];
    uint8_t lev[NE][NS], aux[NE][NS];
    memset(xt, 0, sizeof xt); memset(wt, 0, sizeof wt);
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < nsub; ++j) { xt[i][j] = x[j * n + i]; wt[i][j] = w[j * n + i]; }
    for (int j = 0; j < NS; ++j) { lo[j] = xt[0][j]; hi[j] = xt[0][j]; sumw[j] = wt[0][j]; sumx[j] = sumw[j] * xt[0][j]; }
    for (int i = 1; i < n; ++i)
        for (int j = 0; j < NS; ++j) {
            lo[j] = xt[i][j] < lo[j] ? xt[i][j] : lo[j];
            hi[j] = xt[i][j] > hi[j] ? xt[i][j] : hi[j];
            sumw[j] += wt[i][j];
            sumx[j] += wt[i][j] * xt[i][j];
        }
    int flat[NS];
    for (int j = 0; j < NS; ++j) {
        lo[j] = lo[j] > 0 ? 0 : lo[j];
        flat[j] = hi[j] == lo[j];
        float range = flat[j] ? 1.0f : hi[j] - lo[j];  // flat sub-blocks are answered below; keep their lane finite
        iscale[j] = nmax / range;
        scale[j] = 1 / iscale[j];
        best[j] = 0;
    }
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < NS; ++j) {
            int l = clampi(nearest(iscale[j] * (xt[i][j] - lo[j])), 0, nmax);
            lev[i][j] = (uint8_t)l;
            float diff = scale[j] * l + lo[j] - xt[i][j];
            diff = mad ? fabsf(diff) : diff * diff;
            best[j] += wt[i][j] * diff;
        }
    for (int is = 0; nstep >= 1 && is <= nstep; ++is) {
        float suml[NS], suml2[NS], sumxl[NS], thisScale[NS], thisMin[NS], err[NS];
        int valid[NS], anyValid = 0;
        for (int j = 0; j < NS; ++j) {
            float range = flat[j] ? 1.0f : hi[j] - lo[j];
            iscale[j] = (rmin + rdelta * is + nmax) / range;
            suml[j] = 0; suml2[j] = 0; sumxl[j] = 0;
        }
        for (int i = 0; i < n; ++i)
            for (int j = 0; j < NS; ++j) {
                int l = clampi(nearest(iscale[j] * (xt[i][j] - lo[j])), 0, nmax);
                aux[i][j] = (uint8_t)l;
                suml[j] += wt[i][j] * l;
                suml2[j] += wt[i][j] * l * l;
                sumxl[j] += wt[i][j] * l * xt[i][j];
            }
        for (int j = 0; j < NS; ++j) {
            float D = sumw[j] * suml2[j] - suml[j] * suml[j];
            valid[j] = D > 0 && j < nsub && !flat[j];
            anyValid |= valid[j];
            float d = valid[j] ? D : 1.0f;
            thisScale[j] = (sumw[j] * sumxl[j] - sumx[j] * suml[j]) / d;
            thisMin[j] = (suml2[j] * sumx[j] - suml[j] * sumxl[j]) / d;
            int pos = thisMin[j] > 0;
            thisMin[j] = pos ? 0 : thisMin[j];
            thisScale[j] = pos ? sumxl[j] / (valid[j] ? suml2[j] : 1.0f) : thisScale[j];
            err[j] = 0;
        }
        if (!anyValid) continue;
        for (int i = 0; i < n; ++i)
            for (int j = 0; j < NS; ++j) {
                float diff = thisScale[j] * aux[i][j] + thisMin[j] - xt[i][j];
                diff = mad ? fabsf(diff) : diff * diff;
                err[j] += wt[i][j] * diff;
            }
        int take[NS], anyTake = 0;
        for (int j = 0; j < NS; ++j) { take[j] = valid[j] && err[j] < best[j]; anyTake |= take[j]; }
        if (!anyTake) continue;
        for (int i = 0; i < n; ++i)
            for (int j = 0; j < NS; ++j) lev[i][j] = take[j] ? aux[i][j] : lev[i][j];
        for (int j = 0; j < NS; ++j) {
            best[j] = take[j] ? err[j] : best[j];
            scale[j] = take[j] ? thisScale[j] : scale[j];
            lo[j] = take[j] ? thisMin[j] : lo[j];
        }
    }
    for (int j = 0; j < nsub; ++j) {
        scales[j] = flat[j] ? 0.0f : scale[j];
        negmins[j] = -lo[j];
        for (int i = 0; i < n; ++i) L[j * n + i] = flat[j] ? 0 : lev[i][j];
    }
}
