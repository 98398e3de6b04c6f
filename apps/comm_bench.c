/* `natgrad comm-bench`: all-reduce over a sweep of message sizes for each algorithm, in the
 * manner of nccl-tests: every result checked against exact values (comm/comm_check.h), then
 * timed; prints time, algorithm and bus bandwidth, wrong elements and, given the link rate,
 * the lower bound for the topology. Run it under mpirun; rank 0 prints and writes files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/clock.h"
#include "apps/commands.h"
#include "comm/comm.h"
#include "comm/comm_check.h"
#include "core/error.h"
#include "core/safetensors.h"

#define MAX_ALGOS 16
#define MAX_ROWS 1024

typedef struct {
    int64_t bytes, count;
    ng_allreduce_opts algo;
    double us, algbw, busbw, bound_us;
    int64_t wrong;
} row;

static const char *usage_text =
    "usage: natgrad comm-bench [--min 4K] [--max 256M] [--factor 2] [--iters 20] [--warmup 5]\n"
    "         [--dtype f32|f64|f16|bf16] [--algo all|flat|ring|hier_rs[:intra/inter],..]\n"
    "         [--device cpu|cuda] [--ranks-per-node N] [--chunk BYTES] [--torus-rows R]\n"
    "         [--link-rate 1gbit] [--json FILE] [--write-table FILE]\n"
    "Run under mpirun (e.g. mpirun -np 4 natgrad comm-bench --ranks-per-node 2).\n"
    "--algo all: flat, ring, and hier_rs, hier_leader, torus with levels flat/flat and "
    "flat/ring;\nlevels are intra/inter (torus: rows/columns), each flat (the library) or ring.\n";

/* "4096", "4K", "256M", "1G" (binary multiples); -1 when malformed. */
static int64_t parse_bytes(const char *s) {
    char *end;
    double v = strtod(s, &end);
    int64_t m = 1;
    if (*end == 'K' || *end == 'k')
        m = 1 << 10, end++;
    else if (*end == 'M' || *end == 'm')
        m = 1 << 20, end++;
    else if (*end == 'G' || *end == 'g')
        m = 1 << 30, end++;
    if (end == s || *end || v < 0) return -1;
    return (int64_t)(v * (double)m);
}

/* "1gbit", "100mbit", "2.5gbit", "800kbit" (bits per second, decimal); returns bytes per s. */
static double parse_rate(const char *s) {
    char *end;
    double v = strtod(s, &end), m = 0;
    if (!strcmp(end, "gbit"))
        m = 1e9;
    else if (!strcmp(end, "mbit"))
        m = 1e6;
    else if (!strcmp(end, "kbit"))
        m = 1e3;
    else if (!strcmp(end, "bit"))
        m = 1;
    return end == s || m == 0 || v <= 0 ? -1 : v * m / 8;
}

static int parse_algos(const char *s, ng_allreduce_opts *out, const ng_allreduce_opts *base) {
    if (!strcmp(s, "all"))
        s = "flat,ring,hier_rs,hier_rs:flat/ring,hier_leader,"
            "hier_leader:flat/ring,torus,torus:flat/ring";
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (n == MAX_ALGOS) return -1;
        out[n] = *base;
        if (ng_allreduce_opts_parse(tok, &out[n]) || out[n].algo == NG_AR_AUTO) return -1;
        n++;
    }
    return n;
}

static void write_json(const char *path, const row *rows, int nr, int size, int nodes, ng_dtype dt,
                       ng_device dev, double rate) {
    size_t cap = 512 + 256 * (size_t)nr, used = 0;
    char *t = malloc(cap);
    used += (size_t)snprintf(t + used, cap - used,
                             "{\"ranks\": %d, \"nodes\": %d, \"dtype\": \"%s\", \"device\": "
                             "\"%s\", \"link_bytes_per_s\": %.6g, \"results\": [\n",
                             size, nodes, ng_dtype_name(dt), ng_device_name(dev), rate);
    for (int i = 0; i < nr; i++)
        used += (size_t)snprintf(
            t + used, cap - used,
            "  {\"bytes\": %lld, \"count\": %lld, \"algo\": \"%s\", \"time_us\": %.3f, "
            "\"algbw_gbs\": %.6f, \"busbw_gbs\": %.6f, \"wrong\": %lld, \"bound_us\": %.3f}%s\n",
            (long long)rows[i].bytes, (long long)rows[i].count,
            ng_allreduce_opts_name(&rows[i].algo), rows[i].us, rows[i].algbw, rows[i].busbw,
            (long long)rows[i].wrong, rows[i].bound_us, i + 1 < nr ? "," : "");
    used += (size_t)snprintf(t + used, cap - used, "]}\n");
    ng_write_file_atomic(path, t, used);
    free(t);
}

