/* Non-blocking all-reduces on host buffers: one worker thread per communicator runs the queued
 * buckets in the order they were started, on a private duplicate of the communicator, so its
 * messages never meet those of blocking calls made meanwhile by the main thread. */
#include <pthread.h>
#include <stdlib.h>

#include "comm_internal.h"

struct ng_comm_async {
    ng_comm *dup;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    ng_comm_request *head, *tail;
    int stop;
};

static void *worker(void *arg) {
    ng_comm_async *a = arg;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (!a->head && !a->stop) pthread_cond_wait(&a->wake, &a->lock);
        if (!a->head) break; /* stop, and nothing left to run */
        ng_comm_request *r = a->head;
        pthread_mutex_unlock(&a->lock);
        ng_comm_allreduce_with(a->dup, &r->tensor, r->op, &r->opts);
        pthread_mutex_lock(&a->lock);
        a->head = r->next;
        if (!a->head) a->tail = NULL;
        r->done = 1;
        pthread_cond_broadcast(&a->done);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

ng_comm_request *ng_comm_async_start(ng_comm *c, ng_tensor *t, ng_comm_op op,
                                     const ng_allreduce_opts *o) {
    if (!c->async) {
        /* Collective: every rank starts its first bucket in the same order as the others. */
        ng_comm_async *a = calloc(1, sizeof *a);
        a->dup = ng_comm_split_internal(c, 0, c->rank);
        pthread_mutex_init(&a->lock, NULL);
        pthread_cond_init(&a->wake, NULL);
        pthread_cond_init(&a->done, NULL);
        pthread_create(&a->thread, NULL, worker, a);
        c->async = a;
    }
    ng_comm_async *a = c->async;
    ng_comm_request *r = calloc(1, sizeof *r);
    r->comm = c;
    r->tensor = *t;
    r->op = op;
    r->opts = o ? *o : c->defaults;
    /* auto is resolved here, against the caller's communicator and its table */
    if (r->opts.algo == NG_AR_AUTO) r->opts = ng_comm_auto_choice(c, (int64_t)ng_tensor_bytes(t));
    pthread_mutex_lock(&a->lock);
    if (a->tail)
        a->tail->next = r;
    else
        a->head = r;
    a->tail = r;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->lock);
    return r;
}

void ng_comm_async_wait(ng_comm_request *r) {
    ng_comm_async *a = r->comm->async;
    pthread_mutex_lock(&a->lock);
    while (!r->done) pthread_cond_wait(&a->done, &a->lock);
    pthread_mutex_unlock(&a->lock);
    free(r);
}

void ng_comm_async_destroy(ng_comm *c) {
    ng_comm_async *a = c->async;
    if (!a) return;
    pthread_mutex_lock(&a->lock);
    a->stop = 1;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->lock);
    pthread_join(a->thread, NULL);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->wake);
    pthread_cond_destroy(&a->done);
    ng_comm_free(a->dup);
    free(a);
    c->async = NULL;
}
