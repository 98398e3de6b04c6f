/* `natgrad data-bench`: how fast a config's training data comes, in images/s: the source alone on
 * this thread (a fractal renderer's speed per core), the loader over it (shuffle, batches and its
 * prefetch thread: shards against an in-memory set), and, with --png-dir, the same examples read
 * back as one PNG file per image (open, read, decode), the layout shards replace. With --device
 * cuda, a source that renders on the GPU (the fractals' fill_batch) fills device batches instead,
 * after a check of its first examples against the host's fill (whose time gives the CPU row).
 * With --cold, the files a pass will read (the shards, the PNG files) are dropped from the page
 * cache first (apps/page_cache.h: only natgrad's own files, so no root and no other user's cache)
 * and the pass is refused when they stay resident, so a cold row is never a warm one.
 * Nothing else measures these: `natgrad bench` times models, `natgrad train` mixes data with
 * compute. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "apps/clock.h"
#include "apps/commands.h"
#include "apps/page_cache.h"
#include "apps/train_config.h"
#include "core/backend.h"
#include "core/error.h"
#include "data/loader.h"
#include "data/shard_members.h"
#include "data/shards.h"

/* --cold: the largest fraction of a pass's file pages left in the page cache after dropping them
 * for which its row still counts as cold (a little room for pages another process is reading;
 * ext4 on the development machine leaves 0.0%, tmpfs keeps 100%). */
#define COLD_MAX_RESIDENT 0.05

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: natgrad data-bench --from CONFIG [--examples N] [--batch B] [--device cpu|cuda]\n"
        "                          [--png-dir DIR [--png-range LO,HI]] [--cold]\n"
        "                          [--set key=value ...]\n"
        "  times N examples (default 256) of the config's training data: the source on\n"
        "  this thread, the loader (batches of B, default train.batch_size, prefetch\n"
        "  data.prefetch), and with --png-dir the same examples written there as one PNG\n"
        "  file per image (values over --png-range, default 0,1) and read back.\n"
        "  --device cuda: the source renders batches of B on the GPU instead (FractalDB 2D\n"
        "  and 3D), after one untimed batch, with its first examples checked against the\n"
        "  host's fill (timed: the CPU row)\n"
        "  --cold: before each pass that reads files (data.name shards: the source and the\n"
        "  loader; --png-dir: the PNG files), drop those files from the page cache\n"
        "  (posix_fadvise, natgrad's files only), print how much of them stays resident and\n"
        "  refuse (exit 2) above 5%% (tmpfs, or a file system that keeps them); the rows are\n"
        "  marked cold. Not with --device cuda, nor without files to read\n");
}

static double cpu_now(void) {
    return (double)clock() / CLOCKS_PER_SEC;
}

/* cpu <= 0: a device row, whose host CPU time says nothing of the rendering: "-". */
static void row(const char *what, int64_t n, double wall, double cpu) {
    printf("%-28s %8lld %10.3f %12.1f ", what, (long long)n, wall, (double)n / wall);
    if (cpu > 0)
        printf("%14.1f\n", (double)n / cpu);
    else
        printf("%14s\n", "-");
}

/* The k-th file a pass reads, or NULL past the last: a shards source's shards, or PNG files. */
typedef const char *(*pass_file)(const void *ctx, int64_t k, char *buf, size_t cap);

static const char *shard_file(const void *src, int64_t k, char *buf, size_t cap) {
    (void)buf, (void)cap;
    return k < 1 << 30 ? ng_shards_file(src, (int)k) : NULL;
}

typedef struct {
    const char *dir;
    int64_t n;
} png_files;

static const char *png_file(const void *ctx, int64_t k, char *buf, size_t cap) {
    const png_files *p = ctx;
    if (k >= p->n) return NULL;
    snprintf(buf, cap, "%s/%09lld.png", p->dir, (long long)k);
    return buf;
}

/* --cold: drops every file of the coming pass from the page cache, then counts what stayed (all
 * dropped before any is counted) and prints it; too much left is an error, not a warm row. */
