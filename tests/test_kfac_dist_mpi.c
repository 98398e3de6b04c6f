/* Distributed K-FAC against one process's K-FAC on the same global batch, in float64, for every
 * grad-worker count that divides the world (KAISA's COMM-OPT to MEM-OPT): each rank takes its
 * slice of the batch, gradients are averaged, and after every K-FAC step the preconditioned
 * gradients must equal the single-process ones (each rank also runs the single-process
 * reference). Linear (KL clip, sum damping, eigen), Conv (factored pi damping, Cholesky) and ViT
 * tokens (KFAC-reduce). Also: ranks hold only the inverses of the layers they precondition. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "core/ops.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "nn/models.h"
#include "optim/kfac.h"
#include "mpi_testing.h"
#include "testing.h"

#define STEPS 5

static ng_comm *world;
static int rank, size;

static ng_model *build(const ng_arch *a) {
    ng_model *m = ng_model_new(ng_arch_build(a));
    ng_model_build(m, NG_CPU, NG_F64, 11, 16 << 20, 16 << 20);
    return m;
}

/* One training step's gradient (after K-FAC) on rows [r0, r0 + b) of X, then SGD. With a
 * communicator the gradient is averaged over the ranks first. */
static void step(ng_model *m, ng_kfac *k, ng_comm *c, int64_t s, const ng_tensor *X,
                 const ng_tensor *Y, int64_t r0, int64_t b) {
    int64_t shape[NG_MAX_DIMS];
    memcpy(shape, X->shape, sizeof shape);
    shape[0] = b;
    int64_t per = X->numel / X->shape[0];
    ng_tensor x = ng_tensor_view(X, r0 * per, X->ndim, shape, "input rows");
    ng_tensor y = ng_tensor_view(Y, r0, 1, (int64_t[]){b}, "label rows");
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 3, (uint64_t)s);
    ctx.observer = ng_kfac_observer(k);
    ng_kfac_begin(k, s, b, 1, 1);
    ng_tensor logits = ng_model_forward(m, &ctx, &x);
    ng_tensor dl = ng_arena_tensor(&m->grads, logits.dtype, logits.ndim, logits.shape, "dlogits");
    ng_softmax_xent(&logits, &y, 0.0, &dl, NULL);
    ng_model_zero_grad(m);
    ng_model_backward(m, &ctx, &dl);
    if (c) ng_comm_allreduce(c, &m->flat_grads, NG_COMM_AVG);
    ng_kfac_step(k, s, 0.05);
}

static void check(const char *what, const ng_arch *a, ng_kfac_config kc, int batch_per_rank) {
    ng_model *ref = build(a), *dm = build(a);
    ng_kfac *kr = ng_kfac_new(ref, &kc), *kd = ng_kfac_new(dm, &kc);
    for (int g = 1; g <= size; g++) {
        if (size % g) continue;
        /* Fresh models and K-FAC state for each grad-worker count. */
        ng_kfac_free(kr), ng_kfac_free(kd), ng_model_free(ref), ng_model_free(dm);
        ref = build(a), dm = build(a);
        kr = ng_kfac_new(ref, &kc), kd = ng_kfac_new(dm, &kc);
        ng_kfac_distribute(kd, world, (double)g / size);
        int64_t B = (int64_t)batch_per_rank * size, shape[NG_MAX_DIMS] = {B};
        int nd = ng_arch_input_shape(a, shape + 1) + 1;
        ng_tensor X = ng_tensor_new(NG_F64, NG_CPU, nd, shape, "X");
        ng_tensor Y = ng_tensor_1d(NG_I32, NG_CPU, B, "Y");
        int worst_step = -1;
        double worst = 0;
        for (int64_t s = 0; s < STEPS; s++) {
            ng_test_fill_uniform(&X, -1, 1); /* the same on every rank: one shared test seed */
            for (int64_t i = 0; i < B; i++)
                ((int32_t *)Y.data)[i] =
                    (int32_t)((ng_test_uniform() + 1) * 0.5 * a->classes) % (int32_t)a->classes;
            step(ref, kr, NULL, s, &X, &Y, 0, B);
            step(dm, kd, world, s, &X, &Y, (int64_t)rank * batch_per_rank, batch_per_rank);
            double *e = ng_test_to_f64(&ref->flat_grads), *d = ng_test_to_f64(&dm->flat_grads);
            double num = 0, den = 0;
            for (int64_t i = 0; i < ref->numel; i++)
                num += (e[i] - d[i]) * (e[i] - d[i]), den += e[i] * e[i];
            double rel = sqrt(num / (den > 0 ? den : 1));
            if (!(rel <= worst)) worst = rel, worst_step = (int)s;
            free(e), free(d);
            /* Both take the reference's step so that later steps compare like with like. */
            ng_axpy(-0.05, &ref->flat_grads, &ref->flat_params);
            ng_copy(&dm->flat_params, &ref->flat_params);
        }
        NG_TEST(worst <= 1e-9,
                "%s, %d ranks, %d grad workers: preconditioned gradients equal one "
                "process's (worst relative error %.3g at step %d)",
                what, size, g, worst, worst_step);
        /* Inverse tensors held over all ranks: each layer's on its g grad workers only. */
        int per = kc.inverse == NG_KFAC_EIGEN ? 4 : 2;
        double held = ng_kfac_state(kd, NULL, NULL, 0) - 3.0 * ng_kfac_layers(kd);
        ng_comm_scalars(world, &held, 1, NG_COMM_SCALAR_SUM);
        NG_TEST(held == (double)per * g * ng_kfac_layers(kd),
                "%s, %d grad workers: %g inverse tensors held over the ranks, expected %d", what, g,
                held, per * g * ng_kfac_layers(kd));
        ng_tensor_free(&X), ng_tensor_free(&Y);
    }
    ng_kfac_free(kr), ng_kfac_free(kd), ng_model_free(ref), ng_model_free(dm);
}

int main(int argc, char **argv) {
    world = ng_test_mpi_init(argc, argv);
    rank = ng_comm_rank(world), size = ng_comm_size(world);

    ng_arch a;
    ng_kfac_config kc = ng_kfac_default_config();
    kc.inv_every = 2, kc.damping = 0.01, kc.kl_clip = 0.01;
    ng_arch_defaults("mlp", &a);
    a.img = 4, a.width = 12, a.classes = 5;
    check("mlp, sum damping, eigen, KL clip", &a, kc, 3);

    ng_kfac_config kf = kc;
    kf.damping_mode = NG_KFAC_DAMP_FACTORED, kf.pi_damping = 1, kf.inverse = NG_KFAC_CHOLESKY;
    ng_arch_defaults("lenet", &a);
    a.img = 12, a.classes = 4;
    check("lenet, factored pi damping, Cholesky", &a, kf, 2);

    ng_kfac_config kt = kc;
    kt.tokens = NG_KFAC_REDUCE;
    ng_arch_defaults("vit", &a);
    a.img = 8, a.patch = 4, a.width = 8, a.depth = 1, a.heads = 2, a.classes = 3;
    check("vit tokens, KFAC-reduce", &a, kt, 2);

    return ng_test_mpi_finish(world, "test_kfac_dist_mpi");
}
