/* MNIST in the IDX format, gzipped or raw. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"
#include "data/dataset.h"

/* The whole file, inflated when gzipped (gzread passes raw files through). */
static unsigned char *slurp(const char *path, size_t *len) {
    gzFile f = gzopen(path, "rb");
    NG_CHECK(f, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (n == cap) buf = realloc(buf, cap *= 2);
        int r = gzread(f, buf + n, (unsigned)(cap - n));
        if (r < 0) {
            int err;
            const char *msg = gzerror(f, &err);
            gzclose(f);
            ng_fail("%s: corrupt or truncated gzip data (%s)", path, msg);
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(f);
    *len = n;
    return buf;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

ng_dataset *ng_mnist_load(const char *images, const char *labels, const char *name) {
    size_t il, ll;
    unsigned char *im = slurp(images, &il), *lb = slurp(labels, &ll);
    NG_CHECK(il >= 16 && be32(im) == 0x803,
             "%s: not an IDX image file (magic 0x00000803 expected, %zu bytes)", images, il);
    NG_CHECK(ll >= 8 && be32(lb) == 0x801,
             "%s: not an IDX label file (magic 0x00000801 expected, %zu bytes)", labels, ll);
    uint32_t n = be32(im + 4), rows = be32(im + 8), cols = be32(im + 12), nl = be32(lb + 4);
    NG_CHECK(rows == 28 && cols == 28, "%s: images are %ux%u, MNIST's are 28x28", images, rows,
             cols);
    NG_CHECK(n == nl, "%s holds %u images but %s holds %u labels", images, n, labels, nl);
    NG_CHECK(il == 16 + (size_t)n * 784, "%s: %zu bytes, but %u images need %zu (truncated?)",
             images, il, n, 16 + (size_t)n * 784);
    NG_CHECK(ll == 8 + (size_t)n, "%s: %zu bytes, but %u labels need %zu (truncated?)", labels, ll,
             n, 8 + (size_t)n);
    ng_dataset *d = calloc(1, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->n = n, d->ndim = 3, d->classes = 10;
    d->shape[0] = 1, d->shape[1] = 28, d->shape[2] = 28;
    d->x = malloc(sizeof(float) * (size_t)n * 784);
    d->y = malloc(sizeof(int32_t) * (size_t)n);
    for (size_t i = 0; i < (size_t)n * 784; i++)
        d->x[i] = (float)((im[16 + i] / 255.0 - 0.1307) / 0.3081);
    for (uint32_t i = 0; i < n; i++) {
        NG_CHECK(lb[8 + i] < 10, "%s: label %u of example %u is not a digit", labels, lb[8 + i], i);
        d->y[i] = lb[8 + i];
    }
    free(im);
    free(lb);
    return d;
}

/* dir/name or dir/name.gz, whichever exists, into out; 0 when neither. */
static int locate(const char *dir, const char *name, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s.gz", dir, name);
    if (access(out, R_OK) == 0) return 1;
    snprintf(out, cap, "%s/%s", dir, name);
    return access(out, R_OK) == 0;
}

ng_dataset *ng_mnist_find(const char *dir, const char *split) {
    const char *pre = strcmp(split, "test") ? "train" : "t10k";
    char in[2048], ln[2048], a[64], b[64];
    snprintf(a, sizeof a, "%s-images-idx3-ubyte", pre);
    snprintf(b, sizeof b, "%s-labels-idx1-ubyte", pre);
    int hi = locate(dir, a, in, sizeof in), hl = locate(dir, b, ln, sizeof ln);
    if (!hi && !hl) return NULL;
    NG_CHECK(hi && hl, "%s: MNIST %s split is incomplete: %s found but not %s", dir, split,
             hi ? a : b, hi ? b : a);
    char name[64];
    snprintf(name, sizeof name, "mnist-%s", split);
    return ng_mnist_load(in, ln, name);
}
