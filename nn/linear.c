/* The Linear layer: three GEMMs (weights read in the compute dtype; dW and db land in the f32
 * master gradient straight from the GEMM's f32 accumulator). Bias add and bias gradient are rank-1
 * GEMMs against a ones vector, so the layer needs no kernels of its own and runs on any device
 * ng_gemm does; on the CPU in f32/f64 the bias add is a loop with the GEMM's bits.
 *
 * On the CPU, f32 and bf16 (the latter where the CPU has AVX512_BF16, ng_dnnl_bf16_native) run
 * the same three products on oneDNN's matmul instead (linear_onednn.c): its AVX-512 brgemm
 * kernels did the ViT's f32 Linear shapes in about half OpenBLAS's time here, and bf16 skips
 * ng_gemm's f32 copies of the operands (vdpbf16ps multiplies bf16 pairs exactly and sums in
 * f32). Results equal ng_gemm's up to the order of the f32 sums (and bf16 subnormal operands,
 * which vdpbf16ps reads as zero). f64 (gradient checks) and f16 keep ng_gemm, and so does every
 * shape oneDNN would not run on its brgemm kernels (a reference loop, or the gemm-based matmul it
 * runs on aarch64, which splits sums across threads; linear_onednn.c); except that an f16
 * evaluation forward on a CPU with fp16 arithmetic (Arm FP16, AVX512-FP16) computes in fp16 on
 * ng_hgemm (core/hgemm.h), the bias added to its f32 meeting of block sums before the one rounding.
 * Training keeps ng_gemm's f32 arithmetic: its forward and backward, and a checkpoint's replay,
 * stay the same sums. */
#include "nn/linear.h"
#include "nn/linear_onednn.h"
#include "nn/onednn.h"
#include "nn/plan.h"

#include "core/error.h"
#include "core/hgemm.h"
#include "core/ops.h"
#include "core/threads.h"

typedef struct {
    int64_t in, out;
    int bias;
    ng_tensor x;  /* saved input, viewed as [rows, in] */
    void *onednn; /* oneDNN's bf16 matmul primitives per row count */
} linear_state;

static int use_native = 1;
static long native_passes;

void ng_linear_use_onednn(int enabled) {
    use_native = enabled;
}

long ng_linear_native_passes(void) {
    return native_passes;
}

/* Whether a pass (forward, or backward) on `rows` rows runs on oneDNN's matmul; the plan asks
 * the same. */
static int on_onednn(linear_state *s, ng_device dev, ng_dtype dt, int64_t rows, int backward) {
    return dev == NG_CPU && (dt == NG_F32 || (dt == NG_BF16 && ng_dnnl_bf16_native())) &&
           use_native && rows > 0 &&
           ng_linear_onednn_native(&s->onednn, dt, rows, s->in, s->out, s->bias, backward);
}

/* Whether an f16 forward runs in fp16 arithmetic: an evaluation on a CPU that has it. */
static int on_hgemm(ng_device dev, ng_dtype dt, int training) {
    return dev == NG_CPU && dt == NG_F16 && !training && ng_hgemm_kind_now() != NG_HGEMM_NONE;
}

/* y = x W^T + b on ng_hgemm, which reads B as [in, out]: W transposed into the scratch arena. */
static void hgemm_forward(const ng_layer *l, const linear_state *s, ng_ctx *ctx, int64_t rows,
                          ng_tensor *y) {
    const ng_tensor *w = &l->params[0].compute, *b = s->bias ? &l->params[1].compute : NULL;
    NG_CHECK(w->dtype == NG_F16 && (!b || b->dtype == NG_F16),
             "linear %s: f16 input with weights %s", l->name, ng_tensor_desc(w));
    ng_arena_mark m = ng_arena_get_mark(ctx->grads);
    ng_tensor wt = ng_arena_tensor(ctx->grads, NG_F16, 2, (int64_t[]){s->in, s->out},
                                   "linear weights transposed");
    const ng_f16 *ws = w->data;
    ng_f16 *wd = wt.data;
    int64_t in = s->in, out = s->out;
#pragma omp parallel for schedule(static) if (in * out >= NG_OMP_MIN)
    for (int64_t k = 0; k < in; k++)
        for (int64_t o = 0; o < out; o++) wd[k * out + o] = ws[o * in + k];
    ng_hgemm(rows, out, in, s->x.data, in, wd, out, b ? b->data : NULL, y->data, out);
    ng_arena_release(ctx->grads, m);
}

static void linear_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                             int64_t *out) {
    const linear_state *s = l->impl;
    NG_CHECK(in[ndim - 1] == s->in, "linear %s: input's last dim is %lld, expected %lld", l->name,
             (long long)in[ndim - 1], (long long)s->in);
    *out_ndim = ndim;
    for (int i = 0; i < ndim - 1; i++) out[i] = in[i];
    out[ndim - 1] = s->out;
}

