/* Optimizer and K-FAC memory from shapes. */
#include "optim/plan.h"

#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/linalg.h"
#include "core/ops.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "optim/kfac_kernels.h"

size_t ng_optimizer_plan_bytes(const ng_optim_config *c, int64_t numel, size_t es) {
    int states = 0;
    if (!strcmp(c->name, "sgd") && c->momentum != 0.0) states = 1;
    if (!strcmp(c->name, "adamw")) states = 2;
    return (size_t)numel * (es * (size_t)states + 1);
}

struct ng_kfac_planner {
    ng_kfac_config c;
    ng_dtype master; /* factors, inverses, group sums */
    size_t es;
    ng_device dev;
    size_t state;
    /* scratch requests in the order a step makes them: A captures in forward order; G captures
     * are the same layers in reverse, then inverse updates and preconditioning in order */
    size_t *fwd, *inv, *pre, *g;
    int64_t *side; /* the factors' sides, A then G of each layer (2 per layer) */
    int n, cap;
};

ng_kfac_planner *ng_kfac_planner_new(const ng_kfac_config *c, ng_dtype master, ng_device dev) {
    ng_kfac_planner *p = calloc(1, sizeof *p);
    NG_CHECK(p, "out of host memory planning K-FAC");
    p->c = *c, p->master = master, p->es = ng_dtype_size(master), p->dev = dev;
    return p;
}

static void push(ng_kfac_planner *p, size_t a, size_t g, size_t inv, size_t pre, int64_t da,
                 int64_t out) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        size_t **arr[4] = {&p->fwd, &p->g, &p->inv, &p->pre};
        for (int i = 0; i < 4; i++) {
            *arr[i] = realloc(*arr[i], sizeof(size_t) * (size_t)p->cap);
            NG_CHECK(*arr[i], "out of host memory planning K-FAC");
        }
        p->side = realloc(p->side, sizeof(int64_t) * 2 * (size_t)p->cap);
        NG_CHECK(p->side, "out of host memory planning K-FAC");
    }
    p->fwd[p->n] = a, p->g[p->n] = g, p->inv[p->n] = inv, p->pre[p->n] = pre;
    p->side[2 * p->n] = da, p->side[2 * p->n + 1] = out;
    p->n++;
}

void ng_kfac_planner_capture(void *self, const ng_layer *l, int ndim, const int64_t *in,
                             ng_dtype dt) {
    ng_kfac_planner *p = self;
    size_t es = p->es, ex = ng_dtype_size(dt);
    int64_t fin, out, N = in[0], numel = 1;
    int bias;
    for (int i = 0; i < ndim; i++) numel *= in[i];
    size_t a = 0, g = 0;
    if (!strcmp(l->ops->kind, "linear")) {
        ng_linear_dims(l, &fin, &out, &bias);
        int64_t R = numel / fin / N;                /* tokens per example */
        if (p->c.tokens == NG_KFAC_REDUCE && R > 1) /* group sums of x and of dy */
            a = (size_t)(N * fin) * es, g = (size_t)(N * out) * es;
    } else if (!strcmp(l->ops->kind, "conv")) {
        ng_conv_geom geom = ng_conv_geometry(l);
        fin = geom.in_ch * geom.kernel[0] * geom.kernel[1] * geom.kernel[2];
        out = geom.out_ch, bias = geom.bias;
        int64_t sp[3] = {1, 1, 1};
        ng_conv_out_spatial(&geom, in + 2, sp, l->name);
        int64_t P = sp[0] * sp[1] * sp[2]; /* capture_a_conv's chunk of patch rows */
        int64_t max_rows = (int64_t)(NG_KFAC_CHUNK_BYTES / ((size_t)fin * ex));
        if (max_rows < 1) max_rows = 1;
        int64_t nb = P <= max_rows ? max_rows / P : 0;
        if (nb > N) nb = N;
        a = (size_t)((nb ? nb * P : max_rows) * fin) * ex;
    } else {
        return;
    }
    int64_t da = fin + bias;
    size_t mats = (size_t)(da * da + out * out);
    /* A, G, their step sums (S [in, in], s [in, 1], B [out, out]), the inverses */
    size_t st = mats + (size_t)(fin * fin + (bias ? fin : 0) + out * out);
    st += p->c.inverse == NG_KFAC_EIGEN ? mats + (size_t)(da + out) : mats;
    p->state += st * es + (p->dev == NG_CPU ? NG_KFAC_META_N * sizeof(double) : 0);
    size_t inv = ng_kfac_aligned((size_t)(da * da) * es) + ng_kfac_aligned((size_t)da * es) +
                 ng_kfac_aligned((size_t)(out * out) * es) + ng_kfac_aligned((size_t)out * es);
    push(p, a, g, inv, 3 * ng_kfac_aligned((size_t)(out * da) * es), da, out);
}

size_t ng_kfac_planner_state(const ng_kfac_planner *p) {
    return p->state;
}

/* ng_kfac_scratch grows to 1.25x a request that does not fit, and never shrinks. */
static void ask(size_t *have, size_t bytes) {
    if (bytes > *have) *have = bytes + bytes / 4;
}

size_t ng_kfac_planner_scratch(const ng_kfac_planner *p) {
    size_t have = 0;
    for (int i = 0; i < p->n; i++) ask(&have, p->fwd[i]);
    for (int i = p->n - 1; i >= 0; i--) ask(&have, p->g[i]);
    for (int i = 0; i < p->n; i++) ask(&have, p->inv[i]);
    for (int i = 0; i < p->n; i++) ask(&have, p->pre[i]);
    return have;
}

static size_t larger(size_t a, size_t b) {
    return a > b ? a : b;
}

/* The factors of side `side`, and the eigh request their batch makes on step 0, when every layer
 * is due (ng_kfac_small_eigh: two or more of one side up to NG_KFAC_SMALL go in one call). */
static size_t small_batch(const ng_kfac_planner *p, int64_t side, int *estimated, int *count) {
    *count = 0;
    for (int i = 0; i < 2 * p->n; i++) *count += p->side[i] == side;
    if (*count < 2) return 0;
    return ng_linalg_cuda_workspace(NG_LINALG_EIGH, p->master, *count, side, estimated);
}

size_t ng_kfac_planner_cuda_workspace(const ng_kfac_planner *p, int *estimated, size_t *solver) {
    if (solver) *solver = 0;
    if (p->dev != NG_CUDA) return 0;
    int eigen = p->c.inverse == NG_KFAC_EIGEN;
    size_t ws = 0, sol = 0;
    for (int i = 0; i < 2 * p->n; i++) {
        int64_t n = p->side[i];
        int count = 0;
        if (eigen && n <= NG_KFAC_SMALL) sol = larger(sol, small_batch(p, n, estimated, &count));
        if (count < 2) /* a factor of its own: ng_eigh, or the damped inverse's Cholesky */
            sol = larger(
                sol, ng_linalg_cuda_workspace(eigen ? NG_LINALG_EIGH : NG_LINALG_CHOLESKY_INVERSE,
                                              p->master, 1, n, estimated));
        /* the finiteness check of the factor before its update */
        ws = larger(ws, ng_reduce_cuda_workspace(n * n));
    }
    if (solver) *solver = sol;
    return larger(ws, sol);
}

void ng_kfac_planner_free(ng_kfac_planner *p) {
    if (!p) return;
    free(p->fwd), free(p->g), free(p->inv), free(p->pre), free(p->side);
    free(p);
}
