/* comm/reduce_cuda.cu's twins in the emulation build (NG_CUDA_EMU with MPI): the add and the
 * division the NCCL binding queues on its stream (core/stream_emu.h), run with device memory
 * open; on the NULL stream they run at once on the caller. */
#include <stdlib.h>

#include "comm_internal.h"
#include "core/cuda_emu.h"
#include "core/error.h"
#include "core/stream_emu.h"
#include "reduce_cuda.h"

typedef struct {
    void *dst;
    const void *src; /* NULL: a division */
    int64_t n;
    ng_dtype dt;
    int by;
} reduce_op;

static void run_reduce(void *arg) {
    reduce_op *o = arg;
    ng_emu_enter();
    if (o->src)
        ng_comm_cpu_add(NULL, o->dst, o->src, o->n, o->dt);
    else
        ng_comm_cpu_divide(NULL, o->dst, o->n, o->dt, o->by);
    ng_emu_leave();
    free(o);
}

static void submit(cudaStream_t stream, reduce_op o) {
    reduce_op *q = malloc(sizeof *q);
    NG_CHECK(q, "CUDA emulation: out of host memory");
    *q = o;
    if (!ng_emu_stream_enqueue(stream, run_reduce, q)) run_reduce(q);
}

void ng_comm_cuda_add(void *dst, const void *src, int64_t n, ng_dtype dt, cudaStream_t stream) {
    size_t bytes = (size_t)n * ng_dtype_size(dt);
    NG_CHECK(ng_emu_is_device(dst, bytes) && ng_emu_is_device(src, bytes),
             "comm (emulated CUDA): an add of %lld %s elements on memory that is not the "
             "device's",
             (long long)n, ng_dtype_name(dt));
    submit(stream, (reduce_op){dst, src, n, dt, 0});
}

void ng_comm_cuda_divide(void *buf, int64_t n, ng_dtype dt, int by, cudaStream_t stream) {
    NG_CHECK(ng_emu_is_device(buf, (size_t)n * ng_dtype_size(dt)),
             "comm (emulated CUDA): a division of %lld %s elements on memory that is not the "
             "device's",
             (long long)n, ng_dtype_name(dt));
    submit(stream, (reduce_op){buf, NULL, n, dt, by});
}
