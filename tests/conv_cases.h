/* Convolution test helpers used by both tests/test_conv.c (CPU) and its CUDA twin
 * tests/test_conv_gpu.c: one forward and backward pass of a fresh conv model, kept as f64. */
#ifndef NG_TESTS_CONV_CASES_H
#define NG_TESTS_CONV_CASES_H

#include <stdint.h>
#include <stdlib.h>

#include "nn/model.h"
#include "testing.h"

/* A pass's output, input gradient and parameter gradients, with their element counts. */
typedef struct {
    double *y, *dx, *g;
    int64_t ny, nx, ng;
} conv_pass;

/* Builds make() on dev in dt from seed with a gradient arena of grad_bytes (small ones force the
 * im2col path into chunks), then runs forward on x and backward from dy (both given on the host)
 * into a poisoned dx. */
static inline conv_pass conv_pass_run(ng_layer *(*make)(void), ng_device dev, ng_dtype dt,
                                      uint64_t seed, size_t grad_bytes, const ng_tensor *xh,
                                      const ng_tensor *dyh) {
    ng_model *m = ng_model_new(make());
    ng_model_build(m, dev, dt, seed, 8 << 20, grad_bytes);
    ng_tensor x = ng_tensor_to(xh, dev, "x"), dy = ng_tensor_to(dyh, dev, "dy");
    ng_tensor dx = ng_tensor_new(dt, dev, x.ndim, x.shape, "dx");
    ng_test_poison(&dx);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    m->root->ops->backward(m->root, &ctx, &dy, &dx);
    conv_pass p = {ng_test_to_f64(&y),
                   ng_test_to_f64(&dx),
                   ng_test_to_f64(&m->flat_grads),
                   y.numel,
                   dx.numel,
                   m->numel};
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_tensor_free(&dx);
    ng_model_free(m);
    return p;
}

static inline void conv_pass_free(conv_pass *p) {
    free(p->y), free(p->dx), free(p->g);
}

#endif
