/* Tar shards (WebDataset layout) as a streaming source with a shuffle buffer. */
#include "data/shards.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "data/shard_members.h"

/* Philox streams (or'ed with the epoch); disjoint from other users of the run's seed. */
#define STREAM_SHARD_ORDER (UINT64_C(0x53484f52) << 32)
#define STREAM_SHARD_PICK (UINT64_C(0x53485043) << 32)

#define MAX_MEMBER NG_SHARD_MAX_MEMBER
#define MAX_PATH 4096

/* ---- reading a shard, one key group at a time ------------------------------------------------ */

typedef struct {
    struct archive *a;
    const char *path;
    int pending;          /* a header has been read whose member belongs to the next group */
    int eof;              /* the archive's end has been read */
    char pname[MAX_PATH]; /* its name */
    int64_t psize;
    char bad_key[MAX_PATH]; /* the key of the group that failed last: its other members are
                             * passed over, so one bad example is one skip */
    char broken[1024];      /* why the archive cannot be read on, for the next call */
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

/* The next key group of the shard: 1, 0 at the end of the shard, -1 when this group is bad (why
 * names the member; the reader can go on with the next group), -2 when the shard cannot be read
 * further (a damaged or truncated archive). The group's data is freed on failure. keep_data: read
 * the data member, else skip it (a scan). */
static int next_group(reader *r, group *g, int keep_data, char *why, size_t cap) {
    memset(g, 0, sizeof *g);
    char key[MAX_PATH], ext[MAX_PATH];
    int st_fail = -1;
    if (r->broken[0]) {
        snprintf(why, cap, "%s", r->broken);
        return -2;
    }
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
                st_fail = -2;
                /* The group read so far is whole: it is good, and the damage is the next
                 * call's answer. */
                if (g->has_data && g->has_cls) {
                    snprintf(r->broken, sizeof r->broken, "%s", why);
                    return 1;
                }
                goto fail;
            }
            const char *name = archive_entry_pathname(e);
            if (archive_entry_filetype(e) != AE_IFREG) continue; /* folders */
            snprintf(r->pname, sizeof r->pname, "%s", name ? name : "");
            r->psize = archive_entry_size(e);
            r->pending = 1;
        }
        if (!split_name(r->pname, key, ext)) {
            r->pending = 0; /* passed over when bad examples are skipped */
            snprintf(why, cap, "member '%.300s': not named KEY.EXT", r->pname);
            goto fail;
        }
        if (g->key[0] && strcmp(key, g->key)) break; /* the next group's first member */
        r->pending = 0;
        if (!g->key[0] && r->bad_key[0] && !strcmp(key, r->bad_key)) continue; /* a bad group's */
        r->bad_key[0] = 0;
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
                st_fail = -2;
                goto fail;
            }
            if (is_cls) {
                int ok = ng_shard_parse_cls(b, (size_t)r->psize, &g->y, sub, sizeof sub);
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
    if (g->key[0]) snprintf(r->bad_key, sizeof r->bad_key, "%s", g->key);
    return st_fail;
}

/* ---- the source ------------------------------------------------------------------------------ */

/* An example as the stream holds it: its data member's bytes, decoded when it is taken, so the
 * shuffle buffer holds encoded examples (a tenth of the decoded floats for PNG) and a batch's
 * examples are decoded on the workers. */
typedef struct {
    unsigned char *data;
    size_t len;
    char ext[8];
    char *name; /* the data member's name, for errors */
    int shard;  /* index into paths */
    int32_t y;
} item;

typedef struct {
    ng_shards_config c;
    int nshards;
    char **paths;
    int64_t *counts;
    ng_shard_shape shape;
    int64_t esize;
    /* skip_bad: the groups whose data member the scan could not decode, as (shard, group number
     * within the shard), in increasing order; the stream passes over the same ones */
    int64_t (*undecodable)[2];
    int64_t nundecodable, cap_undecodable;
    /* the stream of one epoch */
    int64_t epoch, pos; /* epoch -1: no stream */
    int *mine, nmine;   /* this rank's shards (all of them unless split) */
    int *order, at;     /* this rank's shards in this epoch's order, the one being read */
    reader r;
    int64_t group_no; /* groups read so far from the open shard */
    item *buf;        /* shuffle_buffer examples */
    int64_t buf_n;
} shards;

