/* The pooling layer makers used by both tests/test_pool_bn.c (CPU) and its CUDA twin
 * tests/test_pool_bn_gpu.c; makers whose geometry differs between the two stay in each test. */
#ifndef NG_TESTS_POOL_BN_CASES_H
#define NG_TESTS_POOL_BN_CASES_H

#include "nn/pool.h"

static ng_layer *make_max2(void) {
    return ng_maxpool("pool", 2, (int64_t[]){3, 3}, (int64_t[]){2, 2}, (int64_t[]){1, 1});
}
static ng_layer *make_gap(void) {
    return ng_global_avgpool("gap");
}

#endif
