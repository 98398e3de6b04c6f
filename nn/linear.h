/* Linear layer y = x W^T + b over the last dim of x (PyTorch layout: W [out, in]). Offers the
 * observer interface (K-FAC): its input x and output gradient dy, flattened to rows. */
#ifndef NG_LINEAR_H
#define NG_LINEAR_H

#include "nn/layer.h"

ng_layer *ng_linear(const char *name, int64_t in, int64_t out, int bias);
/* Shape facts for observers: in and out features, whether there is a bias. */
void ng_linear_dims(const ng_layer *l, int64_t *in, int64_t *out, int *bias);

#endif
