// oneDNN's matmul on the shapes `distill bench --gemm` times: C[M,N] = A[M,K] · B[N,K]ᵀ (B stored as a linear
// layer's weight), f32 and bf16 operands (f32 result), best GFLOP/s of 5 after a warm-up; one line per shape and type,
// or why oneDNN has no implementation for it on this CPU. Built and run by Launch/lab/bench_onednn.sh (Debian libdnnl-dev,
// oneDNN 2.x API); threads from OMP_NUM_THREADS.
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define CHECK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { fprintf(stderr, "onednn_matmul: %s failed (status %d)\n", #x, (int)s_); exit(1); } } while (0)

static void run(dnnl_engine_t eng, dnnl_stream_t st, dnnl_data_type_t dt, long m, long n, long k) {
    const char *name = dt == dnnl_bf16 ? "bf16" : "f32";
    dnnl_memory_desc_t a, b, c;
    dnnl_dims_t da = {m, k}, db = {k, n}, dc = {m, n};
    CHECK(dnnl_memory_desc_init_by_tag(&a, 2, da, dt, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&b, 2, db, dt, dnnl_ba));  // [K, N] stored N-major: the weight [N, K]
    CHECK(dnnl_memory_desc_init_by_tag(&c, 2, dc, dnnl_f32, dnnl_ab));
    dnnl_matmul_desc_t md;
    CHECK(dnnl_matmul_desc_init(&md, &a, &b, NULL, &c));
    dnnl_primitive_desc_t pd;
    dnnl_status_t s = dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL);
    if (s != dnnl_success) {
        printf("onednn %ldx%ldx%ld %s | no implementation on this CPU (status %d%s)\n", m, n, k, name, (int)s,
               s == dnnl_unimplemented ? ": unimplemented" : "");
        return;
    }
    const char *impl = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    dnnl_primitive_t p;
    CHECK(dnnl_primitive_create(&p, pd));
    dnnl_memory_t ma, mb, mc;
    CHECK(dnnl_memory_create(&ma, &a, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&mb, &b, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&mc, &c, eng, DNNL_MEMORY_ALLOCATE));
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
    double best = 1e30;
    for (int r = 0; r < 6; r++) {
        double t0 = now();
        CHECK(dnnl_primitive_execute(p, st, 3, args));
        CHECK(dnnl_stream_wait(st));
        if (r > 0 && now() - t0 < best) best = now() - t0;
    }
    printf("onednn %ldx%ldx%ld %s | %.1f GFLOP/s (best of 5) | %s\n", m, n, k, name, 2.0 * m * n * k / best / 1e9, impl);
    dnnl_memory_destroy(ma);
    dnnl_memory_destroy(mb);
    dnnl_memory_destroy(mc);
    dnnl_primitive_destroy(p);
    dnnl_primitive_desc_destroy(pd);
}

int main(int argc, char **argv) {
    const dnnl_version_t *v = dnnl_version();
    printf("oneDNN %d.%d.%d\n", v->major, v->minor, v->patch);
    dnnl_engine_t eng;
    dnnl_stream_t st;
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
    for (int i = 1; i < argc; i++) {
        long m, n, k;
        if (sscanf(argv[i], "%ldx%ldx%ld", &m, &n, &k) != 3 || m < 1 || n < 1 || k < 1) {
            fprintf(stderr, "onednn_matmul: expected MxNxK, found '%s'\n", argv[i]);
            return 2;
        }
        run(eng, st, dnnl_f32, m, n, k);
        run(eng, st, dnnl_bf16, m, n, k);
    }
    return 0;
}
