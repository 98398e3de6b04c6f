/* Losses: argument checks, the CPU twins (in double) and dispatch; the CUDA twins are in
 * loss_cuda.cu. */
#include "nn/loss.h"

#include <math.h>
#include <stdlib.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "core/ops.h"
#include "nn/activation_kernels.h"

static void bad_label(const ng_tensor *labels, int64_t row, int64_t label, int64_t classes) {
    ng_fail("ng_softmax_xent: label %lld at index %lld of '%s' is outside [0, %lld)",
            (long long)label, (long long)row, ng_tensor_name(labels), (long long)classes);
}

/* Row losses summed in double; dlogits (when not NULL) = (p - target) * grad_scale. */
static ng_xent_result cpu_xent(const ng_tensor *logits, const ng_tensor *labels, double eps,
                               ng_tensor *dlogits, double grad_scale) {
    int64_t n = logits->shape[0], c = logits->shape[1];
    const int32_t *lab = labels->data;
    ng_xent_result r = {.bad_row = -1};
    /* Labels first, so a bad one stops the call before anything is written. */
    for (int64_t i = 0; i < n; i++)
        if (lab[i] < 0 || lab[i] >= c) {
            r.bad_row = i;
            r.bad_label = lab[i];
            return r;
        }
    ng_dtype dt = logits->dtype;
    const void *z = logits->data;
    double off = eps / (double)c, on = 1.0 - eps;
    for (int64_t i = 0; i < n; i++) {
        int64_t o = i * c, arg = 0;
        double m = -INFINITY, s = 0, shifted = 0;
        for (int64_t j = 0; j < c; j++) {
            double v = ng_act_ld(z, dt, o + j);
            if (v > m) m = v, arg = j;
        }
        for (int64_t j = 0; j < c; j++) {
            double v = ng_act_ld(z, dt, o + j) - m;
            s += exp(v);
            shifted += v;
        }
        /* -sum_j t_j log p_j with log p_j = v_j - log s and sum_j t_j = 1. */
        double zy = ng_act_ld(z, dt, o + lab[i]) - m;
        r.loss_sum += log(s) - on * zy - off * shifted;
        r.correct += arg == lab[i];
        if (dlogits) {
            double inv = 1.0 / s;
            for (int64_t j = 0; j < c; j++) {
                double p = exp(ng_act_ld(z, dt, o + j) - m) * inv;
                double t = off + (j == lab[i] ? on : 0.0);
                ng_act_st(dlogits->data, dt, o + j, (p - t) * grad_scale);
            }
        }
    }
    return r;
}

static double cpu_mse(const ng_tensor *y, const ng_tensor *t, ng_tensor *dy, double grad_scale) {
    ng_dtype dt = y->dtype;
    double sum = 0;
    for (int64_t i = 0; i < y->numel; i++) {
        double d = ng_act_ld(y->data, dt, i) - ng_act_ld(t->data, dt, i);
        sum += d * d;
        if (dy) ng_act_st(dy->data, dt, i, 2.0 * d * grad_scale);
    }
    return sum;
}

static void need_like(const char *who, const ng_tensor *a, const ng_tensor *b) {
    NG_CHECK(a->dtype == b->dtype && a->device == b->device && ng_tensor_same_shape(a, b),
             "%s: '%s' is %s but '%s' is %s: dtype, device and shape must match", who,
             ng_tensor_name(a), ng_tensor_desc(a), ng_tensor_name(b), ng_tensor_desc(b));
}

double ng_softmax_xent(const ng_tensor *logits, const ng_tensor *labels, double eps,
                       ng_tensor *dlogits, int64_t *correct) {
    return ng_softmax_xent_scaled(logits, labels, eps, 1.0, dlogits, correct);
}

