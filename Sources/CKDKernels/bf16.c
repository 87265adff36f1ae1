// bf16 GEMM: rounding, CPU detection, packing, and the blocked kernel (bf16_kernel_body.h) built twice —
// with AVX512-BF16 intrinsics, and against a portable emulation of them.
#include "kd_bf16.h"
#include "kd_rows.h"
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#define KD_MR 8
#define KD_NR 32
#define KD_KC 256
#define KD_MC 96
#define KD_NC 512

uint16_t kd_bf16_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // NaN: keep sign and payload top, quiet
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even (overflow carries into inf, as it should)
    return (uint16_t)(u >> 16);
}

static inline float kd_f32_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void kd_bf16_round_f32(const float *in, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = kd_f32_from_bf16(kd_bf16_from_f32(in[i]));
}

int kd_cpu_has_avx512bf16(void) {
#if defined(__x86_64__)
    if (!kd_cpu_has_avx512()) return 0;  // AVX512F with ZMM state enabled by the OS (rows.c)
    unsigned int a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 30))) return 0;  // AVX512BW
    if (a < 1 || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1u;  // AVX512_BF16
#else
    return 0;
#endif
}

/// This thread's packing buffers (A: MC × KC, B: NC × KC, and a whole A of `bigcount` bf16 values, grown as needed),
/// allocated on its first GEMM and kept: a training step makes hundreds of GEMM calls on the same few threads, and
/// fresh buffers would be new pages every call.
static void kd_pack_buffers(uint16_t **a, uint16_t **b, uint16_t **big, size_t bigcount) {
    static _Thread_local uint16_t *apack, *bpack, *abig;
    static _Thread_local size_t bigcap;
    if (!apack) {
        void *pa = NULL, *pb = NULL;
        if (posix_memalign(&pa, 64, (size_t)KD_MC * KD_KC * 2) != 0 || posix_memalign(&pb, 64, (size_t)KD_NC * KD_KC * 2) != 0) abort();
        apack = pa;
        bpack = pb;
    }
    *a = apack;
    *b = bpack;
    if (bigcap < bigcount) {
        free(abig);
        void *p = NULL;
        if (posix_memalign(&p, 64, bigcount * 2) != 0) abort();
        abig = p;
        bigcap = bigcount;
    }
    *big = abig;
}

static inline uint32_t kd_bf16_pair(float even, float odd) {
    return (uint32_t)kd_bf16_from_f32(even) | ((uint32_t)kd_bf16_from_f32(odd) << 16);
}

// ---- portable emulation: vdpbf16ps per Intel's pseudo-code (odd pair element first, then even; each sum rounded) ----
typedef struct { float f[16]; } kd_ev;
typedef struct { uint16_t h[32]; } kd_eb;
static inline kd_ev kd_e_zero(void) { kd_ev v; memset(&v, 0, sizeof v); return v; }
static inline kd_eb kd_e_load(const uint16_t *p) { kd_eb v; memcpy(v.h, p, 64); return v; }
static inline kd_eb kd_e_bcast(const uint16_t *p) {
    kd_eb v;
    for (int l = 0; l < 16; l++) { v.h[2 * l] = p[0]; v.h[2 * l + 1] = p[1]; }
    return v;
}
static inline kd_ev kd_e_dp(kd_ev acc, kd_eb a, kd_eb b) {
    for (int l = 0; l < 16; l++) {
        float t = acc.f[l];
        t = t + kd_f32_from_bf16(a.h[2 * l + 1]) * kd_f32_from_bf16(b.h[2 * l + 1]);
        t = t + kd_f32_from_bf16(a.h[2 * l]) * kd_f32_from_bf16(b.h[2 * l]);
        acc.f[l] = t;
    }
    return acc;
}
static inline void kd_e_store(float *p, kd_ev v) { memcpy(p, v.f, 64); }
static inline kd_ev kd_e_loadf(const float *p) { kd_ev v; memcpy(v.f, p, 64); return v; }
static inline kd_ev kd_e_set1(float x) { kd_ev v; for (int l = 0; l < 16; l++) v.f[l] = x; return v; }
static inline kd_ev kd_e_mul(kd_ev a, kd_ev b) { for (int l = 0; l < 16; l++) a.f[l] *= b.f[l]; return a; }
static inline kd_ev kd_e_fma(kd_ev a, kd_ev b, kd_ev c) { for (int l = 0; l < 16; l++) c.f[l] = fmaf(a.f[l], b.f[l], c.f[l]); return c; }

