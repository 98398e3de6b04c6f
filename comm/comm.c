/* The communicator's public entry points: argument checks that name the tensor, the world and
 * its topology, splits, the error handler that ends every rank, and host scalars. The
 * backends (comm_self.c, comm_mpi.c, comm_nccl.c) supply the primitives. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_internal.h"
#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"

static int error_rank;

/* Any fatal error on one rank ends the job: the others may already wait in a collective. */
static void comm_error_handler(const char *msg) {
    fprintf(stderr, "natgrad: error: rank %d: %s\n", error_rank, msg);
    fflush(stderr);
    ng_comm_mpi_abort_all(NG_EXIT_USAGE);
}

ng_comm *ng_comm_init(int *argc, char ***argv, const ng_comm_config *cfg) {
    ng_comm_config d = {0};
    if (!cfg) cfg = &d;
    NG_CHECK(cfg->ranks_per_node >= 0, "comm.ranks_per_node: %d must be >= 0 (0 = detect)",
             cfg->ranks_per_node);
    ng_comm *w = calloc(1, sizeof *w);
    ng_comm_backend b = cfg->backend;
    if (b == NG_COMM_AUTO) b = ng_comm_mpi_launched() ? NG_COMM_MPI : NG_COMM_SELF;
    if (b == NG_COMM_SELF || !ng_comm_mpi_world(w, argc, argv, cfg->ranks_per_node)) {
        NG_CHECK(b == NG_COMM_SELF, "comm: the %s backend needs MPI, and this build has none",
                 ng_comm_backend_name(b));
        w->ops = &ng_comm_self_ops;
        w->backend = NG_COMM_SELF;
        w->device = NG_CPU;
        w->size = 1;
        ng_comm_set_topology(w, 0);
    }
    if (w->size > 1) { /* before anything below can fail on one rank only */
        error_rank = w->rank;
        ng_set_error_handler(comm_error_handler);
    }
    if (b == NG_COMM_NCCL)
        NG_CHECK(ng_comm_nccl_world(w), "comm: the nccl backend needs a build with CUDA and MPI");
    w->defaults = cfg->allreduce;
    if (cfg->table_file) {
        ng_allreduce_rule rules[NG_AR_MAX_RULES];
        int n = ng_allreduce_table_load(cfg->table_file, rules, NG_AR_MAX_RULES);
        ng_comm_set_table(w, rules, n);
    }
    ng_log_set_rank(w->rank, w->size);
    return w;
}

static void free_caches(ng_comm *c) {
    ng_comm_async_destroy(c);
    ng_comm_free(c->intra);
    ng_comm_free(c->leaders);
    for (int j = 0; j < c->n_chunk_comms; j++) ng_comm_free(c->chunk_comms[j]);
    free(c->chunk_comms);
    ng_comm_free(c->torus_row);
    ng_comm_free(c->torus_col);
    c->intra = c->leaders = c->torus_row = c->torus_col = NULL;
    c->chunk_comms = NULL;
    c->n_chunk_comms = c->leaders_built = c->torus_rows = 0;
}

void ng_comm_free(ng_comm *c) {
    if (!c) return;
    while (c->children) ng_comm_free(c->children);
    free_caches(c);
    if (c->parent) { /* unlink from the parent's list of public splits */
        for (ng_comm **p = &c->parent->children; *p; p = &(*p)->next_sibling)
            if (*p == c) {
                *p = c->next_sibling;
                break;
            }
    }
    if (c->scratch) {
        if (c->ops->finish) c->ops->finish(c);
        ng_free(c->device, c->scratch, c->scratch_bytes);
    }
    c->ops->destroy(c);
    free(c->node_of);
    free(c);
}

void ng_comm_finalize(ng_comm *world) {
    if (!world) return;
    int mpi = world->backend != NG_COMM_SELF;
    ng_comm_free(world);
    if (mpi) ng_comm_mpi_finalize();
}

void *ng_comm_scratch(ng_comm *c, size_t bytes) {
    if (bytes > c->scratch_bytes) {
        if (c->scratch) {
            if (c->ops->finish) c->ops->finish(c); /* queued work may still use the old one */
            ng_free(c->device, c->scratch, c->scratch_bytes);
        }
        c->scratch = ng_alloc(c->device, bytes);
        c->scratch_bytes = bytes;
    }
    return c->scratch;
}

