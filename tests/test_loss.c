/* Softmax cross-entropy (label smoothing) and MSE on the CPU: values against f64 loops, gradients
 * against finite differences, the argmax count, and errors for bad labels and tensors. */
#include <math.h>
#include <stdlib.h>

#include "nn/loss.h"
#include "testing.h"

/* Mean smoothed cross-entropy by plain loops: -sum_j t_j log p_j with log p from a shifted
 * log-sum-exp. Also the gradient (p - t)/N and the first-argmax hit count. */
static double xent_ref(const double *z, const int32_t *lab, int64_t n, int64_t c, double eps,
                       double *grad, int64_t *correct) {
    double total = 0;
    *correct = 0;
    for (int64_t i = 0; i < n; i++) {
        const double *zr = z + i * c;
        int64_t arg = 0;
        for (int64_t j = 1; j < c; j++)
            if (zr[j] > zr[arg]) arg = j;
        double s = 0;
        for (int64_t j = 0; j < c; j++) s += exp(zr[j] - zr[arg]);
        double lse = zr[arg] + log(s);
        for (int64_t j = 0; j < c; j++) {
            double t = eps / c + (j == lab[i] ? 1 - eps : 0);
            total -= t * (zr[j] - lse);
            grad[i * c + j] = (exp(zr[j] - lse) - t) / n;
        }
        *correct += arg == lab[i];
    }
    return total / n;
}

/* Labels: even rows the row's argmax (a hit), odd rows random (mostly misses), row 1 a sure
 * miss, so the count has both kinds to get right. */
static void make_labels(const double *z, int64_t n, int64_t c, int32_t *lab) {
    for (int64_t i = 0; i < n; i++) {
        int64_t arg = 0;
        for (int64_t j = 1; j < c; j++)
            if (z[i * c + j] > z[i * c + arg]) arg = j;
        int64_t r = (int64_t)((ng_test_uniform() + 1) * 0.5 * c) % c;
        lab[i] = (int32_t)(i % 2 == 0 ? arg : i == 1 ? (arg + 1) % c : r);
    }
}

static void test_xent(ng_dtype dt, int64_t n, int64_t c, double eps) {
    char label[160];
    ng_tensor z = ng_tensor_2d(dt, NG_CPU, n, c, "logits");
    ng_tensor dz = ng_tensor_2d(dt, NG_CPU, n, c, "dlogits");
    ng_tensor lab = ng_tensor_1d(NG_I32, NG_CPU, n, "labels");
    ng_test_fill_uniform(&z, -4, 4);
    double *zs = ng_test_to_f64(&z);
    make_labels(zs, n, c, lab.data);
    double *ge = malloc(sizeof(double) * (size_t)(n * c));
    int64_t ce, cg = -1;
    double le = xent_ref(zs, lab.data, n, c, eps, ge, &ce);

    ng_test_poison(&dz);
    double lg = ng_softmax_xent(&z, &lab, eps, &dz, &cg);
    /* The twin computes in double from the same inputs: only summation order and
     * log(s) - z_y vs z - lse differ, a few ulps of terms of size ~log C + 4. dlogits: p - t
     * carries a few ulps of p (<= 1) absolute, hence atol; f32 adds its store's half ulp. */
    snprintf(label, sizeof label, "xent %s [%lld,%lld] eps %g: loss vs f64 loop", ng_dtype_name(dt),
             (long long)n, (long long)c, eps);
    ng_test_close(label, &le, &lg, 1, 1e-13, 0);
    NG_TEST(cg == ce, "xent %s: correct = %lld, expected %lld", ng_dtype_name(dt), (long long)cg,
            (long long)ce);
    double *gg = ng_test_to_f64(&dz);
    snprintf(label, sizeof label, "xent %s eps %g: dlogits vs f64 loop", ng_dtype_name(dt), eps);
    ng_test_close(label, ge, gg, n * c, dt == NG_F64 ? 1e-13 : ldexp(1.0, -24) * 1.01, 1e-15);

    /* Without dlogits and correct: the same loss. */
    double l2 = ng_softmax_xent(&z, &lab, eps, NULL, NULL);
    NG_TEST(l2 == lg, "xent without outputs gives the same loss: %.17g vs %.17g", l2, lg);

    if (dt == NG_F64) {
        /* Every logit perturbed: central differences of the loss itself. The loss is smooth with
         * third derivatives O(1/N), so the truncation is ~h^2/N; roundoff ~ 1e-16 |L| / h. */
        const double h = 1e-5;
        double *zv = z.data, worst = 0;
        int64_t bad = 0;
        for (int64_t k = 0; k < n * c; k++) {
            double keep = zv[k];
            zv[k] = keep + h;
            double lp = ng_softmax_xent(&z, &lab, eps, NULL, NULL);
            zv[k] = keep - h;
            double lm = ng_softmax_xent(&z, &lab, eps, NULL, NULL);
            zv[k] = keep;
            double fd = (lp - lm) / (2 * h), err = fabs(fd - gg[k]);
            worst = fmax(worst, err);
            if (err > 1e-9) {
                if (bad++ < 5)
                    ng_test_fail("xent eps %g: d/d logits[%lld]: finite difference %.12g, "
                                 "dlogits %.12g",
                                 eps, (long long)k, fd, gg[k]);
            }
        }
        NG_TEST(bad == 0, "xent eps %g: dlogits match finite differences (worst %g)", eps, worst);
    }
    free(zs), free(ge), free(gg);
    ng_tensor_free(&z);
    ng_tensor_free(&dz);
    ng_tensor_free(&lab);
}

