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

KD_CLONES void kd_make_qx_16x16(const float *x, int nmax, const float *w, int8_t *L, float *scales) {
    float xt[16][NS], wt[16][NS], mx[NS], amax[NS], sumlx[NS], suml2[NS], scale[NS], best[NS];
    int8_t lev[16][NS];
    transpose_signed_max(x, xt, mx, amax);
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < NS; ++j) wt[i][j] = w ? w[j * 16 + i] : xt[i][j] * xt[i][j];
    for (int j = 0; j < NS; ++j) { sumlx[j] = 0; suml2[j] = 0; }
    float iscale[NS];
    for (int j = 0; j < NS; ++j) iscale[j] = -nmax / mx[j];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < NS; ++j) {
            int l = clampi(nearest(iscale[j] * xt[i][j]), -nmax, nmax - 1);
            lev[i][j] = (int8_t)(l + nmax);
            float w = wt[i][j];
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
                float w = wt[i][j];
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

// IQ4_NL: the 16 levels (ggml's kvalues_iq4nl), the midpoints between neighbours and the steps between them.
// ggml's best_index_int8(al) is the number of midpoints m_k with al ≥ m_k: it takes the upper of the two levels
// around al when al − lower ≥ upper − al, which is al ≥ m_k wherever the two differences are exact — and they are
// exact near every m_k (levels are integers below 128, the differences below 16, al in the binade of m_k); away from
// m_k rounding cannot flip the comparison. Tests/KDQuantTests/IQ4NLTests checks it float by float around each m_k.
static const float iq4_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
static const float iq4_mid[15] = {-115.5f, -93.5f, -74, -57, -42, -28.5f, -16, -4.5f, 7, 19, 31.5f, 45.5f, 61, 79, 101};
static const float iq4_step[15] = {23, 21, 18, 16, 14, 13, 12, 11, 12, 12, 13, 15, 16, 20, 24};

#if defined(__x86_64__)
#include <immintrin.h>
#include <pthread.h>
// AVX-512: the level nearest al by lookup instead of 15 comparisons. al is put in one of 32 buckets of width 8
// (floor(al / 8) + 16, exact: a power-of-two scaling and a floor), each holding at most one midpoint (they are ≥ 11.5
// apart); the bucket gives the count of midpoints below it, the midpoint inside it (or +∞) and the levels either side,
// and one comparison with that midpoint decides — the same count as the portable loop, so the same level. Sums and
// scales are the portable code's, operation for operation.
// the bucket tables, built once: the midpoint inside each bucket (or +∞), the count of midpoints below it and the
// levels either side of that count
static struct { float cand[32], qlo[32], qhi[32]; int32_t c0[32]; } iq4_buckets;
static pthread_once_t iq4_buckets_once = PTHREAD_ONCE_INIT;
static void iq4_build_buckets(void) {
    for (int b = 0; b < 32; ++b) {
        float start = 8.0f * b - 128, end = start + 8;
        int n = 0;
        iq4_buckets.cand[b] = 1e30f;
        for (int k = 0; k < 15; ++k) {
            n += iq4_mid[k] < start;
            if (iq4_mid[k] >= start && iq4_mid[k] < end) iq4_buckets.cand[b] = iq4_mid[k];
        }
        iq4_buckets.c0[b] = n;
        iq4_buckets.qlo[b] = iq4_levels[n];
        iq4_buckets.qhi[b] = iq4_levels[n < 15 ? n + 1 : 15];
    }
}

__attribute__((target("avx512f"))) static void iq4nl_16_avx512(const float xt[32][NS], const float wt[32][NS], const float *mx,
                                                               __mmask16 live, float *d, int32_t Lt[32][NS]) {
    pthread_once(&iq4_buckets_once, iq4_build_buckets);
    const float *cand = iq4_buckets.cand, *qlo = iq4_buckets.qlo, *qhi = iq4_buckets.qhi;
    const int32_t *c0 = iq4_buckets.c0;
    const __m512 candA = _mm512_loadu_ps(cand), candB = _mm512_loadu_ps(cand + 16);
    const __m512 loA = _mm512_loadu_ps(qlo), loB = _mm512_loadu_ps(qlo + 16), hiA = _mm512_loadu_ps(qhi), hiB = _mm512_loadu_ps(qhi + 16);
    const __m512i c0A = _mm512_loadu_si512(c0), c0B = _mm512_loadu_si512(c0 + 16);
    const __m512 eighth = _mm512_set1_ps(0.125f);
    const __m512 vmx = _mm512_loadu_ps(mx);
    // floor(al / 8) + 16 clamped to 0…31: al / 8 is exact and adding 16 rounds up, if at all, only onto a bucket's
    // start, where al still compares below the bucket's midpoint as it should
#define IQ4_BUCKET(al) _mm512_cvt_roundps_epi32(_mm512_min_ps(_mm512_set1_ps(31.5f), _mm512_max_ps(_mm512_setzero_ps(), \
        _mm512_add_ps(_mm512_mul_ps(al, eighth), _mm512_set1_ps(16.0f)))), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
    __m512 vd = _mm512_setzero_ps(), vbest = _mm512_setzero_ps();
    for (int pass = 0; pass < 16; ++pass) {
        __m512 vid = pass == 0 ? _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_sub_ps(_mm512_setzero_ps(), vmx), _mm512_set1_ps(-127.0f)))
                               : _mm512_div_ps(_mm512_set1_ps((float)(pass - 8 - 127)), vmx);
        __m512 sqx = _mm512_setzero_ps(), sq2 = _mm512_setzero_ps();
        for (int i = 0; i < 32; ++i) {
            __m512 x = _mm512_loadu_ps(xt[i]), w = _mm512_loadu_ps(wt[i]);
            __m512 al = _mm512_mul_ps(vid, x);
            __m512i b = IQ4_BUCKET(al);
            __mmask16 up = _mm512_cmp_ps_mask(al, _mm512_permutex2var_ps(candA, b, candB), _CMP_GE_OQ);
            __m512 q = _mm512_mask_blend_ps(up, _mm512_permutex2var_ps(loA, b, loB), _mm512_permutex2var_ps(hiA, b, hiB));
            __m512 wq = _mm512_mul_ps(w, q);
            sqx = _mm512_add_ps(sqx, _mm512_mul_ps(wq, x));
            sq2 = _mm512_add_ps(sq2, _mm512_mul_ps(wq, q));
        }
        __m512 dt = _mm512_div_ps(sqx, _mm512_mask_blend_ps(_mm512_cmp_ps_mask(sq2, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(1.0f), sq2));
        if (pass == 0) {
            vd = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(sq2, _mm512_setzero_ps(), _CMP_GT_OQ), sqx, sq2);
            vbest = _mm512_mul_ps(vd, sqx);
        } else {
            __mmask16 take = _mm512_cmp_ps_mask(sq2, _mm512_setzero_ps(), _CMP_GT_OQ) &
                             _mm512_cmp_ps_mask(_mm512_mul_ps(sqx, sqx), _mm512_mul_ps(vbest, sq2), _CMP_GT_OQ);
            vd = _mm512_mask_blend_ps(take, vd, dt);
            vbest = _mm512_mask_blend_ps(take, vbest, _mm512_mul_ps(dt, sqx));
        }
    }
    // the indices against the chosen scale (0 for a dead lane: its al is 0, index 8, as ggml's)
    __m512 vid = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(vd, _mm512_setzero_ps(), _CMP_NEQ_UQ), _mm512_set1_ps(1.0f), vd);
    vid = _mm512_mask_blend_ps(live, _mm512_setzero_ps(), vid);
    for (int i = 0; i < 32; ++i) {
        __m512 al = _mm512_mul_ps(vid, _mm512_loadu_ps(xt[i]));
        __m512i b = IQ4_BUCKET(al);
        __mmask16 up = _mm512_cmp_ps_mask(al, _mm512_permutex2var_ps(candA, b, candB), _CMP_GE_OQ);
        __m512i below = _mm512_permutex2var_epi32(c0A, b, c0B);
        _mm512_storeu_si512(Lt[i], _mm512_mask_add_epi32(below, up, below, _mm512_set1_epi32(1)));
    }
    _mm512_storeu_ps(d, _mm512_mask_blend_ps(live, _mm512_setzero_ps(), vd));