#define KD_NAME(x) x##_emulated
#define KD_VF kd_ev
#define KD_VB kd_eb
#define KD_ZERO() kd_e_zero()
#define KD_LOAD_B(p) kd_e_load(p)
#define KD_BCAST_PAIR(p) kd_e_bcast(p)
#define KD_DP(acc, a, b) kd_e_dp(acc, a, b)
#define KD_STORE(p, v) kd_e_store(p, v)
#define KD_LOADF(p) kd_e_loadf(p)
#define KD_SET1(x) kd_e_set1(x)
#define KD_MUL(a, b) kd_e_mul(a, b)
#define KD_FMA(a, b, c) kd_e_fma(a, b, c)
#define KD_PACK(x, rs, cs, rows, depth, width, out) pack_emulated(x, rs, cs, rows, depth, width, out)
#include "bf16_kernel_body.h"
#undef KD_NAME
#undef KD_VF
#undef KD_VB
#undef KD_ZERO
#undef KD_LOAD_B
#undef KD_BCAST_PAIR
#undef KD_DP
#undef KD_STORE
#undef KD_LOADF
#undef KD_SET1
#undef KD_MUL
#undef KD_FMA
#undef KD_PACK
#undef KD_AT
#undef KD_A_BLOCK
#undef KD_BT
#undef KD_B_BLOCK
#undef KD_TILE_LOOP

// ---- AVX512-BF16: the same body with the instructions ----
#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512bf16,f16c"))), apply_to = function)
#define KD_NAME(x) x##_avx512
#define KD_VF __m512
#define KD_VB __m512bh
#define KD_ZERO() _mm512_setzero_ps()
#define KD_LOAD_B(p) ((__m512bh)_mm512_loadu_si512((const void *)(p)))
#define KD_BCAST_PAIR(p) ({ int32_t pair_; memcpy(&pair_, (p), 4); (__m512bh)_mm512_set1_epi32(pair_); })
#define KD_DP(acc, a, b) _mm512_dpbf16_ps(acc, a, b)
#define KD_STORE(p, v) _mm512_storeu_ps(p, v)
#define KD_LOADF(p) _mm512_loadu_ps(p)
#define KD_SET1(x) _mm512_set1_ps(x)
#define KD_MUL(a, b) _mm512_mul_ps(a, b)
#define KD_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
static void pack_fast_avx512(const float *x, ptrdiff_t rs, ptrdiff_t cs, int rows, int depth, int width, uint16_t *out16);
#define KD_PACK(x, rs, cs, rows, depth, width, out) pack_fast_avx512(x, rs, cs, rows, depth, width, out)
#include "bf16_kernel_body.h"

