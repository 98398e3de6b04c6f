/* Distributed K-FAC (KAISA, Pauloski et al. SC 2021): one all-reduce of every layer's batch
 * factors per factor step, each layer's inverse work on one rank (greedy LPT), and the choice
 * between broadcasting the eigenbases (every rank preconditions) and broadcasting the
 * preconditioned gradient (only a layer's grad workers precondition and hold its inverses).
 *
 * With g = grad workers per layer, the ranks form blocks of g consecutive ranks. A layer's
 * inverses are computed by its owner and broadcast inside the owner's block (the layer's grad
 * workers); each grad worker preconditions, and the rank at the same position in every other
 * block (a "column") receives the preconditioned gradient from it. g = world: one block, no
 * gradient broadcast (KAISA's COMM-OPT); g = 1: blocks of one, no inverse broadcast (MEM-OPT). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/ops.h"
#include "optim/kfac_assign.h"
#include "optim/kfac_kernels.h"

struct ng_kfac_dist {
    ng_comm *world, *block, *column;
    int rank, size, g; /* g grad workers per layer: world % g == 0 */
    int *owner;        /* per registered layer */
    ng_tensor buf;     /* packing buffer on the model's device, grown on demand */
};

static ng_tensor pack_buffer(ng_kfac *k, int64_t n) {
    ng_kfac_dist *d = k->dist;
    if (d->buf.numel < n) {
        ng_sync(k->m->device);
        if (d->buf.data) ng_tensor_free(&d->buf);
        d->buf = ng_tensor_1d(k->m->dtype, k->m->device, n + n / 4 + 64, "kfac exchange buffer");
    }
    return ng_tensor_view(&d->buf, 0, 1, (int64_t[]){n}, "kfac exchange buffer");
}

/* Copies t into (to_buf) or out of the buffer at *at, advancing *at. */
static void move(ng_tensor *buf, int64_t *at, ng_tensor *t, int to_buf) {
    if (!t->data || !t->numel) return;
    ng_tensor flat = ng_tensor_reshape(t, 1, (int64_t[]){t->numel});
    ng_tensor part = ng_tensor_view(buf, *at, 1, (int64_t[]){t->numel}, "kfac exchange part");
    if (to_buf)
        ng_copy(&part, &flat);
    else
        ng_copy(&flat, &part);
    *at += t->numel;
}

static int is_grad_worker(const ng_kfac_dist *d, int owner) {
    return d->rank / d->g == owner / d->g;
}

/* The inverse state a grad worker holds for layer L. */
static int inverse_tensors(ng_kfac *k, ng_kfac_layer *L, ng_tensor **ts) {
    if (k->c.inverse == NG_KFAC_EIGEN) {
        ts[0] = &L->QA, ts[1] = &L->dA, ts[2] = &L->QG, ts[3] = &L->dG;
        return 4;
    }
    ts[0] = &L->Ainv, ts[1] = &L->Ginv;
    return 2;
}

int ng_kfac_grad_workers(double grad_worker_fraction, int world) {
    double gf = grad_worker_fraction * world;
    int g = (int)lround(gf);
    NG_CHECK(grad_worker_fraction > 0 && grad_worker_fraction <= 1 && fabs(gf - g) < 1e-9 &&
                 g >= 1 && world % g == 0,
             "kfac.grad_worker_fraction: %g times %d ranks must be a whole number of grad workers "
             "that divides the world (e.g. 1, 0.5, 1/%d)",
             grad_worker_fraction, world, world);
    return g;
}

void ng_kfac_distribute(ng_kfac *k, ng_comm *c, double grad_worker_fraction) {
    NG_CHECK(!k->dist, "kfac: K-FAC is already distributed");
    if (!c || ng_comm_size(c) == 1) return;
    int size = ng_comm_size(c), g = ng_kfac_grad_workers(grad_worker_fraction, size);
    ng_kfac_dist *d = calloc(1, sizeof *d);
    NG_CHECK(d, "out of host memory distributing K-FAC");
    d->world = c, d->rank = ng_comm_rank(c), d->size = size, d->g = g;
    d->block = ng_comm_split(c, d->rank / g, d->rank);
    d->column = ng_comm_split(c, d->rank % g, d->rank);
    d->owner = malloc(sizeof *d->owner * (size_t)(k->n + 1));
    double *cost = malloc(sizeof *cost * (size_t)(k->n + 1));
    NG_CHECK(d->owner && cost, "out of host memory distributing K-FAC");
    for (int i = 0; i < k->n; i++) cost[i] = ng_kfac_layer_cost(k->layers[i].da, k->layers[i].out);
    ng_kfac_assign_lpt(cost, k->n, size, d->owner);
    free(cost);
    /* The memory a rank saves: inverses of layers it does not precondition are never held. */
    for (int i = 0; i < k->n; i++) {
        if (is_grad_worker(d, d->owner[i])) continue;
        ng_tensor *ts[4];
        int nt = inverse_tensors(k, &k->layers[i], ts);
        for (int j = 0; j < nt; j++) ng_tensor_free(ts[j]), memset(ts[j], 0, sizeof *ts[j]);
    }
    k->dist = d;
}

void ng_kfac_dist_free(ng_kfac *k) {
    ng_kfac_dist *d = k->dist;
    if (!d) return;
    if (d->buf.data) ng_tensor_free(&d->buf);
    ng_comm_free(d->block);
    ng_comm_free(d->column);
    free(d->owner);
    free(d);
    k->dist = NULL;
}

int ng_kfac_dist_owns(const ng_kfac *k, int i) {
    return !k->dist || k->dist->owner[i] == k->dist->rank;
}

int ng_kfac_dist_preconditions(const ng_kfac *k, int i) {
    return !k->dist || is_grad_worker(k->dist, k->dist->owner[i]);
}