#undef IQ4_BUCKET
}
#endif

// nb (≤ NS) blocks of 32 at x → xt[element][block], zeros in the unused lanes (the last blocks of a matrix: dead
// blocks, answered as ggml does); qw (nb × 32 importances, when given) padded alike into qpad. Returns the importances
// to read (qw itself when no lane is unused). Always inlined, so each clone keeps its own vector width.
static inline __attribute__((always_inline)) const float *load_blocks32(const float *x, int nb, const float *qw, float xt[32][NS], float *qpad) {
    for (int j = 0; j < NS; ++j)
        for (int i = 0; i < 32; ++i) xt[i][j] = j < nb ? x[j * 32 + i] : 0.0f;
    if (!qw || nb >= NS) return qw;
    memset(qpad, 0, NS * 32 * sizeof(float));
    memcpy(qpad, qw, (size_t)nb * 32 * sizeof(float));
    return qpad;
}

// each block's value of largest magnitude (signed, the first of equal magnitudes) and that magnitude
static inline __attribute__((always_inline)) void signed_max32(float xt[32][NS], float *mx, float *amax) {
    for (int j = 0; j < NS; ++j) { mx[j] = 0; amax[j] = 0; }
    for (int i = 0; i < 32; ++i)
        for (int j = 0; j < NS; ++j) {
            float ax = fabsf(xt[i][j]);
            int bigger = ax > amax[j];
            amax[j] = bigger ? ax : amax[j];
            mx[j] = bigger ? xt[i][j] : mx[j];
        }
}

