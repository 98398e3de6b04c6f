/* Convolution layers on the CPU: backward against finite differences (2-D and 3-D, strides,
 * padding, dilation, non-square kernels, with and without bias), forward against direct f64
 * loops, the chunked im2col paths against the unchunked one, ng_im2col against a direct patch
 * loop, initialisation, observer calls, and errors naming the layer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "conv_cases.h"
#include "gradcheck.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "testing.h"

/* ---- gradient checks ----------------------------------------------------------------------- */

static ng_layer *make_c2_basic(void) {
    return ng_conv("conv", 2, 3, 4, (int64_t[]){3, 3}, NULL, (int64_t[]){1, 1}, NULL, 1);
}
static ng_layer *make_c2_stride(void) { /* stride 2, padding 1, non-square kernel */
    return ng_conv("conv", 2, 3, 4, (int64_t[]){3, 2}, (int64_t[]){2, 2}, (int64_t[]){1, 1}, NULL,
                   1);
}
static ng_layer *make_c2_dil(void) { /* dilation 2, mixed strides and padding, no bias */
    return ng_conv("conv", 2, 2, 3, (int64_t[]){2, 3}, (int64_t[]){1, 2}, (int64_t[]){1, 2},
                   (int64_t[]){2, 2}, 0);
}
static ng_layer *make_c3_stride(void) {
    return ng_conv("conv3", 3, 2, 3, (int64_t[]){3, 3, 3}, (int64_t[]){2, 2, 2},
                   (int64_t[]){1, 1, 1}, NULL, 1);
}
static ng_layer *make_c3_dil(void) {
    return ng_conv("conv3", 3, 2, 2, (int64_t[]){2, 3, 1}, (int64_t[]){1, 2, 1},
                   (int64_t[]){1, 0, 2}, (int64_t[]){2, 2, 1}, 0);
}
static ng_layer *make_c3_dil_bias(void) {
    return ng_conv("conv3", 3, 3, 2, (int64_t[]){3, 2, 2}, (int64_t[]){2, 1, 2},
                   (int64_t[]){1, 1, 0}, (int64_t[]){2, 1, 2}, 1);
}

static void gradchecks(void) {
    ng_gradcheck_opts o = {.training = 1};
    ng_gradcheck("conv2d 3x3 pad 1", make_c2_basic, 4, (int64_t[]){2, 3, 6, 5}, o);
    ng_gradcheck("conv2d 3x2 stride 2 pad 1", make_c2_stride, 4, (int64_t[]){2, 3, 7, 6}, o);
    ng_gradcheck("conv2d 2x3 dilation 2 no bias", make_c2_dil, 4, (int64_t[]){2, 2, 7, 8}, o);
    ng_gradcheck("conv3d 3 stride 2 pad 1", make_c3_stride, 5, (int64_t[]){2, 2, 5, 6, 7}, o);
    ng_gradcheck("conv3d 2x3x1 dilation 2 no bias", make_c3_dil, 5, (int64_t[]){2, 2, 5, 6, 4}, o);
    ng_gradcheck("conv3d 3x2x2 dilation 2 bias", make_c3_dil_bias, 5, (int64_t[]){2, 3, 6, 4, 7},
                 o);
}

/* ---- forward against direct loops ---------------------------------------------------------- */