static void go_cold(pass_file file, const void *ctx) {
    char buf[4200];
    const char *p;
    for (int64_t k = 0; (p = file(ctx, k, buf, sizeof buf)); k++) ng_page_cache_evict(p);
    ng_page_residency r = {0};
    for (int64_t k = 0; (p = file(ctx, k, buf, sizeof buf)); k++) ng_page_cache_count(p, &r);
    double f = ng_page_residency_fraction(&r);
    printf("cold: %lld files, %.1f MiB, %.1f%% resident before the pass\n", (long long)r.files,
           (double)r.bytes / (1 << 20), 100 * f);
    fflush(stdout);
    NG_CHECK(f <= COLD_MAX_RESIDENT,
             "--cold: %.1f%% of the pages of %lld files stay in the page cache after dropping "
             "them (the most: %s, %lld of %lld pages), more than %.0f%%: %s; no cold figure",
             100 * f, (long long)r.files, r.worst, (long long)r.worst_resident,
             (long long)r.worst_pages, 100 * COLD_MAX_RESIDENT,
             r.worst_tmpfs ? "it is on tmpfs, which keeps files in memory; put them on a disk"
                           : "the file system ignores the advice, or this user may not write "
                             "the file (mincore then reports every page resident)");
}

/* The source on the GPU: up to 16 examples filled on the host (timed, the one-core figure) and
 * as one device batch, compared value for value; one untimed batch (the CUDA context, the
 * kernel's first launch); then n examples, positions 0.. in batches of `batch`, each batch
 * finished on the device before the next (fill_batch returns after its kernel). Returns 1 when
 * the check passed. */
static int bench_device(ng_source *src, int64_t n, int64_t batch) {
    NG_CHECK(ng_cuda_available(), "--device cuda: no CUDA device is usable here");
    NG_CHECK(src->device_batches,
             "--device cuda: %s has no GPU renderer (FractalDB 2D and 3D have: data.name "
             "fractal or fractal3d)",
             src->name);
    int64_t e = ng_source_example_size(src), shape[5] = {batch}, k = batch < 16 ? batch : 16;
    for (int d = 0; d < src->ndim; d++) shape[d + 1] = src->shape[d];
    ng_tensor x = ng_tensor_new(NG_F32, NG_CUDA, src->ndim + 1, shape, "device batch");
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)batch);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)batch);
    float *host = malloc(sizeof(float) * (size_t)(k * e));
    NG_CHECK(idx && y && host, "data-bench: out of host memory for a batch of %lld",
             (long long)batch);
    for (int64_t j = 0; j < batch; j++) idx[j] = j % src->n;

    double t0 = ng_now(), c0 = cpu_now();
    int32_t yj;
    for (int64_t j = 0; j < k; j++) ng_source_fill(src, 0, idx[j], host + j * e, &yj);
    row("source (this thread)", k, ng_now() - t0, cpu_now() - c0);
    ng_source_fill_batch(src, 0, idx, batch, &x, y); /* also the untimed first batch */
    ng_tensor first = ng_tensor_view(&x, 0, 1, (int64_t[]){k * e}, "first examples");
    ng_tensor h = ng_tensor_to(&first, NG_CPU, "first examples on the host");
    int64_t differ = 0;
    for (int64_t i = 0; i < k * e; i++) differ += host[i] != ((const float *)h.data)[i];
    ng_tensor_free(&h);

    int64_t done = 0;
    t0 = ng_now();
    while (done < n) {
        int64_t b = n - done < batch ? n - done : batch;
        for (int64_t j = 0; j < b; j++) idx[j] = (done + j) % src->n;
        ng_tensor part =
            b == batch ? x
                       : ng_tensor_view(&x, 0, src->ndim + 1,
                                        (int64_t[]){b, shape[1], shape[2], shape[3], shape[4]},
                                        "last device batch");
        ng_source_fill_batch(src, 0, idx, b, &part, y);
        done += b;
    }
    char what[64];
    snprintf(what, sizeof what, "source on cuda (batch %lld)", (long long)batch);
    row(what, done, ng_now() - t0, 0);
    printf("check: %lld of the first %lld examples' %lld values differ between cuda and the "
           "host's fill%s\n",
           (long long)differ, (long long)k, (long long)(k * e), differ ? " (MISMATCH)" : "");
    ng_tensor_free(&x);
    free(idx), free(y), free(host);
    return differ == 0;
}

