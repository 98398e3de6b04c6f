/* The hierarchical all-reduce patterns of Ueno & Yokota (CCGrid 2019): reduce-scatter within
 * nodes (hier_rs), reduce to node leaders (hier_leader), and a 2D torus. Each level runs the
 * library's collective or natgrad's ring. Every element is summed once, by one group, and then
 * copied, so all ranks end with the same bits. The sub-communicators are split on first use;
 * that is collective, which holds because every rank runs the same all-reduces in order. */
#include <stdlib.h>

#include "comm_internal.h"
#include "core/memory.h"

static char *at(void *buf, int64_t off, ng_dtype dt) {
    return (char *)buf + (size_t)off * ng_dtype_size(dt);
}

/* hier_rs splits the message into L = (largest node size) chunks. On a node of l ranks, chunk
 * j belongs to local rank j*l/L, so each rank owns a contiguous run of chunks and, on full
 * nodes, exactly one. The inter-node group of chunk j holds its owner on every node: on uneven
 * nodes (2+1) the lone rank of the small node owns, and all-reduces, every chunk. */
static int chunk_owner(int j, int l, int L) {
    return (int)((int64_t)j * l / L);
}

void ng_hier_rs(ng_comm *c, void *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o) {
    ng_comm *intra = ng_comm_intra(c);
    int L = c->max_local_size, l = c->local_size;
    if (!c->chunk_comms) {
        c->chunk_comms = calloc((size_t)L, sizeof(ng_comm *));
        c->n_chunk_comms = L;
        for (int j = 0; j < L; j++)
            c->chunk_comms[j] =
                ng_comm_split_internal(c, chunk_owner(j, l, L) == c->local_rank ? 0 : -1, c->node);
    }
    int64_t chunk = ng_chunk_elems(o, dt);
    int64_t *bounds = malloc(sizeof(int64_t) * (size_t)(L + 1 + l + 1)), *offs = bounds + L + 1;
    ng_balanced_offsets(n, L, bounds);
    for (int i = 0; i <= l; i++) offs[i] = bounds[(i * L + l - 1) / l]; /* first chunk of rank i */
    if (o->intra == NG_LEVEL_RING)
        ng_ring_reduce_scatterv(intra, buf, offs, dt, chunk);
    else if (l > 1)
        intra->ops->reduce_scatterv(intra, buf, offs, dt);
    for (int j = 0; j < L; j++)
        if (c->chunk_comms[j])
            ng_level_allreduce(c->chunk_comms[j], at(buf, bounds[j], dt), bounds[j + 1] - bounds[j],
                               dt, o->inter, chunk);
    if (o->intra == NG_LEVEL_RING)
        ng_ring_allgatherv(intra, buf, offs, dt, chunk);
    else if (l > 1)
        intra->ops->allgatherv(intra, buf, offs, dt);
    free(bounds);
}

void ng_hier_leader(ng_comm *c, void *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o) {
    ng_comm *intra = ng_comm_intra(c);
    if (!c->leaders_built) { /* NULL on the ranks that are not leaders */
        c->leaders = ng_comm_split_internal(c, c->local_rank == 0 ? 0 : -1, c->node);
        c->leaders_built = 1;
    }
    int64_t chunk = ng_chunk_elems(o, dt);
    if (intra->size > 1) {
        if (o->intra == NG_LEVEL_RING)
            ng_ring_reduce(intra, buf, n, dt, 0, chunk);
        else
            intra->ops->reduce(intra, buf, n, dt, 0);
    }
    if (c->leaders) ng_level_allreduce(c->leaders, buf, n, dt, o->inter, chunk);
    if (intra->size > 1) {
        if (o->intra == NG_LEVEL_RING)
            ng_ring_bcast(intra, buf, n, dt, 0, chunk);
        else
            intra->ops->bcast(intra, buf, n, dt, 0);
    }
}

/* The torus is a grid of R rows (default: one per node) and C = ceil(size/R) columns; rank r
 * sits at row r / C, column r % C. On a full grid: all-reduce along each row, then along each
 * column; every column sums the same row sums in the same order, so all ranks agree bit for
 * bit. When the last row is short (3 ranks as 2+1), only column 0 is complete: after the row
 * all-reduce, column 0 all-reduces the row sums and broadcasts the total along each row. */
void ng_torus(ng_comm *c, void *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o) {
    int R = o->torus_rows > 0 ? o->torus_rows : c->nodes;
    if (R > c->size) R = c->size;
    int C = (c->size + R - 1) / R;
    R = (c->size + C - 1) / C;
    int row = c->rank / C, col = c->rank % C, full = R * C == c->size;
    if (c->torus_rows != R) {
        ng_comm_free(c->torus_row);
        ng_comm_free(c->torus_col);
        c->torus_row = ng_comm_split_internal(c, row, col);
        c->torus_col = ng_comm_split_internal(c, full ? col : col == 0 ? 0 : -1, row);
        c->torus_rows = R;
    }
    int64_t chunk = ng_chunk_elems(o, dt);
    ng_level_allreduce(c->torus_row, buf, n, dt, o->intra, chunk);
    ng_level_allreduce(c->torus_col, buf, n, dt, o->inter, chunk);
    if (!full && c->torus_row->size > 1) {
        if (o->intra == NG_LEVEL_RING)
            ng_ring_bcast(c->torus_row, buf, n, dt, 0, chunk);
        else
            c->torus_row->ops->bcast(c->torus_row, buf, n, dt, 0);
    }
}
