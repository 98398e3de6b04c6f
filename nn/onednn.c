/* The oneDNN engine, stream and helpers shared by the CPU twins that use it. */
#include "nn/onednn.h"

#include <string.h>

#include "core/memory.h"
#include "core/threads.h"
#include "nn/plan.h"

static dnnl_engine_t engine;
static dnnl_stream_t stream;

dnnl_engine_t ng_dnnl_engine(void) {
    if (!engine) {
        ng_threads(); /* oneDNN sizes its OpenMP teams (and some scratchpads) from it */
        NG_DNNL_CHECK(dnnl_engine_create(&engine, dnnl_cpu, 0));
    }
    return engine;
}

dnnl_stream_t ng_dnnl_stream(void) {
    if (!stream)
        NG_DNNL_CHECK(dnnl_stream_create(&stream, ng_dnnl_engine(), dnnl_stream_default_flags));
    return stream;
}

dnnl_primitive_attr_t ng_dnnl_user_scratchpad(void) {
    dnnl_primitive_attr_t a;
    NG_DNNL_CHECK(dnnl_primitive_attr_create(&a));
    NG_DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user));
    return a;
}

size_t ng_dnnl_scratch_bytes(const_dnnl_primitive_desc_t pd) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    return md ? dnnl_memory_desc_get_size(md) : 0;
}

dnnl_memory_desc_t ng_dnnl_plain(int ndim, const int64_t *dims, dnnl_data_type_t t) {
    static const dnnl_format_tag_t tags[] = {
        dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde};
    dnnl_memory_desc_t md;
    dnnl_dims_t d = {0};
    for (int i = 0; i < ndim; i++) d[i] = dims[i];
    NG_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&md, ndim, d, t, tags[ndim]));
    return md;
}

dnnl_memory_desc_t ng_dnnl_plain_f32(int ndim, const int64_t *dims) {
    return ng_dnnl_plain(ndim, dims, dnnl_f32);
}

int ng_dnnl_bf16_native(void) {
    static int known = -1;
    if (known < 0) {
        /* ISA values are nested bit sets: AMX and later include the AVX512_CORE_BF16 bits */
        unsigned isa = (unsigned)dnnl_get_effective_cpu_isa(),
                 bf16 = (unsigned)dnnl_cpu_isa_avx512_core_bf16;
        known = (isa & bf16) == bf16;
    }
    return known;
}

int ng_dnnl_impl_native(const_dnnl_primitive_desc_t pd) {
    const char *name = NULL;
    NG_DNNL_CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name));
    return name && !strstr(name, "ref");
}

void ng_dnnl_run(dnnl_primitive_t prim, const_dnnl_primitive_desc_t pd, dnnl_memory_t *mems, int n,
                 const ng_dnnl_buf *bufs) {
    dnnl_exec_arg_t args[8];
    NG_CHECK(n <= 8, "ng_dnnl_run: %d arguments; at most 8", n);
    for (int i = 0; i < n; i++) {
        if (!mems[i]) {
            const dnnl_memory_desc_t *md =
                dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, bufs[i].arg);
            NG_CHECK(md, "ng_dnnl_run: the primitive has no argument %d", bufs[i].arg);
            NG_DNNL_CHECK(dnnl_memory_create(&mems[i], md, ng_dnnl_engine(), DNNL_MEMORY_NONE));
        }
        NG_DNNL_CHECK(dnnl_memory_set_data_handle(mems[i], bufs[i].data));
        args[i] = (dnnl_exec_arg_t){bufs[i].arg, mems[i]};
    }
    NG_DNNL_CHECK(dnnl_primitive_execute(prim, ng_dnnl_stream(), n, args));
    NG_DNNL_CHECK(dnnl_stream_wait(ng_dnnl_stream()));
}

static ng_dnnl_key *key_at(ng_dnnl_key *first, size_t stride, int i) {
    return (ng_dnnl_key *)((char *)first + (size_t)i * stride);
}

int ng_dnnl_slot(ng_dnnl_key *first, size_t stride, int n, uint64_t *clock, int ndim,
                 const int64_t *in, int *miss) {
    int victim = 0;
    ++*clock;
    for (int i = 0; i < n; i++) {
        ng_dnnl_key *k = key_at(first, stride, i);
        if (k->ndim == ndim && !memcmp(k->shape, in, sizeof(int64_t) * (size_t)ndim)) {
            k->used = *clock;
            *miss = 0;
            return i;
        }
        if (k->used < key_at(first, stride, victim)->used) victim = i;
    }
    *miss = 1;
    return victim;
}

void ng_dnnl_key_set(ng_dnnl_key *k, int ndim, const int64_t *in, uint64_t clock) {
    k->ndim = ndim;
    memcpy(k->shape, in, sizeof(int64_t) * (size_t)ndim);
    k->used = clock;
}

void *ng_dnnl_take(ng_dnnl_taker *t, size_t bytes) {
    if (!bytes) return NULL;
    if (t->sim) {
        ng_sim_alloc(t->sim, bytes);
        return NULL;
    }
    return ng_arena_alloc(t->arena, bytes);
}

size_t ng_dnnl_mark(const ng_dnnl_taker *t) {
    return t->sim ? ng_sim_mark(t->sim) : ng_arena_get_mark(t->arena);
}

void ng_dnnl_release(ng_dnnl_taker *t, size_t mark) {
    if (t->sim)
        ng_sim_release(t->sim, mark);
    else
        ng_arena_release(t->arena, mark);
}
