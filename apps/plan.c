/* `natgrad plan`: a config's peak memory per category, predicted from the layers' shapes without
 * running it; with --measure, a few real training steps beside the prediction; with --search, the
 * largest input side (the 3D volume's, for cnn3d) or batch that fits a memory budget, with and
 * without activation checkpointing, in each precision. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/commands.h"
#include "apps/memory_report.h"
#include "core/backend.h"
#include "core/dtype.h"
#include "core/error.h"

static void usage(FILE *f) {
    fprintf(f, "usage: natgrad plan [--config FILE] [--set key=value ...] [--ranks N]\n"
               "                    [--device cpu|cuda]\n"
               "                    [--budget SIZE] [--measure [--steps N]]\n"
               "                    [--search resolution|batch]\n"
               "  --ranks N     data-parallel ranks sharing train.batch_size (default 1)\n"
               "  --device D    plan for this device instead of the config's (a plan needs no\n"
               "                device: a GPU run can be planned on a laptop, with --budget)\n"
               "  --budget SIZE device memory to fit, e.g. 139GiB, 80GB, 512MiB (default: the\n"
               "                device's memory)\n"
               "  --measure     also train --steps steps (default 3) in a scratch run directory\n"
               "                and print predicted against measured per category\n"
               "  --search W    the largest input side (resolution; the volume side for cnn3d)\n"
               "                or batch (batch) that fits the budget, for fp32, bf16 and fp16,\n"
               "                with and without model.checkpoint\n");
}

static int bad(const char *opt, const char *val, const char *want) {
    fprintf(stderr, "natgrad: error: plan: %s %s: %s\n", opt, val ? val : "(missing)", want);
    usage(stderr);
    return 2;
}

/* "139GiB", "80GB", "512MiB", "1.5TiB", or bytes; 0 when it does not parse. */
static size_t parse_size(const char *v) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || !(x > 0)) return 0;
    while (*end == ' ') end++;
    static const struct {
        const char *unit;
        double scale;
    } units[] = {{"", 1},          {"B", 1},
                 {"KiB", 1024.0},  {"MiB", 1048576.0},
                 {"GiB", 1 << 30}, {"TiB", 1099511627776.0},
                 {"KB", 1e3},      {"MB", 1e6},
                 {"GB", 1e9},      {"TB", 1e12}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (!strcmp(end, units[i].unit))
            return x * units[i].scale < 1.8e19 ? (size_t)(x * units[i].scale) : 0;
    return 0;
}

static size_t device_memory(ng_device dev) {
    if (dev == NG_CUDA) return ng_cuda_total_memory();
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
}

static double gib(size_t b) {
    return (double)b / (double)(1u << 30);
}

/* The smallest input side the architecture builds at, and the step between valid sides. */
static void side_rule(const ng_arch *a, int64_t *lo, int64_t *unit) {
    *lo = 1, *unit = 1;
    if (!strncmp(a->arch, "vit", 3)) *lo = *unit = a->patch;
    if (!strcmp(a->arch, "vgg")) *lo = (int64_t)1 << a->depth;
    if (!strcmp(a->arch, "lenet")) *lo = 12;
    if (!strcmp(a->arch, "nin")) *lo = 4;
}

static size_t peak_at(const ng_train_setup *s, ng_arch a, ng_dtype dt, int64_t side,
                      int64_t batch) {
    ng_train_setup t = *s;
    t.compute = dt;
    a.img = side;
    ng_mem_figures f;
    ng_mem_predict(&t, &a, batch, &f);
    return f.device_peak;
}

/* The largest k in [1, limit] with fits(k) (0 when not even 1 fits), fits being monotone. */
static int64_t largest(const ng_train_setup *s, const ng_arch *a, ng_dtype dt, int search_side,
                       int64_t batch, int64_t lo, int64_t unit, size_t budget, int64_t limit) {
    int64_t good = 0, k = 1;
#define FITS(k)                                                                                    \
    (peak_at(s, *a, dt, search_side ? lo + ((k)-1) * unit : a->img, search_side ? batch : (k)) <=  \
     budget)
    while (k <= limit && FITS(k)) good = k, k *= 2;
    int64_t hi = k <= limit ? k : limit + 1; /* first known failure (or past the limit) */
    while (hi - good > 1) {
        int64_t mid = good + (hi - good) / 2;
        if (FITS(mid))
            good = mid;
        else
            hi = mid;
    }
#undef FITS
    return good;
}

