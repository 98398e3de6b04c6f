/* Fuzzers for every reader of outside bytes: config files and --set strings, safetensors (and
 * weights loaded from them), MNIST IDX/gzip files, checkpoint folders, all-reduce tables, tar
 * shards and model.checkpoint specs. A deterministic mutator of our own (bit flips, inserts,
 * deletes, splices, interesting integers, dictionary tokens) starts from the corpus in
 * tests/corpus/<reader>/ and is seeded from the printed NG_TEST_SEED. Every input must end in
 * success (with the result's own invariants holding) or in a usage error that names the file,
 * within a time limit; under ASan/UBSan also without a sanitizer report.
 *
 *   fuzz_readers CORPUS_DIR [INPUTS]      INPUTS (default 3000; NG_FUZZ_INPUTS overrides) are
 *                                         shared by the readers; NG_FUZZ_READER=name runs one
 *   fuzz_readers --write-seeds CORPUS_DIR regenerates the generated seed files
 *
 * A failing input is kept in NG_FUZZ_FOUND (default: a folder printed at the end); copy it into
 * tests/corpus/<reader>/ so the regression pass (every corpus file, unmutated) keeps it. */
#define _GNU_SOURCE /* mkdtemp, open_memstream */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <spng.h>
#include <zlib.h>

#include "apps/config.h"
#include "apps/run.h"
#include "apps/train_config.h"
#include "comm/comm.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "data/dataset.h"
#include "data/shards.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "nn/weights.h"
#include "optim/optimizer.h"
#include "testing.h"

#define FUZZ_MAX_BYTES (1 << 16)

/* A dictionary token: bytes that mean something in a format (they may hold zeros). */
typedef struct {
    const char *s;
    size_t n;
} token;
#define T(lit)                                                                                     \
    { lit, sizeof lit - 1 }

/* ---- bytes and the mutator ----------------------------------------------------------------- */

typedef struct {
    unsigned char *p;
    size_t n;
    char name[256]; /* corpus file name, or "" for a mutation */
} blob;

typedef struct {
    blob *v;
    int n;
} pool;

static uint64_t rng;
static uint64_t rnd(void) { /* splitmix64: the mutator's own stream, from the test seed */
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static size_t below(size_t n) {
    return n ? (size_t)(rnd() % n) : 0;
}

static blob blob_copy(const blob *b) {
    blob c = {malloc(b->n + 1), b->n, ""};
    memcpy(c.p, b->p, b->n);
    return c;
}

/* Replaces bytes [at, at+del) of b with n bytes from ins (which may point into b). */
static void replace(blob *b, size_t at, size_t del, const unsigned char *ins, size_t n) {
    if (at > b->n) at = b->n;
    if (del > b->n - at) del = b->n - at;
    if (b->n - del + n > FUZZ_MAX_BYTES) return;
    unsigned char *tmp = malloc(n + 1);
    memcpy(tmp, ins, n);
    size_t len = b->n - del + n;
    unsigned char *q = malloc(len + 1);
    memcpy(q, b->p, at);
    memcpy(q + at, tmp, n);
    memcpy(q + at + n, b->p + at + del, b->n - at - del);
    free(tmp);
    free(b->p);
    b->p = q, b->n = len;
}

/* clang-format off */
static const uint64_t interesting[] = {
    0, 1, 2, 7, 8, 16, 28, 127, 128, 255, 256, 1000, 32767, 32768, 65535, 65536, 0x7fffffff,
    0x80000000u, 0xffffffffu, 0x100000000ull, 1ull << 53, 1ull << 62, ~0ull >> 1, ~0ull};
/* clang-format on */
/* clang-format off */
static const char *const numbers[] = {
    "0", "-1", "1", "2147483648", "4294967296", "1e3", "1e16", "1e308", "1e999", "-0", "0.5", "nan",
    "inf", "9223372036854775807", "9223372036854775808", "1.5", "0x10", "1_000",
    "18446744073709551616", "9007199254740993", "", "07", "2305843009213693952"};
/* clang-format on */

/* One mutation of b; `others` gives material for splices, `dict` tokens of the format. */
static void mutate_once(blob *b, const pool *others, const token *dict, int ndict) {
    unsigned char buf[16] = {0};
    size_t at = below(b->n + 1);
    switch (below(11)) {
        case 0: /* flip a bit */
            if (b->n) b->p[below(b->n)] ^= (unsigned char)(1u << below(8));
            break;
        case 1: /* a random byte */
            if (b->n) b->p[below(b->n)] = (unsigned char)rnd();
            break;
        case 2: { /* insert random bytes */
            size_t n = 1 + below(8);
            for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)rnd();
            replace(b, at, 0, buf, n);
            break;
        }
        case 3: /* delete a range, short or long */
            replace(b, at, below(8) ? 1 + below(16) : below(b->n + 1), buf, 0);
            break;
        case 4: { /* copy a chunk of itself elsewhere, inserting or overwriting */
            if (!b->n) break;
            size_t from = below(b->n), len = 1 + below(b->n - from);
            blob chunk = {b->p + from, len, ""};
            blob c = blob_copy(&chunk);
            replace(b, at, below(2) ? 0 : len, c.p, c.n);
            free(c.p);
            break;
        }
        case 5: { /* splice with another input: our head, its tail (or a chunk of it) */
            const blob *o = &others->v[below((size_t)others->n)];
            if (!o->n) break;
            size_t from = below(o->n), len = 1 + below(o->n - from);
            if (below(2))
                replace(b, at, b->n, o->p + from, o->n - from);
            else
                replace(b, at, below(2) ? 0 : len, o->p + from, len);
            break;
        }
        case 6: { /* an interesting integer of 1, 2, 4 or 8 bytes, either endianness */
            uint64_t v = interesting[below(sizeof interesting / sizeof *interesting)];
            if (below(4) == 0) v = (uint64_t) - (int64_t)v;
            size_t w = (size_t)1 << below(4);
            int be = (int)below(2);
            for (size_t i = 0; i < w; i++) buf[be ? w - 1 - i : i] = (unsigned char)(v >> (8 * i));
            replace(b, at, below(2) ? w : 0, buf, w);
            break;
        }
        case 7:
        case 8: { /* a dictionary token, inserted or overwriting */
            if (!ndict) break;
            const token *t = &dict[below((size_t)ndict)];
            replace(b, at, below(2) ? t->n : 0, (const unsigned char *)t->s, t->n);
            break;
        }
        case 9: { /* a decimal number replaced by an interesting one */
            size_t i = at;
            while (i < b->n && !(b->p[i] >= '0' && b->p[i] <= '9')) i++;
            if (i >= b->n) break;
            size_t j = i;
            while (j < b->n && ((b->p[j] >= '0' && b->p[j] <= '9') || b->p[j] == '.')) j++;
            const char *t = numbers[below(sizeof numbers / sizeof *numbers)];
            replace(b, i, j - i, (const unsigned char *)t, strlen(t));
            break;
        }
        default: /* truncate */
            b->n = below(b->n + 1);
            break;
    }
}

