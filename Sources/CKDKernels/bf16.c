// bf16 GEMM: rounding, CPU detection, packing, and the blocked kernel (bf16_kernel_body.h) built twice —
// with AVX512-BF16 intrinsics, and against a portable emulation of them.
#include "kd_bf16.h"
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
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // OSXSAVE
    unsigned int xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & 0xe6u) != 0xe6u) return 0;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM state enabled by the OS
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(b & (1u << 16)) || !(b & (1u << 30))) return 0;  // AVX512F, AVX512BW
    if (a < 1 || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1u;  // AVX512_BF16
#else
    return 0;
#endif
}

/// This thread's packing buffers (A: MC × KC, B: NC × KC bf16), allocated on its first GEMM and kept: a training step
/// makes hundreds of GEMM calls on the same few threads, and fresh 256 KiB buffers would be new pages every call.
static void kd_pack_buffers(uint16_t **a, uint16_t **b) {
    static _Thread_local uint16_t *apack, *bpack;
    if (!apack) {
        void *pa = NULL, *pb = NULL;
        if (posix_memalign(&pa, 64, (size_t)KD_MC * KD_KC * 2) != 0 || posix_memalign(&pb, 64, (size_t)KD_NC * KD_KC * 2) != 0) abort();
        apack = pa;
        bpack = pb;
    }
    *a = apack;
    *b = bpack;
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

#define KD_NAME(x) x##_emulated
#define KD_VF kd_ev
#define KD_VB kd_eb
#define KD_ZERO() kd_e_zero()
#define KD_LOAD_B(p) kd_e_load(p)
#define KD_BCAST_PAIR(p) kd_e_bcast(p)
#define KD_DP(acc, a, b) kd_e_dp(acc, a, b)
#define KD_STORE(p, v) kd_e_store(p, v)
#include "bf16_kernel_body.h"
#undef KD_NAME
#undef KD_VF
#undef KD_VB
#undef KD_ZERO
#undef KD_LOAD_B
#undef KD_BCAST_PAIR
#undef KD_DP
#undef KD_STORE

// ---- AVX512-BF16: the same body with the instructions ----
#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512bf16"))), apply_to = function)
#define KD_NAME(x) x##_avx512
#define KD_VF __m512
#define KD_VB __m512bh
#define KD_ZERO() _mm512_setzero_ps()
#define KD_LOAD_B(p) ((__m512bh)_mm512_loadu_si512((const void *)(p)))
#define KD_BCAST_PAIR(p) ({ int32_t pair_; memcpy(&pair_, (p), 4); (__m512bh)_mm512_set1_epi32(pair_); })
#define KD_DP(acc, a, b) _mm512_dpbf16_ps(acc, a, b)
#define KD_STORE(p, v) _mm512_storeu_ps(p, v)
#include "bf16_kernel_body.h"
#pragma clang attribute pop
#else
void kd_gemm_bf16_avx512(int m, int n, int k, float alpha, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                         const float *b, ptrdiff_t brs, ptrdiff_t bcs, float beta, float *c, ptrdiff_t ldc) {
    abort();  // never called: kd_cpu_has_avx512bf16() is 0 off x86-64
}
#endif
