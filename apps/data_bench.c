/* `natgrad data-bench`: how fast a config's training data comes, in images/s: the source alone on
 * this thread (a fractal renderer's speed per core), the loader over it (shuffle, batches and its
 * prefetch thread: shards against an in-memory set), and, with --png-dir, the same examples read
 * back as one PNG file per image (open, read, decode), the layout shards replace. Nothing else
 * measures these: `natgrad bench` times models, `natgrad train` mixes data with compute. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "apps/clock.h"
#include "apps/commands.h"
#include "apps/train_config.h"
#include "core/error.h"
#include "data/loader.h"
#include "data/shard_members.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: natgrad data-bench --from CONFIG [--examples N] [--batch B]\n"
            "                          [--png-dir DIR [--png-range LO,HI]] [--set key=value ...]\n"
            "  times N examples (default 256) of the config's training data: the source on\n"
            "  this thread, the loader (batches of B, default train.batch_size, prefetch\n"
            "  data.prefetch), and with --png-dir the same examples written there as one PNG\n"
            "  file per image (values over --png-range, default 0,1) and read back\n");
}

static double cpu_now(void) {
    return (double)clock() / CLOCKS_PER_SEC;
}

static void row(const char *what, int64_t n, double wall, double cpu) {
    printf("%-28s %8lld %10.3f %12.1f %14.1f\n", what, (long long)n, wall, (double)n / wall,
           cpu > 0 ? (double)n / cpu : 0.0);
}

int ng_cmd_data_bench(int argc, char **argv) {
    const char *from = NULL, *png_dir = NULL, *range_s = "0,1", *sets[256];
    int64_t n = 256, batch = 0;
    int nsets = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 0;
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
    int64_t e = ng_source_example_size(src);
    float *x = malloc(sizeof(float) * (size_t)e);
    NG_CHECK(x, "data-bench: out of host memory for an example of %s", src->name);
    printf("data: %s (%s), example [", s.data_desc, src->name);
    for (int d = 0; d < src->ndim; d++)
        printf("%lld%s", (long long)src->shape[d], d + 1 < src->ndim ? ", " : "]\n");
    printf("%-28s %8s %10s %12s %14s\n", "stage", "images", "wall_s", "images/s", "images/cpu_s");

    /* The source on this thread, positions 0.. in order (an ordered source streams them). */
    double t0 = ng_now(), c0 = cpu_now();
    int32_t y;
    for (int64_t i = 0; i < n; i++) ng_source_fill(src, 0, i, x, &y);
    row("source (this thread)", n, ng_now() - t0, cpu_now() - c0);

    /* The loader as training uses it: shuffled batches from its prefetch thread. */
    ng_loader_config lc = {.source = src,
                           .batch = batch,
                           .shuffle = 1,
                           .drop_last = 1,
                           .seed = s.seed,
                           .world = 1,
                           .augment = s.augment,
                           .prefetch = (int)ng_cfg_int(s.cfg, "data.prefetch")};
    ng_loader *l = ng_loader_new(&lc);
    int64_t nb = n / batch, got = 0;
    t0 = ng_now(), c0 = cpu_now();
    for (int64_t b = 0; b < nb; b++) got += ng_loader_next(l).b;
    char what[64];
    snprintf(what, sizeof what, "loader (batch %lld, prefetch %d)", (long long)batch, lc.prefetch);
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
        row("png files (this thread)", n, ng_now() - t0, cpu_now() - c0);
        free(buf);
    }
    free(x);
    ng_train_setup_free(&s);
    return 0;
}
