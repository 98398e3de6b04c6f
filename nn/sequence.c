/* The sequence container, and activation checkpointing over runs of its children.
 *
 * Backward passes activation gradients from child to child through at most two buffers of its
 * own, so gradient memory is two activations, not all; where they fit, the caller's dx and its
 * spent dy serve instead (grad_places), so a block nested in a sequence needs none. A ReLU
 * after a layer that does not read its own output writes over that output (may_overwrite).
 *
 * A checkpoint segment is a run of children [first, end): forward keeps the segment's input (it
 * lives before the segment, outside it) and a copy of its output below an arena mark, and releases
 * everything the interior allocated; backward replays the interior from the kept input (with
 * ctx->recomputing set, so observers and batch-norm running statistics see each layer once per
 * step, and with the same RNG keys, so dropout masks repeat), runs the interior's backward and
 * releases the replay; unless ctx->retain, each child's forward activations go back to the arena
 * as soon as its backward is done, so a replay reuses the memory of the blocks after it and
 * checkpointing lowers the peak even for one segment. Segments are marks on the sequence, not
 * layers: checkpointing on or off leaves the layer tree, its names and its RNG streams unchanged.
 *
 * Recomputed segments (ng_sequence_recompute, model.checkpoint: recompute) keep even less: of a
 * run of segments only the run's input. Forward moves each segment's output down to the run's
 * base, over the previous output (which its interior has read), so one output lives at a time;
 * backward, before replaying segment k, recomputes its input by running the segments before it
 * from the run's input the same way. Memory no longer grows with the depth, for k-fold forward
 * work on the k-th segment (quadratic in the run's length): the trade for the largest volume.
 */
#include <string.h>

#include "core/error.h"
#include "core/ops.h"
#include "nn/containers.h"
#include "nn/plan.h"

#define SEQ_MAX 64

typedef struct {
    int n; /* children seen at the last forward */
    int ndim[SEQ_MAX];
    int64_t shape[SEQ_MAX][NG_MAX_DIMS]; /* input shape of each child at the last forward */
    ng_dtype dtype;
    int seg_end[SEQ_MAX];     /* > i when child i starts a segment [i, seg_end[i]); else 0 */
    ng_tensor seg_x[SEQ_MAX]; /* the input a segment starting at i replays from */
    /* ctx->acts before child i's forward (before the segment's output, for a segment start):
     * what backward releases to once child i (or the segment) is done. */
    ng_arena_mark fwd_mark[SEQ_MAX];
    int64_t out_numel; /* elements of the last forward's output (the size of dy) */
    /* Children [rc_first, rc_end) are segments recomputed from seg_x[rc_first] (rc_end 0: none);
     * rc_base: ctx->acts where forward left their one live output. */
    int rc_first, rc_end;
    ng_arena_mark rc_base;
} seq_state;

static int recomputed(const seq_state *s, int i) {
    return i >= s->rc_first && i < s->rc_end;
}

/* Whether child j may write its output over its input: the input is the previous child's fresh
 * output that nothing else reads (not the sequence's input, not a segment's kept input). */
static int may_overwrite(const ng_layer *l, const seq_state *s, int j) {
    return j > 0 && s->seg_end[j] <= j && l->children[j - 1]->ops->out_unread;
}

int64_t ng_children_flops(const ng_layer *l, int ndim, const int64_t *in) {
    int64_t cur[NG_MAX_DIMS], total = 0;
    int cn = ndim;
    memcpy(cur, in, sizeof(int64_t) * (size_t)ndim);
    for (int i = 0; i < l->nchildren; i++) {
        int64_t next[NG_MAX_DIMS];
        int nn;
        total += ng_layer_flops(l->children[i], cn, cur);
        ng_layer_out_shape(l->children[i], cn, cur, &nn, next);
        cn = nn;
        memcpy(cur, next, sizeof(int64_t) * (size_t)nn);
    }
    return total;
}