/// kd_bf16_from_f32 on 16 lanes (the same bits: round to nearest even, NaN kept quiet), in the low half of each lane.
static inline __m512i kd_v_bf16(__m512i u) {
    const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i bias = _mm512_add_epi32(_mm512_and_si512(hi, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7fff));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
    return _mm512_mask_blend_epi32(nan, r, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
}

/// 16 pairs from 32 consecutive floats: lane q = bf16(p[2q]) | bf16(p[2q + 1]) << 16.
static inline __m512i kd_v_pairs(const float *p) {
    __m256i lo = _mm512_cvtepi32_epi16(kd_v_bf16(_mm512_loadu_si512((const void *)p)));
    __m256i hi = _mm512_cvtepi32_epi16(kd_v_bf16(_mm512_loadu_si512((const void *)(p + 16))));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/// Transposes the 16 × 16 matrix of 32-bit lanes r[i][j] in place (r[j][i] after).
static inline void kd_transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 8; i++) {  // 32-bit interleave of row pairs, within 128-bit blocks
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // u[g][col]: block b holds column 4b + col of rows 4g ... 4g + 3
    __m512i u[4][4];
    for (int g = 0; g < 4; g++) {
        u[g][0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[g][1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[g][2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[g][3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    for (int col = 0; col < 4; col++) {  // 4 × 4 transpose of 128-bit blocks: out[4b + col] block g = u[g][col] block b
        __m512i s0 = _mm512_shuffle_i32x4(u[0][col], u[1][col], 0x44), s1 = _mm512_shuffle_i32x4(u[0][col], u[1][col], 0xee);
        __m512i s2 = _mm512_shuffle_i32x4(u[2][col], u[3][col], 0x44), s3 = _mm512_shuffle_i32x4(u[2][col], u[3][col], 0xee);
        r[col] = _mm512_shuffle_i32x4(s0, s2, 0x88);
        r[4 + col] = _mm512_shuffle_i32x4(s0, s2, 0xdd);
        r[8 + col] = _mm512_shuffle_i32x4(s1, s3, 0x88);
        r[12 + col] = _mm512_shuffle_i32x4(s1, s3, 0xdd);
    }
}

/// Stores 16 pairs for rows r0 ... r0 + 15 (r0 a multiple of 16) at depth pair q of panels `width` (8 or 32) wide.
static inline void kd_store_rows16(uint32_t *out, int kp, int width, int r0, int q, __m512i v) {
    if (width == 32) {
        _mm512_storeu_si512((void *)(out + (size_t)(r0 & ~31) * kp + (size_t)q * 32 + (r0 & 31)), v);
    } else {
        uint32_t *p0 = out + (size_t)r0 * kp + (size_t)q * 8;
        _mm256_storeu_si256((__m256i *)(void *)p0, _mm512_castsi512_si256(v));
        _mm256_storeu_si256((__m256i *)(void *)(p0 + (size_t)8 * kp), _mm512_extracti64x4_epi64(v, 1));
    }
}

/// KD_NAME(pack)'s output with AVX-512 where the source allows (16 rows × 32 depth tiles when depth is contiguous,
/// 16 contiguous rows per depth pair otherwise, panels 8 or 32 wide), the generic routine for the rest.
static void pack_fast_avx512(const float *x, ptrdiff_t rs, ptrdiff_t cs, int rows, int depth, int width, uint16_t *out16) {
    int kp = (depth + 1) / 2, rows16 = rows & ~15;
    uint32_t *out = (uint32_t *)(void *)out16;
    if ((width != 8 && width != 32) || rows16 == 0 || (cs != 1 && rs != 1)) {
        pack_avx512(x, rs, cs, rows, depth, width, out16);
        return;
    }
    if (cs == 1) {
        int q16 = (depth / 2) & ~15;
        for (int r0 = 0; r0 < rows16; r0 += 16) {
            for (int q0 = 0; q0 < q16; q0 += 16) {
                __m512i v[16];
                for (int i = 0; i < 16; i++) v[i] = kd_v_pairs(x + (ptrdiff_t)(r0 + i) * rs + 2 * q0);
                kd_transpose16(v);
                for (int j = 0; j < 16; j++) kd_store_rows16(out, kp, width, r0, q0 + j, v[j]);
            }
            for (int r = r0; r < r0 + 16; r++) {  // the depth past the 32-wide tiles
                const float *src = x + (ptrdiff_t)r * rs;
                uint32_t *dst = out + (size_t)(r / width) * width * kp + r % width;
                for (int q = q16; q < kp; q++) dst[(size_t)q * width] = kd_bf16_pair(src[2 * q], 2 * q + 1 < depth ? src[2 * q + 1] : 0);
            }
        }
    } else {
        for (int q = 0; q < kp; q++) {
            const float *s0 = x + (ptrdiff_t)(2 * q) * cs, *s1 = s0 + cs;
            int odd = 2 * q + 1 < depth;
            for (int r0 = 0; r0 < rows16; r0 += 16) {
                __m512i e = kd_v_bf16(_mm512_loadu_si512((const void *)(s0 + r0)));
                __m512i o = odd ? kd_v_bf16(_mm512_loadu_si512((const void *)(s1 + r0))) : _mm512_setzero_si512();
                kd_store_rows16(out, kp, width, r0, q, _mm512_or_si512(e, _mm512_slli_epi32(o, 16)));
            }
        }
    }
    // rows past the last 16 (and the zero padding of their panel) by the generic routine, on their own panel
    if (rows16 < rows) {
        int r0 = rows16 / width * width;  // the panel holding row rows16 (rows16 is a multiple of 16, so of 8)
        if (width == 32 && r0 < rows16) {
            // rows r0 ..< rows16 of that panel are done; fill the rest row by row
            uint32_t *panel = out + (size_t)r0 * kp;
            for (int r = rows16; r < rows; r++) {
                uint32_t *dst = panel + (r - r0);
                for (int q = 0; q < kp; q++) {
                    const float *e = x + (ptrdiff_t)r * rs + (ptrdiff_t)(2 * q) * cs;
                    dst[(size_t)q * width] = kd_bf16_pair(e[0], 2 * q + 1 < depth ? e[cs] : 0);
                }
            }
            for (int q = 0; q < kp; q++) for (int r = rows - r0; r < width; r++) panel[(size_t)q * width + r] = 0;
        } else {
            pack_avx512(x + (ptrdiff_t)r0 * rs, rs, cs, rows - r0, depth, width, out16 + (size_t)r0 * kp * 2);
        }
    } else if (rows % width != 0) {
        // rows is a multiple of 16 but not of 32: zero the last panel's missing rows
        int r0 = rows / width * width;
        uint32_t *panel = out + (size_t)r0 * kp;
        for (int q = 0; q < kp; q++) for (int r = rows - r0; r < width; r++) panel[(size_t)q * width + r] = 0;
    }
}

// ---- AVX-512 FMA: the same sums with the bf16 values widened to f32 and multiplied by vfmadd231ps ----
// vdpbf16ps adds, per f32 lane, the product of the odd pair elements and then that of the even ones, each sum rounded
// to nearest even, with denormal inputs read as 0 and denormal results flushed (DAZ, FTZ). A product of two bf16
// values is exact in f32, so fma(odd, odd, acc) and then fma(even, even, ·) under MXCSR's DAZ and FTZ give the same
// bits. Where vdpbf16ps issues once per two cycles (Intel's Emerald Rapids, measured: 0.46 a cycle against two f32
// FMAs; Sapphire Rapids has the same core) this is up to twice the vdpbf16ps kernel's rate; on AMD's Zen 4/5 it is half.
// A and B blocks are widened once per block into this thread's buffers, as the vdpbf16ps kernel reads them packed: the
// tile loop broadcasts A's f32 values from memory and loads B's, so its vector ports do nothing but the FMAs (B widened
// in registers instead, once per depth pair for all MR rows, cost 4 of every 36 vector instructions).

/// `count` bf16 values (a multiple of 16) to f32: h → bits h << 16, the same layout.
static inline void kd_widen_bf16(const uint16_t *src, size_t count, float *dst) {
    for (size_t i = 0; i < count; i += 16) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(src + i)));
        _mm512_storeu_si512((void *)(dst + i), _mm512_slli_epi32(v, 16));
    }
}

/// This thread's f32 copy of a packed A block of `count` values (at most MC × KC, the body's largest A block).
static const float *kd_widen_a_block(const uint16_t *src, size_t count) {
    static _Thread_local float *buf;
    if (!buf) {
        void *p = NULL;
        if (posix_memalign(&p, 64, (size_t)KD_MC * KD_KC * sizeof(float)) != 0) abort();
        buf = p;
    }
    if (count > (size_t)KD_MC * KD_KC) abort();
    kd_widen_bf16(src, count, buf);
    return buf;
}

/// `count` values (a multiple of 64) of packed B micro-panels — per depth pair 32 columns' pairs, (even, odd) in each
/// 32-bit lane — to f32 in the FMA tile loop's order: per depth pair the odd elements of columns 0–15, their even
/// elements, then the same for columns 16–31 (each value at its own index: bf16 bits h → f32 bits h << 16).
static void kd_widen_b(const uint16_t *src, size_t count, float *dst) {
    const __m512i odd = _mm512_set1_epi32((int)0xffff0000u);
    for (size_t i = 0; i < count; i += 64) {
        const __m512i b0 = _mm512_loadu_si512((const void *)(src + i)), b1 = _mm512_loadu_si512((const void *)(src + i + 32));
        _mm512_store_si512((void *)(dst + i), _mm512_and_si512(b0, odd));
        _mm512_store_si512((void *)(dst + i + 16), _mm512_slli_epi32(b0, 16));
        _mm512_store_si512((void *)(dst + i + 32), _mm512_and_si512(b1, odd));
        _mm512_store_si512((void *)(dst + i + 48), _mm512_slli_epi32(b1, 16));
    }
}

/// This thread's f32 copy of a packed B block of `count` values (kd_widen_b; grown as needed: a GEMM's NC × KC block,
/// an attention call's keys or a depth block of its values).
static const float *kd_widen_b_block(const uint16_t *src, size_t count) {
    static _Thread_local float *buf;
    static _Thread_local size_t cap;
    if (cap < count) {
        free(buf);
        void *p = NULL;
        size_t want = count > (size_t)KD_NC * KD_KC ? count : (size_t)KD_NC * KD_KC;
        if (posix_memalign(&p, 64, want * sizeof(float)) != 0) abort();
        buf = p;
        cap = want;
    }
    kd_widen_b(src, count, buf);
    return buf;
}

#undef KD_NAME
#undef KD_AT
#undef KD_A_BLOCK
#undef KD_BT
#undef KD_B_BLOCK
#undef KD_TILE_LOOP
#define KD_NO_GENERIC_PACK  // KD_PACK stays pack_fast_avx512, the other vector macros the AVX-512 ones
#define KD_NAME(x) x##_fma
#define KD_AT float
#define KD_A_BLOCK(p, count) kd_widen_a_block(p, count)
#define KD_BT float
#define KD_B_BLOCK(p, count) kd_widen_b_block(p, count)
// The FMA tile loop: per depth pair, FETCH_B(p) declares B's four vectors b0o, b0e, b1o, b1e (the odd and even
// elements of the panel's two 16-column halves, as f32), then every row adds its odd products and then its even ones.
#define KD_FMA_TILE_LOOP(FETCH_B)                                                                               \
    __m512 acc[KD_MR][2];                                                                                       \
    for (int i = 0; i < KD_MR; i++) { acc[i][0] = _mm512_setzero_ps(); acc[i][1] = _mm512_setzero_ps(); }       \
    const unsigned int csr_ = _mm_getcsr();                                                                     \
    _mm_setcsr(csr_ | 0x8040u); /* DAZ and FTZ, as vdpbf16ps treats denormals */                               \
    for (int p = 0; p < kp; p++) {                                                                              \
        FETCH_B(p)                                                                                              \
        for (int i = 0; i < KD_MR; i++) {                                                                       \
            const float *a_ = ap + ((size_t)p * KD_MR + i) * 2;                                                 \
            const __m512 ae = _mm512_set1_ps(a_[0]), ao = _mm512_set1_ps(a_[1]);                                \
            acc[i][0] = _mm512_fmadd_ps(ae, b0e, _mm512_fmadd_ps(ao, b0o, acc[i][0]));                          \
            acc[i][1] = _mm512_fmadd_ps(ae, b1e, _mm512_fmadd_ps(ao, b1o, acc[i][1]));                          \
        }                                                                                                       \
    }                                                                                                           \
    _mm_setcsr(csr_);
// B widened once per block (kd_widen_b's order): four loads
#define KD_FMA_B_WIDE(p)                                                                                        \
    const float *b_ = bp + (size_t)(p) * KD_NR * 2;                                                             \
    const __m512 b0o = _mm512_load_ps(b_), b0e = _mm512_load_ps(b_ + 16);                                       \
    const __m512 b1o = _mm512_load_ps(b_ + 32), b1e = _mm512_load_ps(b_ + 48);
// B's packed bf16 pairs as they are, for a call of at most MR rows (it reads each panel once): widened in registers,
// once per depth pair for all the rows
#define KD_FMA_B_RAW(p)                                                                                         \
    const __m512i b0 = _mm512_loadu_si512((const void *)(bp + (size_t)(p) * KD_NR * 2));                        \
    const __m512i b1 = _mm512_loadu_si512((const void *)(bp + (size_t)(p) * KD_NR * 2 + 32));                   \
    const __m512i odd_ = _mm512_set1_epi32((int)0xffff0000u);                                                   \
    const __m512 b0o = _mm512_castsi512_ps(_mm512_and_si512(b0, odd_));                                         \
    const __m512 b0e = _mm512_castsi512_ps(_mm512_slli_epi32(b0, 16));                                          \
    const __m512 b1o = _mm512_castsi512_ps(_mm512_and_si512(b1, odd_));                                         \
    const __m512 b1e = _mm512_castsi512_ps(_mm512_slli_epi32(b1, 16));
#define KD_TILE_LOOP KD_FMA_TILE_LOOP(KD_FMA_B_WIDE)
#define KD_TILE_LOOP_RAW KD_FMA_TILE_LOOP(KD_FMA_B_RAW)
#include "bf16_kernel_body.h"
#undef KD_NO_GENERIC_PACK
#undef KD_NAME
#undef KD_AT
#undef KD_A_BLOCK
#undef KD_BT
#undef KD_B_BLOCK
#undef KD_TILE_LOOP
#undef KD_TILE_LOOP_RAW
#undef KD_FMA_TILE_LOOP
#undef KD_FMA_B_WIDE
#undef KD_FMA_B_RAW

int kd_bf16_fma_is_faster(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    return b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu;  // "GenuineIntel"
}

#include "rows_lanes.h"

/// Rows per block of kd_gemm_bf16_swiglu_avx512: its packed A block (rows × k, 442 KB at k = 576) stays in L2 while
/// the two weights' 32-column panels stream past it, and the block's gate and up sums (rows × 32 each) stay in cache.
#define KD_SWIGLU_MC 384

/// The fused gate/up GEMM and SwiGLU of kd_gemm_bf16_swiglu_avx512 / _fma: `fma` picks the tile loop.
static inline __attribute__((always_inline)) void kd_gemm_bf16_swiglu(int fma, int m, int f, int k, const float *a, ptrdiff_t lda,
                                                                     const uint16_t *apacked, const uint16_t *gate,
                                                                     const uint16_t *up, float *h, ptrdiff_t ldh) {
    if (m <= 0 || f <= 0 || k <= 0) return;
    const size_t mround = (size_t)((m + KD_MR - 1) / KD_MR * KD_MR), fround = (size_t)((f + KD_NR - 1) / KD_NR * KD_NR);
    uint16_t *apack, *bpack, *abig;
    kd_pack_buffers(&apack, &bpack, &abig, apacked ? 0 : mround * (size_t)((k + 1) / 2 * 2));
    if (apacked) abig = (uint16_t *)apacked;  // read only
    else for (int pc = 0; pc < k; pc += KD_KC) {
        int kc = k - pc < KD_KC ? k - pc : KD_KC;
        pack_fast_avx512(a + pc, lda, 1, m, kc, KD_MR, abig + mround * pc);
    }
    static _Thread_local float *sums[2];  // this thread's gate and up sums for a block of rows, allocated once
    static _Thread_local float *wide;     // the FMA loop's f32 copy of a block of rows' packed A (all depth blocks)
    static _Thread_local size_t widecap;
    static _Thread_local float *wideb;    // and of the two weights' 32-column panels of one depth block
    if (!sums[0]) {
        void *p = NULL, *q = NULL;
        if (posix_memalign(&p, 64, 2 * (size_t)KD_SWIGLU_MC * KD_NR * sizeof(float)) != 0) abort();
        if (posix_memalign(&q, 64, 2 * (size_t)KD_KC * KD_NR * sizeof(float)) != 0) abort();
        sums[0] = p;
        sums[1] = sums[0] + KD_SWIGLU_MC * KD_NR;
        wideb = q;
    }
    const size_t kround = (size_t)((k + 1) / 2 * 2);
    if (fma && widecap < (size_t)KD_SWIGLU_MC * kround) {
        free(wide);
        void *p = NULL;
        if (posix_memalign(&p, 64, (size_t)KD_SWIGLU_MC * kround * sizeof(float)) != 0) abort();
        wide = p;
        widecap = (size_t)KD_SWIGLU_MC * kround;
    }
    float tile[KD_MR * KD_NR];
    for (int ic = 0; ic < m; ic += KD_SWIGLU_MC) {
        int mc = m - ic < KD_SWIGLU_MC ? m - ic : KD_SWIGLU_MC;
        const size_t mcround = (size_t)((mc + KD_MR - 1) / KD_MR * KD_MR);
        if (fma) for (int pc = 0; pc < k; pc += KD_KC) {  // this block's rows of every depth block, widened once
            int kp = ((k - pc < KD_KC ? k - pc : KD_KC) + 1) / 2;
            kd_widen_bf16(abig + mround * pc + (size_t)ic * kp * 2, mcround * kp * 2, wide + mcround * pc);
        }
        for (int jr = 0; jr < f; jr += KD_NR) {
            int nr = f - jr < KD_NR ? f - jr : KD_NR;
            // the two GEMMs' sums for rows ic ..< ic + mc, columns jr ..< jr + 32: per depth block, then added as
            // kd_gemm_bf16's epilogue adds them (alpha 1, beta 0)
            for (int pc = 0; pc < k; pc += KD_KC) {
                int kc = k - pc < KD_KC ? k - pc : KD_KC, kp = (kc + 1) / 2;
                const uint16_t *gp = gate + fround * pc + (size_t)jr * kp * 2, *upp = up + fround * pc + (size_t)jr * kp * 2;
                if (fma) {  // the two panels widened once for the block's rows
                    kd_widen_b(gp, (size_t)KD_NR * kp * 2, wideb);
                    kd_widen_b(upp, (size_t)KD_NR * kp * 2, wideb + KD_NR * KD_KC);
                }
                for (int ir = 0; ir < mc; ir += KD_MR) {
                    if (fma) {
                        const float *ap = wide + mcround * pc + (size_t)ir * kp * 2;
                        micro_c_fma(kp, ap, wideb, sums[0] + ir * KD_NR, KD_NR, 1, 0, pc == 0);
                        micro_c_fma(kp, ap, wideb + KD_NR * KD_KC, sums[1] + ir * KD_NR, KD_NR, 1, 0, pc == 0);
                    } else {
                        const uint16_t *ap = abig + mround * pc + (size_t)(ic + ir) * kp * 2;
                        micro_c_avx512(kp, ap, gp, sums[0] + ir * KD_NR, KD_NR, 1, 0, pc == 0);
                        micro_c_avx512(kp, ap, upp, sums[1] + ir * KD_NR, KD_NR, 1, 0, pc == 0);
                    }
                }
            }
            for (int i = 0; i < mc; i++) {
                float *hrow = h + (ptrdiff_t)(ic + i) * ldh + jr;
                const float *g = sums[0] + i * KD_NR, *u = sums[1] + i * KD_NR;
                if (nr == KD_NR) {
                    _mm512_storeu_ps(hrow, kd_swiglu16(_mm512_load_ps(g), _mm512_load_ps(u)));
                    _mm512_storeu_ps(hrow + 16, kd_swiglu16(_mm512_load_ps(g + 16), _mm512_load_ps(u + 16)));
                } else {
                    _mm512_storeu_ps(tile, kd_swiglu16(_mm512_load_ps(g), _mm512_load_ps(u)));
                    _mm512_storeu_ps(tile + 16, kd_swiglu16(_mm512_load_ps(g + 16), _mm512_load_ps(u + 16)));
                    memcpy(hrow, tile, (size_t)nr * sizeof(float));
                }
            }
        }
    }
}

void kd_gemm_bf16_swiglu_avx512(int m, int f, int k, const float *a, ptrdiff_t lda, const uint16_t *apacked,
                                const uint16_t *gate, const uint16_t *up, float *h, ptrdiff_t ldh) {
    kd_gemm_bf16_swiglu(0, m, f, k, a, lda, apacked, gate, up, h, ldh);
}

void kd_gemm_bf16_swiglu_fma(int m, int f, int k, const float *a, ptrdiff_t lda, const uint16_t *apacked,
                             const uint16_t *gate, const uint16_t *up, float *h, ptrdiff_t ldh) {
    kd_gemm_bf16_swiglu(1, m, f, k, a, lda, apacked, gate, up, h, ldh);
}

/// The 16 pairs of one 32-element GGML block of `type` (ggml's dequantization, the same float operations in the same
/// order as KDQuant's `dequantize`), rounded to bf16: lane q = bf16(x[2q]) | bf16(x[2q + 1]) << 16.
static inline __attribute__((always_inline)) __m512i kd_ggml_block_pairs(int type, const uint8_t *x) {
    __m512 lo, hi;
    uint16_t dh;
    memcpy(&dh, x, 2);
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(dh));
    if (type == 8) {  // Q8_0: f16 d, int8 q[32]; x = q·d
        lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const void *)(x + 2)))), d);
        hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const void *)(x + 18)))), d);
    } else {  // Q4_0 (f16 d, 16 bytes of nibbles; x = d·(q − 8)) and Q4_1 (f16 d, f16 m; x = d·q + m)
        const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const void *)(x + (type == 2 ? 2 : 4))));
        __m512i ql = _mm512_and_si512(q, _mm512_set1_epi32(0xF)), qh = _mm512_srli_epi32(q, 4);
        if (type == 2) {
            ql = _mm512_sub_epi32(ql, _mm512_set1_epi32(8));
            qh = _mm512_sub_epi32(qh, _mm512_set1_epi32(8));
        }
        lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(ql));
        hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(qh));
        if (type == 3) {
            uint16_t mh;
            memcpy(&mh, x + 2, 2);
            const __m512 mv = _mm512_set1_ps(_cvtsh_ss(mh));
            lo = _mm512_add_ps(lo, mv);
            hi = _mm512_add_ps(hi, mv);
        }
    }
    // vcvtne2ps2bf16 rounds to nearest even and quiets NaNs as kd_bf16_from_f32 does; it also flushes denormals, which
    // these blocks never produce (products and sums of f16 values and small integers are 0 or ≥ 2⁻²⁴ in magnitude)
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

