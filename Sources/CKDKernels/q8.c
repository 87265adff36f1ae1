// 8-bit integer products of a GGUF matrix and quantized activations (kd_q8.h): packing, activation quantization, and
// the AVX-512 VNNI kernel (a 4-row × 32-column register tile, integer sums per block of 32, then scaled into Floats).
#include "kd_q8.h"
#include "kd_rows.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#define Q8_MR 4
#define Q8_NR 32
#define Q8_BLOCK_BYTES 1280

int kd_cpu_has_avx512vnni(void) {
#if defined(__x86_64__)
    if (!kd_cpu_has_avx512()) return 0;
    unsigned int a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return ((b >> 30) & 1u) && ((c >> 11) & 1u);  // AVX512BW, AVX512_VNNI
#else
    return 0;
#endif
}

size_t kd_q8_panel_bytes(int n, int k) { return (size_t)((n + Q8_NR - 1) / Q8_NR) * (size_t)(k / 32) * Q8_BLOCK_BYTES; }

/// IEEE half to float, exactly (subnormals, infinities and NaN included).
static float kd_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, f = h & 0x3ffu, u;
    if (e == 0) {
        float v = (float)f * 5.9604644775390625e-8f;  // f · 2^−24
        memcpy(&u, &v, 4);
        u |= sign;
    } else if (e == 31) {
        u = sign | 0x7f800000u | (f << 13);
    } else {
        u = sign | ((e + 112) << 23) | (f << 13);
    }
    float r;
    memcpy(&r, &u, 4);
    return r;
}

static inline uint16_t kd_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

int kd_q8_supported(int type) { return type == 2 || type == 3 || type == 6 || type == 7 || type == 8 || type == 12 || type == 13; }

/// Sub-block j's 6-bit scale and minimum of a Q4_K / Q5_K block's 12 scale bytes (ggml's get_scale_min_k4).
static inline void kd_scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

int kd_q8_pack_ggml(int type, int n, int k, const void *data, size_t rowBytes, uint8_t *out) {
    if (n <= 0 || k <= 0 || k % 32 != 0) return 0;
    size_t blockBytes;
    switch (type) {
    case 2: blockBytes = 18; break;
    case 3: blockBytes = 20; break;
    case 6: blockBytes = 22; break;
    case 7: blockBytes = 24; break;
    case 8: blockBytes = 34; break;
    case 12: blockBytes = 144; break;  // per 256: 8 sub-blocks of 32
    case 13: blockBytes = 176; break;
    default: return 0;
    }
    if ((type == 12 || type == 13) && k % 256 != 0) return 0;
    const int nb = k / 32, panels = (n + Q8_NR - 1) / Q8_NR;
    for (int p = 0; p < panels; p++) {
        for (int b = 0; b < nb; b++) {
            uint8_t *blk = out + ((size_t)p * nb + b) * Q8_BLOCK_BYTES;
            float *dv = (float *)(void *)(blk + 1024), *mv = dv + 32;
            for (int jj = 0; jj < Q8_NR; jj++) {
                int j = p * Q8_NR + jj;
                uint8_t u[32];
                float d = 0, m = 0;
                if (j >= n) {
                    memset(u, 0, 32);
                } else {
                    const int kq = type == 12 || type == 13;  // k-quants: this 32-block is sub-block b % 8 of block b / 8
                    const uint8_t *x = (const uint8_t *)data + (size_t)j * rowBytes + (size_t)(kq ? b / 8 : b) * blockBytes;
                    switch (type) {
                    case 12:
                    case 13: {  // Q4_K / Q5_K: f16 d, f16 dmin, 12 scale bytes, (Q5_K: 32 bytes of high bits,) 128 nibble bytes;
                                // sub-block s: w = (d·sc)·q − dmin·m, as ggml's dequantize_row_q4_K / _q5_K compute them
                        const int sub = b % 8, pair = sub / 2;
                        int sc, mn;
                        kd_scale_min_k4(sub, x + 4, &sc, &mn);
                        const float dd = kd_f16(kd_u16(x)), dmin = kd_f16(kd_u16(x + 2));
                        d = dd * (float)sc;
                        m = -(dmin * (float)mn);
                        const uint8_t *qs = x + (type == 12 ? 16 : 48) + 32 * pair;
                        for (int i = 0; i < 32; i++) u[i] = sub % 2 ? qs[i] >> 4 : qs[i] & 0x0f;
                        if (type == 13) {
                            const uint8_t bit = (uint8_t)(1u << sub);  // sub-block s's high bits: bit s of qh[i]
                            for (int i = 0; i < 32; i++) u[i] |= (x[16 + i] & bit) ? 16 : 0;
                        }
                        break;
                    }
                    case 8:  // Q8_0: f16 d, 32 signed q; u = q + 128
                        d = kd_f16(kd_u16(x));
                        for (int i = 0; i < 32; i++) u[i] = (uint8_t)(x[2 + i] ^ 0x80u);
                        m = -128.0f * d;
                        break;
                    case 2:  // Q4_0: f16 d, nibbles (element i < 16 low nibble of byte i, i ≥ 16 high nibble of byte i − 16)
                        d = kd_f16(kd_u16(x));
                        for (int i = 0; i < 16; i++) { u[i] = x[2 + i] & 0x0f; u[i + 16] = x[2 + i] >> 4; }
                        m = -8.0f * d;
                        break;
                    case 3:  // Q4_1: f16 d, f16 m, nibbles
                        d = kd_f16(kd_u16(x));
                        m = kd_f16(kd_u16(x + 2));
                        for (int i = 0; i < 16; i++) { u[i] = x[4 + i] & 0x0f; u[i + 16] = x[4 + i] >> 4; }
                        break;
                    case 6:
                    case 7: {  // Q5_0: f16 d, 32-bit high bits, nibbles (u − 16); Q5_1: f16 d, f16 m, high bits, nibbles
                        int off = type == 6 ? 2 : 4;
                        d = kd_f16(kd_u16(x));
                        m = type == 6 ? -16.0f * d : kd_f16(kd_u16(x + 2));
                        uint32_t qh = (uint32_t)x[off] | ((uint32_t)x[off + 1] << 8) | ((uint32_t)x[off + 2] << 16) | ((uint32_t)x[off + 3] << 24);
                        const uint8_t *qs = x + off + 4;
                        for (int i = 0; i < 16; i++) {
                            u[i] = (uint8_t)((qs[i] & 0x0f) | (((qh >> i) & 1u) << 4));
                            u[i + 16] = (uint8_t)((qs[i] >> 4) | (((qh >> (i + 16)) & 1u) << 4));
                        }
                        break;
                    }
                    }
                }
                for (int q = 0; q < 8; q++) memcpy(blk + (size_t)q * 128 + (size_t)jj * 4, u + 4 * q, 4);
                dv[jj] = d;
                mv[jj] = m;
            }
        }
    }
    return 1;
}