static void item_free(item *it) {
    free(it->data), free(it->name);
    memset(it, 0, sizeof *it);
}

static void stream_reset(shards *s) {
    reader_close(&s->r);
    for (int64_t i = 0; i < s->buf_n; i++) item_free(&s->buf[i]);
    s->buf_n = 0;
    s->epoch = -1;
}

/* Raises an error naming the shard after putting the stream back to a clean state. */
static void stream_fail(shards *s, const char *path, const char *why) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s: %s", path, why);
    stream_reset(s);
    ng_fail("%s", msg);
}

static int by_pair(const void *a, const void *b) {
    const int64_t *x = a, *y = b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] < y[1] ? -1 : x[1] > y[1]);
}

static int undecodable(const shards *s, int shard, int64_t group) {
    int64_t key[2] = {shard, group};
    return s->nundecodable &&
           bsearch(key, s->undecodable, (size_t)s->nundecodable, sizeof key, by_pair) != NULL;
}

/* The next example of the epoch's shard stream into *it (encoded): 1, or 0 when the stream has
 * ended. */
static int stream_next(shards *s, item *it) {
    char why[1024];
    for (;;) {
        if (!s->r.a) {
            if (s->at == s->nmine) return 0;
            const char *p = s->paths[s->order[s->at]];
            if (!reader_open(&s->r, p, why, sizeof why)) {
                if (!s->c.skip_bad) stream_fail(s, p, why);
                s->at++; /* counted as cut by the scan, which could not open it either */
                continue;
            }
            s->group_no = 0;
        }
        group g;
        int st = next_group(&s->r, &g, 1, why, sizeof why);
        /* With skip_bad the scan has read every member and left out (and counted) these same
         * groups and the rest of these same shards: the stream passes over them. */
        if (st == -1 && s->c.skip_bad) {
            s->group_no++;
            continue;
        }
        if (st < 0 && !s->c.skip_bad) stream_fail(s, s->r.path, why);
        if (st <= 0) {
            reader_close(&s->r);
            s->at++;
            continue;
        }
        int64_t no = s->group_no++;
        if (s->c.skip_bad && undecodable(s, s->order[s->at], no)) {
            free(g.data);
            continue;
        }
        *it = (item){.data = g.data, .len = g.data_len, .shard = s->order[s->at], .y = g.y};
        snprintf(it->ext, sizeof it->ext, "%s", g.ext);
        it->name = strdup(g.data_name);
        if (!it->name) {
            item_free(it);
            stream_fail(s, s->r.path, "out of host memory");
        }
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
    while (s->buf_n < s->c.shuffle_buffer && stream_next(s, &s->buf[s->buf_n])) s->buf_n++;
}

/* Position pos of the epoch: a Philox pick from the buffer (into *out, or dropped), refilled from
 * the stream. */
static void stream_take(shards *s, item *out) {
    NG_CHECK(s->buf_n > 0, "%s: the shards hold fewer examples than their scan counted", s->c.dir);
    uint32_t w[4];
    ng_rng_block((ng_rng_key){.seed = s->c.seed, .stream = STREAM_SHARD_PICK | (uint64_t)s->epoch},
                 (uint64_t)s->pos, w);
    int64_t j = (int64_t)((((uint64_t)w[0] << 32) | w[1]) % (uint64_t)s->buf_n);
    if (out)
        *out = s->buf[j];
    else
        item_free(&s->buf[j]);
    if (!stream_next(s, &s->buf[j])) /* the stream has ended: the buffer drains */
        s->buf[j] = s->buf[--s->buf_n];
    s->pos++;
}

/* Position i of the epoch into *out, replaying the epoch when i lies behind the stream. */
static void take(shards *s, int64_t epoch, int64_t i, item *out) {
    if (epoch != s->epoch || i < s->pos) stream_start(s, epoch); /* a replay: resume or seek */
    while (s->pos < i) stream_take(s, NULL);
    stream_take(s, out);
}

/* Decodes it into x (the first example's shape); 0 on failure, with a message naming the shard
 * and the member in msg unless it is NULL. */
static int decode(const shards *s, const item *it, float *x, char *msg, size_t cap) {
    char why[800];
    ng_shard_shape got;
    if (ng_shard_decode(it->ext, it->data, it->len, &s->shape, &got, x, why, sizeof why)) return 1;
    if (msg) snprintf(msg, cap, "%s: member '%.300s': %s", s->paths[it->shard], it->name, why);
    return 0;
}

static void fill(ng_source *src, int64_t epoch, int64_t i, void *x, int32_t *y) {
    shards *s = src->impl;
    item it;
    take(s, epoch, i, &it);
    char msg[1200];
    int ok = decode(s, &it, x, msg, sizeof msg);
    *y = it.y;
    item_free(&it);
    if (!ok) {
        stream_reset(s);
        ng_fail("%s", msg);
    }
}

/* A batch: the examples taken from the stream in order (reading is sequential), then decoded on
 * the workers. A member that does not decode is the error of the first such example in the
 * batch, as filling them one by one would give. */
static void fill_batch(ng_source *src, int64_t epoch, const int64_t *idx, int64_t count,
                       ng_tensor *x, int32_t *y) {
    shards *s = src->impl;
    NG_CHECK(x->device == NG_CPU, "%s: tar shards fill host batches only (%s is on the GPU)",
             src->name, x->name ? x->name : "the batch");
    item *its = calloc((size_t)(count ? count : 1), sizeof *its);
    char *bad = calloc((size_t)(count ? count : 1), 1);
    NG_CHECK(its && bad, "%s: out of host memory for a batch of %lld", src->name, (long long)count);
    for (int64_t j = 0; j < count; j++) take(s, epoch, idx[j], &its[j]);
    int workers = src->workers > 1 && count > 1 ? src->workers : 1;
    float *out = x->data;
#pragma omp parallel for num_threads(workers) schedule(dynamic, 1)
    for (int64_t j = 0; j < count; j++) {
        bad[j] = !decode(s, &its[j], out + j * s->esize, NULL, 0);
        y[j] = its[j].y;
    }
    int64_t first = -1;
    for (int64_t j = 0; j < count && first < 0; j++)
        if (bad[j]) first = j;
    char msg[1200] = "";
    if (first >= 0) /* again, for its message */
        decode(s, &its[first], out + first * s->esize, msg, sizeof msg);
    for (int64_t j = 0; j < count; j++) item_free(&its[j]);
    free(its), free(bad);
    if (first >= 0) {
        stream_reset(s);
        ng_fail("%s", msg);
    }
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
    stream_reset(s);
    for (int i = 0; i < s->nshards; i++) free(s->paths[i]);
    free(s->paths), free(s->counts), free(s->order), free(s->mine), free(s->buf);
    free(s->undecodable);
    free(s);
}

static const ng_source_ops ops = {fill, destroy, split, fill_batch, NULL};

const char *ng_shards_file(const ng_source *src, int k) {
    if (!src || src->ops != &ops) return NULL;
    const shards *s = src->impl;
    return k >= 0 && k < s->nmine ? s->paths[s->mine[k]] : NULL;
}

/* data.skip_bad: counts a bad example (or a shard cut short, whose rest is unreadable) and keeps
 * the first reason, naming the shard and the member. */
static void note_bad(ng_source *src, const char *path, const char *why, int cut) {
    if (!src->skipped && !src->cut)
        snprintf(src->first_bad, sizeof src->first_bad, "%.200s: %.300s", path, why);
    if (cut)
        src->cut++;
    else
        src->skipped++;
}

/* skip_bad: group `no` of shard i does not decode (the scan's numbering is stream_next's). 0 when
 * out of memory. */
static int note_undecodable(shards *s, int i, int64_t no) {
    if (s->nundecodable == s->cap_undecodable) {
        int64_t cap = s->cap_undecodable ? 2 * s->cap_undecodable : 64;
        void *p = realloc(s->undecodable, sizeof *s->undecodable * (size_t)cap);
        if (!p) return 0;
        s->undecodable = p, s->cap_undecodable = cap;
    }
    s->undecodable[s->nundecodable][0] = i, s->undecodable[s->nundecodable][1] = no;
    s->nundecodable++;
    return 1;
}

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
    /* The scan: counts, labels, and the first example's shape. With skip_bad it reads and
     * decodes every member (against the first good example's shape), so that it knows exactly
     * which examples are bad: they are left out of the counts, and the stream passes over the
     * same ones. */
    char why[1024], msg[1200];
    int32_t maxy = -1;
    float *scratch = NULL; /* skip_bad: a decoded example, thrown away */
    for (int i = 0; i < s->nshards; i++) {
        reader r;
        if (!reader_open(&r, s->paths[i], why, sizeof why)) {
            if (c->skip_bad) {
                note_bad(src, s->paths[i], why, 1);
                continue;
            }
            ng_source_free(src);
            ng_fail("%s", why);
        }
        for (int64_t group_no = 0;;) {
            group g;
            int st = next_group(&r, &g, src->n == 0 || c->skip_bad, why, sizeof why);
            if (st == 0) break;
            int64_t no = st == -2 ? -1 : group_no++; /* numbered as stream_next numbers them */
            if (st > 0 && (src->n == 0 || c->skip_bad)) {
                ng_shard_shape got;
                int ok = ng_shard_decode(g.ext, g.data, g.data_len, src->n ? &s->shape : NULL, &got,
                                         NULL, msg, sizeof msg);
                if (ok && src->n == 0) s->shape = got;
                /* The header alone does not show damage further in (a PNG's image data). */
                if (ok && c->skip_bad) {
                    if (!scratch) scratch = malloc(sizeof(float) * (size_t)ng_shard_numel(&got));
                    ok = scratch && ng_shard_decode(g.ext, g.data, g.data_len, &s->shape, &got,
                                                    scratch, msg, sizeof msg);
                }
                if (!ok) {
                    snprintf(why, sizeof why, "member '%.300s': %.600s", g.data_name, msg);
                    st = -1;
                    if (c->skip_bad && !note_undecodable(s, i, no)) {
                        free(g.data);
                        reader_close(&r);
                        free(scratch);
                        ng_source_free(src);
                        ng_fail("shards: out of host memory");
                    }
                }
            }
            free(g.data);
            if (st < 0 && c->skip_bad) {
                note_bad(src, s->paths[i], why, st == -2);
                if (st == -2) break;
                continue;
            }
            if (st < 0) {
                snprintf(msg, sizeof msg, "%s: %s", s->paths[i], why);
                reader_close(&r);
                free(scratch);
                ng_source_free(src);
                ng_fail("%s", msg);
            }
            s->counts[i]++, src->n++;
            if (g.y > maxy) maxy = g.y;
        }
        reader_close(&r);
    }
    free(scratch);
    if (!src->n) {
        char first[600];
        snprintf(first, sizeof first, "%s", src->first_bad);
        int64_t bad = src->skipped + src->cut;
        ng_source_free(src);
        ng_fail("data.dir: the shards %s-*.tar in %s hold no %sexamples%s%s", c->prefix, c->dir,
                bad ? "good " : "", bad ? "; the first bad one: " : "", first);
    }
    src->ndim = s->shape.ndim;
    memcpy(src->shape, s->shape.shape, sizeof src->shape);
    src->classes = (int64_t)maxy + 1;
    s->esize = ng_shard_numel(&s->shape);
    if (s->c.shuffle_buffer > src->n) s->c.shuffle_buffer = src->n;
    s->buf = calloc((size_t)s->c.shuffle_buffer, sizeof *s->buf);
    if (!s->buf) {
        ng_source_free(src);
        ng_fail("data.shuffle_buffer: out of host memory for %lld examples",
                (long long)c->shuffle_buffer);
    }
    return src;
}