void ng_children_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out) {
    int64_t cur[NG_MAX_DIMS];
    int cn = ndim;
    memcpy(cur, in, sizeof(int64_t) * (size_t)ndim);
    for (int i = 0; i < l->nchildren; i++) {
        int64_t next[NG_MAX_DIMS];
        int nn;
        ng_layer_out_shape(l->children[i], cn, cur, &nn, next);
        cn = nn;
        memcpy(cur, next, sizeof(int64_t) * (size_t)nn);
    }
    *out_ndim = cn;
    memcpy(out, cur, sizeof(int64_t) * (size_t)cn);
}

/* dst = src where dst may start inside src's memory below src (an output moved down to the arena
 * position of an input it replaced): front to back, in pieces no longer than the distance. */
static void move_down(ng_tensor *dst, const ng_tensor *src) {
    size_t es = ng_dtype_size(src->dtype);
    const char *d = dst->data, *s = src->data;
    if (d == s) return;
    int64_t n = src->numel, gap = d < s ? (int64_t)((size_t)(s - d) / es) : n;
    NG_CHECK(d < s || d >= s + n * (int64_t)es, "sequence: moving %s up over itself", src->name);
    for (int64_t o = 0; o < n; o += gap) {
        int64_t k = n - o < gap ? n - o : gap;
        ng_tensor a = ng_tensor_view(dst, o, 1, &k, dst->name);
        ng_tensor b = ng_tensor_view(src, o, 1, &k, src->name);
        ng_copy(&a, &b);
    }
}

/* Runs segment [i, end) on cur and leaves its output at `base` of ctx->acts, everything else the
 * segment (and what lay between base and it: the previous recomputed output) released. */
static ng_tensor run_moved(ng_layer *l, ng_ctx *ctx, int i, int end, ng_tensor cur,
                           ng_arena_mark base) {
    seq_state *s = l->impl;
    /* what the segment keeps for backward is never read: its replay runs it again */
    int was = ctx->forward_only;
    ctx->forward_only = 1;
    for (int j = i; j < end; j++) {
        s->ndim[j] = cur.ndim;
        memcpy(s->shape[j], cur.shape, sizeof cur.shape);
        ctx->inplace = may_overwrite(l, s, j);
        cur = l->children[j]->ops->forward(l->children[j], ctx, &cur);
        ctx->inplace = 0;
    }
    ctx->forward_only = was;
    ng_arena_release(ctx->acts, base);
    ng_tensor y =
        ng_arena_tensor(ctx->acts, cur.dtype, cur.ndim, cur.shape, l->children[end - 1]->name);
    move_down(&y, &cur);
    return y;
}

static ng_tensor seq_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    seq_state *s = l->impl;
    NG_CHECK(l->nchildren <= SEQ_MAX, "sequence %s: more than %d children; nest sequences", l->name,
             SEQ_MAX);
    int unused = ctx->output_unused; /* the caller's word, for the last child only */
    ctx->output_unused = 0;
    ng_tensor cur = *x;
    s->n = l->nchildren;
    s->dtype = x->dtype;
    for (int i = 0; i < l->nchildren; i++) {
        int end = s->seg_end[i] > i ? s->seg_end[i] : 0;
        ng_tensor y = {0};
        ng_arena_mark mark = 0;
        s->fwd_mark[i] = ng_arena_get_mark(ctx->acts);
        if (end && recomputed(s, i)) {
            if (i == s->rc_first) s->rc_base = s->fwd_mark[i], s->seg_x[i] = cur;
            s->fwd_mark[i] = s->rc_base;
            cur = run_moved(l, ctx, i, end, cur, s->rc_base);
            i = end - 1;
            continue;
        }
        if (end) {
            /* The segment's output goes below the mark so it survives the release. */
            int ndim = cur.ndim;
            int64_t shape[NG_MAX_DIMS];
            memcpy(shape, cur.shape, sizeof shape);
            for (int j = i; j < end; j++) {
                int64_t next[NG_MAX_DIMS];
                ng_layer_out_shape(l->children[j], ndim, shape, &ndim, next);
                memcpy(shape, next, sizeof next);
            }
            y = ng_arena_tensor(ctx->acts, cur.dtype, ndim, shape, l->children[end - 1]->name);
            mark = ng_arena_get_mark(ctx->acts);
            s->seg_x[i] = cur;
        }
        int last = end ? end - 1 : i;
        /* a segment's interior is released below and replayed before its backward */
        int was = ctx->forward_only;
        ctx->forward_only = was || end;
        for (int j = i; j <= last; j++) {
            s->ndim[j] = cur.ndim;
            memcpy(s->shape[j], cur.shape, sizeof cur.shape);
            ctx->inplace = may_overwrite(l, s, j);
            /* not for the end of a segment: its output is copied out below */
            ctx->output_unused = unused && !end && j == l->nchildren - 1;
            cur = l->children[j]->ops->forward(l->children[j], ctx, &cur);
            ctx->inplace = 0, ctx->output_unused = 0;
        }
        ctx->forward_only = was;
        if (end) {
            NG_CHECK(cur.dtype == y.dtype,
                     "sequence %s: checkpoint segment ending at %s changes "
                     "the dtype",
                     l->name, l->children[last]->name);
            ng_copy(&y, &cur);
            ng_arena_release(ctx->acts, mark);
            cur = y;
        }
        i = last;
    }
    s->out_numel = cur.numel;
    return cur;
}