static inline __attribute__((always_inline)) void kd_pack_b_ggml_typed(int type, int n, int k, const uint8_t *data,
                                                                       size_t rowBytes, size_t blockBytes, uint16_t *out16) {
    size_t nround = (size_t)((n + KD_NR - 1) / KD_NR * KD_NR);
    int nb = k / 32, lines = (int)((16 * blockBytes + 63) / 64);
    // 16 rows at a time along their whole depth: the rows are contiguous, read once from start to end, while the next
    // 16 rows are prefetched (16 blocks' bytes per block step)
    for (int r0 = 0; r0 < n; r0 += 16) {
        const uint8_t *rows = data + (size_t)r0 * rowBytes, *next = rows + 16 * rowBytes;
        for (int b = 0; b < nb; b++) {
            if (r0 + 16 < n) for (int l = 0; l < lines; l++) _mm_prefetch((const char *)next + (size_t)b * 16 * blockBytes + 64 * l, _MM_HINT_T0);
            int pc = b * 32 / KD_KC * KD_KC, kc = k - pc < KD_KC ? k - pc : KD_KC;
            uint32_t *out = (uint32_t *)(void *)(out16 + nround * pc);
            __m512i v[16];
            for (int i = 0; i < 16; i++) v[i] = kd_ggml_block_pairs(type, rows + (size_t)i * rowBytes + (size_t)b * blockBytes);
            kd_transpose16(v);
            for (int j = 0; j < 16; j++) kd_store_rows16(out, kc / 2, KD_NR, r0, (b * 32 - pc) / 2 + j, v[j]);
        }
    }
    if (n % KD_NR) {  // n % 32 == 16: the last panel's upper 16 columns are zero in every depth block
        for (int pc = 0; pc < k; pc += KD_KC) {
            int kc = k - pc < KD_KC ? k - pc : KD_KC, kp = kc / 2;
            uint32_t *panel = (uint32_t *)(void *)(out16 + nround * pc) + (size_t)(n - 16) * kp;
            for (int q = 0; q < kp; q++) memset(panel + (size_t)q * KD_NR + 16, 0, 64);
        }
    }
}

