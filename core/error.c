/* The usage-error handler and library-failure reporting. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static char last_msg[1024];

static void default_handler(const char *msg) {
    fprintf(stderr, "natgrad: error: %s\n", msg);
    exit(NG_EXIT_USAGE);
}

static ng_error_handler handler = default_handler;

ng_error_handler ng_set_error_handler(ng_error_handler h) {
    ng_error_handler old = handler;
    handler = h ? h : default_handler;
    return old;
}

const char *ng_last_error(void) {
    return last_msg;
}

void ng_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    handler(last_msg);
    /* A handler that returns would let the caller run on with bad input. */
    exit(NG_EXIT_USAGE);
}

void ng_lib_fail(const char *lib, const char *file, int line, const char *call, const char *msg) {
    fprintf(stderr, "natgrad: %s error at %s:%d: %s\n  in: %s\n", lib, file, line, msg, call);
    abort();
}

const char *ng_status_name(ng_status s) {
    switch (s) {
        case NG_OK:
            return "ok";
        case NG_ERR_NOT_PD:
            return "matrix is not positive definite";
        case NG_ERR_NO_CONVERGE:
            return "eigensolver did not converge";
        case NG_ERR_NONFINITE:
            return "input holds NaN or Inf";
    }
    return "unknown status";
}