/* g in 3-D form (depth 1 for 2-D); x [N, C, D, H, W], w [O, C, kd, kh, kw]. */
static void ref_conv(const ng_conv_geom *g, const int64_t *xs, const int64_t *os, const double *x,
                     const double *w, const double *b, double *y, double *absy) {
    int64_t N = xs[0], C = xs[1], O = g->out_ch;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t od = 0; od < os[0]; od++)
                for (int64_t oh = 0; oh < os[1]; oh++)
                    for (int64_t ow = 0; ow < os[2]; ow++) {
                        double acc = b ? b[o] : 0, aacc = b ? fabs(b[o]) : 0;
                        for (int64_t c = 0; c < C; c++)
                            for (int64_t kd = 0; kd < g->kernel[0]; kd++)
                                for (int64_t kh = 0; kh < g->kernel[1]; kh++)
                                    for (int64_t kw = 0; kw < g->kernel[2]; kw++) {
                                        int64_t id =
                                            od * g->stride[0] - g->padding[0] + kd * g->dilation[0];
                                        int64_t ih =
                                            oh * g->stride[1] - g->padding[1] + kh * g->dilation[1];
                                        int64_t iw =
                                            ow * g->stride[2] - g->padding[2] + kw * g->dilation[2];
                                        if (id < 0 || id >= xs[2] || ih < 0 || ih >= xs[3] ||
                                            iw < 0 || iw >= xs[4])
                                            continue;
                                        double t =
                                            w[(((o * C + c) * g->kernel[0] + kd) * g->kernel[1] +
                                               kh) *
                                                  g->kernel[2] +
                                              kw] *
                                            x[(((n * C + c) * xs[2] + id) * xs[3] + ih) * xs[4] +
                                              iw];
                                        acc += t, aacc += fabs(t);
                                    }
                        int64_t i = (((n * O + o) * os[0] + od) * os[1] + oh) * os[2] + ow;
                        y[i] = acc;
                        absy[i] = aacc;
                    }
}

/* The 3-D form of a 2-D or 3-D geometry and shape, as the reference takes it. */
static void to3(const ng_conv_geom *g, const int64_t *shape, ng_conv_geom *g3, int64_t *s5) {
    *g3 = *g;
    int o = 3 - g->nd;
    s5[0] = shape[0], s5[1] = shape[1];
    for (int i = 0; i < 3; i++) {
        int j = i - o;
        s5[2 + i] = j < 0 ? 1 : shape[2 + j];
        g3->kernel[i] = j < 0 ? 1 : g->kernel[j];
        g3->stride[i] = j < 0 ? 1 : g->stride[j];
        g3->padding[i] = j < 0 ? 0 : g->padding[j];
        g3->dilation[i] = j < 0 ? 1 : g->dilation[j];
    }
}

static void forward_vs_loops(const char *what, ng_layer *(*make)(void), int ndim,
                             const int64_t *shape, ng_dtype dt) {
    ng_model *m = ng_model_new(make());
    ng_model_build(m, NG_CPU, dt, ng_test_seed(), 16 << 20, 16 << 20);
    for (int i = 0; i < m->nparams; i++) ng_test_fill_uniform(&m->params[i].param->value, -1, 1);
    ng_conv_geom g = ng_conv_geometry(m->root), g3;
    ng_tensor x = ng_tensor_new(dt, NG_CPU, ndim, shape, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);

    int64_t s5[5], os[3];
    to3(&g, shape, &g3, s5);
    for (int i = 0; i < 3; i++)
        os[i] = (s5[2 + i] + 2 * g3.padding[i] - g3.dilation[i] * (g3.kernel[i] - 1) - 1) /
                    g3.stride[i] +
                1;
    double *xd = ng_test_to_f64(&x), *wd = ng_test_to_f64(&m->params[0].param->value);
    double *bd = g.bias ? ng_test_to_f64(&m->params[1].param->value) : NULL;
    double *yd = ng_test_to_f64(&y);
    int64_t ny = s5[0] * g.out_ch * os[0] * os[1] * os[2];
    NG_TEST(ny == y.numel, "%s: output has %lld elements, expected %lld", what, (long long)y.numel,
            (long long)ny);
    double *ref = malloc(sizeof(double) * (size_t)ny), *mag = malloc(sizeof(double) * (size_t)ny);
    ref_conv(&g3, s5, os, xd, wd, bd, ref, mag);
    /* Each output sums K = C prod(kernel) products (+ bias): rounding grows at most like
     * (K + 1) eps times the sum of magnitudes. */
    int64_t K = g.in_ch * g3.kernel[0] * g3.kernel[1] * g3.kernel[2];
    double eps = dt == NG_F64 ? 1.1e-16 : 6e-8, most = 0;
    for (int64_t i = 0; i < ny; i++) most = fmax(most, mag[i]);
    ng_test_close(what, ref, yd, ny, 0, (double)(K + 2) * eps * most);
    free(xd), free(wd), free(bd), free(yd), free(ref), free(mag);
    ng_tensor_free(&x);
    ng_model_free(m);
}