void ng_comm_set_topology(ng_comm *c, int my_label) {
    int *labels = malloc(sizeof(int) * (size_t)c->size);
    c->ops->allgather_ints(c, &my_label, labels);
    free(c->node_of);
    c->node_of = malloc(sizeof(int) * (size_t)c->size);
    int *count = calloc((size_t)c->size, sizeof(int));
    c->nodes = 0;
    for (int r = 0; r < c->size; r++) {
        int n = -1;
        for (int q = 0; q < r && n < 0; q++)
            if (labels[q] == labels[r]) n = c->node_of[q];
        c->node_of[r] = n >= 0 ? n : c->nodes++;
        if (r == c->rank) c->local_rank = count[c->node_of[r]];
        count[c->node_of[r]]++;
    }
    c->node = c->node_of[c->rank];
    c->local_size = count[c->node];
    c->max_local_size = 0;
    for (int n = 0; n < c->nodes; n++)
        if (count[n] > c->max_local_size) c->max_local_size = count[n];
    free(count);
    free(labels);
}

ng_comm *ng_comm_split_internal(ng_comm *c, int color, int key) {
    ng_comm *child = calloc(1, sizeof *child);
    child->rank = -1;
    c->ops->split(c, color, key, child);
    if (color < 0) {
        free(child);
        return NULL;
    }
    child->ops = c->ops;
    child->backend = c->backend;
    child->device = c->device;
    child->defaults = c->defaults;
    memcpy(child->table, c->table, sizeof c->table);
    child->table_n = c->table_n;
    child->parent = c;
    ng_comm_set_topology(child, c->node);
    return child;
}

ng_comm *ng_comm_split(ng_comm *c, int color, int key) {
    ng_comm *child = ng_comm_split_internal(c, color, key);
    if (child) {
        child->next_sibling = c->children;
        c->children = child;
    }
    return child;
}

ng_comm *ng_comm_intra(ng_comm *c) {
    if (!c->intra) c->intra = ng_comm_split_internal(c, c->node, c->rank);
    return c->intra;
}

void ng_comm_abort(ng_comm *c, int code) {
    c->ops->abort(c, code);
}

ng_comm_backend ng_comm_backend_of(const ng_comm *c) {
    return c->backend;
}
const char *ng_comm_backend_name(ng_comm_backend b) {
    static const char *names[] = {"auto", "self", "mpi", "nccl"};
    return (unsigned)b < 4 ? names[b] : "?";
}
int ng_comm_rank(const ng_comm *c) {
    return c->rank;
}
int ng_comm_size(const ng_comm *c) {
    return c->size;
}
int ng_comm_node(const ng_comm *c) {
    return c->node;
}
int ng_comm_nodes(const ng_comm *c) {
    return c->nodes;
}
int ng_comm_local_rank(const ng_comm *c) {
    return c->local_rank;
}
int ng_comm_local_size(const ng_comm *c) {
    return c->local_size;
}
int ng_comm_device_for_local_rank(int local_rank, int device_count) {
    return device_count > 0 ? local_rank % device_count : 0;
}

/* The tensors a communicator moves: float types on its device (any device for one process). */
static void check_tensor(const ng_comm *c, const ng_tensor *t, const char *fn) {
    NG_CHECK(t && (t->numel == 0 || t->data), "%s: tensor '%s' has no data", fn,
             t ? ng_tensor_name(t) : "(null)");
    NG_CHECK(t->dtype == NG_F32 || t->dtype == NG_F64 || t->dtype == NG_F16 || t->dtype == NG_BF16,
             "%s: tensor '%s' is %s; collectives take f32, f64, f16 or bf16", fn, ng_tensor_name(t),
             ng_tensor_desc(t));
    NG_CHECK(c->backend == NG_COMM_SELF || t->device == c->device,
             "%s: tensor '%s' is %s but the %s communicator takes %s tensors", fn,
             ng_tensor_name(t), ng_tensor_desc(t), ng_comm_backend_name(c->backend),
             ng_device_name(c->device));
}

static void finish(ng_comm *c) {
    if (c->ops->finish) c->ops->finish(c);
}

static void begin(ng_comm *c) {
    if (c->ops->begin) c->ops->begin(c);
}

/* The blocking all-reduce without the final wait: the NCCL stream path shares it. */
void ng_comm_allreduce_enqueue(ng_comm *c, ng_tensor *t, ng_comm_op op,
                               const ng_allreduce_opts *o) {
    if (c->size == 1 || t->numel == 0) return;
    ng_allreduce_opts r = o ? *o : c->defaults;
    if (r.algo == NG_AR_AUTO) r = ng_comm_auto_choice(c, (int64_t)ng_tensor_bytes(t));
    ng_allreduce_run(c, t->data, t->numel, t->dtype, &r);
    if (op == NG_COMM_AVG) c->ops->divide(c, t->data, t->numel, t->dtype, c->size);
}

void ng_comm_allreduce_with(ng_comm *c, ng_tensor *t, ng_comm_op op, const ng_allreduce_opts *o) {
    check_tensor(c, t, "ng_comm_allreduce");
    begin(c);
    ng_comm_allreduce_enqueue(c, t, op, o);
    finish(c);
}

