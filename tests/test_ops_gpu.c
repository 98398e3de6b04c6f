/* The CUDA twins of the dense ops against their CPU twins on the same random inputs: GEMM within
 * the bound of two fp32 accumulations, element-wise ops, fills and casts bit for bit (every f16
 * and bf16 pattern included), reductions within double-accumulation error. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "core/ops.h"
#include "ops_ref.h"
#include "testing.h"

static ng_tensor to_gpu(const ng_tensor *t) {
    return ng_tensor_to(t, NG_CUDA, t->name);
}

static uint64_t elem_bits(const void *p, size_t es, int64_t i) {
    uint64_t b = 0;
    memcpy(&b, (const char *)p + (size_t)i * es, es);
    return b;
}

/* Element i of a host buffer of type t, as a double, for messages. */
static double value_of(const void *p, ng_dtype t, int64_t i) {
    ng_tensor one = ng_tensor_wrap((char *)p + (size_t)i * ng_dtype_size(t), t, NG_CPU, 1,
                                   (int64_t[]){1}, "element");
    double *v = ng_test_to_f64(&one), r = v[0];
    free(v);
    return r;
}

/* The CUDA tensor holds exactly the CPU tensor's bytes; prints the first differences. */
static int same_bits(const char *what, const ng_tensor *cpu, const ng_tensor *gpu) {
    ng_tensor h = ng_tensor_to(gpu, NG_CPU, "gpu result");
    size_t es = ng_dtype_size(cpu->dtype);
    int64_t bad = 0;
    if (memcmp(cpu->data, h.data, ng_tensor_bytes(cpu)))
        for (int64_t i = 0; i < cpu->numel; i++)
            if (elem_bits(cpu->data, es, i) != elem_bits(h.data, es, i) && bad++ < 8)
                fprintf(stderr, "  %s: [%lld] cpu %.10g (%llx) gpu %.10g (%llx)\n", what,
                        (long long)i, value_of(cpu->data, cpu->dtype, i),
                        (unsigned long long)elem_bits(cpu->data, es, i),
                        value_of(h.data, cpu->dtype, i),
                        (unsigned long long)elem_bits(h.data, es, i));
    ng_tensor_free(&h);
    if (bad) {
        ng_test_fail("%s: %lld of %lld elements differ in their bits", what, (long long)bad,
                     (long long)cpu->numel);
        return 0;
    }
    ng_test_pass();
    return 1;
}

/* ---- GEMM ---------------------------------------------------------------------------------- */

static void gemm_case_run(const gemm_case *c) {
    ng_tensor A, B, C;
    gemm_dims d = gemm_case_inputs(c, &A, &B, &C);
    ng_tensor dA = to_gpu(&A), dB = to_gpu(&B), dC = to_gpu(&C);
    double *a = ng_test_to_f64(&A), *b = ng_test_to_f64(&B), *c0 = ng_test_to_f64(&C);
    ng_gemm(c->ta, c->tb, c->alpha, &A, &B, c->beta, &C);
    ng_gemm(c->ta, c->tb, c->alpha, &dA, &dB, c->beta, &dC);
    double *cpu = ng_test_to_f64(&C), *gpu = ng_test_to_f64(&dC);

    /* Each twin is within gamma_{k+2} |alpha||A||B| + |beta||C| of the exact result before it
     * rounds into C's type, so they are within the sum of both bounds of each other. The CPU
     * accumulates in IEEE fp32 (round to nearest). On the GPU, f32 inputs take fp32 FMA paths
     * (same unit roundoff), but f16/bf16 inputs run on tensor cores, whose fp32 accumulation
     * truncates (Fasi et al., "Numerical behavior of NVIDIA tensor cores", 2021): an error up
     * to one ulp, i.e. 2u, per addition. */
    double ua = c->in == NG_F64 ? U64 : U32, uo = unit(c->out);
    double ug = c->in == NG_F16 || c->in == NG_BF16 ? 2 * U32 : ua;
    double g = gamma_n((double)c->k + 2, ua) + gamma_n((double)c->k + 2, ug);
    int64_t mn = c->m * c->n, total = d.bt * mn, bad = 0, nans = 0;
    for (int64_t p = 0; p < d.bt; p++)
        for (int64_t i = 0; i < c->m; i++)
            for (int64_t j = 0; j < c->n; j++) {
                double mag;
                gemm_ref_entry(c, &d, a, b, p, i, j, &mag);
                int64_t o = p * mn + i * c->n + j;
                double err =
                    g * (fabs(c->alpha) * mag + (c->beta != 0 ? fabs(c->beta * c0[o]) : 0));
                /* both round into C's type: up to u_out of a magnitude <= |cpu| + err each */
                double tol = err + 2 * uo * (fabs(cpu[o]) + err) + 2 * tiny(c->out);
                nans += isnan(gpu[o]);
                if (!(fabs(gpu[o] - cpu[o]) <= tol) && bad++ < 8)
                    fprintf(stderr, "  gemm [%lld] cpu %.10g gpu %.10g (tol %.3g)\n", (long long)o,
                            cpu[o], gpu[o], tol);
            }
    NG_TEST(
        !bad && !nans,
        "gemm %s->%s ta=%d tb=%d [%lld,%lld,%lld] batch %lld (A %lld, B %lld) alpha %g beta %g: "
        "%lld of %lld differ beyond the fp32 bound, %lld NaN",
        ng_dtype_name(c->in), ng_dtype_name(c->out), c->ta, c->tb, (long long)c->m, (long long)c->n,
        (long long)c->k, (long long)c->batch, (long long)d.ba, (long long)d.bb, c->alpha, c->beta,
        (long long)bad, (long long)total, (long long)nans);
    free(a), free(b), free(c0), free(cpu), free(gpu);
    ng_tensor *ts[] = {&A, &B, &C, &dA, &dB, &dC};
    for (int i = 0; i < 6; i++) ng_tensor_free(ts[i]);
}

