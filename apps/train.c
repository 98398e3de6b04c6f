/* `natgrad train` and `natgrad eval`: the training loop over the config, data, model and
 * optimizer, with metrics, evaluation, checkpoints and resume. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "apps/clock.h"
#include "apps/commands.h"
#include "apps/memory_report.h"
#include "apps/progress.h"
#include "apps/run.h"
#include "apps/step.h"
#include "apps/stop.h"
#include "apps/train_config.h"
#include "comm/bucket.h"
#include "comm/comm.h"
#include "core/build_info.h"
#include "git_rev.h" /* generated at build time (scripts/git-rev.cmake) */
#include "core/error.h"
#include "core/ops.h"
#include "data/loader.h"
#include "nn/loss.h"
#include "nn/weights.h"
#include "optim/smoothing.h"

typedef struct {
    const char *config, *out, *resume, *weights;
    const char *sets[256];
    int nsets, help_config, allow_config_change;
} train_args;

static void usage(FILE *f, const char *cmd) {
    if (!strcmp(cmd, "eval"))
        fprintf(f, "usage: natgrad eval --config FILE --weights FILE [--set key=value ...]\n");
    else
        fprintf(f, "usage: natgrad train --config FILE [--set key=value ...] [--out DIR]\n"
                   "                     [--resume auto|CHECKPOINT_DIR [--allow-config-change]]\n"
                   "                     [--help-config]\n"
                   "  --out DIR       run directory (default runs/<config name>)\n"
                   "  --resume auto   continue DIR from its newest complete checkpoint\n"
                   "  --allow-config-change  resume although keys that change the run differ\n"
                   "                  from DIR/config.yaml (the change is kept in its history)\n"
                   "  --help-config   list every config key with its type, default and range\n"
                   "SIGTERM, SIGINT or SIGUSR1 stop the run after the current step with a\n"
                   "checkpoint (exit 128 + signal); a second one stops it at once.\n");
}

/* Parses the options shared by train and eval; returns 0 on success, 2 on a usage error. */
static int parse(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout, argv[0]);
            exit(0);
        }
        if (!strcmp(o, "--help-config")) {
            a->help_config = 1;
            continue;
        }
        if (!strcmp(o, "--allow-config-change")) {
            a->allow_config_change = 1;
            continue;
        }
        const char **dst = !strcmp(o, "--config")    ? &a->config
                           : !strcmp(o, "--out")     ? &a->out
                           : !strcmp(o, "--resume")  ? &a->resume
                           : !strcmp(o, "--weights") ? &a->weights
                                                     : NULL;
        if (!dst && strcmp(o, "--set")) {
            fprintf(stderr, "natgrad: error: %s: unknown option '%s'\n", argv[0], o);
            usage(stderr, argv[0]);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "natgrad: error: %s: option %s needs a value\n", argv[0], o);
            return 2;
        }
        if (dst) {
            *dst = argv[++i];
        } else {
            if (!strchr(argv[i + 1], '=') || a->nsets == 256) {
                fprintf(stderr, "natgrad: error: --set takes key=value, got '%s'\n", argv[i + 1]);
                return 2;
            }
            a->sets[a->nsets++] = argv[++i];
        }
    }
    return 0;
}

static void default_out(const char *config, char *out, size_t cap) {
    const char *base = config ? strrchr(config, '/') : NULL;
    base = base ? base + 1 : config ? config : "run";
    char stem[256];
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem) *dot = 0;
    snprintf(out, cap, "runs/%s", stem);
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* The header of the resolved config: how this run can be reproduced. */
static char *describe_build(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fprintf(f, "git %s\n", NG_GIT_REV);
    ng_print_build_info(f);
    fclose(f);
    return buf;
}

/* Copies a batch (on the host, or already on the device when its source rendered it there) into
 * the input and label tensors (views of the first b rows). */
