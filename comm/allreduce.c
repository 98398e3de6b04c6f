/* Choosing and running an all-reduce: algorithm names, the automatic choice by message size
 * (a built-in table or one comm-bench wrote), and the dispatch to flat, ring and the
 * hierarchical patterns. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_internal.h"
#include "core/error.h"
#include "core/safetensors.h"

static const char *algo_names[NG_AR_NUM] = {"auto",    "flat",        "ring",
                                            "hier_rs", "hier_leader", "torus"};

const char *ng_allreduce_algo_name(ng_allreduce_algo a) {
    return (unsigned)a < NG_AR_NUM ? algo_names[a] : "?";
}

int ng_allreduce_algo_from_name(const char *s) {
    for (int i = 0; i < NG_AR_NUM; i++)
        if (!strcmp(s, algo_names[i])) return i;
    return -1;
}

static int is_hier(ng_allreduce_algo a) {
    return a == NG_AR_HIER_RS || a == NG_AR_HIER_LEADER || a == NG_AR_TORUS;
}

static int level_from_name(const char *s, size_t len, ng_level_algo *l) {
    if (len == 4 && !strncmp(s, "flat", 4))
        *l = NG_LEVEL_FLAT;
    else if (len == 4 && !strncmp(s, "ring", 4))
        *l = NG_LEVEL_RING;
    else
        return -1;
    return 0;
}

int ng_allreduce_opts_parse(const char *s, ng_allreduce_opts *o) {
    char name[32];
    const char *colon = strchr(s, ':');
    size_t n = colon ? (size_t)(colon - s) : strlen(s);
    if (n >= sizeof name) return -1;
    memcpy(name, s, n);
    name[n] = 0;
    int a = ng_allreduce_algo_from_name(name);
    if (a < 0) return -1;
    ng_allreduce_opts r = *o;
    r.algo = (ng_allreduce_algo)a;
    r.intra = r.inter = NG_LEVEL_FLAT;
    if (colon) {
        const char *slash = strchr(colon + 1, '/');
        if (!is_hier(r.algo) || !slash ||
            level_from_name(colon + 1, (size_t)(slash - colon - 1), &r.intra) ||
            level_from_name(slash + 1, strlen(slash + 1), &r.inter))
            return -1;
    }
    *o = r;
    return 0;
}

const char *ng_allreduce_opts_name(const ng_allreduce_opts *o) {
    static _Thread_local char bufs[4][48];
    static _Thread_local int next;
    char *b = bufs[next++ & 3];
    if (is_hier(o->algo))
        snprintf(b, 48, "%s:%s/%s", ng_allreduce_algo_name(o->algo),
                 o->intra == NG_LEVEL_RING ? "ring" : "flat",
                 o->inter == NG_LEVEL_RING ? "ring" : "flat");
    else
        snprintf(b, 48, "%s", ng_allreduce_algo_name(o->algo));
    return b;
}

void ng_comm_set_allreduce(ng_comm *c, const ng_allreduce_opts *o) {
    c->defaults = *o;
}

void ng_comm_set_table(ng_comm *c, const ng_allreduce_rule *rules, int n) {
    NG_CHECK(n >= 0 && n <= NG_AR_MAX_RULES, "comm: an all-reduce table holds at most %d rows",
             NG_AR_MAX_RULES);
    for (int i = 0; i < n; i++)
        NG_CHECK(rules[i].opts.algo != NG_AR_AUTO, "comm: all-reduce table row %d is 'auto'", i);
    if (n) memcpy(c->table, rules, sizeof *rules * (size_t)n); /* rules may be NULL when n is 0 */
    c->table_n = n;
}

/* Without a measured table: the library below 1 MiB or on one node; above, on several nodes
 * that hold more than one rank, the reduce-scatter pattern so only 1/local_size of the message
 * crosses the slow inter-node link per rank. */
ng_allreduce_opts ng_comm_auto_choice(const ng_comm *c, int64_t bytes) {
    for (int i = 0; i < c->table_n; i++)
        if (c->table[i].max_bytes < 0 || bytes <= c->table[i].max_bytes) return c->table[i].opts;
    ng_allreduce_opts o = c->defaults;
    o.algo = NG_AR_FLAT;
    o.intra = o.inter = NG_LEVEL_FLAT;
    if (bytes > (1 << 20) && c->nodes > 1 && c->nodes < c->size) o.algo = NG_AR_HIER_RS;
    return o;
}

int64_t ng_chunk_elems(const ng_allreduce_opts *o, ng_dtype dt) {
    int64_t bytes = o->chunk_bytes > 0 ? o->chunk_bytes : 256 << 10;
    int64_t e = bytes / (int64_t)ng_dtype_size(dt);
    return e > 0 ? e : 1;
}

void ng_balanced_offsets(int64_t n, int p, int64_t *offs) {
    for (int i = 0; i <= p; i++) offs[i] = (int64_t)((__int128)n * i / p);
}

