/* Tar shards (data/shards.h): a source written as shards reads back the same examples and
 * labels, each once per epoch; the stream is a function of (seed, epoch) and any position can be
 * replayed; the loader over shards resumes bit-exactly; PNG members decode to the pixels encoded,
 * and sources written as PNG read back (levels bit for bit, other values within half a level);
 * shards broken in the tar header, a member's size, the data, a PNG chunk or the label give
 * an error naming the shard and the member. */
#define _GNU_SOURCE /* memmem */
#include <archive.h>
#include <archive_entry.h>
#include <math.h>
#include <spng.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "data/fractal3d.h"
#include "data/loader.h"
#include "data/shards.h"
#include "testing.h"

static char tmp[256];

static const char *folder(const char *name) {
    static char buf[32][320];
    static int k;
    snprintf(buf[k % 32], sizeof buf[0], "%s/%s", tmp, name);
    mkdir(buf[k % 32], 0700);
    return buf[k++ % 32];
}

static int64_t pick(int64_t n) {
    int64_t v = (int64_t)((ng_test_uniform() + 1.0) * 0.5 * (double)n);
    return v < n ? v : n - 1;
}

/* A random in-memory source of n examples [2, 5, 3] and 4 classes. */
static ng_source *random_source(int64_t n, uint64_t seed) {
    int64_t shape[3] = {2, 5, 3};
    return ng_source_dataset(ng_synthetic(n, 3, shape, 4, 1.0, seed, 0, "random"));
}

/* One epoch of a source, in its order. */
static void read_epoch(ng_source *s, int64_t epoch, float *x, int32_t *y) {
    int64_t e = ng_source_example_size(s);
    for (int64_t i = 0; i < s->n; i++) ng_source_fill(s, epoch, i, x + i * e, y + i);
}

/* Which example of the reference each read example is (bytes and label), -1 if none. */
static int64_t which(const float *x, int32_t y, const float *ref, const int32_t *ry, int64_t n,
                     int64_t e) {
    for (int64_t j = 0; j < n; j++)
        if (ry[j] == y && !memcmp(ref + j * e, x, sizeof(float) * (size_t)e)) return j;
    return -1;
}

