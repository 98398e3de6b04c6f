/* The metrics log: whole lines only, every write checked, failed lines kept and retried. */
#define _GNU_SOURCE /* fdatasync */
#include "apps/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"

ng_json_num_text ng_json_num(const char *fmt, double v) {
    ng_json_num_text t;
    if (isfinite(v))
        snprintf(t.s, sizeof t.s, fmt, v);
    else
        snprintf(t.s, sizeof t.s, "null");
    return t;
}

/* The lines of metrics.jsonl up to resume_step, rewritten atomically. A last line without its
 * newline (a crash mid-write) is dropped with them. */
static void trim(const char *path, int64_t resume_step) {
    FILE *in = fopen(path, "r");
    if (!in) return;
    size_t cap = 1 << 16, len = 0;
    char *kept = malloc(cap), *line = NULL;
    size_t lcap = 0;
    ssize_t l;
    while ((l = getline(&line, &lcap, in)) > 0) {
        const char *s = strstr(line, "\"step\": ");
        long long st = s ? atoll(s + 8) : 0;
        if (st > resume_step || line[l - 1] != '\n') continue;
        while (len + (size_t)l + 1 > cap) kept = realloc(kept, cap *= 2);
        memcpy(kept + len, line, (size_t)l);
        len += (size_t)l;
    }
    fclose(in);
    free(line);
    ng_write_file_atomic(path, kept, len);
    free(kept);
}

ng_metrics ng_metrics_open(const char *dir, int64_t resume_step) {
    ng_metrics m = {.fd = -1};
    int n = snprintf(m.path, sizeof m.path, "%s/metrics.jsonl", dir);
    NG_CHECK(n > 0 && (size_t)n < sizeof m.path, "path %s/metrics.jsonl is too long", dir);
    if (resume_step >= 0) trim(m.path, resume_step);
    m.fd = open(m.path, O_WRONLY | O_CREAT | (resume_step >= 0 ? 0 : O_TRUNC), 0644);
    NG_CHECK(m.fd >= 0, "cannot write %s: %s", m.path, strerror(errno));
    m.good = lseek(m.fd, 0, SEEK_END);
    NG_CHECK(m.good >= 0, "cannot seek in %s: %s", m.path, strerror(errno));
    return m;
}

/* Writes the pending lines after the last good one and makes them durable; returns 0, or the
 * errno of the failure after cutting the file back to its last complete line. */
static int flush(ng_metrics *m) {
    size_t done = 0;
    int err = 0;
    while (done < m->len && !err) {
        ssize_t w = pwrite(m->fd, m->pending + done, m->len - done, m->good + (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            err = w < 0 ? errno : ENOSPC;
        else
            done += (size_t)w;
    }
    if (!err && fdatasync(m->fd)) err = errno;
    if (err) {
        /* A partial write leaves a torn line; the next try writes from the last good line. */
        if (ftruncate(m->fd, m->good)) { /* the next pwrite overwrites the torn bytes anyway */
        }
        return err;
    }
    m->good += (off_t)m->len;
    m->len = 0;
    return 0;
}

static void write_pending(ng_metrics *m) {
    if (!m->len) return;
    int err = flush(m);
    if (!err) {
        if (m->failures)
            fprintf(stderr, "natgrad: %s: written again after %d failed attempts\n", m->path,
                    m->failures);
        m->failures = 0;
        return;
    }
    if (!m->failures++)
        fprintf(stderr,
                "natgrad: warning: cannot write %s (%s); its lines are kept and retried at the "
                "next log step\n",
                m->path, strerror(err));
    if (m->failures >= NG_METRICS_MAX_FAILURES || m->len > NG_METRICS_MAX_PENDING) {
        fprintf(stderr,
                "natgrad: error: cannot write %s: %s (%d attempts in a row, %zu bytes of lines "
                "waiting); the run stops; continue it with --resume auto once there is room\n",
                m->path, strerror(err), m->failures, m->len);
        exit(1);
    }
}

void ng_metrics_line(ng_metrics *m, const char *json) {
    size_t l = strlen(json);
    if (m->len + l + 1 > m->cap) {
        m->cap = (m->len + l + 1) * 2;
        m->pending = realloc(m->pending, m->cap);
        NG_CHECK(m->pending, "metrics: out of memory for %zu bytes of lines", m->cap);
    }
    memcpy(m->pending + m->len, json, l);
    m->pending[m->len + l] = '\n';
    m->len += l + 1;
    write_pending(m);
}

void ng_metrics_close(ng_metrics *m) {
    if (m->fd < 0) return;
    /* No later log step will retry: give a briefly full disk a few seconds. */
    for (int i = 0; m->len && i < 10; i++) {
        if (i) usleep(500000);
        write_pending(m);
    }
    if (m->len) {
        fprintf(stderr, "natgrad: error: cannot write the last %zu bytes of lines to %s\n", m->len,
                m->path);
        exit(1);
    }
    close(m->fd);
    free(m->pending);
    m->fd = -1, m->pending = NULL, m->len = m->cap = 0;
}