void ng_comm_allreduce(ng_comm *c, ng_tensor *t, ng_comm_op op) {
    ng_comm_allreduce_with(c, t, op, NULL);
}

void ng_comm_reduce_scatter(ng_comm *c, const ng_tensor *in, ng_tensor *out, ng_comm_op op) {
    check_tensor(c, in, "ng_comm_reduce_scatter");
    check_tensor(c, out, "ng_comm_reduce_scatter");
    NG_CHECK(in->dtype == out->dtype && in->numel == out->numel * c->size,
             "ng_comm_reduce_scatter: input '%s' (%s) must hold %d x the elements of output "
             "'%s' (%s), same dtype",
             ng_tensor_name(in), ng_tensor_desc(in), c->size, ng_tensor_name(out),
             ng_tensor_desc(out));
    size_t bytes = ng_tensor_bytes(in), es = ng_dtype_size(in->dtype);
    if (c->size == 1) { /* any device: core copies */
        ng_tensor_copy(out, in);
        return;
    }
    begin(c);
    int64_t *offs = malloc(sizeof(int64_t) * (size_t)(c->size + 1));
    for (int i = 0; i <= c->size; i++) offs[i] = i * out->numel;
    void *work = ng_alloc(c->device, bytes ? bytes : 1);
    c->ops->copy(c, work, in->data, bytes);
    c->ops->reduce_scatterv(c, work, offs, in->dtype);
    c->ops->copy(c, out->data, (char *)work + (size_t)offs[c->rank] * es, ng_tensor_bytes(out));
    if (op == NG_COMM_AVG) c->ops->divide(c, out->data, out->numel, out->dtype, c->size);
    finish(c);
    ng_free(c->device, work, bytes ? bytes : 1);
    free(offs);
}

void ng_comm_allgather(ng_comm *c, const ng_tensor *in, ng_tensor *out) {
    check_tensor(c, in, "ng_comm_allgather");
    check_tensor(c, out, "ng_comm_allgather");
    NG_CHECK(in->dtype == out->dtype && out->numel == in->numel * c->size,
             "ng_comm_allgather: output '%s' (%s) must hold %d x the elements of input '%s' "
             "(%s), same dtype",
             ng_tensor_name(out), ng_tensor_desc(out), c->size, ng_tensor_name(in),
             ng_tensor_desc(in));
    if (c->size == 1) {
        ng_tensor_copy(out, in);
        return;
    }
    size_t es = ng_dtype_size(in->dtype);
    begin(c);
    c->ops->copy(c, (char *)out->data + (size_t)(c->rank * in->numel) * es, in->data,
                 ng_tensor_bytes(in));
    int64_t *offs = malloc(sizeof(int64_t) * (size_t)(c->size + 1));
    for (int i = 0; i <= c->size; i++) offs[i] = i * in->numel;
    c->ops->allgatherv(c, out->data, offs, in->dtype);
    free(offs);
    finish(c);
}

void ng_comm_broadcast(ng_comm *c, ng_tensor *t, int root) {
    check_tensor(c, t, "ng_comm_broadcast");
    NG_CHECK(root >= 0 && root < c->size,
             "ng_comm_broadcast: root %d of tensor '%s' is not a "
             "rank of this communicator (size %d)",
             root, ng_tensor_name(t), c->size);
    begin(c);
    if (c->size > 1 && t->numel > 0) c->ops->bcast(c, t->data, t->numel, t->dtype, root);
    finish(c);
}

void ng_comm_barrier(ng_comm *c) {
    finish(c);
    c->ops->barrier(c);
}

void ng_comm_scalars(ng_comm *c, double *v, int n, ng_comm_scalar_op op) {
    NG_CHECK(n >= 0 && (n == 0 || v), "ng_comm_scalars: %d values", n);
    if (c->size > 1 && n > 0) c->ops->scalars(c, v, n, op);
}

ng_comm_request *ng_comm_allreduce_start(ng_comm *c, ng_tensor *t, ng_comm_op op,
                                         const ng_allreduce_opts *o) {
    check_tensor(c, t, "ng_comm_allreduce_start");
    if (c->ops->start) return c->ops->start(c, t, op, o);
    if (c->size == 1 || !ng_comm_thread_multiple()) {
        /* Without a thread that may call MPI, the bucket is reduced now; wait is then free. */
        ng_comm_allreduce_with(c, t, op, o);
        ng_comm_request *r = calloc(1, sizeof *r);
        r->done = 1;
        return r;
    }
    return ng_comm_async_start(c, t, op, o);
}

void ng_comm_wait(ng_comm_request *r) {
    if (!r) return;
    if (r->on_stream)
        r->comm->ops->wait(r);
    else if (r->comm)
        ng_comm_async_wait(r);
    else
        free(r);
}
