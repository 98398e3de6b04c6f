/* Training progress on stderr: a bar redrawn in place with ETA and images/s when stderr is a
 * terminal, plain periodic lines otherwise (logs, CI, mpirun). */
#ifndef NG_PROGRESS_H
#define NG_PROGRESS_H

#include <stdint.h>

typedef struct {
    int tty;
    int quiet;            /* ranks other than 0 of a distributed run print nothing */
    int64_t total, first; /* steps in the run; the step this process started at (resume) */
    double t0, last_print;
} ng_progress;

ng_progress ng_progress_new(int64_t total_steps, int64_t first_step);
/* Called after each step with its figures; draws at most ~10 times a second on a terminal, and
 * every `every` steps otherwise. */
void ng_progress_step(ng_progress *p, int64_t step, int64_t epoch, double loss, double acc,
                      double lr, double img_per_s, int64_t every);
/* A line that must not be overwritten (evaluation results), printed above the bar. */
void ng_progress_note(ng_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ng_progress_done(ng_progress *p);

#endif