static void test_roundtrip(uint64_t seed) {
    const int64_t n = 57, e = 30;
    ng_source *src = random_source(n, seed);
    float ref[57 * 30], x[2][57 * 30];
    int32_t ry[57], y[2][57];
    read_epoch(src, 0, ref, ry);
    const char *dir = folder("roundtrip");
    /* A group is 512 + 512 (npy: 128 + 120 bytes, padded) + 512 + 512 (cls) bytes: 8 examples
     * per 16 KiB shard. */
    int64_t shards = ng_shards_write(src, dir, "train", 16384);
    NG_TEST(shards == 8, "57 examples of 2 KiB groups in 16 KiB shards: %lld shards, want 8",
            (long long)shards);
    for (int64_t buffer = 1; buffer <= 64; buffer *= 8) {
        ng_shards_config c = {
            .dir = dir, .prefix = "train", .shuffle_buffer = buffer, .seed = seed};
        ng_source *s = ng_shards_open(&c);
        NG_TEST(s->n == n && s->ndim == 3 && s->shape[0] == 2 && s->shape[1] == 5 &&
                    s->shape[2] == 3 && s->classes == 4 && s->ordered && s->dtype == NG_F32,
                "shards: n %lld, %d dims [%lld,%lld,%lld], classes %lld", (long long)s->n, s->ndim,
                (long long)s->shape[0], (long long)s->shape[1], (long long)s->shape[2],
                (long long)s->classes);
        int64_t moved = 0;
        for (int ep = 0; ep < 2; ep++) {
            read_epoch(s, ep, x[ep], y[ep]);
            int64_t seen[57] = {0}, bad = 0, once = 0;
            for (int64_t i = 0; i < n; i++) {
                int64_t j = which(x[ep] + i * e, y[ep][i], ref, ry, n, e);
                if (j < 0)
                    bad++;
                else
                    seen[j]++;
                moved += j != i;
            }
            for (int64_t j = 0; j < n; j++) once += seen[j] == 1;
            NG_TEST(!bad && once == n,
                    "shuffle buffer %lld epoch %d: every example read back once, bytes and label "
                    "(%lld unknown, %lld of %lld once)",
                    (long long)buffer, ep, (long long)bad, (long long)once, (long long)n);
        }
        int64_t differ = 0;
        for (int64_t i = 0; i < n; i++) differ += y[0][i] != y[1][i] || x[0][i * e] != x[1][i * e];
        NG_TEST(moved > n && differ > n / 2,
                "shuffle buffer %lld: the order is shuffled (%lld moved) and differs by epoch "
                "(%lld)",
                (long long)buffer, (long long)moved, (long long)differ);
        /* Replays: any position of any epoch, after anything, is the recorded example. */
        int ok = 1;
        for (int t = 0; t < 20; t++) {
            int ep = (int)pick(2);
            int64_t i = pick(n);
            float v[30];
            int32_t l;
            ng_source_fill(s, ep, i, v, &l);
            ok &= l == y[ep][i] && !memcmp(v, x[ep] + i * e, sizeof v);
        }
        NG_TEST(ok, "shuffle buffer %lld: positions replayed in any order are the same examples",
                (long long)buffer);
        ng_source *again = ng_shards_open(&c);
        float z[57 * 30];
        int32_t zy[57];
        read_epoch(again, 1, z, zy);
        NG_TEST(!memcmp(z, x[1], sizeof z) && !memcmp(zy, y[1], sizeof zy),
                "shuffle buffer %lld: the same seed gives the same stream", (long long)buffer);
        ng_source_free(again);
        c.seed = seed + 1;
        again = ng_shards_open(&c);
        read_epoch(again, 1, z, zy);
        NG_TEST(memcmp(zy, y[1], sizeof zy) != 0,
                "shuffle buffer %lld: another seed, another order", (long long)buffer);
        ng_source_free(again);
        if (buffer == 1) { /* the stored order inside each shard: runs of 8 consecutive keys */
            int64_t runs = 0;
            for (int64_t i = 1; i < n; i++)
                runs += which(x[0] + i * e, y[0][i], ref, ry, n, e) !=
                        which(x[0] + (i - 1) * e, y[0][i - 1], ref, ry, n, e) + 1;
            NG_TEST(runs <= 7, "shuffle buffer 1: shards are read whole (%lld breaks, want <= 7)",
                    (long long)runs);
        }
        ng_source_free(s);
    }

    /* Split over 3 ranks: rank r reads shards r, r+3, ... (8, 8, 8 | 8, 8, 1 | 8, 8 examples),
     * each rank 16 examples an epoch, all from its own shards, none shared. */
    {
        int64_t owner[57];
        for (int64_t j = 0; j < n; j++) owner[j] = -1;
        int ok = 1;
        for (int r = 0; r < 3; r++) {
            ng_shards_config c = {.dir = dir, .prefix = "train", .shuffle_buffer = 8, .seed = seed};
            ng_source *s = ng_shards_open(&c);
            NG_TEST(ng_source_split(s, r, 3) == 1 && s->n == 16,
                    "split rank %d of 3: %lld examples, want 16", r, (long long)s->n);
            for (int ep = 0; ep < 2; ep++)
                for (int64_t i = 0; i < s->n; i++) {
                    float v[30];
                    int32_t l;
                    ng_source_fill(s, ep, i, v, &l);
                    int64_t j = which(v, l, ref, ry, n, e);
                    ok &= j >= 0 && (j / 8) % 3 == r && (owner[j] < 0 || owner[j] == r);
                    if (j >= 0) owner[j] = r;
                }
            ng_source_free(s);
        }
        NG_TEST(ok, "split: every rank reads only its own shards (index / 8 = r mod 3)");
        ng_shards_config c = {.dir = dir, .prefix = "train", .shuffle_buffer = 8, .seed = seed};
        ng_source *volatile s = ng_shards_open(&c);
        NG_TEST_ERROR(ng_source_split(s, 0, 9), "cannot be split over 9 ranks");
        ng_source_free(s);
        NG_TEST(ng_source_split(src, 1, 3) == 0 && src->n == n,
                "an in-memory source does not split itself");
    }

    /* The loader over shards: prefetch and seek give the uninterrupted stream bit for bit. */
    ng_shards_config c = {.dir = dir, .prefix = "train", .shuffle_buffer = 16, .seed = seed};
    ng_source *s = ng_shards_open(&c);
    ng_loader_config lc = {.source = s, .batch = 5, .shuffle = 1, .seed = seed, .world = 1};
    ng_loader *l = ng_loader_new(&lc);
    int64_t nb = ng_loader_batches_per_epoch(l);
    float *rec = malloc(sizeof(float) * (size_t)(3 * nb * 5 * e));
    int32_t ryb[3 * 12 * 5];
    for (int64_t g = 0; g < 3 * nb; g++) {
        ng_batch b = ng_loader_next(l);
        memcpy(rec + g * 5 * e, b.x, sizeof(float) * (size_t)(b.b * e));
        memcpy(ryb + g * 5, b.y, sizeof(int32_t) * (size_t)b.b);
    }
    ng_loader_free(l);
    lc.prefetch = 3;
    l = ng_loader_new(&lc);
    int ok = 1;
    for (int t = 0; t < 10; t++) {
        int64_t ep = pick(3), ix = pick(nb);
        ng_loader_seek(l, ep, ix);
        for (int k = 0; k < 3 && ep * nb + ix + k < 3 * nb; k++) {
            ng_batch b = ng_loader_next(l);
            int64_t g = ep * nb + ix + k;
            ok &= !memcmp(b.x, rec + g * 5 * e, sizeof(float) * (size_t)(b.b * e)) &&
                  !memcmp(b.y, ryb + g * 5, sizeof(int32_t) * (size_t)b.b);
        }
    }
    NG_TEST(ok, "loader over shards: seeks with a prefetching thread continue the stream exactly");
    ng_loader_free(l);
    free(rec);
    ng_source_free(s);
    ng_source_free(src);
}

/* ---- hand-made shards ---------------------------------------------------------------------- */

typedef struct {
    const char *name;
    const void *data;
    size_t len;
} member;

static void write_tar(const char *path, const member *m, int n) {
    struct archive *a = archive_write_new();
    archive_write_set_format_ustar(a);
    archive_write_set_bytes_in_last_block(a, 1);
    if (archive_write_open_filename(a, path) != ARCHIVE_OK) ng_test_fail("cannot write %s", path);
    for (int i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, m[i].name);
        archive_entry_set_size(e, (la_int64_t)m[i].len);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_write_header(a, e);
        archive_write_data(a, m[i].data, m[i].len);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
}

