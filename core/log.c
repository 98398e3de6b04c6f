/* Logging to stderr with level filter and rank prefix. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int level = -1, rank = 0, world = 1;

static int current_level(void) {
    if (level < 0) {
        const char *e = getenv("NG_LOG_LEVEL");
        level = NG_LOG_INFO;
        if (e) {
            static const char *names[] = {"debug", "info", "warn", "error"};
            for (int i = 0; i < 4; i++)
                if (!strcmp(e, names[i])) level = i;
        }
    }
    return level;
}

void ng_log_set_level(ng_log_level l) {
    level = (int)l;
}

void ng_log_set_rank(int r, int w) {
    rank = r;
    world = w;
}

void ng_log(ng_log_level l, const char *fmt, ...) {
    if ((int)l < current_level()) return;
    /* Non-zero ranks repeat rank 0's progress; keep their warnings and errors only. */
    if (rank != 0 && l < NG_LOG_WARN) return;
    static const char *tags[] = {"debug", "info", "warn", "error"};
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (world > 1)
        fprintf(stderr, "[rank %d/%d] %s: %s\n", rank, world, tags[l], msg);
    else
        fprintf(stderr, "%s: %s\n", tags[l], msg);
}
