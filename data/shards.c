/* Tar shards (WebDataset layout): a streaming source with a shuffle buffer, and the writer. */
#include "data/shards.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/rng.h"

/* Philox streams (or'ed with the epoch); disjoint from other users of the run's seed. */
#define STREAM_SHARD_ORDER (UINT64_C(0x53484f52) << 32)
#define STREAM_SHARD_PICK (UINT64_C(0x53485043) << 32)

#define MAX_MEMBER (INT64_C(1) << 32) /* a data member larger than 4 GiB is refused */
#define MAX_PATH 4096

/* ---- decoding members into f32 [C, ...] examples --------------------------------------------- */

/* Parses an npy buffer: 0 and a reason in why on failure. dtype: 'f' (<f4) or 'u' (|u1). */
static int parse_npy(const unsigned char *b, size_t len, int *ndim, int64_t shape[4], char *dtype,
                     size_t *data_off, char *why, size_t cap) {
    if (len < 10 || memcmp(b, "\x93NUMPY", 6)) {
        snprintf(why, cap, "not an npy file (no \\x93NUMPY magic)");
        return 0;
    }
    size_t hl, start;
    if (b[6] == 1) {
        hl = (size_t)b[8] | (size_t)b[9] << 8, start = 10;
    } else if ((b[6] == 2 || b[6] == 3) && len >= 12) {
        hl = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        start = 12;
    } else {
        snprintf(why, cap, "npy version %u is not 1, 2 or 3", b[6]);
        return 0;
    }
    if (hl > len - start || hl > 65536) {
        snprintf(why, cap, "npy header of %zu bytes runs past the member's %zu", hl, len);
        return 0;
    }
    char h[65537];
    memcpy(h, b + start, hl);
    h[hl] = 0;
    const char *d = strstr(h, "'descr':"), *f = strstr(h, "'fortran_order':"),
               *s = strstr(h, "'shape':");
    if (!d || !f || !s) {
        snprintf(why, cap, "npy header lacks descr, fortran_order or shape");
        return 0;
    }
    d += 8, f += 16, s += 8;
    while (*d == ' ') d++;
    while (*f == ' ') f++;
    while (*s == ' ') s++;
    if (!strncmp(d, "'<f4'", 5))
        *dtype = 'f';
    else if (!strncmp(d, "'|u1'", 5) || !strncmp(d, "'<u1'", 5))
        *dtype = 'u';
    else {
        snprintf(why, cap, "npy dtype is not '<f4' or '|u1'");
        return 0;
    }
    if (strncmp(f, "False", 5)) {
        snprintf(why, cap, "npy array in Fortran order");
        return 0;
    }
    if (*s != '(') {
        snprintf(why, cap, "npy shape is not a tuple");
        return 0;
    }
    s++;
    int n = 0;
    int64_t count = 1;
    for (;;) {
        while (*s == ' ') s++;
        if (*s == ')') break;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || v < 1 || v > (1LL << 31) || n == 4) {
            snprintf(why, cap, "npy shape is not 1-4 dimensions of 1 to 2^31");
            return 0;
        }
        shape[n++] = v;
        if (__builtin_mul_overflow(count, (int64_t)v, &count) || count > MAX_MEMBER) {
            snprintf(why, cap, "npy shape is too large");
            return 0;
        }
        s = end;
        while (*s == ' ') s++;
        if (*s == ',') s++;
    }
    if (n == 0) {
        snprintf(why, cap, "npy array is a scalar");
        return 0;
    }
    size_t bytes = (size_t)count * (*dtype == 'f' ? 4 : 1);
    if (len - start - hl != bytes) {
        snprintf(why, cap, "npy data is %zu bytes, its shape needs %zu", len - start - hl, bytes);
        return 0;
    }
    *ndim = n;
    *data_off = start + hl;
    return 1;
}

/* A decoded example: its shape and, when out is not NULL, its values (out must hold them). */
typedef struct {
    int ndim;
    int64_t shape[4];
} ex_shape;

static int64_t shape_numel(const ex_shape *s) {
    int64_t e = 1;
    for (int i = 0; i < s->ndim; i++) e *= s->shape[i];
    return e;
}

