/* Softmax cross-entropy and MSE on CUDA against the CPU twin: loss value, gradient and argmax
 * count, at odd sizes; bad labels found on the device; repeated calls give the same bits. */
#include <math.h>
#include <stdlib.h>

#include "nn/loss.h"
#include "testing.h"

/* Each CUDA row sums C float terms in one warp: (C/32 + 5) ulps relative at worst, on log(s) and
 * on the smoothing term eps/C * sum(z - m) (|z - m| <= 8 here, so that term is <= 8 eps); a
 * row's loss is >= ~0.01 only rarely, so the mean is compared by its relative error with a
 * factor 4 margin over the two terms. The reduction over rows is in double. */
static double xent_tol(int64_t c, double eps) {
    return 4.0 * ((double)c / 32 + 5) * ldexp(1.0, -24) * (1 + 8 * eps);
}

static void check_xent(ng_dtype dt, int64_t n, int64_t c, double eps) {
    char label[160];
    ng_tensor z = ng_tensor_2d(dt, NG_CPU, n, c, "logits");
    ng_tensor lab = ng_tensor_1d(NG_I32, NG_CPU, n, "labels");
    ng_test_fill_uniform(&z, -4, 4);
    double *zs = ng_test_to_f64(&z);
    int32_t *l = lab.data;
    for (int64_t i = 0; i < n; i++) {
        /* Every third row labelled with its argmax, so the count is not just zero. */
        int64_t arg = 0;
        for (int64_t j = 1; j < c; j++)
            if (zs[i * c + j] > zs[i * c + arg]) arg = j;
        int64_t r = (int64_t)((ng_test_uniform() + 1) * 0.5 * c) % c;
        l[i] = (int32_t)(i % 3 == 0 ? arg : r);
    }
    if (n >= 2 && c >= 3) { /* row 1 ties at columns 1 and 2, labelled 1: a hit for the first */
        for (int64_t j = 0; j < c; j++) {
            double v = j == 1 || j == 2 ? 3.0 : 0.5;
            if (dt == NG_F64)
                ((double *)z.data)[c + j] = v;
            else
                ((float *)z.data)[c + j] = (float)v;
        }
        l[1] = 1;
    }
    ng_tensor dz = ng_tensor_2d(dt, NG_CPU, n, c, "dlogits");
    ng_test_poison(&dz);
    int64_t cc = -1, cg = -2;
    double lc = ng_softmax_xent(&z, &lab, eps, &dz, &cc);

    ng_tensor zg = ng_tensor_to(&z, NG_CUDA, "logits"), lg = ng_tensor_to(&lab, NG_CUDA, "labels");
    ng_tensor dzg = ng_tensor_2d(dt, NG_CUDA, n, c, "dlogits");
    ng_test_poison(&dzg);
    double lgv = ng_softmax_xent(&zg, &lg, eps, &dzg, &cg);
    double tol = dt == NG_F64 ? 1e-12 : xent_tol(c, eps);
    snprintf(label, sizeof label, "xent %s [%lld,%lld] eps %g: loss cuda vs cpu", ng_dtype_name(dt),
             (long long)n, (long long)c, eps);
    ng_test_close(label, &lc, &lgv, 1, tol, 0);
    NG_TEST(cc == cg, "xent %s [%lld,%lld]: correct cuda %lld vs cpu %lld", ng_dtype_name(dt),
            (long long)n, (long long)c, (long long)cg, (long long)cc);
    double *a = ng_test_to_f64(&dz), *b = ng_test_to_f64(&dzg);
    snprintf(label, sizeof label, "xent %s [%lld,%lld] eps %g: dlogits cuda vs cpu",
             ng_dtype_name(dt), (long long)n, (long long)c, eps);
    ng_test_rel_norm(label, a, b, n * c, tol);

    /* Deterministic: no atomics, so the same call gives the same bits; no outputs, same loss. */
    double again = ng_softmax_xent(&zg, &lg, eps, NULL, NULL);
    NG_TEST(again == lgv, "xent cuda is deterministic: %.17g vs %.17g", again, lgv);
    free(zs), free(a), free(b);
    ng_tensor_free(&z), ng_tensor_free(&lab), ng_tensor_free(&dz);
    ng_tensor_free(&zg), ng_tensor_free(&lg), ng_tensor_free(&dzg);
}