static void upload(const ng_batch *b, ng_tensor *x, ng_tensor *y, ng_tensor *xv, ng_tensor *yv) {
    int64_t shape[NG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = b->b;
    *xv = ng_tensor_view(x, 0, x->ndim, shape, "input");
    *yv = ng_tensor_view(y, 0, 1, (int64_t[]){b->b}, "labels");
    ng_tensor hx = ng_tensor_wrap(b->x, NG_F32, b->device, x->ndim, shape, "input");
    ng_tensor hy = ng_tensor_wrap(b->y, NG_I32, NG_CPU, 1, (int64_t[]){b->b}, "labels");
    ng_tensor_copy(xv, &hx);
    ng_tensor_copy(yv, &hy);
}

typedef struct {
    double loss, acc, ece; /* ece: expected calibration error, 15 bins (nn/loss.h) */
    int64_t n;
} eval_result;

/* Test loss, accuracy and ECE. Without a Noisy K-FAC part (noisy NULL) or with
 * noisy.eval_samples = 1, of the weights as they are (the mean); with K > 1 samples, of the mean
 * of the softmax probabilities over weight samples 0..K-1 (ng_noisy_kfac_sample: the same K
 * samples for every batch), the loss being -log of that mean at the label. */
static eval_result evaluate(ng_model *m, const ng_train_setup *s, ng_optimizer *noisy, ng_tensor *x,
                            ng_tensor *y) {
    ng_loader_config lc = {.source = s->test,
                           .batch = x->shape[0],
                           .seed = s->seed,
                           .world = 1,
                           .workers = (int)ng_cfg_int(s->cfg, "data.workers")};
    ng_loader *l = ng_loader_new(&lc);
    int64_t nb = ng_loader_batches_per_epoch(l), correct = 0, n = 0, classes = s->train->classes;
    int64_t samples = noisy ? ng_noisy_kfac_eval_samples(noisy) : 1;
    double loss = 0, *probs = malloc(sizeof *probs * (size_t)(x->shape[0] * classes)),
           *avg = samples > 1 ? malloc(sizeof *avg * (size_t)(x->shape[0] * classes)) : NULL;
    NG_CHECK(probs && (samples == 1 || avg), "out of host memory for the test probabilities");
    ng_calibration cal = {0};
    for (int64_t i = 0; i < nb; i++) {
        ng_batch b = ng_loader_next(l);
        ng_tensor xv, yv;
        upload(&b, x, y, &xv, &yv);
        for (int64_t k = 0; k < samples; k++) {
            if (samples > 1) ng_noisy_kfac_sample(noisy, k);
            ng_model_reset_arenas(m);
            ng_ctx ctx = ng_model_ctx(m, 0, s->seed, 0);
            ng_tensor logits = ng_model_forward(m, &ctx, &xv);
            NG_CHECK(logits.ndim == 2 && logits.shape[1] == classes,
                     "evaluate: logits %s for %lld classes", ng_tensor_desc(&logits),
                     (long long)classes);
            ng_softmax_probs(&logits, probs);
            if (samples == 1) {
                int64_t c = 0;
                loss += ng_softmax_xent(&logits, &yv, 0.0, NULL, &c) * (double)b.b;
                correct += c;
                break;
            }
            ng_noisy_kfac_restore(noisy);
            for (int64_t j = 0; j < b.b * classes; j++)
                avg[j] = (k ? avg[j] : 0.0) + probs[j] / (double)samples;
        }
        if (samples > 1) {
            for (int64_t r = 0; r < b.b; r++) {
                const double *p = avg + r * classes;
                int64_t arg = 0;
                for (int64_t j = 1; j < classes; j++)
                    if (p[j] > p[arg]) arg = j;
                correct += arg == b.y[r];
                loss -= log(fmax(p[b.y[r]], 1e-300));
            }
        }
        n += b.b;
        ng_calibration_add(&cal, samples > 1 ? avg : probs, b.y, b.b, classes);
    }
    free(probs), free(avg);
    ng_loader_free(l);
    return (eval_result){loss / (double)n, (double)correct / (double)n, ng_calibration_ece(&cal),
                         n};
}

/* The arenas get what the plan says a step of `rank_batch` examples needs (and a little room),
 * unless train.arena_mib fixes their size. */
static ng_model *build_model(const ng_train_setup *s, int64_t rank_batch, ng_mem_figures *plan) {
    ng_mem_predict(s, &s->arch, rank_batch, plan);
    ng_model *m = ng_model_new(ng_arch_build(&s->arch));
    size_t mib = (size_t)ng_cfg_int(s->cfg, "train.arena_mib");
    size_t bytes = mib ? mib << 20 : ng_mem_arena_capacity(plan->arenas.joint);
    ng_model_build_mixed(m, s->device, s->compute, s->seed, bytes, 0);
    return m;
}

/* Input and label tensors for batches of up to `batch` examples (this rank's share). */
static void input_tensors(const ng_train_setup *s, int64_t batch, ng_tensor *x, ng_tensor *y) {
    int64_t shape[NG_MAX_DIMS] = {batch};
    for (int i = 0; i < s->train->ndim; i++) shape[i + 1] = s->train->shape[i];
    ng_mem_category was = ng_mem_set_category(NG_MEM_DATA);
    *x = ng_tensor_new(NG_F32, s->device, s->train->ndim + 1, shape, "input");
    *y = ng_tensor_1d(NG_I32, s->device, batch, "labels");
    ng_mem_set_category(was);
}

/* NULL when a step's loss and gradients are finite, else what is not: "loss", or the name of the
 * first parameter whose gradient is not finite. One reduction over the flat gradients on the
 * model's device; the per-parameter search runs only on a bad step. */
static const char *nonfinite_in(ng_model *m, double loss) {
    if (!isfinite(loss)) return "loss";
    if (ng_all_finite(&m->flat_grads)) return NULL;
    for (int i = 0; i < m->nparams; i++)
        if (!ng_all_finite(&m->params[i].param->grad)) return m->params[i].param->name;
    return "the gradient";
}

/* What the training loop works on besides the setup. */
typedef struct {
    const ng_train_setup *s;
    ng_model *m;
    ng_optimizer *opt;        /* the chain: base optimizer and the parts in front of it */
    ng_tensor x, y;           /* the device's input [batch, C, H, W] and labels [batch] */
    ng_tensor buffers_before; /* the flat buffers before a step's forward (models with some) */
    int64_t poison_step;      /* a test hook, see ng_cmd_train */
    ng_comm *comm;            /* the job's ranks (one in a plain run) */
    int rank, world;
    ng_buckets *buckets;             /* gradient all-reduce during backward; NULL with one rank */
    ng_grad_hook hook;               /* tells the buckets which parameters backward has finished */
    int64_t overlapped, buckets_run; /* buckets started during backward, and all */
    double backward_s, wait_s;       /* time in backward, and waiting for buckets after it */
    ng_loss_scaler scaler;           /* the loss scale: dynamic in fp16, 1 otherwise */
} trainer;

/* The gradient-ready hook: the layer's parameters, as indices into the model's table, to the
 * buckets. */
static void grads_ready(void *self, const ng_layer *l) {
    trainer *t = self;
    for (int p = 0; p < l->nparams; p++)
        for (int i = t->m->nparams - 1; i >= 0; i--)
            if (t->m->params[i].param == &l->params[p]) {
                ng_buckets_ready(t->buckets, i);
                break;
            }
}

typedef struct {
    double loss, acc, lr, gnorm; /* gnorm is NaN for a skipped step */
    double scale;                /* the loss scale this step's backward ran with */
    const char *bad; /* NULL, or what was not finite (nonfinite_in): the step was skipped */
} step_result;

/* Bad examples a source left out when it was opened (data.skip_bad): said on stderr every time,
 * and logged once, at step 0 of a new run, as a "data" line of metrics.jsonl (a resumed run keeps
 * that line). */
static void report_bad(ng_metrics *metrics, const ng_source *src, const char *split, int log) {
    if (!src->skipped && !src->cut) return;
    fprintf(stderr,
            "data.skip_bad: left out %lld bad %s examples and the rest of %lld shards (cut "
            "short), %lld examples kept; the first: %s\n",
            (long long)src->skipped, split, (long long)src->cut, (long long)src->n, src->first_bad);
    if (!log) return;
    char line[512];
    snprintf(line, sizeof line,
             "{\"type\": \"data\", \"step\": 0, \"split\": \"%s\", \"examples\": %lld, "
             "\"skipped\": %lld, \"cut_shards\": %lld}",
             split, (long long)src->n, (long long)src->skipped, (long long)src->cut);
    ng_metrics_line(metrics, line);
}

/* The measured peaks so far, for the metrics line (valid until the next call). */
static const char *memory_json(const ng_model *m) {
    static char text[512];
    ng_mem_figures f;
    ng_mem_measure(m, &f);
    ng_mem_json(&f, text, sizeof text);
    return text;
}

/* One step on batch b through the optimizer interface: forward, loss, backward, and, when all is
 * finite, clip and the optimizer's step. A non-finite loss or gradient skips the step before
 * anything keeps it: the optimizer does not step and batch-norm buffers are put back; a part that
 * gathers statistics in the passes (K-FAC) keeps them only in its step and drops them at the next
 * begin. */
static step_result train_step(trainer *t, const ng_batch *b, int64_t step) {
    const ng_train_setup *s = t->s;
    ng_model *m = t->m;
    ng_optimizer *opt = t->opt;
    ng_tensor xv, yv;
    upload(b, &t->x, &t->y, &xv, &yv);
    ng_model_reset_arenas(m);
    if (m->nbuffers) ng_tensor_copy(&t->buffers_before, &m->flat_buffers);
    /* Dropout draws its own masks on every rank: the rank is mixed into the seed (rank 0 keeps
     * the plain seed, so a one-rank run is the same as before). */
    uint64_t seed = s->seed ^ ((uint64_t)t->rank * UINT64_C(0x9E3779B97F4A7C15));
    ng_ctx ctx = ng_model_ctx(m, 1, seed, (uint64_t)step);
    step_result r = {.lr = ng_schedule_lr(&s->sched, step), .gnorm = NAN};
    r.scale = ng_loss_scaler_scale(&t->scaler);
    ng_step_passes p = {.seed = s->seed,
                        .step = step,
                        .smoothing = s->smoothing,
                        .scale = r.scale,
                        .ready = t->buckets ? &t->hook : NULL};
    r.loss = ng_step_run_passes(m, opt, &ctx, &xv, &yv, &p);
    int64_t correct = p.correct;
    double tb = p.backward_at;
    if (t->buckets) { /* the average over the ranks: every rank now holds the same gradient */
        ng_sync(s->device);
        double tw = ng_now();
        t->overlapped += ng_buckets_finish(t->buckets);
        t->backward_s += tw - tb, t->wait_s += ng_now() - tw;
        t->buckets_run += ng_buckets_count(t->buckets);
        double v[2] = {r.loss * (double)b->b, (double)correct};
        ng_comm_scalars(t->comm, v, 2, NG_COMM_SCALAR_SUM);
        r.loss = v[0] / (double)(b->b * t->world), correct = (int64_t)v[1];
    }
    r.acc = (double)correct / (double)(b->b * t->world);
    if (step + 1 == t->poison_step) ng_fill(&m->params[m->nparams - 1].param->grad, NAN);
    r.bad = nonfinite_in(m, r.loss);
    /* The same verdict on every rank (the gradient is averaged, the loss summed), so the scale
     * moves alike everywhere; the divergence limit is train.max_skips, counted by the caller. */
    ng_loss_scaler_update(&t->scaler, !r.bad);
    if (r.bad) {
        if (m->nbuffers) ng_tensor_copy(&m->flat_buffers, &t->buffers_before);
        return r;
    }
    if (r.scale != 1.0) ng_scale(1.0 / r.scale, &m->flat_grads);
    r.gnorm = ng_clip_grad_norm(m, s->clip);
    ng_optimizer_step(opt, r.lr);
    if (s->sync_bn && m->nbuffers && t->world > 1)
        ng_comm_allreduce(t->comm, &m->flat_buffers, NG_COMM_AVG);
    ng_model_refresh_compute(m); /* the half copy of the new master weights */
    return r;
}

/* Writes config.yaml: every key resolved, under a header with the build and the history of
 * allowed config changes. */
static void write_config(const ng_train_setup *s, const char *out, const char *history) {
    char *build = describe_build(), *header = NULL, *text = NULL;
    size_t hl = 0, len = 0;
    FILE *h = open_memstream(&header, &hl);
    fprintf(h, "%s%s", build, history);
    fclose(h);
    FILE *f = open_memstream(&text, &len);
    ng_config_write_yaml(s->cfg, f, header);
    fclose(f);
    ng_run_write(out, "config.yaml", text);
    free(text), free(header), free(build);
}

/* The run's memory at its end: DIR/memory.json (predicted and measured per category, rank 0's
 * device) and a table on stderr. */
static void report_memory(const ng_model *m, const ng_mem_figures *planned, const char *out) {
    ng_mem_figures meas;
    ng_mem_measure(m, &meas);
    char p[512], q[512], text[1200];
    ng_mem_json(planned, p, sizeof p);
    ng_mem_json(&meas, q, sizeof q);
    snprintf(text, sizeof text,
             "{\"device\": \"%s\", \"predicted_mib\": %s, \"measured_mib\": %s}\n",
             ng_device_name(m->device), p, q);
    ng_run_write(out, "memory.json", text);
    ng_mem_table(stderr, planned, &meas);
}

/* `--resume auto` on a run that has finished: its recorded result, no training. */
static int report_complete(const char *out, int print) {
    ng_run_result r;
    if (!ng_run_read_result(out, &r)) return 0;
    if (print)
        printf("run in %s is already complete: test accuracy %.2f%% (loss %.4f) after %lld steps\n",
               out, 100 * r.accuracy, r.loss, (long long)r.step);
    return 1;
}

int ng_cmd_train(int argc, char **argv) {
    train_args a;
    if (parse(argc, argv, &a)) return 2;
    if (a.help_config) {
        ng_config_print_schema(ng_train_spec, ng_train_nspec, stdout);
        return 0;
    }
    /* Everything that can be wrong with the config or the data is found here, before a run
     * directory exists. */
    ng_train_setup s;
    ng_train_setup_load(&s, a.config, a.sets, a.nsets);
    /* The ranks (one without mpirun): after the config, so that its errors come before MPI; CUDA
     * runs under mpirun reduce over NCCL. From here an error on any rank ends every rank. */
    if (s.device == NG_CUDA && ng_comm_mpi_launched()) s.comm.backend = NG_COMM_NCCL;
    ng_comm *comm = ng_comm_init(NULL, NULL, &s.comm);
    int rank = ng_comm_rank(comm), world = ng_comm_size(comm), rank0 = rank == 0;
    NG_CHECK(s.batch % world == 0,
             "train.batch_size: %lld is not a multiple of the %d ranks (each rank takes "
             "batch_size / ranks examples)",
             (long long)s.batch, world);
    ng_optim_plan_check_world(&s.optim, world); /* before DIR exists */
    /* A source that splits itself (tar shards) gives each rank its own files, before DIR exists;
     * the loader then splits nothing. Others hand every rank the whole source and the loader its
     * positions. */
    int64_t ntrain = s.train->n; /* before a split makes it this rank's count */
    int split = ng_source_split(s.train, rank, world);
    char out[2048], ckpt[4096] = "";
    if (a.out)
        snprintf(out, sizeof out, "%s", a.out);
    else
        default_out(a.config, out, sizeof out);
    if (a.resume && strcmp(a.resume, "auto")) { /* checked before DIR is created */
        NG_CHECK(exists(a.resume), "--resume: checkpoint %s does not exist", a.resume);
        ng_checkpoint_position(a.resume);
    }
    NG_CHECK(!a.allow_config_change || a.resume, "--allow-config-change: only with --resume");
    /* The lock comes before any look at what DIR holds: only its holder (rank 0) writes there. */
    if (rank0) ng_run_dir_create(out);
    int resume_from = 0;
    if (a.resume && !strcmp(a.resume, "auto")) {
        resume_from = ng_checkpoint_latest(out, ckpt, sizeof ckpt);
    } else if (a.resume) {
        snprintf(ckpt, sizeof ckpt, "%s", a.resume);
        resume_from = 1;
    } else if (rank0) {
        char cfgp[4096];
        snprintf(cfgp, sizeof cfgp, "%s/config.yaml", out);
        NG_CHECK(!exists(cfgp),
                 "--out: run directory %s already holds a run; continue it with --resume auto, or "
                 "choose another --out",
                 out);
    }
    ng_run_position pos = {0};
    char *history = strdup("");
    if (resume_from) {
        pos = ng_checkpoint_position(ckpt);
        free(history);
        if (rank0)
            history = ng_run_config_check(s.cfg, ng_train_spec, ng_train_nspec, out, pos.step,
                                          a.allow_config_change);
        else
            history = strdup("");
        if (pos.step >= s.steps && report_complete(out, rank0)) {
            free(history);
            ng_train_setup_free(&s);
            ng_comm_finalize(comm);
            return 0;
        }
    }

    ng_mem_figures planned;
    ng_model *m = build_model(&s, s.batch / world, &planned);
    if (s.init.path && !resume_from) { /* a resumed run's weights come from its checkpoint */
        int n =
            ng_weights_load_except(m, s.init.path, (const char *const *)s.init.skip, s.init.nskip);
        if (rank0)
            fprintf(stderr, "initialised %d of %d tensors from %s\n", n, m->nparams + m->nbuffers,
                    s.init.path);
    }
    ng_mem_category was = ng_mem_set_category(NG_MEM_OPTIMIZER);
    ng_optimizer *opt = ng_optim_plan_build(&s.optim, m, comm);
    ng_mem_set_category(was);
    if (resume_from) pos = ng_checkpoint_load(ckpt, m, opt);
    ng_metrics metrics = {0};
    if (rank0) {
        write_config(&s, out, history);
        metrics = ng_metrics_open(out, resume_from ? pos.step : -1);
        report_bad(&metrics, s.train, "train", !resume_from);
        report_bad(&metrics, s.test, "test", !resume_from);
    }
    free(history);

    ng_loader_config lc = {.source = s.train,
                           .batch = s.batch / world,
                           .rank = split ? 0 : rank,
                           .shuffle = 1,
                           .drop_last = 1,
                           .seed = s.seed,
                           .world = split ? 1 : world,
                           .augment = s.augment,
                           .prefetch = (int)ng_cfg_int(s.cfg, "data.prefetch"),
                           .workers = (int)ng_cfg_int(s.cfg, "data.workers")};
    /* A source that renders on the GPU (FractalDB) fills device batches there, on this thread,
     * when nothing augments them (augmentation is a host step). */
    if (s.device == NG_CUDA && s.train->device_batches && !ng_augment_active(&s.augment))
        lc.device = NG_CUDA;
    ng_loader *loader = ng_loader_new(&lc);
    int64_t per_epoch = ng_loader_batches_per_epoch(loader);
    NG_CHECK(pos.index < per_epoch,
             "%s/model.safetensors: metadata 'index' %lld is beyond the %lld batches of an epoch",
             ckpt, (long long)pos.index, (long long)per_epoch);
    ng_loader_seek(loader, pos.epoch, pos.index);
    trainer t = {.s = &s, .m = m, .opt = opt, .comm = comm, .rank = rank, .world = world};
    input_tensors(&s, s.batch / world, &t.x, &t.y);
    ng_loss_scaler_init(&t.scaler, &s.scale);
    if (resume_from && pos.loss_scale > 0) { /* where the interrupted run had got to */
        t.scaler.scale = pos.loss_scale;
        t.scaler.clean_steps = (double)pos.scale_clean;
        t.scaler.skips = (double)pos.skip_streak;
    }
    if (world > 1) {
        int64_t *start = malloc(sizeof *start * (size_t)m->nparams);
        NG_CHECK(start, "out of host memory");
        for (int i = 0; i < m->nparams; i++) start[i] = m->params[i].offset;
        was = ng_mem_set_category(NG_MEM_COMM);
        t.buckets = ng_buckets_new(comm, &m->flat_grads, start, m->nparams, s.bucket_bytes);
        ng_mem_set_category(was);
        t.hook = (ng_grad_hook){.self = &t, .ready = grads_ready};
        free(start);
    }
    /* Batch-norm statistics move in every training forward; a skipped step puts them back. */
    if (m->nbuffers) {
        was = ng_mem_set_category(NG_MEM_PARAMS);
        t.buffers_before = ng_tensor_new(m->dtype, m->device, 1, m->flat_buffers.shape, "buffers");
        ng_mem_set_category(was);
    }

    if (rank0) {
        char chain[128];
        ng_optimizer_describe(opt, chain, sizeof chain);
        fprintf(stderr,
                "natgrad train: %s (%lld params) on %s, %s: %lld train / %lld test, batch %lld, "
                "%lld steps (%.1f epochs), %s -> %s\n",
                s.arch.arch, (long long)m->count, ng_device_name(s.device), s.data_desc,
                (long long)ntrain, (long long)s.test->n, (long long)s.batch, (long long)s.steps,
                (double)s.steps / (double)per_epoch, chain, out);
        if (world > 1)
            fprintf(stderr,
                    "on %d ranks (%d nodes, %s backend): %lld examples each, all-reduce %s, %d "
                    "gradient buckets\n",
                    world, ng_comm_nodes(comm), ng_comm_backend_name(ng_comm_backend_of(comm)),
                    (long long)(s.batch / world), ng_allreduce_opts_name(&s.comm.allreduce),
                    ng_buckets_count(t.buckets));
        if (resume_from)
            fprintf(stderr, "resumed from %s at step %lld\n", ckpt, (long long)pos.step);
    }
    ng_stop_install();
    /* Tests make one step's gradient non-finite to check what a skip keeps (tests/train_faults.sh):
     * NG_TEST_NONFINITE_STEP=K fills the gradient of the model's last parameter with NaN at step
     * K (1-based, as logged). */
    const char *poison = getenv("NG_TEST_NONFINITE_STEP");
    t.poison_step = poison ? atoll(poison) : 0;

    int64_t first_step = pos.step;
    ng_progress prog = ng_progress_new(s.steps, pos.step);
    prog.quiet = !rank0;
    char line[2048];
    eval_result ev = {0, 0, 0, 0};
    double window_t0 = ng_now();
    int64_t window_imgs = 0, skipped_since_log = 0;
    int status = 0;
    for (int64_t step = pos.step; step < s.steps; step++) {
        double t0 = ng_now();
        ng_batch b = ng_loader_next(loader);
        step_result r = train_step(&t, &b, step);
        if (r.bad) {
            pos.skipped++, pos.skip_streak++, skipped_since_log++;
            ng_progress_note(&prog, "step %lld skipped: non-finite %s%s", (long long)step + 1,
                             strcmp(r.bad, "loss") ? "gradient of " : "", r.bad);
        } else {
            pos.skip_streak = 0;
        }
        ng_sync(s.device);
        double ms = (ng_now() - t0) * 1e3;
        window_imgs += b.b * world;
        int64_t done = step + 1;
        pos.step = done;
        pos.epoch = b.index + 1 == per_epoch ? b.epoch + 1 : b.epoch;
        pos.index = b.index + 1 == per_epoch ? 0 : b.index + 1;
        pos.train_s += ms * 1e-3;
        pos.optimizer_step = ng_optimizer_get_step(opt);
        pos.loss_scale = ng_loss_scaler_scale(&t.scaler);
        pos.scale_clean = (int64_t)t.scaler.clean_steps;
        int diverged = pos.skip_streak >= s.max_skips;
        double ips = window_imgs / (ng_now() - window_t0);
        if (done % s.log_every == 0 || done == s.steps || diverged) {
            char fields[512]; /* the optimizer's own, e.g. K-FAC's damping */
            ng_optimizer_metrics(opt, fields, sizeof fields);
            snprintf(line, sizeof line,
                     "{\"type\": \"train\", \"step\": %lld, \"epoch\": %.4f, \"loss\": %s, "
                     "\"accuracy\": %.6f, \"lr\": %s, \"grad_norm\": %s, \"images_per_s\": %s, "
                     "\"step_ms\": %.3f, \"loss_scale\": %s, \"skipped\": %lld, "
                     "\"skipped_total\": %lld%s, \"memory_mib\": %s}",
                     (long long)done, (double)done / (double)per_epoch,
                     ng_json_num("%.9g", r.loss).s, r.acc, ng_json_num("%.9g", r.lr).s,
                     ng_json_num("%.9g", r.gnorm).s, ng_json_num("%.1f", ips).s, ms,
                     ng_json_num("%.9g", r.scale).s, (long long)skipped_since_log,
                     (long long)pos.skipped, fields, memory_json(m));
            if (rank0) ng_metrics_line(&metrics, line);
            window_t0 = ng_now(), window_imgs = 0, skipped_since_log = 0;
        }
        if (diverged) {
            if (rank0)
                fprintf(
                    stderr,
                    "natgrad: error: training diverged: %lld step%s in a row had a non-finite "
                    "loss or gradient (train.max_skips = %lld), the last at step %lld: non-finite "
                    "%s%s; no checkpoint was written for them\n",
                    (long long)pos.skip_streak, pos.skip_streak == 1 ? "" : "s",
                    (long long)s.max_skips, (long long)done,
                    strcmp(r.bad, "loss") ? "gradient of " : "", r.bad);
            status = 1;
            break;
        }
        ng_progress_step(&prog, done, b.epoch, r.loss, r.acc, r.lr, ips, s.log_every);
        /* Rank 0 evaluates the whole test set alone (exact figures, no padded shards); the
         * others wait at the next collective. */
        if (rank0 && (done % s.eval_every == 0 || done == s.steps)) {
            ev = evaluate(m, &s, ng_noisy_kfac_find(opt), &t.x, &t.y);
            snprintf(line, sizeof line,
                     "{\"type\": \"eval\", \"step\": %lld, \"epoch\": %.4f, \"loss\": %s, "
                     "\"accuracy\": %.6f, \"ece\": %.6f, \"examples\": %lld, \"train_s\": %.3f}",
                     (long long)done, (double)done / (double)per_epoch,
                     ng_json_num("%.9g", ev.loss).s, ev.acc, ev.ece, (long long)ev.n, pos.train_s);
            ng_metrics_line(&metrics, line);
            ng_progress_note(&prog, "step %lld: test loss %.4f, test accuracy %.2f%%",
                             (long long)done, ev.loss, 100 * ev.acc);
            window_t0 = ng_now(), window_imgs = 0;
        }
        /* A signal may reach the ranks at different steps: they stop together at the first step
         * any of them saw it. */
        double sigv = done < s.steps ? ng_stop_requested() : 0;
        if (world > 1) ng_comm_scalars(comm, &sigv, 1, NG_COMM_SCALAR_MAX);
        int sig = (int)sigv;
        int stop = sig || (s.stop_at && done == s.stop_at && done < s.steps);
        int saved = 0;
        if (done % s.ckpt_every == 0 || done == s.steps || stop) {
            saved = ng_checkpoint_save(out, m, opt, pos, s.keep_ckpts, comm);
            if (!saved)
                ng_progress_note(&prog,
                                 "step %lld: no checkpoint, weights or optimizer state are not "
                                 "finite",
                                 (long long)done);
            window_t0 = ng_now(), window_imgs = 0;
        }
        if (stop) {
            char where[4200];
            snprintf(where, sizeof where,
                     saved ? "checkpoint in %s/checkpoints/step-%08lld"
                           : "no checkpoint (non-finite state) in %s at "
                             "step %lld",
                     out, (long long)done);
            if (sig)
                ng_progress_note(&prog,
                                 "stopped by %s after step %lld; %s; continue with --resume "
                                 "auto",
                                 ng_stop_signal_name(sig), (long long)done, where);
            else
                ng_progress_note(&prog,
                                 "stopped at step %lld (train.stop_at_step); %s; continue "
                                 "with --resume auto",
                                 (long long)done, where);
            status = sig ? 128 + sig : 0;
            break;
        }
    }
    if (!status && pos.step >= s.steps && rank0) {
        ng_progress_done(&prog);
        if (!ev.n) /* resumed from the last checkpoint */
            ev = evaluate(m, &s, ng_noisy_kfac_find(opt), &t.x, &t.y);
        if (ng_all_finite(&m->flat_params)) {
            char fin[4096];
            snprintf(fin, sizeof fin, "%s/final.safetensors", out);
            ng_weights_save(m, fin, (const char *[]){"format", "pt", NULL});
            ng_run_write_result(out, (ng_run_result){s.steps, ev.n, ev.loss, ev.acc});
            printf("test accuracy %.2f%% (loss %.4f) after %lld steps; run in %s\n", 100 * ev.acc,
                   ev.loss, (long long)s.steps, out);
            if (fflush(stdout)) /* e.g. stdout is a file on a full disk: result.json has it */
                fprintf(stderr,
                        "natgrad: warning: the result line could not be written to stdout "
                        "(it is in %s/result.json)\n",
                        out);
        } else {
            fprintf(stderr, "natgrad: error: the final weights are not finite; no "
                            "final.safetensors written\n");
            status = 1;
        }
    }
    if (world > 1) { /* every rank ends with rank 0's verdict on the final weights */
        double st = status;
        ng_comm_scalars(comm, &st, 1, NG_COMM_SCALAR_MAX);
        status = (int)st;
        /* What the overlap bought: the wait after backward is the communication it did not hide
         * (compare a run with one big bucket, which hides none). */
        int64_t n = pos.step - first_step;
        if (rank0 && t.buckets_run && n > 0)
            fprintf(stderr,
                    "gradient all-reduce: %lld of %lld buckets started during backward; per step "
                    "%.3f ms of backward, %.3f ms waiting for buckets after it\n",
                    (long long)t.overlapped, (long long)t.buckets_run, 1e3 * t.backward_s / n,
                    1e3 * t.wait_s / n);
    }
    if (rank0) {
        ng_metrics_close(&metrics);
        report_memory(m, &planned, out);
    }
    ng_buckets_free(t.buckets);
    ng_loader_free(loader);
    ng_tensor_free(&t.x), ng_tensor_free(&t.y);
    if (m->nbuffers) ng_tensor_free(&t.buffers_before);
    ng_optimizer_free(opt);
    ng_model_free(m);
    ng_train_setup_free(&s);
    ng_comm_finalize(comm);
    return status;
}

int ng_cmd_eval(int argc, char **argv) {
    train_args a;
    if (parse(argc, argv, &a)) return 2;
    if (!a.weights) {
        fprintf(stderr, "natgrad: error: eval: --weights FILE is required\n");
        usage(stderr, "eval");
        return 2;
    }
    ng_train_setup s;
    ng_train_setup_load(&s, a.config, a.sets, a.nsets);
    NG_CHECK(exists(a.weights), "--weights: %s does not exist", a.weights);
    ng_mem_figures planned;
    ng_model *m = build_model(&s, s.batch, &planned);
    ng_weights_load(m, a.weights);
    ng_tensor x, y;
    input_tensors(&s, s.batch, &x, &y);
    double t0 = ng_now();
    eval_result ev = evaluate(m, &s, NULL, &x, &y);
    double secs = ng_now() - t0;
    /* The compute dtype is the config's (precision.compute): fp16/bf16 inference stores the
     * weights' working copy and the activations in the half type. */
    printf("{\"type\": \"eval\", \"weights\": \"%s\", \"precision\": \"%s\", \"loss\": %s, "
           "\"accuracy\": %.6f, \"ece\": %.6f, \"examples\": %lld, \"seconds\": %s, "
           "\"images_per_s\": %s}\n",
           a.weights, ng_dtype_name(s.compute), ng_json_num("%.9g", ev.loss).s, ev.acc, ev.ece,
           (long long)ev.n, ng_json_num("%.3f", secs).s, ng_json_num("%.1f", ev.n / secs).s);
    ng_tensor_free(&x), ng_tensor_free(&y);
    ng_model_free(m);
    ng_train_setup_free(&s);
    return 0;
}
