/* Learning-rate schedules: linear warmup, then constant, cosine, polynomial (as in Osawa et al.'s
 * large-batch K-FAC) or step decay, as a pure function of the step. */
#ifndef NG_SCHEDULE_H
#define NG_SCHEDULE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { NG_SCHED_CONSTANT, NG_SCHED_COSINE, NG_SCHED_POLY, NG_SCHED_STEP } ng_sched_kind;

/* With W = warmup_steps, t = step - W and T = total_steps - W:
 *   warmup, step < W: a line from warmup_init_lr towards base_lr, one W-th per step, starting one
 *           W-th in: lr = init + (base - init) (step + 1) / W. Step 0 thus already gets base/W
 *           with the default init 0 (no step runs at lr 0), and step W - 1 gets base_lr.
 *   constant:  base
 *   cosine:    min + (base - min) (1 + cos(pi t / T)) / 2, held at min_lr from step total_steps
 *   poly:      min + (base - min) (1 - t / T)^power, held at min_lr from step total_steps
 *   step:      base gamma^floor(t / step_size)
 * so every kind reaches base_lr at step W and, decaying ones, min_lr at total_steps. */
typedef struct {
    ng_sched_kind kind;
    double base_lr;
    int64_t warmup_steps;  /* W >= 0; 0: no warmup */
    double warmup_init_lr; /* the line's value at step -1 (default 0) */
    int64_t total_steps;   /* cosine/poly: >= warmup_steps; decay runs over total - warmup */
    double min_lr;         /* cosine floor, poly end */
    double power;          /* poly: >= 0 (Osawa et al. use 2 or so) */
    int64_t step_size;     /* step: > 0 */
    double gamma;          /* step: >= 0 */
} ng_schedule;

/* Usage errors naming the schedule.* key for a schedule ng_schedule_lr would refuse: an unknown
 * kind, negative or non-finite rates, and the per-kind fields above out of range. */
void ng_schedule_check(const ng_schedule *s);
/* The learning rate of step `step` (>= 0, counted from 0); checks the schedule first. */
double ng_schedule_lr(const ng_schedule *s, int64_t step);
/* "constant", "cosine", "poly", "step"; -1 for an unknown name. */
int ng_schedule_kind_from_name(const char *name);

#ifdef __cplusplus
}
#endif
#endif