static void forwards(void) {
    forward_vs_loops("conv2d forward vs loops (f64)", make_c2_stride, 4, (int64_t[]){3, 3, 9, 8},
                     NG_F64);
    forward_vs_loops("conv2d dilated forward vs loops (f32)", make_c2_dil, 4,
                     (int64_t[]){2, 2, 11, 9}, NG_F32);
    forward_vs_loops("conv3d forward vs loops (f64)", make_c3_stride, 5, (int64_t[]){2, 2, 7, 6, 9},
                     NG_F64);
    forward_vs_loops("conv3d dilated forward vs loops (f32)", make_c3_dil_bias, 5,
                     (int64_t[]){3, 3, 8, 6, 9}, NG_F32);
}

/* ---- chunking: the im2col path in pieces equals the path in one piece ---------------------- */

static ng_layer *make_chunk(void) {
    return ng_conv("c", 3, 3, 4, (int64_t[]){3, 3, 2}, (int64_t[]){1, 1, 1}, (int64_t[]){1, 1, 1},
                   (int64_t[]){1, 2, 1}, 1);
}

static void chunking(void) {
    int64_t xs[5] = {3, 3, 6, 7, 9}; /* output 6 x 5 x 10 = 300 positions, K = 54 */
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, 5, xs, "x");
    ng_tensor dy = ng_tensor_new(NG_F64, NG_CPU, 5, (int64_t[]){3, 4, 6, 5, 10}, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    uint64_t seed = ng_test_seed();
    /* One sample's columns and their gradient are 300 * 54 * 8 * 2 = 259200 bytes. */
    size_t sizes[3] = {8 << 20, 300000, 20000};
    const char *names[3] = {"", "one sample per chunk", "position chunks"};
    conv_pass ref = conv_pass_run(make_chunk, NG_CPU, NG_F64, seed, sizes[0], &x, &dy);
    for (int k = 1; k < 3; k++) {
        conv_pass p = conv_pass_run(make_chunk, NG_CPU, NG_F64, seed, sizes[k], &x, &dy);
        char what[128];
        snprintf(what, sizeof what, "conv im2col in %s: output", names[k]);
        ng_test_close(what, ref.y, p.y, ref.ny, 1e-12, 1e-12);
        snprintf(what, sizeof what, "conv im2col in %s: input grad", names[k]);
        ng_test_close(what, ref.dx, p.dx, ref.nx, 1e-12, 1e-12);
        snprintf(what, sizeof what, "conv im2col in %s: parameter grads", names[k]);
        ng_test_close(what, ref.g, p.g, ref.ng, 1e-12, 1e-12);
        conv_pass_free(&p);
    }
    conv_pass_free(&ref);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
}

/* ---- ng_im2col against a direct patch loop ------------------------------------------------- */

