/* Learning-rate schedules on random settings: warmup and each decay at their key steps (0, last
 * warmup step, first decay step, middle, end, past the end) against their closed forms, monotone
 * where they should be, names, and bad settings naming their key. */
#include <math.h>
#include <stdlib.h>

#include "optim/schedule.h"
#include "testing.h"

/* Every value is a few double operations (cos and pow correct to an ulp or so) on numbers of
 * order base_lr: 1e-14 relative is far above that and far below any formula slip. */
#define TOL 1e-14

static double uni(double lo, double hi) {
    return lo + (hi - lo) * 0.5 * (ng_test_uniform() + 1.0);
}
static int64_t iuni(int64_t lo, int64_t hi) { /* [lo, hi] */
    int64_t v = lo + (int64_t)floor(uni(0, 1) * (double)(hi - lo + 1));
    return v > hi ? hi : v;
}

static void expect(const ng_schedule *s, int64_t step, double want, const char *what) {
    double got = ng_schedule_lr(s, step);
    NG_TEST(fabs(got - want) <= TOL * fmax(fabs(want), s->base_lr),
            "%s: lr(%lld) = %.17g, expected %.17g", what, (long long)step, got, want);
}

static ng_schedule random_schedule(ng_sched_kind kind, int with_init) {
    ng_schedule s = {.kind = kind,
                     .base_lr = uni(0.01, 2.0),
                     .warmup_steps = iuni(1, 50),
                     .power = uni(0.5, 3.0),
                     .step_size = iuni(1, 40),
                     .gamma = uni(0.05, 0.9)};
    s.warmup_init_lr = with_init ? uni(0, 0.5) * s.base_lr : 0.0;
    s.total_steps = s.warmup_steps + 2 * iuni(10, 300); /* an even decay length has a middle */
    s.min_lr = uni(0, 0.2) * s.base_lr;
    return s;
}

/* Warmup: step 0 one W-th of the way from warmup_init_lr, step W-1 at base_lr, linear between. */
static void check_warmup(const ng_schedule *s, const char *what) {
    double W = (double)s->warmup_steps, i0 = s->warmup_init_lr, b = s->base_lr;
    expect(s, 0, i0 + (b - i0) / W, what);
    expect(s, s->warmup_steps - 1, b, what);
    int64_t k = iuni(0, s->warmup_steps - 1);
    expect(s, k, i0 + (b - i0) * (double)(k + 1) / W, what);
    int up = 1;
    for (int64_t t = 1; t < s->warmup_steps; t++)
        if (!(ng_schedule_lr(s, t) > ng_schedule_lr(s, t - 1))) up = 0;
    NG_TEST(up, "%s: warmup is not increasing", what);
    NG_TEST(ng_schedule_lr(s, 0) > 0.0, "%s: the first step has lr 0", what);
}

/* Non-increasing from the end of warmup to past the end. */
static void check_decreasing(const ng_schedule *s, const char *what) {
    int ok = 1;
    for (int64_t t = s->warmup_steps; t < s->total_steps + 20; t++)
        if (!(ng_schedule_lr(s, t + 1) <= ng_schedule_lr(s, t))) ok = 0;
    NG_TEST(ok, "%s: lr increases after warmup", what);
}

