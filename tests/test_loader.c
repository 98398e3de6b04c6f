/* The data loader on crafted data sets whose pixels name their example: every example once per
 * epoch, seeded shuffles, rank sharding with wrap padding, augmentation that only moves and
 * mirrors an example's own pixels, and seek/prefetch giving bit-identical streams. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/loader.h"
#include "testing.h"

#define N 103
#define LABELS 5

/* n examples of shape {C,H,W} (ndim 3) where example i's pixel p is i (distinct = 0) or
 * 1000 i + p (distinct = 1); labels i % LABELS. Both are exact in float32. */
static ng_source *crafted(int64_t n, int64_t C, int64_t H, int64_t W, int distinct) {
    ng_dataset *d = calloc(1, sizeof *d);
    snprintf(d->name, sizeof d->name, "crafted");
    d->n = n, d->ndim = 3, d->classes = LABELS;
    d->shape[0] = C, d->shape[1] = H, d->shape[2] = W;
    int64_t e = C * H * W;
    d->x = malloc(sizeof(float) * (size_t)(n * e));
    d->y = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        d->y[i] = (int32_t)(i % LABELS);
        for (int64_t p = 0; p < e; p++) d->x[i * e + p] = (float)(distinct ? 1000 * i + p : i);
    }
    return ng_source_dataset(d);
}

static ng_loader_config base(ng_source *d, uint64_t seed) {
    return (ng_loader_config){.source = d, .batch = 10, .seed = seed, .rank = 0, .world = 1};
}

/* The example a constant-pixel batch row holds, or -1 when its pixels or label disagree. */
static int64_t row_id(const ng_batch *b, int64_t k, int64_t e) {
    const float *x = b->x + k * e;
    int64_t id = (int64_t)x[0];
    for (int64_t p = 0; p < e; p++)
        if (x[p] != (float)id) return -1;
    if (id < 0 || id >= N || b->y[k] != id % LABELS) return -1;
    return id;
}

/* One epoch's example order from a loader on the constant-pixel set; returns the count. */
static int64_t epoch_ids(ng_loader *l, int64_t epoch, int64_t e, int64_t *ids, int *ok) {
    int64_t nb = ng_loader_batches_per_epoch(l), m = 0;
    for (int64_t i = 0; i < nb; i++) {
        ng_batch b = ng_loader_next(l);
        *ok &= b.epoch == epoch && b.index == i && b.b > 0;
        for (int64_t k = 0; k < b.b; k++) ids[m++] = row_id(&b, k, e);
    }
    return m;
}

static void test_world1(ng_source *d, uint64_t seed) {
    int64_t e = 16, ids[2][N + 16] = {{0}}, first[2][N + 16] = {{0}};
    for (int shuffle = 0; shuffle < 2; shuffle++)
        for (int drop = 0; drop < 2; drop++)
            for (int prefetch = 0; prefetch <= 2; prefetch += 2) {
                ng_loader_config c = base(d, seed);
                c.shuffle = shuffle, c.drop_last = drop, c.prefetch = prefetch;
                ng_loader *l = ng_loader_new(&c);
                int64_t nb = ng_loader_batches_per_epoch(l);
                NG_TEST(nb == (drop ? 10 : 11), "batches per epoch %lld (drop_last %d)",
                        (long long)nb, drop);
                for (int ep = 0; ep < 2; ep++) {
                    int ok = 1;
                    int64_t m = epoch_ids(l, ep, e, ids[ep], &ok);
                    int64_t seen[N] = {0}, bad = 0, in_order = 1;
                    for (int64_t k = 0; k < m; k++) {
                        if (ids[ep][k] < 0)
                            bad++;
                        else
                            seen[ids[ep][k]]++;
                        in_order &= ids[ep][k] == k;
                    }
                    int64_t once = 0, never = 0, more = 0;
                    for (int64_t i = 0; i < N; i++)
                        once += seen[i] == 1, never += seen[i] == 0, more += seen[i] > 1;
                    NG_TEST(ok && !bad && m == (drop ? 100 : N) && once == m && !more &&
                                never == N - m,
                            "shuffle %d drop_last %d prefetch %d epoch %d: %lld examples, %lld "
                            "once, %lld never, %lld repeated, %lld bad rows, positions ok %d",
                            shuffle, drop, prefetch, ep, (long long)m, (long long)once,
                            (long long)never, (long long)more, (long long)bad, ok);
                    if (!shuffle)
                        NG_TEST(in_order, "no shuffle: epoch %d is in data set order", ep);
                }
                if (shuffle) {
                    int64_t m = drop ? 100 : N, differ = 0;
                    for (int64_t k = 0; k < m; k++) differ += ids[0][k] != ids[1][k];
                    /* Two random permutations agree at ~1 place on average. */
                    NG_TEST(differ > m - 10, "epochs 0 and 1 have different orders (%lld of %lld)",
                            (long long)differ, (long long)m);
                    if (!drop && prefetch == 0) memcpy(first, ids, sizeof ids);
                    if (!drop && prefetch == 2)
                        NG_TEST(!memcmp(first, ids, sizeof ids),
                                "same seed, same order (prefetch 0 and 2, two epochs)");
                    if (drop && prefetch == 0)
                        NG_TEST(!memcmp(first[0], ids[0], sizeof(int64_t) * 100) &&
                                    !memcmp(first[1], ids[1], sizeof(int64_t) * 100),
                                "drop_last drops only the end of the same order");
                }
                ng_loader_free(l);
            }

    ng_loader_config c = base(d, seed ^ 0x9e3779b97f4a7c15ULL);
    c.shuffle = 1;
    ng_loader *l = ng_loader_new(&c);
    int ok = 1;
    epoch_ids(l, 0, e, ids[0], &ok);
    int64_t differ = 0;
    for (int64_t k = 0; k < N; k++) differ += ids[0][k] != first[0][k];
    NG_TEST(ok && differ > N - 10, "a different seed gives a different order (%lld of %d differ)",
            (long long)differ, N);
    ng_loader_free(l);
}

