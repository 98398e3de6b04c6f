/* Writing a source as tar shards (WebDataset layout): KEY.npy or KEY.png, and KEY.cls, per
 * example. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "data/shard_members.h"
#include "data/shards.h"

#define MAX_PATH 4096

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

/* One writer for both formats: png NULL writes KEY.npy (f4), else KEY.png over png[0]..png[1]. */
static int64_t write_shards(ng_source *s, const char *dir, const char *prefix, int64_t shard_bytes,
                            const double *png) {
    NG_CHECK(s->dtype == NG_F32, "shards: source %s holds %s examples, only f32 is written",
             s->name, ng_dtype_name(s->dtype));
    NG_CHECK(shard_bytes > 0, "--shard-mib: must be > 0");
    if (png)
        NG_CHECK(s->ndim == 3 && (s->shape[0] == 1 || s->shape[0] == 3),
                 "--format png: source %s gives examples of %d dims, %lld channels; PNG holds "
                 "grey or RGB images [1|3, H, W] (write volumes and other data as npy)",
                 s->name, s->ndim, (long long)s->shape[0]);
    int64_t e = ng_source_example_size(s);
    char head[512];
    size_t hl = ng_shard_npy_header(s->ndim, s->shape, head, sizeof head);
    unsigned char *npy = malloc(hl + sizeof(float) * (size_t)e);
    NG_CHECK(npy, "shards: out of host memory for an example of %s", s->name);
    memcpy(npy, head, hl);
    float *x = (float *)(void *)(npy + hl); /* hl is a multiple of 64: aligned */
    shard_out o;
    int64_t shards = 0;
    out_open(&o, dir, prefix, shards++);
    for (int64_t i = 0; i < s->n; i++) {
        int32_t y;
        ng_source_fill(s, 0, i, x, &y);
        const unsigned char *data = npy;
        size_t len = hl + sizeof(float) * (size_t)e;
        unsigned char *enc = NULL;
        if (png) {
            char why[256];
            enc = ng_shard_png_encode(x, s->shape[0], s->shape[1], s->shape[2], png[0], png[1],
                                      &len, why, sizeof why);
            if (!enc) { /* the shards before this one stay; this one is not left half-made */
                archive_write_free(o.a);
                close(o.fd);
                unlink(o.tmp);
                free(npy);
                ng_fail("--png-range: example %lld of %s: %s", (long long)i, s->name, why);
            }
            data = enc;
        }
        /* two headers, the data padded to 512, the cls in one block */
        int64_t group = 1536 + (int64_t)((len + 511) / 512 * 512);
        if (o.bytes > 0 && o.bytes + group > shard_bytes) {
            out_close(&o);
            out_open(&o, dir, prefix, shards++);
        }
        char name[64], cls[32];
        snprintf(name, sizeof name, "%09lld.%s", (long long)i, png ? "png" : "npy");
        out_member(&o, name, data, len);
        free(enc);
        int cl = snprintf(cls, sizeof cls, "%d", y);
        snprintf(name, sizeof name, "%09lld.cls", (long long)i);
        out_member(&o, name, cls, (size_t)cl);
    }
    out_close(&o);
    free(npy);
    return shards;
}

int64_t ng_shards_write(ng_source *s, const char *dir, const char *prefix, int64_t shard_bytes) {
    return write_shards(s, dir, prefix, shard_bytes, NULL);
}

int64_t ng_shards_write_png(ng_source *s, const char *dir, const char *prefix, int64_t shard_bytes,
                            double lo, double hi) {
    NG_CHECK(isfinite(lo) && isfinite(hi) && hi > lo, "--png-range: %g,%g is not a range lo < hi",
             lo, hi);
    double png[2] = {lo, hi};
    return write_shards(s, dir, prefix, shard_bytes, png);
}