/* Decodes a data member (ext "npy" or "png") into its shape and, when out != NULL and the shape
 * equals *want (or want is NULL), into out. 0 and a reason on failure. */
static int decode(const char *ext, const unsigned char *b, size_t len, const ex_shape *want,
                  ex_shape *got, float *out, char *why, size_t cap) {
    if (!strcmp(ext, "npy")) {
        char dt;
        size_t off;
        if (!parse_npy(b, len, &got->ndim, got->shape, &dt, &off, why, cap)) return 0;
        if (want && (want->ndim != got->ndim ||
                     memcmp(want->shape, got->shape, sizeof(int64_t) * (size_t)got->ndim))) {
            snprintf(why, cap, "shape differs from the first example's");
            return 0;
        }
        if (!out) return 1;
        int64_t e = shape_numel(got);
        if (dt == 'f')
            memcpy(out, b + off, sizeof(float) * (size_t)e); /* little-endian hosts only */
        else
            for (int64_t i = 0; i < e; i++) out[i] = (float)b[off + (size_t)i] / 255.0f;
        return 1;
    }
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) {
        snprintf(why, cap, "out of host memory for a PNG decoder");
        return 0;
    }
    struct spng_ihdr ih;
    int fmt = SPNG_FMT_RGB8, C = 3;
    size_t need = 0;
    int r = spng_set_image_limits(ctx, 1 << 16, 1 << 16);
    if (!r) r = spng_set_chunk_limits(ctx, 1 << 24, 1 << 26);
    if (!r) r = spng_set_png_buffer(ctx, b, len);
    if (!r) r = spng_get_ihdr(ctx, &ih);
    if (!r && ih.color_type == SPNG_COLOR_TYPE_GRAYSCALE && ih.bit_depth <= 8)
        fmt = SPNG_FMT_G8, C = 1;
    if (!r) r = spng_decoded_image_size(ctx, fmt, &need);
    if (r) {
        snprintf(why, cap, "PNG does not decode: %s", spng_strerror(r));
        spng_ctx_free(ctx);
        return 0;
    }
    got->ndim = 3, got->shape[0] = C, got->shape[1] = ih.height, got->shape[2] = ih.width;
    if (want && (want->ndim != 3 || memcmp(want->shape, got->shape, sizeof(int64_t) * 3))) {
        snprintf(why, cap, "shape differs from the first example's");
        spng_ctx_free(ctx);
        return 0;
    }
    if (!out) {
        spng_ctx_free(ctx);
        return 1;
    }
    unsigned char *px = malloc(need);
    r = px ? spng_decode_image(ctx, px, need, fmt, 0) : SPNG_EMEM;
    spng_ctx_free(ctx);
    if (r) {
        snprintf(why, cap, "PNG does not decode: %s", spng_strerror(r));
        free(px);
        return 0;
    }
    int64_t hw = (int64_t)ih.height * ih.width;
    for (int64_t c = 0; c < C; c++) /* interleaved HWC -> planar CHW */
        for (int64_t p = 0; p < hw; p++) out[c * hw + p] = (float)px[p * C + c] / 255.0f;
    free(px);
    return 1;
}