static ng_tensor ones(ng_arena *a, ng_dtype dt, int64_t n) {
    ng_tensor t = ng_arena_tensor(a, dt, 2, (int64_t[]){n, 1}, "ones");
    ng_fill(&t, 1.0);
    return t;
}

/* On the CPU in f32 and f64 the bias is added by a loop. The rank-1 GEMM against the ones column
 * forms 1 * b exactly and adds it to y with one rounding, which is what the loop does, so the
 * bits are the same; the loop saves OpenBLAS's k = 1 product (a pass over y with packing and a
 * thread team for little work) and the ones column. Other devices and dtypes keep the GEMM. */
static int bias_by_loop(ng_device dev, ng_dtype dt) {
    return dev == NG_CPU && (dt == NG_F32 || dt == NG_F64);
}

#define BIAS_ADD(T)                                                                                \
    static void bias_add_##T(T *y, const T *b, int64_t rows, int64_t out) {                        \
        _Pragma("omp parallel for schedule(static) if (rows * out >= NG_OMP_MIN)") for (           \
            int64_t r = 0; r < rows; r++) for (int64_t j = 0; j < out; j++) y[r * out + j] =       \
            y[r * out + j] + b[j];                                                                 \
    }
BIAS_ADD(float)
BIAS_ADD(double)

static ng_tensor linear_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    linear_state *s = l->impl;
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    linear_out_shape(l, x->ndim, x->shape, &ndim, shape);
    int64_t rows = x->numel / s->in;
    s->x = ng_tensor_reshape(x, 2, (int64_t[]){rows, s->in});
    ng_tensor y = ng_arena_tensor(ctx->acts, x->dtype, ndim, shape, l->name);
    ng_tensor y2 = ng_tensor_reshape(&y, 2, (int64_t[]){rows, s->out});
    if (ctx->observer && !ctx->recomputing) ctx->observer->input(ctx->observer->self, l, &s->x);
    if (on_hgemm(x->device, x->dtype, ctx->training)) {
        hgemm_forward(l, s, ctx, rows, &y);
        return y;
    }
    if (on_onednn(s, x->device, x->dtype, rows, 0)) {
        const ng_tensor *w = &l->params[0].compute, *b = s->bias ? &l->params[1].compute : NULL;
        NG_CHECK(w->dtype == x->dtype && (!b || b->dtype == x->dtype),
                 "linear %s: %s input with weights %s", l->name, ng_dtype_name(x->dtype),
                 ng_tensor_desc(w));
        ng_linear_onednn_forward(&s->onednn, x->dtype, rows, s->in, s->out, s->x.data, w->data,
                                 b ? b->data : NULL, y.data, ctx->grads);
        native_passes++;
        return y;
    }
    ng_gemm(0, 1, 1.0, &s->x, &l->params[0].compute, 0.0, &y2);
    if (s->bias && bias_by_loop(x->device, x->dtype)) {
        const ng_tensor *b = &l->params[1].compute;
        if (x->dtype == NG_F32)
            bias_add_float(y2.data, b->data, rows, s->out);
        else
            bias_add_double(y2.data, b->data, rows, s->out);
    } else if (s->bias) {
        ng_arena_mark m = ng_arena_get_mark(ctx->grads);
        ng_tensor one = ones(ctx->grads, x->dtype, rows);
        ng_tensor b = ng_tensor_reshape(&l->params[1].compute, 2, (int64_t[]){1, s->out});
        ng_gemm(0, 0, 1.0, &one, &b, 1.0, &y2);
        ng_arena_release(ctx->grads, m);
    }
    return y;
}

