/* The CUDA runtime of the emulation build (core/cuda_emu.h), as far as the CUDA build's host code
 * calls it: streams, events, copies and fills, a raw allocation; core's context (NULL stream) is
 * core/cuda_context_emu.c.
 *
 * Streams run as on a GPU, beside the host: a created stream is a worker thread that runs its
 * queue in order (core/stream_emu.h), an event is a position in a stream's queue, and a wait
 * blocks (the NULL stream, i.e. the host and core's emulated ops, which are synchronous) or is
 * queued (another stream). So host code that reads a bucket before waiting for its all-reduce,
 * or queues NCCL work before core's writes are done, gets the wrong numbers here as it would on
 * a GPU, and tests comparing results catch it. Copies and fills check each end against its kind
 * (device memory where the kind says device, host memory where it says host) and run with device
 * memory open. */
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda_emu.h"
#include "error.h"
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

/* A copy or a fill, run with device memory open: on the caller for the NULL stream, else queued
 * on the stream. */
typedef struct {
    void *dst;
    const void *src; /* NULL: a fill with `value` */
    size_t bytes;
    int value;
} local_op;

static void run_local(void *arg) {
    local_op *o = arg;
    ng_emu_enter();
    if (o->src)
        memmove(o->dst, o->src, o->bytes);
    else
        memset(o->dst, o->value, o->bytes);
    ng_emu_leave();
    free(o);
}

static void submit_local(cudaStream_t stream, local_op o) {
    local_op *q = malloc(sizeof *q);
    NG_CHECK(q, "CUDA emulation: out of host memory");
    *q = o;
    if (!ng_emu_stream_enqueue(stream, run_local, q)) run_local(q);
}

static cudaError_t sticky; /* the last error, for cudaGetLastError */

/* Prints why the emulated runtime refuses a call (ng_emu_say) and keeps the error for
 * cudaGetLastError, then returns it. */
#define fail(e, ...) (ng_emu_say("CUDA runtime", __VA_ARGS__), sticky = (e))

/* Each end must be what the kind says: device memory for a device end, host memory otherwise. */
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
    if (kind != cudaMemcpyDeviceToDevice && kind != cudaMemcpyDeviceToHost &&
        kind != cudaMemcpyHostToDevice)
        return fail(cudaErrorInvalidValue, "cudaMemcpyAsync: kind %d is not emulated", (int)kind);
    if (!count) return cudaSuccess;
    int dst_dev = kind != cudaMemcpyDeviceToHost, src_dev = kind != cudaMemcpyHostToDevice;
    if (!dst || !src || ng_emu_is_device(dst, count) != dst_dev ||
        ng_emu_is_device(src, count) != src_dev || (!dst_dev && ng_emu_is_device(dst, 1)) ||
        (!src_dev && ng_emu_is_device(src, 1)))
        return fail(cudaErrorInvalidValue,
                    "cudaMemcpyAsync of %zu bytes, kind %d: the destination %p must be %s memory "
                    "and the source %p %s memory",
                    count, (int)kind, dst, dst_dev ? "device" : "host", src,
                    src_dev ? "device" : "host");
    submit_local(stream, (local_op){dst, src, count, 0});
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t count, cudaStream_t stream) {
    if (!count) return cudaSuccess;
    if (!ng_emu_is_device(dst, count))
        return fail(cudaErrorInvalidValue,
                    "cudaMemsetAsync of %zu bytes at %p: not one block of device memory", count,
                    dst);
    submit_local(stream, (local_op){dst, NULL, count, value});
    return cudaSuccess;
}

/* Device memory outside natgrad's counting allocator, as cudaMalloc gives it. */
cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (!p) return fail(cudaErrorInvalidValue, "cudaMalloc: NULL pointer");
    *p = ng_emu_alloc(bytes);
    return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation, "cudaMalloc: %zu bytes", bytes);
}

cudaError_t cudaFree(void *p) {
    if (p) ng_emu_free(p);
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = sticky;
    sticky = cudaSuccess;
    return e;
}

const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
        case cudaSuccess:
            return "no error";
        case cudaErrorInvalidValue:
            return "invalid argument (emulated: the reason is printed above)";
        case cudaErrorMemoryAllocation:
            return "out of memory (emulated)";
        default:
            return "invalid resource handle (emulated)";
    }
}
