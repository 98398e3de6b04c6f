/* The patch embedding layer (patchify by permute, a Linear, class token and position
 * embedding) and the CPU twin of the block-copy kernel it shares with class pooling. */
#include "nn/patch_embed.h"

#include <stdio.h>
#include <string.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "core/ops.h"
#include "nn/linear.h"
#include "nn/vit_kernels.h"
#include "nn/plan.h"

/* ---- block copy -------------------------------------------------------------------------- */

static void copy_blocks_cpu(ng_tensor *dst, int64_t dst_off, int64_t dst_stride,
                            const ng_tensor *src, int64_t src_off, int64_t src_stride,
                            int64_t nblocks, int64_t len) {
    size_t es = ng_dtype_size(dst->dtype);
    char *d = (char *)dst->data + (size_t)dst_off * es;
    const char *s = (const char *)src->data + (size_t)src_off * es;
    for (int64_t b = 0; b < nblocks; b++)
        memcpy(d + (size_t)(b * dst_stride) * es, s + (size_t)(b * src_stride) * es,
               (size_t)len * es);
}

static void need_inside(const char *what, const ng_tensor *t, int64_t off, int64_t stride,
                        int64_t nblocks, int64_t len) {
    NG_CHECK(off >= 0 && stride >= 0 && off + (nblocks - 1) * stride + len <= t->numel,
             "ng_vit_copy_blocks: %s '%s' %s: %lld blocks of %lld at offset %lld, stride %lld "
             "run past its end",
             what, ng_tensor_name(t), ng_tensor_desc(t), (long long)nblocks, (long long)len,
             (long long)off, (long long)stride);
}

void ng_vit_copy_blocks(ng_tensor *dst, int64_t dst_off, int64_t dst_stride, const ng_tensor *src,
                        int64_t src_off, int64_t src_stride, int64_t nblocks, int64_t len) {
    NG_CHECK(dst->dtype == src->dtype && dst->device == src->device,
             "ng_vit_copy_blocks: '%s' %s and '%s' %s differ in dtype or device",
             ng_tensor_name(src), ng_tensor_desc(src), ng_tensor_name(dst), ng_tensor_desc(dst));
    NG_CHECK(nblocks >= 0 && len >= 0, "ng_vit_copy_blocks: negative block count or length");
    if (!nblocks || !len) return;
    need_inside("source", src, src_off, src_stride, nblocks, len);
    need_inside("destination", dst, dst_off, dst_stride, nblocks, len);
    NG_CHECK(nblocks == 1 || dst_stride >= len,
             "ng_vit_copy_blocks: destination blocks of %lld overlap at stride %lld",
             (long long)len, (long long)dst_stride);
    NG_DISPATCH(
        dst, copy_blocks_cpu(dst, dst_off, dst_stride, src, src_off, src_stride, nblocks, len),
        ng_vit_copy_blocks_cuda(dst, dst_off, dst_stride, src, src_off, src_stride, nblocks, len));
}

/* ---- the layer --------------------------------------------------------------------------- */

typedef struct {
    int64_t img, patch, in_ch, dim, grid, tokens; /* tokens = 1 + grid^2 */
    int64_t B;                                    /* of the last forward */
} pe_state;

enum { CLS = 0, POS = 1 };

static void pe_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                         int64_t *out) {
    const pe_state *s = l->impl;
    if (!(ndim == 4 && in[1] == s->in_ch && in[2] == s->img && in[3] == s->img)) {
        char got[96];
        int n = snprintf(got, sizeof got, "[");
        for (int i = 0; i < ndim && n < 80; i++)
            n += snprintf(got + n, sizeof got - (size_t)n, i ? ", %lld" : "%lld", (long long)in[i]);
        snprintf(got + n, sizeof got - (size_t)n, "]");
        ng_fail("patch_embed %s: input must be [batch, %lld, %lld, %lld] images, got %s", l->name,
                (long long)s->in_ch, (long long)s->img, (long long)s->img, got);
    }
    *out_ndim = 3;
    out[0] = in[0], out[1] = s->tokens, out[2] = s->dim;
}

/* The proj weight is declared 4-D (timm's conv layout) but the Linear multiplies by it as
 * [dim, in_ch*P*P]: the same memory, viewed as a matrix only while the child runs. */
typedef struct {
    ng_tensor value, compute, grad;
} weight_views;

static weight_views weight_as_matrix(ng_layer *proj) {
    ng_param *w = &proj->params[0];
    weight_views keep = {w->value, w->compute, w->grad};
    int64_t shape[2] = {w->value.shape[0], w->value.numel / w->value.shape[0]};
    w->value = ng_tensor_reshape(&keep.value, 2, shape);
    w->compute = ng_tensor_reshape(&keep.compute, 2, shape);
    w->grad = ng_tensor_reshape(&keep.grad, 2, shape);
    return keep;
}

static void weight_restore(ng_layer *proj, weight_views keep) {
    proj->params[0].value = keep.value;
    proj->params[0].compute = keep.compute;
    proj->params[0].grad = keep.grad;
}