/* Replays the forward of the segment that ends at child `last`, if one does; returns the acts
 * mark to release back to once the segment's first child has run its backward, or -1. */
static int64_t replay(ng_layer *l, ng_ctx *ctx, int last, int *first) {
    seq_state *s = l->impl;
    for (int i = last; i >= 0; i--) {
        if (s->seg_end[i] > i && s->seg_end[i] - 1 == last) {
            /* The segment's kept output has served the layers after it, whose backward is done:
             * the replay may take its memory. */
            if (!ctx->retain) ng_arena_release(ctx->acts, s->fwd_mark[i]);
            ng_arena_mark mark = ng_arena_get_mark(ctx->acts);
            int was = ctx->recomputing;
            ctx->recomputing = 1;
            ng_tensor cur = s->seg_x[i];
            if (recomputed(s, i)) /* its input, from the run's by the segments before it */
                for (int k = s->rc_first; k < i; k = s->seg_end[k])
                    cur = run_moved(l, ctx, k, s->seg_end[k], k == s->rc_first ? s->seg_x[k] : cur,
                                    mark);
            for (int j = i; j <= last; j++) {
                ctx->inplace = may_overwrite(l, s, j);
                /* the layers after the segment are done with its output */
                ctx->output_unused = j == last;
                cur = l->children[j]->ops->forward(l->children[j], ctx, &cur);
                ctx->inplace = 0, ctx->output_unused = 0;
            }
            ctx->recomputing = was;
            *first = i;
            return (int64_t)mark;
        }
        if (s->seg_end[i] > i) break; /* segments do not overlap: none ends at `last` */
    }
    return -1;
}

/* Where the gradient w.r.t. child i's input goes (i >= 1): one of the sequence's two buffers,
 * the caller's dx (written last, by child 0, so free until then) or the caller's dy once child
 * n-1 has read it (when the caller says it is done with dy: ctx->dy_scratch). Child i reads
 * where child i+1 wrote, so neighbours take different places; dx never holds g_1 (child 0 reads
 * it while writing dx) and dy never g_{n-1}. A block nested in a sequence then needs no buffer
 * of its own. loc[i]: 0, 1 (buffers), LOC_DX, LOC_DY; most[b]: buffer b's size (0: none). */
enum { LOC_DX = 2, LOC_DY = 3 };

static int64_t child_numel(const seq_state *s, int i) {
    int64_t n = 1;
    for (int d = 0; d < s->ndim[i]; d++) n *= s->shape[i][d];
    return n;
}