static void im2col_case(const char *what, const ng_conv_geom *g, const int64_t *shape,
                        ng_dtype dt) {
    int ndim = g->nd + 2;
    ng_tensor x = ng_tensor_new(dt, NG_CPU, ndim, shape, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_conv_geom g3;
    int64_t s5[5], os[3];
    to3(g, shape, &g3, s5);
    for (int i = 0; i < 3; i++)
        os[i] = (s5[2 + i] + 2 * g3.padding[i] - g3.dilation[i] * (g3.kernel[i] - 1) - 1) /
                    g3.stride[i] +
                1;
    int64_t P = os[0] * os[1] * os[2], K = s5[1] * g3.kernel[0] * g3.kernel[1] * g3.kernel[2];
    int64_t n = shape[0] - 1, p0 = P / 3, np = P - p0 - 1;
    ng_tensor cols = ng_tensor_2d(dt, NG_CPU, np, K, "cols");
    ng_test_poison(&cols);
    ng_im2col(&x, n, g, p0, np, &cols);
    double *xd = ng_test_to_f64(&x), *got = ng_test_to_f64(&cols);
    double *want = malloc(sizeof(double) * (size_t)(np * K));
    int64_t zeros = 0;
    for (int64_t r = 0; r < np; r++) {
        int64_t p = p0 + r, ow = p % os[2], oh = p / os[2] % os[1], od = p / os[2] / os[1];
        int64_t j = 0;
        for (int64_t c = 0; c < s5[1]; c++)
            for (int64_t kd = 0; kd < g3.kernel[0]; kd++)
                for (int64_t kh = 0; kh < g3.kernel[1]; kh++)
                    for (int64_t kw = 0; kw < g3.kernel[2]; kw++, j++) {
                        int64_t id = od * g3.stride[0] - g3.padding[0] + kd * g3.dilation[0];
                        int64_t ih = oh * g3.stride[1] - g3.padding[1] + kh * g3.dilation[1];
                        int64_t iw = ow * g3.stride[2] - g3.padding[2] + kw * g3.dilation[2];
                        int in =
                            id >= 0 && id < s5[2] && ih >= 0 && ih < s5[3] && iw >= 0 && iw < s5[4];
                        want[r * K + j] =
                            in ? xd[(((n * s5[1] + c) * s5[2] + id) * s5[3] + ih) * s5[4] + iw]
                               : 0.0;
                        zeros += !in;
                    }
    }
    ng_test_close(what, want, got, np * K, 0, 0);
    NG_TEST(zeros > 0, "%s: the case reaches into the padding", what);
    free(xd), free(got), free(want);
    ng_tensor_free(&x);
    ng_tensor_free(&cols);
}

static void im2cols(void) {
    ng_conv_geom g2 = {.nd = 2,
                       .in_ch = 3,
                       .out_ch = 1,
                       .kernel = {3, 2, 1},
                       .stride = {2, 1, 1},
                       .padding = {1, 1, 0},
                       .dilation = {1, 2, 1}};
    im2col_case("im2col 2-D (f64)", &g2, (int64_t[]){2, 3, 7, 6}, NG_F64);
    ng_conv_geom g3 = {.nd = 3,
                       .in_ch = 2,
                       .out_ch = 1,
                       .kernel = {2, 3, 2},
                       .stride = {2, 1, 2},
                       .padding = {1, 1, 0},
                       .dilation = {1, 2, 1}};
    im2col_case("im2col 3-D (f32)", &g3, (int64_t[]){2, 2, 5, 6, 7}, NG_F32);
    im2col_case("im2col 3-D (f64)", &g3, (int64_t[]){3, 2, 4, 7, 5}, NG_F64);
}

/* ---- initialisation, geometry, observer ---------------------------------------------------- */

static int n_input, n_grad;
static const void *seen_x, *seen_dy;
static void on_input(void *s, ng_layer *l, const ng_tensor *x) {
    (void)s, (void)l;
    n_input++, seen_x = x->data;
}
static void on_grad(void *s, ng_layer *l, const ng_tensor *g) {
    (void)s, (void)l;
    n_grad++, seen_dy = g->data;
}

static void init_geometry_observer(void) {
    ng_model *m = ng_model_new(
        ng_conv("stem", 3, 4, 16, (int64_t[]){3, 5, 3}, (int64_t[]){1, 2, 1}, NULL, NULL, 1));
    ng_model_build(m, NG_CPU, NG_F32, ng_test_seed(), 8 << 20, 8 << 20);
    ng_conv_geom g = ng_conv_geometry(m->root);
    NG_TEST(g.nd == 3 && g.in_ch == 4 && g.out_ch == 16 && g.kernel[1] == 5 && g.stride[1] == 2 &&
                g.padding[2] == 0 && g.dilation[0] == 1 && g.bias == 1,
            "ng_conv_geometry returns the construction arguments");
    NG_TEST(!strcmp(m->params[0].param->name, "stem.weight") &&
                !strcmp(m->params[1].param->name, "stem.bias") &&
                m->params[0].param->value.ndim == 5 && m->params[0].param->value.shape[3] == 5 &&
                m->params[0].param->decay == 1 && m->params[1].param->decay == 0,
            "conv parameters are stem.weight [16,4,3,5,3] (decayed) and stem.bias");
    /* Kaiming uniform: bound 1/sqrt(in * prod(kernel)) = 1/sqrt(180). */
    double bound = 1.0 / sqrt(4.0 * 45.0);
    for (int i = 0; i < 2; i++) {
        /* The largest of n uniform draws stays below t x bound with probability t^n: t is set so
         * that a correct init fails this check once in a million runs (16 biases: t = 0.42). */
        const ng_tensor *v = &m->params[i].param->value;
        double mx = ng_maxabs(v), t = pow(1e-6, 1.0 / (double)v->numel);
        NG_TEST(mx <= bound && mx > t * bound, "%s: max |init| %g within (%.2f, 1] x %g",
                m->params[i].param->name, mx, t, bound);
    }
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 5, (int64_t[]){2, 4, 3, 6, 4}, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_observer obs = {.input = on_input, .output_grad = on_grad};
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ctx.observer = &obs;
    ctx.recomputing = 1;
    ng_model_forward(m, &ctx, &x);
    NG_TEST(n_input == 0, "no input capture while recomputing (%d calls)", n_input);
    ctx.recomputing = 0;
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    ng_tensor dy = ng_tensor_new(NG_F32, NG_CPU, y.ndim, y.shape, "dy");
    ng_test_fill_uniform(&dy, -1, 1);
    ng_model_backward(m, &ctx, &dy);
    NG_TEST(n_input == 1 && n_grad == 1 && seen_x == x.data && seen_dy == dy.data,
            "observer sees the conv input and the output gradient once each");
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_model_free(m);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void errors(void) {
    ng_model *m =
        ng_model_new(ng_conv("features.3", 2, 3, 8, (int64_t[]){5, 5}, NULL, NULL, NULL, 1));
    ng_model_build(m, NG_CPU, NG_F32, 1, 1 << 20, 1 << 20);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor wrong_c = ng_tensor_new(NG_F32, NG_CPU, 4, (int64_t[]){2, 4, 8, 8}, "x");
    ng_tensor small = ng_tensor_new(NG_F32, NG_CPU, 4, (int64_t[]){2, 3, 8, 4}, "x");
    ng_tensor flat = ng_tensor_new(NG_F32, NG_CPU, 3, (int64_t[]){2, 3, 8}, "x");
    ng_test_fill_uniform(&wrong_c, -1, 1);
    ng_test_fill_uniform(&small, -1, 1);
    NG_TEST_ERROR(ng_model_forward(m, &ctx, &wrong_c), "features.3");
    NG_TEST_ERROR(ng_model_forward(m, &ctx, &wrong_c), "4 channels, expected 3");
    NG_TEST_ERROR(ng_model_forward(m, &ctx, &small), "features.3: input is too small");
    NG_TEST_ERROR(ng_model_forward(m, &ctx, &flat), "features.3");
    NG_TEST_ERROR(ng_conv("bad", 2, 3, 8, (int64_t[]){3, 0}, NULL, NULL, NULL, 1), "bad");
    NG_TEST_ERROR(ng_conv("bad4", 4, 3, 8, (int64_t[]){3, 3, 3, 3}, NULL, NULL, NULL, 1), "bad4");
    ng_layer *lin = ng_linear("head", 3, 2, 1);
    NG_TEST_ERROR(ng_conv_geometry(lin), "head");
    ng_layer_free(lin);
    ng_conv_geom g = ng_conv_geometry(m->root);
    ng_tensor cols = ng_tensor_2d(NG_F32, NG_CPU, 5, 74, "cols");
    NG_TEST_ERROR(ng_im2col(&small, 0, &g, 0, 5, &cols), "too small");
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 4, (int64_t[]){1, 3, 9, 9}, "x");
    NG_TEST_ERROR(ng_im2col(&x, 0, &g, 0, 5, &cols), "expected [5, 75]");
    NG_TEST_ERROR(ng_im2col(&x, 1, &g, 0, 5, &cols), "sample 1");
    ng_tensor_free(&wrong_c);
    ng_tensor_free(&small);
    ng_tensor_free(&flat);
    ng_tensor_free(&cols);
    ng_tensor_free(&x);
    ng_model_free(m);
}

int main(void) {
    gradchecks();
    forwards();
    chunking();
    im2cols();
    init_geometry_observer();
    errors();
    return ng_test_finish("test_conv");
}