/* World 4: rank r's k-th example is position k*4 + r of the world-1 order, positions past n
 * wrapping to the start, so every rank has ceil(n/4) examples. */
static void test_world4(ng_source *d, uint64_t seed) {
    const int W = 4;
    int64_t e = 16;
    for (int shuffle = 0; shuffle < 2; shuffle++)
        for (int drop = 0; drop < 2; drop++) {
            ng_loader_config c = base(d, seed);
            c.shuffle = shuffle;
            int64_t order[N], pos[2 * N];
            int ok = 1;
            ng_loader *one = ng_loader_new(&c);
            epoch_ids(one, 0, e, order, &ok);
            ng_loader_free(one);
            for (int64_t p = 0; p < 2 * N; p++) pos[p] = -2;
            c.drop_last = drop;
            c.world = W;
            int64_t nbs[4], sizes[4][4], count[4] = {0};
            for (int r = 0; r < W; r++) {
                c.rank = r;
                c.prefetch = r % 2 ? 3 : 0;
                ng_loader *l = ng_loader_new(&c);
                nbs[r] = ng_loader_batches_per_epoch(l);
                for (int64_t i = 0; i < nbs[r] && i < 4; i++) {
                    ng_batch b = ng_loader_next(l);
                    ok &= b.epoch == 0 && b.index == i;
                    sizes[r][i] = b.b;
                    for (int64_t k = 0; k < b.b; k++, count[r]++)
                        pos[(i * c.batch + k) * W + r] = row_id(&b, k, e);
                }
                ng_loader_free(l);
            }
            int same = 1;
            for (int r = 1; r < W; r++) {
                same &= nbs[r] == nbs[0] && count[r] == count[0];
                for (int64_t i = 0; i < nbs[0] && i < 4; i++) same &= sizes[r][i] == sizes[0][i];
            }
            int64_t per_rank = (N + W - 1) / W, want = drop ? per_rank / 10 * 10 : per_rank;
            NG_TEST(same && count[0] == want && nbs[0] == (drop ? 2 : 3),
                    "shuffle %d drop_last %d: every rank gets %lld batches, %lld examples (want "
                    "%lld)",
                    shuffle, drop, (long long)nbs[0], (long long)count[0], (long long)want);
            /* The positions the ranks filled are exactly 0 .. W*count-1. */
            int64_t filled = W * count[0], match = 0, seen[N] = {0};
            for (int64_t p = 0; p < 2 * N; p++) {
                if (p >= filled) {
                    match += pos[p] == -2;
                    continue;
                }
                int64_t exp = order[p % N];
                match += pos[p] == exp;
                if (pos[p] >= 0) seen[pos[p]]++;
            }
            int64_t covered = 0, dup = 0;
            for (int64_t i = 0; i < N; i++) covered += seen[i] > 0, dup += seen[i] > 1;
            NG_TEST(ok && match == 2 * N,
                    "shuffle %d drop_last %d: rank r's k-th example is position 4k+r of the "
                    "world-1 order, wrapped (%lld of %d positions right)",
                    shuffle, drop, (long long)match, 2 * N);
            if (!drop)
                NG_TEST(covered == N && dup == 1 && seen[order[0]] == 2,
                        "the ranks cover all %d examples, %lld covered, only the wrapped first "
                        "one twice (%lld duplicated)",
                        N, (long long)covered, (long long)dup);
            else
                NG_TEST(covered == filled && dup == 0,
                        "drop_last: %lld distinct examples across ranks, none twice",
                        (long long)covered);
        }
}