static void mutate(blob *b, const pool *others, const token *dict, int ndict) {
    int n = 1 + (int)below(below(4) ? 4 : 16);
    for (int k = 0; k < n; k++) mutate_once(b, others, dict, ndict);
}

/* ---- files ------------------------------------------------------------------------------- */

static char work[256];  /* where inputs are written */
static char found[512]; /* where failing inputs are kept */

static void put_file(const char *path, const unsigned char *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f)) {
        fprintf(stderr, "fuzz_readers: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static void put_gz(const char *path, const unsigned char *p, size_t n) {
    gzFile g = gzopen(path, "wb");
    if (!g || (n && gzwrite(g, p, (unsigned)n) != (int)n) || gzclose(g) != Z_OK) {
        fprintf(stderr, "fuzz_readers: cannot write %s\n", path);
        exit(1);
    }
}

static int read_blob(const char *path, blob *b) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    b->p = malloc(FUZZ_MAX_BYTES + 1);
    b->n = fread(b->p, 1, FUZZ_MAX_BYTES, f);
    fclose(f);
    return 1;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const blob *)a)->name, ((const blob *)b)->name);
}

/* Every regular file in dir, sorted by name. */
static pool read_corpus(const char *dir) {
    pool c = {calloc(1024, sizeof(blob)), 0};
    DIR *d = opendir(dir);
    if (!d) return c;
    struct dirent *e;
    while ((e = readdir(d)) && c.n < 1024) {
        char p[1400];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(p, &st) || !S_ISREG(st.st_mode)) continue;
        if (read_blob(p, &c.v[c.n])) snprintf(c.v[c.n++].name, sizeof c.v[0].name, "%s", e->d_name);
    }
    closedir(d);
    qsort(c.v, (size_t)c.n, sizeof(blob), by_name);
    return c;
}

static void free_pool(pool *c) {
    for (int i = 0; i < c->n; i++) free(c->v[i].p);
    free(c->v);
    *c = (pool){0};
}

/* ---- catching errors, timeouts and crashes ----------------------------------------------------
 */

static jmp_buf on_fail;
static void longjmp_handler(const char *msg) {
    (void)msg;
    longjmp(on_fail, 1);
}

static char current[1024]; /* what is being run, for the crash and timeout messages */

static void say_current(void) {
    static const char a[] = "\nfuzz_readers: stopped during or after (leak reports: at exit) ";
    ssize_t r = write(2, a, sizeof a - 1);
    r = write(2, current, strlen(current));
    r = write(2, "\n", 1);
    (void)r;
}

static void on_alarm(int sig) {
    (void)sig;
    static const char a[] = "\nfuzz_readers: an input ran past the time limit (NG_FUZZ_TIME_LIMIT)";
    ssize_t r = write(2, a, sizeof a - 1);
    (void)r;
    say_current();
    _exit(3);
}