/* The label of a .cls member: a decimal integer in [0, 2^31), optional surrounding whitespace. */
static int parse_cls(const unsigned char *b, size_t len, int32_t *y, char *why, size_t cap) {
    char t[32];
    if (len == 0 || len >= sizeof t) {
        snprintf(why, cap, "label of %zu bytes is not a class number", len);
        return 0;
    }
    memcpy(t, b, len);
    t[len] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    while (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t') end++;
    if (end == t || *end || errno || v < 0 || v > INT32_MAX - 1) {
        snprintf(why, cap, "label '%.20s' is not a class number >= 0", t);
        return 0;
    }
    *y = (int32_t)v;
    return 1;
}

/* ---- reading a shard, one key group at a time ------------------------------------------------ */

typedef struct {
    struct archive *a;
    const char *path;
    int pending;          /* a header has been read whose member belongs to the next group */
    int eof;              /* the archive's end has been read */
    char pname[MAX_PATH]; /* its name */
    int64_t psize;
} reader;

typedef struct {
    char key[MAX_PATH], data_name[MAX_PATH], ext[8];
    unsigned char *data; /* the data member's bytes (NULL when skipped) */
    size_t data_len;
    int has_data, has_cls;
    int32_t y;
} group;

static int reader_open(reader *r, const char *path, char *why, size_t cap) {
    memset(r, 0, sizeof *r);
    r->path = path;
    r->a = archive_read_new();
    if (!r->a) {
        snprintf(why, cap, "%s: out of host memory", path);
        return 0;
    }
    archive_read_support_format_tar(r->a);
    if (archive_read_open_filename(r->a, path, 1 << 16) != ARCHIVE_OK) {
        snprintf(why, cap, "%s: cannot open: %s", path, archive_error_string(r->a));
        archive_read_free(r->a);
        r->a = NULL;
        return 0;
    }
    return 1;
}

static void reader_close(reader *r) {
    if (r->a) archive_read_free(r->a);
    r->a = NULL;
}

/* Splits a member name into key (directory + base name up to its first dot) and extension. */
static int split_name(const char *name, char *key, char *ext) {
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *dot = strchr(base, '.');
    if (!dot || dot == base || strlen(dot + 1) >= 8) return 0;
    size_t kl = (size_t)(dot - name);
    memcpy(key, name, kl);
    key[kl] = 0;
    strcpy(ext, dot + 1);
    return 1;
}

static int read_member(reader *r, int64_t size, unsigned char **out, char *why, size_t cap) {
    unsigned char *b = malloc(size ? (size_t)size : 1);
    if (!b) {
        snprintf(why, cap, "out of host memory for %lld bytes", (long long)size);
        return 0;
    }
    la_ssize_t got = 0;
    while (got < size) {
        la_ssize_t k = archive_read_data(r->a, b + got, (size_t)(size - got));
        if (k <= 0) {
            snprintf(why, cap, "member data %s (%lld of %lld bytes read)",
                     k < 0 ? archive_error_string(r->a) : "ends early, the shard is truncated",
                     (long long)got, (long long)size);
            free(b);
            return 0;
        }
        got += k;
    }
    *out = b;
    return 1;
}

/* The next key group of the shard: 1, 0 at the end of the shard, -1 on an error (why names the
 * member; the group's data is freed). keep_data: read the data member, else skip it (a scan). */
static int next_group(reader *r, group *g, int keep_data, char *why, size_t cap) {
    memset(g, 0, sizeof *g);
    char key[MAX_PATH], ext[MAX_PATH];
    for (;;) {
        if (!r->pending) {
            if (r->eof) break;
            struct archive_entry *e;
            int st = archive_read_next_header(r->a, &e);
            if (st == ARCHIVE_EOF) {
                r->eof = 1;
                break;
            }
            if (st != ARCHIVE_OK && st != ARCHIVE_WARN) {
                snprintf(why, cap, "after member '%.300s': %s", g->key[0] ? g->key : "(start)",
                         archive_error_string(r->a));
                goto fail;
            }
            const char *name = archive_entry_pathname(e);
            if (archive_entry_filetype(e) != AE_IFREG) continue; /* folders */
            snprintf(r->pname, sizeof r->pname, "%s", name ? name : "");
            r->psize = archive_entry_size(e);
            r->pending = 1;
        }
        if (!split_name(r->pname, key, ext)) {
            snprintf(why, cap, "member '%.300s': not named KEY.EXT", r->pname);
            goto fail;
        }
        if (g->key[0] && strcmp(key, g->key)) break; /* the next group's first member */
        r->pending = 0;
        snprintf(g->key, sizeof g->key, "%s", key);
        int is_data = !strcmp(ext, "npy") || !strcmp(ext, "png"), is_cls = !strcmp(ext, "cls");
        if (!is_data && !is_cls) continue; /* other fields of the layout are not ours */
        if (r->psize < 0 || r->psize > MAX_MEMBER || (is_cls && r->psize > 64)) {
            snprintf(why, cap, "member '%.300s': size %lld is out of range", r->pname,
                     (long long)r->psize);
            goto fail;
        }
        if ((is_data && g->has_data) || (is_cls && g->has_cls)) {
            snprintf(why, cap, "member '%.300s': a second %s member for key '%.300s'", r->pname,
                     ext, key);
            goto fail;
        }
        if (is_cls || keep_data) {
            unsigned char *b;
            char sub[512];
            if (!read_member(r, r->psize, &b, sub, sizeof sub)) {
                snprintf(why, cap, "member '%.300s': %s", r->pname, sub);
                goto fail;
            }
            if (is_cls) {
                int ok = parse_cls(b, (size_t)r->psize, &g->y, sub, sizeof sub);
                free(b);
                if (!ok) {
                    snprintf(why, cap, "member '%.300s': %s", r->pname, sub);
                    goto fail;
                }
            } else {
                g->data = b, g->data_len = (size_t)r->psize;
            }
        }
        if (is_data) {
            g->has_data = 1;
            snprintf(g->data_name, sizeof g->data_name, "%s", r->pname);
            snprintf(g->ext, sizeof g->ext, "%s", ext);
        }
        g->has_cls |= is_cls;
    }
    if (!g->key[0]) return 0;
    if (!g->has_data || !g->has_cls) {
        snprintf(why, cap, "key '%.300s': no %s member", g->key,
                 g->has_data ? "label (KEY.cls)" : "data (KEY.npy or KEY.png)");
        goto fail;
    }
    return 1;
fail:
    free(g->data);
    g->data = NULL;
    return -1;
}

/* ---- the source ------------------------------------------------------------------------------ */

typedef struct {
    ng_shards_config c;
    int nshards;
    char **paths;
    int64_t *counts;
    ex_shape shape;
    int64_t esize;
    /* the stream of one epoch */
    int64_t epoch, pos; /* epoch -1: no stream */
    int *mine, nmine;   /* this rank's shards (all of them unless split) */
    int *order, at;     /* this rank's shards in this epoch's order, the one being read */
    reader r;
    float *buf; /* shuffle_buffer examples */
    int32_t *buf_y;
    int64_t buf_n;
    int exhausted;
} shards;

static void stream_reset(shards *s) {
    reader_close(&s->r);
    s->epoch = -1;
}

/* Raises an error naming the shard after putting the stream back to a clean state. */
static void stream_fail(shards *s, const char *path, const char *why) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s: %s", path, why);
    stream_reset(s);
    ng_fail("%s", msg);
}

