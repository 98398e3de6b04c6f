/* A ViT training step (forward, cross-entropy, backward) gives the same bits with natgrad's
 * OpenMP loops on 1, 2 and 3 threads: they (LayerNorm rows and columns, GELU, softmax rows,
 * permutes, residual adds, batches of small GEMMs) split only over independent results. The
 * sizes are chosen so that every one of those loops takes its threaded path. OpenBLAS keeps its
 * NG_THREADS count throughout: its large GEMMs round differently on another count (ARCHITECTURE,
 * Threads), which this test does not pin. With NG_TEST_VERBOSE=1 it prints an FNV-1a hash of the
 * logits and every gradient, to compare builds. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/threads.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "nn/transformer.h"
#include "testing.h"

#define ARENA ((size_t)64 << 20)

/* The logits and all gradients of one step, concatenated as bytes. */
static unsigned char *step(ng_model *m, const ng_tensor *x, const ng_tensor *labels, int threads,
                           size_t *bytes) {
    omp_set_num_threads(threads);
    ng_model_zero_grad(m);
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 3, 0);
    ng_tensor y = ng_model_forward(m, &ctx, x);
    ng_tensor dy = ng_arena_tensor(&m->grads, y.dtype, y.ndim, y.shape, "dlogits");
    ng_softmax_xent(&y, labels, 0.0, &dy, NULL);
    ng_model_backward(m, &ctx, &dy);
    size_t n = ng_tensor_bytes(&y);
    for (int i = 0; i < m->nparams; i++) n += ng_tensor_bytes(&m->params[i].param->grad);
    unsigned char *out = malloc(n), *p = out;
    memcpy(p, y.data, ng_tensor_bytes(&y));
    p += ng_tensor_bytes(&y);
    for (int i = 0; i < m->nparams; i++) {
        const ng_tensor *g = &m->params[i].param->grad;
        memcpy(p, g->data, ng_tensor_bytes(g));
        p += ng_tensor_bytes(g);
    }
    *bytes = n;
    return out;
}

int main(void) {
    int base = ng_threads();
    /* 65 tokens of dim 64 in 8 images: LayerNorm's 33,280 elements pass NG_OMP_MIN, and the
     * 16 per-head score products of 65 x 65 x 32 are small enough to split over the batch. */
    ng_vit_config c = {.img_size = 16,
                       .patch = 2,
                       .in_ch = 3,
                       .dim = 64,
                       .depth = 2,
                       .heads = 2,
                       .classes = 10,
                       .mlp_ratio = 4.0};
    ng_model *m = ng_model_new(ng_vit(&c));
    ng_model_build(m, NG_CPU, NG_F32, 7, ARENA, ARENA);
    for (int i = 0; i < m->nparams; i++) ng_test_fill_uniform(&m->params[i].param->value, -1, 1);
    int64_t B = 8;
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 4, (int64_t[]){B, 3, 16, 16}, "images");
    ng_test_fill_uniform(&x, -1, 1);
    ng_tensor labels = ng_tensor_1d(NG_I32, NG_CPU, B, "labels");
    for (int64_t i = 0; i < B; i++) ((int32_t *)labels.data)[i] = (int32_t)(i % c.classes);

    size_t n1, n;
    unsigned char *ref = step(m, &x, &labels, 1, &n1);
    if (getenv("NG_TEST_VERBOSE"))
        printf("vit step hash (1 OpenMP thread): %016llx over %zu bytes\n",
               (unsigned long long)ng_test_fnv1a(ref, n1), n1);
    for (int t = 2; t <= 3; t++) {
        unsigned char *got = step(m, &x, &labels, t, &n);
        NG_TEST(n == n1 && !memcmp(ref, got, n1),
                "a ViT step on %d OpenMP threads gives the bits of 1 (logits and gradients)", t);
        free(got);
    }
    unsigned char *again = step(m, &x, &labels, 1, &n);
    NG_TEST(n == n1 && !memcmp(ref, again, n1), "a rerun on 1 thread gives the same bits");
    free(again);
    free(ref);
    omp_set_num_threads(base);
    ng_tensor_free(&x), ng_tensor_free(&labels);
    ng_model_free(m);
    return ng_test_finish("test_vit_threads");
}