static void on_crash(int sig) {
    say_current();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Present when built with a sanitizer: its report ends the program, so say which input. */
extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

/* ---- the readers -------------------------------------------------------------------------- */

typedef struct reader reader;
struct reader {
    const char *name;
    const token *dict;
    int ndict;
    /* Runs one input (corpus entry or mutation); returns 0 on success, else raises ng_fail. */
    void (*run)(const reader *r, const blob *in);
    /* What an error message must contain (a path), or "" for any non-empty message. */
    char must_name[700];
    /* Prepares an input from a base (e.g. keeping a header length consistent). */
    void (*mutate)(const reader *r, blob *b, const pool *corpus);
    pool corpus;
    long inputs, errors;
    double slowest;
};

static int input_failed; /* the current input broke a property */
static int failf(const reader *r, const blob *in, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void keep_input(const reader *r, const blob *in, const char *suffix) {
    static long kept;
    char p[1024];
    mkdir(found, 0755);
    snprintf(p, sizeof p, "%s/%s-found-%ld%s", found, r->name, ++kept, suffix);
    put_file(p, in->p, in->n);
    fprintf(stderr, "  input kept as %s\n", p);
}

static int failf(const reader *r, const blob *in, const char *fmt, ...) {
    input_failed = 1;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s input %ld (%s): ", r->name, r->inputs,
            in->name[0] ? in->name : "mutated");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    keep_input(r, in, "");
    ng_test_fail("%s: an input broke a property", r->name);
    return 0;
}

static void default_mutate(const reader *r, blob *b, const pool *corpus) {
    mutate(b, corpus, r->dict, r->ndict);
}

/* config: YAML files, read against natgrad train's schema; what loads writes back and reloads
 * to the same values. */
/* clang-format off */
static const token yaml_dict[] = {
    T("["), T("]"), T("{"), T("}"), T(": "), T("- "), T("\n"), T("\n  "), T(","), T("&a "), T("*a"),
    T("<<: "), T("---\n"), T("...\n"), T("\t"), T("!!int "), T("!!str "), T("'"), T("\""), T("#"),
    T("null"), T("~"), T("true"), T("? "), T("|\n"), T(">\n"), T("%YAML 1.1\n"), T("\\u0000"),
    T("model:"), T("optimizer:"), T("lr: "), T("train:"), T("steps: "), T("seed: "), T("arch: "),
    T("kfac:"), T("width: "), T("data:"), T("synthetic:"), T("\xef\xbb\xbf"), T("\xff"),
    T("\"\\x00\""), T("schedule:"), T("name: "), T("  "), T("@"), T("`"), T("%"), T("!")};
/* clang-format on */

static void check_same_config(const reader *r, const blob *in, const ng_config *a,
                              const ng_config *b) {
    for (int i = 0; i < ng_train_nspec; i++) {
        const ng_cfg_spec *s = &ng_train_spec[i];
        int same = 1;
        switch (s->type) {
            case NG_CFG_INT:
                same = ng_cfg_int(a, s->key) == ng_cfg_int(b, s->key);
                break;
            case NG_CFG_FLOAT: {
                double x = ng_cfg_float(a, s->key), y = ng_cfg_float(b, s->key);
                same = !memcmp(&x, &y, sizeof x);
                break;
            }
            case NG_CFG_BOOL:
                same = ng_cfg_bool(a, s->key) == ng_cfg_bool(b, s->key);
                break;
            case NG_CFG_STRING:
            case NG_CFG_CHOICE:
                same = !strcmp(ng_cfg_str(a, s->key), ng_cfg_str(b, s->key));
                break;
            case NG_CFG_INT_LIST: {
                int n = ng_cfg_int_list(a, s->key, NULL, 0);
                int64_t *x = calloc((size_t)n + 1, 8), *y = calloc((size_t)n + 1, 8);
                same = ng_cfg_int_list(b, s->key, NULL, 0) == n;
                if (same) {
                    ng_cfg_int_list(a, s->key, x, n);
                    ng_cfg_int_list(b, s->key, y, n);
                    same = !memcmp(x, y, 8 * (size_t)n);
                }
                free(x), free(y);
                break;
            }
        }
        if (!same) {
            failf(r, in, "%s differs after write_yaml and reading back", s->key);
            return;
        }
    }
}

/* The loaded config written out and read back holds the same values. */
static void round_trip(const reader *r, const blob *in, ng_config *c) {
    char p[600];
    snprintf(p, sizeof p, "%s/round-trip.yaml", work);
    FILE *f = fopen(p, "w");
    ng_config_write_yaml(c, f, "fuzz round trip");
    fclose(f);
    /* A nested catch: the outer one (run_input's) is saved and put back. */
    jmp_buf outer;
    memcpy(outer, on_fail, sizeof outer);
    ng_config *volatile back = NULL;
    if (setjmp(on_fail) == 0) {
        back = ng_config_load(ng_train_spec, ng_train_nspec, p, NULL, 0);
        memcpy(on_fail, outer, sizeof outer);
    } else {
        memcpy(on_fail, outer, sizeof outer);
        ng_config_free(c);
        failf(r, in, "write_yaml's output does not read back: %s", ng_last_error());
        return;
    }
    check_same_config(r, in, c, back);
    ng_config_free(back);
    ng_config_free(c);
}

static void run_yaml(const reader *r, const blob *in) {
    put_file(r->must_name, in->p, in->n);
    ng_config *c = ng_config_load(ng_train_spec, ng_train_nspec, r->must_name, NULL, 0);
    round_trip(r, in, c);
}

/* --set: the input's lines are the values of up to 16 --set options. */
/* clang-format off */
static const token set_dict[] = {
    T("="), T("\n"), T("optimizer.lr="), T("model.width="), T("train.steps="), T("seed="),
    T("model.arch="), T("."), T("\""), T("'"), T(" "), T(","), T("["), T("]"), T("kfac.enabled="),
    T("true"), T("schedule.name="), T("data.dir="), T("train.batch_size="), T("1e-3")};
/* clang-format on */

static void run_set(const reader *r, const blob *in) {
    char *text = malloc(in->n + 1);
    memcpy(text, in->p, in->n);
    text[in->n] = 0;
    const char *sets[16];
    int n = 0;
    for (char *s = text, *nl; s && n < 16; s = nl ? nl + 1 : NULL) {
        nl = strchr(s, '\n');
        if (nl) *nl = 0;
        sets[n++] = s;
    }
    /* The error path longjmps past this frame: keep the text where the next input frees it. */
    static char *pending;
    free(pending);
    pending = text;
    ng_config *c = ng_config_load(ng_train_spec, ng_train_nspec, NULL, sets, n);
    round_trip(r, in, c);
}

/* allreduce_table (comm.table, written by comm-bench): a table that loads must hold only
 * concrete algorithms and byte limits >= -1, and save and load back to the same rows. */
/* clang-format off */
static const token table_dict[] = {
    T("{\"allreduce_table\": ["), T("]}"), T("\"max_bytes\": "), T("\"algo\": "),
    T("\"chunk_bytes\": "), T("\"hier_rs:ring/flat\""), T("\"torus\""), T("\"auto\""),
    T("-1"), T("1e308"), T("4096.5"), T("null"), T(","), T("{"), T("}")};
/* clang-format on */

static void run_table(const reader *r, const blob *in) {
    put_file(r->must_name, in->p, in->n);
    ng_allreduce_rule rules[NG_AR_MAX_RULES], back[NG_AR_MAX_RULES];
    int n = ng_allreduce_table_load(r->must_name, rules, NG_AR_MAX_RULES);
    for (int i = 0; i < n; i++)
        if (rules[i].opts.algo <= NG_AR_AUTO || rules[i].opts.algo >= NG_AR_NUM ||
            rules[i].max_bytes < -1 || rules[i].opts.chunk_bytes < 0)
            failf(r, in, "row %d loaded as algo %d, max_bytes %lld, chunk %lld", i,
                  (int)rules[i].opts.algo, (long long)rules[i].max_bytes,
                  (long long)rules[i].opts.chunk_bytes);
    char again[800];
    snprintf(again, sizeof again, "%s.again", r->must_name);
    ng_allreduce_table_save(again, rules, n);
    if (ng_allreduce_table_load(again, back, NG_AR_MAX_RULES) != n ||
        (n && memcmp(rules, back, sizeof *rules * (size_t)n)))
        failf(r, in, "a loaded table does not read back the same after saving");
}

/* model.checkpoint specs ("every 2", "0,3,7", ...): a refusal gives a reason; what parses prints
 * in the canonical form, which parses back to the same spec. */
/* clang-format off */
static const token ckpt_spec_dict[] = {
    T("every"), T("blocks"), T("all"), T("none"), T("true"), T("false"), T(","), T("["), T("]"),
    T(" "), T("0"), T("63"), T("64"), T("-1"), T("99999999999999999999")};
/* clang-format on */

static void run_ckpt_spec(const reader *r, const blob *in) {
    char text[1024], why[160] = "", canon[1024];
    size_t n = in->n < sizeof text - 1 ? in->n : sizeof text - 1;
    memcpy(text, in->p, n);
    text[n] = 0;
    ng_ckpt_spec s, back;
    if (!ng_ckpt_spec_parse(text, &s, why, sizeof why)) {
        if (!why[0]) failf(r, in, "a spec was refused without a reason");
        return;
    }
    ng_ckpt_spec_format(&s, canon, sizeof canon);
    if (!ng_ckpt_spec_parse(canon, &back, why, sizeof why) || back.every != s.every ||
        back.blocks != s.blocks || back.recompute != s.recompute)
        failf(r, in, "the canonical form '%s' does not parse back to the same spec", canon);
}

/* Tar shards: an input is the one shard of a folder, opened (the scan) and read for an epoch
 * through a small shuffle buffer, every other one with skip_bad; what loads must have labels
 * below its class count, and a small epoch read again in batches decoded by 2 workers must be
 * the same. The source
 * of the last input is freed at the start of the next (an error leaves it open). */
/* clang-format off */
static const token shard_dict[] = {
    T("\x93NUMPY\x01\x00"), T("'descr': '<f4'"), T("'descr': '|u1'"), T("'shape': ("),
    T("'fortran_order': False"), T(", "), T(")"), T("ustar"), T("ustar\x0000"), T(".npy"),
    T(".cls"), T(".png"), T("\x89PNG\r\n\x1a\n"), T("IHDR"), T("IDAT"), T("IEND"),
    T("0000000"), T("00000001000"), T("2147483647"), T("-1"), T("\x00\x00\x00\x00")};
/* clang-format on */
static char shard_dir[600];
static ng_source *shard_src;
static float *shard_x;

static void shards_release(void) {
    ng_source_free(shard_src);
    free(shard_x);
    shard_src = NULL, shard_x = NULL;
}

static void run_shards(const reader *r, const blob *in) {
    shards_release();
    char p[800];
    snprintf(p, sizeof p, "%s/train-000000.tar", shard_dir);
    put_file(p, in->p, in->n);
    /* Every other input with data.skip_bad: damage is then skipped and counted, never a crash. */
    static long calls;
    ng_shards_config c = {.dir = shard_dir,
                          .prefix = "train",
                          .shuffle_buffer = 4,
                          .seed = 5,
                          .skip_bad = calls++ & 1};
    shard_src = ng_shards_open(&c);
    int64_t e = ng_source_example_size(shard_src), n = shard_src->n;
    /* Room for the epoch twice when it is small: it is then read again in batches of 3 decoded by
     * 2 workers (the loader's path), which must give the same examples and labels. */
    int again = n * e <= (1 << 20);
    shard_x = malloc(sizeof(float) * (size_t)(again ? 2 * n * e + 3 * e : e));
    int32_t ys[2][64];
    again = again && n <= 64;
    for (int64_t i = 0; i < n; i++) {
        int32_t y = -1;
        ng_source_fill(shard_src, 0, i, shard_x + (again ? i * e : 0), &y);
        if (y < 0 || y >= shard_src->classes)
            failf(r, in, "example %lld has label %d of %lld classes", (long long)i, y,
                  (long long)shard_src->classes);
        if (again) ys[0][i] = y;
    }
    if (!again) return;
    float *x2 = shard_x + n * e;
    shard_src->workers = 2;
    for (int64_t i0 = 0; i0 < n; i0 += 3) {
        int64_t b = n - i0 < 3 ? n - i0 : 3, idx[3] = {i0, i0 + 1, i0 + 2}, shape[5] = {b};
        for (int d = 0; d < shard_src->ndim; d++) shape[d + 1] = shard_src->shape[d];
        ng_tensor t = ng_tensor_wrap(x2 + i0 * e, NG_F32, NG_CPU, shard_src->ndim + 1, shape, "b");
        ng_source_fill_batch(shard_src, 0, idx, b, &t, &ys[1][i0]);
    }
    if (memcmp(shard_x, x2, sizeof(float) * (size_t)(n * e)) ||
        memcmp(ys[0], ys[1], sizeof(int32_t) * (size_t)n))
        failf(r, in,
              "the epoch read in batches by 2 workers differs from the one read example by "
              "example (%lld examples)",
              (long long)n);
}

/* safetensors: open, walk every tensor's bytes, then load into a small model. */
/* clang-format off */
static const token st_dict[] = {
    T("{"), T("}"), T("["), T("]"), T(","), T(":"), T("\"dtype\""), T("\"F32\""), T("\"F16\""),
    T("\"BF16\""), T("\"F64\""), T("\"I32\""), T("\"U8\""), T("\"I64\""), T("\"shape\""),
    T("\"data_offsets\""), T("\"__metadata__\""), T("\"fc1.weight\""), T("\"head.bias\""), T("[]"),
    T("[0,0]"), T("null"), T("-1"), T("1e308"), T("0.5"), T("18446744073709551615"),
    T("4294967296"), T("\"\\u0000\""), T(" "), T("\"\""), T("{}"), T("true")};
/* clang-format on */

static ng_model *st_model;

static ng_layer *small_mlp(void) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc1", 6, 5, 1));
    ng_layer_add_child(s, ng_linear("head", 5, 3, 1));
    return s;
}