static ng_tensor pe_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    pe_state *s = l->impl;
    ng_layer *proj = l->children[0];
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    ng_layer_out_shape(l, x->ndim, x->shape, &ndim, shape);
    int64_t B = x->shape[0], C = s->in_ch, P = s->patch, G = s->grid, N = G * G, D = s->dim;
    int64_t T = s->tokens;
    s->B = B;

    /* [B, C, G, P, G, P] -> [B, G, G, C, P, P]: one row of C*P*P columns per patch. proj keeps
     * this as its input, so it lives in the activation arena. */
    ng_tensor cols =
        ng_arena_tensor(ctx->acts, x->dtype, 3, (int64_t[]){B, N, C * P * P}, "patches");
    ng_vit_permute(x, &cols, 6, (int64_t[]){B, C, G, P, G, P}, (int[]){0, 2, 4, 1, 3, 5});
    ng_tensor y = ng_arena_tensor(ctx->acts, x->dtype, 3, shape, l->name);

    /* proj's output is copied into y and not needed by its backward: released at once. */
    ng_arena_mark am = ng_arena_get_mark(ctx->acts);
    weight_views keep = weight_as_matrix(proj);
    ctx->inplace = 0, ctx->output_unused = 0;
    ng_tensor tok = proj->ops->forward(proj, ctx, &cols);
    weight_restore(proj, keep);
    ng_vit_copy_blocks(&y, D, T * D, &tok, 0, N * D, B, N * D);
    ng_vit_copy_blocks(&y, 0, T * D, &l->params[CLS].compute, 0, 0, B, D);
    ng_arena_release(ctx->acts, am);

    /* y[b] += pos_embed for every b: a rank-1 GEMM against a ones column. */
    ng_arena_mark gm = ng_arena_get_mark(ctx->grads);
    ng_tensor ones = ng_arena_tensor(ctx->grads, x->dtype, 2, (int64_t[]){B, 1}, "ones");
    ng_fill(&ones, 1.0);
    ng_tensor y2 = ng_tensor_reshape(&y, 2, (int64_t[]){B, T * D});
    ng_tensor pos = ng_tensor_reshape(&l->params[POS].compute, 2, (int64_t[]){1, T * D});
    ng_gemm(0, 0, 1.0, &ones, &pos, 1.0, &y2);
    ng_arena_release(ctx->grads, gm);
    return y;
}

static void pe_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    pe_state *s = l->impl;
    ng_layer *proj = l->children[0];
    ctx->dy_scratch = 0; /* its sub-layer keeps its hands off dy */
    int64_t B = s->B, C = s->in_ch, P = s->patch, G = s->grid, N = G * G, D = s->dim;
    int64_t T = s->tokens;
    NG_CHECK(B && dy->numel == B * T * D,
             "patch_embed %s: output gradient %s does not fit the last forward", l->name,
             ng_tensor_desc(dy));
    ng_dtype dt = dy->dtype;
    ng_arena_mark gm = ng_arena_get_mark(ctx->grads);

    /* Sum of dy over the batch: all of it is pos_embed's gradient, its token 0 cls_token's. */
    ng_tensor ones = ng_arena_tensor(ctx->grads, dt, 2, (int64_t[]){B, 1}, "ones");
    ng_fill(&ones, 1.0);
    /* The sum is formed in the gradients' dtype: f32 straight from the GEMM's accumulator when dy
     * is f16/bf16 (mixed precision), so it is rounded once, not twice. */
    ng_tensor *dpos = &l->params[POS].grad, *dcls = &l->params[CLS].grad;
    ng_tensor sum =
        ng_arena_tensor(ctx->grads, dpos->dtype, 2, (int64_t[]){1, T * D}, "dy batch sum");
    ng_tensor dy2 = ng_tensor_reshape(dy, 2, (int64_t[]){B, T * D});
    ng_gemm(1, 0, 1.0, &ones, &dy2, 0.0, &sum);
    ng_tensor sum_pos = ng_tensor_view(&sum, 0, dpos->ndim, dpos->shape, "dy batch sum");
    ng_tensor sum_cls = ng_tensor_view(&sum, 0, dcls->ndim, dcls->shape, "dy batch sum");
    ng_axpy(1.0, &sum_pos, dpos);
    ng_axpy(1.0, &sum_cls, dcls);

    ng_tensor dtok = ng_arena_tensor(ctx->grads, dt, 3, (int64_t[]){B, N, D}, "d patch tokens");
    ng_vit_copy_blocks(&dtok, 0, N * D, dy, D, T * D, B, N * D);
    ng_tensor dcols = {0};
    if (dx) dcols = ng_arena_tensor(ctx->grads, dt, 3, (int64_t[]){B, N, C * P * P}, "d patches");
    weight_views keep = weight_as_matrix(proj);
    ng_layer_backward(proj, ctx, &dtok, dx ? &dcols : NULL);
    weight_restore(proj, keep);
    if (dx) ng_vit_permute(&dcols, dx, 6, (int64_t[]){B, G, G, C, P, P}, (int[]){0, 3, 1, 4, 2, 5});
    ng_arena_release(ctx->grads, gm);
}