/* A recorded stream of batches, bytes and all. */
typedef struct {
    int64_t count, e, batch;
    float *x;
    int32_t *y;
    int64_t *b, *epoch, *index;
} stream;

static stream record(const ng_loader_config *c, int64_t count) {
    stream s = {.count = count, .e = ng_source_example_size(c->source), .batch = c->batch};
    s.x = calloc((size_t)(count * c->batch * s.e), sizeof(float));
    s.y = calloc((size_t)(count * c->batch), sizeof(int32_t));
    s.b = calloc((size_t)count, sizeof(int64_t));
    s.epoch = calloc((size_t)count, sizeof(int64_t));
    s.index = calloc((size_t)count, sizeof(int64_t));
    ng_loader *l = ng_loader_new(c);
    for (int64_t g = 0; g < count; g++) {
        ng_batch b = ng_loader_next(l);
        s.b[g] = b.b, s.epoch[g] = b.epoch, s.index[g] = b.index;
        memcpy(s.x + g * c->batch * s.e, b.x, sizeof(float) * (size_t)(b.b * s.e));
        memcpy(s.y + g * c->batch, b.y, sizeof(int32_t) * (size_t)b.b);
    }
    ng_loader_free(l);
    return s;
}

static void stream_free(stream *s) {
    free(s->x), free(s->y), free(s->b), free(s->epoch), free(s->index);
}

/* 1 when batch b is batch g of the stream, bit for bit. */
static int same_batch(const stream *s, int64_t g, const ng_batch *b) {
    return b->b == s->b[g] && b->epoch == s->epoch[g] && b->index == s->index[g] &&
           !memcmp(b->x, s->x + g * s->batch * s->e, sizeof(float) * (size_t)(b->b * s->e)) &&
           !memcmp(b->y, s->y + g * s->batch, sizeof(int32_t) * (size_t)b->b);
}

static int same_stream(const stream *a, const stream *b) {
    return a->count == b->count &&
           !memcmp(a->x, b->x, sizeof(float) * (size_t)(a->count * a->batch * a->e)) &&
           !memcmp(a->y, b->y, sizeof(int32_t) * (size_t)(a->count * a->batch)) &&
           !memcmp(a->b, b->b, sizeof(int64_t) * (size_t)a->count) &&
           !memcmp(a->epoch, b->epoch, sizeof(int64_t) * (size_t)a->count) &&
           !memcmp(a->index, b->index, sizeof(int64_t) * (size_t)a->count);
}

static int64_t pick(int64_t n) {
    int64_t v = (int64_t)((ng_test_uniform() + 1.0) * 0.5 * (double)n);
    return v < n ? v : n - 1;
}

static void seek_errors(ng_loader *l, int64_t nb) {
    NG_TEST_ERROR(ng_loader_seek(l, 0, nb), "outside");
    NG_TEST_ERROR(ng_loader_seek(l, -1, 0), "outside");
}

