/* `natgrad shards`: writes the train and test sources of a config as tar shards (WebDataset
 * layout), so a generated or converted data set is made once and read back with
 * data.name=shards. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apps/commands.h"
#include "apps/train_config.h"
#include "core/error.h"
#include "data/shards.h"

static void usage(FILE *f) {
    fprintf(f, "usage: natgrad shards --from CONFIG --out DIR [--shard-mib N] [--format npy|png]\n"
               "                      [--png-range LO,HI] [--set key=value ...]\n"
               "  writes the config's training and test data (data.*) as DIR/train-NNNNNN.tar and\n"
               "  DIR/test-NNNNNN.tar of about N MiB each (default 256); train from them with\n"
               "  --set data.name=shards --set data.dir=DIR\n"
               "  --format npy (default) stores each example as f4 KEY.npy, any shape; png stores\n"
               "  grey or RGB images [1|3, H, W] as 8-bit KEY.png, mapping [LO, HI] (default 0,1)\n"
               "  to the levels 0-255, read back as [0, 1]\n");
}

int ng_cmd_shards(int argc, char **argv) {
    const char *from = NULL, *out = NULL, *mib_s = "256", *format = "npy", *range_s = "0,1",
               *sets[256];
    int nsets = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 0;
        }
        const char **dst = !strcmp(o, "--from")        ? &from
                           : !strcmp(o, "--out")       ? &out
                           : !strcmp(o, "--shard-mib") ? &mib_s
                           : !strcmp(o, "--format")    ? &format
                           : !strcmp(o, "--png-range") ? &range_s
                                                       : NULL;
        if (!dst && strcmp(o, "--set")) {
            fprintf(stderr, "natgrad: error: shards: unknown option '%s'\n", o);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "natgrad: error: shards: option %s needs a value\n", o);
            return 2;
        }
        if (dst) {
            *dst = argv[++i];
        } else {
            if (!strchr(argv[i + 1], '=') || nsets == 256) {
                fprintf(stderr, "natgrad: error: --set takes key=value, got '%s'\n", argv[i + 1]);
                return 2;
            }
            sets[nsets++] = argv[++i];
        }
    }
    if (!from || !out) {
        fprintf(stderr, "natgrad: error: shards: --from CONFIG and --out DIR are required\n");
        usage(stderr);
        return 2;
    }
    char *end;
    double mib = strtod(mib_s, &end);
    NG_CHECK(end != mib_s && !*end && mib > 0 && mib <= 1048576,
             "--shard-mib: '%s' is not a size in MiB in (0, 1048576]", mib_s);
    NG_CHECK(!strcmp(format, "npy") || !strcmp(format, "png"), "--format: '%s' is not npy or png",
             format);
    int png = !strcmp(format, "png");
    double lo, hi;
    int used = 0;
    NG_CHECK(sscanf(range_s, "%lf,%lf%n", &lo, &hi, &used) == 2 && !range_s[used] && isfinite(lo) &&
                 isfinite(hi) && lo < hi,
             "--png-range: '%s' is not LO,HI with LO < HI", range_s);
    /* The config and its data are checked (and the sources opened) before DIR is touched; the
     * trainer's settings are not, since writing shards trains nothing. */
    ng_train_setup s;
    ng_train_setup_load_data(&s, from, sets, nsets);
    /* A source PNG cannot hold is refused before DIR is touched, too. */
    NG_CHECK(!png || (s.train->ndim == 3 && (s.train->shape[0] == 1 || s.train->shape[0] == 3)),
             "--format png: %s gives examples of %d dims, %lld channels; PNG holds grey or RGB "
             "images [1|3, H, W] (write volumes and other data with --format npy)",
             s.data_desc, s.train->ndim, (long long)s.train->shape[0]);
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/train-000000.tar", out);
    NG_CHECK(access(probe, F_OK) != 0, "--out: %s already holds shards (%s)", out, probe);
    NG_CHECK(mkdir(out, 0755) == 0 || errno == EEXIST, "--out: cannot create %s: %s", out,
             strerror(errno));
    int64_t bytes = (int64_t)(mib * 1048576.0);
    int64_t nt = png ? ng_shards_write_png(s.train, out, "train", bytes, lo, hi)
                     : ng_shards_write(s.train, out, "train", bytes);
    int64_t ne = png ? ng_shards_write_png(s.test, out, "test", bytes, lo, hi)
                     : ng_shards_write(s.test, out, "test", bytes);
    printf("wrote %lld training examples in %lld shards and %lld test examples in %lld shards "
           "(%s, %s) to %s\n",
           (long long)s.train->n, (long long)nt, (long long)s.test->n, (long long)ne, s.data_desc,
           png ? "png" : "npy", out);
    ng_train_setup_free(&s);
    return 0;
}
