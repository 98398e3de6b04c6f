/* Memory by category: predicted from shapes, measured from the allocator and the arenas. */
#include "apps/memory_report.h"

#include <string.h>

#include "apps/metrics.h"
#include "core/dtype.h"
#include "core/ops.h"
#include "nn/loss.h"
#include "optim/plan.h"
#include "optim/smoothing.h"

size_t ng_mem_arena_capacity(size_t planned) {
    return planned + planned / 64 + ((size_t)1 << 20);
}

/* The optimizer chain's state, part by part (the registry's kinds, apps/optimizers.c), and the
 * K-FAC part's settings when the chain has one (its memory depends on the layers' shapes). */
static const ng_kfac_config *chain_memory(const ng_optim_plan *p, const ng_model *m, size_t es,
                                          ng_mem_figures *f) {
    const ng_kfac_config *k = NULL;
    for (int i = 0; i < p->n; i++) {
        const char *name = p->kind[i]->name;
        if (!strcmp(name, "kfac")) {
            k = p->settings[i];
        } else if (!strcmp(name, "smoothing") || !strcmp(name, "noisy_kfac")) {
            /* the kept weights and a noise buffer; Noisy K-FAC is Fisher-shaped smoothing of
             * the layers K-FAC covers */
            int noisy = !strcmp(name, "noisy_kfac");
            const ng_smoothing_config *sc = noisy ? NULL : p->settings[i];
            int64_t largest = 0, fisher = 0;
            for (int j = 0; j < m->nparams; j++) {
                const ng_layer *l = m->params[j].layer;
                int perturbed = noisy || sc->layers == NG_SMOOTH_KFAC_LAYERS ? l && l->capture : 1;
                if (perturbed && m->params[j].param->value.numel > largest)
                    largest = m->params[j].param->value.numel;
            }
            /* fisher noise: two [out, da] buffers of the largest covered layer (da = in + 1 with
             * a bias), and the roots of the largest out and da, on the device and the host */
            int64_t outs = 0, das = 0;
            if (noisy || sc->noise == NG_SMOOTH_FISHER)
                for (int j = 0; j < m->nparams; j++) {
                    const ng_layer *l = m->params[j].layer;
                    if (!l || !l->capture || m->params[j].param != &l->params[0]) continue;
                    int64_t out = l->params[0].value.shape[0],
                            da = l->params[0].value.numel / out + (l->nparams > 1);
                    if (out * da > fisher) fisher = out * da;
                    if (out > outs) outs = out;
                    if (da > das) das = da;
                }
            if (fisher > largest) largest = fisher;
            f->cat[NG_MEM_OPTIMIZER] +=
                (size_t)(m->numel + largest + fisher + 2 * (outs + das)) * es;
        } else { /* a base: sgd, adamw */
            f->cat[NG_MEM_OPTIMIZER] +=
                ng_optimizer_plan_bytes((const ng_optim_config *)p->settings[i], m->numel, es);
        }
    }
    return k;
}

static size_t larger(size_t a, size_t b) {
    return a > b ? a : b;
}

/* The CUDA workspace is one buffer grown to the largest request (core/cuda_context.h), so the
 * plan is the largest of its users' requests in a step: the layers' (cuDNN, LayerNorm's partials:
 * the pass plans), K-FAC's inverse updates, a GPU-rendered batch (FractalDB's device batches, when
 * nothing augments them: as apps/train.c decides), the loss and the reductions over the flat
 * gradient (the finiteness check of every step). *estimated: K-FAC's share is an estimate (no
 * GPU here to ask cuSOLVER). */
static size_t cuda_workspace(const ng_train_setup *s, const ng_model *m, int64_t rank_batch,
                             const ng_arena_plan *tr, const ng_arena_plan *ev,
                             const ng_kfac_planner *kp, int *estimated, size_t *solver) {
    size_t ws = larger(tr->workspace, ev->workspace);
    if (s->device != NG_CUDA) return ws;
    if (kp) ws = larger(ws, ng_kfac_planner_cuda_workspace(kp, estimated, solver));
    const ng_source *src = s->train;
    if (src && src->device_batches && src->ops->device_workspace && !ng_augment_active(&s->augment))
        ws = larger(ws, src->ops->device_workspace(src, rank_batch));
    ws = larger(ws, ng_xent_cuda_workspace(rank_batch, NULL, NULL));
    return larger(ws, ng_reduce_cuda_workspace(m->numel));
}