/// 1/d, or 0 where d is 0 or so small (subnormal) that 1/d overflows: such a block quantizes to zeros.
static inline float kd_q8_inverse(float d) {
    const float id = d != 0 ? 1.0f / d : 0.0f;
    return id <= 3.4028234663852886e38f ? id : 0.0f;
}

void kd_q8_quantize_rows_ref(int m, int k, const float *a, ptrdiff_t lda, int8_t *qa, float *da, float *sa) {
    const int nb = k / 32;
    for (int i = 0; i < m; i++) {
        for (int b = 0; b < nb; b++) {
            const float *x = a + (ptrdiff_t)i * lda + b * 32;
            float amax = 0;
            for (int t = 0; t < 32; t++) { float v = fabsf(x[t]); amax = v > amax ? v : amax; }
            const float d = amax / 127.0f, id = kd_q8_inverse(d);
            int s = 0;
            for (int t = 0; t < 32; t++) {
                int q = (int)nearbyintf(x[t] * id);
                qa[(size_t)i * k + b * 32 + t] = (int8_t)q;
                s += q;
            }
            da[(size_t)i * nb + b] = d;
            sa[(size_t)i * nb + b] = d * (float)s;
        }
    }
}

#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vnni"))), apply_to = function)

void kd_q8_quantize_rows_avx512(int m, int k, const float *a, ptrdiff_t lda, int8_t *qa, float *da, float *sa) {
    const int nb = k / 32;
    for (int i = 0; i < m; i++) {
        for (int b = 0; b < nb; b++) {
            const float *x = a + (ptrdiff_t)i * lda + b * 32;
            const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
            // the max of |x| (max is exact, so any order gives the scalar loop's value; NaN is not expected here)
            const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
            const float d = amax / 127.0f, id = kd_q8_inverse(d);
            const __m512 vid = _mm512_set1_ps(id);
            // round to nearest even (the MXCSR default, as nearbyintf)
            const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
            _mm_storeu_si128((__m128i *)(void *)(qa + (size_t)i * k + b * 32), _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(void *)(qa + (size_t)i * k + b * 32 + 16), _mm512_cvtepi32_epi8(q1));
            da[(size_t)i * nb + b] = d;
            sa[(size_t)i * nb + b] = d * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        }
    }
}