/* Seeks around a loader with config c and compares with the recorded stream ref. */
static void seek_trials(const ng_loader_config *c, const stream *ref, int64_t nb) {
    int prefetch = c->prefetch, aug = c->augment.hflip;
    int64_t count = ref->count;
    ng_loader *l = ng_loader_new(c);
    int ok = 1;
    int64_t at = 0; /* the global batch the loader hands out next */
    for (int trial = 0; trial < 12; trial++) {
        /* Move on a few batches, so the thread has prepared some ahead, then seek. */
        for (int64_t k = pick(4); k > 0; k--, at++) {
            ng_batch b = ng_loader_next(l);
            ok &= at < count && same_batch(ref, at, &b);
        }
        int64_t ep = pick(3), ix = pick(nb);
        if (trial == 0) ep = 0, ix = 0;
        if (trial == 1) ep = 2, ix = nb - 1; /* the last batch, then a new epoch */
        if (trial % 4 == 3) ng_loader_seek(l, pick(3), pick(nb)); /* overridden at once */
        ng_loader_seek(l, ep, ix);
        at = ep * nb + ix;
        ng_batch b = ng_loader_next(l);
        NG_TEST(same_batch(ref, at, &b),
                "prefetch %d augment %d: seek(%lld, %lld) then next is that batch", prefetch, aug,
                (long long)ep, (long long)ix);
        at++;
    }
    NG_TEST(ok, "prefetch %d augment %d: batches after each seek continue the stream", prefetch,
            aug);
    seek_errors(l, nb);
    ng_loader_free(l);
}

static void test_seek(ng_source *d, uint64_t seed) {
    for (int aug = 0; aug < 2; aug++) {
        ng_loader_config c = base(d, seed);
        c.shuffle = 1, c.augment.crop_pad = aug, c.augment.hflip = aug;
        const int64_t nb = 11, count = 4 * nb; /* 4 epochs recorded, seeks land in the first 3 */
        stream ref = record(&c, count);
        c.prefetch = 3;
        stream pre = record(&c, count);
        NG_TEST(same_stream(&ref, &pre), "augment %d: prefetch 0 and 3 give identical streams",
                aug);
        stream_free(&pre);
        c.seed = seed + 12345;
        stream other = record(&c, nb);
        int64_t differ = 0;
        for (int64_t i = 0; i < nb * c.batch * ref.e; i++) differ += other.x[i] != ref.x[i];
        NG_TEST(differ > 0, "augment %d: another seed gives another stream", aug);
        stream_free(&other);
        c.seed = seed;

        for (int prefetch = 0; prefetch <= 3; prefetch += 3) {
            c.prefetch = prefetch;
            seek_trials(&c, &ref, nb);
        }
        stream_free(&ref);
    }
}

/* Augmentation on [2,5,6] images whose pixel p of example i is 1000 i + p: each output must be
 * the source shifted by (dy, dx) in [-pad, pad] with zero fill, mirrored or not. */