/* torch.nn.CrossEntropyLoss(label_smoothing=0.1)(tensor([[1., 2., 3.]]), tensor([0])) is
 * log(e + e^2 + e^3) - 0.9 * 1 - 0.1 * (1 + 2 + 3) / 3; without smoothing, lse - 1. */
static void test_xent_known(void) {
    double v[3] = {1, 2, 3};
    int32_t y = 0;
    ng_tensor z = ng_tensor_wrap(v, NG_F64, NG_CPU, 2, (int64_t[]){1, 3}, "logits");
    ng_tensor lab = ng_tensor_wrap(&y, NG_I32, NG_CPU, 1, (int64_t[]){1}, "labels");
    double e[2] = {2.30760596444438, 2.40760596444438};
    double g[2] = {ng_softmax_xent(&z, &lab, 0.1, NULL, NULL),
                   ng_softmax_xent(&z, &lab, 0, NULL, NULL)};
    ng_test_close("xent of [1,2,3], label 0, eps 0.1 and 0 (PyTorch's values)", e, g, 2, 1e-14, 0);

    /* Ties: the first maximum is the argmax, as torch.argmax. */
    double t[8] = {2, 5, 5, 1, 3, 3, 3, 0};
    int32_t yt[2] = {1, 0};
    ng_tensor zt = ng_tensor_wrap(t, NG_F64, NG_CPU, 2, (int64_t[]){2, 4}, "logits");
    ng_tensor lt = ng_tensor_wrap(yt, NG_I32, NG_CPU, 1, (int64_t[]){2}, "labels");
    int64_t correct = -1;
    ng_softmax_xent(&zt, &lt, 0, NULL, &correct);
    NG_TEST(correct == 2, "xent with tied maxima: the first argmax is the one counted: %lld",
            (long long)correct);
}