int ng_cmd_data_bench(int argc, char **argv) {
    const char *from = NULL, *png_dir = NULL, *range_s = "0,1", *sets[256];
    int64_t n = 256, batch = 0;
    int nsets = 0, cuda = 0, cold = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(o, "--cold")) { /* the one option without a value */
            cold = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "natgrad: error: data-bench: option %s needs a value\n", o);
            return 2;
        }
        char *end = NULL;
        if (!strcmp(o, "--from")) {
            from = v;
        } else if (!strcmp(o, "--png-dir")) {
            png_dir = v;
        } else if (!strcmp(o, "--png-range")) {
            range_s = v;
        } else if (!strcmp(o, "--examples")) {
            n = strtoll(v, &end, 10);
            NG_CHECK(*v && !*end && n >= 1 && n <= 100000000, "--examples: '%s' is not 1 to 1e8",
                     v);
        } else if (!strcmp(o, "--batch")) {
            batch = strtoll(v, &end, 10);
            NG_CHECK(*v && !*end && batch >= 1 && batch <= 1000000, "--batch: '%s' is not 1 to 1e6",
                     v);
        } else if (!strcmp(o, "--device") && (!strcmp(v, "cpu") || !strcmp(v, "cuda"))) {
            cuda = !strcmp(v, "cuda");
        } else if (!strcmp(o, "--set") && strchr(v, '=') && nsets < 256) {
            sets[nsets++] = v;
        } else {
            fprintf(stderr, "natgrad: error: data-bench: unknown option or bad value '%s %s'\n", o,
                    v);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!from) {
        fprintf(stderr, "natgrad: error: data-bench: --from CONFIG is required\n");
        usage(stderr);
        return 2;
    }
    NG_CHECK(!cold || !cuda,
             "--cold: not with --device cuda (the GPU renders its batches; no file is read)");
    double lo = 0, hi = 1;
    int used = 0;
    NG_CHECK(sscanf(range_s, "%lf,%lf%n", &lo, &hi, &used) == 2 && !range_s[used] && lo < hi,
             "--png-range: '%s' is not LO,HI with LO < HI", range_s);
    ng_train_setup s;
    ng_train_setup_load(&s, from, sets, nsets);
    ng_source *src = s.train;
    if (n > src->n) n = src->n;
    if (!batch) batch = s.batch;
    if (batch > n) batch = n;
    int files = ng_shards_file(src, 0) != NULL; /* the source's passes read files */
    NG_CHECK(!cold || files || png_dir,
             "--cold: %s reads no files in its passes (in memory or rendered): --cold needs "
             "data.name shards or --png-dir",
             src->name);
    const char *cold_mark = cold ? ", cold" : "";
    int64_t e = ng_source_example_size(src);
    float *x = malloc(sizeof(float) * (size_t)e);
    NG_CHECK(x, "data-bench: out of host memory for an example of %s", src->name);
    printf("data: %s (%s), example [", s.data_desc, src->name);
    for (int d = 0; d < src->ndim; d++)
        printf("%lld%s", (long long)src->shape[d], d + 1 < src->ndim ? ", " : "]\n");
    printf("%-28s %8s %10s %12s %14s\n", "stage", "images", "wall_s", "images/s", "images/cpu_s");

    if (cuda) {
        NG_CHECK(!png_dir,
                 "--png-dir: not with --device cuda (the PNG files are read on the host)");
        int ok = bench_device(src, n, batch);
        free(x);
        ng_train_setup_free(&s);
        return ok ? 0 : 1;
    }

    /* The source on this thread, positions 0.. in order (an ordered source streams them). */
    char what[96];
    if (cold && files) go_cold(shard_file, src);
    double t0 = ng_now(), c0 = cpu_now();
    int32_t y;
    for (int64_t i = 0; i < n; i++) ng_source_fill(src, 0, i, x, &y);
    snprintf(what, sizeof what, "source (this thread%s)", files ? cold_mark : "");
    row(what, n, ng_now() - t0, cpu_now() - c0);

    /* The loader as training uses it: shuffled batches from its prefetch thread. */
    ng_loader_config lc = {.source = src,
                           .batch = batch,
                           .shuffle = 1,
                           .drop_last = 1,
                           .seed = s.seed,
                           .world = 1,
                           .augment = s.augment,
                           .prefetch = (int)ng_cfg_int(s.cfg, "data.prefetch"),
                           .workers = (int)ng_cfg_int(s.cfg, "data.workers")};
    if (cold && files) go_cold(shard_file, src); /* before its prefetch thread starts reading */
    ng_loader *l = ng_loader_new(&lc);
    int64_t nb = n / batch, got = 0;
    t0 = ng_now(), c0 = cpu_now();
    for (int64_t b = 0; b < nb; b++) got += ng_loader_next(l).b;
    snprintf(what, sizeof what, "loader (batch %lld, prefetch %d, workers %d%s)", (long long)batch,
             lc.prefetch, lc.workers, files ? cold_mark : "");
    row(what, got, ng_now() - t0, cpu_now() - c0);
    ng_loader_free(l);

    if (png_dir) {
        NG_CHECK(src->ndim == 3 && (src->shape[0] == 1 || src->shape[0] == 3),
                 "--png-dir: %s gives no grey or RGB images [1|3, H, W]", src->name);
        NG_CHECK(mkdir(png_dir, 0755) == 0 || errno == EEXIST, "--png-dir: cannot create %s: %s",
                 png_dir, strerror(errno));
        char path[4200], why[256];
        for (int64_t i = 0; i < n; i++) { /* written first, not timed */
            ng_source_fill(src, 0, i, x, &y);
            size_t len;
            unsigned char *p = ng_shard_png_encode(x, src->shape[0], src->shape[1], src->shape[2],
                                                   lo, hi, &len, why, sizeof why);
            NG_CHECK(p, "--png-range: example %lld of %s: %s", (long long)i, src->name, why);
            snprintf(path, sizeof path, "%s/%09lld.png", png_dir, (long long)i);
            FILE *f = fopen(path, "wb");
            NG_CHECK(f && fwrite(p, 1, len, f) == len && fclose(f) == 0,
                     "--png-dir: cannot write %s", path);
            free(p);
        }
        if (cold) go_cold(png_file, &(png_files){png_dir, n}); /* written just now: dirty */
        t0 = ng_now(), c0 = cpu_now();
        unsigned char *buf = NULL;
        size_t cap = 0;
        for (int64_t i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/%09lld.png", png_dir, (long long)i);
            FILE *f = fopen(path, "rb");
            NG_CHECK(f, "--png-dir: cannot read %s", path);
            fseek(f, 0, SEEK_END);
            size_t len = (size_t)ftell(f);
            fseek(f, 0, SEEK_SET);
            if (len > cap) {
                free(buf);
                buf = malloc(cap = len);
                NG_CHECK(buf, "data-bench: out of host memory");
            }
            NG_CHECK(fread(buf, 1, len, f) == len, "--png-dir: cannot read %s", path);
            fclose(f);
            ng_shard_shape got_shape;
            NG_CHECK(ng_shard_decode("png", buf, len, NULL, &got_shape, x, why, sizeof why),
                     "%s: %s", path, why);
        }
        snprintf(what, sizeof what, "png files (this thread%s)", cold_mark);
        row(what, n, ng_now() - t0, cpu_now() - c0);
        free(buf);
    }
    free(x);
    ng_train_setup_free(&s);
    return 0;
}
