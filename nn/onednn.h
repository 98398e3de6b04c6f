/* Internal to the CPU twins that run on oneDNN (conv_onednn.c, pool_onednn.c, linear_onednn.c):
 * the one engine and stream, the check macro, and running a primitive on natgrad's buffers.
 * Primitives are created with a user scratchpad, so their scratch comes from natgrad's gradient
 * arena and the memory plan predicts it. */
#ifndef NG_ONEDNN_H
#define NG_ONEDNN_H

#include <stddef.h>
#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "core/error.h"

/* A oneDNN call that fails is a library failure (as NG_CUDNN_CHECK): print and abort. */
#define NG_DNNL_CHECK(call)                                                                        \
    do {                                                                                           \
        dnnl_status_t ng_s_ = (call);                                                              \
        if (ng_s_ != dnnl_success)                                                                 \
            ng_lib_fail("oneDNN", __FILE__, __LINE__, #call, dnnl_status2str(ng_s_));              \
    } while (0)

/* The CPU engine and its stream, made on first use (after NG_THREADS is applied). */
dnnl_engine_t ng_dnnl_engine(void);
dnnl_stream_t ng_dnnl_stream(void);

/* An attribute asking for a user scratchpad; free with dnnl_primitive_attr_destroy. */
dnnl_primitive_attr_t ng_dnnl_user_scratchpad(void);

/* The scratchpad bytes a primitive descriptor asks for (0: none). */
size_t ng_dnnl_scratch_bytes(const_dnnl_primitive_desc_t pd);

/* Where a oneDNN pass takes its buffers: the gradient arena when running, the plan's counter when
 * planning (then nothing runs and every pointer is NULL), so one function both runs a pass and
 * plans it, and the plan cannot drift from the run. */
struct ng_arena;
struct ng_sim_arena;
typedef struct {
    struct ng_arena *arena;
    struct ng_sim_arena *sim;
} ng_dnnl_taker;
void *ng_dnnl_take(ng_dnnl_taker *t, size_t bytes); /* NULL for 0 bytes or when planning */
size_t ng_dnnl_mark(const ng_dnnl_taker *t);
void ng_dnnl_release(ng_dnnl_taker *t, size_t mark);

/* A plain (row-major, PyTorch-layout) f32 memory descriptor of ndim dims. */
dnnl_memory_desc_t ng_dnnl_plain_f32(int ndim, const int64_t *dims);
/* The same in data type t (f32 or bf16). */
dnnl_memory_desc_t ng_dnnl_plain(int ndim, const int64_t *dims, dnnl_data_type_t t);

/* Whether oneDNN runs bf16 on native instructions on this CPU: its effective ISA (the CPU's,
 * capped by DNNL_MAX_CPU_ISA) includes AVX512_CORE_BF16 (vdpbf16ps, vcvtneps2bf16). Decided once,
 * on first use. Without it oneDNN still offers bf16 primitives, but they emulate the bf16 dot
 * products with f32 shuffles (or run its reference loops): no faster than natgrad's f32 copies,
 * so the callers keep those. See also ng_dnnl_impl_native for one primitive. */
int ng_dnnl_bf16_native(void);

/* Whether a primitive descriptor's implementation is one of oneDNN's optimised kernels (jit
 * convolutions and pooling, its jit GEMM, brgemm matmul) and not a reference loop ("ref" in its
 * name). */
int ng_dnnl_impl_native(const_dnnl_primitive_desc_t pd);

/* One argument of a primitive: its DNNL_ARG_* and natgrad's buffer. */
typedef struct {
    int arg;
    void *data;
} ng_dnnl_buf;

/* What a cache slot of a layer's primitives is made for: an input shape, and its last use. */
typedef struct {
    int ndim;         /* 0: an empty slot */
    int64_t shape[5]; /* the input's */
    uint64_t used;    /* the cache's clock at the last use, for eviction */
} ng_dnnl_key;

/* Finds the slot made for input shape (ndim, in) among n slots of `stride` bytes whose keys lie
 * at `first` (the key of slot 0) and stamps it with the advanced clock; *miss = 0. When none is,
 * returns the least recently used slot with *miss = 1: the caller frees what it holds and then
 * calls ng_dnnl_key_set on it. Every CPU twin on oneDNN keeps its primitives this way, per layer
 * and shape (training, evaluation and a last partial batch each get theirs). */
int ng_dnnl_slot(ng_dnnl_key *first, size_t stride, int n, uint64_t *clock, int ndim,
                 const int64_t *in, int *miss);
void ng_dnnl_key_set(ng_dnnl_key *k, int ndim, const int64_t *in, uint64_t clock);

/* Runs prim on the buffers (descriptors taken from pd) and waits for it; mems is the primitive's
 * cache of memory objects, one per argument slot (n at most 8), made on the first run. */
void ng_dnnl_run(dnnl_primitive_t prim, const_dnnl_primitive_desc_t pd, dnnl_memory_t *mems, int n,
                 const ng_dnnl_buf *bufs);

#endif
