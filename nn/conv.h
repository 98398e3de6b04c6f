/* N-d convolution (2-D images, 3-D voxel volumes) in PyTorch layout, and the im2col/vol2col
 * patch expansion it is built on, which K-FAC reuses to form its Kronecker factors. */
#ifndef NG_CONV_H
#define NG_CONV_H

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Input [N, C, (D,) H, W], weight "<name>.weight" [out, in, (kd,) kh, kw], bias "<name>.bias"
 * [out]. kernel has nd entries; stride, padding and dilation have nd entries or are NULL
 * (1, 0 and 1). Output size per dim: (in + 2 pad - dil (k - 1) - 1) / stride + 1, floored.
 * Weights and bias start Kaiming-uniform with fan_in = in * prod(kernel), PyTorch's default.
 * Offers the observer interface: input() gets the conv input [N, C, ...] during forward,
 * output_grad() the output gradient [N, out, ...] during backward. */
ng_layer *ng_conv(const char *name, int nd, int64_t in_ch, int64_t out_ch, const int64_t *kernel,
                  const int64_t *stride, const int64_t *padding, const int64_t *dilation, int bias);

/* Entries past nd are 1 (kernel, stride, dilation) and 0 (padding), so products over all three
 * are the products over the nd real ones. */
typedef struct {
    int nd;
    int64_t in_ch, out_ch, kernel[3], stride[3], padding[3], dilation[3];
    int bias;
} ng_conv_geom;

/* The geometry of a conv layer; fails when l is not one. */
ng_conv_geom ng_conv_geometry(const ng_layer *l);

/* Output spatial sizes for input spatial sizes `in` (nd entries); fails with `who` in the
 * message when the input is too small for the kernel. */
void ng_conv_out_spatial(const ng_conv_geom *g, const int64_t *in, int64_t *out, const char *who);

/* Patch expansion of sample n of x [N, C, spatial...] (C = g->in_ch) for the output positions
 * [p0, p0 + np), counted row-major over the output grid: cols [np, C * prod(kernel)] gets one
 * patch per row, columns ordered (c, kd, kh, kw) like the flattened weight, so that
 * W [out, C * prod(kernel)] times a row gives the output at that position. Positions of the
 * patch in the padding are 0. x and cols share dtype (f32/f64; CUDA also f16/bf16) and device. */
void ng_im2col(const ng_tensor *x, int64_t n, const ng_conv_geom *g, int64_t p0, int64_t np,
               ng_tensor *cols);

#ifdef __cplusplus
}
#endif
#endif
