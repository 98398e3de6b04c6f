/* The hierarchical all-reduce patterns of Ueno & Yokota (CCGrid 2019): reduce-scatter within
 * nodes (hier_rs), reduce to node leaders (hier_leader), and a 2D torus. Each level runs the
 * library's collective or natgrad's ring. Every element is summed once, by one group, and then
 * copied, so all ranks end with the same bits. The sub-communicators are split on first use;
 * that is collective, which holds because every rank runs the same all-reduces in order. */
#include <pthread.h>
#include <stdlib.h>

#include "comm_internal.h"
#include "core/error.h"
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

/* The chunk bounds (L + 1) and the first chunk of each local rank (l + 1) of an n-element piece. */
static void rs_layout(const ng_comm *c, int64_t n, int64_t *bounds, int64_t *offs) {
    int L = c->max_local_size, l = c->local_size;
    ng_balanced_offsets(n, L, bounds);
    for (int i = 0; i <= l; i++) offs[i] = bounds[(i * L + l - 1) / l]; /* first chunk of rank i */
}

static void rs_intra(ng_comm *c, char *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o,
                     int gather) {
    ng_comm *intra = ng_comm_intra(c);
    int64_t bounds[65], offs[65], chunk = ng_chunk_elems(o, dt);
    rs_layout(c, n, bounds, offs);
    if (o->intra == NG_LEVEL_RING)
        (gather ? ng_ring_allgatherv : ng_ring_reduce_scatterv)(intra, buf, offs, dt, chunk);
    else if (c->local_size > 1)
        (gather ? intra->ops->allgatherv : intra->ops->reduce_scatterv)(intra, buf, offs, dt);
}

static void rs_inter(ng_comm *c, char *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o) {
    int64_t bounds[65], offs[65], chunk = ng_chunk_elems(o, dt);
    rs_layout(c, n, bounds, offs);
    for (int j = 0; j < c->max_local_size; j++)
        if (c->chunk_comms[j])
            ng_level_allreduce(c->chunk_comms[j], at(buf, bounds[j], dt), bounds[j + 1] - bounds[j],
                               dt, o->inter, chunk);
}

/* A pipeline of pieces (Ueno & Yokota's point: the inter-node phase should never wait for the
 * intra-node ones): a second thread runs the inter-node all-reduce of piece k while this thread
 * reduce-scatters piece k+1 inside the node; the gathers follow in piece order. Every
 * communicator is still used by one thread, in the same order on every rank. */
typedef struct {
    ng_comm *c;
    char *buf;
    ng_dtype dt;
    const ng_allreduce_opts *o;
    const int64_t *piece; /* P + 1 element offsets */
    int P, ready, done;   /* pieces reduce-scattered, and all-reduced between nodes */
    pthread_mutex_t lock;
    pthread_cond_t moved;
} rs_pipe;

static void *rs_inter_thread(void *arg) {
    rs_pipe *p = arg;
    for (int k = 0; k < p->P; k++) {
        pthread_mutex_lock(&p->lock);
        while (p->ready <= k) pthread_cond_wait(&p->moved, &p->lock);
        pthread_mutex_unlock(&p->lock);
        rs_inter(p->c, at(p->buf, p->piece[k], p->dt), p->piece[k + 1] - p->piece[k], p->dt, p->o);
        pthread_mutex_lock(&p->lock);
        p->done = k + 1;
        pthread_cond_broadcast(&p->moved);
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

/* Pieces of at least this many bytes, at most NG_RS_PIECES of them. */
#define NG_RS_PIECE_BYTES ((int64_t)1 << 20)
#define NG_RS_PIECES 64

void ng_hier_rs(ng_comm *c, void *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o) {
    int L = c->max_local_size, l = c->local_size;
    NG_CHECK(L <= 64, "comm: hier_rs supports nodes of up to 64 ranks, not %d", L);
    if (!c->chunk_comms) {
        c->chunk_comms = calloc((size_t)L, sizeof(ng_comm *));
        c->n_chunk_comms = L;
        for (int j = 0; j < L; j++)
            c->chunk_comms[j] =
                ng_comm_split_internal(c, chunk_owner(j, l, L) == c->local_rank ? 0 : -1, c->node);
    }
    (void)ng_comm_intra(c); /* built here, collectively, before any thread uses it */
    int64_t bytes = n * (int64_t)ng_dtype_size(dt), P = bytes / NG_RS_PIECE_BYTES;
    if (P > NG_RS_PIECES) P = NG_RS_PIECES;
    /* One piece, one node, a device backend (NCCL orders its streams itself), or an MPI that
     * does not take calls from two threads at once: no pipeline. */
    if (P < 2 || c->nodes < 2 || c->device != NG_CPU || !ng_comm_thread_multiple()) {
        rs_intra(c, buf, n, dt, o, 0);
        rs_inter(c, buf, n, dt, o);
        rs_intra(c, buf, n, dt, o, 1);
        return;
    }
    int64_t piece[NG_RS_PIECES + 1];
    ng_balanced_offsets(n, (int)P, piece);
    rs_pipe p = {.c = c, .buf = buf, .dt = dt, .o = o, .piece = piece, .P = (int)P};
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.moved, NULL);
    pthread_t inter;
    NG_CHECK(!pthread_create(&inter, NULL, rs_inter_thread, &p),
             "comm: cannot start the hier_rs pipeline thread");
    for (int k = 0; k < p.P; k++) {
        rs_intra(c, at(buf, piece[k], dt), piece[k + 1] - piece[k], dt, o, 0);
        pthread_mutex_lock(&p.lock);
        p.ready = k + 1;
        pthread_cond_broadcast(&p.moved);
        pthread_mutex_unlock(&p.lock);
    }
    for (int k = 0; k < p.P; k++) {
        pthread_mutex_lock(&p.lock);
        while (p.done <= k) pthread_cond_wait(&p.moved, &p.lock);
        pthread_mutex_unlock(&p.lock);
        rs_intra(c, at(buf, piece[k], dt), piece[k + 1] - piece[k], dt, o, 1);
    }
    pthread_join(inter, NULL);
    pthread_mutex_destroy(&p.lock);
    pthread_cond_destroy(&p.moved);
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
