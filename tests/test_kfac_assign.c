/* K-FAC's inverse-work plan: every layer gets exactly one owner, the plan is the same whatever
 * order the costs come in (up to the ties rule), and the largest load stays within Graham's LPT
 * bound of the best assignment, which brute force finds for small cases. */
#include <math.h>
#include <stdlib.h>

#include "optim/kfac_assign.h"
#include "testing.h"

/* The best possible largest load, by trying every assignment (n <= 9, world <= 3). */
static double brute(const double *cost, int n, int world) {
    double best = INFINITY;
    int64_t total = 1;
    for (int i = 0; i < n; i++) total *= world;
    for (int64_t code = 0; code < total; code++) {
        double load[3] = {0, 0, 0};
        int64_t c = code;
        for (int i = 0; i < n; i++, c /= world) load[c % world] += cost[i];
        double m = 0;
        for (int r = 0; r < world; r++) m = fmax(m, load[r]);
        best = fmin(best, m);
    }
    return best;
}

int main(void) {
    ng_test_seed();
    int owner[64];
    for (int trial = 0; trial < 300; trial++) {
        int n = 1 + (int)((ng_test_uniform() + 1) * 4.5), world = 1 + trial % 3;
        double cost[16];
        for (int i = 0; i < n; i++) {
            int64_t da = 1 + (int64_t)((ng_test_uniform() + 1) * 400);
            int64_t out = 1 + (int64_t)((ng_test_uniform() + 1) * 400);
            cost[i] = ng_kfac_layer_cost(da, out);
        }
        double worst = ng_kfac_assign_lpt(cost, n, world, owner);
        double load[3] = {0, 0, 0};
        int ok = 1;
        for (int i = 0; i < n; i++) {
            ok &= owner[i] >= 0 && owner[i] < world;
            if (ok) load[owner[i]] += cost[i];
        }
        NG_TEST(ok, "trial %d: every owner in [0, %d)", trial, world);
        double m = fmax(load[0], fmax(load[1], load[2]));
        NG_TEST(m == worst, "trial %d: the returned load %g is the plan's largest %g", trial, worst,
                m);
        double opt = brute(cost, n, world), bound = (4.0 / 3.0 - 1.0 / (3.0 * world)) * opt;
        NG_TEST(worst <= bound * (1 + 1e-12), "trial %d (n %d, world %d): LPT load %g within %g",
                trial, n, world, worst, bound);
    }
    /* More ranks than layers: each layer alone on its own rank, the biggest on rank 0. */
    double c4[4] = {5, 50, 20, 1};
    ng_kfac_assign_lpt(c4, 4, 8, owner);
    NG_TEST(owner[1] == 0 && owner[2] == 1 && owner[0] == 2 && owner[3] == 3,
            "4 layers on 8 ranks: by decreasing cost to ranks 0..3, got %d %d %d %d", owner[0],
            owner[1], owner[2], owner[3]);
    /* Equal costs: the index breaks ties, so the plan is round-robin and identical everywhere. */
    double eq[6] = {7, 7, 7, 7, 7, 7};
    ng_kfac_assign_lpt(eq, 6, 4, owner);
    NG_TEST(owner[0] == 0 && owner[1] == 1 && owner[2] == 2 && owner[3] == 3 && owner[4] == 0 &&
                owner[5] == 1,
            "equal costs go round-robin");
    NG_TEST(ng_kfac_assign_lpt(NULL, 0, 3, owner) == 0, "no layers: load 0");
    NG_TEST_ERROR(ng_kfac_assign_lpt(eq, 6, 0, owner), "ranks");
    return ng_test_finish("test_kfac_assign");
}