void ng_mem_predict(const ng_train_setup *s, const ng_arch *a, int64_t rank_batch,
                    ng_mem_figures *f) {
    memset(f, 0, sizeof *f);
    ng_model *m = ng_model_new(ng_arch_build(a)); /* shapes only: nothing is allocated */
    int64_t in[NG_MAX_DIMS] = {rank_batch};
    int nd = ng_arch_input_shape(a, in + 1) + 1;
    size_t es = ng_dtype_size(NG_F32), n = (size_t)m->numel;
    int mixed = s->compute != NG_F32;
    /* master weights, their compute copy, batch-norm buffers and the trainer's copy of them */
    f->cat[NG_MEM_PARAMS] = n * es + (mixed ? n * ng_dtype_size(s->compute) : 0) +
                            (size_t)m->buffer_numel * es * (m->nbuffers ? 2 : 1);
    f->cat[NG_MEM_GRADS] = n * es;
    const ng_kfac_config *kc = chain_memory(&s->optim, m, es, f);
    ng_kfac_planner *kp = kc ? ng_kfac_planner_new(kc, NG_F32, s->device) : NULL;
    ng_arena_plan tr = ng_plan_train_step_observed(m->root, nd, in, NG_F32, s->compute, s->device,
                                                   kc && kc->fisher == NG_KFAC_TRUE_FISHER,
                                                   kp ? ng_kfac_planner_capture : NULL, kp);
    ng_arena_plan ev = ng_plan_eval(m->root, nd, in, NG_F32, s->compute, s->device);
    f->arenas.acts = tr.acts > ev.acts ? tr.acts : ev.acts;
    f->arenas.grads = tr.grads > ev.grads ? tr.grads : ev.grads;
    f->arenas.joint = tr.joint > ev.joint ? tr.joint : ev.joint;
    f->arenas.workspace =
        cuda_workspace(s, m, rank_batch, &tr, &ev, kp, &f->arenas.workspace_estimated,
                       &f->arenas.workspace_cusolver);
    f->arenas.workspace_bounded = tr.workspace_bounded || ev.workspace_bounded;
    f->arenas.workspace_cudnn = larger(tr.workspace_cudnn, ev.workspace_cudnn);
    f->cat[NG_MEM_ACTIVATIONS] = f->arenas.acts;
    f->cat[NG_MEM_WORKSPACE] = f->arenas.grads + f->arenas.workspace;
    if (kp) {
        f->cat[NG_MEM_KFAC] = ng_kfac_planner_state(kp);
        f->cat[NG_MEM_WORKSPACE] += ng_kfac_planner_scratch(kp);
        ng_kfac_planner_free(kp);
    }
    /* ng_init_tensor's host temporaries (f64 and master dtype) of the largest parameter, counted
     * on the host: the device's only when the device is the CPU */
    if (s->device == NG_CPU)
        for (int i = 0; i < m->nparams; i++) {
            size_t b = (size_t)m->params[i].param->value.numel * (sizeof(double) + es);
            if (b > f->cat[NG_MEM_OTHER]) f->cat[NG_MEM_OTHER] = b;
        }
    size_t example = 1;
    for (int i = 1; i < nd; i++) example *= (size_t)in[i];
    f->cat[NG_MEM_DATA] = (size_t)rank_batch * (example * es + sizeof(int32_t));
    /* OTHER is the build's host temporaries, gone before the first step; activations and the
     * activation gradients share the arena buffer, which holds the most of both at once */
    for (int c = 0; c < NG_MEM_NCAT; c++)
        if (c != NG_MEM_OTHER && c != NG_MEM_ACTIVATIONS) f->device_peak += f->cat[c];
    f->device_peak += ng_mem_arena_capacity(f->arenas.joint) - f->arenas.grads;
    /* ...unless the build's moment is higher: the flat parameters and gradients exist while the
     * largest parameter's temporaries do (nn/model.c), which on the CPU is the same memory (a
     * 4096-wide first Linear's 24 MiB of temporaries beside 18 MiB of weights and gradients
     * outweigh its whole training step) */
    size_t build = 2 * n * es + f->cat[NG_MEM_OTHER];
    if (build > f->device_peak) f->device_peak = build;
    ng_model_free(m);
}