static void test_gemm(void) {
    const int64_t(*sizes)[3] = gemm_sizes;
    const int64_t(*bab)[2] = gemm_batches;
    gemm_f32_cases(gemm_case_run);
    const ng_dtype halves[2] = {NG_F16, NG_BF16};
    for (int h = 0; h < 2; h++)
        for (int o = 0; o < 2; o++) {
            ng_dtype out = o ? halves[h] : NG_F32;
            for (int s = 0; s < 3; s++)
                for (int t = 0; t < 4; t++) {
                    gemm_case c = {t & 1,       t >> 1, sizes[s][0], sizes[s][1],
                                   sizes[s][2], 0,      0,           0,
                                   halves[h],   out,    0.75,        t & 1 ? -0.5 : 0.0};
                    gemm_case_run(&c);
                }
            for (int v = 0; v < 3; v++) {
                gemm_case c = {v & 1,     1,         9,         6,   40,    3,
                               bab[v][0], bab[v][1], halves[h], out, -1.25, v ? 0.5 : 0.0};
                gemm_case_run(&c);
            }
        }
    for (int s = 0; s < 3; s++)
        for (int t = 0; t < 4; t++) {
            gemm_case c = {t & 1, t >> 1, sizes[s][0], sizes[s][1], sizes[s][2],       0, 0,
                           0,     NG_F64, NG_F64,      0.75,        t & 1 ? -0.5 : 0.0};
            gemm_case_run(&c);
        }
    for (int v = 0; v < 3; v++) {
        gemm_case c = {v & 1,     1,         11,     7,      13,    3,
                       bab[v][0], bab[v][1], NG_F64, NG_F64, -1.25, v ? 0.5 : 0.0};
        gemm_case_run(&c);
    }
    /* k = 0: C = beta C, and zeros (NaN not read) for beta 0. */
    const ng_dtype k0_types[4][2] = {
        {NG_F32, NG_F32}, {NG_F64, NG_F64}, {NG_F16, NG_F16}, {NG_BF16, NG_BF16}};
    for (int i = 0; i < 4; i++)
        for (int z = 0; z < 2; z++) {
            gemm_case c = {
                0, 0, 4, 6, 0, 2, 1, 2, k0_types[i][0], k0_types[i][1], 0.75, z ? 0.0 : -0.5};
            gemm_case_run(&c);
        }
}

/* ---- Element-wise, bit for bit ------------------------------------------------------------- */

