/* Internal to linear.c: the f32 and bf16 GEMMs of a Linear layer on oneDNN's matmul. bf16 where
 * the CPU has AVX512_BF16 (vdpbf16ps: exact products of bf16 pairs, summed in f32); f32 on
 * oneDNN's AVX-512 brgemm kernels, which ran the ViT's Linear shapes 1.9x faster than OpenBLAS
 * 0.3.21's (Haswell kernels on this AVX-512 CPU; docs/BENCHMARKS.md). It lives in nn (not in
 * core's ng_gemm) because it needs oneDNN's engine and primitive cache (nn/onednn.h) and the
 * memory plan (nn/plan.h), and core must not depend on nn.
 *
 * A layer keeps its primitives per row count and dtype (rows = the input's elements / in) in a
 * cache of ng_dnnl_slot slots. Scratch (the f32 destinations of y and dx, the f32 bias, the ones
 * column of the bias gradient, oneDNN's scratchpads) comes from the arena given, the gradient
 * arena, and ng_linear_onednn_plan takes the same bytes in the same order from the plan's counter.
 */
#ifndef NG_LINEAR_ONEDNN_H
#define NG_LINEAR_ONEDNN_H

#include <stdint.h>

#include "core/dtype.h"
#include "core/memory.h"
#include "nn/plan.h"

/* Whether the forward (backward 0) or the backward passes (backward 1: dW, db when bias, dx) of
 * a layer of in -> out features on `rows` rows in dt (f32 or bf16) run on oneDNN's brgemm kernels
 * (not a reference loop, nor its gemm-based matmul, whose sums split across threads); makes the
 * primitive descriptors on first use. For bf16 the caller checks ng_dnnl_bf16_native. */
int ng_linear_onednn_native(void **cache, ng_dtype dt, int64_t rows, int64_t in, int64_t out,
                            int bias, int backward);
/* 1 when this CPU's oneDNN runs an f32 Linear on brgemm (x86 with AVX-512: yes; Debian's oneDNN
 * 2.6 on aarch64: no, its f32 matmul is gemm-based), probed once; for tests and reports. */
int ng_linear_onednn_f32_here(void);

/* y [rows,out] = x [rows,in] W^T (W [out,in]) in dt, each element rounded once from its f32 sum
 * (bf16: to bf16); with b ([out], dt) then y = round(y + b) as the other paths add their bias. */
void ng_linear_onednn_forward(void **cache, ng_dtype dt, int64_t rows, int64_t in, int64_t out,
                              const void *x, const void *w, const void *b, void *y,
                              ng_arena *scratch);

/* dW [out,in] f32 += dy^T x; db [out] f32 += 1^T dy when db; dx [rows,in] = round(dy W) in dt when
 * dx. x, w, dy are dt. */
void ng_linear_onednn_backward(void **cache, ng_dtype dt, int64_t rows, int64_t in, int64_t out,
                               const void *x, const void *w, const void *dy, float *dw, float *db,
                               void *dx, ng_arena *scratch);

/* The scratch the forward or backward above takes, taken from the plan's gradient counter. */
void ng_linear_onednn_plan(void **cache, ng_dtype dt, int64_t rows, int64_t in, int64_t out,
                           int bias, int backward, int need_dx, ng_sim_arena *grads);

void ng_linear_onednn_free(void *cache);

#endif