/* auto's table: per size the fastest correct algorithm, runs of equal choices merged. */
static void write_table(const char *path, const row *rows, int nr, int na) {
    ng_allreduce_rule rules[NG_AR_MAX_RULES];
    int n = 0;
    for (int i = 0; i < nr; i += na) {
        const row *best = NULL;
        for (int a = 0; a < na; a++)
            if (!rows[i + a].wrong && (!best || rows[i + a].us < best->us)) best = &rows[i + a];
        if (!best) continue;
        if (n > 0 && !strcmp(ng_allreduce_opts_name(&rules[n - 1].opts),
                             ng_allreduce_opts_name(&best->algo))) {
            rules[n - 1].max_bytes = best->bytes;
        } else if (n < NG_AR_MAX_RULES) {
            rules[n].max_bytes = best->bytes;
            rules[n++].opts = best->algo;
        }
    }
    if (n > 0) rules[n - 1].max_bytes = -1; /* beyond the sweep: the largest size's choice */
    ng_allreduce_table_save(path, rules, n);
}

static int bad_option(const char *a, const char *v) {
    fprintf(stderr, "natgrad: error: comm-bench: bad option %s %s\n%s", a, v ? v : "", usage_text);
    return 2;
}

int ng_cmd_comm_bench(int argc, char **argv) {
    int64_t min = 4 << 10, max = 256 << 20;
    double factor = 2, rate = 0;
    int iters = 20, warmup = 5, rpn = 0;
    ng_dtype dt = NG_F32;
    ng_device dev = NG_CPU;
    const char *algo_s = "all", *json = NULL, *table = NULL;
    ng_allreduce_opts base = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            printf("%s", usage_text);
            return 0;
        }
        if (!v) return bad_option(a, "(needs a value)");
        int ok = 1;
        if (!strcmp(a, "--min"))
            ok = (min = parse_bytes(v)) >= 0;
        else if (!strcmp(a, "--max"))
            ok = (max = parse_bytes(v)) >= 0;
        else if (!strcmp(a, "--factor"))
            ok = (factor = atof(v)) > 1;
        else if (!strcmp(a, "--iters"))
            ok = (iters = atoi(v)) >= 1;
        else if (!strcmp(a, "--warmup"))
            ok = (warmup = atoi(v)) >= 0;
        else if (!strcmp(a, "--ranks-per-node"))
            ok = (rpn = atoi(v)) >= 1;
        else if (!strcmp(a, "--chunk"))
            ok = (base.chunk_bytes = parse_bytes(v)) > 0;
        else if (!strcmp(a, "--torus-rows"))
            ok = (base.torus_rows = atoi(v)) >= 1;
        else if (!strcmp(a, "--link-rate"))
            ok = (rate = parse_rate(v)) > 0;
        else if (!strcmp(a, "--algo"))
            algo_s = v;
        else if (!strcmp(a, "--json"))
            json = v;
        else if (!strcmp(a, "--write-table"))
            table = v;
        else if (!strcmp(a, "--dtype")) {
            int d = ng_dtype_from_name(v);
            ok = d == NG_F32 || d == NG_F64 || d == NG_F16 || d == NG_BF16;
            if (ok) dt = (ng_dtype)d;
        } else if (!strcmp(a, "--device")) {
            ok = !strcmp(v, "cpu") || !strcmp(v, "cuda");
            dev = !strcmp(v, "cuda") ? NG_CUDA : NG_CPU;
        } else
            ok = 0;
        if (!ok) return bad_option(a, v);
        i++;
    }
    ng_allreduce_opts algos[MAX_ALGOS];
    int na = parse_algos(algo_s, algos, &base);
    if (na <= 0) return bad_option("--algo", algo_s);
    if (min > max) return bad_option("--min", "(larger than --max)");

    ng_comm *w =
        ng_comm_init(&argc, &argv,
                     &(ng_comm_config){.backend = dev == NG_CUDA ? NG_COMM_NCCL : NG_COMM_AUTO,
                                       .ranks_per_node = rpn});
    int rank = ng_comm_rank(w), size = ng_comm_size(w), nodes = ng_comm_nodes(w);
    size_t es = ng_dtype_size(dt);
    ng_tensor buf = ng_tensor_1d(dt, dev, max / (int64_t)es > 0 ? max / (int64_t)es : 1, "bench");
    row *rows = calloc(MAX_ROWS, sizeof *rows);
    int nr = 0;
    if (rank == 0) {
        printf("natgrad comm-bench: %d ranks on %d nodes (%s, ranks per node %s), %s on %s, "
               "%d iterations after %d warm-up\n",
               size, nodes, ng_comm_backend_name(ng_comm_backend_of(w)),
               rpn ? "forced" : "detected", ng_dtype_name(dt), ng_device_name(dev), iters, warmup);
        printf("%12s %11s %5s %-20s %11s %9s %9s %7s", "size(B)", "count", "type", "algorithm",
               "time(us)", "algbw", "busbw", "#wrong");
        if (rate > 0) printf(" %11s %7s", "bound(us)", "ratio");
        printf("\n%12s %11s %5s %-20s %11s %9s %9s %7s\n", "", "", "", "", "", "(GB/s)", "(GB/s)",
               "");
        if (size == 1)
            printf("# one rank: every all-reduce is the identity and returns at once; the times "
                   "are the call's overhead and the checks its correctness, no bandwidth\n");
    }
    for (double b = (double)min; b <= (double)max * (1 + 1e-9) && nr + na <= MAX_ROWS;
         b = b * factor < b + 1 ? b + 1 : b * factor) {
        int64_t count = (int64_t)b / (int64_t)es;
        ng_tensor t = ng_tensor_view(&buf, 0, 1, &count, "bench");
        for (int a = 0; a < na; a++) {
            row r = {.bytes = count * (int64_t)es, .count = count, .algo = algos[a]};
            uint64_t seed = 0x5eedull + (uint64_t)nr;
            ng_comm_check_fill(&t, seed, rank, 0);
            ng_comm_allreduce_with(w, &t, NG_COMM_SUM, &algos[a]);
            double wrong = (double)ng_comm_check_wrong(&t, seed, size, NG_COMM_SUM, 0);
            for (int k = 0; k < warmup; k++) ng_comm_allreduce_with(w, &t, NG_COMM_SUM, &algos[a]);
            ng_comm_barrier(w);
            double t0 = ng_now();
            for (int k = 0; k < iters; k++) ng_comm_allreduce_with(w, &t, NG_COMM_SUM, &algos[a]);
            double took[2] = {(ng_now() - t0) / iters, wrong};
            ng_comm_scalars(w, took, 1, NG_COMM_SCALAR_MAX); /* the slowest rank's time */
            ng_comm_scalars(w, took + 1, 1, NG_COMM_SCALAR_SUM);
            r.us = took[0] * 1e6;
            r.wrong = (int64_t)took[1];
            /* one rank: the all-reduce returns at once (nothing to reduce), so no bandwidth */
            r.algbw = took[0] > 0 && size > 1 ? (double)r.bytes / took[0] / 1e9 : 0;
            r.busbw = r.algbw * 2.0 * (size - 1) / size;
            if (rate > 0 && nodes > 1)
                r.bound_us = 2.0 * (nodes - 1) / nodes * (double)r.bytes / rate * 1e6;
            rows[nr++] = r;
            if (rank != 0) continue;
            printf("%12lld %11lld %5s %-20s %11.1f %9.3f %9.3f %7lld", (long long)r.bytes,
                   (long long)r.count, ng_dtype_name(dt), ng_allreduce_opts_name(&r.algo), r.us,
                   r.algbw, r.busbw, (long long)r.wrong);
            if (rate > 0 && r.bound_us > 0)
                printf(" %11.1f %7.2f", r.bound_us, r.us / r.bound_us);
            else if (rate > 0)
                printf(" %11s %7s", "-", "-");
            printf("\n");
            fflush(stdout);
        }
    }
    int64_t total_wrong = 0;
    for (int i = 0; i < nr; i++) total_wrong += rows[i].wrong;
    if (rank == 0) {
        printf("# %lld wrong elements in all\n", (long long)total_wrong);
        if (json) write_json(json, rows, nr, size, nodes, dt, dev, rate);
        if (table) write_table(table, rows, nr, na);
    }
    free(rows);
    ng_tensor_free(&buf);
    ng_comm_finalize(w);
    return total_wrong ? 1 : 0;
}