static void grad_places(const ng_layer *l, const seq_state *s, int64_t dx_numel, int64_t dy_numel,
                        int loc[], int64_t most[2]) {
    most[0] = most[1] = 0;
    for (int i = s->n - 1; i >= 1; i--) {
        int64_t n = child_numel(s, i);
        int from = i == s->n - 1 ? LOC_DY : loc[i + 1];
        /* ... unless child n-1 writes its dx over its dy element by element */
        int over = i == s->n - 1 && l->children[i]->ops->dx_over_dy;
        if (i != 1 && from != LOC_DX && n <= dx_numel)
            loc[i] = LOC_DX;
        else if ((i <= s->n - 2 || over) && (from != LOC_DY || over) && n <= dy_numel)
            loc[i] = LOC_DY;
        else
            loc[i] = from == 0 ? 1 : 0;
        if (loc[i] < 2 && n > most[loc[i]]) most[loc[i]] = n;
    }
}

static void seq_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    seq_state *s = l->impl;
    NG_CHECK(s->n == l->nchildren, "sequence %s: backward without a forward", l->name);
    if (!l->nchildren) {
        if (dx) ng_copy(dx, dy);
        return;
    }
    /* the caller's leave to write over dy, for this call only */
    int dy_free = ctx->dy_scratch;
    ctx->dy_scratch = 0;
    int loc[SEQ_MAX];
    int64_t most[2];
    grad_places(l, s, dx ? dx->numel : -1, dy_free ? dy->numel : -1, loc, most);
    ng_arena_mark mark = ng_arena_get_mark(ctx->grads);
    ng_tensor buf[2] = {{0}, {0}};
    for (int b = 0; b < 2; b++)
        if (most[b])
            buf[b] =
                ng_arena_tensor(ctx->grads, s->dtype, 1, (int64_t[]){most[b]}, "activation grad");
    ng_tensor cur = *dy;
    int64_t replayed = -1; /* acts mark of the segment being run backward */
    int first = -1;
    for (int i = s->n - 1; i >= 0; i--) {
        ng_layer *c = l->children[i];
        if (replayed < 0) replayed = replay(l, ctx, i, &first);
        /* the child may write over its dy when it is ours, or the caller's given up */
        ctx->dy_scratch = i < s->n - 1 || dy_free;
        if (i == 0) {
            ng_layer_backward(c, ctx, &cur, dx);
        } else {
            const ng_tensor *into = loc[i] == LOC_DX ? dx : loc[i] == LOC_DY ? dy : &buf[loc[i]];
            ng_tensor next = ng_tensor_view(into, 0, s->ndim[i], s->shape[i], "activation grad");
            ng_layer_backward(c, ctx, &cur, &next);
            cur = next;
        }
        ctx->dy_scratch = 0;
        /* Done with child i (or with the segment it starts): its activations go back to the
         * arena, so the replay of an earlier segment reuses them. */
        if (replayed >= 0 && i == first) {
            ng_arena_release(ctx->acts, (ng_arena_mark)replayed);
            replayed = -1;
            if (!ctx->retain) ng_arena_release(ctx->acts, s->fwd_mark[i]);
        } else if (replayed < 0 && !ctx->retain) {
            ng_arena_release(ctx->acts, s->fwd_mark[i]);
        }
    }
    ng_arena_release(ctx->grads, mark);
}

/* The arena traffic of seq_forward and seq_backward, step for step. */

/* run_moved's: the segment's children, then its output alone at base. Updates (*cn, cur). */
static void plan_moved(ng_layer *l, ng_mem_sim *sim, int i, int end, int *cn, int64_t *cur,
                       ng_dtype dt, size_t base) {
    seq_state *s = l->impl;
    int was = sim->forward_only;
    sim->forward_only = 1;
    for (int j = i; j < end; j++) {
        s->ndim[j] = *cn;
        memcpy(s->shape[j], cur, sizeof(int64_t) * NG_MAX_DIMS);
        sim->inplace = may_overwrite(l, s, j);
        ng_layer_plan(l->children[j], sim, 0, 0, *cn, cur, dt);
        sim->inplace = 0;
        int64_t next[NG_MAX_DIMS];
        ng_layer_out_shape(l->children[j], *cn, cur, cn, next);
        memcpy(cur, next, sizeof next);
    }
    sim->forward_only = was;
    ng_sim_release(&sim->acts, base);
    ng_sim_tensor(&sim->acts, dt, *cn, cur);
}