int kd_bf16_pack_b_ggml(int type, int n, int k, const void *data, size_t rowBytes, uint16_t *out) {
    if (n <= 0 || n % 16 != 0 || k % 32 != 0) return 0;
    switch (type) {
    case 2: kd_pack_b_ggml_typed(2, n, k, data, rowBytes, 18, out); return 1;
    case 3: kd_pack_b_ggml_typed(3, n, k, data, rowBytes, 20, out); return 1;
    case 8: kd_pack_b_ggml_typed(8, n, k, data, rowBytes, 34, out); return 1;
    default: return 0;
    }
}
#pragma clang attribute pop
#else
void kd_gemm_bf16_prepacked_avx512(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                                   const uint16_t *apacked, const float *b, ptrdiff_t brs, ptrdiff_t bcs,
                                   const uint16_t *bpacked, int bstride, int bcol0, float beta, float *c, ptrdiff_t ldc) {
    abort();
}
int kd_bf16_pack_b_ggml(int type, int n, int k, const void *data, size_t rowBytes, uint16_t *out) {
    return 0;
}
void kd_attention_scores_avx512(int rows, int hs, int tk, int pos, float scale, const float *q, ptrdiff_t ldq,
                                const uint16_t *kpacked, float *s, ptrdiff_t lds) {
    abort();
}
void kd_gemm_bf16_swiglu_avx512(int m, int f, int k, const float *a, ptrdiff_t lda, const uint16_t *apacked,
                                const uint16_t *gate, const uint16_t *up, float *h, ptrdiff_t ldh) {
    abort();
}
void kd_attention_pv_avx512(int rows, int hs, int tk, int pos, const float *p, ptrdiff_t ldp, const uint16_t *vpacked,
                            float *out, ptrdiff_t ldo) {
    abort();
}
void kd_gemm_bf16_avx512(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                         const float *b, ptrdiff_t brs, ptrdiff_t bcs, float beta, float *c, ptrdiff_t ldc) {
    abort();  // never called: kd_cpu_has_avx512bf16() is 0 off x86-64
}
// the FMA variant, likewise never called off x86-64
void kd_gemm_bf16_fma(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                      const float *b, ptrdiff_t brs, ptrdiff_t bcs, float beta, float *c, ptrdiff_t ldc) {
    abort();
}
void kd_gemm_bf16_prepacked_fma(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                                const uint16_t *apacked, const float *b, ptrdiff_t brs, ptrdiff_t bcs,
                                const uint16_t *bpacked, int bstride, int bcol0, float beta, float *c, ptrdiff_t ldc) {
    abort();
}
void kd_attention_scores_fma(int rows, int hs, int tk, int pos, float scale, const float *q, ptrdiff_t ldq,
                             const uint16_t *kpacked, float *s, ptrdiff_t lds) {
    abort();
}
void kd_attention_pv_fma(int rows, int hs, int tk, int pos, const float *p, ptrdiff_t ldp, const uint16_t *vpacked,
                         float *out, ptrdiff_t ldo) {
    abort();
}
void kd_gemm_bf16_swiglu_fma(int m, int f, int k, const float *a, ptrdiff_t lda, const uint16_t *apacked,
                             const uint16_t *gate, const uint16_t *up, float *h, ptrdiff_t ldh) {
    abort();
}
int kd_bf16_fma_is_faster(void) { return 0; }
#endif