static void test_elementwise(void) {
    const int64_t n = 100003;
    for (int d = 0; d < 4; d++) {
        ng_dtype t = float_types[d];
        const char *tn = ng_dtype_name(t);
        char what[64];
        ng_tensor x = ng_tensor_1d(t, NG_CPU, n, "x"), y = ng_tensor_1d(t, NG_CPU, n, "y");
        ng_tensor z = ng_tensor_1d(t, NG_CPU, n, "z");
        ng_test_fill_uniform(&x, -3, 3);
        ng_test_fill_uniform(&y, -3, 3);
        ng_test_poison(&z);
        ng_tensor dx = to_gpu(&x), dy = to_gpu(&y), dz = to_gpu(&z);

        ng_axpy(-0.3, &x, &y); /* alpha not exact in f32: both round it the same way */
        ng_axpy(-0.3, &dx, &dy);
        snprintf(what, sizeof what, "axpy %s", tn);
        same_bits(what, &y, &dy);

        ng_scale(1.7, &y);
        ng_scale(1.7, &dy);
        snprintf(what, sizeof what, "scale %s", tn);
        same_bits(what, &y, &dy);

        ng_add(&x, &y, &z);
        ng_add(&dx, &dy, &dz);
        snprintf(what, sizeof what, "add %s", tn);
        same_bits(what, &z, &dz);

        ng_mul(&z, &x, &z); /* in place */
        ng_mul(&dz, &dx, &dz);
        snprintf(what, sizeof what, "mul %s (in place)", tn);
        same_bits(what, &z, &dz);

        int64_t shape[3] = {3, 41, 41};
        ng_tensor A = ng_tensor_new(t, NG_CPU, 3, shape, "A");
        ng_test_fill_uniform(&A, -1, 1);
        ng_tensor dA = to_gpu(&A);
        ng_add_diagonal(&A, 0.1);
        ng_add_diagonal(&dA, 0.1);
        snprintf(what, sizeof what, "add_diagonal %s [3,41,41]", tn);
        same_bits(what, &A, &dA);
        ng_tensor A2 = ng_tensor_view(&A, 0, 2, shape + 1, "A2");
        ng_tensor dA2 = ng_tensor_view(&dA, 0, 2, shape + 1, "A2");
        ng_add_diagonal(&A2, -7.25);
        ng_add_diagonal(&dA2, -7.25);
        snprintf(what, sizeof what, "add_diagonal %s [41,41]", tn);
        same_bits(what, &A, &dA);

        ng_tensor *ts[] = {&x, &y, &z, &dx, &dy, &dz, &A, &dA};
        for (int i = 0; i < 8; i++) ng_tensor_free(ts[i]);
    }
    /* More elements than one grid covers (ng_cuda_blocks caps the grid), so the grid-stride
     * loops wrap around. */
    const int64_t big = (int64_t)65535 * 8 * 256 + 1001;
    ng_tensor x = ng_tensor_1d(NG_F32, NG_CPU, big, "big");
    ng_test_fill_uniform(&x, -1, 1);
    ng_tensor dx = to_gpu(&x);
    ng_scale(-0.7, &x);
    ng_scale(-0.7, &dx);
    same_bits("scale f32 past one grid", &x, &dx);
    ng_tensor_free(&x);
    ng_tensor_free(&dx);
}

/* ---- Fill and cast, bit for bit ------------------------------------------------------------ */

static void test_fill(void) {
    const double values[7] = {0.1, -3.7, 200.9, 1e10, -0.0, NAN, -INFINITY};
    for (int t = 0; t < NG_NUM_DTYPES; t++)
        for (int v = 0; v < 7; v++) {
            ng_tensor x = ng_tensor_1d((ng_dtype)t, NG_CPU, 4099, "x");
            ng_test_poison(&x);
            ng_tensor dx = to_gpu(&x);
            ng_fill(&x, values[v]);
            ng_fill(&dx, values[v]);
            char what[64];
            snprintf(what, sizeof what, "fill %s with %g", ng_dtype_name((ng_dtype)t), values[v]);
            same_bits(what, &x, &dx);
            ng_tensor_free(&x);
            ng_tensor_free(&dx);
        }
}

static uint64_t rand_bits(void) {
    uint64_t hi = (uint64_t)((ng_test_uniform() + 1) * 2147483648.0);
    uint64_t lo = (uint64_t)((ng_test_uniform() + 1) * 2147483648.0);
    return hi << 32 ^ lo;
}