int ng_kfac_sharded(const ng_kfac *k, int *rank, int *world) {
    if (!k->dist || k->dist->g == k->dist->size) return 0;
    *rank = k->dist->rank, *world = k->dist->size;
    return 1;
}

int ng_kfac_owner(const ng_kfac *k, int i) {
    NG_CHECK(i >= 0 && i < k->n, "kfac: layer %d of %d", i, k->n);
    return k->dist ? k->dist->owner[i] : 0;
}

/* This step's batch sums of every layer (S, s, B; the corner is the same count on every rank)
 * averaged over the ranks in one all-reduce. Every rank's sums are normalised by its own batch,
 * so with equal local batches the mean is the sum over the global batch, normalised by it. */
void ng_kfac_dist_reduce_factors(ng_kfac *k) {
    int64_t n = 0;
    for (int i = 0; i < k->n; i++) {
        ng_kfac_layer *L = &k->layers[i];
        if (L->na) n += L->S.numel + (L->bias ? L->s.numel : 0);
        if (L->ng) n += L->B.numel;
    }
    if (!n) return;
    ng_tensor buf = pack_buffer(k, n);
    for (int way = 1; way >= 0; way--) {
        int64_t at = 0;
        for (int i = 0; i < k->n; i++) {
            ng_kfac_layer *L = &k->layers[i];
            if (L->na) move(&buf, &at, &L->S, way);
            if (L->na && L->bias) move(&buf, &at, &L->s, way);
            if (L->ng) move(&buf, &at, &L->B, way);
        }
        if (way) ng_comm_allreduce(k->dist->world, &buf, NG_COMM_AVG);
    }
}

/* Counts (buf NULL) or moves the inverses of the due layers owned by `owner`. */
static int64_t walk_inverses(ng_kfac *k, const int *due, int owner, ng_tensor *buf, int to_buf) {
    int64_t at = 0;
    for (int i = 0; i < k->n; i++) {
        if (!due[i] || k->dist->owner[i] != owner) continue;
        ng_tensor *ts[4];
        int nt = inverse_tensors(k, &k->layers[i], ts);
        for (int t = 0; t < nt; t++)
            if (buf)
                move(buf, &at, ts[t], to_buf);
            else
                at += ts[t]->numel;
    }
    return at;
}

/* After the owners' inverse updates of the layers in `due`: every rank learns each due layer's
 * meta (inverse ready, pi), and the grad workers of each layer receive its inverses from the
 * owner, one broadcast per position in the block. */
void ng_kfac_dist_share_inverses(ng_kfac *k, const int *due) {
    ng_kfac_dist *d = k->dist;
    int any = 0;
    for (int i = 0; i < k->n; i++) any |= due[i];
    if (!any) return;
    double *meta = calloc((size_t)(2 * k->n), sizeof *meta);
    NG_CHECK(meta, "out of host memory in K-FAC");
    for (int i = 0; i < k->n; i++)
        if (due[i] && d->owner[i] == d->rank) {
            const double *m = k->layers[i].meta.data;
            meta[2 * i] = m[NG_KFAC_META_INV], meta[2 * i + 1] = m[NG_KFAC_META_PI];
        }
    ng_comm_scalars(d->world, meta, 2 * k->n, NG_COMM_SCALAR_SUM);
    for (int i = 0; i < k->n; i++)
        if (due[i]) {
            double *m = k->layers[i].meta.data;
            m[NG_KFAC_META_INV] = meta[2 * i], m[NG_KFAC_META_PI] = meta[2 * i + 1];
        }
    free(meta);
    int base = d->rank / d->g * d->g;
    for (int j = 0; j < d->g && d->g > 1; j++) {
        int sender = base + j;
        int64_t n = walk_inverses(k, due, sender, NULL, 0);
        if (!n) continue;
        ng_tensor buf = pack_buffer(k, n);
        if (d->rank == sender) walk_inverses(k, due, sender, &buf, 1);
        ng_comm_broadcast(d->block, &buf, j);
        if (d->rank != sender) walk_inverses(k, due, sender, &buf, 0);
    }
}

/* Counts (buf NULL) or moves the gradients of the preconditioned layers whose owner sits in
 * block b. */
static int64_t walk_grads(ng_kfac *k, int b, ng_tensor *buf, int to_buf) {
    int64_t at = 0;
    for (int i = 0; i < k->n; i++) {
        ng_kfac_layer *L = &k->layers[i];
        if (!L->preconditioned || k->dist->owner[i] / k->dist->g != b) continue;
        for (int p = 0; p < 1 + L->bias; p++)
            if (buf)
                move(buf, &at, &L->layer->params[p].grad, to_buf);
            else
                at += L->layer->params[p].grad.numel;
    }
    return at;
}

/* After the grad workers preconditioned their layers: every other rank receives those
 * gradients along its column, and the KL clip's <dW', dW> sum (each layer counted by its owner
 * only) is summed over the ranks. Returns the global sum. */
double ng_kfac_dist_share_grads(ng_kfac *k, double vg_owned) {
    ng_kfac_dist *d = k->dist;
    int blocks = d->size / d->g, mine = d->rank / d->g;
    for (int b = 0; b < blocks && blocks > 1; b++) {
        int64_t n = walk_grads(k, b, NULL, 0);
        if (!n) continue;
        ng_tensor buf = pack_buffer(k, n);
        if (b == mine) walk_grads(k, b, &buf, 1);
        ng_comm_broadcast(d->column, &buf, b);
        if (b != mine) walk_grads(k, b, &buf, 0);
    }
    ng_comm_scalars(d->world, &vg_owned, 1, NG_COMM_SCALAR_SUM);
    return vg_owned;
}