static void run_safetensors(const reader *r, const blob *in) {
    put_file(r->must_name, in->p, in->n);
    ng_safetensors *f = ng_safetensors_open(r->must_name);
    /* Every tensor is found by its name, aligned for its type, and every byte is readable. */
    unsigned sum = 0;
    for (int i = 0; i < ng_safetensors_count(f); i++) {
        ng_tensor t = ng_safetensors_get(f, i), u;
        const unsigned char *p = t.data;
        for (size_t k = 0; k < ng_tensor_bytes(&t); k++) sum += p[k];
        if (!ng_safetensors_find(f, t.name, &u) || u.data != t.data)
            failf(r, in, "tensor %s is not found by its name", t.name);
        if ((uintptr_t)t.data % ng_dtype_size(t.dtype))
            failf(r, in, "tensor %s is not aligned for %s", t.name, ng_dtype_name(t.dtype));
    }
    /* ... and together they are exactly the data section */
    uint64_t hl = 0;
    for (int k = 7; k >= 0; k--) hl = hl << 8 | in->p[k];
    size_t covered = 0;
    for (int i = 0; i < ng_safetensors_count(f); i++) {
        ng_tensor t = ng_safetensors_get(f, i);
        covered += ng_tensor_bytes(&t);
    }
    if (covered != in->n - 8 - hl)
        failf(r, in, "tensors cover %zu of %zu data bytes", covered, (size_t)(in->n - 8 - hl));
    (void)ng_safetensors_meta(f, "format");
    volatile unsigned keep = sum;
    (void)keep;
    ng_safetensors_close(f);
    ng_weights_load(st_model, r->must_name);
}