static void check_kinds(int with_init) {
    ng_schedule s = random_schedule(NG_SCHED_CONSTANT, with_init);
    int64_t W = s.warmup_steps, E = s.total_steps, T = E - W;
    double b = s.base_lr, mn = s.min_lr;
    check_warmup(&s, "constant");
    expect(&s, W, b, "constant");
    expect(&s, E + 1000, b, "constant");

    s.kind = NG_SCHED_COSINE;
    check_warmup(&s, "cosine");
    expect(&s, W, b, "cosine");
    expect(&s, W + T / 2, mn + (b - mn) * 0.5, "cosine middle");
    int64_t k = iuni(0, T);
    expect(&s, W + k, mn + (b - mn) * 0.5 * (1.0 + cos(M_PI * (double)k / (double)T)), "cosine");
    expect(&s, E, mn, "cosine end");
    expect(&s, E + 17, mn, "cosine past the end");
    check_decreasing(&s, "cosine");

    s.kind = NG_SCHED_POLY;
    check_warmup(&s, "poly");
    expect(&s, W, b, "poly");
    expect(&s, W + T / 2, mn + (b - mn) * pow(0.5, s.power), "poly middle");
    expect(&s, W + k, mn + (b - mn) * pow(1.0 - (double)k / (double)T, s.power), "poly");
    expect(&s, E, mn, "poly end");
    expect(&s, E + 17, mn, "poly past the end");
    check_decreasing(&s, "poly");
    ng_schedule sq = s; /* Osawa et al.'s power 2, a closed form without pow */
    sq.power = 2.0;
    double f = 1.0 - (double)k / (double)T;
    expect(&sq, W + k, mn + (b - mn) * f * f, "poly power 2");

    s.kind = NG_SCHED_STEP;
    int64_t z = s.step_size;
    check_warmup(&s, "step");
    expect(&s, W, b, "step");
    expect(&s, W + z - 1, b, "step before the first decay");
    expect(&s, W + z, b * s.gamma, "step first decay");
    expect(&s, W + 3 * z + z / 2, b * pow(s.gamma, 3), "step third decay");
    check_decreasing(&s, "step");

    /* No warmup: step 0 is already base_lr. */
    s.warmup_steps = 0;
    s.kind = NG_SCHED_COSINE;
    expect(&s, 0, b, "cosine without warmup");
    s.kind = NG_SCHED_CONSTANT;
    expect(&s, 0, b, "constant without warmup");
}

static void check_names_and_errors(void) {
    NG_TEST(ng_schedule_kind_from_name("constant") == NG_SCHED_CONSTANT &&
                ng_schedule_kind_from_name("cosine") == NG_SCHED_COSINE &&
                ng_schedule_kind_from_name("poly") == NG_SCHED_POLY &&
                ng_schedule_kind_from_name("step") == NG_SCHED_STEP,
            "schedule names do not map to their kinds");
    NG_TEST(ng_schedule_kind_from_name("linear") == -1 && ng_schedule_kind_from_name("") == -1 &&
                ng_schedule_kind_from_name("Cosine") == -1 &&
                ng_schedule_kind_from_name(NULL) == -1,
            "an unknown schedule name is not -1");

    ng_schedule good = random_schedule(NG_SCHED_COSINE, 0), s;
    s = good;
    s.kind = (ng_sched_kind)-1; /* what an unchecked kind_from_name would hand over */
    NG_TEST_ERROR(ng_schedule_lr(&s, 0), "schedule.name");
    s = good;
    s.base_lr = -0.1;
    NG_TEST_ERROR(ng_schedule_lr(&s, 0), "schedule.base_lr");
    s = good;
    s.warmup_steps = -1;
    NG_TEST_ERROR(ng_schedule_lr(&s, 0), "schedule.warmup_steps");
    s = good;
    s.total_steps = s.warmup_steps - 1;
    NG_TEST_ERROR(ng_schedule_lr(&s, 0), "schedule.total_steps");
    s = good;
    s.min_lr = NAN;
    NG_TEST_ERROR(ng_schedule_check(&s), "schedule.min_lr");
    s = good;
    s.kind = NG_SCHED_POLY;
    s.power = -1;
    NG_TEST_ERROR(ng_schedule_check(&s), "schedule.power");
    s = good;
    s.kind = NG_SCHED_STEP;
    s.step_size = 0;
    NG_TEST_ERROR(ng_schedule_check(&s), "schedule.step_size");
    NG_TEST_ERROR(ng_schedule_lr(&good, -1), "step");
}

int main(void) {
    ng_test_seed();
    for (int rep = 0; rep < 20; rep++) check_kinds(rep & 1);
    check_names_and_errors();
    return ng_test_finish("test_schedule");
}