/* An 8-bit PNG of h x w pixels with c channels (1 grey, 3 RGB) from interleaved px. */
static unsigned char *png(const unsigned char *px, int h, int w, int c, size_t *len) {
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ih = {.width = (uint32_t)w,
                           .height = (uint32_t)h,
                           .bit_depth = 8,
                           .color_type =
                               c == 1 ? SPNG_COLOR_TYPE_GRAYSCALE : SPNG_COLOR_TYPE_TRUECOLOR};
    spng_set_ihdr(ctx, &ih);
    int r = spng_encode_image(ctx, px, (size_t)(h * w * c), SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    int err = 0;
    unsigned char *out = spng_get_png_buffer(ctx, len, &err);
    spng_ctx_free(ctx);
    if (r || err || !out) ng_test_fail("cannot encode a PNG: %s", spng_strerror(r ? r : err));
    return out;
}

/* n random h x w x c PNG samples as WebDataset members: m[2 i] is s%03d.png, m[2 i + 1] its label
 * i % classes in s%03d.cls; the pixels are kept (interleaved) to compare decoded examples with. */
typedef struct {
    int n;
    size_t size;       /* bytes of one sample's pixels */
    unsigned char *px; /* [n][size] */
    unsigned char **enc;
    size_t *len;
    char (*names)[32], (*cls)[4];
    member *m;
} png_set;

static png_set png_samples(int n, int h, int w, int c, int classes) {
    png_set s = {.n = n, .size = (size_t)(h * w * c)};
    s.px = malloc(s.size * (size_t)n);
    s.enc = malloc(sizeof *s.enc * (size_t)n);
    s.len = malloc(sizeof *s.len * (size_t)n);
    s.names = malloc(sizeof *s.names * 2 * (size_t)n);
    s.cls = malloc(sizeof *s.cls * (size_t)n);
    s.m = malloc(sizeof *s.m * 2 * (size_t)n);
    if (!s.px || !s.enc || !s.len || !s.names || !s.cls || !s.m) ng_test_fail("out of memory");
    for (int i = 0; i < n; i++) {
        unsigned char *px = s.px + s.size * (size_t)i;
        for (size_t p = 0; p < s.size; p++) px[p] = (unsigned char)(128 + 127 * ng_test_uniform());
        s.enc[i] = png(px, h, w, c, &s.len[i]);
        snprintf(s.names[2 * i], 32, "s%03d.png", i);
        snprintf(s.names[2 * i + 1], 32, "s%03d.cls", i);
        snprintf(s.cls[i], 4, "%d", i % classes);
        s.m[2 * i] = (member){s.names[2 * i], s.enc[i], s.len[i]};
        s.m[2 * i + 1] = (member){s.names[2 * i + 1], s.cls[i], strlen(s.cls[i])};
    }
    return s;
}

static const unsigned char *png_pixels(const png_set *s, int i) {
    return s->px + s->size * (size_t)i;
}

static void png_set_free(png_set *s) {
    for (int i = 0; i < s->n; i++) free(s->enc[i]);
    free(s->px), free(s->enc), free(s->len), free(s->names), free(s->cls), free(s->m);
}

static void test_png(uint64_t seed) {
    (void)seed;
    for (int c = 1; c <= 3; c += 2) {
        const int h = 6, w = 7, n = 5;
        png_set set = png_samples(n, h, w, c, 3);
        const char *dir = folder(c == 1 ? "png1" : "png3");
        char path[400];
        snprintf(path, sizeof path, "%s/train-000000.tar", dir);
        write_tar(path, set.m, 2 * n);
        ng_shards_config sc = {.dir = dir, .prefix = "train", .shuffle_buffer = 1, .seed = 1};
        ng_source *s = ng_shards_open(&sc);
        NG_TEST(s->n == n && s->ndim == 3 && s->shape[0] == c && s->shape[1] == h &&
                    s->shape[2] == w && s->classes == 3,
                "PNG shards with %d channels: n %lld, shape [%lld,%lld,%lld], classes %lld", c,
                (long long)s->n, (long long)s->shape[0], (long long)s->shape[1],
                (long long)s->shape[2], (long long)s->classes);
        int64_t wrong = 0;
        for (int i = 0; i < n; i++) {
            float x[3 * 6 * 7];
            int32_t y;
            ng_source_fill(s, 0, i, x, &y); /* buffer 1, one shard: the stored order */
            wrong += y != i % 3;
            for (int ch = 0; ch < c; ch++)
                for (int p = 0; p < h * w; p++)
                    wrong += x[ch * h * w + p] != (float)png_pixels(&set, i)[p * c + ch] / 255.0f;
        }
        NG_TEST(!wrong,
                "PNG shards with %d channels: %lld pixels or labels differ from the encoded", c,
                (long long)wrong);
        ng_source_free(s);
        png_set_free(&set);
    }
}

static unsigned char *slurp(const char *path, size_t *len);

/* PNG writing (ng_shards_write_png): grey and RGB sources whose values are levels k / 255 come
 * back bit for bit over several shards; random values of a range [lo, hi] come back as levels
 * within half a level of (v - lo) / (hi - lo); what PNG cannot hold is refused naming the option.
 */
static void test_png_write(uint64_t seed) {
    for (int c = 1; c <= 3; c += 2) {
        const int64_t n = 23, h = 9, w = 6, e = c * h * w;
        int64_t shape[3] = {c, h, w};
        ng_dataset *d = ng_synthetic(n, 3, shape, 5, 1.0, seed, 0, "levels");
        ng_dataset *r = ng_synthetic(n, 3, shape, 5, 1.0, seed, 1, "range");
        const double lo = -2, hi = 3;
        for (int64_t i = 0; i < n * e; i++) {
            d->x[i] = (float)pick(256) / 255.0f;
            r->x[i] = (float)(lo + (hi - lo) * 0.5 * (ng_test_uniform() + 1.0));
        }
        r->x[0] = (float)lo, r->x[1] = (float)hi; /* the ends are in range */
        float *ref = malloc(sizeof(float) * (size_t)(n * e)),
              *rref = malloc(sizeof(float) * (size_t)(n * e));
        int32_t ry[23], rry[23];
        memcpy(ref, d->x, sizeof(float) * (size_t)(n * e));
        memcpy(rref, r->x, sizeof(float) * (size_t)(n * e));
        memcpy(ry, d->y, sizeof ry), memcpy(rry, r->y, sizeof rry);
        ng_source *sd = ng_source_dataset(d), *sr = ng_source_dataset(r);
        const char *dir = folder(c == 1 ? "pngw1" : "pngw3");
        int64_t shards = ng_shards_write_png(sd, dir, "train", 1200, 0, 1);
        ng_shards_write_png(sr, dir, "test", 1 << 20, lo, hi);
        NG_TEST(shards >= 3, "23 PNG examples in 1200-byte shards: %lld shards", (long long)shards);
        char p0[400];
        snprintf(p0, sizeof p0, "%s/train-000000.tar", dir);
        size_t tl = 0;
        unsigned char *tb = slurp(p0, &tl);
        NG_TEST(tb && tl > 512 && !memcmp(tb, "000000000.png", 13) &&
                    !memcmp(tb + 512, "\x89PNG", 4),
                "the first member should be 000000000.png holding a PNG");
        free(tb);
        ng_shards_config sc = {.dir = dir, .prefix = "train", .shuffle_buffer = 1, .seed = 2};
        ng_source *s = ng_shards_open(&sc);
        NG_TEST(s->n == n && s->ndim == 3 && s->shape[0] == c && s->shape[1] == h &&
                    s->shape[2] == w,
                "PNG shards (%d channels) read back as %lld examples [%lld, %lld, %lld]", c,
                (long long)s->n, (long long)s->shape[0], (long long)s->shape[1],
                (long long)s->shape[2]);
        float *x = malloc(sizeof(float) * (size_t)(n * e));
        int32_t y[23];
        if (s->n == n) read_epoch(s, 0, x, y);
        /* Buffer 1 streams the shards whole, in an order of the seed: match examples by bytes. */
        int64_t found = 0;
        for (int64_t i = 0; i < n && s->n == n; i++)
            found += which(x + i * e, y[i], ref, ry, n, e) >= 0;
        NG_TEST(found == n, "%d-channel levels k/255: %lld of %lld examples come back bit for bit",
                c, (long long)found, (long long)n);
        ng_source_free(s);
        sc.prefix = "test";
        s = ng_shards_open(&sc);
        int64_t off = 0, notlevel = 0;
        read_epoch(s, 0, x, y); /* one shard, buffer 1: the stored order */
        for (int64_t i = 0; i < n * e; i++) {
            double q = ((double)rref[i] - lo) / (hi - lo) * 255.0, k = (double)x[i] * 255.0;
            double ki = floor(k + 0.5);
            notlevel += fabs(k - ki) > 1e-3;
            off += fabs(ki - q) > 0.5;
        }
        NG_TEST(!notlevel && !off && !memcmp(y, rry, sizeof rry),
                "%d channels over [%g, %g]: %lld values are not levels, %lld are more than half a "
                "level off",
                c, lo, hi, (long long)notlevel, (long long)off);
        ng_source_free(s);
        /* The same values over [0, 1] fall outside it: refused, naming the option and example. */
        NG_TEST_ERROR(ng_shards_write_png(sr, folder("pngbad"), "train", 1 << 20, 0, 1),
                      "--png-range: example 0");
        NG_TEST_ERROR(ng_shards_write_png(sr, folder("pngbad"), "train", 1 << 20, 1, 1),
                      "--png-range");
        free(x), free(ref), free(rref);
        ng_source_free(sd), ng_source_free(sr);
    }
    ng_source *two = random_source(3, seed); /* [2, 5, 3]: two channels */
    NG_TEST_ERROR(ng_shards_write_png(two, folder("pngbad2"), "train", 1 << 20, -10, 10),
                  "--format png");
    ng_source_free(two);
    ng_synthetic3d_config vc = {.n = 2, .side = 4, .channels = 1, .classes = 2, .seed = seed};
    ng_source *vol = ng_synthetic3d_new(&vc);
    NG_TEST_ERROR(ng_shards_write_png(vol, folder("pngbad3"), "train", 1 << 20, -10, 10),
                  "--format png");
    ng_source_free(vol);
}

__attribute__((noinline)) static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long l = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)l);
    *len = fread(b, 1, (size_t)l, f);
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, len, f) != len) ng_test_fail("cannot write %s", path);
    if (f) fclose(f);
}

