/* CUDA RNG fills against the CPU fills, bit for bit: all distributions, all float dtypes, sizes
 * around the 4-element block, random keys, a misaligned view with sentinels, and a fill large
 * enough for the kernel's grid-stride loop to wrap. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/half.h"
#include "core/rng.h"
#include "rng_pinned.h"
#include "testing.h"

static uint32_t rand32(void) {
    return (uint32_t)((ng_test_uniform() + 1.0) * 2147483648.0);
}
static uint64_t rand64(void) {
    return (uint64_t)rand32() << 32 | rand32();
}

static const char *dist_name[] = {"uniform", "normal", "bernoulli"};

static void fill(ng_tensor *t, ng_rng_dist d, ng_rng_key k, double p0, double p1) {
    if (d == NG_DIST_UNIFORM) ng_rng_uniform(t, k, p0, p1);
    if (d == NG_DIST_NORMAL) ng_rng_normal(t, k, p0, p1);
    if (d == NG_DIST_BERNOULLI) ng_rng_bernoulli(t, k, p0);
}

static double load(const void *data, ng_dtype dt, int64_t i) {
    switch (dt) {
        case NG_F64:
            return ((const double *)data)[i];
        case NG_F32:
            return ((const float *)data)[i];
        case NG_F16:
            return ng_f16_to_f32(((const ng_f16 *)data)[i]);
        case NG_BF16:
            return ng_bf16_to_f32(((const ng_bf16 *)data)[i]);
        default:
            return NAN;
    }
}

/* exp[0..n) against got[goff..goff+n), element bits, first mismatches printed. */
static void same_bits(const char *what, const ng_tensor *exp, const ng_tensor *got, int64_t goff,
                      int64_t n) {
    size_t es = ng_dtype_size(exp->dtype);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (memcmp((const char *)exp->data + (size_t)i * es,
                   (const char *)got->data + (size_t)(goff + i) * es, es)) {
            if (bad < 8)
                fprintf(stderr, "  %s: [%lld] cpu %.10g cuda %.10g\n", what, (long long)i,
                        load(exp->data, exp->dtype, i), load(got->data, got->dtype, goff + i));
            bad++;
        }
    }
    NG_TEST(bad == 0, "%s: %lld of %lld elements differ", what, (long long)bad, (long long)n);
}

/* Every distribution x dtype x size: the CUDA fill of a view starting one element into a
 * poisoned buffer equals the CPU fill, and the elements either side stay poisoned. */
static void test_cpu_equals_cuda(void) {
    const int64_t sizes[] = {1, 3, 4, 5, 1000003};
    const ng_dtype dtypes[] = {NG_F32, NG_F64, NG_F16, NG_BF16};
    for (int d = 0; d < 3; d++) {
        for (int s = 0; s < 5; s++) {
            int64_t n = sizes[s];
            ng_rng_key k = {rand64(), rand64(), rand64()};
            if (s == 4) k.offset = 0xffffffffull - 1000; /* counter word 0 wraps mid-fill */
            double p0 = 2 * ng_test_uniform(), p1 = p0 + 0.5 + ng_test_uniform() + 1;
            if (d == NG_DIST_NORMAL) p1 -= p0; /* (mean, std): a std in [0.5, 2.5) */
            if (d == NG_DIST_BERNOULLI) p0 = 0.5 * (ng_test_uniform() + 1);
            for (int t = 0; t < 4; t++) {
                ng_dtype dt = dtypes[t];
                ng_tensor cpu = ng_tensor_1d(dt, NG_CPU, n, "cpu");
                ng_tensor buf = ng_tensor_1d(dt, NG_CUDA, n + 2, "cuda buffer");
                ng_tensor view = ng_tensor_view(&buf, 1, 1, (int64_t[]){n}, "cuda view");
                ng_test_poison(&cpu);
                ng_test_poison(&buf);
                fill(&cpu, (ng_rng_dist)d, k, p0, p1);
                fill(&view, (ng_rng_dist)d, k, p0, p1);
                ng_tensor host = ng_tensor_to(&buf, NG_CPU, "cuda result");
                char what[128];
                snprintf(what, sizeof what, "%s %s n=%lld: cuda = cpu", dist_name[d],
                         ng_dtype_name(dt), (long long)n);
                same_bits(what, &cpu, &host, 1, n);
                NG_TEST(isnan(load(host.data, dt, 0)) && isnan(load(host.data, dt, n + 1)),
                        "%s: elements either side of the view untouched", what);
                ng_tensor_free(&cpu);
                ng_tensor_free(&buf);
                ng_tensor_free(&host);
            }
        }
    }
}

/* The same pinned values as test_rng, now from the GPU. */
static void test_pinned(void) {
    ng_rng_key k = rng_pinned_key;
    const uint32_t(*golden)[6] = rng_pinned_bits;
    ng_tensor t = ng_tensor_1d(NG_F32, NG_CUDA, 6, "pinned");
    for (int d = 0; d < 3; d++) {
        fill(&t, (ng_rng_dist)d, k, d == 2 ? 0.5 : -1, 2);
        ng_tensor h = ng_tensor_to(&t, NG_CPU, "pinned host");
        int bad = 0;
        for (int i = 0; i < 6; i++) bad += ng_f32_bits(((float *)h.data)[i]) != golden[d][i];
        NG_TEST(!bad, "%s: cuda pinned values of key {20240601, 3, 7}", dist_name[d]);
        ng_tensor_free(&h);
    }
    ng_tensor_free(&t);
}

/* More blocks than the grid has threads (ng_cuda_blocks caps the grid at 524280 x 256), so
 * threads loop; windows at the start, across the first wrap and at the tail equal CPU fills of
 * the window (a fill at offset o is the long fill from 4o on). f16 keeps it near 1 GiB. */
static void test_grid_stride(void) {
    const int64_t threads = 524280ll * 256, n = 4 * threads + 4 * 1234 + 3, win = 4096 + 3;
    ng_rng_key k = {rand64(), rand64(), rand64()};
    ng_tensor big = ng_tensor_1d(NG_F16, NG_CUDA, n, "big");
    ng_rng_normal(&big, k, 0.5, 2);
    const int64_t starts[] = {0, 4 * (threads - 512), n - win};
    for (int s = 0; s < 3; s++) {
        int64_t st = starts[s];
        ng_tensor v = ng_tensor_view(&big, st, 1, (int64_t[]){win}, "window");
        ng_tensor got = ng_tensor_to(&v, NG_CPU, "window host");
        ng_tensor exp = ng_tensor_1d(NG_F16, NG_CPU, win, "cpu window");
        ng_rng_key kw = k;
        kw.offset += (uint64_t)(st / 4);
        ng_rng_normal(&exp, kw, 0.5, 2);
        char what[96];
        snprintf(what, sizeof what, "grid-stride fill of %lld, window at %lld", (long long)n,
                 (long long)st);
        same_bits(what, &exp, &got, 0, win);
        ng_tensor_free(&got);
        ng_tensor_free(&exp);
    }
    ng_tensor_free(&big);
}

int main(void) {
    ng_test_require_gpu("test_rng_gpu");
    ng_test_seed();
    test_cpu_equals_cuda();
    test_pinned();
    test_grid_stride();
    return ng_test_finish("test_rng_gpu");
}
