/* Gradient buckets over a flat buffer: readiness counting and in-order non-blocking all-reduce. */
#include "comm/bucket.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

struct ng_buckets {
    ng_comm *c;
    ng_tensor *flat;
    int n, nparams;
    int *bucket_of;        /* per parameter */
    int *missing, *total;  /* per bucket: parameters not yet final this pass, and all */
    int64_t *lo, *hi;      /* per bucket: element range */
    unsigned char *seen;   /* per parameter, this pass */
    int next;              /* the next bucket to start */
    ng_comm_request **req; /* per bucket, this pass */
};

ng_buckets *ng_buckets_new(ng_comm *c, ng_tensor *flat, const int64_t *start, int nparams,
                           size_t bytes) {
    NG_CHECK(nparams >= 1 && start[0] == 0, "buckets: %d parameters starting at %lld", nparams,
             nparams ? (long long)start[0] : 0LL);
    for (int i = 1; i < nparams; i++)
        NG_CHECK(start[i] >= start[i - 1] && start[i] <= flat->numel,
                 "buckets: parameter %d starts at %lld, out of order in %s", i, (long long)start[i],
                 ng_tensor_desc(flat));
    ng_buckets *b = calloc(1, sizeof *b);
    size_t np = (size_t)nparams;
    NG_CHECK(b, "out of host memory for gradient buckets");
    b->c = c, b->flat = flat, b->nparams = nparams;
    b->bucket_of = malloc(np * sizeof *b->bucket_of);
    b->missing = calloc(np, sizeof *b->missing), b->total = calloc(np, sizeof *b->total);
    b->lo = malloc(np * sizeof *b->lo), b->hi = malloc(np * sizeof *b->hi);
    b->seen = calloc(np, 1), b->req = calloc(np, sizeof *b->req);
    NG_CHECK(b->bucket_of && b->missing && b->total && b->lo && b->hi && b->seen && b->req,
             "out of host memory for gradient buckets");
    size_t es = ng_dtype_size(flat->dtype);
    int k = -1;
    for (int i = nparams - 1; i >= 0; i--) {
        if (k < 0 || (b->hi[k] - b->lo[k]) * (int64_t)es >= (int64_t)bytes) { /* a new bucket */
            k = b->n++;
            b->hi[k] = k == 0 ? flat->numel : b->lo[k - 1];
        }
        b->lo[k] = start[i];
        b->total[k]++;
        b->bucket_of[i] = k;
    }
    memcpy(b->missing, b->total, (size_t)b->n * sizeof *b->missing);
    return b;
}

void ng_buckets_free(ng_buckets *b) {
    if (!b) return;
    free(b->bucket_of), free(b->missing), free(b->total), free(b->lo), free(b->hi), free(b->seen);
    free(b->req);
    free(b);
}

int ng_buckets_count(const ng_buckets *b) {
    return b->n;
}

void ng_buckets_range(const ng_buckets *b, int k, int64_t *lo, int64_t *hi) {
    NG_CHECK(k >= 0 && k < b->n, "buckets: bucket %d of %d", k, b->n);
    *lo = b->lo[k], *hi = b->hi[k];
}

static void start_bucket(ng_buckets *b, int k) {
    ng_tensor v =
        ng_tensor_view(b->flat, b->lo[k], 1, (int64_t[]){b->hi[k] - b->lo[k]}, "gradient bucket");
    b->req[k] = ng_comm_allreduce_start(b->c, &v, NG_COMM_AVG, NULL);
}

void ng_buckets_ready(ng_buckets *b, int i) {
    NG_CHECK(i >= 0 && i < b->nparams, "buckets: parameter %d of %d", i, b->nparams);
    NG_CHECK(!b->seen[i], "buckets: parameter %d reported ready twice in one pass", i);
    b->seen[i] = 1;
    b->missing[b->bucket_of[i]]--;
    while (b->next < b->n && b->missing[b->next] == 0) start_bucket(b, b->next++);
}

int ng_buckets_finish(ng_buckets *b) {
    int early = b->next;
    while (b->next < b->n) start_bucket(b, b->next++);
    for (int k = 0; k < b->n; k++) ng_comm_wait(b->req[k]), b->req[k] = NULL;
    memcpy(b->missing, b->total, (size_t)b->n * sizeof *b->missing);
    memset(b->seen, 0, (size_t)b->nparams);
    b->next = 0;
    return early;
}