static void plan_forward(ng_layer *l, ng_mem_sim *sim, int ndim, const int64_t *in, ng_dtype dt) {
    seq_state *s = l->impl;
    NG_CHECK(l->nchildren <= SEQ_MAX, "sequence %s: more than %d children; nest sequences", l->name,
             SEQ_MAX);
    int unused = sim->output_unused;
    sim->output_unused = 0;
    int cn = ndim;
    int64_t cur[NG_MAX_DIMS];
    memcpy(cur, in, sizeof(int64_t) * (size_t)ndim);
    s->n = l->nchildren;
    s->dtype = dt;
    for (int i = 0; i < l->nchildren; i++) {
        int end = s->seg_end[i] > i ? s->seg_end[i] : 0;
        size_t mark = 0;
        s->fwd_mark[i] = ng_sim_mark(&sim->acts);
        if (end && recomputed(s, i)) {
            if (i == s->rc_first) s->rc_base = s->fwd_mark[i];
            s->fwd_mark[i] = s->rc_base;
            plan_moved(l, sim, i, end, &cn, cur, dt, s->rc_base);
            i = end - 1;
            continue;
        }
        if (end) {
            int on = cn;
            int64_t out[NG_MAX_DIMS];
            memcpy(out, cur, sizeof out);
            for (int j = i; j < end; j++) {
                int64_t next[NG_MAX_DIMS];
                ng_layer_out_shape(l->children[j], on, out, &on, next);
                memcpy(out, next, sizeof next);
            }
            ng_sim_tensor(&sim->acts, dt, on, out);
            mark = ng_sim_mark(&sim->acts);
        }
        int last = end ? end - 1 : i;
        int was = sim->forward_only;
        sim->forward_only = was || end;
        for (int j = i; j <= last; j++) {
            s->ndim[j] = cn;
            memcpy(s->shape[j], cur, sizeof cur);
            sim->inplace = may_overwrite(l, s, j);
            sim->output_unused = unused && !end && j == l->nchildren - 1;
            ng_layer_plan(l->children[j], sim, 0, 0, cn, cur, dt);
            sim->inplace = 0, sim->output_unused = 0;
            int64_t next[NG_MAX_DIMS];
            ng_layer_out_shape(l->children[j], cn, cur, &cn, next);
            memcpy(cur, next, sizeof next);
        }
        sim->forward_only = was;
        if (end) ng_sim_release(&sim->acts, mark);
        i = last;
    }
    s->out_numel = 1;
    for (int d = 0; d < cn; d++) s->out_numel *= cur[d];
}