static void test_augment(uint64_t seed) {
    const int64_t C = 2, H = 5, W = 6, e = C * H * W;
    ng_source *d = crafted(N, C, H, W, 1);
    const int cases[4][2] = {{1, 1}, {2, 1}, {2, 0}, {0, 1}};
    for (int t = 0; t < 4; t++) {
        int pad = cases[t][0], hflip = cases[t][1];
        ng_loader_config c = base(d, seed);
        c.shuffle = 1, c.augment.crop_pad = pad, c.augment.hflip = hflip, c.prefetch = 2;
        ng_loader *l = ng_loader_new(&c);
        int64_t nb = ng_loader_batches_per_epoch(l), total = 0, stray = 0, unexplained = 0;
        int64_t flipped = 0, shifted = 0, mirror = 0, mirror_ok = 0, changed = 0;
        int64_t dy_seen[5] = {0}, dx_seen[5] = {0};
        int tf[3][N]; /* transform code per example per epoch, to compare epochs */
        memset(tf, 0xff, sizeof tf);
        for (int ep = 0; ep < 3; ep++) {
            int64_t once[N] = {0};
            for (int64_t i = 0; i < nb; i++) {
                ng_batch b = ng_loader_next(l);
                for (int64_t k = 0; k < b.b; k++, total++) {
                    const float *o = b.x + k * e;
                    float mx = 0;
                    for (int64_t p = 0; p < e; p++) mx = o[p] > mx ? o[p] : mx;
                    int64_t id = (int64_t)mx / 1000;
                    if (id < 0 || id >= N) {
                        stray++;
                        continue;
                    }
                    once[id]++;
                    float src[2 * 5 * 6];
                    int32_t label;
                    ng_source_fill(d, ep, id, src, &label);
                    for (int64_t p = 0; p < e; p++) {
                        double v = o[p] - 1000.0 * (double)id;
                        stray += o[p] != 0 && !(v >= 0 && v < (double)e && v == (double)(int64_t)v);
                    }
                    stray += b.y[k] != id % LABELS;
                    int found = -1;
                    for (int f = 0; f <= hflip && found < 0; f++)
                        for (int dy = -pad; dy <= pad && found < 0; dy++)
                            for (int dx = -pad; dx <= pad && found < 0; dx++) {
                                int match = 1;
                                for (int64_t ch = 0; ch < C && match; ch++)
                                    for (int64_t y = 0; y < H && match; y++)
                                        for (int64_t x = 0; x < W && match; x++) {
                                            int64_t sy = y + dy, sx = (f ? W - 1 - x : x) + dx;
                                            float want = sy >= 0 && sy < H && sx >= 0 && sx < W
                                                             ? src[(ch * H + sy) * W + sx]
                                                             : 0.0f;
                                            match = o[(ch * H + y) * W + x] == want;
                                        }
                                if (match) found = (f * 5 + dy + 2) * 5 + dx + 2;
                            }
                    tf[ep][id] = found;
                    if (found < 0) {
                        unexplained++;
                        continue;
                    }
                    int f = found / 25, dy = found / 5 % 5 - 2, dx = found % 5 - 2;
                    flipped += f, shifted += dy || dx;
                    dy_seen[dy + 2]++, dx_seen[dx + 2]++;
                    if (f && !dy && !dx) {
                        /* Checked directly, not through the search above: the mirror image. */
                        int m = 1;
                        for (int64_t ch = 0; ch < C; ch++)
                            for (int64_t y = 0; y < H; y++)
                                for (int64_t x = 0; x < W; x++)
                                    m &= o[(ch * H + y) * W + x] ==
                                         src[(ch * H + y) * W + (W - 1 - x)];
                        mirror++, mirror_ok += m;
                    }
                }
            }
            int all_once = 1;
            for (int64_t i = 0; i < N; i++) all_once &= once[i] == 1;
            NG_TEST(all_once, "crop_pad %d hflip %d epoch %d: every example once", pad, hflip, ep);
        }
        for (int64_t i = 0; i < N; i++) changed += tf[0][i] != tf[1][i];
        NG_TEST(total == 3 * N && !stray && !unexplained,
                "crop_pad %d hflip %d: all %lld outputs are a shifted/mirrored copy of their own "
                "example (%lld stray pixels or labels, %lld unexplained)",
                pad, hflip, (long long)total, (long long)stray, (long long)unexplained);
        /* Binomial bounds at > 5 sigma over 309 draws. */
        if (hflip)
            NG_TEST(flipped > total * 3 / 10 && flipped < total * 7 / 10,
                    "crop_pad %d: %lld of %lld flipped, p = 0.5", pad, (long long)flipped,
                    (long long)total);
        else
            NG_TEST(!flipped, "hflip off: none flipped (%lld)", (long long)flipped);
        double p_shift = 1.0 - 1.0 / (double)((2 * pad + 1) * (2 * pad + 1));
        NG_TEST(fabs((double)shifted / (double)total - p_shift) < 0.1,
                "crop_pad %d: %lld of %lld shifted, expected fraction %.3f", pad,
                (long long)shifted, (long long)total, p_shift);
        int all_offsets = 1;
        for (int k = -pad; k <= pad; k++) all_offsets &= dy_seen[k + 2] > 0 && dx_seen[k + 2] > 0;
        NG_TEST(all_offsets, "crop_pad %d: every offset in [-%d, %d] occurs", pad, pad, pad);
        if (hflip && pad <= 1)
            NG_TEST(mirror > 0 && mirror_ok == mirror,
                    "crop_pad %d: %lld of %lld flipped-without-shift examples are the mirror "
                    "image",
                    pad, (long long)mirror_ok, (long long)mirror);
        NG_TEST(changed > N / 4, "crop_pad %d hflip %d: epochs 0 and 1 augment differently (%lld)",
                pad, hflip, (long long)changed);
        ng_loader_free(l);
    }
    ng_source_free(d);
}

/* Volumes [2,3,4,5] whose voxel p of example i is 1000 i + p: each output is its source shifted
 * by (dz, dy, dx) in [-1, 1]^3 with zero fill, mirrored along W or not, and every depth shift
 * occurs (images never draw one). */