static void st_mutate(const reader *r, blob *b, const pool *corpus) {
    /* Half the time mutate only the JSON header and keep its length right, so mutations get
     * past the length check into the header and range checks. */
    uint64_t hl = 0;
    for (int k = 7; k >= 0 && b->n >= 8; k--) hl = hl << 8 | b->p[k];
    if (b->n < 8 || hl > b->n - 8 || below(2)) {
        mutate(b, corpus, r->dict, r->ndict);
        return;
    }
    blob json = {b->p + 8, (size_t)hl, ""}, data = {b->p + 8 + hl, b->n - 8 - (size_t)hl, ""};
    json = blob_copy(&json), data = blob_copy(&data);
    mutate(&json, corpus, r->dict, r->ndict);
    if (below(4) == 0) mutate(&data, corpus, NULL, 0);
    blob out = {malloc(8 + json.n + data.n + 1), 8 + json.n + data.n, ""};
    for (int k = 0; k < 8; k++) out.p[k] = (unsigned char)((uint64_t)json.n >> (8 * k));
    memcpy(out.p + 8, json.p, json.n);
    memcpy(out.p + 8 + json.n, data.p, data.n);
    free(json.p), free(data.p), free(b->p);
    *b = out;
}

/* MNIST: an input is one of the pair (images or labels, by its corpus name); the other is the
 * first corpus file of its kind. Raw inputs are written gzipped a third of the time. */
/* clang-format off */
static const token idx_dict[] = {
    T("\x00\x00\x08\x03"), T("\x00\x00\x08\x01"), T("\x00\x00\x00\x1c"), T("\x1f\x8b\x08\x00"),
    T("\x00\x00\x00\x00"), T("\xff\xff\xff\xff"), T("\x00\x00\x00\x03"), T("\x0a")};
/* clang-format on */
static char mnist_images[600], mnist_labels[600];

static const blob *first_of(const pool *c, const char *kind) {
    for (int i = 0; i < c->n; i++)
        if (strstr(c->v[i].name, kind)) return &c->v[i];
    return NULL;
}

static void run_mnist(const reader *r, const blob *in) {
    int images = strstr(in->name, "labels") == NULL;
    const blob *other = first_of(&r->corpus, images ? "labels" : "images");
    int gz = !strncmp(in->name, "mutated-", 8) && below(3) == 0;
    const char *mine = images ? mnist_images : mnist_labels,
               *theirs = images ? mnist_labels : mnist_images;
    if (gz)
        put_gz(mine, in->p, in->n);
    else
        put_file(mine, in->p, in->n);
    put_file(theirs, other->p, other->n);
    ng_dataset *d = ng_mnist_load(mnist_images, mnist_labels, "fuzz");
    int ok = d->n > 0 && d->classes == 10;
    for (int64_t i = 0; ok && i < d->n; i++) ok = d->y[i] >= 0 && d->y[i] < 10;
    for (int64_t i = 0; ok && i < d->n * 784; i++) ok = isfinite(d->x[i]);
    if (!ok) failf(r, in, "a loaded MNIST set has bad labels or pixels");
    ng_dataset_free(d);
}

/* Checkpoints: an input is one file of the folder (model.safetensors, optimizer.safetensors or
 * the COMPLETE marker, by its corpus name); the others are the corpus's first of their kind. */
