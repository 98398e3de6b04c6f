/* Errors: usage errors stop the program through one handler (exit status 2 by default);
 * numerical failures are returned as ng_status so callers can fall back. */
#ifndef NG_ERROR_H
#define NG_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    NG_OK = 0,
    NG_ERR_NOT_PD = 1,      /* Cholesky met a non-positive pivot */
    NG_ERR_NO_CONVERGE = 2, /* eigensolver did not converge */
    NG_ERR_NONFINITE = 3,   /* input held NaN or Inf */
} ng_status;

const char *ng_status_name(ng_status s);

/* Exit status for bad input (config, data, shapes): the documented convention. */
#define NG_EXIT_USAGE 2

/* Reports a usage error and does not return under the default handler, which prints
 * "natgrad: error: <message>" and exits with NG_EXIT_USAGE. */
void ng_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* A failing library call (CUDA, cuBLAS, ...): prints the library, file, line, the call and
 * the library's own message, then aborts, since the device state is no longer trusted. */
void ng_lib_fail(const char *lib, const char *file, int line, const char *call, const char *msg);

/* Tests replace the handler to catch errors (with longjmp); it receives the message. */
typedef void (*ng_error_handler)(const char *msg);
ng_error_handler ng_set_error_handler(ng_error_handler h);
/* The last message passed to ng_fail, for tests that check what was said. */
const char *ng_last_error(void);

#define NG_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) ng_fail(__VA_ARGS__);                                                         \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