/* The next example of the epoch's shard stream into x, y: 1, or 0 when the stream has ended. */
static int stream_next(shards *s, float *x, int32_t *y) {
    char why[1024];
    for (;;) {
        if (!s->r.a) {
            if (s->at == s->nmine) return 0;
            const char *p = s->paths[s->order[s->at]];
            if (!reader_open(&s->r, p, why, sizeof why)) stream_fail(s, p, why);
        }
        group g;
        int st = next_group(&s->r, &g, 1, why, sizeof why);
        if (st < 0) stream_fail(s, s->r.path, why);
        if (st == 0) {
            reader_close(&s->r);
            s->at++;
            continue;
        }
        ex_shape got;
        int ok = decode(g.ext, g.data, g.data_len, &s->shape, &got, x, why, sizeof why);
        free(g.data);
        if (!ok) {
            char m[1200];
            snprintf(m, sizeof m, "member '%.300s': %.800s", g.data_name, why);
            stream_fail(s, s->r.path, m);
        }
        *y = g.y;
        return 1;
    }
}

static void stream_start(shards *s, int64_t epoch) {
    stream_reset(s);
    for (int i = 0; i < s->nmine; i++) s->order[i] = s->mine[i];
    ng_rng_key k = {.seed = s->c.seed, .stream = STREAM_SHARD_ORDER | (uint64_t)epoch};
    for (int i = s->nmine - 1; i > 0; i--) { /* Fisher-Yates */
        uint32_t w[4];
        ng_rng_block(k, (uint64_t)i, w);
        int j = (int)((((uint64_t)w[0] << 32) | w[1]) % (uint64_t)(i + 1));
        int t = s->order[i];
        s->order[i] = s->order[j], s->order[j] = t;
    }
    s->at = 0, s->epoch = epoch, s->pos = 0, s->buf_n = 0;
    while (s->buf_n < s->c.shuffle_buffer &&
           stream_next(s, s->buf + s->buf_n * s->esize, &s->buf_y[s->buf_n]))
        s->buf_n++;
}

