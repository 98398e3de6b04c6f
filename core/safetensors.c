/* safetensors reading and writing, with the header parsed and written by cJSON. */
#define _GNU_SOURCE /* qsort_r */
#include "core/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/memory.h"

struct ng_safetensors {
    char *path;
    unsigned char *buf; /* the whole file */
    size_t size;
    unsigned char *data; /* start of the data section */
    int n;
    char **names;
    ng_tensor *tensors;
    cJSON *meta;
};

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

static int cmp_by_offset(const void *a, const void *b, void *ctx) {
    const ng_tensor *t = ctx;
    const unsigned char *x = t[*(const int *)a].data, *y = t[*(const int *)b].data;
    return (x > y) - (x < y);
}

/* Offsets must be exact integers: a double that is not one is a lie about offsets. */
static int64_t get_int(cJSON *v, const char *path, const char *tensor, const char *what) {
    NG_CHECK(cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9.0e15 &&
                 v->valuedouble == (double)(int64_t)v->valuedouble,
             "%s: tensor %s: %s must be a non-negative integer", path, tensor, what);
    return (int64_t)v->valuedouble;
}

ng_safetensors *ng_safetensors_open(const char *path) {
    FILE *fp = fopen(path, "rb");
    NG_CHECK(fp, "cannot open %s: %s", path, strerror(errno));
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    ng_safetensors *f = calloc(1, sizeof *f);
    f->path = strdup(path);
    f->size = size > 0 ? (size_t)size : 0;
    f->buf = malloc(f->size ? f->size : 1);
    size_t got = fread(f->buf, 1, f->size, fp);
    fclose(fp);
    NG_CHECK(got == f->size, "%s: read %zu of %zu bytes", path, got, f->size);
    NG_CHECK(f->size >= 8, "%s: truncated: %zu bytes, not even the 8-byte header length", path,
             f->size);
    uint64_t hl = 0;
    for (int b = 7; b >= 0; b--) hl = hl << 8 | f->buf[b];
    NG_CHECK(hl <= f->size - 8,
             "%s: truncated or not safetensors: header of %llu bytes in a %zu-byte file", path,
             (unsigned long long)hl, f->size);
    cJSON *h = cJSON_ParseWithLength((const char *)f->buf + 8, (size_t)hl);
    NG_CHECK(h && cJSON_IsObject(h), "%s: the header is not a JSON object", path);
    f->data = f->buf + 8 + hl;
    size_t data_size = f->size - 8 - (size_t)hl;
    int count = 0;
    for (cJSON *it = h->child; it; it = it->next)
        if (strcmp(it->string, "__metadata__")) count++;
    f->names = calloc((size_t)count + 1, sizeof *f->names);
    f->tensors = calloc((size_t)count + 1, sizeof *f->tensors);
    for (cJSON *it = h->child; it; it = it->next) {
        const char *name = it->string;
        if (!strcmp(name, "__metadata__")) {
            f->meta = cJSON_Duplicate(it, 1);
            continue;
        }
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        NG_CHECK(cJSON_IsString(dt) && cJSON_IsArray(sh) && cJSON_IsArray(of) &&
                     cJSON_GetArraySize(of) == 2,
                 "%s: tensor %s: needs dtype, shape and data_offsets [begin, end]", path, name);
        int t = ng_st_dtype_from_name(dt->valuestring);
        NG_CHECK(t >= 0, "%s: tensor %s: dtype %s is not supported (F32, F64, F16, BF16, I32, U8)",
                 path, name, dt->valuestring);
        int nd = cJSON_GetArraySize(sh);
        NG_CHECK(nd <= NG_MAX_DIMS, "%s: tensor %s: %d dims, at most %d supported", path, name, nd,
                 NG_MAX_DIMS);
        int64_t shape[NG_MAX_DIMS];
        for (int d = 0; d < nd; d++)
            shape[d] = get_int(cJSON_GetArrayItem(sh, d), path, name, "shape");
        int64_t b = get_int(cJSON_GetArrayItem(of, 0), path, name, "data_offsets");
        int64_t e = get_int(cJSON_GetArrayItem(of, 1), path, name, "data_offsets");
        ng_tensor v = ng_tensor_wrap(NULL, (ng_dtype)t, NG_CPU, nd, shape, NULL);
        NG_CHECK(b <= e && (uint64_t)e <= data_size,
                 "%s: tensor %s: data_offsets [%lld, %lld] lie outside the %zu data bytes "
                 "(truncated file?)",
                 path, name, (long long)b, (long long)e, data_size);
        NG_CHECK((size_t)(e - b) == ng_tensor_bytes(&v),
                 "%s: tensor %s: %s shape needs %zu bytes but data_offsets give %lld", path, name,
                 dt->valuestring, ng_tensor_bytes(&v), (long long)(e - b));
        f->names[f->n] = strdup(name);
        v.data = f->data + b;
        v.name = f->names[f->n];
        f->tensors[f->n++] = v;
    }
    cJSON_Delete(h);
    /* Ranges must not overlap: sort indices by start and compare neighbours. */
    int *idx = malloc(sizeof(int) * (size_t)(f->n + 1));
    for (int i = 0; i < f->n; i++) idx[i] = i;
    qsort_r(idx, (size_t)f->n, sizeof(int), cmp_by_offset, f->tensors);
    for (int i = 1; i < f->n; i++) {
        ng_tensor *a = &f->tensors[idx[i - 1]], *b = &f->tensors[idx[i]];
        NG_CHECK((unsigned char *)a->data + ng_tensor_bytes(a) <= (unsigned char *)b->data,
                 "%s: tensors %s and %s overlap in the data section", path, a->name, b->name);
    }
    /* File order of offsets, so a reader walks the data front to back. */
    ng_tensor *sorted = malloc(sizeof(ng_tensor) * (size_t)(f->n + 1));
    for (int i = 0; i < f->n; i++) sorted[i] = f->tensors[idx[i]];
    memcpy(f->tensors, sorted, sizeof(ng_tensor) * (size_t)f->n);
    free(sorted);
    free(idx);
    return f;
}

void ng_safetensors_close(ng_safetensors *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->names[i]);
    free(f->names);
    free(f->tensors);
    cJSON_Delete(f->meta);
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