/* Opens the shards of dir and reads one epoch: an error is expected naming the shard and `what`
 * (the member), with `why` in it too. */
__attribute__((noinline)) static void expect_broken(const char *dir, const char *shard,
                                                    const char *what, const char *why) {
    ng_source *volatile s = NULL;
    ng_shards_config c = {.dir = dir, .prefix = "train", .shuffle_buffer = 4, .seed = 3};
    float *volatile x = NULL;
    NG_TEST_ERROR(
        {
            s = ng_shards_open(&c);
            x = malloc(sizeof(float) * (size_t)ng_source_example_size(s));
            int32_t y;
            for (int64_t i = 0; i < s->n; i++) ng_source_fill(s, 0, i, x, &y);
        },
        shard);
    const char *msg = ng_last_error();
    NG_TEST(strstr(msg, what) && strstr(msg, why),
            "broken shard %s: the error should name '%s' "
            "and say '%s': %s",
            shard, what, why, msg);
    free(x);
    ng_source_free(s);
}

/* The same damaged shard with skip_bad, next to a good one (shard 1): it opens, the bad examples
 * are left out and counted (skipped, cut), the first is named, and two epochs stream exactly the
 * examples of ref marked in keep, once each. */
__attribute__((noinline)) static void expect_skipped(const char *dir, const char *what,
                                                     int64_t skipped, int64_t cut, const float *ref,
                                                     const int32_t *ry, int64_t nref,
                                                     const int *keep, int64_t e) {
    ng_shards_config c = {
        .dir = dir, .prefix = "train", .shuffle_buffer = 4, .seed = 3, .skip_bad = 1};
    ng_source *s = ng_shards_open(&c);
    int64_t want = 0;
    for (int64_t j = 0; j < nref; j++) want += keep[j];
    NG_TEST(s->n == want && s->skipped == skipped && s->cut == cut &&
                strstr(s->first_bad, "train-000000.tar") && strstr(s->first_bad, what),
            "skip_bad, %s: %lld examples (want %lld), %lld skipped (want %lld), %lld cut (want "
            "%lld), first: %s",
            dir, (long long)s->n, (long long)want, (long long)s->skipped, (long long)skipped,
            (long long)s->cut, (long long)cut, s->first_bad);
    if (s->n == want && ng_source_example_size(s) == e) {
        float *x = malloc(sizeof(float) * (size_t)e);
        int64_t *seen = calloc((size_t)nref, sizeof(int64_t)), stray = 0;
        for (int64_t ep = 0; ep < 2; ep++)
            for (int64_t i = 0; i < s->n; i++) {
                int32_t y;
                ng_source_fill(s, ep, i, x, &y);
                int64_t j = which(x, y, ref, ry, nref, e);
                if (j < 0 || !keep[j])
                    stray++;
                else
                    seen[j]++;
            }
        int once = 1;
        for (int64_t j = 0; j < nref; j++) once &= seen[j] == 2 * keep[j];
        NG_TEST(!stray && once,
                "skip_bad, %s: the stream should be the good examples, each once an epoch (%lld "
                "strays)",
                dir, (long long)stray);
        /* A replayed position is the same example (resume over skipped examples). */
        float *z = malloc(sizeof(float) * (size_t)e);
        int32_t y1, y2;
        int64_t i = pick(s->n);
        ng_source_fill(s, 1, i, x, &y1);
        ng_source_fill(s, 0, 0, z, &y2);
        ng_source_fill(s, 1, i, z, &y2);
        NG_TEST(y1 == y2 && !memcmp(x, z, sizeof(float) * (size_t)e),
                "skip_bad, %s: position %lld replays differently", dir, (long long)i);
        free(z), free(x), free(seen);
    }
    ng_source_free(s);
}