void ng_level_allreduce(ng_comm *c, void *buf, int64_t n, ng_dtype dt, ng_level_algo l,
                        int64_t chunk) {
    if (!c || c->size == 1 || n == 0) return;
    if (l == NG_LEVEL_RING)
        ng_ring_allreduce(c, buf, n, dt, chunk);
    else
        c->ops->allreduce(c, buf, n, dt);
}

void ng_allreduce_run(ng_comm *c, void *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o) {
    if (c->size == 1 || n == 0) return;
    switch (o->algo) {
        case NG_AR_FLAT:
            c->ops->allreduce(c, buf, n, dt);
            return;
        case NG_AR_RING:
            ng_ring_allreduce(c, buf, n, dt, ng_chunk_elems(o, dt));
            return;
        case NG_AR_HIER_RS:
            ng_hier_rs(c, buf, n, dt, o);
            return;
        case NG_AR_HIER_LEADER:
            ng_hier_leader(c, buf, n, dt, o);
            return;
        case NG_AR_TORUS:
            ng_torus(c, buf, n, dt, o);
            return;
        default:
            ng_fail("comm: all-reduce algorithm %d is not one of flat, ring, hier_rs, "
                    "hier_leader, torus",
                    (int)o->algo);
    }
}

/* A whole number in [lo, hi], or 0 (NaN, fractions and huge values do not convert). */
static int whole_in(const cJSON *v, double lo, double hi) {
    return cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi &&
           v->valuedouble == (double)(int64_t)v->valuedouble;
}

int ng_allreduce_table_load(const char *path, ng_allreduce_rule *rules, int cap) {
    /* Everything is checked before it is used, and every error is formatted, the file and
     * the JSON freed, and only then raised, so a caught error leaks nothing. */
    char err[600] = "";
    FILE *f = fopen(path, "rb");
    NG_CHECK(f, "comm.table: cannot read the all-reduce table %s", path);
    char *text = malloc((1 << 20) + 1);
    size_t got = text ? fread(text, 1, 1 << 20, f) : 0;
    int too_big = text && got == (1 << 20) && fgetc(f) != EOF, unreadable = ferror(f);
    fclose(f);
    NG_CHECK(text, "out of host memory reading %s", path);
    if (too_big || unreadable) {
        free(text);
        ng_fail("comm.table: %s is %s", path,
                too_big ? "over 1 MiB, not an all-reduce table" : "not a readable file");
    }
    text[got] = 0;
    cJSON *root = cJSON_ParseWithLength(text, got);
    free(text);
    cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "allreduce_table");
    int n = 0;
    if (!cJSON_IsArray(rows))
        snprintf(err, sizeof err, "comm.table: %s has no \"allreduce_table\" array", path);
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        if (err[0]) break;
        const cJSON *mb = cJSON_GetObjectItemCaseSensitive(row, "max_bytes");
        const cJSON *al = cJSON_GetObjectItemCaseSensitive(row, "algo");
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(row, "chunk_bytes");
        ng_allreduce_rule r = {0};
        if (n >= cap)
            snprintf(err, sizeof err, "comm.table: %s: more than %d rows", path, cap);
        else if (!whole_in(mb, -1, 0x1p62) || !cJSON_IsString(al) ||
                 ng_allreduce_opts_parse(al->valuestring, &r.opts) || r.opts.algo == NG_AR_AUTO)
            snprintf(err, sizeof err,
                     "comm.table: %s row %d needs \"max_bytes\" (a whole number of bytes, -1 for "
                     "any) and \"algo\" (flat, ring, hier_rs, hier_leader or torus, with "
                     ":intra/inter levels)",
                     path, n);
        else if (ch && !whole_in(ch, 0, 0x1p40))
            snprintf(err, sizeof err,
                     "comm.table: %s row %d: \"chunk_bytes\" must be a whole number in [0, 2^40]",
                     path, n);
        else {
            r.max_bytes = (int64_t)mb->valuedouble;
            if (ch) r.opts.chunk_bytes = (int64_t)ch->valuedouble;
            rules[n++] = r;
        }
    }
    cJSON_Delete(root);
    if (err[0]) ng_fail("%s", err);
    return n;
}

void ng_allreduce_table_save(const char *path, const ng_allreduce_rule *rules, int n) {
    size_t cap = 256 + 128 * (size_t)n, used = 0;
    char *text = malloc(cap);
    used += (size_t)snprintf(text + used, cap - used, "{\"allreduce_table\": [\n");
    for (int i = 0; i < n; i++)
        used +=
            (size_t)snprintf(text + used, cap - used,
                             "  {\"max_bytes\": %lld, \"algo\": \"%s\", \"chunk_bytes\": "
                             "%lld}%s\n",
                             (long long)rules[i].max_bytes, ng_allreduce_opts_name(&rules[i].opts),
                             (long long)rules[i].opts.chunk_bytes, i + 1 < n ? "," : "");
    used += (size_t)snprintf(text + used, cap - used, "]}\n");
    ng_write_file_atomic(path, text, used);
    free(text);
}
