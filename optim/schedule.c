/* Learning-rate schedules. */
#include "optim/schedule.h"

#include <math.h>
#include <string.h>

double ng_schedule_lr(const ng_schedule *s, int64_t step) {
    if (step < s->warmup_steps) return s->base_lr * (double)(step + 1) / (double)s->warmup_steps;
    double t = (double)(step - s->warmup_steps), T = (double)(s->total_steps - s->warmup_steps);
    double frac = T > 0 ? fmin(t / T, 1.0) : 1.0;
    switch (s->kind) {
        case NG_SCHED_CONSTANT:
            return s->base_lr;
        case NG_SCHED_COSINE:
            return s->min_lr + (s->base_lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * frac));
        case NG_SCHED_POLY:
            return s->min_lr + (s->base_lr - s->min_lr) * pow(1.0 - frac, s->power);
        case NG_SCHED_STEP:
            return s->base_lr *
                   pow(s->gamma, floor(t / (double)(s->step_size > 0 ? s->step_size : 1)));
    }
    return s->base_lr;
}

int ng_schedule_kind_from_name(const char *name) {
    static const char *names[] = {"constant", "cosine", "poly", "step"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}
