/* Batch normalisation over the channel dim of [N, C, spatial...] inputs, PyTorch semantics. */
#ifndef NG_BATCHNORM_H
#define NG_BATCHNORM_H

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* nd = 1 (input [N, C] or [N, C, L]), 2 ([N, C, H, W]) or 3 ([N, C, D, H, W]). Parameters
 * "<name>.weight" (starts at 1) and "<name>.bias" (starts at 0), both without weight decay.
 * Training: normalises by the batch mean and biased variance over N and the spatial dims, and
 * (unless ctx->recomputing) updates running = (1 - momentum) running + momentum batch, with
 * the unbiased variance. Eval: normalises by the running statistics. */
ng_layer *ng_batchnorm(const char *name, int nd, int64_t channels, double momentum, double eps);

/* relu(batchnorm(x)) as one layer, with the same parameters, buffers and values as a batch norm
 * followed by a ReLU (conv blocks use it). It needs less memory: no output when nothing reads it
 * (ctx->output_unused: its backward recomputes ReLU's mask from the input) and its output over
 * its input when no backward follows (ctx->forward_only with ctx->inplace). */
ng_layer *ng_batchnorm_relu(const char *name, int nd, int64_t channels, double momentum,
                            double eps);

/* The fused layer's last output (its ReLU's side of 0 is where it is > 0), or NULL when the layer
 * is not a batchnorm_relu or kept no output (ctx->output_unused). For tests that tell a switched
 * ReLU from rounding. */
const ng_tensor *ng_batchnorm_relu_output(const ng_layer *l);

/* Views [C] of the running mean and variance (buffers, not parameters), for checkpoints to
 * read or write. Before any forward they live on the CPU in f32, starting at 0 and 1; the
 * first forward moves them to the input's device and the parameters' dtype, keeping their
 * values, so views taken earlier are stale after that. */
void ng_batchnorm_running(const ng_layer *l, ng_tensor *mean, ng_tensor *var);

#ifdef __cplusplus
}
#endif
#endif