double ng_softmax_xent_scaled(const ng_tensor *logits, const ng_tensor *labels, double eps,
                              double grad_scale, ng_tensor *dlogits, int64_t *correct) {
    const char *who = "ng_softmax_xent";
    NG_CHECK(ng_dtype_is_float(logits->dtype) && logits->ndim == 2 && logits->numel > 0,
             "%s: logits '%s' is %s; a non-empty floating [N, C] tensor is needed", who,
             ng_tensor_name(logits), ng_tensor_desc(logits));
    int64_t n = logits->shape[0];
    NG_CHECK(labels->dtype == NG_I32 && labels->numel == n && labels->device == logits->device,
             "%s: labels '%s' is %s; i32 [%lld] on the device of logits '%s' %s is needed", who,
             ng_tensor_name(labels), ng_tensor_desc(labels), (long long)n, ng_tensor_name(logits),
             ng_tensor_desc(logits));
    NG_CHECK(eps >= 0 && eps <= 1, "%s: label smoothing %g is outside [0, 1]", who, eps);
    NG_CHECK(isfinite(grad_scale) && grad_scale > 0, "%s: gradient scale %g must be finite and > 0",
             who, grad_scale);
    if (dlogits) need_like(who, logits, dlogits);
    double scale = 1.0 / (double)n;
    ng_xent_result r = {.bad_row = -1};
    NG_DISPATCH(logits, r = cpu_xent(logits, labels, eps, dlogits, scale * grad_scale),
                r = ng_cuda_softmax_xent(logits, labels, eps, dlogits, scale * grad_scale));
    if (r.bad_row >= 0) bad_label(labels, r.bad_row, r.bad_label, logits->shape[1]);
    if (correct) *correct = r.correct;
    return r.loss_sum * scale;
}

double ng_mse(const ng_tensor *y, const ng_tensor *target, ng_tensor *dy) {
    NG_CHECK(ng_dtype_is_float(y->dtype) && y->numel > 0,
             "ng_mse: '%s' is %s; a non-empty floating tensor is needed", ng_tensor_name(y),
             ng_tensor_desc(y));
    need_like("ng_mse", y, target);
    if (dy) need_like("ng_mse", y, dy);
    double scale = 1.0 / (double)y->numel, sum = 0;
    NG_DISPATCH(y, sum = cpu_mse(y, target, dy, scale), sum = ng_cuda_mse(y, target, dy, scale));
    return sum * scale;
}

void ng_calibration_add(ng_calibration *c, const double *probs, const int32_t *labels, int64_t n,
                        int64_t classes) {
    for (int64_t i = 0; i < n; i++) {
        const double *p = probs + i * classes;
        int64_t arg = 0;
        for (int64_t j = 1; j < classes; j++)
            if (p[j] > p[arg]) arg = j;
        double conf = p[arg];
        int b = (int)ceil(conf * NG_ECE_BINS) - 1;
        b = b < 0 ? 0 : b >= NG_ECE_BINS ? NG_ECE_BINS - 1 : b;
        c->n[b]++;
        c->conf[b] += conf;
        c->correct[b] += arg == labels[i];
    }
}

double ng_calibration_ece(const ng_calibration *c) {
    int64_t total = 0;
    for (int b = 0; b < NG_ECE_BINS; b++) total += c->n[b];
    if (!total) return 0;
    double ece = 0;
    for (int b = 0; b < NG_ECE_BINS; b++)
        if (c->n[b]) ece += fabs(c->correct[b] - c->conf[b]) / (double)total;
    return ece;
}

void ng_softmax_probs(const ng_tensor *logits, double *probs) {
    NG_CHECK(logits->ndim == 2, "%s: softmax rows need [N, C] logits, not %s",
             ng_tensor_name(logits), ng_tensor_desc(logits));
    int64_t n = logits->shape[0], classes = logits->shape[1];
    ng_tensor host = ng_tensor_wrap(probs, NG_F64, NG_CPU, 2, logits->shape, "softmax rows");
    if (logits->device == NG_CPU) {
        ng_cast(&host, logits);
    } else {
        ng_tensor h = ng_tensor_to(logits, NG_CPU, "logits on the host");
        ng_cast(&host, &h);
        ng_tensor_free(&h);
    }
    for (int64_t i = 0; i < n; i++) {
        double *p = probs + i * classes, top = p[0], s = 0;
        for (int64_t j = 1; j < classes; j++) top = fmax(top, p[j]);
        for (int64_t j = 0; j < classes; j++) s += (p[j] = exp(p[j] - top));
        for (int64_t j = 0; j < classes; j++) p[j] /= s;
    }
}

size_t ng_xent_cuda_workspace(int64_t rows, size_t *loss_off, size_t *flag_off) {
    size_t loss = (sizeof(ng_xent_result) + 255) / 256 * 256;
    size_t flag = loss + (sizeof(double) * (size_t)rows + 255) / 256 * 256;
    if (loss_off) *loss_off = loss;
    if (flag_off) *flag_off = flag;
    return flag + sizeof(int) * (size_t)rows;
}