KD_CLONES void kd_iq4nl_16(const float *x, int nb, const float *qw, float *scales, uint8_t *L, int portable) {
    float xt[32][NS], wt[32][NS], mx[NS], amax[NS], id[NS], sumqx[NS], sumq2[NS], d[NS], best[NS];
    int live[NS];
    float qpad[NS * 32];
    qw = load_blocks32(x, nb, qw, xt, qpad);
    if (qw) {
        // ggml's weights with an importance matrix: qw · √(σ² + x²), σ² = 2/32 · Σ x² over the block (summed in order)
        float sigma2[NS];
        for (int j = 0; j < NS; ++j) sigma2[j] = 0;
        for (int i = 0; i < 32; ++i)
            for (int j = 0; j < NS; ++j) sigma2[j] += xt[i][j] * xt[i][j];
        for (int j = 0; j < NS; ++j) sigma2[j] *= 2.f / 32;
        for (int i = 0; i < 32; ++i)
            for (int j = 0; j < NS; ++j) wt[i][j] = qw[j * 32 + i] * sqrtf(sigma2[j] + xt[i][j] * xt[i][j]);
    } else {
        for (int i = 0; i < 32; ++i)
            for (int j = 0; j < NS; ++j) wt[i][j] = xt[i][j] * xt[i][j];
    }
    signed_max32(xt, mx, amax);
    for (int j = 0; j < NS; ++j) {
        live[j] = !(amax[j] < 1e-15f);
        mx[j] = live[j] ? mx[j] : 1.0f;  // dead lanes are answered below; keep them finite
    }
    int32_t lt[32][NS];
#if defined(__x86_64__)
    if (!portable && __builtin_cpu_supports("avx512f")) {
        __mmask16 lm = 0;
        for (int j = 0; j < NS; ++j) lm |= (__mmask16)(live[j] << j);
        iq4nl_16_avx512(xt, wt, mx, lm, d, lt);
    } else
#endif
    {
        // pass 0: the scale from the value of largest magnitude; passes 1…15: the trials −7…7 (all inline: a helper
        // function would be compiled for the baseline CPU, not for the clone calling it)
        for (int pass = 0; pass < 16; ++pass) {
            for (int j = 0; j < NS; ++j) {
                float d0 = -mx[j] / -127.0f;
                id[j] = pass == 0 ? 1 / d0 : (float)(pass - 8 - 127) / mx[j];
                sumqx[j] = 0; sumq2[j] = 0;
            }
            for (int i = 0; i < 32; ++i)
                for (int j = 0; j < NS; ++j) {
                    float al = id[j] * xt[i][j], q = -127;
                    for (int k = 0; k < 15; ++k) q += al >= iq4_mid[k] ? iq4_step[k] : 0.0f;
                    sumqx[j] += wt[i][j] * q * xt[i][j];
                    sumq2[j] += wt[i][j] * q * q;
                }
            for (int j = 0; j < NS; ++j) {
                float dt = sumqx[j] / (sumq2[j] > 0 ? sumq2[j] : 1.0f);
                if (pass == 0) {
                    d[j] = sumq2[j] > 0 ? sumqx[j] / sumq2[j] : 0.0f;  // 0 only where every weight is (an importance of 0)
                    best[j] = d[j] * sumqx[j];
                } else {
                    int take = sumq2[j] > 0 && sumqx[j] * sumqx[j] > best[j] * sumq2[j];
                    d[j] = take ? dt : d[j];
                    best[j] = take ? dt * sumqx[j] : best[j];
                }
            }
        }
        // the indices are picked again against the chosen scale (a dead lane's scale is 0: al = 0, index 8, as ggml's)
        for (int j = 0; j < NS; ++j) {
            d[j] = live[j] ? d[j] : 0.0f;
            id[j] = d[j] != 0 ? 1 / d[j] : 0.0f;
        }
        for (int i = 0; i < 32; ++i)
            for (int j = 0; j < NS; ++j) {
                float al = id[j] * xt[i][j];
                int l = 0;
                for (int k = 0; k < 15; ++k) l += al >= iq4_mid[k];
                lt[i][j] = l;
            }
    }
    for (int j = 0; j < nb; ++j) {
        scales[j] = d[j];
        for (int i = 0; i < 32; ++i) L[j * 32 + i] = (uint8_t)lt[i][j];
    }
}

