/* Learning-rate schedules: linear warmup, then constant, cosine, polynomial (as in Osawa et al.'s
 * large-batch K-FAC) or step decay. */
#ifndef NG_SCHEDULE_H
#define NG_SCHEDULE_H

#include <stdint.h>

typedef enum { NG_SCHED_CONSTANT, NG_SCHED_COSINE, NG_SCHED_POLY, NG_SCHED_STEP } ng_sched_kind;

typedef struct {
    ng_sched_kind kind;
    double base_lr;
    int64_t warmup_steps; /* lr = base * (step + 1) / warmup_steps while step < warmup_steps */
    int64_t total_steps;  /* decay runs over total_steps - warmup_steps */
    double min_lr;        /* cosine floor, poly end */
    double power;         /* poly: min + (base - min) (1 - t/T)^power */
    int64_t step_size;    /* step: base * gamma^floor(t / step_size) */
    double gamma;
} ng_schedule;

/* The learning rate of step `step` (counted from 0). */
double ng_schedule_lr(const ng_schedule *s, int64_t step);
/* "constant", "cosine", "poly", "step"; -1 for an unknown name. */
int ng_schedule_kind_from_name(const char *name);

#endif