static void test_augment_volumes(uint64_t seed) {
    const int64_t C = 2, D = 3, H = 4, W = 5, e = C * D * H * W;
    ng_dataset *v = calloc(1, sizeof *v);
    snprintf(v->name, sizeof v->name, "volumes");
    v->n = N, v->ndim = 4, v->classes = LABELS;
    v->shape[0] = C, v->shape[1] = D, v->shape[2] = H, v->shape[3] = W;
    v->x = malloc(sizeof(float) * (size_t)(N * e));
    v->y = malloc(sizeof(int32_t) * N);
    for (int64_t i = 0; i < N; i++) {
        v->y[i] = (int32_t)(i % LABELS);
        for (int64_t p = 0; p < e; p++) v->x[i * e + p] = (float)(1000 * i + p);
    }
    ng_source *d = ng_source_dataset(v);
    ng_loader_config c = base(d, seed);
    c.shuffle = 1, c.augment.crop_pad = 1, c.augment.hflip = 1, c.prefetch = 1;
    ng_loader *volatile l = ng_loader_new(&c);
    int64_t nb = ng_loader_batches_per_epoch(l), total = 0, unexplained = 0, flipped = 0;
    int64_t dz_seen[3] = {0};
    for (int ep = 0; ep < 2; ep++)
        for (int64_t i = 0; i < nb; i++) {
            ng_batch b = ng_loader_next(l);
            for (int64_t k = 0; k < b.b; k++, total++) {
                const float *o = b.x + k * e;
                float mx = 0;
                for (int64_t p = 0; p < e; p++) mx = o[p] > mx ? o[p] : mx;
                int64_t id = (int64_t)mx / 1000;
                int found = 0;
                for (int f = 0; f <= 1 && !found; f++)
                    for (int dz = -1; dz <= 1 && !found; dz++)
                        for (int dy = -1; dy <= 1 && !found; dy++)
                            for (int dx = -1; dx <= 1 && !found; dx++) {
                                int match = b.y[k] == id % LABELS;
                                for (int64_t p = 0; p < e && match; p++) {
                                    int64_t x = p % W, y = p / W % H, z = p / (W * H) % D,
                                            ch = p / (W * H * D);
                                    int64_t sz = z + dz, sy = y + dy, sx = (f ? W - 1 - x : x) + dx;
                                    float want =
                                        sz >= 0 && sz < D && sy >= 0 && sy < H && sx >= 0 && sx < W
                                            ? (float)(1000 * id + ((ch * D + sz) * H + sy) * W + sx)
                                            : 0.0f;
                                    match = o[p] == want;
                                }
                                if (match) found = 1, dz_seen[dz + 1]++, flipped += f;
                            }
                unexplained += !found;
            }
        }
    NG_TEST(total == 2 * N && !unexplained,
            "volumes: %lld of %lld outputs are not a shifted/mirrored copy of their own example",
            (long long)unexplained, (long long)total);
    NG_TEST(dz_seen[0] > 0 && dz_seen[1] > 0 && dz_seen[2] > 0 && flipped > total * 3 / 10 &&
                flipped < total * 7 / 10,
            "volumes: depth shifts -1/0/1 seen %lld/%lld/%lld times, %lld of %lld flipped",
            (long long)dz_seen[0], (long long)dz_seen[1], (long long)dz_seen[2], (long long)flipped,
            (long long)total);
    ng_loader_free(l);
    c.augment.crop_pad = 3; /* the depth is 3 */
    NG_TEST_ERROR(l = ng_loader_new(&c), "data.augment.crop_pad");
    ng_source_free(d);
}

static void test_errors(ng_source *d, uint64_t seed) {
    ng_loader *volatile l = NULL;
    ng_loader_config c = base(d, seed);
    c.batch = 0;
    NG_TEST_ERROR(l = ng_loader_new(&c), "train.batch_size");
    c = base(d, seed);
    c.world = 4, c.rank = 4;
    NG_TEST_ERROR(l = ng_loader_new(&c), "rank");
    c.rank = -1;
    NG_TEST_ERROR(l = ng_loader_new(&c), "rank");
    c = base(d, seed);
    c.world = 0;
    NG_TEST_ERROR(l = ng_loader_new(&c), "world");
    c = base(d, seed);
    c.augment.crop_pad = 4; /* the images are 4x4 */
    NG_TEST_ERROR(l = ng_loader_new(&c), "data.augment.crop_pad");
    c.augment.crop_pad = -1;
    NG_TEST_ERROR(l = ng_loader_new(&c), "crop_pad");
    c = base(d, seed);
    c.prefetch = 65;
    NG_TEST_ERROR(l = ng_loader_new(&c), "data.prefetch");
    c = base(d, seed);
    c.batch = N + 1, c.drop_last = 1; /* no full batch */
    NG_TEST_ERROR(l = ng_loader_new(&c), "train.batch_size");
    c = base(NULL, seed);
    NG_TEST_ERROR(l = ng_loader_new(&c), "no data");

    /* Flat [n, 16] examples have no image to crop or mirror. */
    ng_source *flat = crafted(N, 1, 4, 4, 0);
    flat->ndim = 1, flat->shape[0] = 16;
    c = base(flat, seed);
    c.augment.crop_pad = 1;
    NG_TEST_ERROR(l = ng_loader_new(&c), "data.augment");
    c.augment.crop_pad = 0, c.augment.hflip = 1;
    NG_TEST_ERROR(l = ng_loader_new(&c), "data.augment");
    c.augment.hflip = 0;
    l = ng_loader_new(&c);
    ng_batch b = ng_loader_next(l);
    NG_TEST(b.b == 10 && b.x[15] == 0.0f && b.x[16] == 1.0f,
            "flat data without augmentation loads");
    ng_loader_free(l);
    ng_source_free(flat);
}