static void linear_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    linear_state *s = l->impl;
    int64_t rows = s->x.shape[0];
    NG_CHECK(dy->numel == rows * s->out, "linear %s: output gradient %s does not fit the forward",
             l->name, ng_tensor_desc(dy));
    ng_tensor g = ng_tensor_reshape(dy, 2, (int64_t[]){rows, s->out});
    if (ctx->observer) ctx->observer->output_grad(ctx->observer->self, l, &g);
    if (on_onednn(s, dy->device, dy->dtype, rows, 1)) {
        ng_dtype dt = dy->dtype;
        const ng_tensor *w = &l->params[0].compute, *dw = &l->params[0].grad;
        const ng_tensor *db = s->bias ? &l->params[1].grad : NULL;
        NG_CHECK(s->x.dtype == dt && w->dtype == dt,
                 "linear %s: %s output gradient with input %s and weights %s", l->name,
                 ng_dtype_name(dt), ng_tensor_desc(&s->x), ng_tensor_desc(w));
        NG_CHECK(dw->dtype == NG_F32 && (!db || db->dtype == NG_F32),
                 "linear %s: oneDNN's passes accumulate into f32 master gradients, not %s", l->name,
                 ng_tensor_desc(dw));
        NG_CHECK(!dx || dx->dtype == dt, "linear %s: input gradient %s is not %s", l->name,
                 ng_tensor_desc(dx), ng_dtype_name(dt));
        ng_linear_onednn_backward(&s->onednn, dt, rows, s->in, s->out, s->x.data, w->data, dy->data,
                                  dw->data, db ? db->data : NULL, dx ? dx->data : NULL, ctx->grads);
        native_passes++;
        return;
    }
    ng_gemm(1, 0, 1.0, &g, &s->x, 1.0, &l->params[0].grad); /* dW += dy^T x */
    if (s->bias) {
        ng_arena_mark m = ng_arena_get_mark(ctx->grads);
        ng_tensor one = ones(ctx->grads, dy->dtype, rows);
        ng_tensor db = ng_tensor_reshape(&l->params[1].grad, 2, (int64_t[]){1, s->out});
        ng_gemm(1, 0, 1.0, &one, &g, 1.0, &db); /* db += 1^T dy */
        ng_arena_release(ctx->grads, m);
    }
    if (dx) {
        ng_tensor d2 = ng_tensor_reshape(dx, 2, (int64_t[]){rows, s->in});
        ng_gemm(0, 0, 1.0, &g, &l->params[0].compute, 0.0, &d2); /* dx = dy W */
    }
}

static void linear_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                        const int64_t *in, ng_dtype dt) {
    linear_state *s = l->impl;
    int on;
    int64_t out[NG_MAX_DIMS], rows = 1;
    linear_out_shape(l, ndim, in, &on, out);
    for (int i = 0; i < ndim - 1; i++) rows *= in[i];
    if (!backward) {
        ng_sim_tensor(&sim->acts, dt, on, out);
        ng_sim_capture(sim, l, ndim, in, dt);
    }
    if (!backward && on_hgemm(sim->device, dt, sim->training)) { /* the transposed weights */
        size_t m = ng_sim_mark(&sim->grads);
        ng_sim_tensor(&sim->grads, NG_F16, 2, (int64_t[]){s->in, s->out});
        ng_sim_release(&sim->grads, m);
        return;
    }
    if (on_onednn(s, sim->device, dt, rows, backward)) { /* its scratch instead of the ones */
        ng_linear_onednn_plan(&s->onednn, dt, rows, s->in, s->out, s->bias, backward, need_dx,
                              &sim->grads);
        return;
    }
    /* the ones column of the bias GEMM: backward, and forward where no loop adds the bias */
    if (s->bias && (backward || !bias_by_loop(sim->device, dt))) {
        size_t m = ng_sim_mark(&sim->grads);
        ng_sim_tensor(&sim->grads, dt, 2, (int64_t[]){rows, 1});
        ng_sim_release(&sim->grads, m);
    }
}

static int64_t linear_flops(const ng_layer *l, int ndim, const int64_t *in) {
    const linear_state *s = l->impl;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= in[i];
    return 2 * (n / s->in) * s->in * s->out;
}

static void linear_destroy(ng_layer *l) {
    linear_state *s = l->impl;
    ng_linear_onednn_free(s->onednn);
    s->onednn = NULL;
}

static const ng_layer_ops linear_ops = {
    .kind = "linear",
    .flops = linear_flops,
    .out_shape = linear_out_shape,
    .forward = linear_forward,
    .backward = linear_backward,
    .plan = linear_plan,
    .destroy = linear_destroy,
    .out_unread = 1,
};

ng_layer *ng_linear(const char *name, int64_t in, int64_t out, int bias) {
    NG_CHECK(in > 0 && out > 0, "linear %s: features in=%lld out=%lld must be > 0", name,
             (long long)in, (long long)out);
    ng_layer *l = ng_layer_new(&linear_ops, name, sizeof(linear_state));
    linear_state *s = l->impl;
    s->in = in, s->out = out, s->bias = bias;
    l->capture = 1;
    /* PyTorch's default: uniform in +-1/sqrt(fan_in) for both (models may override, e.g. ViT's
     * trunc_normal(0.02) weights and zero biases). */
    ng_init ku = {.kind = NG_INIT_KAIMING_UNIFORM, .fan_in = in};
    ng_layer_add_param(l, "weight", 2, (int64_t[]){out, in}, ku, 1);
    if (bias) ng_layer_add_param(l, "bias", 1, (int64_t[]){out}, ku, 0);
    return l;
}

void ng_linear_dims(const ng_layer *l, int64_t *in, int64_t *out, int *bias) {
    const linear_state *s = l->impl;
    *in = s->in, *out = s->out, *bias = s->bias;
}