/* clang-format off */
static const token ckpt_dict[] = {
    T("\"step\""), T("\"epoch\""), T("\"index\""), T("\"train_s\""), T("\"optimizer_step\""),
    T("\"nan\""), T("\"inf\""), T("\"-1\""), T("\"1e400\""), T("\"\""), T("\"7\""),
    T("\"sgd.momentum\""), T("\"__metadata__\""), T("{"), T("}"), T(",")};
/* clang-format on */
static ng_model *ck_model;
static ng_optimizer *ck_optim;
static char ck_dir[600];
static const char *const ck_roles[] = {"model.safetensors", "optimizer.safetensors", "COMPLETE"};

static void run_checkpoint(const reader *r, const blob *in) {
    for (int k = 0; k < 3; k++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", ck_dir, ck_roles[k]);
        const blob *b = strstr(in->name, ck_roles[k]) ? in : first_of(&r->corpus, ck_roles[k]);
        if (k == 2 && b->n == 1 && b->p[0] == 'X')
            unlink(p); /* a one-byte "X" marker stands for a missing COMPLETE */
        else
            put_file(p, b->p, b->n);
    }
    ng_run_position pos = ng_checkpoint_load(ck_dir, ck_model, ck_optim);
    if (pos.step < 0 || pos.epoch < 0 || pos.index < 0)
        failf(r, in, "negative position read back: step %lld epoch %lld index %lld",
              (long long)pos.step, (long long)pos.epoch, (long long)pos.index);
}

static void ckpt_mutate(const reader *r, blob *b, const pool *corpus) {
    if (strstr(b->name, "safetensors") && below(2))
        st_mutate(r, b, corpus);
    else
        mutate(b, corpus, r->dict, r->ndict);
}

/* ---- the driver --------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Runs one input: success, or an error that names what it must. */
static void run_input(reader *r, const blob *in, int time_limit) {
    snprintf(current, sizeof current, "%s input %ld (%s), written under %s", r->name, r->inputs,
             in->name[0] ? in->name : "mutated", work);
    struct itimerval it = {{0, 0}, {time_limit, 0}};
    setitimer(ITIMER_REAL, &it, NULL);
    double t0 = now_s();
    volatile int raised = 0;
    input_failed = 0;
    if (setjmp(on_fail) == 0)
        r->run(r, in);
    else
        raised = 1;
    double dt = now_s() - t0;
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    if (dt > r->slowest) r->slowest = dt;
    r->inputs++;
    if (!raised) {
        if (!input_failed) ng_test_pass();
        return;
    }
    r->errors++;
    /* Every reader closes its files before failing. */
    int left = ng_safetensors_close_all();
    if (left)
        failf(r, in, "%d safetensors files left open by the error: %s", left, ng_last_error());
    const char *msg = ng_last_error();
    if (!input_failed && (!msg[0] || (r->must_name[0] && !strstr(msg, r->must_name))))
        failf(r, in, "the error should name %s but said: %s",
              r->must_name[0] ? r->must_name : "something", msg);
    if (!input_failed) ng_test_pass();
}

/* ---- seeds -------------------------------------------------------------------------------- */

static void seed_file(const char *dir, const char *name, const void *p, size_t n) {
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    put_file(path, p, n);
}

