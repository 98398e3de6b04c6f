/* Losses on a model's output: softmax cross-entropy with label smoothing (classification) and
 * mean squared error. Functions, not layers: they return the loss and write its gradient. */
#ifndef NG_LOSS_H
#define NG_LOSS_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Softmax cross-entropy averaged over the N rows of logits [N, C], labels i32 [N] on the logits'
 * device, with label smoothing eps: the target is (1-eps) one-hot + eps/C, as
 * torch.nn.CrossEntropyLoss(label_smoothing=eps). Returns the mean loss; writes
 * dlogits = d(mean loss)/d logits (logits' shape and dtype) when dlogits is not NULL; writes the
 * number of rows whose argmax (the first, on ties) equals the label into *correct when correct is
 * not NULL. A label outside [0, C) is a usage error naming the tensor and the index.
 * Synchronises with the device. */
double ng_softmax_xent(const ng_tensor *logits, const ng_tensor *labels, double eps,
                       ng_tensor *dlogits, int64_t *correct);

/* ng_softmax_xent with dlogits multiplied by grad_scale (the loss scale of mixed precision):
 * the product is formed in double and rounded once into dlogits' dtype, so an f16 dlogits holds
 * scale * gradient without a separate scaled copy. The returned loss is not scaled. */
double ng_softmax_xent_scaled(const ng_tensor *logits, const ng_tensor *labels, double eps,
                              double grad_scale, ng_tensor *dlogits, int64_t *correct);

/* Mean squared error mean((y - target)^2) over all elements; dy = d/dy (y's shape and dtype) when
 * dy is not NULL. Synchronises with the device. */
double ng_mse(const ng_tensor *y, const ng_tensor *target, ng_tensor *dy);

/* Expected calibration error (Guo et al. 2017; Naeini et al. 2015) over 15 equal-width confidence
 * bins: a prediction's confidence is its largest class probability, bin b holds the confidences
 * in (b/15, (b+1)/15] (bin 0 also 0), and ECE = sum_b |B_b|/n |acc(B_b) - conf(B_b)|, acc the
 * share of B_b whose argmax (the first, on ties) is the label, conf its mean confidence. Rows are
 * added batch by batch; the sums are kept in double. */
#define NG_ECE_BINS 15
typedef struct {
    int64_t n[NG_ECE_BINS];
    double conf[NG_ECE_BINS], correct[NG_ECE_BINS];
} ng_calibration;

/* Adds n rows of class probabilities probs [n, classes] (host, row-major) with labels (host). */
void ng_calibration_add(ng_calibration *c, const double *probs, const int32_t *labels, int64_t n,
                        int64_t classes);
/* The ECE of the rows added so far (0 with none). */
double ng_calibration_ece(const ng_calibration *c);
/* probs [N, C] on the host = softmax of the rows of logits [N, C] (any device and float dtype),
 * each computed in double from a shifted exponent. */
void ng_softmax_probs(const ng_tensor *logits, double *probs);

/* The CUDA cross-entropy's request of the shared CUDA workspace for `rows` rows, which the
 * memory plan counts too: [its result][a double loss per row][an int flag per row], pieces
 * 256-byte aligned; *loss_off and *flag_off (either may be NULL) get the offsets. */
size_t ng_xent_cuda_workspace(int64_t rows, size_t *loss_off, size_t *flag_off);

#ifdef __cplusplus
}
#endif
#endif
