/* CPU twins of K-FAC's element-wise kernels (kfac_kernels.h) and their dispatch by device; the
 * CUDA twins are in kfac_cuda.cu and compute the same double-precision formulas. */
#include <string.h>

#include "core/dispatch.h"
#include "optim/kfac_kernels.h"

static double ld(const ng_tensor *t, int64_t i) {
    return t->dtype == NG_F64 ? ((const double *)t->data)[i] : (double)((const float *)t->data)[i];
}

static void st(ng_tensor *t, int64_t i, double v) {
    if (t->dtype == NG_F64)
        ((double *)t->data)[i] = v;
    else
        ((float *)t->data)[i] = (float)v;
}

static void fold_cpu(ng_tensor *F, const ng_tensor *S, const ng_tensor *s, double corner,
                     double keep, double w, int first) {
    int64_t K = S->shape[0], d = F->shape[0];
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            double v = i < K && j < K ? ld(S, i * K + j)
                       : i < K        ? ld(s, i)
                       : j < K        ? ld(s, j)
                                      : corner;
            st(F, i * d + j, first ? v : keep * ld(F, i * d + j) + w * v);
        }
}

static double clamp0(double x) {
    return x > 0 ? x : 0;
}

static void eig_divide_cpu(ng_tensor *T, const ng_tensor *dG, const ng_tensor *dA, int sum_mode,
                           double gG, double gA, double gamma) {
    int64_t m = T->shape[0], n = T->shape[1];
    for (int64_t i = 0; i < m; i++) {
        double g = clamp0(ld(dG, i));
        for (int64_t j = 0; j < n; j++) {
            double a = clamp0(ld(dA, j));
            double den = sum_mode ? g * a + gamma : (g + gG) * (a + gA);
            st(T, i * n + j, ld(T, i * n + j) / den);
        }
    }
}

static void diag_cpu(const ng_tensor *A, ng_tensor *d) {
    int64_t n = A->shape[0];
    for (int64_t i = 0; i < n; i++) st(d, i, ld(A, i * n + i));
}

static void copy2d_cpu(void *dst, int64_t dst_ld, const void *src, int64_t src_ld, int64_t rows,
                       int64_t cols, size_t es) {
    for (int64_t r = 0; r < rows; r++)
        memcpy((char *)dst + (size_t)(r * dst_ld) * es,
               (const char *)src + (size_t)(r * src_ld) * es, (size_t)cols * es);
}

void ng_kfac_fold(ng_tensor *F, const ng_tensor *S, const ng_tensor *s, double corner, double keep,
                  double w, int first) {
    NG_DISPATCH(F, fold_cpu(F, S, s, corner, keep, w, first),
                ng_kfac_fold_cuda(F, S, s, corner, keep, w, first));
}

void ng_kfac_eig_divide(ng_tensor *T, const ng_tensor *dG, const ng_tensor *dA, int sum_mode,
                        double gG, double gA, double gamma) {
    NG_DISPATCH(T, eig_divide_cpu(T, dG, dA, sum_mode, gG, gA, gamma),
                ng_kfac_eig_divide_cuda(T, dG, dA, sum_mode, gG, gA, gamma));
}

void ng_kfac_diag(const ng_tensor *A, ng_tensor *d) {
    NG_DISPATCH(A, diag_cpu(A, d), ng_kfac_diag_cuda(A, d));
}

void ng_kfac_copy2d(ng_device dev, void *dst, int64_t dst_ld, const void *src, int64_t src_ld,
                    int64_t rows, int64_t cols, size_t es) {
    ng_tensor where = {.device = dev};
    NG_DISPATCH(&where, copy2d_cpu(dst, dst_ld, src, src_ld, rows, cols, es),
                ng_kfac_copy2d_cuda(dst, dst_ld, src, src_ld, rows, cols, es));
}
