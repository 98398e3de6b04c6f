/* The CUDA side of comm_nccl.c in the emulation build (NG_CUDA_EMU with MPI): the runtime calls
 * it makes, core's context as far as it reads it (the stream), and reduce_cuda.cu's twins.
 *
 * Streams run as on a GPU, beside the host: a created stream is a worker thread that runs its
 * queue in order (comm/stream_emu.h), an event is a position in a stream's queue, and a wait
 * blocks (the NULL stream, i.e. the host and core's emulated ops, which are synchronous) or is
 * queued (another stream). So host code that reads a bucket before waiting for its all-reduce,
 * or queues NCCL work before core's writes are done, gets the wrong numbers here as it would on
 * a GPU, and tests comparing results catch it. Copies and reductions take device memory only
 * (a host pointer is an error) and run with it open (core/cuda_emu.h). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cuda_context.h"
#include "core/cuda_emu.h"
#include "comm_internal.h"
#include "core/error.h"
#include "reduce_cuda.h"
#include "stream_emu.h"

/* A stream: its worker thread runs the queue in order. `queued` and `done` count items, so an
 * event recorded on it is the count at that moment and is complete once `done` reaches it. One
 * lock and condition serve every stream (waits cross streams). */
typedef struct item {
    void (*run)(void *arg);
    void *arg;
    struct item *next;
} item;

struct CUstream_st {
    pthread_t thread;
    item *head, *tail;
    uint64_t queued, done;
    int stop;
    struct CUstream_st *next_live;
};

struct CUevent_st {
    cudaStream_t stream; /* NULL: recorded on the NULL stream, complete at once */
    uint64_t seq;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t progress = PTHREAD_COND_INITIALIZER;
static struct CUstream_st *live;

/* NG_EMU_STREAM_DELAY_US (default 1000): how long a stream's worker waits before each item, so
 * that host code which goes on without waiting for the stream (reading a bucket before
 * ng_comm_wait, say) reliably sees the work not yet done, as it may on a GPU; 0 runs at once. */
static useconds_t item_delay(void) {
    static long us = -1;
    if (us < 0) {
        const char *e = getenv("NG_EMU_STREAM_DELAY_US");
        char *end = NULL;
        long v = e && *e ? strtol(e, &end, 10) : 1000;
        NG_CHECK(!e || !*e || (*end == 0 && v >= 0 && v <= 1000000),
                 "NG_EMU_STREAM_DELAY_US: '%s' is not a delay in microseconds (0 to 1000000)", e);
        us = v;
    }
    return (useconds_t)us;
}

static void *worker(void *arg) {
    cudaStream_t s = arg;
    useconds_t delay = item_delay();
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!s->head && !s->stop) pthread_cond_wait(&progress, &lock);
        if (!s->head) break;
        item *it = s->head;
        s->head = it->next;
        if (!s->head) s->tail = NULL;
        pthread_mutex_unlock(&lock);
        if (delay) usleep(delay);
        it->run(it->arg);
        free(it);
        pthread_mutex_lock(&lock);
        s->done++;
        pthread_cond_broadcast(&progress);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

int ng_emu_stream_enqueue(cudaStream_t s, void (*run)(void *arg), void *arg) {
    if (!s) return 0;
    item *it = malloc(sizeof *it);
    NG_CHECK(it, "CUDA emulation: out of host memory");
    *it = (item){run, arg, NULL};
    pthread_mutex_lock(&lock);
    if (s->tail)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
    s->queued++;
    pthread_cond_broadcast(&progress);
    pthread_mutex_unlock(&lock);
    return 1;
}

/* Blocks the caller until stream s has run its first `seq` items. */
static void wait_for(cudaStream_t s, uint64_t seq) {
    pthread_mutex_lock(&lock);
    while (s->done < seq) pthread_cond_wait(&progress, &lock);
    pthread_mutex_unlock(&lock);
}

void ng_emu_streams_drain(void) {
    pthread_mutex_lock(&lock);
    for (cudaStream_t s = live; s; s = s->next_live)
        while (s->done < s->queued) pthread_cond_wait(&progress, &lock);
    pthread_mutex_unlock(&lock);
}

/* Freeing device memory waits for the streams, as cudaFree does. */
__attribute__((constructor)) static void register_free_wait(void) {
    ng_emu_set_free_wait(ng_emu_streams_drain);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags) {
    (void)flags;
    item_delay(); /* a bad setting stops here, on the caller's thread */
    cudaStream_t s = calloc(1, sizeof *s);
    if (!s) return cudaErrorMemoryAllocation;
    if (pthread_create(&s->thread, NULL, worker, s)) {
        free(s);
        return cudaErrorMemoryAllocation;
    }
    pthread_mutex_lock(&lock);
    s->next_live = live;
    live = s;
    pthread_mutex_unlock(&lock);
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    if (stream) wait_for(stream, stream->queued);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (!stream) return cudaErrorInvalidResourceHandle;
    pthread_mutex_lock(&lock);
    stream->stop = 1; /* the worker runs what is queued, then ends */
    pthread_cond_broadcast(&progress);
    for (cudaStream_t *p = &live; *p; p = &(*p)->next_live)
        if (*p == stream) {
            *p = stream->next_live;
            break;
        }
    pthread_mutex_unlock(&lock);
    pthread_join(stream->thread, NULL);
    free(stream);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    (void)flags;
    *event = calloc(1, sizeof **event);
    return *event ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    free(event);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    if (!event) return cudaErrorInvalidResourceHandle;
    pthread_mutex_lock(&lock);
    event->stream = stream;
    event->seq = stream ? stream->queued : 0;
    pthread_mutex_unlock(&lock);
    return cudaSuccess;
}

typedef struct {
    cudaStream_t on;
    uint64_t seq;
} event_wait;

static void run_event_wait(void *arg) {
    event_wait *w = arg;
    wait_for(w->on, w->seq);
    free(w);
}

/* The NULL stream is the caller: it blocks until the event is complete. Another stream queues
 * the wait, so its later work starts after the event. */
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
    (void)flags;
    if (!event) return cudaErrorInvalidResourceHandle;
    if (!event->stream || event->stream == stream) return cudaSuccess;
    if (!stream) {
        wait_for(event->stream, event->seq);
        return cudaSuccess;
    }
    event_wait *w = malloc(sizeof *w);
    if (!w) return cudaErrorMemoryAllocation;
    *w = (event_wait){event->stream, event->seq};
    ng_emu_stream_enqueue(stream, run_event_wait, w);
    return cudaSuccess;
}

