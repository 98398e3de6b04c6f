/* The f16 evaluation forward of a convolution in native fp16 arithmetic (core/hgemm.h), on a CPU
 * that has it: per sample and chunk of output positions, im2col into [K, np] columns (K = C
 * prod(kernel) rows in the weights' (c, kd, kh, kw) order, positions contiguous: the row-major B
 * ng_hgemm reads), then y_n[:, p0 : p0 + np] = W [O, K] cols written in place (ldc = P). The
 * bias is the caller's, added as on the f32-arithmetic path. Chunks hold the columns to 16 MiB
 * whatever the image size (a 3x3 conv of 512 channels at 64x64: 4608 x 4096 positions would be
 * 36 MiB a sample). */
#include "nn/conv_kernels.h"

#include "core/error.h"
#include "core/hgemm.h"
#include "core/threads.h"

#define COLS_CAP ((int64_t)8 << 20) /* fp16 elements */

int64_t ng_conv_hgemm_chunk(int64_t K, int64_t P) {
    int64_t np = K > 0 ? COLS_CAP / K : P;
    if (np < 1) np = 1;
    return np < P ? np : P;
}

static void im2col_kp(const ng_f16 *x, const ng_win3 *w, int64_t p0, int64_t np, ng_f16 *cols) {
    int64_t kk = ng_win3_k_size(w), K = w->C * kk, plane = ng_win3_in_size(w);
#pragma omp parallel for schedule(static) if (K * np >= NG_OMP_MIN)
    for (int64_t r = 0; r < K; r++) {
        int64_t c = r / kk, t = r % kk;
        int64_t kw = t % w->k[2], kh = t / w->k[2] % w->k[1], kd = t / (w->k[2] * w->k[1]);
        const ng_f16 *xc = x + c * plane;
        ng_f16 *o = cols + r * np;
        for (int64_t j = 0; j < np; j++) {
            int64_t p = p0 + j, ow = p % w->out[2], q = p / w->out[2];
            int64_t oh = q % w->out[1], od = q / w->out[1];
            int64_t id = od * w->s[0] - w->p[0] + kd * w->d[0];
            int64_t ih = oh * w->s[1] - w->p[1] + kh * w->d[1];
            int64_t iw = ow * w->s[2] - w->p[2] + kw * w->d[2];
            int in =
                id >= 0 && id < w->in[0] && ih >= 0 && ih < w->in[1] && iw >= 0 && iw < w->in[2];
            o[j] = in ? xc[(id * w->in[1] + ih) * w->in[2] + iw] : 0; /* +0: all zero bits */
        }
    }
}

void ng_conv_hgemm_forward(const ng_win3 *w, const ng_tensor *x, const ng_tensor *W, ng_tensor *y,
                           ng_arena *scratch) {
    NG_CHECK(x->dtype == NG_F16 && W->dtype == NG_F16 && y->dtype == NG_F16,
             "conv: fp16 arithmetic on %s with weights %s", ng_tensor_desc(x), ng_tensor_desc(W));
    int64_t N = x->shape[0], O = W->shape[0], K = w->C * ng_win3_k_size(w);
    int64_t P = ng_win3_out_size(w), np = ng_conv_hgemm_chunk(K, P);
    int64_t x_per = w->C * ng_win3_in_size(w);
    ng_arena_mark m = ng_arena_get_mark(scratch);
    ng_tensor cols = ng_arena_tensor(scratch, NG_F16, 2, (int64_t[]){K, np}, "conv columns f16");
    const ng_f16 *xs = x->data;
    ng_f16 *ys = y->data;
    for (int64_t n = 0; n < N; n++)
        for (int64_t p0 = 0; p0 < P; p0 += np) {
            int64_t nc = P - p0 < np ? P - p0 : np;
            im2col_kp(xs + n * x_per, w, p0, nc, cols.data);
            ng_hgemm(O, nc, K, W->data, K, cols.data, nc, NULL, ys + n * O * P + p0, P);
        }
    ng_arena_release(scratch, m);
}
