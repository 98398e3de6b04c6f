/* Losses on a model's output: softmax cross-entropy with label smoothing (classification) and
 * mean squared error. Functions, not layers: they return the loss and write its gradient. */
#ifndef NG_LOSS_H
#define NG_LOSS_H

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

#ifdef __cplusplus
}
#endif
#endif