static void check_bad_labels(void) {
    int64_t n = 37, c = 11;
    ng_tensor z = ng_tensor_2d(NG_F32, NG_CUDA, n, c, "logits");
    ng_test_fill_uniform(&z, -1, 1);
    ng_tensor lab = ng_tensor_1d(NG_I32, NG_CPU, n, "labels");
    int32_t *l = lab.data;
    for (int64_t i = 0; i < n; i++) l[i] = (int32_t)(i % c);
    l[29] = (int32_t)c, l[31] = -3; /* the first bad one is reported */
    ng_tensor lg = ng_tensor_to(&lab, NG_CUDA, "labels");
    NG_TEST_ERROR(ng_softmax_xent(&z, &lg, 0.1, NULL, NULL), "index 29 of 'labels'");
    ng_tensor lh = ng_tensor_1d(NG_I32, NG_CPU, n, "host_labels");
    NG_TEST_ERROR(ng_softmax_xent(&z, &lh, 0.1, NULL, NULL), "host_labels");
    ng_tensor_free(&z), ng_tensor_free(&lab), ng_tensor_free(&lg), ng_tensor_free(&lh);
}

static void check_mse(ng_dtype dt, int ndim, const int64_t *shape) {
    char label[160];
    ng_tensor y = ng_tensor_new(dt, NG_CPU, ndim, shape, "y"),
              t = ng_tensor_new(dt, NG_CPU, ndim, shape, "target");
    ng_tensor dy = ng_tensor_new(dt, NG_CPU, ndim, shape, "dy");
    ng_test_fill_uniform(&y, -2, 2);
    ng_test_fill_uniform(&t, -2, 2);
    ng_test_poison(&dy);
    double lc = ng_mse(&y, &t, &dy);
    ng_tensor yg = ng_tensor_to(&y, NG_CUDA, "y"), tg = ng_tensor_to(&t, NG_CUDA, "target");
    ng_tensor dyg = ng_tensor_new(dt, NG_CUDA, ndim, shape, "dy");
    ng_test_poison(&dyg);
    double lg = ng_mse(&yg, &tg, &dyg);
    /* Both sum non-negative doubles, in different orders: n u relative at worst. */
    snprintf(label, sizeof label, "mse %s of %lld: loss cuda vs cpu", ng_dtype_name(dt),
             (long long)y.numel);
    ng_test_close(label, &lc, &lg, 1, (double)y.numel * ldexp(1.0, -53) + 1e-15, 0);
    /* dy = 2 (y - t) / n taken in double on both: the same bits. */
    double *a = ng_test_to_f64(&dy), *b = ng_test_to_f64(&dyg);
    snprintf(label, sizeof label, "mse %s of %lld: dy cuda vs cpu", ng_dtype_name(dt),
             (long long)y.numel);
    ng_test_close(label, a, b, y.numel, 0, 0);
    double again = ng_mse(&yg, &tg, NULL);
    NG_TEST(again == lg, "mse cuda is deterministic: %.17g vs %.17g", again, lg);
    free(a), free(b);
    ng_tensor_free(&y), ng_tensor_free(&t), ng_tensor_free(&dy);
    ng_tensor_free(&yg), ng_tensor_free(&tg), ng_tensor_free(&dyg);
}

int main(void) {
    ng_test_require_gpu("test_loss_gpu");
    check_xent(NG_F32, 3, 5, 0);
    check_xent(NG_F32, 257, 1000, 0.1);
    check_xent(NG_F32, 1031, 10, 0.1);
    check_xent(NG_F32, 5, 4099, 0.2);
    check_xent(NG_F64, 129, 37, 0.1);
    check_bad_labels();
    check_mse(NG_F32, 3, (int64_t[]){3, 5, 257});
    check_mse(NG_F32, 1, (int64_t[]){(1 << 20) + 3});
    check_mse(NG_F64, 2, (int64_t[]){17, 33});
    return ng_test_finish("test_loss_gpu");
}