static void pe_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                    const int64_t *in, ng_dtype dt) {
    (void)ndim;
    pe_state *s = l->impl;
    ng_layer *proj = l->children[0];
    int64_t B = in[0], C = s->in_ch, P = s->patch, N = s->grid * s->grid, D = s->dim;
    int64_t T = s->tokens, cols[3] = {B, N, C * P * P};
    if (!backward) {
        ng_sim_tensor(&sim->acts, dt, 3, cols);
        ng_sim_tensor(&sim->acts, dt, 3, (int64_t[]){B, T, D});
        size_t am = ng_sim_mark(&sim->acts);
        sim->inplace = 0, sim->output_unused = 0;
        ng_layer_plan(proj, sim, 0, 0, 3, cols, dt);
        ng_sim_release(&sim->acts, am);
        size_t gm = ng_sim_mark(&sim->grads);
        ng_sim_tensor(&sim->grads, dt, 2, (int64_t[]){B, 1});
        ng_sim_release(&sim->grads, gm);
        return;
    }
    size_t gm = ng_sim_mark(&sim->grads);
    ng_sim_tensor(&sim->grads, dt, 2, (int64_t[]){B, 1});
    ng_sim_tensor(&sim->grads, sim->master, 2, (int64_t[]){1, T * D});
    ng_sim_tensor(&sim->grads, dt, 3, (int64_t[]){B, N, D});
    if (need_dx) ng_sim_tensor(&sim->grads, dt, 3, cols);
    ng_layer_plan(proj, sim, 1, need_dx, 3, cols, dt);
    ng_sim_release(&sim->grads, gm);
}

/* The projection of the patches (a Linear on [B, grid^2, C p^2]), then one per output element
 * for the class token and position embedding. */
static int64_t pe_flops(const ng_layer *l, int ndim, const int64_t *in) {
    const pe_state *s = l->impl;
    int64_t cols[3] = {in[0], s->grid * s->grid, s->in_ch * s->patch * s->patch};
    (void)ndim;
    return ng_layer_flops(l->children[0], 3, cols) + in[0] * s->tokens * s->dim;
}

static const ng_layer_ops pe_ops = {
    .kind = "patch_embed",
    .flops = pe_flops,
    .out_shape = pe_out_shape,
    .forward = pe_forward,
    .backward = pe_backward,
    .plan = pe_plan,
};

ng_layer *ng_patch_embed(const char *name, int64_t img_size, int64_t patch, int64_t in_ch,
                         int64_t dim) {
    NG_CHECK(img_size > 0 && patch > 0 && in_ch > 0 && dim > 0,
             "patch_embed %s: img_size %lld, patch %lld, in_ch %lld, dim %lld must all be > 0",
             name, (long long)img_size, (long long)patch, (long long)in_ch, (long long)dim);
    NG_CHECK(img_size % patch == 0,
             "patch_embed %s: image size %lld is not divisible by patch %lld", name,
             (long long)img_size, (long long)patch);
    /* Created under the enclosing scope's name so that its own parameters get timm's names,
     * then renamed to `name` for messages and for its child. */
    const char *dot = strrchr(name, '.');
    char scope[sizeof(((ng_layer *)0)->name)];
    snprintf(scope, sizeof scope, "%.*s", dot ? (int)(dot - name) : 0, name);
    ng_layer *l = ng_layer_new(&pe_ops, scope, sizeof(pe_state));
    NG_CHECK(strlen(name) < sizeof l->name, "layer name '%s' is longer than %zu characters", name,
             sizeof l->name - 1);
    pe_state *s = l->impl;
    s->img = img_size, s->patch = patch, s->in_ch = in_ch, s->dim = dim;
    s->grid = img_size / patch;
    s->tokens = 1 + s->grid * s->grid;
    ng_layer_add_param(l, "cls_token", 3, (int64_t[]){1, 1, dim},
                       (ng_init){.kind = NG_INIT_NORMAL, .a = 1e-6}, 0);
    ng_layer_add_param(l, "pos_embed", 3, (int64_t[]){1, s->tokens, dim},
                       (ng_init){.kind = NG_INIT_TRUNC_NORMAL, .a = 0.02}, 0);
    snprintf(l->name, sizeof l->name, "%s", name);

    char child[sizeof l->name + 8];
    snprintf(child, sizeof child, "%s.proj", name);
    ng_layer *proj = ng_linear(child, in_ch * patch * patch, dim, 1);
    ng_param *w = &proj->params[0];
    w->value = ng_tensor_wrap(NULL, w->value.dtype, w->value.device, 4,
                              (int64_t[]){dim, in_ch, patch, patch}, w->name);
    w->grad = w->compute = w->value;
    ng_layer_add_child(l, proj);
    return l;
}