static void test_xent_errors(void) {
    int64_t n = 6, c = 5;
    ng_tensor z = ng_tensor_2d(NG_F32, NG_CPU, n, c, "logits");
    ng_tensor lab = ng_tensor_1d(NG_I32, NG_CPU, n, "labels");
    ng_test_fill_uniform(&z, -1, 1);
    int32_t *l = lab.data;
    for (int64_t i = 0; i < n; i++) l[i] = (int32_t)(i % c);
    l[3] = (int32_t)c;
    NG_TEST_ERROR(ng_softmax_xent(&z, &lab, 0, NULL, NULL), "index 3 of 'labels'");
    l[3] = 0;
    l[0] = -1;
    NG_TEST_ERROR(ng_softmax_xent(&z, &lab, 0, NULL, NULL), "index 0 of 'labels'");
    l[0] = 0;
    ng_tensor lf = ng_tensor_1d(NG_F32, NG_CPU, n, "float_labels");
    NG_TEST_ERROR(ng_softmax_xent(&z, &lf, 0, NULL, NULL), "float_labels");
    ng_tensor short_lab = ng_tensor_view(&lab, 0, 1, (int64_t[]){n - 1}, "short_labels");
    NG_TEST_ERROR(ng_softmax_xent(&z, &short_lab, 0, NULL, NULL), "short_labels");
    ng_tensor dz = ng_tensor_2d(NG_F32, NG_CPU, n, c + 1, "dlogits");
    NG_TEST_ERROR(ng_softmax_xent(&z, &lab, 0, &dz, NULL), "dlogits");
    NG_TEST_ERROR(ng_softmax_xent(&z, &lab, 1.5, NULL, NULL), "smoothing");
    ng_tensor z3 = ng_tensor_3d(NG_F32, NG_CPU, 2, 3, c, "logits3d");
    NG_TEST_ERROR(ng_softmax_xent(&z3, &lab, 0, NULL, NULL), "logits3d");
    ng_tensor_free(&z);
    ng_tensor_free(&lab);
    ng_tensor_free(&lf);
    ng_tensor_free(&dz);
    ng_tensor_free(&z3);
}

static void test_mse(ng_dtype dt) {
    char label[128];
    int64_t shape[3] = {4, 3, 7}, n = 84;
    ng_tensor y = ng_tensor_new(dt, NG_CPU, 3, shape, "y");
    ng_tensor t = ng_tensor_new(dt, NG_CPU, 3, shape, "target");
    ng_tensor dy = ng_tensor_new(dt, NG_CPU, 3, shape, "dy");
    ng_test_fill_uniform(&y, -2, 2);
    ng_test_fill_uniform(&t, -2, 2);
    ng_test_poison(&dy);
    double *ys = ng_test_to_f64(&y), *ts = ng_test_to_f64(&t);
    double *ge = malloc(sizeof(double) * (size_t)n), le = 0;
    for (int64_t i = 0; i < n; i++) {
        le += (ys[i] - ts[i]) * (ys[i] - ts[i]);
        ge[i] = 2 * (ys[i] - ts[i]) / n;
    }
    le /= n;
    double lg = ng_mse(&y, &t, &dy);
    snprintf(label, sizeof label, "mse %s: loss vs f64 loop", ng_dtype_name(dt));
    ng_test_close(label, &le, &lg, 1, 1e-14, 0);
    double *gg = ng_test_to_f64(&dy);
    snprintf(label, sizeof label, "mse %s: dy vs f64 loop", ng_dtype_name(dt));
    ng_test_close(label, ge, gg, n, dt == NG_F64 ? 2.3e-16 : ldexp(1.0, -24) * 1.01, 0);
    double l2 = ng_mse(&y, &t, NULL);
    NG_TEST(l2 == lg, "mse without dy gives the same loss");
    if (dt == NG_F64) {
        /* Quadratic: central differences are exact but for roundoff ~ 1e-16 |L| / h. */
        const double h = 1e-4;
        double *yv = y.data;
        int64_t bad = 0;
        for (int64_t k = 0; k < n; k++) {
            double keep = yv[k];
            yv[k] = keep + h;
            double lp = ng_mse(&y, &t, NULL);
            yv[k] = keep - h;
            double lm = ng_mse(&y, &t, NULL);
            yv[k] = keep;
            double fd = (lp - lm) / (2 * h);
            if (fabs(fd - gg[k]) > 1e-10 && bad++ < 5)
                ng_test_fail("mse: d/dy[%lld]: finite difference %.12g, dy %.12g", (long long)k, fd,
                             gg[k]);
        }
        NG_TEST(bad == 0, "mse: dy matches finite differences");
    }
    ng_tensor t2 = ng_tensor_2d(dt, NG_CPU, 4, 21, "target_2d");
    NG_TEST_ERROR(ng_mse(&y, &t2, NULL), "target_2d");
    ng_tensor dyb = ng_tensor_2d(dt, NG_CPU, 4, 21, "dy_2d");
    NG_TEST_ERROR(ng_mse(&y, &t, &dyb), "dy_2d");
    free(ys), free(ts), free(ge), free(gg);
    ng_tensor_free(&y);
    ng_tensor_free(&t);
    ng_tensor_free(&dy);
    ng_tensor_free(&t2);
    ng_tensor_free(&dyb);
}

