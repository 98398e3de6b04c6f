/* CUDA twin of the block copy used by the patch embedding (tokens and class token into the
 * sequence, token gradients out of it) and by class pooling. A plain kernel rather than
 * cudaMemcpy2DAsync because a source stride of 0 (one run repeated) must work. */
#include "core/cuda_context.h"
#include "nn/vit_kernels.h"

namespace {

template <typename E>
__global__ void copy_blocks_kernel(E *__restrict__ dst, int64_t dst_stride,
                                   const E *__restrict__ src, int64_t src_stride, int64_t nblocks,
                                   int64_t len) {
    const int64_t n = nblocks * len;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t b = i / len, e = i - b * len;
        dst[b * dst_stride + e] = src[b * src_stride + e];
    }
}

template <typename E>
void launch(ng_tensor *dst, int64_t dst_off, int64_t dst_stride, const ng_tensor *src,
            int64_t src_off, int64_t src_stride, int64_t nblocks, int64_t len) {
    const int threads = 256;
    copy_blocks_kernel<E>
        <<<ng_cuda_blocks(nblocks * len, threads), threads, 0, ng_cuda_ctx()->stream>>>(
            (E *)dst->data + dst_off, dst_stride, (const E *)src->data + src_off, src_stride,
            nblocks, len);
    NG_CUDA_CHECK_LAUNCH();
}

} // namespace

extern "C" void ng_vit_copy_blocks_cuda(ng_tensor *dst, int64_t dst_off, int64_t dst_stride,
                                        const ng_tensor *src, int64_t src_off, int64_t src_stride,
                                        int64_t nblocks, int64_t len) {
    switch (ng_dtype_size(dst->dtype)) {
        case 1:
            launch<unsigned char>(dst, dst_off, dst_stride, src, src_off, src_stride, nblocks, len);
            break;
        case 2:
            launch<unsigned short>(dst, dst_off, dst_stride, src, src_off, src_stride, nblocks,
                                   len);
            break;
        case 4:
            launch<unsigned int>(dst, dst_off, dst_stride, src, src_off, src_stride, nblocks, len);
            break;
        case 8:
            launch<unsigned long long>(dst, dst_off, dst_stride, src, src_off, src_stride, nblocks,
                                       len);
            break;
        default:
            ng_fail("ng_vit_copy_blocks_cuda: element size %zu", ng_dtype_size(dst->dtype));
    }
}