static int search(const ng_train_setup *s, int64_t rank_batch, size_t budget, int by_side) {
    static const ng_dtype dts[] = {NG_F32, NG_BF16, NG_F16};
    /* plain, the config's checkpointing (or every block a segment), and every block recomputed */
    ng_ckpt_spec specs[3] = {{0, 0, 0}, s->arch.checkpoint, {1, 0, 1}};
    if (!ng_ckpt_spec_active(&specs[1])) specs[1].every = 1;
    int nspec = ng_arch_blocks(&s->arch) == 0 ? 1 : specs[1].recompute ? 2 : 3;
    int64_t lo, unit;
    side_rule(&s->arch, &lo, &unit);
    printf("largest %s within %.2f GiB (%s, %s, batch %lld per rank):\n",
           by_side ? "input side" : "batch per rank", gib(budget), s->arch.arch,
           ng_device_name(s->device), (long long)rank_batch);
    printf("%-6s %-16s %12s %14s\n", "dtype", "checkpoint", by_side ? "side" : "batch", "peak GiB");
    for (int d = 0; d < 3; d++)
        for (int c = 0; c < nspec; c++) {
            ng_arch a = s->arch;
            a.checkpoint = specs[c];
            char spec[128];
            ng_ckpt_spec_format(&a.checkpoint, spec, sizeof spec);
            int64_t k = largest(s, &a, dts[d], by_side, rank_batch, lo, unit, budget,
                                by_side ? 65536 / unit : (int64_t)1 << 30);
            if (!k) {
                printf("%-6s %-16s %12s %14s\n", ng_dtype_name(dts[d]), spec, "none fits", "-");
                continue;
            }
            int64_t side = by_side ? lo + (k - 1) * unit : a.img, batch = by_side ? rank_batch : k;
            printf("%-6s %-16s %12lld %14.3f\n", ng_dtype_name(dts[d]), spec,
                   (long long)(by_side ? side : batch), gib(peak_at(s, a, dts[d], side, batch)));
        }
    return 0;
}

/* Reads the "measured_mib" object of a run's memory.json (the trainer's own format). */
static int read_measured(const char *dir, ng_mem_figures *f) {
    char p[4200], text[2048];
    snprintf(p, sizeof p, "%s/memory.json", dir);
    FILE *fp = fopen(p, "r");
    if (!fp) return 0;
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = 0;
    const char *m = strstr(text, "\"measured_mib\"");
    if (!m) return 0;
    memset(f, 0, sizeof *f);
    const char *ar = strstr(m, "\"arenas\": ");
    if (!ar) return 0;
    f->arenas.joint = (size_t)(strtod(ar + strlen("\"arenas\": "), NULL) * 1048576.0);
    for (int c = 0; c <= NG_MEM_NCAT; c++) {
        char key[48];
        snprintf(key, sizeof key,
                 "\"%s\": ", c < NG_MEM_NCAT ? ng_mem_category_name(c) : "device_peak");
        const char *k = strstr(m, key);
        if (!k) return 0;
        double v = strtod(k + strlen(key), NULL) * 1048576.0;
        if (c < NG_MEM_NCAT)
            f->cat[c] = (size_t)v;
        else
            f->device_peak = (size_t)v;
    }
    return 1;
}

/* The scratch run directory goes however the run ends (a usage error exits from inside it). */
static char scratch[64];
static void remove_scratch(void) {
    if (!scratch[0]) return;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0) fprintf(stderr, "natgrad: warning: could not remove %s\n", scratch);
    scratch[0] = 0;
}

static int measure(const char *config, const char *const *sets, int nsets, int ranks, int steps,
                   const ng_mem_figures *pred) {
    NG_CHECK(ranks == 1,
             "plan --measure: measures one process; run natgrad train under mpirun "
             "and read DIR/memory.json for %d ranks",
             ranks);
    snprintf(scratch, sizeof scratch, "/tmp/natgrad-plan-XXXXXX");
    NG_CHECK(mkdtemp(scratch), "plan --measure: cannot create a scratch directory in /tmp");
    atexit(remove_scratch);
    const char *dir = scratch;
    char run[96], st[64];
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(st, sizeof st, "train.steps=%d", steps);
    const char *argv[300];
    int argc = 0;
    argv[argc++] = "train";
    if (config) argv[argc++] = "--config", argv[argc++] = config;
    for (int i = 0; i < nsets; i++) argv[argc++] = "--set", argv[argc++] = sets[i];
    /* a few steps of the same model, no warmup to outlast them, no checkpoint on the way */
    const char *extra[] = {st,
                           "schedule.warmup_steps=0",
                           "schedule.warmup_epochs=0",
                           "train.eval_every=0",
                           "train.checkpoint_every=0",
                           "train.log_every=1000000",
                           "train.arena_mib=0"};
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++)
        argv[argc++] = "--set", argv[argc++] = extra[i];
    argv[argc++] = "--out", argv[argc++] = run;
    fprintf(stderr, "plan --measure: training %d steps in %s\n", steps, run);
    int rc = ng_cmd_train(argc, (char **)argv);
    ng_mem_figures meas;
    int ok = rc == 0 && read_measured(run, &meas);
    remove_scratch();
    NG_CHECK(ok, "plan --measure: the training run failed (status %d) or left no memory.json", rc);
    printf("\npredicted against measured (%d training steps, one process):\n", steps);
    ng_mem_table(stdout, pred, &meas);
    double r = (double)pred->device_peak / (double)meas.device_peak;
    printf("device peak: predicted %.2f MiB, measured %.2f MiB (%+.1f%%)\n",
           pred->device_peak / 1048576.0, meas.device_peak / 1048576.0, 100 * (r - 1));
    return 0;
}