/// Whether packing may use AVX-512: CPUID once (it traps to the hypervisor in a VM); racing threads store the same value.
static int kd_bf16_fast_packing(void) {
    static _Atomic int cpu = -1;
    int fast = atomic_load_explicit(&cpu, memory_order_relaxed);
    if (fast < 0) atomic_store_explicit(&cpu, fast = kd_cpu_has_avx512bf16(), memory_order_relaxed);
    return fast;
}

/// Rows r0 ..< r1 (r0 a multiple of `width`) of X(r, p) = x[r·rs + p·cs] (r < rows, p < k) into their place in the whole
/// packed matrix: per 256-deep block, panels of `width` rows (8 for A, 32 for B), k in pairs, zeros past rows and k.
static void kd_pack_rows(int width, int rows, int r0, int r1, int k, const float *x, ptrdiff_t rs, ptrdiff_t cs, uint16_t *out) {
    int fast = kd_bf16_fast_packing();
    size_t round = (size_t)((rows + width - 1) / width * width);
    for (int pc = 0; pc < k; pc += KD_KC) {
        int kc = k - pc < KD_KC ? k - pc : KD_KC;
        const float *src = x + (ptrdiff_t)r0 * rs + (ptrdiff_t)pc * cs;
        uint16_t *dst = out + round * pc + (size_t)r0 * ((kc + 1) / 2 * 2);
#if defined(__x86_64__)
        if (fast) { pack_fast_avx512(src, rs, cs, r1 - r0, kc, width, dst); continue; }
#endif
        pack_emulated(src, rs, cs, r1 - r0, kc, width, dst);
    }
}