static void test_broken(uint64_t seed) {
    ng_source *src = random_source(6, seed);
    const char *good = folder("good");
    ng_shards_write(src, good, "train", 1 << 20);
    char gp[400];
    snprintf(gp, sizeof gp, "%s/train-000000.tar", good);
    size_t len = 0;
    unsigned char *t = slurp(gp, &len);
    /* Layout: per example, a 512-byte header + 512 bytes of npy (10 + 118 header + 30 floats =
     * 248, padded), then a header + 512 bytes of cls. Example k starts at 2048 k. */
    NG_TEST(t && len == 6 * 2048 + 1024, "the written shard has the expected layout (%zu bytes)",
            len);
    char path[400], shard[400];
    /* skip_bad: shard 1 of every damaged folder holds 6 other good examples; ref is the good
     * shard's examples, then those. */
    ng_source *src2 = random_source(6, seed + 17);
    const char *good2 = folder("good2");
    ng_shards_write(src2, good2, "train", 1 << 20);
    snprintf(path, sizeof path, "%s/train-000000.tar", good2);
    size_t len2 = 0;
    unsigned char *t2 = slurp(path, &len2);
    int64_t e = ng_source_example_size(src);
    float ref[12 * 30];
    int32_t ry[12];
    read_epoch(src, 0, ref, ry);
    read_epoch(src2, 0, ref + 6 * e, ry + 6);
    struct {
        const char *name, *member, *why;
        size_t at, cut;      /* a byte to change, or a length to cut to */
        unsigned char value; /* the new byte */
        int keep;            /* skip_bad: the examples of the shard kept (bit k: example k) */
        int skipped, cut_short;
    } cases[] = {
        /* the tar header of example 3's npy: its checksum no longer matches */
        {"header", "000000002", "", 3 * 2048 + 100, 0, 'Z', 0x07, 0, 1},
        /* example 2's npy size 248 -> 760 (octal 370 -> 1370), its header checksum fixed: the
         * member swallows the next header and the one read after it is garbage */
        {"size", "000000002", "", 2 * 2048 + 124 + 7, 0, '1', 0x03, 0, 1},
        /* the file cut inside example 4's npy data */
        {"truncated", "000000004", "", 0, 4 * 2048 + 700, 0, 0x0f, 0, 1},
        /* example 3's npy magic */
        {"npy-magic", "000000003.npy", "NUMPY", 3 * 2048 + 512 + 1, 0, 'X', 0x37, 1, 0},
        /* example 5's npy shape: 2 -> 3 */
        {"npy-shape", "000000005.npy", "shape", 0, 0, '3', 0x1f, 1, 0},
        /* example 1's label: a letter */
        {"label", "000000001.cls", "class number", 1 * 2048 + 1536, 0, 'x', 0x3d, 1, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *dir = folder(cases[k].name);
        snprintf(path, sizeof path, "%s/train-000000.tar", dir);
        unsigned char *b = malloc(len);
        memcpy(b, t, len);
        size_t l = len;
        size_t at = cases[k].at;
        if (!at) { /* the '2' of example 5's npy shape "(2, 5, 3)" */
            const unsigned char *p = memmem(t + 5 * 2048 + 512, 128, "(2, 5, 3)", 9);
            at = p ? (size_t)(p - t) + 1 : 0;
        }
        if (cases[k].cut)
            l = cases[k].cut;
        else if (at)
            b[at] = cases[k].value;
        if (!strcmp(cases[k].name, "size")) { /* a valid header that lies about the size */
            unsigned char *h = b + 2 * 2048;
            unsigned sum = 0;
            memset(h + 148, ' ', 8);
            for (int i = 0; i < 512; i++) sum += h[i];
            snprintf((char *)h + 148, 8, "%06o", sum);
        }
        spit(path, b, l);
        free(b);
        snprintf(shard, sizeof shard, "%s", path);
        expect_broken(dir, shard, cases[k].member, cases[k].why);
        snprintf(path, sizeof path, "%s/train-000001.tar", dir);
        spit(path, t2, len2);
        int keep[12];
        for (int j = 0; j < 12; j++) keep[j] = j >= 6 || (cases[k].keep >> j & 1);
        expect_skipped(dir, cases[k].member, cases[k].skipped, cases[k].cut_short, ref, ry, 12,
                       keep, e);
    }
    /* A missing label: the cls member of example 2 left out. */
    {
        const char *dir = folder("nolabel");
        snprintf(path, sizeof path, "%s/train-000000.tar", dir);
        char l1[16];
        snprintf(l1, sizeof l1, "%d", ry[1]); /* example 1's own label */
        member m[3] = {{"000000001.npy", t + 2048 + 512, 248},
                       {"000000001.cls", l1, strlen(l1)},
                       {"000000002.npy", t + 2 * 2048 + 512, 248}};
        write_tar(path, m, 3);
        expect_broken(dir, path, "000000002", "no label");
        snprintf(path, sizeof path, "%s/train-000001.tar", dir);
        spit(path, t2, len2);
        int keep[12] = {0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
        expect_skipped(dir, "000000002", 1, 0, ref, ry, 12, keep, e);
    }
    /* Not a tar file at all. */
    {
        const char *dir = folder("garbage");
        snprintf(path, sizeof path, "%s/train-000000.tar", dir);
        spit(path, (const unsigned char *)"this is not a tar file, just some text\n", 39);
        expect_broken(dir, path, "train-000000.tar", "");
        snprintf(path, sizeof path, "%s/train-000001.tar", dir);
        spit(path, t2, len2);
        int keep[12] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
        expect_skipped(dir, "", 0, 1, ref, ry, 12, keep, e);
    }
    /* A PNG whose image data chunk is damaged (a CRC mismatch). */
    {
        unsigned char px[4 * 4];
        for (int p = 0; p < 16; p++) px[p] = (unsigned char)(100 + 100 * ng_test_uniform());
        size_t pl;
        unsigned char *p0 = png(px, 4, 4, 1, &pl), *p1 = png(px, 4, 4, 1, &pl);
        p1[pl - 12 - 6] ^= 0x5a; /* inside IDAT, before its CRC and the IEND chunk */
        member m[4] = {{"a.png", p0, pl}, {"a.cls", "0", 1}, {"b.png", p1, pl}, {"b.cls", "1", 1}};
        const char *dir = folder("pngcrc");
        snprintf(path, sizeof path, "%s/train-000000.tar", dir);
        write_tar(path, m, 4);
        expect_broken(dir, path, "b.png", "PNG");
        /* skip_bad: b.png left out, and shard 1's six [2, 5, 3] examples as a wrong size. */
        snprintf(path, sizeof path, "%s/train-000001.tar", dir);
        spit(path, t2, len2);
        float pref[16];
        for (int p = 0; p < 16; p++) pref[p] = (float)px[p] / 255.0f;
        int keep[1] = {1};
        expect_skipped(dir, "b.png", 7, 0, pref, (int32_t[]){0}, 1, keep, 16);
        free(p0), free(p1);
    }
    /* No shards at all. */
    ng_shards_config c = {.dir = folder("empty"), .prefix = "train", .shuffle_buffer = 4};
    NG_TEST_ERROR(ng_shards_open(&c), "no shards");
    c.dir = "/nonexistent/shards";
    NG_TEST_ERROR(ng_shards_open(&c), "/nonexistent/shards");
    c.dir = good, c.shuffle_buffer = 0;
    NG_TEST_ERROR(ng_shards_open(&c), "data.shuffle_buffer");
    /* Nothing good at all is still an error, naming the first bad example. */
    c.dir = folder("garbage"), c.shuffle_buffer = 4, c.skip_bad = 1;
    snprintf(path, sizeof path, "%s/train-000001.tar", c.dir);
    unlink(path);
    NG_TEST_ERROR(ng_shards_open(&c), "no good examples");
    free(t), free(t2);
    ng_source_free(src), ng_source_free(src2);
}

/* ---- loader workers ------------------------------------------------------------------------ */

/* Every batch of two epochs from a loader over src with `workers` threads (prefetch 0, so a
 * failure surfaces on this thread): examples and labels, concatenated. */
static float *loader_run(ng_source *src, int workers, int augment, int64_t batch, int32_t **ys,
                         int64_t *count) {
    ng_loader_config c = {
        .source = src, .batch = batch, .shuffle = 1, .seed = 11, .world = 1, .workers = workers};
    if (augment) c.augment.hflip = 1, c.augment.crop_pad = 1;
    ng_loader *l = ng_loader_new(&c);
    int64_t nb = 2 * ng_loader_batches_per_epoch(l), e = ng_source_example_size(src), n = 0;
    float *x = malloc(sizeof(float) * (size_t)(nb * batch * e));
    *ys = malloc(sizeof(int32_t) * (size_t)(nb * batch));
    for (int64_t g = 0; g < nb; g++) {
        ng_batch b = ng_loader_next(l);
        memcpy(x + n * e, b.x, sizeof(float) * (size_t)(b.b * e));
        memcpy(*ys + n, b.y, sizeof(int32_t) * (size_t)b.b);
        n += b.b;
    }
    ng_loader_free(l);
    *count = n;
    return x;
}

/* Two epochs over the shards of sc with w workers must stop at the damaged member `want`. The
 * loader and the buffers are kept where the caught error leaves them, and freed after it. */
static ng_loader *drain_loader;
static float *drain_x;
static void drain(ng_source *s, int w) {
    ng_loader_config c = {
        .source = s, .batch = 7, .shuffle = 1, .seed = 11, .world = 1, .workers = w};
    drain_loader = ng_loader_new(&c);
    int64_t nb = 2 * ng_loader_batches_per_epoch(drain_loader), e = ng_source_example_size(s);
    drain_x = malloc(sizeof(float) * (size_t)(7 * e));
    for (int64_t g = 0; g < nb; g++) {
        ng_batch b = ng_loader_next(drain_loader);
        memcpy(drain_x, b.x, sizeof(float) * (size_t)(b.b * e));
    }
}
static void expect_decode_error(const ng_shards_config *sc, int w, const char *want) {
    ng_source *s = ng_shards_open(sc);
    NG_TEST_ERROR(drain(s, w), want);
    ng_loader_free(drain_loader), free(drain_x);
    drain_loader = NULL, drain_x = NULL;
    ng_source_free(s);
}

/* PNG shards read by 1 and by 2-4 workers: the same batches bit for bit, with and without
 * augmentation; a member whose image data is damaged (its header is fine, so only decoding finds
 * it) stops either with the same error naming the shard and the member, and with skip_bad both
 * leave out that one example. */
static void test_workers(uint64_t seed) {
    (void)seed;
    enum { N = 41, H = 5, W = 4, C = 3, SHARDS = 3 };
    int bad = (int)pick(N), workers = 2 + (int)pick(3);
    png_set set = png_samples(N, H, W, C, 5);
    member *m = set.m;
    const unsigned char *const *enc = (const unsigned char *const *)set.enc;
    const size_t *len = set.len;
    const char *clean = folder("workers_clean"), *broken = folder("workers_broken");
    for (int pass = 0; pass < 2; pass++) {
        if (pass) { /* damage the compressed image data: the IDAT chunk's bytes after the header */
            unsigned char *d = malloc(len[bad]);
            memcpy(d, enc[bad], len[bad]);
            for (size_t k = 41; k + 4 < len[bad] - 12; k++) d[k] ^= 0x5a;
            m[2 * bad].data = d;
        }
        for (int k = 0; k < SHARDS; k++) {
            char path[400];
            snprintf(path, sizeof path, "%s/train-%06d.tar", pass ? broken : clean, k);
            int lo = k * N / SHARDS, hi = (k + 1) * N / SHARDS;
            write_tar(path, m + 2 * lo, 2 * (hi - lo));
        }
    }
    free((void *)m[2 * bad].data);
    ng_shards_config sc = {.dir = clean, .prefix = "train", .shuffle_buffer = 6, .seed = 3};
    for (int augment = 0; augment <= 1; augment++) {
        ng_source *s = ng_shards_open(&sc);
        int32_t *y1, *yw;
        int64_t n1, nw;
        float *x1 = loader_run(s, 1, augment, 7, &y1, &n1);
        float *xw = loader_run(s, workers, augment, 7, &yw, &nw);
        int64_t e = ng_source_example_size(s);
        NG_TEST(n1 == nw && !memcmp(x1, xw, sizeof(float) * (size_t)(n1 * e)) &&
                    !memcmp(y1, yw, sizeof(int32_t) * (size_t)n1),
                "PNG shards, augmentation %d: %d workers give other batches than one", augment,
                workers);
        free(x1), free(xw), free(y1), free(yw);
        ng_source_free(s);
    }
    char want[64];
    snprintf(want, sizeof want, "member 's%03d.png'", bad);
    sc.dir = broken;
    for (int w = 1; w <= workers; w += workers - 1) expect_decode_error(&sc, w, want);
    sc.skip_bad = 1;
    ng_source *s = ng_shards_open(&sc);
    NG_TEST(s->n == N - 1 && s->skipped == 1 && strstr(s->first_bad, want),
            "skip_bad over a damaged image: %lld examples, %lld skipped, first bad '%s'",
            (long long)s->n, (long long)s->skipped, s->first_bad);
    int32_t *y1, *yw;
    int64_t n1, nw;
    float *x1 = loader_run(s, 1, 0, 5, &y1, &n1);
    float *xw = loader_run(s, workers, 0, 5, &yw, &nw);
    int64_t e = ng_source_example_size(s), wrong = 0;
    for (int epoch = 0; epoch < 2; epoch++) { /* each good image once an epoch, never the bad */
        int seen[N] = {0};
        for (int64_t k = epoch * (N - 1); k < (epoch + 1) * (N - 1) && k < n1; k++) {
            int who = -1;
            for (int i = 0; i < N && who < 0; i++) {
                int same = y1[k] == i % 5;
                for (int ch = 0; ch < C && same; ch++)
                    for (int p = 0; p < H * W && same; p++)
                        same = x1[k * e + ch * H * W + p] ==
                               (float)png_pixels(&set, i)[p * C + ch] / 255.0f;
                if (same) who = i;
            }
            wrong += who < 0 || who == bad || seen[who]++;
        }
    }
    NG_TEST(n1 == 2 * (N - 1) && !wrong,
            "skip_bad: %lld examples in two epochs, %lld not a good image once an epoch",
            (long long)n1, (long long)wrong);
    NG_TEST(n1 == nw && !memcmp(x1, xw, sizeof(float) * (size_t)(n1 * e)) &&
                !memcmp(y1, yw, sizeof(int32_t) * (size_t)n1),
            "skip_bad: %d workers give other batches than one", workers);
    free(x1), free(xw), free(y1), free(yw);
    ng_source_free(s);
    png_set_free(&set);
}

/* ---- volumes ------------------------------------------------------------------------------ */

/* Writes src as shards of about shard_bytes and reads one epoch back: the shards hold src's
 * shape, n and labels, and every example comes back once, byte for byte with its label. */
static void volume_roundtrip(ng_source *src, const char *name, int64_t shard_bytes) {
    const char *dir = folder(name);
    int64_t n = src->n, e = ng_source_example_size(src);
    float *ref = malloc(sizeof(float) * (size_t)(n * e)),
          *x = malloc(sizeof(float) * (size_t)(n * e));
    int32_t *ry = malloc(sizeof(int32_t) * (size_t)n), *y = malloc(sizeof(int32_t) * (size_t)n);
    read_epoch(src, 0, ref, ry);
    int32_t top = 0;
    for (int64_t i = 0; i < n; i++) top = ry[i] > top ? ry[i] : top;
    int64_t shards = ng_shards_write(src, dir, "train", shard_bytes);
    ng_shards_config c = {.dir = dir, .prefix = "train", .shuffle_buffer = 5, .seed = 1};
    ng_source *s = ng_shards_open(&c);
    NG_TEST(s->n == n && s->ndim == 4 && !memcmp(s->shape, src->shape, 4 * sizeof(int64_t)) &&
                s->classes == top + 1 && shards >= 2,
            "%s: shards of [%lld,%lld,%lld,%lld] read as %lld examples of %d dims "
            "[%lld,%lld,%lld,%lld], %lld classes (want %lld), in %lld shards",
            src->name, (long long)src->shape[0], (long long)src->shape[1], (long long)src->shape[2],
            (long long)src->shape[3], (long long)s->n, s->ndim, (long long)s->shape[0],
            (long long)s->shape[1], (long long)s->shape[2], (long long)s->shape[3],
            (long long)s->classes, (long long)top + 1, (long long)shards);
    read_epoch(s, 0, x, y);
    int64_t *seen = calloc((size_t)n, sizeof(int64_t)), lost = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t j = which(x + i * e, y[i], ref, ry, n, e);
        lost += j < 0 || seen[j]++;
    }
    NG_TEST(!lost, "%s: %lld of %lld volumes did not come back once, byte for byte", src->name,
            (long long)lost, (long long)n);
    ng_source_free(s);
    free(ref), free(x), free(ry), free(y), free(seen);
}

/* Volumes [C, D, H, W] of odd, unequal sides (random values), synthetic volumes and FractalDB 3D
 * volumes written as npy shards read back exactly. */
static void test_volumes(uint64_t seed) {
    int64_t shape[4] = {ng_test_int(1, 3), 2 * ng_test_int(1, 4) + 1, 2 * ng_test_int(1, 4) + 1,
                        2 * ng_test_int(1, 4) + 1};
    int64_t n = ng_test_int(9, 30), e = shape[0] * shape[1] * shape[2] * shape[3];
    ng_source *r = ng_source_dataset(ng_synthetic(n, 4, shape, 3, 1.0, seed, 0, "random-volumes"));
    /* A group is the npy member (128-byte header + data) and the label, each padded to 512
     * bytes with its header: 4 or more shards. */
    int64_t group = 512 + (128 + 4 * e + 511) / 512 * 512 + 1024;
    volume_roundtrip(r, "vol_random", group * (n / 4));
    ng_source_free(r);
    int64_t side = 2 * ng_test_int(2, 4) + 1;
    ng_synthetic3d_config v = {.n = ng_test_int(9, 20),
                               .side = side,
                               .channels = 2,
                               .classes = 4,
                               .noise = 0.5,
                               .seed = seed,
                               .name = "synthetic3d"};
    ng_source *sv = ng_synthetic3d_new(&v);
    volume_roundtrip(sv, "vol_synthetic3d", 8 * 4 * 2 * side * side * side);
    ng_source_free(sv);
    ng_fractal3d_config f = {.categories = 3,
                             .instances = 4,
                             .side = side,
                             .points = 2000,
                             .threshold = 0.1,
                             .seed = seed,
                             .name = "fractal3d"};
    ng_source *fv = ng_fractal3d_new(&f);
    volume_roundtrip(fv, "vol_fractal3d", 5 * 4 * side * side * side);
    ng_source_free(fv);
}

int main(void) {
    uint64_t seed = ng_test_seed();
    snprintf(tmp, sizeof tmp, "%s/ng-test-shards-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "cannot make a temporary folder %s\n", tmp);
        return 1;
    }
    test_roundtrip(seed);
    test_png(seed);
    test_png_write(seed);
    test_broken(seed);
    test_workers(seed);
    test_volumes(seed);
    int status = ng_test_finish("test_shards");
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return status;
}