int ng_cmd_plan(int argc, char **argv) {
    const char *config = NULL, *sets[256] = {0}, *search_what = NULL;
    int nsets = 0, ranks = 1, steps = 3, do_measure = 0, device = -1;
    size_t budget = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--measure")) {
            do_measure = 1;
            continue;
        } else if (!strcmp(a, "--config")) {
            if (!v) return bad(a, v, "a YAML file");
            config = v;
        } else if (!strcmp(a, "--set")) {
            if (!v || !strchr(v, '=')) return bad(a, v, "key=value");
            if (nsets == 256) return bad(a, v, "at most 256 --set options");
            sets[nsets++] = v;
        } else if (!strcmp(a, "--ranks")) {
            if (!v || (ranks = atoi(v)) < 1 || ranks > 1 << 20) return bad(a, v, "1 or more");
        } else if (!strcmp(a, "--device")) {
            if (!v || (strcmp(v, "cpu") && strcmp(v, "cuda"))) return bad(a, v, "cpu or cuda");
            device = strcmp(v, "cpu") ? NG_CUDA : NG_CPU;
        } else if (!strcmp(a, "--steps")) {
            if (!v || (steps = atoi(v)) < 1 || steps > 1000) return bad(a, v, "1..1000 steps");
        } else if (!strcmp(a, "--budget")) {
            if (!v || !(budget = parse_size(v)))
                return bad(a, v, "a size such as 139GiB, 80GB or 512MiB");
        } else if (!strcmp(a, "--search")) {
            if (!v || (strcmp(v, "resolution") && strcmp(v, "batch")))
                return bad(a, v, "resolution or batch");
            search_what = v;
        } else {
            return bad(a, NULL, "unknown option");
        }
        i++;
    }
    ng_train_setup s;
    ng_train_setup_load(&s, config, sets, nsets);
    if (device >= 0) {
        NG_CHECK(!do_measure || (ng_device)device == s.device,
                 "plan --device: --measure runs on the config's device (set device=...)");
        s.device = (ng_device)device;
    }
    NG_CHECK(s.batch % ranks == 0, "train.batch_size: %lld is not a multiple of --ranks %d",
             (long long)s.batch, ranks);
    int64_t rank_batch = s.batch / ranks;
    if (!budget) budget = device_memory(s.device);
    NG_CHECK(budget, "plan --budget: no %s device here to take the memory of; give --budget SIZE",
             ng_device_name(s.device));
    ng_mem_figures pred;
    ng_mem_predict(&s, &s.arch, rank_batch, &pred);
    char spec[128];
    ng_ckpt_spec_format(&s.arch.checkpoint, spec, sizeof spec);
    int64_t in[NG_MAX_DIMS];
    int nd = ng_arch_input_shape(&s.arch, in);
    char chain[160] = "";
    for (int i = 0; i < s.optim.n; i++) /* the optimizer chain, outer part first */
        snprintf(chain + strlen(chain), sizeof chain - strlen(chain), "%s%s", i ? " + " : "",
                 s.optim.kind[i]->name);
    printf("natgrad plan: %s, input [%lld", s.arch.arch, (long long)rank_batch);
    for (int i = 0; i < nd; i++) printf(", %lld", (long long)in[i]);
    printf("], %s, %s, checkpoint %s, optimizer %s, %d rank%s\n", ng_dtype_name(s.compute),
           ng_device_name(s.device), spec, chain, ranks, ranks == 1 ? "" : "s");
    ng_mem_table(stdout, &pred, NULL);
    printf("fits %.2f GiB: %s (%.1f%% of it)\n", gib(budget),
           pred.device_peak <= budget ? "yes" : "no", 100.0 * pred.device_peak / budget);
    int rc = 0;
    if (search_what) rc = search(&s, rank_batch, budget, !strcmp(search_what, "resolution"));
    if (!rc && do_measure) rc = measure(config, sets, nsets, ranks, steps, &pred);
    ng_train_setup_free(&s);
    return rc;
}