size_t kd_bf16_packed_count(int n, int k) {
    return (size_t)((n + KD_NR - 1) / KD_NR * KD_NR) * (size_t)((k + 1) / 2 * 2);
}

void kd_bf16_pack_b(int n, int j0, int j1, int k, const float *b, ptrdiff_t brs, ptrdiff_t bcs, uint16_t *out) {
    kd_pack_rows(KD_NR, n, j0, j1, k, b, brs, bcs, out);
}

size_t kd_bf16_packed_a_count(int m, int k) {
    return (size_t)((m + KD_MR - 1) / KD_MR * KD_MR) * (size_t)((k + 1) / 2 * 2);
}

void kd_bf16_pack_a(int m, int i0, int i1, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, uint16_t *out) {
    kd_pack_rows(KD_MR, m, i0, i1, k, a, ars, acs, out);
}

void kd_bf16_unpack_b(int n, int j0, int j1, int k, const uint16_t *packed, float *out, ptrdiff_t ldo) {
    size_t nround = (size_t)((n + KD_NR - 1) / KD_NR * KD_NR);
    for (int pc = 0; pc < k; pc += KD_KC) {
        int kc = k - pc < KD_KC ? k - pc : KD_KC, kp = (kc + 1) / 2;
        const uint16_t *block = packed + nround * pc;
        for (int j = j0; j < j1; j++) {
            const uint16_t *panel = block + (size_t)(j / KD_NR) * KD_NR * kp * 2 + (size_t)(j % KD_NR) * 2;
            float *row = out + (ptrdiff_t)(j - j0) * ldo + pc;
            for (int p = 0; p < kc; p++) row[p] = kd_f32_from_bf16(panel[(size_t)(p / 2) * KD_NR * 2 + (p & 1)]);
        }
    }
}