static void write_seeds(const char *corpus) {
    char d[1024];
    /* safetensors: the small model's weights in f32 and f16 with metadata, odd but valid shapes */
    snprintf(d, sizeof d, "%s/safetensors", corpus);
    mkdir(d, 0755);
    ng_model *m = ng_model_new(small_mlp());
    ng_model_build(m, NG_CPU, NG_F32, 1, 1 << 16, 1 << 16);
    char p[1200];
    snprintf(p, sizeof p, "%s/weights-f32.safetensors", d);
    ng_weights_save(m, p, (const char *[]){"format", "pt", "step", "3", NULL});
    ng_st_entry e[4];
    ng_tensor h[4];
    for (int i = 0; i < m->nparams && i < 4; i++) {
        const ng_tensor *v = &m->params[i].param->value;
        h[i] = ng_tensor_new(NG_F16, NG_CPU, v->ndim, v->shape, v->name);
        ng_cast(&h[i], v);
        e[i] = (ng_st_entry){m->params[i].param->name, &h[i]};
    }
    snprintf(p, sizeof p, "%s/weights-f16.safetensors", d);
    ng_safetensors_save(p, e, m->nparams < 4 ? m->nparams : 4, NULL);
    for (int i = 0; i < m->nparams && i < 4; i++) ng_tensor_free(&h[i]);
    ng_tensor u8 = ng_tensor_1d(NG_U8, NG_CPU, 5, "u8"),
              i32 = ng_tensor_2d(NG_I32, NG_CPU, 2, 2, "i32");
    ng_tensor none = ng_tensor_2d(NG_F64, NG_CPU, 0, 3, "none"),
              scalar = ng_tensor_new(NG_BF16, NG_CPU, 0, NULL, "scalar");
    memset(u8.data, 7, 5), memset(i32.data, 1, 16), memset(scalar.data, 0x3f, 2);
    ng_st_entry odd[] = {{"u8", &u8}, {"none", &none}, {"i32", &i32}, {"scalar", &scalar}};
    snprintf(p, sizeof p, "%s/odd-shapes.safetensors", d);
    ng_safetensors_save(p, odd, 4, (const char *[]){"note", "valid, not this model's", NULL});
    ng_tensor_free(&u8), ng_tensor_free(&i32), ng_tensor_free(&none), ng_tensor_free(&scalar);
    seed_file(d, "empty.safetensors", "\x02\0\0\0\0\0\0\0{}", 10);

    /* checkpoint: a real one of the small model with SGD momentum, at step 7 */
    snprintf(d, sizeof d, "%s/checkpoint", corpus);
    mkdir(d, 0755);
    ng_optimizer *o = ng_optimizer_new(m, &(ng_optim_config){.name = "sgd", .momentum = 0.9});
    ng_optimizer_set_step(o, 7);
    char run[600];
    snprintf(run, sizeof run, "%s/seed-run", work);
    ng_run_dir_create(run);
    ng_checkpoint_save(
        run, m, o,
        (ng_run_position){.step = 7, .epoch = 1, .index = 3, .train_s = 0.25, .optimizer_step = 7},
        1, NULL);
    for (int k = 0; k < 3; k++) {
        blob b;
        snprintf(p, sizeof p, "%s/checkpoints/step-00000007/%s", run, ck_roles[k]);
        if (!read_blob(p, &b)) {
            fprintf(stderr, "fuzz_readers: no %s\n", p);
            exit(1);
        }
        char name[300];
        snprintf(name, sizeof name, "a-%s", ck_roles[k]);
        seed_file(d, name, b.p, b.n);
        free(b.p);
    }
    seed_file(d, "b-COMPLETE", "X", 1); /* the marker missing */
    ng_optimizer_free(o);
    ng_model_free(m);

    /* shards: three random [1,4,4] f4 examples as written by natgrad shards, and two 4x4 grey
     * PNG examples in a tar of our own */
    snprintf(d, sizeof d, "%s/shards", corpus);
    mkdir(d, 0755);
    {
        int64_t shape[3] = {1, 4, 4};
        ng_source *src =
            ng_source_dataset(ng_synthetic(3, 3, shape, 3, 1.0, rnd(), 0, "fuzz-seed"));
        char sd[700];
        snprintf(sd, sizeof sd, "%s/seed-shards", work);
        mkdir(sd, 0755);
        ng_shards_write(src, sd, "train", 1 << 20);
        ng_source_free(src);
        blob b;
        snprintf(p, sizeof p, "%s/train-000000.tar", sd);
        if (!read_blob(p, &b)) exit(1);
        seed_file(d, "a-npy.tar", b.p, b.n);
        free(b.p);
        /* A tar of two PNG members and their labels, by hand (ustar, 512-byte blocks). */
        unsigned char px[16], tar[8192] = {0};
        size_t at = 0;
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < 16; i++) px[i] = (unsigned char)(rnd() & 0xff);
            spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
            spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
            struct spng_ihdr ih = {
                .width = 4, .height = 4, .bit_depth = 8, .color_type = SPNG_COLOR_TYPE_GRAYSCALE};
            spng_set_ihdr(ctx, &ih);
            spng_encode_image(ctx, px, 16, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
            size_t len = 0;
            int err = 0;
            unsigned char *png = spng_get_png_buffer(ctx, &len, &err);
            spng_ctx_free(ctx);
            const char label[2] = {(char)('0' + k), 0};
            const struct {
                const char *name;
                const unsigned char *data;
                size_t n;
            } m[2] = {{k ? "b.png" : "a.png", png, len},
                      {k ? "b.cls" : "a.cls", (const unsigned char *)label, 1}};
            for (int j = 0; j < 2; j++) {
                unsigned char *h = tar + at;
                snprintf((char *)h, 100, "%s", m[j].name);
                memcpy(h + 100, "0000644", 8);
                memcpy(h + 108, "0000000", 8);
                memcpy(h + 116, "0000000", 8);
                snprintf((char *)h + 124, 12, "%011o", (unsigned)m[j].n);
                memcpy(h + 136, "00000000000", 12);
                h[156] = '0';
                memcpy(h + 257, "ustar", 6);
                memcpy(h + 263, "00", 2);
                unsigned sum = 0;
                memset(h + 148, ' ', 8);
                for (int i = 0; i < 512; i++) sum += h[i];
                snprintf((char *)h + 148, 8, "%06o", sum);
                memcpy(tar + at + 512, m[j].data, m[j].n);
                at += 512 + (m[j].n + 511) / 512 * 512;
            }
            free(png);
        }
        seed_file(d, "b-png.tar", tar, at + 1024);
    }

    /* MNIST: three random digits, raw and gzipped */
    snprintf(d, sizeof d, "%s/mnist", corpus);
    mkdir(d, 0755);
    unsigned char im[16 + 3 * 784], lb[8 + 3];
    unsigned char hi[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28};
    unsigned char hl[8] = {0, 0, 8, 1, 0, 0, 0, 3};
    memcpy(im, hi, 16), memcpy(lb, hl, 8);
    for (int i = 0; i < 3 * 784; i++) im[16 + i] = (unsigned char)(rnd() & 0xff);
    for (int i = 0; i < 3; i++) lb[8 + i] = (unsigned char)(rnd() % 10);
    seed_file(d, "a-images.idx", im, sizeof im);
    seed_file(d, "a-labels.idx", lb, sizeof lb);
    snprintf(p, sizeof p, "%s/b-images.idx.gz", d);
    put_gz(p, im, sizeof im);
    snprintf(p, sizeof p, "%s/b-labels.idx.gz", d);
    put_gz(p, lb, sizeof lb);
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    int seeds = argc == 3 && !strcmp(argv[1], "--write-seeds");
    if (argc < 2 || (!seeds && argc > 3)) {
        fprintf(stderr, "usage: fuzz_readers CORPUS_DIR [INPUTS] | --write-seeds CORPUS_DIR\n");
        return 2;
    }
    const char *corpus = argv[seeds ? 2 : 1];
    rng = ng_test_seed();
    snprintf(work, sizeof work, "/tmp/ng_fuzz_XXXXXX");
    if (!mkdtemp(work)) {
        perror("mkdtemp");
        return 1;
    }
    if (seeds) {
        write_seeds(corpus);
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", work);
        return system(cmd) != 0;
    }
    long total = argc == 3 ? atol(argv[2]) : 3000;
    if (getenv("NG_FUZZ_INPUTS")) total = atol(getenv("NG_FUZZ_INPUTS"));
    int time_limit = getenv("NG_FUZZ_TIME_LIMIT") ? atoi(getenv("NG_FUZZ_TIME_LIMIT")) : 10;
    const char *only = getenv("NG_FUZZ_READER");
    if (getenv("NG_FUZZ_FOUND"))
        snprintf(found, sizeof found, "%s", getenv("NG_FUZZ_FOUND"));
    else
        snprintf(found, sizeof found, "%s-found", work);

    ng_set_error_handler(longjmp_handler);
    signal(SIGALRM, on_alarm);
    if (__sanitizer_set_death_callback) {
        __sanitizer_set_death_callback(say_current);
    } else {
        signal(SIGSEGV, on_crash);
        signal(SIGBUS, on_crash);
        signal(SIGFPE, on_crash);
        signal(SIGABRT, on_crash);
    }

    st_model = ng_model_new(small_mlp());
    ng_model_build(st_model, NG_CPU, NG_F32, 1, 1 << 16, 1 << 16);
    ck_model = ng_model_new(small_mlp());
    ng_model_build(ck_model, NG_CPU, NG_F32, 2, 1 << 16, 1 << 16);
    ck_optim = ng_optimizer_new(ck_model, &(ng_optim_config){.name = "sgd", .momentum = 0.9});
    snprintf(ck_dir, sizeof ck_dir, "%s/run/checkpoints/step-00000007", work);
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s/run", work);
    ng_run_dir_create(tmp);
    mkdir(ck_dir, 0755);
    snprintf(mnist_images, sizeof mnist_images, "%s/images.idx", work);
    snprintf(mnist_labels, sizeof mnist_labels, "%s/labels.idx", work);

