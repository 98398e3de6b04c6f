/* The metrics log: whole lines only, every write checked, failed lines kept and retried. */
#define _GNU_SOURCE /* fdatasync, getline */
#include "apps/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/clock.h"
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
    m.synced_at = ng_now();
    NG_CHECK(m.good >= 0, "cannot seek in %s: %s", m.path, strerror(errno));
    return m;
}

/* Writes the lines not yet written after the last durable one, and makes them all durable when
 * `sync` or NG_METRICS_SYNC_S have passed since the last time (an fdatasync per line would cost
 * milliseconds a line). Returns 0, or the errno of a failure after cutting the file back to its
 * last whole line written (its last durable line when the sync failed: what was written since
 * may be lost); the lines after the cut stay pending. */
static int flush(ng_metrics *m, int sync) {
    int err = 0, sync_failed = 0;
    while (m->written < m->len && !err) {
        ssize_t w = pwrite(m->fd, m->pending + m->written, m->len - m->written,
                           m->good + (off_t)m->written);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            err = w < 0 ? errno : ENOSPC;
        else
            m->written += (size_t)w;
    }
    if (!err && (sync || ng_now() - m->synced_at >= NG_METRICS_SYNC_S)) {
        if (fdatasync(m->fd)) {
            err = errno, sync_failed = 1;
        } else {
            m->good += (off_t)m->len;
            m->len = m->written = 0;
            m->synced_at = ng_now();
        }
    }
    if (err) {
        if (sync_failed) m->written = 0;
        while (m->written && m->pending[m->written - 1] != '\n') m->written--;
        /* Should this fail, the next pwrite overwrites the torn bytes anyway. */
        if (ftruncate(m->fd, m->good + (off_t)m->written)) {
        }
    }
    return err;
}

static void write_pending(ng_metrics *m, int sync) {
    int err = flush(m, sync);
    if (!err) {
        if (m->failures)
            fprintf(stderr, "natgrad: %s: written again after %d failed attempts\n", m->path,
                    m->failures);
        m->failures = 0;
        return;
    }
    m->last_err = err;
    if (!m->failures++) {
        m->failing_since = ng_now();
        fprintf(stderr,
                "natgrad: warning: cannot write %s (%s); its lines are kept and retried at the "
                "next log step\n",
                m->path, strerror(err));
    }
    if ((m->failures >= NG_METRICS_MAX_FAILURES &&
         ng_now() - m->failing_since >= NG_METRICS_MAX_FAIL_S) ||
        m->len > NG_METRICS_MAX_PENDING) {
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
    write_pending(m, 0);
}

void ng_metrics_close(ng_metrics *m) {
    if (m->fd < 0) return;
    /* No later log step will retry: give a briefly full disk a few seconds. */
    for (int i = 0; m->len && i < 10; i++) {
        if (i) usleep(500000);
        write_pending(m, 1);
    }
    if (m->len) {
        fprintf(stderr,
                "natgrad: error: cannot write %s: %s (the last %zu bytes of lines, at the end of "
                "the run)\n",
                m->path, strerror(m->last_err), m->len);
        exit(1);
    }
    close(m->fd);
    free(m->pending);
    m->fd = -1, m->pending = NULL, m->len = m->cap = 0;
}