/* Casts src to every dtype on both devices and compares the bits. */
static void cast_all_ways(const char *label, const ng_tensor *src) {
    ng_tensor ds = to_gpu(src);
    for (int t = 0; t < NG_NUM_DTYPES; t++) {
        ng_tensor d = ng_tensor_1d((ng_dtype)t, NG_CPU, src->numel, "dst");
        ng_test_poison(&d);
        ng_tensor dd = to_gpu(&d);
        ng_cast(&d, src);
        ng_cast(&dd, &ds);
        char what[96];
        snprintf(what, sizeof what, "cast %s %s -> %s", label, ng_dtype_name(src->dtype),
                 ng_dtype_name((ng_dtype)t));
        same_bits(what, &d, &dd);
        ng_tensor_free(&d);
        ng_tensor_free(&dd);
    }
    ng_tensor_free(&ds);
}

static void test_cast(void) {
    /* Every f16 and bf16 bit pattern. */
    const int64_t n16 = 65536;
    for (int bf = 0; bf < 2; bf++) {
        ng_tensor h = ng_tensor_1d(bf ? NG_BF16 : NG_F16, NG_CPU, n16, "patterns");
        for (int64_t i = 0; i < n16; i++) ((uint16_t *)h.data)[i] = (uint16_t)i;
        cast_all_ways("all patterns", &h);
        ng_tensor_free(&h);
    }
    /* Random f32 bit patterns (every exponent, NaNs included) and the edges of the halves. */
    const float edges[] = {0.0f,
                           -0.0f,
                           1e-45f,
                           -1e-45f,
                           1.17549421e-38f,
                           1.17549435e-38f,
                           5.96046448e-08f /* 2^-24 */,
                           2.98023224e-08f /* 2^-25 */,
                           8.94069672e-08f /* 3 * 2^-25 */,
                           6.09755516e-05f,
                           6.10351562e-05f,
                           65504.0f,
                           65519.9961f,
                           65520.0f,
                           -65520.0f,
                           65536.0f,
                           1.0f + 1.0f / 2048,
                           1.0f + 3.0f / 2048,
                           1.0f + 1.0f / 256,
                           1.0f + 3.0f / 256,
                           3.38953139e38f,
                           3.40282347e38f,
                           INFINITY,
                           -INFINITY,
                           255.5f,
                           -0.5f,
                           2147483520.0f,
                           2147483648.0f,
                           -2147483648.0f};
    const uint32_t nan_bits[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,
                                 0x7fffffffu, 0x7fa00000u, 0x7f802000u, 0x7f801fffu};
    const int64_t nf = 1 << 20;
    ng_tensor f = ng_tensor_1d(NG_F32, NG_CPU, nf, "f32 bits");
    uint32_t *fb = f.data;
    int64_t k = 0;
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) memcpy(&fb[k++], &edges[i], 4);
    for (size_t i = 0; i < sizeof nan_bits / sizeof *nan_bits; i++) fb[k++] = nan_bits[i];
    for (int64_t i = k; i < nf; i++)
        fb[i] = i % 2 ? (uint32_t)rand_bits()
                      : ng_f32_bits(
                            (float)(ng_test_uniform() * ldexp(1.0, (int)(ng_test_uniform() * 40))));
    cast_all_ways("random bits", &f);
    ng_tensor_free(&f);
    /* f64: random bits, values near half-precision ties, and doubles past the f32 range. */
    ng_tensor d = ng_tensor_1d(NG_F64, NG_CPU, nf, "f64 bits");
    uint64_t *db = d.data;
    for (int64_t i = 0; i < nf; i++) {
        double v;
        switch (i % 4) {
            case 0:
                db[i] = rand_bits();
                continue;
            case 1:
                v = ng_test_uniform() * ldexp(1.0, (int)(ng_test_uniform() * 140));
                break;
            case 2: /* an f16 or bf16 tie nudged by a tiny amount either way */
                v = ldexp(1.0 + (2 * (double)(i % 1024) + 1) / 2048.0,
                          (int)(ng_test_uniform() * 14)) +
                    ldexp(ng_test_uniform(), -40);
                break;
            default:
                v = ng_test_uniform() * 3e9;
                break;
        }
        memcpy(&db[i], &v, 8);
    }
    cast_all_ways("random", &d);
    ng_tensor_free(&d);
    /* Integers. */
    ng_tensor iv = ng_tensor_1d(NG_I32, NG_CPU, nf, "i32");
    ng_tensor uv = ng_tensor_1d(NG_U8, NG_CPU, nf, "u8");
    for (int64_t i = 0; i < nf; i++) {
        put(&iv, i, (double)(int32_t)(uint32_t)rand_bits());
        put(&uv, i, (double)(rand_bits() & 0xff));
    }
    put(&iv, 0, 16842753.0); /* 2^24 + 2^16 + 1: a bf16 tie when rounded through f32 */
    put(&iv, 1, 2147483647.0);
    put(&iv, 2, -2147483648.0);
    cast_all_ways("random", &iv);
    cast_all_ways("random", &uv);
    ng_tensor_free(&iv);
    ng_tensor_free(&uv);
}

