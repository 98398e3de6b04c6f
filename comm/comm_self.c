/* The single-process backend: world size 1 without MPI, where every collective is the identity
 * (and works on tensors of any device). */
#include <stdlib.h>

#include "comm_internal.h"

static void self_nop_buf(ng_comm *c, void *buf, int64_t n, ng_dtype dt) {
    (void)c, (void)buf, (void)n, (void)dt;
}
static void self_nop_root(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root) {
    (void)c, (void)buf, (void)n, (void)dt, (void)root;
}
static void self_nop_offs(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt) {
    (void)c, (void)buf, (void)offs, (void)dt;
}
/* A ring of one rank never sends; reaching this means an algorithm lost track of its peers. */
static void self_shift(ng_comm *c, const void *send, int64_t ns, int dst, void *recv, int64_t nr,
                       int src, ng_dtype dt, void *acc, int64_t chunk) {
    (void)c, (void)send, (void)ns, (void)recv, (void)nr, (void)dt, (void)acc, (void)chunk;
    if (dst >= 0 || src >= 0) abort();
}
static void self_barrier(ng_comm *c) {
    (void)c;
}
static void self_scalars(ng_comm *c, double *v, int n, ng_comm_scalar_op op) {
    (void)c, (void)v, (void)n, (void)op;
}
static void self_allgather_ints(ng_comm *c, const int *mine, int *all) {
    (void)c;
    all[0] = *mine;
}
static void self_split(ng_comm *parent, int color, int key, ng_comm *child) {
    (void)parent, (void)color, (void)key;
    child->rank = 0;
    child->size = 1;
}
static void self_destroy(ng_comm *c) {
    (void)c;
}
static void self_abort(ng_comm *c, int code) {
    (void)c;
    exit(code);
}
const ng_comm_ops ng_comm_self_ops = {
    .name = "self",
    .allreduce = self_nop_buf,
    .reduce = self_nop_root,
    .bcast = self_nop_root,
    .reduce_scatterv = self_nop_offs,
    .allgatherv = self_nop_offs,
    .shift = self_shift,
    .barrier = self_barrier,
    .scalars = self_scalars,
    .allgather_ints = self_allgather_ints,
    .split = self_split,
    .destroy = self_destroy,
    .abort = self_abort,
    .add = ng_comm_cpu_add,
    .divide = ng_comm_cpu_divide,
    .copy = ng_comm_cpu_copy,
};
