/* Greedy longest-processing-time assignment of K-FAC's per-layer inverse work to ranks. */
#include "optim/kfac_assign.h"

#include <stdlib.h>

#include "core/error.h"

double ng_kfac_layer_cost(int64_t da, int64_t out) {
    return (double)da * (double)da * (double)da + (double)out * (double)out * (double)out;
}

static const double *sort_cost;
static int by_cost(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_cost[i] != sort_cost[j]) return sort_cost[i] > sort_cost[j] ? -1 : 1;
    return i - j; /* qsort is not stable: the index breaks ties, so every rank agrees */
}

double ng_kfac_assign_lpt(const double *cost, int n, int world, int *owner) {
    NG_CHECK(world >= 1 && n >= 0, "kfac: cannot assign %d layers to %d ranks", n, world);
    for (int i = 0; i < n; i++)
        NG_CHECK(cost[i] >= 0, "kfac: layer %d has a negative cost %g", i, cost[i]);
    int *order = malloc(sizeof *order * (size_t)(n + 1));
    double *load = calloc((size_t)world, sizeof *load);
    NG_CHECK(order && load, "out of host memory assigning K-FAC work");
    for (int i = 0; i < n; i++) order[i] = i;
    sort_cost = cost;
    qsort(order, (size_t)n, sizeof *order, by_cost);
    for (int t = 0; t < n; t++) {
        int best = 0;
        for (int r = 1; r < world; r++)
            if (load[r] < load[best]) best = r;
        owner[order[t]] = best;
        load[best] += cost[order[t]];
    }
    double worst = 0;
    for (int r = 0; r < world; r++)
        if (load[r] > worst) worst = load[r];
    free(order), free(load);
    return worst;
}
