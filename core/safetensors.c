/* safetensors reading and writing, with the header parsed and written by cJSON. */
#define _GNU_SOURCE /* qsort_r */
#include "core/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/memory.h"

struct ng_safetensors {
    char *path;
    unsigned char *buf; /* the whole file */
    size_t size;
    unsigned char *data;    /* start of the data section */
    unsigned char *aligned; /* copies of the tensors stored at offsets unaligned for their type */
    int n;
    char **names;
    ng_tensor *tensors;
    cJSON *meta;
    ng_safetensors *next_open; /* the list of open files, for ng_safetensors_close_all */
};

static ng_safetensors *open_files;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *st_names[NG_NUM_DTYPES] = {
    [NG_F32] = "F32",   [NG_F64] = "F64", [NG_F16] = "F16",
    [NG_BF16] = "BF16", [NG_I32] = "I32", [NG_U8] = "U8",
};

const char *ng_st_dtype_name(ng_dtype t) {
    return (unsigned)t < NG_NUM_DTYPES ? st_names[t] : "?";
}

int ng_st_dtype_from_name(const char *s) {
    for (int i = 0; i < NG_NUM_DTYPES; i++)
        if (!strcmp(s, st_names[i])) return i;
    return -1;
}

void ng_write_file_atomic(const char *path, const void *data, size_t bytes) {
    size_t len = strlen(path) + 16;
    char *tmp = malloc(len);
    snprintf(tmp, len, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    NG_CHECK(fd >= 0, "cannot write %s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = bytes;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            ng_fail("writing %s failed: %s", tmp, strerror(e));
        }
        p += w, left -= (size_t)w;
    }
    if (fsync(fd) || close(fd)) {
        unlink(tmp);
        ng_fail("flushing %s failed: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path)) {
        unlink(tmp);
        ng_fail("renaming %s to %s failed: %s", tmp, path, strerror(errno));
    }
    free(tmp);
}

void ng_safetensors_save(const char *path, const ng_st_entry *e, int n, const char **meta) {
    cJSON *h = cJSON_CreateObject();
    if (meta && meta[0]) {
        cJSON *m = cJSON_AddObjectToObject(h, "__metadata__");
        for (int i = 0; meta[i] && meta[i + 1]; i += 2)
            cJSON_AddStringToObject(m, meta[i], meta[i + 1]);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const ng_tensor *t = e[i].tensor;
        NG_CHECK(!cJSON_GetObjectItemCaseSensitive(h, e[i].name),
                 "saving %s: two tensors are named %s", path, e[i].name);
        cJSON *o = cJSON_AddObjectToObject(h, e[i].name);
        cJSON_AddStringToObject(o, "dtype", ng_st_dtype_name(t->dtype));
        cJSON *s = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(s, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *r = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(r, cJSON_CreateNumber((double)off));
        off += ng_tensor_bytes(t);
        cJSON_AddItemToArray(r, cJSON_CreateNumber((double)off));
    }
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t hl = strlen(json),
           padded = (hl + 7) / 8 * 8; /* data 8-byte aligned, as the spec allows */
    size_t total = 8 + padded + off;
    unsigned char *buf = malloc(total);
    NG_CHECK(buf, "saving %s: out of host memory for %zu bytes", path, total);
    for (int b = 0; b < 8; b++) buf[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    memcpy(buf + 8, json, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    free(json);
    unsigned char *d = buf + 8 + padded;
    for (int i = 0; i < n; i++) {
        const ng_tensor *t = e[i].tensor;
        ng_tensor view = ng_tensor_wrap(d, t->dtype, NG_CPU, t->ndim, t->shape, t->name);
        ng_tensor_copy(&view, t); /* from any device; host data is little-endian here */
        d += ng_tensor_bytes(t);
    }
    ng_write_file_atomic(path, buf, total);
    free(buf);
}

/* The reading state: on any error the message is formatted here, everything is freed, and only
 * then is ng_fail raised, so a caught error (tests, fuzzers) leaks nothing. */
typedef struct {
    ng_safetensors *f;
    cJSON *h;
    int64_t *begin, *end; /* byte range of tensor i in the data section */
    int *idx;
    char msg[1024];
} open_state;

static int bad(open_state *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(open_state *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
    return 0;
}

/* Offsets and dims must be exact integers: a double that is not one is a lie about sizes. */
static int get_int(open_state *s, cJSON *v, const char *tensor, const char *what, int64_t *out) {
    if (!(cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9.0e15 &&
          v->valuedouble == (double)(int64_t)v->valuedouble))
        return bad(s, "%s: tensor %s: %s must be a non-negative integer", s->f->path, tensor, what);
    *out = (int64_t)v->valuedouble;
    return 1;
}

static int cmp_range(const void *a, const void *b, void *ctx) {
    const open_state *s = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    if (s->begin[i] != s->begin[j])
        return (s->begin[i] > s->begin[j]) - (s->begin[i] < s->begin[j]);
    return (s->end[i] > s->end[j]) - (s->end[i] < s->end[j]);
}

static int cmp_name(const void *a, const void *b, void *ctx) {
    const ng_safetensors *f = ctx;
    return strcmp(f->names[*(const int *)a], f->names[*(const int *)b]);
}

static int read_whole(open_state *s, const char *path) {
    ng_safetensors *f = s->f;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return bad(s, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return bad(s, "%s: not a regular file", path);
    }
    f->size = (size_t)st.st_size;
    f->buf = malloc(f->size ? f->size : 1);
    if (!f->buf) {
        close(fd);
        return bad(s, "%s: out of host memory for %zu bytes", path, f->size);
    }
    size_t got = 0;
    while (got < f->size) {
        ssize_t r = read(fd, f->buf + got, f->size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != f->size) return bad(s, "%s: read %zu of %zu bytes", path, got, f->size);
    return 1;
}

/* One tensor's entry: dtype, shape and a byte range that matches the shape. */
static int read_entry(open_state *s, cJSON *it, size_t data_size) {
    ng_safetensors *f = s->f;
    const char *path = f->path, *name = it->string;
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
    cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!(cJSON_IsString(dt) && cJSON_IsArray(sh) && cJSON_IsArray(of) &&
          cJSON_GetArraySize(of) == 2))
        return bad(s, "%s: tensor %s: needs dtype, shape and data_offsets [begin, end]", path,
                   name);
    int t = ng_st_dtype_from_name(dt->valuestring);
    if (t < 0)
        return bad(s, "%s: tensor %s: dtype %.40s is not supported (F32, F64, F16, BF16, I32, U8)",
                   path, name, dt->valuestring);
    int nd = cJSON_GetArraySize(sh);
    if (nd > NG_MAX_DIMS)
        return bad(s, "%s: tensor %s: %d dims, at most %d supported", path, name, nd, NG_MAX_DIMS);
    int64_t shape[NG_MAX_DIMS], b = 0, e = 0, numel = 0;
    for (int d = 0; d < nd; d++)
        if (!get_int(s, cJSON_GetArrayItem(sh, d), name, "shape", &shape[d])) return 0;
    if (!get_int(s, cJSON_GetArrayItem(of, 0), name, "data_offsets", &b) ||
        !get_int(s, cJSON_GetArrayItem(of, 1), name, "data_offsets", &e))
        return 0;
    size_t es = ng_dtype_size((ng_dtype)t);
    if (!ng_shape_numel(nd, shape, es, &numel))
        return bad(s, "%s: tensor %s: the shape's element count overflows 64 bits", path, name);
    if (!(b <= e && (uint64_t)e <= data_size))
        return bad(s,
                   "%s: tensor %s: data_offsets [%lld, %lld] lie outside the %zu data bytes "
                   "(truncated file, or a header length off?)",
                   path, name, (long long)b, (long long)e, data_size);
    if (e - b != numel * (int64_t)es)
        return bad(s, "%s: tensor %s: %s shape needs %lld bytes but data_offsets give %lld", path,
                   name, dt->valuestring, (long long)(numel * (int64_t)es), (long long)(e - b));
    int i = f->n++;
    f->names[i] = strdup(name);
    if (!f->names[i]) return bad(s, "%s: out of host memory", path);
    f->tensors[i] = ng_tensor_wrap(f->data + b, (ng_dtype)t, NG_CPU, nd, shape, f->names[i]);
    s->begin[i] = b, s->end[i] = e;
    return 1;
}

/* The format's reference reader demands that the data section be exactly the tensors' ranges:
 * sorted by offset they start at 0, each begins where the previous ends, and the last ends at
 * the end of the file. A header length off by one byte shifts every range, and is caught here
 * rather than loaded as shifted weights. */
static int check_coverage(open_state *s, size_t data_size) {
    ng_safetensors *f = s->f;
    for (int i = 0; i < f->n; i++) s->idx[i] = i;
    qsort_r(s->idx, (size_t)f->n, sizeof(int), cmp_range, s);
    int64_t at = 0;
    const char *prev = NULL;
    for (int k = 0; k < f->n; k++) {
        int i = s->idx[k];
        if (s->begin[i] < at)
            return bad(s, "%s: tensors %s and %s overlap in the data section", f->path, prev,
                       f->names[i]);
        if (s->begin[i] > at)
            return bad(s,
                       "%s: tensor %s starts at data byte %lld but %s ends at %lld: the data "
                       "section has a gap (header length off?)",
                       f->path, f->names[i], (long long)s->begin[i], prev ? prev : "the start",
                       (long long)at);
        at = s->end[i], prev = f->names[i];
    }
    if ((uint64_t)at != data_size)
        return bad(s,
                   "%s: the data section has %zu bytes but the tensors cover %lld (last: %s): "
                   "trailing bytes or a header length off",
                   f->path, data_size, (long long)at, prev ? prev : "none");
    /* File order of offsets, so a reader walks the data front to back. */
    ng_tensor *sorted = malloc(sizeof(ng_tensor) * (size_t)(f->n + 1));
    char **names = malloc(sizeof(char *) * (size_t)(f->n + 1));
    if (!sorted || !names) {
        free(sorted), free(names);
        return bad(s, "%s: out of host memory", f->path);
    }
    for (int k = 0; k < f->n; k++)
        sorted[k] = f->tensors[s->idx[k]], names[k] = f->names[s->idx[k]];
    memcpy(f->tensors, sorted, sizeof(ng_tensor) * (size_t)f->n);
    memcpy(f->names, names, sizeof(char *) * (size_t)f->n);
    free(sorted), free(names);
    /* Names are unique (JSON objects may repeat keys; the reference reader does not accept it). */
    for (int i = 0; i < f->n; i++) s->idx[i] = i;
    qsort_r(s->idx, (size_t)f->n, sizeof(int), cmp_name, f);
    for (int k = 1; k < f->n; k++)
        if (!strcmp(f->names[s->idx[k - 1]], f->names[s->idx[k]]))
            return bad(s, "%s: tensor %s is listed twice in the header", f->path,
                       f->names[s->idx[k]]);
    return 1;
}

/* The format does not align tensors (a header length that is not a multiple of 8, or an F16
 * tensor after a U8 one of odd length), but typed loads need alignment: such tensors are
 * copied, each to an 8-byte boundary, into one side buffer. */
static int align_tensors(open_state *s) {
    ng_safetensors *f = s->f;
    size_t need = 0;
    for (int i = 0; i < f->n; i++) {
        ng_tensor *t = &f->tensors[i];
        if (!((uintptr_t)t->data % ng_dtype_size(t->dtype))) continue;
        if (!t->numel)
            t->data = f->buf; /* nothing to read: any aligned address will do */
        else
            need += (ng_tensor_bytes(t) + 7) / 8 * 8;
    }
    if (!need) return 1;
    f->aligned = malloc(need);
    if (!f->aligned) return bad(s, "%s: out of host memory for %zu bytes", f->path, need);
    size_t at = 0;
    for (int i = 0; i < f->n; i++) {
        ng_tensor *t = &f->tensors[i];
        if (!((uintptr_t)t->data % ng_dtype_size(t->dtype))) continue;
        memcpy(f->aligned + at, t->data, ng_tensor_bytes(t));
        t->data = f->aligned + at;
        at += (ng_tensor_bytes(t) + 7) / 8 * 8;
    }
    return 1;
}

static int open_checked(open_state *s, const char *path) {
    ng_safetensors *f = s->f;
    if (!read_whole(s, path)) return 0;
    if (f->size < 8)
        return bad(s, "%s: truncated: %zu bytes, not even the 8-byte header length", path, f->size);
    uint64_t hl = 0;
    for (int b = 7; b >= 0; b--) hl = hl << 8 | f->buf[b];
    if (hl > f->size - 8)
        return bad(s, "%s: truncated or not safetensors: header of %llu bytes in a %zu-byte file",
                   path, (unsigned long long)hl, f->size);
    const char *json = (const char *)f->buf + 8, *end = NULL;
    s->h = cJSON_ParseWithLengthOpts(json, (size_t)hl, &end, 0);
    if (!s->h || !cJSON_IsObject(s->h))
        return bad(s,
                   "%s: the header (%llu bytes) is not a JSON object: not safetensors, or the "
                   "header length is wrong",
                   path, (unsigned long long)hl);
    /* Only padding may follow the object: anything else means the header length is wrong. */
    for (; end < json + hl; end++)
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')
            return bad(s,
                       "%s: the header's JSON ends at byte %lld of %llu and other bytes follow "
                       "(header length wrong?)",
                       path, (long long)(end - json), (unsigned long long)hl);
    f->data = f->buf + 8 + hl;
    size_t data_size = f->size - 8 - (size_t)hl;
    int count = 0;
    for (cJSON *it = s->h->child; it; it = it->next) count++;
    f->names = calloc((size_t)count + 1, sizeof *f->names);
    f->tensors = calloc((size_t)count + 1, sizeof *f->tensors);
    s->begin = calloc((size_t)count + 1, sizeof *s->begin);
    s->end = calloc((size_t)count + 1, sizeof *s->end);
    s->idx = calloc((size_t)count + 1, sizeof *s->idx);
    if (!f->names || !f->tensors || !s->begin || !s->end || !s->idx)
        return bad(s, "%s: out of host memory for %d tensors", path, count);
    for (cJSON *it = s->h->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (!cJSON_IsObject(it))
                return bad(s, "%s: __metadata__ must be one JSON object of strings", path);
            for (cJSON *v = it->child; v; v = v->next)
                if (!cJSON_IsString(v))
                    return bad(s, "%s: __metadata__ value %s is not a string", path, v->string);
            f->meta = cJSON_DetachItemViaPointer(s->h, it);
            break; /* the list changed under us; walk it again without the metadata */
        }
    }
    for (cJSON *it = s->h->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__"))
            return bad(s, "%s: __metadata__ must be one JSON object of strings", path);
        if (!read_entry(s, it, data_size)) return 0;
    }
    return check_coverage(s, data_size) && align_tensors(s);
}

ng_safetensors *ng_safetensors_open(const char *path) {
    open_state s = {0};
    s.f = calloc(1, sizeof *s.f);
    NG_CHECK(s.f, "%s: out of host memory", path);
    s.f->path = strdup(path);
    int ok = s.f->path && open_checked(&s, path);
    cJSON_Delete(s.h);
    free(s.begin), free(s.end), free(s.idx);
    if (!ok) {
        if (!s.msg[0]) snprintf(s.msg, sizeof s.msg, "%s: out of host memory", path);
        ng_safetensors_close(s.f);
        ng_fail("%s", s.msg);
    }
    pthread_mutex_lock(&open_lock);
    s.f->next_open = open_files;
    open_files = s.f;
    pthread_mutex_unlock(&open_lock);
    return s.f;
}

int ng_safetensors_close_all(void) {
    int n = 0;
    for (;;) {
        pthread_mutex_lock(&open_lock);
        ng_safetensors *f = open_files;
        pthread_mutex_unlock(&open_lock);
        if (!f) return n;
        ng_safetensors_close(f);
        n++;
    }
}

void ng_safetensors_close(ng_safetensors *f) {
    if (!f) return;
    pthread_mutex_lock(&open_lock);
    for (ng_safetensors **p = &open_files; *p; p = &(*p)->next_open)
        if (*p == f) {
            *p = f->next_open;
            break;
        }
    pthread_mutex_unlock(&open_lock);
    for (int i = 0; i < f->n; i++) free(f->names[i]);
    free(f->names);
    free(f->tensors);
    cJSON_Delete(f->meta);
    free(f->aligned);
    free(f->buf);
    free(f->path);
    free(f);
}

int ng_safetensors_count(const ng_safetensors *f) {
    return f->n;
}

ng_tensor ng_safetensors_get(const ng_safetensors *f, int i) {
    return f->tensors[i];
}

int ng_safetensors_find(const ng_safetensors *f, const char *name, ng_tensor *out) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->tensors[i].name, name)) {
            *out = f->tensors[i];
            return 1;
        }
    return 0;
}

const char *ng_safetensors_meta(const ng_safetensors *f, const char *key) {
    cJSON *v = f->meta ? cJSON_GetObjectItemCaseSensitive(f->meta, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

const char *ng_safetensors_path(const ng_safetensors *f) {
    return f->path;
}
