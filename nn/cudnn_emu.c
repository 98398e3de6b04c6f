/* cuDNN in the CUDA emulation build (core/cuda_emu.h): it takes no shape, so every convolution
 * on the emulated device runs the CUDA build's im2col path (the one it takes where cuDNN refuses
 * a shape or a type), and the plan counts that path. */
#include "nn/conv_kernels.h"

int ng_conv_cudnn_forward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                          const ng_tensor *w, ng_tensor *y) {
    (void)cache, (void)g, (void)x, (void)w, (void)y;
    return 0;
}

int ng_conv_cudnn_backward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                           const ng_tensor *w, const ng_tensor *dy, ng_tensor *dw, ng_tensor *dx) {
    (void)cache, (void)g, (void)x, (void)w, (void)dy, (void)dw, (void)dx;
    return 0;
}

int64_t ng_conv_cudnn_workspace(void **cache, const ng_conv_geom *g, int ndim, const int64_t *shape,
                                ng_dtype dt, int backward, int need_dx) {
    (void)cache, (void)g, (void)ndim, (void)shape, (void)dt, (void)backward, (void)need_dx;
    return -1;
}

void ng_conv_cudnn_free(void *cache) {
    (void)cache;
}