/* Position pos of the epoch: a Philox pick from the buffer, refilled from the stream. */
static void stream_take(shards *s, float *x, int32_t *y) {
    NG_CHECK(s->buf_n > 0, "%s: the shards hold fewer examples than their scan counted", s->c.dir);
    uint32_t w[4];
    ng_rng_block((ng_rng_key){.seed = s->c.seed, .stream = STREAM_SHARD_PICK | (uint64_t)s->epoch},
                 (uint64_t)s->pos, w);
    int64_t j = (int64_t)((((uint64_t)w[0] << 32) | w[1]) % (uint64_t)s->buf_n);
    float *slot = s->buf + j * s->esize;
    if (x) memcpy(x, slot, sizeof(float) * (size_t)s->esize);
    if (y) *y = s->buf_y[j];
    if (!stream_next(s, slot, &s->buf_y[j])) { /* the stream has ended: the buffer drains */
        s->buf_n--;
        memcpy(slot, s->buf + s->buf_n * s->esize, sizeof(float) * (size_t)s->esize);
        s->buf_y[j] = s->buf_y[s->buf_n];
    }
    s->pos++;
}

static void fill(ng_source *src, int64_t epoch, int64_t i, void *x, int32_t *y) {
    shards *s = src->impl;
    if (epoch != s->epoch || i < s->pos) stream_start(s, epoch); /* a replay: resume or seek */
    while (s->pos < i) stream_take(s, NULL, NULL);
    stream_take(s, x, y);
}

/* Rank r keeps the shards whose sorted index is r modulo world, and as many examples per epoch
 * as the rank with the fewest has, so every rank makes the same number of batches. */
static void split(ng_source *src, int rank, int world) {
    shards *s = src->impl;
    NG_CHECK(world <= s->nshards,
             "data.dir: %d shards in %s cannot be split over %d ranks; write smaller shards "
             "(natgrad shards --shard-mib)",
             s->nshards, s->c.dir, world);
    int64_t least = -1;
    for (int r = 0; r < world; r++) {
        int64_t n = 0;
        for (int k = r; k < s->nshards; k += world) n += s->counts[k];
        if (least < 0 || n < least) least = n;
    }
    s->nmine = 0;
    for (int k = rank; k < s->nshards; k += world) s->mine[s->nmine++] = k;
    src->n = least;
    stream_reset(s);
}

static void destroy(ng_source *src) {
    shards *s = src->impl;
    if (!s) return;
    reader_close(&s->r);
    for (int i = 0; i < s->nshards; i++) free(s->paths[i]);
    free(s->paths), free(s->counts), free(s->order), free(s->mine), free(s->buf), free(s->buf_y);
    free(s);
}

static const ng_source_ops ops = {fill, destroy, split};

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

