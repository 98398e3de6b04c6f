/* Distributed K-FAC's work plan: which rank computes each layer's eigendecompositions / inverses.
 * Greedy longest-processing-time (Graham 1969) on the cost of each layer's factors, as KAISA
 * assigns inverse work; deterministic, so every rank derives the same plan without talking. */
#ifndef NG_KFAC_ASSIGN_H
#define NG_KFAC_ASSIGN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The cost of decomposing a layer's factors: da^3 + out^3 (symmetric eigensolvers and Cholesky
 * inverses are cubic in the side). */
double ng_kfac_layer_cost(int64_t da, int64_t out);

/* owner[i] in [0, world) for each of the n items: items taken by decreasing cost (ties: lower
 * index first), each given to the rank with the least load so far (ties: lower rank). The
 * largest load is at most (4/3 - 1/(3 world)) of the best possible. Returns that largest load. */
double ng_kfac_assign_lpt(const double *cost, int n, int world, int *owner);

#ifdef __cplusplus
}
#endif
#endif
