/* PLACEHOLDER: CPU RNG fills (being written). */
#include "backend.h"
void ng_cpu_rng_fill(ng_tensor *t, ng_rng_dist dist, ng_rng_key key, double p0, double p1) { (void)t; (void)dist; (void)key; (void)p0; (void)p1; ng_fail("todo"); }