/* The local work the NCCL binding queues on its stream: a copy, an add or a division, run with
 * device memory open. */
typedef struct {
    enum { COPY, ADD, DIVIDE } kind;
    void *dst;
    const void *src;
    int64_t n; /* bytes for a copy, elements otherwise */
    ng_dtype dt;
    int by;
} local_op;

static void run_local(void *arg) {
    local_op *o = arg;
    ng_emu_enter();
    if (o->kind == COPY)
        memmove(o->dst, o->src, (size_t)o->n);
    else if (o->kind == ADD)
        ng_comm_cpu_add(NULL, o->dst, o->src, o->n, o->dt);
    else
        ng_comm_cpu_divide(NULL, o->dst, o->n, o->dt, o->by);
    ng_emu_leave();
    free(o);
}

static void submit_local(cudaStream_t stream, local_op o) {
    local_op *q = malloc(sizeof *q);
    NG_CHECK(q, "CUDA emulation: out of host memory");
    *q = o;
    if (!ng_emu_stream_enqueue(stream, run_local, q)) run_local(q);
}

/* Device to device only, as the NCCL backend copies; both ends must be device memory. */
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
    if (kind != cudaMemcpyDeviceToDevice || !ng_emu_is_device(dst, count) ||
        !ng_emu_is_device(src, count))
        return cudaErrorInvalidValue;
    submit_local(stream, (local_op){COPY, dst, src, (int64_t)count, NG_F32, 0});
    return cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
        case cudaSuccess:
            return "no error";
        case cudaErrorInvalidValue:
            return "invalid argument (emulated: a copy that is not device to device memory)";
        case cudaErrorMemoryAllocation:
            return "out of memory (emulated)";
        default:
            return "invalid resource handle (emulated)";
    }
}

/* The stream is the legacy default one (NULL), which the emulated calls above accept. */
ng_cuda_context *ng_cuda_ctx(void) {
    static ng_cuda_context ctx;
    return &ctx;
}

void ng_comm_cuda_add(void *dst, const void *src, int64_t n, ng_dtype dt, cudaStream_t stream) {
    size_t bytes = (size_t)n * ng_dtype_size(dt);
    NG_CHECK(ng_emu_is_device(dst, bytes) && ng_emu_is_device(src, bytes),
             "comm (emulated CUDA): an add of %lld %s elements on memory that is not the "
             "device's",
             (long long)n, ng_dtype_name(dt));
    submit_local(stream, (local_op){ADD, dst, src, n, dt, 0});
}

void ng_comm_cuda_divide(void *buf, int64_t n, ng_dtype dt, int by, cudaStream_t stream) {
    NG_CHECK(ng_emu_is_device(buf, (size_t)n * ng_dtype_size(dt)),
             "comm (emulated CUDA): a division of %lld %s elements on memory that is not the "
             "device's",
             (long long)n, ng_dtype_name(dt));
    submit_local(stream, (local_op){DIVIDE, buf, NULL, n, dt, by});
}
