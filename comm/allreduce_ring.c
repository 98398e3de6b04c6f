/* natgrad's own ring over point-to-point messages: reduce-scatter then all-gather, each step
 * moving one segment to the right neighbour in chunks. Segment k is summed in one fixed order
 * (starting at rank k+1, around the ring, ending at rank k), so results are deterministic. */
#include <stdlib.h>

#include "comm_internal.h"

static int mod(int a, int p) {
    return ((a % p) + p) % p;
}

static char *at(void *buf, int64_t off, ng_dtype dt) {
    return (char *)buf + (size_t)off * ng_dtype_size(dt);
}

/* Rank r ends holding the sum of segment r. */
void ng_ring_reduce_scatterv(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt,
                             int64_t chunk) {
    int p = c->size, r = c->rank;
    for (int s = 0; s < p - 1; s++) {
        int out = mod(r - s - 1, p), in = mod(r - s - 2, p);
        c->ops->shift(c, at(buf, offs[out], dt), offs[out + 1] - offs[out], mod(r + 1, p), NULL,
                      offs[in + 1] - offs[in], mod(r - 1, p), dt, at(buf, offs[in], dt), chunk);
    }
}

/* Rank r starts with segment r and ends with all of them. */
void ng_ring_allgatherv(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt, int64_t chunk) {
    int p = c->size, r = c->rank;
    for (int s = 0; s < p - 1; s++) {
        int out = mod(r - s, p), in = mod(r - s - 1, p);
        c->ops->shift(c, at(buf, offs[out], dt), offs[out + 1] - offs[out], mod(r + 1, p),
                      at(buf, offs[in], dt), offs[in + 1] - offs[in], mod(r - 1, p), dt, NULL,
                      chunk);
    }
}

void ng_ring_allreduce(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int64_t chunk) {
    int64_t *offs = malloc(sizeof(int64_t) * (size_t)(c->size + 1));
    ng_balanced_offsets(n, c->size, offs);
    ng_ring_reduce_scatterv(c, buf, offs, dt, chunk);
    ng_ring_allgatherv(c, buf, offs, dt, chunk);
    free(offs);
}

/* Segment i moves between rank i and root: towards root (gather) or away from it (scatter). */
static void root_exchange(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt, int root,
                          int gather, int64_t chunk) {
    for (int i = 0; i < c->size; i++) {
        if (i == root) continue;
        int64_t len = offs[i + 1] - offs[i];
        int from = gather ? i : root, to = gather ? root : i;
        if (c->rank == from)
            c->ops->shift(c, at(buf, offs[i], dt), len, to, NULL, 0, -1, dt, NULL, chunk);
        else if (c->rank == to)
            c->ops->shift(c, NULL, 0, -1, at(buf, offs[i], dt), len, from, dt, NULL, chunk);
    }
}

/* Reduce to root as a ring reduce-scatter, then every segment sent to root. */
void ng_ring_reduce(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root, int64_t chunk) {
    int64_t *offs = malloc(sizeof(int64_t) * (size_t)(c->size + 1));
    ng_balanced_offsets(n, c->size, offs);
    ng_ring_reduce_scatterv(c, buf, offs, dt, chunk);
    root_exchange(c, buf, offs, dt, root, 1, chunk);
    free(offs);
}

/* Broadcast as root scattering the segments, then a ring all-gather (van de Geijn). */
void ng_ring_bcast(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root, int64_t chunk) {
    int64_t *offs = malloc(sizeof(int64_t) * (size_t)(c->size + 1));
    ng_balanced_offsets(n, c->size, offs);
    root_exchange(c, buf, offs, dt, root, 0, chunk);
    ng_ring_allgatherv(c, buf, offs, dt, chunk);
    free(offs);
}