/* ---- Reductions ---------------------------------------------------------------------------- */

static void test_reduce(void) {
    const int64_t sizes[3] = {1, 1000, 3000017}; /* the last spans more than one grid pass */
    for (int d = 0; d < 4; d++)
        for (int s = 0; s < 3; s++) {
            ng_dtype t = float_types[d];
            const char *tn = ng_dtype_name(t);
            int64_t n = sizes[s];
            ng_tensor x = ng_tensor_1d(t, NG_CPU, n, "x");
            ng_test_fill_uniform(&x, -3, 2);
            ng_tensor dx = to_gpu(&x);
            double *v = ng_test_to_f64(&x), sabs = 0, ssq = 0;
            for (int64_t i = 0; i < n; i++) sabs += fabs(v[i]), ssq += v[i] * v[i];
            /* Two double accumulations of n terms in different orders: 2 gamma_n apart. */
            double g = 2 * gamma_n((double)n + 1, U64);
            double cs = ng_sum(&x), gs = ng_sum(&dx), cq = ng_sumsq(&x), gq = ng_sumsq(&dx);
            NG_TEST(fabs(cs - gs) <= g * sabs, "sum %s n=%lld: cpu %.17g gpu %.17g", tn,
                    (long long)n, cs, gs);
            NG_TEST(fabs(cq - gq) <= g * ssq, "sumsq %s n=%lld: cpu %.17g gpu %.17g", tn,
                    (long long)n, cq, gq);
            NG_TEST(ng_maxabs(&x) == ng_maxabs(&dx), "maxabs %s n=%lld: cpu %g gpu %g", tn,
                    (long long)n, ng_maxabs(&x), ng_maxabs(&dx));
            NG_TEST(ng_all_finite(&dx) == 1, "all_finite %s n=%lld of finite data", tn,
                    (long long)n);
            /* Non-finite values at the first, a middle and the last position. */
            const int64_t where[3] = {0, n / 2, n - 1};
            for (int w = 0; w < 3; w++) {
                ng_tensor y = ng_tensor_1d(t, NG_CPU, n, "y");
                ng_tensor_copy(&y, &x);
                put(&y, where[w], -INFINITY);
                ng_tensor dy = to_gpu(&y);
                NG_TEST(ng_maxabs(&dy) == INFINITY && !ng_all_finite(&dy),
                        "gpu -Inf at %lld (%s n=%lld): maxabs %g, all_finite %d",
                        (long long)where[w], tn, (long long)n, ng_maxabs(&dy), ng_all_finite(&dy));
                put(&y, where[(w + 1) % 3], NAN);
                ng_tensor_copy(&dy, &y);
                NG_TEST(isnan(ng_maxabs(&dy)) && !ng_all_finite(&dy) && isnan(ng_sum(&dy)),
                        "gpu NaN at %lld with -Inf (%s n=%lld): maxabs %g, all_finite %d",
                        (long long)where[(w + 1) % 3], tn, (long long)n, ng_maxabs(&dy),
                        ng_all_finite(&dy));
                ng_tensor_free(&y);
                ng_tensor_free(&dy);
            }
            free(v);
            ng_tensor_free(&x);
            ng_tensor_free(&dx);
        }
}

int main(void) {
    ng_test_require_gpu("test_ops_gpu");
    ng_test_seed();
    test_gemm();
    test_elementwise();
    test_fill();
    test_cast();
    test_reduce();
    return ng_test_finish("test_ops_gpu");
}
