/* PLACEHOLDER: CUDA RNG fills (being written). */
#include "backend.h"
void ng_cuda_rng_fill(ng_tensor *t, ng_rng_dist dist, ng_rng_key key, double p0, double p1) { ng_fail("todo"); }