/* ECE by hand: five rows, two of them in one bin (13: (0.8667, 0.9333]):
 * bin 13: conf 0.9 (right) and 0.88 (wrong): |1 - 1.78| = 0.78; bin 12: 0.85 wrong: 0.85;
 * bin 9: 0.62 right: 0.38; bin 10: 0.7 right: 0.3. ECE = (0.78 + 0.85 + 0.38 + 0.3) / 5 = 0.462.
 * Then softmax rows of [0, log 3, log 2] and [0, log 2, 0]. */
static void test_ece(void) {
    double p[] = {0.9, 0.1, 0.15, 0.85, 0.38, 0.62, 0.3, 0.7, 0.12, 0.88};
    int32_t lab[] = {0, 0, 1, 1, 0};
    ng_calibration c = {0};
    NG_TEST(ng_calibration_ece(&c) == 0, "ece: 0 with no rows");
    ng_calibration_add(&c, p, lab, 3, 2);
    ng_calibration_add(&c, p + 6, lab + 3, 2, 2);
    NG_TEST(c.n[13] == 2 && c.n[12] == 1 && c.n[9] == 1 && c.n[10] == 1, "ece: the bins");
    double e = ng_calibration_ece(&c);
    NG_TEST(fabs(e - 0.462) < 1e-12, "ece: %.15g, by hand 0.462", e);
    ng_calibration one = {0};
    ng_calibration_add(&one, (double[]){1.0, 0.0}, (int32_t[]){0}, 1, 2);
    ng_calibration_add(&one, (double[]){0.5, 0.5}, (int32_t[]){1}, 1, 2); /* tie: argmax 0 */
    NG_TEST(one.n[14] == 1 && one.n[7] == 1 && fabs(ng_calibration_ece(&one) - 0.25) < 1e-15,
            "ece: confidence 1 in the last bin, ties to the first class");
    float z[] = {0.0f, (float)log(3.0), (float)log(2.0), 0.0f, (float)log(2.0), 0.0f};
    ng_tensor logits = ng_tensor_wrap(z, NG_F32, NG_CPU, 2, (int64_t[]){2, 3}, "logits");
    double pr[6];
    ng_softmax_probs(&logits, pr);
    double want[] = {1.0 / 6, 0.5, 1.0 / 3, 0.25, 0.5, 0.25};
    int bad = 0;
    for (int i = 0; i < 6; i++) bad += fabs(pr[i] - want[i]) > 1e-6;
    NG_TEST(bad == 0, "softmax probs: %g %g %g / %g %g %g", pr[0], pr[1], pr[2], pr[3], pr[4],
            pr[5]);
}

int main(void) {
    test_ece();
    test_xent(NG_F64, 6, 7, 0);
    test_xent(NG_F64, 6, 7, 0.1);
    test_xent(NG_F64, 9, 2, 0.3);
    test_xent(NG_F32, 33, 10, 0.1);
    test_xent(NG_F64, 17, 100, 0.1);
    test_xent_known();
    test_xent_errors();
    test_mse(NG_F64);
    test_mse(NG_F32);
    return ng_test_finish("test_loss");
}