KD_CLONES void kd_iq4nl_dequant_16(const float *x, int nb, const float *d, const uint8_t *L, float *out, float *mask) {
    for (int j = 0; j < nb; ++j)
        for (int i = 0; i < 32; ++i) {
            int l = L[j * 32 + i];
            float xv = x[j * 32 + i], q = d[j] * iq4_levels[l];
            if (mask) {
                int end = l == 0 || l == 15;
                int beyond = (q > 0 && xv > q) || (q < 0 && xv < q);
                mask[j * 32 + i] = end && beyond ? 0.0f : 1.0f;
            }
            out[j * 32 + i] = q;
        }
}

// ggml's nearest_int as a float: (f + 1.5·2²³) − 1.5·2²³ is f rounded half to even (|f| < 2²²), the same integer
// nearest() returns; clamped in floats, so that the trial loops stay in vector registers
static inline float nearestf_clamped(float f, float lo, float hi) {
    float r = (f + 12582912.f) - 12582912.f;
    return r < lo ? lo : r > hi ? hi : r;
}

KD_CLONES void kd_qx_weighted_16(const float *x, int nb, int nmax, const float *qw, const float *sigma2, float *scales, int8_t *L) {
    float xt[32][NS], wt[32][NS], wx[32][NS], mx[NS], amax[NS], sumlx[NS], suml2[NS], scale[NS], best[NS], iscale[NS], s2[NS];
    float lev[32][NS];
    float qpad[NS * 32];
    const float lo = (float)-nmax, hi = (float)(nmax - 1), fn = (float)nmax;
    qw = load_blocks32(x, nb, qw, xt, qpad);
    for (int j = 0; j < NS; ++j) s2[j] = j < nb ? sigma2[j] : 0.0f;
    // ggml's weights with an importance matrix: qw · √(σ² + x²), σ² the mean square of the block's whole row; w·x is
    // the first product of ggml's w*x[i]*l in every trial
    for (int i = 0; i < 32; ++i)
        for (int j = 0; j < NS; ++j) {
            wt[i][j] = qw[j * 32 + i] * sqrtf(s2[j] + xt[i][j] * xt[i][j]);
            wx[i][j] = wt[i][j] * xt[i][j];
        }
    signed_max32(xt, mx, amax);
    for (int j = 0; j < NS; ++j) {
        mx[j] = amax[j] < 1e-15f ? 1.0f : mx[j];  // dead lanes are answered below; keep them finite
        iscale[j] = -fn / mx[j];
        sumlx[j] = 0; suml2[j] = 0;
    }
    for (int i = 0; i < 32; ++i)
        for (int j = 0; j < NS; ++j) {
            float l = nearestf_clamped(iscale[j] * xt[i][j], lo, hi);
            lev[i][j] = l;
            sumlx[j] += wx[i][j] * l;
            suml2[j] += wt[i][j] * l * l;
        }
    for (int j = 0; j < NS; ++j) {
        scale[j] = suml2[j] != 0 ? sumlx[j] / suml2[j] : 0.0f;
        best[j] = scale[j] * sumlx[j];
    }
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        for (int j = 0; j < NS; ++j) { iscale[j] = -(fn + 0.1f * is) / mx[j]; sumlx[j] = 0; suml2[j] = 0; }
        for (int i = 0; i < 32; ++i)
            for (int j = 0; j < NS; ++j) {
                float l = nearestf_clamped(iscale[j] * xt[i][j], lo, hi);
                sumlx[j] += wx[i][j] * l;
                suml2[j] += wt[i][j] * l * l;
            }
        int take[NS], any = 0;
        for (int j = 0; j < NS; ++j) { take[j] = suml2[j] > 0 && sumlx[j] * sumlx[j] > best[j] * suml2[j]; any |= take[j]; }
        if (!any) continue;
        for (int i = 0; i < 32; ++i)
            for (int j = 0; j < NS; ++j) lev[i][j] = take[j] ? nearestf_clamped(iscale[j] * xt[i][j], lo, hi) : lev[i][j];
        for (int j = 0; j < NS; ++j) {
            if (take[j]) { scale[j] = sumlx[j] / suml2[j]; best[j] = scale[j] * sumlx[j]; }
        }
    }
    for (int j = 0; j < nb; ++j) {
        int zero = amax[j] < 1e-15f;
        scales[j] = zero ? 0.0f : scale[j];
        for (int i = 0; i < 32; ++i) L[j * 32 + i] = zero ? 0 : (int8_t)((int)lev[i][j] + nmax);
    }
}

KD_CLONES void kd_qx_dequant_16(const float *x, int nb, int nmax, const float *d, const int8_t *L, float *out, float *mask) {
    for (int j = 0; j < nb; ++j)
        for (int i = 0; i < 32; ++i) {
            int l = L[j * 32 + i];
            float xv = x[j * 32 + i], q = (float)(l - nmax) * d[j];
            if (mask) {
                int end = l == 0 || l == 2 * nmax - 1;
                int beyond = (q > 0 && xv > q) || (q < 0 && xv < q);
                mask[j * 32 + i] = end && beyond ? 0.0f : 1.0f;
            }
            out[j * 32 + i] = q;
        }
}