#define DICT(d) .dict = d, .ndict = (int)(sizeof d / sizeof *d)
    reader readers[] = {
        {.name = "config", DICT(yaml_dict), .run = run_yaml, .mutate = default_mutate},
        {.name = "set", DICT(set_dict), .run = run_set, .mutate = default_mutate},
        {.name = "safetensors", DICT(st_dict), .run = run_safetensors, .mutate = st_mutate},
        {.name = "mnist", DICT(idx_dict), .run = run_mnist, .mutate = default_mutate},
        {.name = "checkpoint", DICT(ckpt_dict), .run = run_checkpoint, .mutate = ckpt_mutate},
        {.name = "allreduce_table", DICT(table_dict), .run = run_table, .mutate = default_mutate},
        {.name = "shards", DICT(shard_dict), .run = run_shards, .mutate = default_mutate},
        {.name = "checkpoint_spec",
         DICT(ckpt_spec_dict),
         .run = run_ckpt_spec,
         .mutate = default_mutate},
    };
    int nreaders = (int)(sizeof readers / sizeof *readers), active = 0;
    snprintf(readers[0].must_name, sizeof readers[0].must_name, "%s/fuzz.yaml", work);
    snprintf(readers[2].must_name, sizeof readers[2].must_name, "%s/fuzz.safetensors", work);
    snprintf(readers[3].must_name, sizeof readers[3].must_name, "%s/", work);
    snprintf(readers[4].must_name, sizeof readers[4].must_name, "%s", ck_dir);
    snprintf(readers[5].must_name, sizeof readers[5].must_name, "%s/fuzz-table.json", work);
    snprintf(shard_dir, sizeof shard_dir, "%s/shards", work);
    mkdir(shard_dir, 0755);
    snprintf(readers[6].must_name, sizeof readers[6].must_name, "%s", shard_dir);
    for (int i = 0; i < nreaders; i++) {
        char d[1024];
        snprintf(d, sizeof d, "%s/%s", corpus, readers[i].name);
        readers[i].corpus = read_corpus(d);
        if (only && strcmp(only, readers[i].name)) free_pool(&readers[i].corpus);
        if (readers[i].corpus.n)
            active++;
        else if (!only)
            ng_test_fail("no corpus for %s in %s", readers[i].name, d);
    }

    double t0 = now_s();
    for (int i = 0; i < nreaders; i++) {
        reader *r = &readers[i];
        if (!r->corpus.n) continue;
        /* Each reader its own stream, so NG_FUZZ_READER replays the same inputs. */
        rng = ng_test_seed() ^ (0x9E3779B97F4A7C15ull * (uint64_t)(i + 1));
        for (int k = 0; k < r->corpus.n; k++) run_input(r, &r->corpus.v[k], time_limit);
        long n = active ? total / active : 0;
        for (long k = 0; k < n; k++) {
            const blob *base = &r->corpus.v[below((size_t)r->corpus.n)];
            blob b = blob_copy(base);
            r->mutate(r, &b, &r->corpus);
            /* the corpus name tells readers of several files (mnist, checkpoint) which this is */
            snprintf(b.name, sizeof b.name, "mutated-%.200s", base->name);
            run_input(r, &b, time_limit);
            free(b.p);
        }
    }
    double dt = now_s() - t0;
    long all = 0;
    for (int i = 0; i < nreaders; i++) {
        reader *r = &readers[i];
        if (!r->inputs) continue;
        all += r->inputs;
        fprintf(stderr,
                "  %-12s %7ld inputs (%ld corpus files), %7ld usage errors, slowest %.3f s\n",
                r->name, r->inputs, (long)r->corpus.n, r->errors, r->slowest);
        free_pool(&r->corpus);
    }
    fprintf(stderr, "fuzz_readers: %ld inputs in %.1f s\n", all, dt);
    shards_release();
    ng_optimizer_free(ck_optim);
    ng_model_free(ck_model);
    ng_model_free(st_model);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", work);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", work);
    return ng_test_finish("fuzz_readers");
}