/* A source with fill_batch (as the fractals have), over a crafted one: the loader fills its
 * batches through it (counted) when nothing augments, and the streams, ranks, partial batches and
 * seeks are those of the example-by-example path. A device batch needs such a source and no
 * augmentation (the checks run before any device memory). */
static int64_t batch_calls;
static void wrap_fill(ng_source *s, int64_t epoch, int64_t i, void *x, int32_t *y) {
    ng_source *in = s->impl;
    in->ops->fill(in, epoch, i, x, y);
}
static void wrap_fill_batch(ng_source *s, int64_t epoch, const int64_t *idx, int64_t count,
                            ng_tensor *x, int32_t *y) {
    ng_source *in = s->impl;
    int64_t e = ng_source_example_size(in);
    batch_calls++;
    for (int64_t j = count - 1; j >= 0; j--) /* backwards: the order within a batch is free */
        in->ops->fill(in, epoch, idx[j], (float *)x->data + j * e, &y[j]);
}
static const ng_source_ops wrap_ops = {wrap_fill, NULL, NULL, wrap_fill_batch, NULL};

static void test_batched(ng_source *d, uint64_t seed) {
    ng_source w = *d;
    w.ops = &wrap_ops, w.impl = d, w.device_batches = 1;
    for (int v = 0; v < 4; v++) {
        ng_loader_config c = base(d, seed), cw;
        c.shuffle = 1, c.world = v >= 2 ? 4 : 1, c.rank = v >= 2 ? 3 : 0;
        c.drop_last = v % 2, c.prefetch = v == 1 ? 2 : 0;
        cw = c, cw.source = &w;
        ng_loader *l = ng_loader_new(&c);
        int64_t nb = ng_loader_batches_per_epoch(l),
                count = 4 * nb + 4; /* seeks land in 3 epochs, then up to 4 more */
        ng_loader_free(l);
        stream ref = record(&c, count);
        batch_calls = 0;
        stream got = record(&cw, count);
        NG_TEST(same_stream(&ref, &got) && batch_calls >= count,
                "world %d drop_last %d prefetch %d: fill_batch gives the example-by-example "
                "stream (%lld batch calls for %lld batches)",
                c.world, c.drop_last, c.prefetch, (long long)batch_calls, (long long)count);
        ng_loader_config cs = cw;
        cs.prefetch = 3;
        seek_trials(&cs, &ref, nb);
        stream_free(&ref), stream_free(&got);
    }
    ng_loader_config c = base(d, seed);
    c.device = NG_CUDA;
    NG_TEST_ERROR(ng_loader_new(&c), "cannot fill batches on the GPU");
    c.source = &w, c.augment.hflip = 1;
    NG_TEST_ERROR(ng_loader_new(&c), "data.augment");
}

int main(void) {
    uint64_t seed = ng_test_seed();
    ng_source *d = crafted(N, 1, 4, 4, 0);
    test_world1(d, seed);
    test_world4(d, seed);
    test_errors(d, seed);
    ng_source_free(d);
    ng_source *dd = crafted(N, 1, 4, 4, 1);
    test_seek(dd, seed);
    test_batched(dd, seed);
    ng_source_free(dd);
    test_augment(seed);
    test_augment_volumes(seed);
    return ng_test_finish("test_loader");
}