ng_source *ng_shards_open(const ng_shards_config *c) {
    NG_CHECK(c->dir && c->prefix, "shards: a folder and a prefix are needed");
    NG_CHECK(c->shuffle_buffer >= 1, "data.shuffle_buffer: %lld must be >= 1",
             (long long)c->shuffle_buffer);
    DIR *d = opendir(c->dir);
    NG_CHECK(d, "data.dir: cannot open shard folder %s: %s", c->dir, strerror(errno));
    ng_source *src = calloc(1, sizeof *src);
    shards *s = calloc(1, sizeof *s);
    NG_CHECK(src && s, "shards: out of host memory");
    s->c = *c;
    s->epoch = -1;
    src->ops = &ops, src->impl = s, src->ordered = 1, src->dtype = NG_F32;
    snprintf(src->name, sizeof src->name, "%s shards", c->prefix);
    size_t pl = strlen(c->prefix);
    struct dirent *de;
    int cap = 0;
    while ((de = readdir(d))) { /* PREFIX-*.tar */
        size_t l = strlen(de->d_name);
        if (l < pl + 5 || strncmp(de->d_name, c->prefix, pl) || de->d_name[pl] != '-' ||
            strcmp(de->d_name + l - 4, ".tar"))
            continue;
        if (s->nshards == cap) {
            cap = cap ? 2 * cap : 16;
            char **p = realloc(s->paths, sizeof(char *) * (size_t)cap);
            if (!p) break;
            s->paths = p;
        }
        size_t n = strlen(c->dir) + l + 2;
        s->paths[s->nshards] = malloc(n);
        if (!s->paths[s->nshards]) break;
        snprintf(s->paths[s->nshards++], n, "%s/%s", c->dir, de->d_name);
    }
    closedir(d);
    if (!s->nshards) {
        ng_source_free(src);
        ng_fail("data.dir: no shards %s-*.tar in %s", c->prefix, c->dir);
    }
    qsort(s->paths, (size_t)s->nshards, sizeof(char *), by_name);
    s->counts = calloc((size_t)s->nshards, sizeof(int64_t));
    s->order = calloc((size_t)s->nshards, sizeof(int));
    s->mine = calloc((size_t)s->nshards, sizeof(int));
    if (!s->counts || !s->order || !s->mine) {
        ng_source_free(src);
        ng_fail("shards: out of host memory");
    }
    for (int i = 0; i < s->nshards; i++) s->mine[i] = i;
    s->nmine = s->nshards;
    /* The scan: counts, labels, and the first example's shape. */
    char why[1024], msg[1200];
    int32_t maxy = -1;
    for (int i = 0; i < s->nshards; i++) {
        reader r;
        if (!reader_open(&r, s->paths[i], why, sizeof why)) {
            ng_source_free(src);
            ng_fail("%s", why);
        }
        for (;;) {
            group g;
            int st = next_group(&r, &g, src->n == 0, why, sizeof why);
            if (st == 0) break;
            if (st > 0 && src->n == 0 &&
                !decode(g.ext, g.data, g.data_len, NULL, &s->shape, NULL, msg, sizeof msg)) {
                snprintf(why, sizeof why, "member '%.300s': %.600s", g.data_name, msg);
                st = -1;
            }
            free(g.data);
            if (st < 0) {
                snprintf(msg, sizeof msg, "%s: %s", s->paths[i], why);
                reader_close(&r);
                ng_source_free(src);
                ng_fail("%s", msg);
            }
            s->counts[i]++, src->n++;
            if (g.y > maxy) maxy = g.y;
        }
        reader_close(&r);
    }
    if (!src->n) {
        ng_source_free(src);
        ng_fail("data.dir: the shards %s-*.tar in %s hold no examples", c->prefix, c->dir);
    }
    src->ndim = s->shape.ndim;
    memcpy(src->shape, s->shape.shape, sizeof src->shape);
    src->classes = (int64_t)maxy + 1;
    s->esize = shape_numel(&s->shape);
    if (s->c.shuffle_buffer > src->n) s->c.shuffle_buffer = src->n;
    s->buf = malloc(sizeof(float) * (size_t)(s->c.shuffle_buffer * s->esize));
    s->buf_y = malloc(sizeof(int32_t) * (size_t)s->c.shuffle_buffer);
    if (!s->buf || !s->buf_y) {
        ng_source_free(src);
        ng_fail("data.shuffle_buffer: out of host memory for %lld examples of %lld floats",
                (long long)c->shuffle_buffer, (long long)shape_numel(&s->shape));
    }
    return src;
}

/* ---- writing --------------------------------------------------------------------------------- */

typedef struct {
    struct archive *a;
    int fd;
    char tmp[MAX_PATH + 8], path[MAX_PATH];
    int64_t bytes;
} shard_out;

static void out_open(shard_out *o, const char *dir, const char *prefix, int64_t index) {
    snprintf(o->path, sizeof o->path, "%s/%s-%06lld.tar", dir, prefix, (long long)index);
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp", o->path);
    o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    NG_CHECK(o->fd >= 0, "--out: cannot create %s: %s", o->tmp, strerror(errno));
    o->a = archive_write_new();
    NG_CHECK(o->a, "shards: out of host memory");
    archive_write_set_format_ustar(o->a);
    archive_write_set_bytes_in_last_block(o->a, 1);
    NG_CHECK(archive_write_open_fd(o->a, o->fd) == ARCHIVE_OK, "%s: %s", o->tmp,
             archive_error_string(o->a));
    o->bytes = 0;
}