void ng_mem_measure(const ng_model *m, ng_mem_figures *f) {
    memset(f, 0, sizeof *f);
    ng_mem_stats st = ng_mem_stats_get(m->device);
    for (int c = 0; c < NG_MEM_NCAT; c++) f->cat[c] = st.cat_peak[c];
    f->cat[NG_MEM_ACTIVATIONS] = m->acts.peak;
    /* the workspace category holds the whole grads arena; count its high-water mark instead */
    /* the arena buffer counts as activations; its two ends' high-water marks are reported */
    f->cat[NG_MEM_WORKSPACE] = m->grads.peak + st.cat_peak[NG_MEM_WORKSPACE];
    f->device_peak = st.peak;
    f->arenas =
        (ng_arena_plan){.acts = m->acts.peak, .grads = m->grads.peak, .joint = m->arena_peak};
}

static double mib(size_t b) {
    return (double)b / 1048576.0;
}

void ng_mem_json(const ng_mem_figures *f, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "{");
    for (int c = 0; c < NG_MEM_NCAT && n < cap; c++)
        n += (size_t)snprintf(out + n, cap - n, "\"%s\": %s, ", ng_mem_category_name(c),
                              ng_json_num("%.3f", mib(f->cat[c])).s);
    if (n < cap)
        snprintf(out + n, cap - n, "\"arenas\": %s, \"device_peak\": %s}",
                 ng_json_num("%.3f", mib(f->arenas.joint)).s,
                 ng_json_num("%.3f", mib(f->device_peak)).s);
}

/* The shared CUDA workspace's row: its planned size, cuDNN's and the solvers' largest requests in
 * it, and why it is not exact when it is not. */
static void cuda_workspace_line(FILE *out, const ng_arena_plan *a) {
    fprintf(out, "%-12s %14.2f", " CUDA", mib(a->workspace));
    if (a->workspace_cudnn || a->workspace_cusolver)
        fprintf(out, "  (cuDNN's %.2f, cuSOLVER's %.2f)", mib(a->workspace_cudnn),
                mib(a->workspace_cusolver));
    if (a->workspace_bounded || a->workspace_estimated)
        fprintf(out, "  (no GPU here to ask:%s%s%s)",
                a->workspace_bounded ? " cuDNN's cap, an upper bound" : "",
                a->workspace_bounded && a->workspace_estimated ? ";" : "",
                a->workspace_estimated ? " cuSOLVER's scratch estimated from LAPACK's" : "");
    fprintf(out, "\n");
}

void ng_mem_table(FILE *out, const ng_mem_figures *pred, const ng_mem_figures *meas) {
    fprintf(out, "%-12s %14s", "memory", "predicted MiB");
    if (meas) fprintf(out, " %14s %9s", "measured MiB", "pred/meas");
    fprintf(out, "\n");
    for (int c = 0; c <= NG_MEM_NCAT; c++) {
        size_t p = c < NG_MEM_NCAT ? pred->cat[c] : pred->device_peak;
        size_t m = meas ? (c < NG_MEM_NCAT ? meas->cat[c] : meas->device_peak) : 0;
        if (c < NG_MEM_NCAT && !p && !m) continue;
        fprintf(out, "%-12s %14.2f", c < NG_MEM_NCAT ? ng_mem_category_name(c) : "device peak",
                mib(p));
        if (meas) {
            fprintf(out, " %14.2f", mib(m));
            if (m)
                fprintf(out, " %9.3f", (double)p / (double)m);
            else
                fprintf(out, " %9s", "-");
        }
        fprintf(out, "\n");
        if (c == NG_MEM_WORKSPACE && pred->arenas.workspace) /* in the line above */
            cuda_workspace_line(out, &pred->arenas);
        if (c == NG_MEM_WORKSPACE) { /* the shared buffer of the two arenas */
            fprintf(out, "%-12s %14.2f", " both arenas", mib(pred->arenas.joint));
            if (meas)
                fprintf(out, " %14.2f %9.3f", mib(meas->arenas.joint),
                        meas->arenas.joint ? (double)pred->arenas.joint / meas->arenas.joint : 0);
            fprintf(out, "\n");
        }
    }
}
