/* CUDA twin of the permute kernel behind attention's head split/merge and patchify. One thread
 * per output element (writes coalesced); the source is gathered by strides. In both uses the
 * innermost output dim is also contiguous in the source, so reads come in runs. */
#include "core/cuda_context.h"
#include "nn/vit_kernels.h"

namespace {

struct PermuteArgs {
    int nd;
    int64_t oshape[NG_VIT_PERMUTE_MAX_DIMS];  /* output shape */
    int64_t sstride[NG_VIT_PERMUTE_MAX_DIMS]; /* source stride of each output dim */
};

template <typename E>
__global__ void permute_kernel(const E *__restrict__ x, E *__restrict__ y, int64_t n,
                               PermuteArgs a) {
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < n;
         j += (int64_t)gridDim.x * blockDim.x) {
        int64_t rem = j, src = 0;
        for (int k = a.nd - 1; k >= 0; k--) {
            const int64_t c = rem % a.oshape[k];
            rem /= a.oshape[k];
            src += c * a.sstride[k];
        }
        y[j] = x[src];
    }
}

template <typename E>
void launch(const ng_tensor *x, ng_tensor *y, const PermuteArgs &a) {
    const int threads = 256;
    permute_kernel<E><<<ng_cuda_blocks(x->numel, threads), threads, 0, ng_cuda_ctx()->stream>>>(
        (const E *)x->data, (E *)y->data, x->numel, a);
    NG_CUDA_CHECK_LAUNCH();
}

} // namespace

extern "C" void ng_vit_permute_cuda(const ng_tensor *x, ng_tensor *y, int ndim,
                                    const int64_t *shape, const int *perm) {
    PermuteArgs a;
    int64_t istride[NG_VIT_PERMUTE_MAX_DIMS];
    a.nd = ndim;
    istride[ndim - 1] = 1;
    for (int k = ndim - 2; k >= 0; k--) istride[k] = istride[k + 1] * shape[k + 1];
    for (int k = 0; k < NG_VIT_PERMUTE_MAX_DIMS; k++) {
        a.oshape[k] = k < ndim ? shape[perm[k]] : 1;
        a.sstride[k] = k < ndim ? istride[perm[k]] : 0;
    }
    switch (ng_dtype_size(x->dtype)) {
        case 1:
            launch<unsigned char>(x, y, a);
            break;
        case 2:
            launch<unsigned short>(x, y, a);
            break;
        case 4:
            launch<unsigned int>(x, y, a);
            break;
        case 8:
            launch<unsigned long long>(x, y, a);
            break;
        default:
            ng_fail("ng_vit_permute_cuda: element size %zu", ng_dtype_size(x->dtype));
    }
}