static void plan_backward(ng_layer *l, ng_mem_sim *sim, int need_dx) {
    seq_state *s = l->impl;
    int dy_free = sim->dy_scratch;
    sim->dy_scratch = 0;
    if (!l->nchildren) return;
    int loc[SEQ_MAX];
    int64_t most[2];
    grad_places(l, s, need_dx ? child_numel(s, 0) : -1, dy_free ? s->out_numel : -1, loc, most);
    size_t gmark = ng_sim_mark(&sim->grads);
    for (int b = 0; b < 2; b++)
        if (most[b]) ng_sim_tensor(&sim->grads, s->dtype, 1, (int64_t[]){most[b]});
    int64_t replayed = -1;
    int first = -1;
    for (int i = s->n - 1; i >= 0; i--) {
        if (replayed < 0) {
            for (int a = i; a >= 0; a--) {
                if (s->seg_end[a] > a && s->seg_end[a] - 1 == i) {
                    if (!sim->retain) ng_sim_release(&sim->acts, s->fwd_mark[a]);
                    replayed = (int64_t)ng_sim_mark(&sim->acts), first = a;
                    int was = sim->recomputing;
                    sim->recomputing = 1;
                    if (recomputed(s, a)) {
                        int cn = s->ndim[s->rc_first];
                        int64_t cur[NG_MAX_DIMS];
                        memcpy(cur, s->shape[s->rc_first], sizeof cur);
                        for (int k = s->rc_first; k < a; k = s->seg_end[k])
                            plan_moved(l, sim, k, s->seg_end[k], &cn, cur, s->dtype,
                                       (size_t)replayed);
                    }
                    for (int j = a; j <= i; j++) {
                        sim->inplace = may_overwrite(l, s, j);
                        sim->output_unused = j == i;
                        ng_layer_plan(l->children[j], sim, 0, 0, s->ndim[j], s->shape[j], s->dtype);
                        sim->inplace = 0, sim->output_unused = 0;
                    }
                    sim->recomputing = was;
                    break;
                }
                if (s->seg_end[a] > a) break;
            }
        }
        sim->dy_scratch = i < s->n - 1 || dy_free;
        ng_layer_plan(l->children[i], sim, 1, i > 0 || need_dx, s->ndim[i], s->shape[i], s->dtype);
        sim->dy_scratch = 0;
        if (replayed >= 0 && i == first) {
            ng_sim_release(&sim->acts, (size_t)replayed);
            replayed = -1;
            if (!sim->retain) ng_sim_release(&sim->acts, s->fwd_mark[i]);
        } else if (replayed < 0 && !sim->retain) {
            ng_sim_release(&sim->acts, s->fwd_mark[i]);
        }
    }
    ng_sim_release(&sim->grads, gmark);
}

static void seq_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                     const int64_t *in, ng_dtype dt) {
    if (backward)
        plan_backward(l, sim, need_dx);
    else
        plan_forward(l, sim, ndim, in, dt);
}

static const ng_layer_ops seq_ops = {
    .kind = "sequence",
    .out_shape = ng_children_out_shape,
    .flops = ng_children_flops,
    .forward = seq_forward,
    .backward = seq_backward,
    .plan = seq_plan,
};

ng_layer *ng_sequence(const char *name) {
    return ng_layer_new(&seq_ops, name, sizeof(seq_state));
}

void ng_sequence_checkpoint(ng_layer *seq, int first, int count) {
    NG_CHECK(seq->ops == &seq_ops, "checkpoint segment: %s is a %s, not a sequence", seq->name,
             seq->ops->kind);
    NG_CHECK(first >= 0 && count >= 1 && first + count <= seq->nchildren &&
                 first + count <= SEQ_MAX,
             "sequence %s: checkpoint segment [%d, %d) is outside its %d children", seq->name,
             first, first + count, seq->nchildren);
    seq_state *s = seq->impl;
    for (int i = 0; i < seq->nchildren && i < SEQ_MAX; i++) {
        int end = s->seg_end[i];
        NG_CHECK(end <= i || end <= first || i >= first + count,
                 "sequence %s: checkpoint segment [%d, %d) overlaps [%d, %d)", seq->name, first,
                 first + count, i, end);
    }
    s->seg_end[first] = first + count;
}

void ng_sequence_recompute(ng_layer *seq, int first, int end) {
    NG_CHECK(seq->ops == &seq_ops, "recomputed segments: %s is a %s, not a sequence", seq->name,
             seq->ops->kind);
    seq_state *s = seq->impl;
    int i = first;
    while (i < end && i < SEQ_MAX && s->seg_end[i] > i) i = s->seg_end[i];
    NG_CHECK(first < end && i == end,
             "sequence %s: children [%d, %d) are not a run of checkpoint segments", seq->name,
             first, end);
    s->rc_first = first, s->rc_end = end;
}

int ng_sequence_segments(const ng_layer *seq, int *firsts, int *ends, int cap) {
    if (seq->ops != &seq_ops) return 0;
    const seq_state *s = seq->impl;
    int n = 0;
    for (int i = 0; i < seq->nchildren && i < SEQ_MAX; i++) {
        if (s->seg_end[i] <= i) continue;
        if (n < cap) firsts[n] = i, ends[n] = s->seg_end[i];
        n++;
    }
    return n;
}