/// The Q8_MR × 32 tile at rows qa (row stride k) over nb blocks: out[i][j] = Σ_b d·da·Σ u·qa + m·sa, block by block.
static inline __attribute__((always_inline)) void q8_tile(int nb, int k, const int8_t *qa, const float *da, const float *sa,
                                                        const uint8_t *panel, __m512 acc[Q8_MR][2]) {
    for (int i = 0; i < Q8_MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *wb = panel + (size_t)b * Q8_BLOCK_BYTES;
        __m512i s[Q8_MR][2];
        for (int i = 0; i < Q8_MR; i++) s[i][0] = s[i][1] = _mm512_setzero_si512();
        for (int q = 0; q < 8; q++) {
            const __m512i w0 = _mm512_loadu_si512(wb + q * 128), w1 = _mm512_loadu_si512(wb + q * 128 + 64);
            for (int i = 0; i < Q8_MR; i++) {
                int32_t x;
                memcpy(&x, qa + (size_t)i * k + b * 32 + q * 4, 4);
                const __m512i av = _mm512_set1_epi32(x);
                s[i][0] = _mm512_dpbusd_epi32(s[i][0], w0, av);
                s[i][1] = _mm512_dpbusd_epi32(s[i][1], w1, av);
            }
        }
        const float *sc = (const float *)(const void *)(wb + 1024);
        const __m512 d0 = _mm512_loadu_ps(sc), d1 = _mm512_loadu_ps(sc + 16), m0 = _mm512_loadu_ps(sc + 32), m1 = _mm512_loadu_ps(sc + 48);
        for (int i = 0; i < Q8_MR; i++) {
            const __m512 dai = _mm512_set1_ps(da[(size_t)i * (k / 32) + b]), sai = _mm512_set1_ps(sa[(size_t)i * (k / 32) + b]);
            acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][0]), _mm512_mul_ps(d0, dai), acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][1]), _mm512_mul_ps(d1, dai), acc[i][1]);
            acc[i][0] = _mm512_fmadd_ps(m0, sai, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(m1, sai, acc[i][1]);
        }
    }
}

void kd_gemm_q8_avx512vnni(int m, int n, int k, const int8_t *qa, const float *da, const float *sa, const uint8_t *panels,
                           float *c, ptrdiff_t ldc, int accumulate) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    const int nb = k / 32, panelCount = (n + Q8_NR - 1) / Q8_NR, full = m / Q8_MR * Q8_MR;
    // the last rows (m % 4) through a zero-padded copy of them, in this thread's buffer (grown as needed, kept)
    static _Thread_local int8_t *tq;
    static _Thread_local float *tds;
    static _Thread_local int tk;
    if (m > full && tk < k) {
        free(tq);
        free(tds);
        tq = malloc((size_t)Q8_MR * k);
        tds = malloc(2 * sizeof(float) * (size_t)Q8_MR * nb);
        if (!tq || !tds) abort();
        tk = k;
    }
    if (m > full) {
        memset(tq, 0, (size_t)Q8_MR * k);
        memset(tds, 0, 2 * sizeof(float) * (size_t)Q8_MR * nb);
        memcpy(tq, qa + (size_t)full * k, (size_t)(m - full) * k);
        memcpy(tds, da + (size_t)full * nb, (size_t)(m - full) * nb * sizeof(float));
        memcpy(tds + Q8_MR * nb, sa + (size_t)full * nb, (size_t)(m - full) * nb * sizeof(float));
    }
    for (int p = 0; p < panelCount; p++) {
        const uint8_t *panel = panels + (size_t)p * nb * Q8_BLOCK_BYTES;
        const int j0 = p * Q8_NR, cols = n - j0 < Q8_NR ? n - j0 : Q8_NR;
        const __mmask16 k0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1), k1 = cols >= 32 ? 0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
        for (int i0 = 0; i0 < m; i0 += Q8_MR) {
            __m512 acc[Q8_MR][2];
            const int rows = m - i0 < Q8_MR ? m - i0 : Q8_MR;
            if (rows == Q8_MR) q8_tile(nb, k, qa + (size_t)i0 * k, da + (size_t)i0 * nb, sa + (size_t)i0 * nb, panel, acc);
            else q8_tile(nb, k, tq, tds, tds + Q8_MR * nb, panel, acc);
            for (int i = 0; i < rows; i++) {
                float *cp = c + (ptrdiff_t)(i0 + i) * ldc + j0;
                __m512 r0 = acc[i][0], r1 = acc[i][1];
                if (accumulate) {
                    r0 = _mm512_add_ps(r0, _mm512_maskz_loadu_ps(k0, cp));
                    r1 = _mm512_add_ps(r1, _mm512_maskz_loadu_ps(k1, cp + 16));
                }
                _mm512_mask_storeu_ps(cp, k0, r0);
                _mm512_mask_storeu_ps(cp + 16, k1, r1);
            }
        }
    }
}
#pragma clang attribute pop
#else
void kd_q8_quantize_rows_avx512(int m, int k, const float *a, ptrdiff_t lda, int8_t *qa, float *da, float *sa) { abort(); }
void kd_gemm_q8_avx512vnni(int m, int n, int k, const int8_t *qa, const float *da, const float *sa, const uint8_t *panels,
                           float *c, ptrdiff_t ldc, int accumulate) {
    abort();
}
#endif
