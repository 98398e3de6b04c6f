/* MNIST in the IDX format (http://yann.lecun.com/exdb/mnist/), gzipped or raw, checked field by
 * field so a bad download stops with a message naming the file rather than training on noise. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"
#include "data/dataset.h"

#define SIDE 28
#define PIXELS (SIDE * SIDE)
#define IMAGE_MAGIC 0x00000803u /* unsigned bytes, 3 dims */
#define LABEL_MAGIC 0x00000801u /* unsigned bytes, 1 dim */

/* Errors are collected here and raised only after the buffers are freed, so a test that catches
 * the error (longjmp) leaks nothing. */
typedef struct {
    unsigned char *im, *lb;
    char msg[1024];
} load_state;

static void fail(load_state *s) {
    free(s->im);
    free(s->lb);
    s->im = s->lb = NULL;
    ng_fail("%s", s->msg);
}

/* The whole file, inflated when gzipped (gzread passes raw files through); 0 and a message in
 * s->msg on failure. */
static int slurp(load_state *s, const char *path, unsigned char **out, size_t *len) {
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(s->msg, sizeof s->msg, "cannot open %s: %s", path, strerror(errno));
        return 0;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(s->msg, sizeof s->msg, "%s: not a regular file", path);
        return 0;
    }
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(s->msg, sizeof s->msg, "cannot open %s: %s", path,
                 errno ? strerror(errno) : "out of memory");
        return 0;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    if (cap < (1u << 16)) cap = 1u << 16;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            snprintf(s->msg, sizeof s->msg, "%s: out of host memory after %zu bytes", path, n);
            gzclose(f);
            return 0;
        }
        if (n == cap) {
            unsigned char *bigger = realloc(buf, cap * 2);
            if (!bigger) free(buf);
            buf = bigger, cap *= 2;
            continue;
        }
        size_t want = cap - n < (1u << 30) ? cap - n : (1u << 30);
        int r = gzread(f, buf + n, (unsigned)want);
        int err = Z_OK;
        const char *why = gzerror(f, &err);
        /* A gzip stream that stops early reads as a short file with Z_BUF_ERROR set. */
        if (r < 0 || (r == 0 && err != Z_OK)) {
            snprintf(s->msg, sizeof s->msg, "%s: %s (%s)", path,
                     err == Z_BUF_ERROR ? "gzip data ends early, the file is truncated"
                                        : "cannot read or inflate",
                     err == Z_ERRNO ? strerror(errno) : why);
            free(buf);
            gzclose(f);
            return 0;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(f);
    *out = buf;
    *len = n;
    return 1;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        snprintf(s.msg, sizeof s.msg, __VA_ARGS__);                                                \
        fail(&s);                                                                                  \
    } while (0)

ng_dataset *ng_mnist_load(const char *images, const char *labels, const char *name) {
    NG_CHECK(images && labels, "MNIST: image and label file paths are needed");
    load_state s = {0};
    size_t il = 0, ll = 0;
    if (!slurp(&s, images, &s.im, &il) || !slurp(&s, labels, &s.lb, &ll)) fail(&s);
    if (il < 16 || be32(s.im) != IMAGE_MAGIC)
        BAD("%s: not an IDX image file (magic 0x%08x expected, found %s)", images, IMAGE_MAGIC,
            il < 4 ? "a file shorter than the header" : "another value");
    if (ll < 8 || be32(s.lb) != LABEL_MAGIC)
        BAD("%s: not an IDX label file (magic 0x%08x expected, found %s)", labels, LABEL_MAGIC,
            ll < 4 ? "a file shorter than the header" : "another value");
    uint32_t n = be32(s.im + 4), rows = be32(s.im + 8), cols = be32(s.im + 12), nl = be32(s.lb + 4);
    if (rows != SIDE || cols != SIDE)
        BAD("%s: images are %ux%u, MNIST's are %dx%d", images, rows, cols, SIDE, SIDE);
    if (n == 0) BAD("%s: holds no images", images);
    if (n != nl) BAD("%s holds %u images but %s holds %u labels", images, n, labels, nl);
    /* The count is the file's word: every size made from it is checked (a 32-bit size_t
     * would wrap at 5.5M images). */
    size_t pixels, want, xbytes;
    if (__builtin_mul_overflow((size_t)n, (size_t)PIXELS, &pixels) ||
        __builtin_add_overflow(pixels, (size_t)16, &want) ||
        __builtin_mul_overflow(pixels, sizeof(float), &xbytes))
        BAD("%s: %u images of %dx%d do not fit in memory", images, n, SIDE, SIDE);
    if (il != want)
        BAD("%s: %zu bytes, but a header and %u images take %zu (%s)", images, il, n, want,
            il < want ? "truncated" : "trailing data");
    if (ll != 8 + (size_t)n)
        BAD("%s: %zu bytes, but a header and %u labels take %zu (%s)", labels, ll, n, 8 + (size_t)n,
            ll < 8 + (size_t)n ? "truncated" : "trailing data");
    for (uint32_t i = 0; i < n; i++)
        if (s.lb[8 + i] >= 10)
            BAD("%s: label %u of example %u is not a digit 0-9", labels, s.lb[8 + i], i);

    ng_dataset *d = calloc(1, sizeof *d);
    if (d) d->x = malloc(xbytes);
    if (d) d->y = malloc(sizeof(int32_t) * (size_t)n);
    if (!d || !d->x || !d->y) {
        ng_dataset_free(d);
        BAD("%s: out of host memory for %u images", images, n);
    }
    snprintf(d->name, sizeof d->name, "%s", name ? name : "mnist");
    d->n = n, d->ndim = 3, d->classes = 10;
    d->shape[0] = 1, d->shape[1] = SIDE, d->shape[2] = SIDE;
    /* (v/255 - 0.1307)/0.3081, torchvision's usual MNIST constants, worked in double and rounded
     * once (torchvision's float32 steps differ by an ulp for most values). */
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = (float)((v / 255.0 - 0.1307) / 0.3081);
    const unsigned char *px = s.im + 16;
    for (size_t i = 0; i < pixels; i++) d->x[i] = lut[px[i]];
    for (uint32_t i = 0; i < n; i++) d->y[i] = s.lb[8 + i];
    free(s.im);
    free(s.lb);
    return d;
}

/* dir/name.gz or dir/name, whichever exists (the .gz first), into out; 0 when neither. */
static int locate(const char *dir, const char *name, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s.gz", dir, name);
    if (access(out, F_OK) == 0) return 1;
    snprintf(out, cap, "%s/%s", dir, name);
    return access(out, F_OK) == 0;
}

ng_dataset *ng_mnist_find(const char *dir, const char *split) {
    NG_CHECK(split && (!strcmp(split, "train") || !strcmp(split, "test")),
             "MNIST split '%s': expected 'train' or 'test'", split ? split : "(null)");
    if (!dir || !*dir) return NULL;
    const char *pre = strcmp(split, "test") ? "train" : "t10k";
    char in[4096], ln[4096], a[64], b[64];
    snprintf(a, sizeof a, "%s-images-idx3-ubyte", pre);
    snprintf(b, sizeof b, "%s-labels-idx1-ubyte", pre);
    int hi = locate(dir, a, in, sizeof in), hl = locate(dir, b, ln, sizeof ln);
    if (!hi && !hl) return NULL;
    NG_CHECK(hi && hl, "%s: MNIST %s split is incomplete: %s[.gz] is there but not %s[.gz]", dir,
             split, hi ? a : b, hi ? b : a);
    char name[64];
    snprintf(name, sizeof name, "mnist-%s", split);
    return ng_mnist_load(in, ln, name);
}