static void out_member(shard_out *o, const char *name, const void *data, size_t len) {
    struct archive_entry *e = archive_entry_new();
    NG_CHECK(e, "shards: out of host memory");
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, 0, 0); /* the same bytes for the same data */
    int st = archive_write_header(o->a, e);
    archive_entry_free(e);
    NG_CHECK(st == ARCHIVE_OK, "%s: member %s: %s", o->tmp, name, archive_error_string(o->a));
    NG_CHECK(archive_write_data(o->a, data, len) == (la_ssize_t)len, "%s: member %s: %s", o->tmp,
             name, archive_error_string(o->a));
    o->bytes += 512 + (int64_t)((len + 511) / 512 * 512);
}

static void out_close(shard_out *o) {
    NG_CHECK(archive_write_close(o->a) == ARCHIVE_OK, "%s: %s", o->tmp, archive_error_string(o->a));
    archive_write_free(o->a);
    NG_CHECK(fsync(o->fd) == 0 && close(o->fd) == 0, "%s: cannot write: %s", o->tmp,
             strerror(errno));
    NG_CHECK(rename(o->tmp, o->path) == 0, "cannot rename %s to %s: %s", o->tmp, o->path,
             strerror(errno));
}

/* The npy v1.0 header of a little-endian f4 array of this shape, padded to 64 bytes. */
static size_t npy_header(const ng_source *s, char *h, size_t cap) {
    char shape[160] = "";
    size_t l = 0;
    for (int i = 0; i < s->ndim; i++)
        l += (size_t)snprintf(shape + l, sizeof shape - l, "%lld%s", (long long)s->shape[i],
                              s->ndim == 1 || i + 1 < s->ndim ? ", " : "");
    if (s->ndim == 1) shape[l - 1] = 0; /* "(5,)" */
    char dict[256];
    int dl = snprintf(dict, sizeof dict,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", shape);
    size_t total = 10 + (size_t)dl + 1, pad = (64 - total % 64) % 64;
    size_t hl = (size_t)dl + pad + 1;
    NG_CHECK(10 + hl <= cap, "shards: npy header too long");
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    h[8] = (char)(hl & 0xff), h[9] = (char)(hl >> 8);
    memcpy(h + 10, dict, (size_t)dl);
    memset(h + 10 + dl, ' ', pad);
    h[10 + hl - 1] = '\n';
    return 10 + hl;
}

int64_t ng_shards_write(ng_source *s, const char *dir, const char *prefix, int64_t shard_bytes) {
    NG_CHECK(s->dtype == NG_F32, "shards: source %s holds %s examples, only f32 is written",
             s->name, ng_dtype_name(s->dtype));
    NG_CHECK(shard_bytes > 0, "--shard-mib: must be > 0");
    int64_t e = ng_source_example_size(s);
    char head[512];
    size_t hl = npy_header(s, head, sizeof head);
    unsigned char *npy = malloc(hl + sizeof(float) * (size_t)e);
    NG_CHECK(npy, "shards: out of host memory for an example of %s", s->name);
    memcpy(npy, head, hl);
    shard_out o;
    int64_t shards = 0;
    out_open(&o, dir, prefix, shards++);
    for (int64_t i = 0; i < s->n; i++) {
        int32_t y;
        ng_source_fill(s, 0, i, npy + hl, &y);
        /* two headers, the npy padded to 512, the cls in one block */
        int64_t group = 1536 + (int64_t)((hl + sizeof(float) * (size_t)e + 511) / 512 * 512);
        if (o.bytes > 0 && o.bytes + group > shard_bytes) {
            out_close(&o);
            out_open(&o, dir, prefix, shards++);
        }
        char name[64], cls[32];
        snprintf(name, sizeof name, "%09lld.npy", (long long)i);
        out_member(&o, name, npy, hl + sizeof(float) * (size_t)e);
        int cl = snprintf(cls, sizeof cls, "%d", y);
        snprintf(name, sizeof name, "%09lld.cls", (long long)i);
        out_member(&o, name, cls, (size_t)cl);
    }
    out_close(&o);
    free(npy);
    return shards;
}
