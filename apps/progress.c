/* The progress bar and plain progress lines. */
#include "apps/progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "apps/clock.h"

ng_progress ng_progress_new(int64_t total, int64_t first) {
    ng_progress p = {.tty = isatty(2), .total = total, .first = first, .t0 = ng_now()};
    return p;
}

static void fmt_time(char *out, size_t cap, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(out, cap, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(out, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(out, cap, "%lds", t);
}

void ng_progress_step(ng_progress *p, int64_t step, int64_t epoch, double loss, double acc,
                      double lr, double img_per_s, int64_t every) {
    if (p->quiet) return;
    double now = ng_now();
    int last = step == p->total;
    if (p->tty ? (now - p->last_print < 0.1 && !last) : (step % every && !last)) return;
    p->last_print = now;
    double done = (double)(step - p->first),
           eta = done > 0 ? (now - p->t0) / done * (double)(p->total - step) : -1;
    char e[32];
    fmt_time(e, sizeof e, eta);
    if (p->tty) {
        int width = 24, fill = (int)((double)width * (double)step / (double)p->total);
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '-';
        bar[width] = 0;
        fprintf(stderr,
                "\r[%s] %5.1f%% step %lld/%lld ep %lld loss %.4f acc %5.1f%% lr %.3g %.0f img/s "
                "ETA %s\033[K",
                bar, 100.0 * (double)step / (double)p->total, (long long)step, (long long)p->total,
                (long long)epoch, loss, 100 * acc, lr, img_per_s, e);
        if (last) fputc('\n', stderr);
    } else {
        fprintf(stderr,
                "step %lld/%lld epoch %lld loss %.4f acc %.1f%% lr %.4g %.0f img/s eta %s\n",
                (long long)step, (long long)p->total, (long long)epoch, loss, 100 * acc, lr,
                img_per_s, e);
    }
    fflush(stderr);
}

void ng_progress_note(ng_progress *p, const char *fmt, ...) {
    if (p->quiet) return;
    if (p->tty) fprintf(stderr, "\r\033[K");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

void ng_progress_done(ng_progress *p) {
    if (p->quiet) return;
    char t[32];
    fmt_time(t, sizeof t, ng_now() - p->t0);
    ng_progress_note(p, "done in %s", t);
}
