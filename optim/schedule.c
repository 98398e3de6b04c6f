/* Learning-rate schedules: warmup and decay as closed forms of the step (see schedule.h). */
#include "optim/schedule.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

static const char *const kind_names[] = {"constant", "cosine", "poly", "step"};

int ng_schedule_kind_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < (int)(sizeof kind_names / sizeof *kind_names); i++)
        if (!strcmp(name, kind_names[i])) return i;
    return -1;
}

static int rate_ok(double x) {
    return isfinite(x) && x >= 0.0;
}

void ng_schedule_check(const ng_schedule *s) {
    NG_CHECK((int)s->kind >= 0 && (int)s->kind <= NG_SCHED_STEP,
             "schedule.name: unknown schedule kind %d (allowed: constant, cosine, poly, step)",
             (int)s->kind);
    NG_CHECK(rate_ok(s->base_lr), "schedule.base_lr: %g must be finite and >= 0", s->base_lr);
    NG_CHECK(s->warmup_steps >= 0, "schedule.warmup_steps: %lld must be >= 0",
             (long long)s->warmup_steps);
    NG_CHECK(rate_ok(s->warmup_init_lr), "schedule.warmup_init_lr: %g must be finite and >= 0",
             s->warmup_init_lr);
    if (s->kind == NG_SCHED_COSINE || s->kind == NG_SCHED_POLY) {
        NG_CHECK(s->total_steps >= s->warmup_steps,
                 "schedule.total_steps: %lld is below schedule.warmup_steps %lld",
                 (long long)s->total_steps, (long long)s->warmup_steps);
        NG_CHECK(rate_ok(s->min_lr), "schedule.min_lr: %g must be finite and >= 0", s->min_lr);
    }
    if (s->kind == NG_SCHED_POLY)
        NG_CHECK(isfinite(s->power) && s->power >= 0.0,
                 "schedule.power: %g must be finite and >= 0", s->power);
    if (s->kind == NG_SCHED_STEP) {
        NG_CHECK(s->step_size > 0, "schedule.step_size: %lld must be > 0", (long long)s->step_size);
        NG_CHECK(rate_ok(s->gamma), "schedule.gamma: %g must be finite and >= 0", s->gamma);
    }
}

double ng_schedule_lr(const ng_schedule *s, int64_t step) {
    ng_schedule_check(s);
    NG_CHECK(step >= 0, "schedule: step %lld must be >= 0", (long long)step);
    if (step < s->warmup_steps)
        return s->warmup_init_lr +
               (s->base_lr - s->warmup_init_lr) * (double)(step + 1) / (double)s->warmup_steps;
    int64_t t = step - s->warmup_steps;
    switch (s->kind) {
        case NG_SCHED_CONSTANT:
            return s->base_lr;
        case NG_SCHED_COSINE:
        case NG_SCHED_POLY: {
            int64_t T = s->total_steps - s->warmup_steps;
            if (t >= T) return s->min_lr; /* also T == 0: all warmup, then the floor */
            double frac = (double)t / (double)T;
            double shape = s->kind == NG_SCHED_COSINE ? 0.5 * (1.0 + cos(M_PI * frac))
                                                      : pow(1.0 - frac, s->power);
            return s->min_lr + (s->base_lr - s->min_lr) * shape;
        }
        case NG_SCHED_STEP:
            return s->base_lr * pow(s->gamma, (double)(t / s->step_size));
    }
    return s->base_lr;
}
