/* Layer makers for the activation tests, used by both tests/test_activation.c (CPU) and its CUDA
 * twin tests/test_activation_gpu.c, so that both check the same layer configurations. */
#ifndef NG_TESTS_ACTIVATION_CASES_H
#define NG_TESTS_ACTIVATION_CASES_H

#include "nn/activation.h"

static ng_layer *make_relu(void) {
    return ng_relu("act");
}
static ng_layer *make_gelu_erf(void) {
    return ng_gelu("act", 0);
}
static ng_layer *make_gelu_tanh(void) {
    return ng_gelu("act", 1);
}
static ng_layer *make_dropout(void) {
    return ng_dropout("drop", 0.3);
}
static ng_layer *make_softmax(void) {
    return ng_softmax("softmax");
}
static ng_layer *make_flatten(void) {
    return ng_flatten("flatten");
}

#endif
