/* The metrics log (DIR/metrics.jsonl, one JSON object per line) and the one formatter of JSON
 * numbers it uses. Writes are checked: a failed write (a full disk) keeps its lines and retries
 * them at the next line, and the file never holds a torn line. */
#ifndef NG_METRICS_H
#define NG_METRICS_H

#include <stdint.h>
#include <sys/types.h>

/* A number as JSON text: `fmt` (a printf format of one double) for finite values, null for NaN
 * and infinities, which JSON cannot hold. Returned by value so that calls nest in one printf:
 * printf("%s", ng_json_num("%.4f", x).s). */
typedef struct {
    char s[48];
} ng_json_num_text;
ng_json_num_text ng_json_num(const char *fmt, double v);

/* Seconds between fdatasyncs of the lines written. */
#define NG_METRICS_SYNC_S 1.0
/* Consecutive failed flushes over at least NG_METRICS_MAX_FAIL_S seconds (a count alone would
 * depend on the step time: a fast model makes 200 attempts in a fraction of a second), or lines
 * waiting to be written, after which the run stops. */
#define NG_METRICS_MAX_FAILURES 200
#define NG_METRICS_MAX_FAIL_S 5.0
#define NG_METRICS_MAX_PENDING (4u << 20)

typedef struct {
    int fd;
    char path[4096];
    off_t good;           /* end of the last line known to be on disk (fdatasync'ed) */
    char *pending;        /* whole lines after `good`, in order */
    size_t len, cap;      /* of pending */
    size_t written;       /* bytes of pending written, not yet synced */
    double synced_at;     /* when `good` last moved (monotonic seconds) */
    int failures;         /* consecutive failed flushes */
    double failing_since; /* when the first of them failed */
    int last_err;         /* the errno of the last one */
} ng_metrics;

/* Opens DIR/metrics.jsonl: new (resume_step < 0), or kept up to resume_step, so that the lines
 * a crash or a stop lost are written again and the log reads as one uninterrupted run. */
ng_metrics ng_metrics_open(const char *dir, int64_t resume_step);
/* Appends one line (json without its newline) and writes every pending line, fdatasync'ing at
 * most every NG_METRICS_SYNC_S. A failed write or sync keeps the lines for the next call;
 * NG_METRICS_MAX_FAILURES failures in a row over NG_METRICS_MAX_FAIL_S, or more than
 * NG_METRICS_MAX_PENDING bytes waiting, stop the run (exit 1) naming the file and the error. */
void ng_metrics_line(ng_metrics *m, const char *json);
/* Writes and syncs what is pending (the run stops with exit 1 when it cannot) and closes. */
void ng_metrics_close(ng_metrics *m);

#endif
